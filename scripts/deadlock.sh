#!/usr/bin/env bash
# Description: Run the deadlock lesson and look at its two deadlocked workers
#              from outside: both in state S, asleep in a futex wait, each
#              holding the lock the other one wants. Fails if it does not see
#              the two of them blocked, or if the lesson fails.
# Usage: scripts/deadlock.sh [PACE]
#        PACE scales how long the lesson leaves the deadlock in place
#        (default 1: about 3 seconds). Honours CARGO_TARGET_DIR.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pace="$(lesson_pace 1 "${1:-}")"
enter_repo
bin="$(lesson_bin deadlock)"
out="$(mktemp)"
remove_at_exit "$out"

start_lesson "$bin" --pace "$pace" >"$out" 2>&1
pid=$lesson_pid
echo "started the deadlock lesson as PID $pid (pace $pace)"

# Wait for the lesson to say that both workers are blocked.
for _ in $(seq 600); do
    grep -q "both workers are blocked" "$out" && break
    if ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if ! grep -q "both workers are blocked" "$out"; then
    echo "deadlock.sh: the lesson never reported the deadlock" >&2
    cat "$out" >&2
    exit 1
fi

# Look from outside while the lesson holds the deadlock in place. A worker
# whose wait is cut into slices is briefly R between them: look again, until
# the workers give up.
seen=0
view=""
for _ in $(seq 100); do
    view="$(ps -o pid,ppid,stat,wchan:20,comm --ppid "$pid" || true)"
    blocked="$(awk 'NR > 1 && $3 ~ /^S/' <<<"$view" | wc -l)"
    if [[ "$blocked" -eq 2 ]]; then
        seen=1
        break
    fi
    grep -q "giving up" "$out" && break
    sleep 0.05
done
echo "ps -o pid,ppid,stat,wchan:20,comm --ppid $pid"
echo "$view"

status=0
wait_lesson || status=$?
echo "--- the lesson's output"
cat "$out"

if [[ "$seen" -ne 1 ]]; then
    echo "deadlock.sh: did not see both workers in state S" >&2
    exit 1
fi
if [[ "$status" -ne 0 ]]; then
    echo "deadlock.sh: the lesson exited with status $status" >&2
    exit 1
fi
echo "seen: two workers in state S, each waiting for the other's lock"
