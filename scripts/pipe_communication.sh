#!/usr/bin/env bash
# Description: Run the pipe_communication lesson and watch its pipes from
#   outside. While the lesson pauses, `ls -l /proc/<pid>/fd` of the lesson and of
#   its consumer child both show pipe:[<inode>] with the same inode: one pipe,
#   an end in each process. /proc/<pid>/fdinfo/<fd> tells which end is which.
#   Exits non-zero if it never saw a pipe shared by the lesson and a child,
#   or if the lesson failed.
# Usage: scripts/pipe_communication.sh [lesson options]
#   e.g. scripts/pipe_communication.sh --window 4 --pace 0.5
#   Keep a pause (no --pace 0, no --window 0) or it may miss the pipe.
#   Set LESSON_BIN to a built binary, or LESSON_BIN_DIR to a directory of
#   built lessons, to skip `cargo build`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -n ${LESSON_BIN:-} ]]; then
    bin=$LESSON_BIN
    if [[ ! -x $bin ]]; then
        echo "error: no lesson binary (got '$bin')" >&2
        exit 1
    fi
else
    bin=$(lesson_bin pipe_communication)
fi

# Its output goes straight to the terminal, between our [watch] lines.
start_lesson "$bin" "$@"

# Whether the lesson still runs (a zombie does not count: it holds no fds).
alive() {
    local stat
    stat=$(ps -o stat= -p "$lesson_pid" 2>/dev/null) || return 1
    [[ $stat != Z* ]]
}

# The pipes process $1 holds, as pipe:[inode], one a line. Descriptors 0-2
# are skipped, and so are the pipes this script itself holds: those come
# from whoever started it, shared by every process of the lesson without the
# lesson making them.
pipes_of() {
    local fd link
    for fd in /proc/"$1"/fd/*; do
        if [[ ${fd##*/} =~ ^[0-9]+$ ]] && ((${fd##*/} > 2)); then
            if link=$(readlink "$fd" 2>/dev/null) && [[ $link == pipe:* ]] &&
                ! grep -qxF -- "$link" <<<"$inherited"; then
                echo "$link"
            fi
        fi
    done
    return 0
}
inherited=""
inherited=$(pipes_of $$)

# Each descriptor of process $1 on pipe $2, with the end it is, from the
# access mode in the flags (octal) of /proc/<pid>/fdinfo/<fd>.
show_ends() {
    local fd link flags
    for fd in /proc/"$1"/fd/*; do
        link=$(readlink "$fd" 2>/dev/null) || continue
        [[ $link == "$2" ]] || continue
        flags=$(sed -n 's/^flags:[[:space:]]*//p' /proc/"$1"/fdinfo/"${fd##*/}" 2>/dev/null) || continue
        [[ -n $flags ]] || continue
        if (((8#$flags & 3) == 1)); then
            echo "[watch]   pid $1: $fd -> $link, flags $flags: the write end"
        else
            echo "[watch]   pid $1: $fd -> $link, flags $flags: the read end"
        fi
    done
    return 0
}

shared=""
sharer=""
while [[ -z $shared ]] && alive; do
    mine=$(pipes_of "$lesson_pid" | sort -u)
    for child in $(ps -o pid= --ppid "$lesson_pid" 2>/dev/null || true); do
        theirs=$(pipes_of "$child")
        for link in $mine; do
            if grep -qxF -- "$link" <<<"$theirs"; then
                shared=$link
                sharer=$child
                break 2
            fi
        done
    done
    [[ -n $shared ]] || sleep 0.1
done

if [[ -n $shared ]]; then
    echo "[watch] the lesson ($lesson_pid) and its child $sharer both hold $shared:"
    show_ends "$lesson_pid" "$shared"
    show_ends "$sharer" "$shared"
    echo "[watch] its children: ps -o pid,ppid,stat,comm --ppid $lesson_pid"
    ps -o pid,ppid,stat,comm --ppid "$lesson_pid" || true
fi

status=0
wait_lesson || status=$?

if [[ -z $shared ]]; then
    echo "error: never saw a pipe shared by the lesson and a child (was the pause 0?)" >&2
    exit 1
fi
if ((status != 0)); then
    echo "error: the lesson exited with status $status" >&2
    exit "$status"
fi
echo "[watch] saw $shared in two processes; the lesson passed its checks"
