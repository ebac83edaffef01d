#!/usr/bin/env bash
# Description: Watch the orphan lesson from outside: `ps` shows the orphan's
#              PPID change, when its parent exits, from the parent's PID to
#              its adopter's (init, or the nearest subreaper). Fails if it
#              did not see the change.
# Usage: scripts/orphan.sh [PACE] [--subreaper]
#   PACE scales the lesson's pauses (default: $LESSON_PACE or 0.3: the
#   family stays together for 3 s, then the orphan lives on for 3 s; below
#   0.05 it is raised to 0.05, so that ps has time to look). --subreaper
#   runs the example orphan_subreaper instead, whose main process makes
#   itself a subreaper and adopts the orphan. Run from anywhere inside the
#   repository.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    echo "usage: $0 [PACE] [--subreaper]" >&2
    exit 2
}

pace=$(lesson_pace 0.3)
subreaper=
for arg in "$@"; do
    case $arg in
        --subreaper) subreaper=yes ;;
        -*) usage ;;
        *) pace=$arg ;;
    esac
done
[[ $pace =~ ^[0-9]+([.][0-9]+)?$ ]] || usage
pace=$(pace_at_least 0.05 "$pace")

enter_repo
if [[ -n $subreaper ]]; then
    # An example's binary: built with --example, found in examples/.
    dir=$(lesson_bin_dir debug -p orphan --example orphan_subreaper)
    bin=$dir/examples/orphan_subreaper
    if [[ ! -x $bin ]]; then
        echo "orphan.sh: no example binary $bin" >&2
        exit 1
    fi
else
    bin=$(lesson_bin orphan)
fi
out=$(mktemp)
remove_at_exit "$out"

# Pauses of 10 s, scaled by the pace: long enough for us to look.
start_lesson "$bin" --pace "$pace" --parent-stays 10 --orphan-stays 10 >"$out" 2>&1
pid=$lesson_pid
echo "started the orphan lesson as PID $pid (pace $pace)"

# The orphan's first line names it and its parent: "[orphan 4244] my parent is 4243".
first='^\[orphan ([0-9]+)\] my parent is ([0-9]+)$'
orphan=
parent=
for _ in $(seq 1 3000); do
    while IFS= read -r line; do
        if [[ $line =~ $first ]]; then
            orphan=${BASH_REMATCH[1]}
            parent=${BASH_REMATCH[2]}
            break
        fi
    done <"$out"
    [[ -n $orphan ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
done
if [[ -z $orphan ]]; then
    echo "orphan.sh: the lesson never named its orphan:" >&2
    cat "$out" >&2
    exit 1
fi
echo "the lesson $pid forked the parent $parent, which forked the orphan $orphan"

# Watch the orphan's PPID and state until it is gone (reaped by its adopter);
# show the family whenever either changes.
seen_parent=
adopter=
last=
while now=$(ps -o ppid=,stat= -p "$orphan"); do
    read -r ppid stat <<<"$now"
    zombie=
    [[ $stat == Z* ]] && zombie=yes
    if [[ "$ppid $zombie" != "$last" ]]; then
        last="$ppid $zombie"
        if [[ -n $zombie ]]; then
            echo "the orphan has exited: a zombie (Z) until its adopter reaps it"
        elif [[ $ppid == "$parent" ]]; then
            seen_parent=yes
            echo "while the parent lives, the orphan's PPID is the parent's PID:"
        elif [[ -z $adopter ]]; then
            adopter=$ppid
            echo "the parent has exited: the orphan's PPID is now $ppid, its adopter:"
            ps -o pid,comm -p "$ppid" || true
        fi
        ps -o pid,ppid,stat,comm -p "$pid,$parent,$orphan" || true
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
done

status=0
wait_lesson || status=$?
echo "the lesson's own output:"
cat "$out"
if [[ $status -ne 0 ]]; then
    echo "orphan.sh: the lesson failed with status $status" >&2
    exit 1
fi
if [[ -z $seen_parent ]]; then
    echo "orphan.sh: never saw the orphan $orphan with its parent $parent as PPID" >&2
    exit 1
fi
if [[ -z $adopter ]]; then
    echo "orphan.sh: never saw the orphan $orphan adopted" >&2
    exit 1
fi
echo "orphan.sh: saw the orphan's PPID change from $parent to $adopter"
