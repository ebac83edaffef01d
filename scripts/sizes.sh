#!/usr/bin/env bash
# Description: Show where every lesson's src/main.rs and every example stands
#              against its line budget: main.rs 160 lines (220 for manager,
#              supervisor and prefork_server), examples 220, each with a
#              `//!` header of at most 25 lines. Counts lines as they are
#              in the file (the files are kept `cargo fmt`-clean).
# Usage: scripts/sizes.sh [--check]
#   With --check, exit 1 if any file is over its budget; without it, only
#   print the table (and exit 0).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
enter_repo

check=no
case "${1:-}" in
    "") ;;
    --check) check=yes ;;
    *) echo "sizes.sh: unknown argument '$1' (usage: scripts/sizes.sh [--check])" >&2; exit 2 ;;
esac

over=0
row() { # file budget
    local file=$1 budget=$2 lines header verdict=ok
    lines=$(wc -l <"$file")
    # The header: the leading run of `//!` lines.
    header=$(awk '/^\/\/!/ { n++; next } { exit } END { print n + 0 }' "$file")
    if ((lines > budget || header > 25)); then
        verdict=OVER
        over=$((over + 1))
    fi
    printf '%-58s %5d %6d %7d  %s\n' "$file" "$lines" "$budget" "$header" "$verdict"
}

printf '%-58s %5s %6s %7s  %s\n' file lines budget header verdict
for main in crates/*/src/main.rs; do
    lesson=$(basename "$(dirname "$(dirname "$main")")")
    budget=160
    case $lesson in manager | supervisor | prefork_server) budget=220 ;; esac
    row "$main" "$budget"
    for example in crates/"$lesson"/examples/*.rs; do
        [[ -f $example ]] && row "$example" 220
    done
done
echo "$over file(s) over budget (main.rs 160, server-like 220, examples 220; headers 25)"
if [[ $check == yes && $over -gt 0 ]]; then
    exit 1
fi
exit 0
