#!/usr/bin/env bash
# Description: Watch shared memory from outside while the shared_value lesson
#              and its example shared_value_named pause: in /proc/<pid>/maps
#              of the parent and of a child, the same shared mapping (rw-s,
#              same inode). The lesson's anonymous mapping, which this kernel
#              shows as "/dev/zero (deleted)" (or "[anon_shmem:...]" if
#              named), and the example's named object,
#              "/dev/shm/shared_value_named-<pid>-<random> (deleted)", mapped
#              by both processes after its name is gone from /dev/shm. Fails
#              if it did not see each kind in both processes, or if a run
#              left anything in /dev/shm.
# Usage: scripts/shared_memory.sh [PACE]
#   PACE scales the pauses of 3 s (default: $LESSON_PACE or 0.3; below 0.05
#   it is raised to 0.05, so that there is time to look). Run from anywhere
#   inside the repository.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    echo "usage: $0 [PACE]" >&2
    exit 2
}

pace=$(lesson_pace 0.3 "${1:-}")
[[ $# -le 1 && $pace =~ ^[0-9]+([.][0-9]+)?$ ]] || usage
pace=$(pace_at_least 0.05 "$pace")

enter_repo
lesson=$(lesson_bin shared_value)
# An example's binary: built with --example, found in examples/.
dir=$(lesson_bin_dir debug -p shared_value --example shared_value_named)
named_bin=$dir/examples/shared_value_named
if [[ ! -x $named_bin ]]; then
    echo "shared_memory.sh: no example binary $named_bin" >&2
    exit 1
fi
out=$(mktemp)
remove_at_exit "$out"

# The shared (rw-s) mappings of process $1 whose path matches the regular
# expression $2, one per line, columns separated by single spaces:
# address perms offset device inode path. Nothing if the process is gone.
shared_maps() {
    local range perms offset dev inode path
    {
        while read -r range perms offset dev inode path; do
            if [[ $perms == rw-s && $path =~ $2 ]]; then
                echo "$range $perms $offset $dev $inode $path"
            fi
        done <"/proc/$1/maps"
    } 2>/dev/null || true
}

# Show the mappings matching $3 that parent $1 and child $2 share (the same
# inode in both); succeed if there is at least one.
same_in_both() {
    local parent=$1 child=$2 pattern=$3 line inode found=1
    while IFS= read -r line; do
        [[ -n $line ]] || continue
        inode=$(cut -d' ' -f5 <<<"$line")
        local mine
        mine=$(shared_maps "$parent" "$pattern" | awk -v i="$inode" '$5 == i' | head -n 1)
        if [[ -n $mine ]]; then
            echo "  parent /proc/$parent/maps: $mine"
            echo "  child  /proc/$child/maps: $line"
            if [[ ${mine%% *} != "${line%% *}" ]]; then
                echo "  (at different addresses: never keep pointers in shared memory)"
            fi
            found=0
        fi
    done < <(shared_maps "$child" "$pattern")
    return $found
}

seen_anon=
seen_named=

# watch TOPIC BIN: run BIN (the lesson or an example, its names start with
# TOPIC) and, at each pause it announces, show what its parent and a child
# map in common; fail if the run fails or leaves anything in /dev/shm.
watch() {
    local topic=$1 bin=$2 pid running line parent child left status=0 handled=0
    local -a pauses pids
    start_lesson "$bin" --pace "$pace" >"$out" 2>&1
    pid=$lesson_pid
    echo "started $topic as PID $pid (pace $pace)"
    local anon='^(/dev/zero \(deleted\)|\[anon_shmem)'
    local named="^/dev/shm/$topic-$pid-"
    # Each pause is announced with the maps files to look at:
    # "[parent 4242] pausing 0.9 s; look: grep rw-s /proc/4242/maps /proc/4243/maps ..."
    while :; do
        running=yes
        kill -0 "$pid" 2>/dev/null || running=
        mapfile -t pauses < <(grep -F ' pausing ' "$out" || true)
        while ((handled < ${#pauses[@]})); do
            line=${pauses[handled]}
            handled=$((handled + 1))
            mapfile -t pids < <(grep -oE '/proc/[0-9]+/maps' <<<"$line" | tr -dc '0-9\n')
            parent=${pids[0]}
            echo
            echo "pause $handled: $topic $parent waits; its children:"
            ps -o pid,ppid,stat,comm --ppid "$parent" || true
            # One child is enough to show; the others map the same objects.
            for child in "${pids[@]:1}"; do
                if same_in_both "$parent" "$child" "$anon"; then
                    seen_anon=yes
                    echo "  same inode: one anonymous shared object, mapped in both, not a copy"
                    break
                fi
                if same_in_both "$parent" "$child" "$named"; then
                    seen_named=yes
                    left=$(find /dev/shm -maxdepth 1 -name "$topic-$pid-*" | head -n 1)
                    if [[ -z $left ]]; then
                        echo "  and ls /dev/shm no longer lists it: the name is gone, the memory is not"
                    else
                        echo "  (still listed in /dev/shm: $left)"
                    fi
                    break
                fi
            done
        done
        [[ -n $running ]] || break
        sleep 0.01
    done

    wait_lesson || status=$?
    echo
    echo "$topic said:"
    cat "$out"
    left=$(find /dev/shm -maxdepth 1 -name "$topic-$pid-*" | head -n 5)
    if [[ $status -ne 0 ]]; then
        echo "shared_memory.sh: $topic failed with status $status" >&2
        exit 1
    fi
    if [[ -n $left ]]; then
        echo "shared_memory.sh: left in /dev/shm: $left" >&2
        exit 1
    fi
}

watch shared_value "$lesson"
echo
watch shared_value_named "$named_bin"

if [[ -z $seen_anon || -z $seen_named ]]; then
    echo "shared_memory.sh: did not see both kinds of mapping in parent and child" \
        "(anonymous: ${seen_anon:-no}, named: ${seen_named:-no})" >&2
    exit 1
fi
echo "shared_memory.sh: saw the anonymous and the named shared mapping in parent and child"
