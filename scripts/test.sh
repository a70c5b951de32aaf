#!/usr/bin/env bash
# The one test command of sss: formatting, vet, the race-enabled tests of
# every package against real redis-server and FerretDB processes, and short
# fuzz runs. Run from anywhere: ./scripts/test.sh
#
# Environment:
#   SSS_FUZZTIME   duration of each fuzz run (default 10s; 0 skips fuzzing)
#   SSS_TEST_TIMEOUT  go test -timeout (default 15m)
#   SSS_TEST_PKGS  packages to vet and test (default ./...; CI uses the default)
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"
fuzztime="${SSS_FUZZTIME:-10s}"
timeout="${SSS_TEST_TIMEOUT:-15m}"
read -r -a pkgs <<<"${SSS_TEST_PKGS:-./...}"

section() { printf '\n==== %s ====\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

section "tools"
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
	echo "redis-server/redis-cli missing: installing the redis-server package"
	sudo=""
	if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
	$sudo apt-get update
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y redis-server
fi
go version
redis-server --version

section "build FerretDB test server (internal/ferretdb -> .bin/sss-ferretdb)"
mkdir -p .bin
(
	cd internal/ferretdb
	# Build beside the target and rename, so test processes still running
	# an older binary are never disturbed.
	go build -o "$root/.bin/sss-ferretdb.tmp$$" .
	mv -f "$root/.bin/sss-ferretdb.tmp$$" "$root/.bin/sss-ferretdb"
	go vet ./...
)
echo "built .bin/sss-ferretdb"

section "gofmt"
unformatted="$(gofmt -l .)"
if [ -n "$unformatted" ]; then
	echo "$unformatted"
	fail "gofmt -l lists the files above; run gofmt -w on them"
fi
echo "ok"

section "go vet ${pkgs[*]}"
go vet "${pkgs[@]}" || fail "go vet"
echo "ok"

section "go test -race -count=1 -timeout $timeout ${pkgs[*]}"
go test -race -count=1 -timeout "$timeout" "${pkgs[@]}" || fail "go test"

section "fuzz (${fuzztime} each)"
if [ "$fuzztime" = "0" ]; then
	echo "skipped (SSS_FUZZTIME=0)"
else
	# Every "func FuzzX(" in a _test.go file of the main module (nested
	# modules, which have their own go.mod, are left out).
	found=0
	while IFS= read -r file; do
		dir="$(dirname "$file")"
		case "$dir" in ./internal/ferretdb*) continue ;; esac
		for fn in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
			found=$((found + 1))
			echo "-- $fn in $dir"
			go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$fuzztime" "$dir" || fail "fuzz $fn in $dir"
		done
	done < <(find . -path ./.git -prune -o -path ./.bin -prune -o -name '*_test.go' -print | sort)
	if ! grep -rqs --include='*_test.go' '^func FuzzDecode(' protocol; then
		fail "protocol has no FuzzDecode fuzz target"
	fi
	echo "$found fuzz target(s) run"
fi

section "PASS"
