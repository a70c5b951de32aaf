package mongoredis

// held is what this instance holds under its lease: presence members per
// channel and users (with a count of their sockets). It is the truth that
// Redis is brought back to: every change marks its entry dirty until a
// write of exactly that change is known to have landed, and a removal
// leaves a tombstone until Redis confirms it. The lease renewal writes
// whatever is dirty, so a Redis write that failed (or landed out of
// order) is made good at the next renewal. The caller guards it with
// leases.mu; it does no I/O.
type held struct {
	ver   uint64              // bumped by every change
	pr    map[string]entrySet // channel -> member id -> entry
	users entrySet            // user id -> entry
}

// entry is one presence member or user, or the tombstone of one.
type entry struct {
	val   string // presence: the member as JSON
	n     int    // users: sockets counted by AddUser/RemoveUser
	live  bool   // false: a tombstone, kept until Redis confirms the removal
	ver   uint64 // the change this entry is at
	dirty bool   // Redis may not hold this state yet
}

// entrySet is what one per-instance Redis key holds (a channel's members,
// or the users).
type entrySet map[string]*entry

func newHeld() held {
	return held{pr: make(map[string]entrySet), users: make(entrySet)}
}

// change marks e as changed and returns the change's version.
func (h *held) change(e *entry, live bool) uint64 {
	h.ver++
	e.ver, e.live, e.dirty = h.ver, live, true
	return h.ver
}

// join records member id (as JSON val) on channel.
func (h *held) join(channel, id, val string) uint64 {
	set := h.pr[channel]
	if set == nil {
		set = make(entrySet)
		h.pr[channel] = set
	}
	e := set[id]
	if e == nil {
		e = &entry{}
		set[id] = e
	}
	e.val = val
	return h.change(e, true)
}

// leave drops member id from channel; false when it was not held (then
// Redis has nothing of it to remove either).
func (h *held) leave(channel, id string) (uint64, bool) {
	e := h.pr[channel][id]
	if e == nil {
		return 0, false
	}
	return h.change(e, false), true
}

// addUser counts one more socket of user; true when the user became
// held, so Redis must learn of it.
func (h *held) addUser(user string) (uint64, bool) {
	e := h.users[user]
	if e == nil {
		e = &entry{}
		h.users[user] = e
	}
	e.n++
	if e.n > 1 {
		return 0, false
	}
	return h.change(e, true), true
}

// removeUser undoes one addUser; true when the user's last socket went,
// so Redis must forget the user.
func (h *held) removeUser(user string) (uint64, bool) {
	e := h.users[user]
	if e == nil || e.n == 0 {
		return 0, false
	}
	e.n--
	if e.n > 0 {
		return 0, false
	}
	return h.change(e, false), true
}

// settle records the outcome of a write of change ver of entry id in set:
// the entry is clean only when that write landed and nothing changed it
// since. Any other outcome leaves it dirty, since a failed write may
// still land, and a write that landed may have overtaken a later one.
// It reports whether set is now empty.
func (set entrySet) settle(id string, ver uint64, ok bool) bool {
	e := set[id]
	if e == nil {
		return len(set) == 0
	}
	if !ok || e.ver != ver {
		e.dirty = true
		return false
	}
	e.dirty = false
	if !e.live {
		delete(set, id)
	}
	return len(set) == 0
}

// settlePresence is settle for a member of channel.
func (h *held) settlePresence(channel, id string, ver uint64, ok bool) {
	if set := h.pr[channel]; set != nil && set.settle(id, ver, ok) {
		delete(h.pr, channel)
	}
}

// markLive marks every live entry of set dirty (its Redis key was found
// missing); it reports whether there was any.
func (set entrySet) markLive() bool {
	any := false
	for _, e := range set {
		if e.live {
			e.dirty, any = true, true
		}
	}
	return any
}

// markAll marks every entry dirty (a new lease: nothing is in Redis under
// it yet).
func (h *held) markAll() {
	for _, set := range h.pr {
		for _, e := range set {
			e.dirty = true
		}
	}
	for _, e := range h.users {
		e.dirty = true
	}
}

// write is one entry's change to bring to Redis.
type write struct {
	id, val string
	ver     uint64
	live    bool
}

// keyPlan is what one renewal does to one per-instance key: the dirty
// entries to write, and a refresh of the key's time to live.
type keyPlan struct {
	channel string // "" for the users key
	users   bool
	writes  []write
}

// plan lists every key held, with its dirty entries.
func (h *held) plan() []keyPlan {
	out := make([]keyPlan, 0, len(h.pr)+1)
	add := func(p keyPlan, set entrySet) {
		for id, e := range set {
			if e.dirty {
				p.writes = append(p.writes, write{id: id, val: e.val, ver: e.ver, live: e.live})
			}
		}
		out = append(out, p)
	}
	for ch, set := range h.pr {
		add(keyPlan{channel: ch}, set)
	}
	if len(h.users) > 0 {
		add(keyPlan{users: true}, h.users)
	}
	return out
}

// set returns the entries p is about (nil when none are held any more).
func (h *held) set(p *keyPlan) entrySet {
	if p.users {
		return h.users
	}
	return h.pr[p.channel]
}

// settlePlan settles every write of p with the outcome of the write that
// carried them.
func (h *held) settlePlan(p *keyPlan, ok bool) {
	for _, w := range p.writes {
		if p.users {
			h.users.settle(w.id, w.ver, ok)
		} else {
			h.settlePresence(p.channel, w.id, w.ver, ok)
		}
	}
}
