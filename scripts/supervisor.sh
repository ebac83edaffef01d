#!/usr/bin/env bash
# Description: Watch the supervisor lesson from outside: `pstree -p` shows
#              its worker PIDs change as workers crash and are restarted,
#              and one worker slot go empty when it is given up. Fails if
#              no worker PID was seen replaced by a new one.
# Usage: scripts/supervisor.sh [PACE]
#   PACE scales the lesson's steps and back-off delays (default:
#   $LESSON_PACE or 0.5). Run from anywhere inside the repository.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pace=$(lesson_pace 0.5 "${1:-}")
enter_repo
bin=$(lesson_bin supervisor)
out=$(mktemp)
remove_at_exit "$out"

# Should the script end first, the exit trap sends the supervisor SIGTERM,
# and it stops its workers gracefully.
start_lesson "$bin" --pace "$pace" >"$out" 2>&1
pid=$lesson_pid
echo "started the supervisor lesson as PID $pid (pace $pace)"

# The live workers: children of the supervisor that are not zombies (a
# zombie is a worker that died and is not reaped yet).
workers() {
    ps -o pid=,stat= --ppid "$pid" | awk '$2 !~ /^Z/ { print $1 }' | sort -n | tr '\n' ' '
}

previous=
replaced=0
snapshots=0
while kill -0 "$pid" 2>/dev/null; do
    current=$(workers || true)
    if [[ $current != "$previous" ]]; then
        # A PID that was there and is gone, and one that is new: replaced.
        gone=0
        new=0
        for p in $previous; do [[ " $current " == *" $p "* ]] || gone=1; done
        for p in $current; do [[ " $previous " == *" $p "* ]] || new=1; done
        if [[ -n $previous && $gone == 1 && $new == 1 ]]; then
            replaced=$((replaced + 1))
        fi
        snapshots=$((snapshots + 1))
        echo "--- workers now: ${current:-none}"
        pstree -p "$pid" 2>/dev/null || true
        previous=$current
    fi
    sleep 0.02
done

status=0
wait_lesson || status=$?
echo "--- the supervisor's own account:"
grep -E '\[supervisor [0-9]+\] .*(died|replaced|giving up|live workers|all checks)' "$out" || true
if [[ $status != 0 ]]; then
    echo "supervisor.sh: the lesson failed with status $status:" >&2
    cat "$out" >&2
    exit 1
fi
if [[ $replaced == 0 ]]; then
    echo "supervisor.sh: never saw a worker PID replaced ($snapshots snapshots)" >&2
    exit 1
fi
echo "supervisor.sh: saw worker PIDs replaced $replaced times in pstree"
