#!/usr/bin/env bash
# Description: Measure the lessons' figures in a release build and print
#              each as name<TAB>median<TAB>unit (the median of REPS runs;
#              the spread goes to stderr). With --with-reference, also run
#              the C and Python reference benchmarks (../shared/bench/run.sh
#              or $REFERENCE_BENCH), interleaved with ours, so the figures
#              can be set side by side from one run on one machine.
# Usage: scripts/bench.sh [--with-reference] [REPS]
#   REPS defaults to 3. Figures: see the performance lesson's header and
#   the README's performance section. A failed check (a lost update, a
#   wrong answer) makes the script exit 1.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

with_reference=
if [[ ${1:-} == --with-reference ]]; then
    with_reference=yes
    shift
fi
reps=${1:-3}
enter_repo
reference=${REFERENCE_BENCH:-$lesson_root/../shared/bench/run.sh}
bin_dir=$(lesson_bin_dir release -p performance -p process_pool -p process_barrier -p manager --bins --examples)

raw=$(mktemp)
remove_at_exit "$raw"
status=0

# One round of every Rust figure, appended to $raw.
ours() {
    local cmd
    for cmd in "performance --tsv" "process_pool --bench" "examples/process_barrier_bench --tsv --rounds 100000" "manager --bench"; do
        # shellcheck disable=SC2086 # $cmd is a binary and its arguments
        if ! timeout 300 "$bin_dir"/$cmd >>"$raw"; then
            printf 'ERROR\t%s\tfailed or timed out\n' "$cmd" >>"$raw"
            status=1
        fi
    done
}

for ((i = 0; i < reps; i++)); do
    ours
    if [[ -n $with_reference ]]; then
        # The reference prints its own medians of one run each; interleaving
        # keeps both sides under the same conditions.
        if ! bash "$reference" 1 2>/dev/null | grep -v '^meta' >>"$raw"; then
            printf 'ERROR\treference\tfailed\n' >>"$raw"
            status=1
        fi
    fi
done

printf 'meta\t%s\t%s\n' "$(nproc)" "cpus"
printf 'meta\t%s\t%s\n' "$(uname -r)" "kernel"
awk -F'\t' '
    NF == 3 && $1 != "ERROR" {
        if (!($1 in n)) { order[++k] = $1; unit[$1] = $3 }
        v[$1, ++n[$1]] = $2
    }
    END {
        for (j = 1; j <= k; j++) {
            name = order[j]; m = n[name]
            for (a = 1; a <= m; a++) x[a] = v[name, a] + 0
            for (a = 2; a <= m; a++) for (b = a; b > 1 && x[b-1] > x[b]; b--) { t = x[b]; x[b] = x[b-1]; x[b-1] = t }
            printf "%s\t%.4g\t%s\n", name, x[int((m + 1) / 2)], unit[name]
            printf "# %s %.6g..%.6g (n=%d)\n", name, x[1], x[m], m > "/dev/stderr"
        }
    }' "$raw"
grep '^ERROR' "$raw" >&2 || true
exit $status
