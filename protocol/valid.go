package protocol

// validate reports whether data is exactly one valid JSON value (RFC 8259
// grammar, as json.Valid checks it; UTF-8 is checked elsewhere) nesting no
// deeper than maxDepth (the outermost value is level 1; maxDepth <= 0 means
// no limit). It replaces json.Valid plus a separate depth scan on the
// decoders' hot path: one pass, no allocation for frames within 64 levels.
// FuzzDecode checks it against json.Valid.
func validate(data []byte, maxDepth int) (valid, tooDeep bool) {
	var stackBuf [64]byte
	stack := stackBuf[:0] // '{' or '[' per open container
	i := 0
	n := len(data)
value:
	i = skipSpace(data, i)
	if i >= n {
		return false, false
	}
	switch c := data[i]; c {
	case '{', '[':
		if maxDepth > 0 && len(stack) >= maxDepth {
			return false, true
		}
		stack = append(stack, c)
		i = skipSpace(data, i+1)
		if i < n && data[i] == c+2 { // '}' is '{'+2, ']' is '['+2
			stack = stack[:len(stack)-1]
			i++
			goto after
		}
		if c == '{' {
			if i = objectKey(data, i); i < 0 {
				return false, false
			}
		}
		goto value
	case '"':
		if i = stringValid(data, i); i < 0 {
			return false, false
		}
	case 't':
		if i = literal(data, i, "true"); i < 0 {
			return false, false
		}
	case 'f':
		if i = literal(data, i, "false"); i < 0 {
			return false, false
		}
	case 'n':
		if i = literal(data, i, "null"); i < 0 {
			return false, false
		}
	default:
		if i = numberValid(data, i); i < 0 {
			return false, false
		}
	}
after:
	i = skipSpace(data, i)
	if len(stack) == 0 {
		return i == n, false
	}
	if i >= n {
		return false, false
	}
	top := stack[len(stack)-1]
	switch c := data[i]; {
	case c == ',':
		i++
		if top == '{' {
			if i = objectKey(data, skipSpace(data, i)); i < 0 {
				return false, false
			}
		}
		goto value
	case c == top+2:
		stack = stack[:len(stack)-1]
		i++
		goto after
	}
	return false, false
}

// objectKey checks `"key" :` at data[i] and returns the index after the
// colon, or -1.
func objectKey(data []byte, i int) int {
	if i >= len(data) || data[i] != '"' {
		return -1
	}
	if i = stringValid(data, i); i < 0 {
		return -1
	}
	i = skipSpace(data, i)
	if i >= len(data) || data[i] != ':' {
		return -1
	}
	return i + 1
}

// stringValid checks the string whose quote is at data[i] and returns the
// index after its closing quote, or -1.
func stringValid(data []byte, i int) int {
	for i++; i < len(data); i++ {
		c := data[i]
		switch {
		case c == '"':
			return i + 1
		case c < 0x20:
			return -1
		case c == '\\':
			i++
			if i >= len(data) {
				return -1
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(data) {
					return -1
				}
				for _, h := range data[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return -1
					}
				}
				i += 4
			default:
				return -1
			}
		}
	}
	return -1
}

// literal checks that data at i spells word and returns the index after it,
// or -1.
func literal(data []byte, i int, word string) int {
	if len(data)-i < len(word) || string(data[i:i+len(word)]) != word {
		return -1
	}
	return i + len(word)
}

// numberValid checks a JSON number at data[i] and returns the index after
// it, or -1: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func numberValid(data []byte, i int) int {
	n := len(data)
	digits := func(i int) int { // one or more digits
		if i >= n || data[i] < '0' || data[i] > '9' {
			return -1
		}
		for i < n && '0' <= data[i] && data[i] <= '9' {
			i++
		}
		return i
	}
	if i < n && data[i] == '-' {
		i++
	}
	if i < n && data[i] == '0' {
		i++
	} else if i = digits(i); i < 0 {
		return -1
	}
	if i < n && data[i] == '.' {
		if i = digits(i + 1); i < 0 {
			return -1
		}
	}
	if i < n && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < n && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i = digits(i); i < 0 {
			return -1
		}
	}
	return i
}
