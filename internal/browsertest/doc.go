// Package browsertest holds the tests of the browser client (sss.js) and
// of the chat example's page: JavaScript tests run by node against a real
// sss server, and Chromium driven through chromedp against chat processes
// on a real redis-server and FerretDB. It is a module of its own, so that
// chromedp never reaches the library's go.mod; ./scripts/test.sh runs it.
package browsertest
