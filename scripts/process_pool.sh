#!/usr/bin/env bash
# Description: Watch the process_pool lesson from outside: while it pauses
#              after starting its workers, show its process tree (pstree -p
#              and ps --forest) and check that every worker is a child of
#              the lesson, asleep (state S) in read() on its task pipe.
#              Then let the lesson finish and show its output.
# Usage: scripts/process_pool.sh [PACE]
#   PACE scales the lesson's pauses (default: $LESSON_PACE or 1). Run from
#   anywhere inside the repository.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pace=$(lesson_pace 1 "${1:-}")
enter_repo
bin=$(lesson_bin process_pool)
out=$(mktemp)
remove_at_exit "$out"

# The exit trap wakes the lesson if we stopped it (see below), so that it
# can die; its workers die with it (PR_SET_PDEATHSIG).
start_lesson "$bin" --pace "$pace" >"$out" 2>&1
pid=$lesson_pid
echo "started the process_pool lesson as PID $pid (pace $pace)"

# The lesson prints "pausing" once its workers are up and asleep.
for _ in $(seq 1 1500); do
    grep -q "pausing" "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
done
if ! grep -q "pausing" "$out"; then
    cat "$out"
    echo "process_pool.sh: the lesson never paused to be looked at" >&2
    exit 1
fi
shown=$(wc -l <"$out")
cat "$out"

# Freeze the lesson while we look, so the tree cannot change under us at
# any pace. SIGSTOP cannot be caught; SIGCONT lets it go on.
kill -STOP "$pid"
echo
if command -v pstree >/dev/null; then
    echo "pstree -p $pid:"
    pstree -p "$pid"
fi
echo "ps --forest -o pid,ppid,stat,comm --ppid $pid:"
ps --forest -o pid,ppid,stat,comm --ppid "$pid"

# The PIDs the lesson says it started, and the children ps sees.
said=$(grep -m1 "workers started once, pids" "$out" | sed 's/.*pids \([0-9, ]*\);.*/\1/' | tr -d ' ' | tr ',' '\n' | sort)
seen=$(ps -o pid= --ppid "$pid" | tr -d ' ' | sort)
asleep=$(ps -o stat= --ppid "$pid" | awk '/^S/ { n++ } END { print n + 0 }')
kill -CONT "$pid"
echo

status=0
wait_lesson || status=$?
tail -n +"$((shown + 1))" "$out"
echo
if [[ -z $said || $said != "$seen" ]]; then
    echo "process_pool.sh: the lesson's workers ($(echo "$said" | xargs)) are not its children as ps sees them ($(echo "$seen" | xargs))" >&2
    exit 1
fi
count=$(echo "$seen" | wc -l)
if [[ $asleep -ne $count ]]; then
    echo "process_pool.sh: only $asleep of the $count workers were asleep (state S)" >&2
    exit 1
fi
if [[ $status -ne 0 ]]; then
    echo "process_pool.sh: the lesson failed (exit status $status)" >&2
    exit 1
fi
echo "process_pool.sh: saw the $count workers as children of the lesson (PID $pid), all asleep; the lesson passed its checks"
