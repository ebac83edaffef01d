#!/usr/bin/env bash
# Description: Watch the prefork_server lesson from outside with `ss -ltnp`
#              while it pauses after starting its workers. First run: one
#              listening socket on the port, with every worker in its users:
#              list (the socket they all inherited). Second run, with
#              SO_REUSEPORT: one listening socket per worker, all on the same
#              port. Exits non-zero if it did not see the port shared by
#              several PIDs both ways.
# Usage: scripts/prefork_server.sh [PACE]
#   PACE scales the lesson's pause after the workers start (default:
#   $LESSON_PACE or 0.5, a 1.5-second pause per run). Needs `ss` (package
#   iproute2), which it installs with apt-get when missing and run as root.
#   Run from anywhere inside the repository.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pace=$(lesson_pace 0.5 "${1:-}")
enter_repo
need_tool ss iproute2
bin=$(lesson_bin prefork_server)
out=$(mktemp)
remove_at_exit "$out"

start_lesson "$bin" --pace "$pace" >"$out" 2>&1
pid=$lesson_pid
echo "started the prefork_server lesson as PID $pid (pace $pace)"

# The lesson prints "see for yourself: ss -ltnp 'sport = :PORT'" once per
# run, when its workers are listening, and then pauses.
looked=0
shared_ok=
reuseport_ok=
for _ in $(seq 1 1500); do
    mapfile -t ports < <(sed -n "s/.*see for yourself: ss -ltnp 'sport = :\([0-9]*\)'.*/\1/p" "$out")
    if ((${#ports[@]} > looked)); then
        port=${ports[looked]}
        looked=$((looked + 1))
        # -H: no header; one line per listening socket on the port.
        rows=$(ss -Hltnp "sport = :$port" || true)
        sockets=$(grep -c LISTEN <<<"$rows" || true)
        pids=$(grep -o 'pid=[0-9]*' <<<"$rows" | sort -u | wc -l)
        if ((looked == 1)); then
            echo "run 1, one shared socket: ss -ltnp 'sport = :$port'"
        else
            echo "run 2, SO_REUSEPORT: ss -ltnp 'sport = :$port'"
        fi
        ss -ltnp "sport = :$port" || true
        echo "the workers, asleep in poll (see WCHAN):"
        ps -o pid,ppid,stat,wchan:40,comm --ppid "$pid" || true
        echo "=> $sockets listening socket(s) on port $port, held by $pids process(es)"
        if ((looked == 1 && sockets == 1 && pids >= 2)); then
            shared_ok=yes
        elif ((looked == 2 && sockets >= 2 && pids >= 2)); then
            reuseport_ok=yes
        fi
    fi
    ((looked < 2)) || break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
done

status=0
wait_lesson || status=$?
echo "the lesson's own output:"
cat "$out"
if ((status != 0)); then
    echo "prefork_server.sh: the lesson failed (exit status $status)" >&2
    exit 1
fi
if [[ -z $shared_ok ]]; then
    echo "prefork_server.sh: never saw one listening socket shared by several PIDs" >&2
    exit 1
fi
if [[ -z $reuseport_ok ]]; then
    echo "prefork_server.sh: never saw several SO_REUSEPORT sockets on one port" >&2
    exit 1
fi
echo "prefork_server.sh: saw one socket shared by all workers, then one socket per worker on the same port"
