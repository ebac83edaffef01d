#!/usr/bin/env bash
# Description: Run the whole test suite N times (`cargo test --workspace
#              --no-fail-fast`) and print a table of every test that failed:
#              the test, how many of the N runs it failed, and its first
#              failing assertion. Finds the flaky tests one run would miss.
# Usage: scripts/repeat-tests.sh N [CARGO_TEST_ARGS...]
#   N is how many runs. The other arguments go to each `cargo test`, e.g.
#   `scripts/repeat-tests.sh 5 --features common/futex-default`. Without
#   arguments it prints this usage and exits 0. Exits 1 if any run failed;
#   the logs of the runs are then kept, and their directory printed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# == 0)); then
    echo "usage: scripts/repeat-tests.sh N [cargo test arguments...]"
    echo "  runs cargo test --workspace --no-fail-fast N times; a table of the failures"
    exit 0
fi
runs=$1
shift
if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "repeat-tests: N must be a whole number from 1 up, not '$runs'" >&2
    exit 2
fi
enter_repo

logs=$(mktemp -d)
# One line per failure of a run: TEST<TAB>ASSERTION. A test binary is
# named by its target (`backends`, `supervisor(unit)` for the unit tests of
# a crate, `common(doc)` for its doc tests), since test names repeat across
# binaries. A binary that died, or a run that failed without a failing test
# (a build error), is listed as a whole.
failures() {
    awk -v code="$2" '
        function add(key, why) {
            if (!(key in seen)) { seen[key] = 1; order[++n] = key }
            if (why != "" && !(key in first)) first[key] = why
        }
        /^ *Running / {
            dep = $NF; gsub(/[()]/, "", dep); sub(/.*\//, "", dep); sub(/-[0-9a-f]+$/, "", dep)
            bin = ($2 == "unittests") ? dep "(unit)" : dep
            next
        }
        /^ *Doc-tests / { bin = $2 "(doc)"; next }
        /^test .* \.\.\. FAILED$/ {
            name = substr($0, 6, length($0) - 16)
            add(bin ": " name, "")
            next
        }
        /^---- .* stdout ----$/ { section = substr($0, 6, length($0) - 17); next }
        / panicked at / && section != "" {
            where = $0; sub(/.* panicked at /, "", where); sub(/:$/, "", where)
            what = ""
            if ((getline line) > 0) what = line
            add(bin ": " section, where ": " what)
            section = ""
            next
        }
        /process didn.t exit successfully/ && /signal: / {
            why = $0; sub(/.*\(signal: /, "signal ", why); sub(/\)$/, "", why)
            add(bin ": (the whole test binary)", why)
            next
        }
        /^error(\[E[0-9]+\])?: / && firsterror == "" { firsterror = $0 }
        END {
            if (n == 0 && code != 0) add("(the run itself: cargo exited with " code ")", firsterror)
            for (i = 1; i <= n; i++) print order[i] "\t" first[order[i]]
        }
    ' "$1"
}

failed_runs=0
for ((i = 1; i <= runs; i++)); do
    log="$logs/run-$i.log"
    code=0
    cargo test --workspace --no-fail-fast "$@" >"$log" 2>&1 || code=$?
    failures "$log" "$code" >"$logs/run-$i.failures"
    count=$(wc -l <"$logs/run-$i.failures")
    if ((code != 0)); then
        failed_runs=$((failed_runs + 1))
    fi
    echo "repeat-tests: run $i of $runs: exit $code, $count failing"
done

echo
if ((failed_runs == 0)); then
    rm -rf "$logs"
    echo "repeat-tests: no failure in $runs runs of cargo test --workspace --no-fail-fast $*"
    exit 0
fi
# The table: most failures first, each test's first failing assertion.
for ((i = 1; i <= runs; i++)); do cat "$logs/run-$i.failures"; done | awk -F '\t' -v runs="$runs" '
    { if (!($1 in count)) { count[$1] = 0; why[$1] = $2 }
      count[$1]++
      if (why[$1] == "") why[$1] = $2 }
    END { for (t in count) printf "%d\t%s\t%s\n", count[t], t, why[t] }
' | sort -t "$(printf '\t')" -k1,1nr -k2,2 | awk -F '\t' -v runs="$runs" '
    BEGIN { printf "%-60s  %-9s  %s\n", "test", "failures", "first failing assertion" }
    { printf "%-60s  %-9s  %s\n", $2, $1 "/" runs, $3 }
'
echo
echo "repeat-tests: $failed_runs of $runs runs failed; logs in $logs"
exit 1
