#!/usr/bin/env bash
# The one test command of sss: formatting, vet, the race-enabled tests of
# every package against real redis-server and FerretDB processes, and short
# fuzz runs. Run from anywhere: ./scripts/test.sh
#
# Environment:
#   SSS_FUZZEXECS  executions per fuzz target (default: each target's budget
#                  below, about 10 s of this 2-core machine; 0 skips fuzzing)
#   SSS_BROWSER_TESTS  0 skips the browser client's section (Chromium, node,
#                  tsc; default 1; CI runs it)
#   SSS_TEST_TIMEOUT  go test -timeout (default 15m)
#   SSS_TEST_PKGS  packages to vet and test (default ./...; CI uses the default)
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"
fuzzexecs="${SSS_FUZZEXECS:-}"
timeout="${SSS_TEST_TIMEOUT:-15m}"
read -r -a pkgs <<<"${SSS_TEST_PKGS:-./...}"

# Each section prints how long the previous one took, and the total.
t_start=$SECONDS
t_section=$SECONDS
sec_name=""
end_section() {
	if [ -n "$sec_name" ]; then
		printf -- '---- %s: %ds (total %ds)\n' "$sec_name" $((SECONDS - t_section)) $((SECONDS - t_start))
	fi
}
section() {
	end_section
	sec_name="$*"
	t_section=$SECONDS
	printf '\n==== %s ====\n' "$*"
}
fail() { printf '\nFAIL: %s (after %ds)\n' "$*" $((SECONDS - t_start)) >&2; exit 1; }

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

section "browser client: tsc, JavaScript and Chromium tests (internal/browsertest)"
if [ "${SSS_BROWSER_TESTS:-1}" = "0" ]; then
	echo "skipped (SSS_BROWSER_TESTS=0)"
else
	t0=$SECONDS
	if ! command -v chromium >/dev/null 2>&1; then
		echo "chromium missing: installing the chromium package"
		sudo=""
		if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
		$sudo apt-get update
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends chromium
	fi
	chromium --version 2>/dev/null
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || fail "node and npm (Node.js 20 or later) are needed"
	node_major="$(node -p 'process.versions.node.split(".")[0]')"
	[ "$node_major" -ge 20 ] || fail "Node.js $(node --version) is too old: the JavaScript tests need 20 or later"
	echo "node $(node --version), npm $(npm --version)"
	t1=$SECONDS
	echo "tools ready in $((t1 - t0)) s"
	(
		cd internal/browsertest/js
		npm ci --no-audit --no-fund --loglevel=error
		npx --no-install tsc --noEmit -p .
	) || fail "tsc --noEmit (internal/browsertest/js/usage.ts against server/sssjs/sss.d.ts)"
	t2=$SECONDS
	echo "npm ci + tsc --noEmit: ok in $((t2 - t1)) s"
	(
		cd internal/browsertest
		go vet ./...
		go test -race -count=1 -timeout 10m -v ./... 2>&1 | grep -v '^=== \(RUN\|PAUSE\|CONT\)'
		exit "${PIPESTATUS[0]}"
	) || fail "browser and JavaScript tests (screenshots of failed pages: see the log above)"
	t3=$SECONDS
	echo "browser and JavaScript tests: ok in $((t3 - t2)) s; section total $((t3 - t0)) s"
fi

section "fuzz (execution-count budgets)"
# Budgets are execution counts, not durations: a -fuzztime duration races
# Go's fuzz coordinator at its deadline (golang/go#75804, fixed in Go
# 1.27) and fails with "context deadline exceeded" on a loaded machine
# although nothing was found. Counts are sized to about 10 s each here.
fuzz_budget() {
	if [ -n "$fuzzexecs" ]; then echo "$fuzzexecs"; return; fi
	case "$1" in
	FuzzDecode) echo 600000 ;;
	FuzzDecodeRelay) echo 150000 ;;
	*) echo 100000 ;;
	esac
}
# fuzz_one runs one target. It fails on a finding (a crasher written to
# testdata/fuzz, or a failure the corpus replay reproduces); a failure of
# the fuzzing machinery itself, with no crasher and a clean replay of the
# corpus, is reported and tolerated.
fuzz_one() {
	local fn="$1" dir="$2" budget="$3" out before after
	out="$(mktemp)"
	before="$(find "$dir/testdata/fuzz/$fn" -type f 2>/dev/null | wc -l)"
	if timeout 300 go test -run='^$' -fuzz="^${fn}\$" -fuzztime="${budget}x" "$dir" >"$out" 2>&1; then
		tail -3 "$out"
		rm -f "$out"
		return 0
	fi
	cat "$out"
	after="$(find "$dir/testdata/fuzz/$fn" -type f 2>/dev/null | wc -l)"
	if grep -q 'Failing input written to' "$out" || [ "$after" != "$before" ]; then
		rm -f "$out"
		return 1
	fi
	rm -f "$out"
	echo "fuzz $fn stopped without a crasher; replaying its corpus"
	go test -count=1 -run="^${fn}\$" "$dir" || return 1
	echo "WARNING: $fn: the fuzzing machinery failed (no crasher, corpus replay passes); not a finding"
	return 0
}
if [ "$fuzzexecs" = "0" ]; then
	echo "skipped (SSS_FUZZEXECS=0)"
else
	# Every "func FuzzX(" in a _test.go file of the main module (nested
	# modules, which have their own go.mod, are left out).
	found=0
	while IFS= read -r file; do
		dir="$(dirname "$file")"
		case "$dir" in ./internal/ferretdb*) continue ;; esac
		for fn in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
			found=$((found + 1))
			budget="$(fuzz_budget "$fn")"
			echo "-- $fn in $dir ($budget executions)"
			fuzz_one "$fn" "$dir" "$budget" || fail "fuzz $fn in $dir"
		done
	done < <(find . -path ./.git -prune -o -path ./.bin -prune -o -name '*_test.go' -print | sort)
	if ! grep -rqs --include='*_test.go' '^func FuzzDecode(' protocol; then
		fail "protocol has no FuzzDecode fuzz target"
	fi
	echo "$found fuzz target(s) run"
fi

section "PASS"
printf 'total %ds\n' $((SECONDS - t_start))
