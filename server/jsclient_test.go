package server

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestClientScriptHandler(t *testing.T) {
	hs := httptest.NewServer(ClientScriptHandler())
	defer hs.Close()
	get := func(t *testing.T, method, path string, header map[string]string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, hs.URL+path, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, body
	}
	tests := []struct {
		name, path, wantType string
		want, notWant        *regexp.Regexp
	}{
		{"module", "/sss.js", "text/javascript; charset=utf-8", regexp.MustCompile(`(?m)^export function connect\(`), nil},
		{"classic script", "/sss.js?global", "text/javascript; charset=utf-8", regexp.MustCompile(`globalThis\.sss = sss;`), regexp.MustCompile(`(?m)^export `)},
		{"declarations", "/sss.d.ts", "application/typescript; charset=utf-8", regexp.MustCompile(`export declare function connect\(`), nil},
	}
	etags := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := get(t, http.MethodGet, tt.path, nil)
			etag := res.Header.Get("ETag")
			if res.StatusCode != 200 || res.Header.Get("Content-Type") != tt.wantType || res.Header.Get("Cache-Control") != "no-cache" || !strings.HasPrefix(etag, `"`) {
				t.Fatalf("GET %s = %d, headers %v", tt.path, res.StatusCode, res.Header)
			}
			if !tt.want.Match(body) || (tt.notWant != nil && tt.notWant.Match(body)) {
				t.Fatalf("GET %s: body does not look right (%d bytes)", tt.path, len(body))
			}
			if etags[etag] {
				t.Fatalf("ETag %s shared by two representations", etag)
			}
			etags[etag] = true
			for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
				res, body := get(t, http.MethodGet, tt.path, map[string]string{"If-None-Match": inm})
				if res.StatusCode != http.StatusNotModified || len(body) != 0 || res.Header.Get("ETag") != etag {
					t.Fatalf("If-None-Match %s: %d with %d bytes", inm, res.StatusCode, len(body))
				}
			}
			res, _ = get(t, http.MethodGet, tt.path, map[string]string{"If-None-Match": `"stale"`})
			if res.StatusCode != 200 {
				t.Fatalf("stale ETag: %d, want 200", res.StatusCode)
			}
			res, body = get(t, http.MethodHead, tt.path, nil)
			if res.StatusCode != 200 || len(body) != 0 || res.Header.Get("ETag") != etag {
				t.Fatalf("HEAD: %d, %d bytes", res.StatusCode, len(body))
			}
		})
	}
	res, _ := get(t, http.MethodPost, "/sss.js", nil)
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %d", res.StatusCode)
	}
}

func TestClassicScript(t *testing.T) {
	in := []byte("export const A = 1;\nexport function f() {}\nconst x = { export: 1 };\nexport default x;\n")
	got := string(classicScript(in))
	for _, want := range []string{"\nconst A = 1;\nfunction f() {}\nconst x = { export: 1 };\n", "globalThis.sss = sss;", "(function () {"} {
		if !strings.Contains(got, want) {
			t.Fatalf("classic script lacks %q:\n%s", want, got)
		}
	}
	if bytes.Contains([]byte(got), []byte("export default")) {
		t.Fatalf("classic script keeps the default export:\n%s", got)
	}
}
