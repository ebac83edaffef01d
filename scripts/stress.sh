#!/usr/bin/env bash
# Description: Run every lesson COUNT times in a row at full speed and
#              stop at the first failure, naming the lesson and the run.
#              Catches what happens only now and then: a race, a leak, a hang.
# Usage: scripts/stress.sh [COUNT]
#   COUNT defaults to 25. Lessons run with LESSON_PACE=0; each run has a
#   time limit of 120 s.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

count=${1:-25}
enter_repo
bin_dir=$(lesson_bin_dir debug --workspace --bins)

lessons=()
for dir in crates/*/; do
    lessons+=("$(basename "$dir")")
done

log=$(mktemp)
remove_at_exit "$log"
for name in "${lessons[@]}"; do
    args=()
    [[ $name == performance ]] && args=(--quick)
    for ((i = 1; i <= count; i++)); do
        if ! LESSON_PACE=0 timeout 120 "$bin_dir/$name" "${args[@]}" >"$log" 2>&1; then
            echo "stress: $name failed on run $i of $count; its output:" >&2
            cat "$log" >&2
            exit 1
        fi
    done
    echo "stress: $name passed $count runs"
done
echo "stress: all ${#lessons[@]} lessons passed $count runs each"
