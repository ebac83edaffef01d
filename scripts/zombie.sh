#!/usr/bin/env bash
# Description: Watch the zombie lesson from outside: while the parent leaves
#              its child unreaped, `ps` shows the child in state Z
#              (<defunct>); after the parent reaps it, the child is gone.
# Usage: scripts/zombie.sh [PACE]
#   PACE scales the lesson's zombie window (default: $LESSON_PACE or 0.3,
#   a 3-second window). Run from anywhere inside the repository.
set -euo pipefail

pace=${1:-${LESSON_PACE:-0.3}}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# LESSON_BIN_DIR: use binaries built elsewhere (the tests do) instead of building.
if [[ -n ${LESSON_BIN_DIR:-} ]]; then
    bin=$LESSON_BIN_DIR/zombie
else
    cargo build -q -p zombie
    bin=${CARGO_TARGET_DIR:-$root/target}/debug/zombie
fi

out=$(mktemp)
pid=
cleanup() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$out"
}
trap cleanup EXIT

# The window must be long enough for us to look, whatever the pace.
"$bin" --pace "$pace" --window 10 >"$out" 2>&1 &
pid=$!
echo "started the zombie lesson as PID $pid (pace $pace)"

seen=
for _ in $(seq 1 500); do
    # Children of the lesson, with their state; Z marks a zombie.
    if rows=$(ps -o pid=,ppid=,stat=,comm= --ppid "$pid") && [[ $rows == *Z* ]]; then
        echo "while the parent waits:"
        ps -o pid,ppid,stat,comm --ppid "$pid"
        seen=yes
        break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
done

wait "$pid"
pid=
echo "after the lesson:"
cat "$out"
if [[ -z $seen ]]; then
    echo "zombie.sh: never saw a child in state Z" >&2
    exit 1
fi
echo "zombie.sh: saw the zombie from outside"
