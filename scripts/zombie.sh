#!/usr/bin/env bash
# Description: Watch the zombie lesson from outside: while the parent leaves
#              its child unreaped, `ps` shows the child in state Z
#              (<defunct>); after the parent reaps it, the child is gone.
# Usage: scripts/zombie.sh [PACE]
#   PACE scales the lesson's zombie window (default: $LESSON_PACE or 0.3,
#   a 3-second window). Run from anywhere inside the repository.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pace=$(lesson_pace 0.3 "${1:-}")
enter_repo
bin=$(lesson_bin zombie)
out=$(mktemp)
remove_at_exit "$out"

# The window must be long enough for us to look, whatever the pace.
start_lesson "$bin" --pace "$pace" --window 10 >"$out" 2>&1
pid=$lesson_pid
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

wait_lesson
echo "after the lesson:"
cat "$out"
if [[ -z $seen ]]; then
    echo "zombie.sh: never saw a child in state Z" >&2
    exit 1
fi
echo "zombie.sh: saw the zombie from outside"
