package server

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

//go:embed sssjs/sss.js sssjs/sss.d.ts
var clientFiles embed.FS

// clientAsset is one served representation of the browser client.
type clientAsset struct {
	body        []byte
	contentType string
	etag        string
}

var (
	exportDefault = regexp.MustCompile(`(?m)^export default .*$`)
	exportDecl    = regexp.MustCompile(`(?m)^export `)
	clientAssets  = loadClientAssets()
)

// loadClientAssets reads the embedded files once: the ES module, its
// classic-script variant and the TypeScript declarations.
func loadClientAssets() map[string]*clientAsset {
	js, err := clientFiles.ReadFile("sssjs/sss.js")
	if err != nil {
		panic("sss/server: embedded sss.js: " + err.Error())
	}
	dts, err := clientFiles.ReadFile("sssjs/sss.d.ts")
	if err != nil {
		panic("sss/server: embedded sss.d.ts: " + err.Error())
	}
	return map[string]*clientAsset{
		"module": newClientAsset(js, "text/javascript; charset=utf-8"),
		"global": newClientAsset(classicScript(js), "text/javascript; charset=utf-8"),
		"types":  newClientAsset(dts, "application/typescript; charset=utf-8"),
	}
}

func newClientAsset(body []byte, contentType string) *clientAsset {
	sum := sha256.Sum256(body)
	return &clientAsset{body: body, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

// classicScript turns the ES module into a classic script: the same code
// inside a function, with its exports made the global sss.
func classicScript(module []byte) []byte {
	body := exportDefault.ReplaceAll(module, nil)
	body = exportDecl.ReplaceAll(body, nil)
	var b bytes.Buffer
	b.WriteString("// sss.js as a classic script: defines the global sss.\n(function () {\n\"use strict\";\n")
	b.Write(body)
	b.WriteString("\nglobalThis.sss = sss;\n})();\n")
	return b.Bytes()
}

// ClientScriptHandler returns the handler that serves the browser client
// of sss, embedded in this package: for a path ending in ".d.ts" its
// TypeScript declarations, else the ES module (sss.js), or with the query
// parameter "global" (e.g. /sss.js?global) the same code as a classic
// script that defines the global sss. Mount it at the paths the pages
// use, e.g.
//
//	mux.Handle("GET /sss.js", server.ClientScriptHandler())
//	mux.Handle("GET /sss.d.ts", server.ClientScriptHandler())
//
// It answers GET and HEAD with Content-Type, an ETag and Cache-Control
// "no-cache" (browsers revalidate, and get 304 Not Modified while the
// ETag matches If-None-Match), and 405 to other methods.
func ClientScriptHandler() http.Handler {
	return http.HandlerFunc(serveClientScript)
}

func serveClientScript(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	a := clientAssets["module"]
	switch {
	case strings.HasSuffix(r.URL.Path, ".d.ts"):
		a = clientAssets["types"]
	case r.URL.Query().Has("global"):
		a = clientAssets["global"]
	}
	h := w.Header()
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	if etagMatch(r.Header.Get("If-None-Match"), a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", a.contentType)
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(a.body)
	}
}

// etagMatch reports whether an If-None-Match header value matches etag
// (weak comparison, "*" matches all).
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}
