#!/usr/bin/env bash
# Runs the test suite (or some packages) RUNS times on a clean clone of the
# committed HEAD, exactly as CI does (.ci/run's environment, `go test -count=1
# -p 1`), and prints pass/fail per package per run, a summary of every
# package's passes and times, and the slowest packages. Nothing is retried:
# a package that fails once shows it. Exits non-zero if any run failed.
#
#   make soak                       # whole suite, 5 runs
#   make soak RUNS=20 PKGS="./test/e2e/ ./world/wan/"
#
# Uncommitted changes are not tested (clean clone). Needs root, like CI.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${RUNS:-5}
pkgs=${PKGS:-./...}
if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
	echo "soak: RUNS must be a positive integer, got '$runs'" >&2
	exit 2
fi

work=$(mktemp -d /tmp/flowplace-soak.XXXXXX)
trap 'rm -rf "$work"' EXIT
git clone -q --no-hardlinks . "$work/src"
rev=$(git -C "$work/src" rev-parse --short HEAD)
if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
	echo "soak: note: uncommitted changes are not part of the clean clone of $rev"
fi

export FLOWPLACE_REQUIRE_KERNEL=1 FLOWPLACE_REQUIRE_CONTROLPLANE=1 FLOWPLACE_REQUIRE_BROWSER=1 FLOWPLACE_REQUIRE_NODES=1
cd "$work/src"
# Compile once, outside the measured runs, so run 1 is not a cold build.
if ! out=$(go test -count=1 -run '^$' $pkgs 2>&1); then
	echo "soak: the packages do not build at $rev:" >&2
	echo "$out" >&2
	exit 1
fi

echo "soak: $runs runs of $pkgs at $rev on $(nproc) CPUs, $(uname -r), $(go env GOVERSION)"
results="$work/results" # run pkg status seconds
: >"$results"
failed_runs=0
for ((i = 1; i <= runs; i++)); do
	log="$work/run$i.log"
	start=$(date +%s)
	# make test's steps: gofmt and vet gate the run like in CI.
	status=0
	if [[ $pkgs == ./... ]]; then
		make -s fmt-check vet >"$log" 2>&1 || status=$?
	fi
	if ((status == 0)); then
		go test -count=1 -timeout 20m -p 1 $pkgs >>"$log" 2>&1 || status=$?
	else
		echo "FAIL	(gofmt/vet)	0s" >>"$log"
	fi
	# "ok  <pkg> 1.2s", "FAIL <pkg> 1.2s", "ok <pkg> (cached)", "?  <pkg> [no test files]"
	awk -v run="$i" '
		$1 == "ok" && $3 ~ /s$/ { sub(/s$/, "", $3); print run, $2, "pass", $3 }
		$1 == "FAIL" && NF >= 3 && $3 ~ /s$/ { sub(/s$/, "", $3); print run, $2, "FAIL", $3 }
		$1 == "FAIL" && $3 == "[build" { print run, $2, "FAIL", 0 }
	' "$log" >>"$results"
	elapsed=$(($(date +%s) - start))
	if ((status != 0)); then
		failed_runs=$((failed_runs + 1))
		cp "$log" "/tmp/flowplace-soak-run$i.log"
		echo "run $i: FAIL after ${elapsed}s (log: /tmp/flowplace-soak-run$i.log)"
		grep -E '^(--- FAIL|FAIL|panic:)|_test.go:[0-9]+:' "$log" | head -20 | sed 's/^/    /'
	else
		echo "run $i: pass in ${elapsed}s"
	fi
	awk -v run="$i" '$1 == run { printf "    %-4s %-62s %7.1fs\n", $3, $2, $4 }' "$results"
done

echo
echo "summary: $((runs - failed_runs))/$runs runs green"
printf "%-62s %6s %8s %8s\n" package passed mean_s max_s
awk '{ n[$2]++; if ($3 == "pass") p[$2]++; s[$2] += $4; if ($4 > m[$2]) m[$2] = $4 }
	END { for (k in n) printf "%-62s %3d/%-3d %8.1f %8.1f\n", k, p[k], n[k], s[k] / n[k], m[k] }' "$results" |
	sort -k3 -n -r
((failed_runs == 0))
