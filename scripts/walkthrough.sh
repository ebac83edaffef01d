#!/usr/bin/env bash
# Description: Run every lesson present, in learning order, each under a
#              heading with a line on what to watch. Stops at the first
#              lesson that fails (a lesson fails when the system disagrees
#              with what it teaches).
#              After each lesson it names the lesson's examples (the
#              deeper parts, crates/<lesson>/examples/); with --examples
#              it runs them too.
# Usage: scripts/walkthrough.sh [--examples] [PACE]
#   PACE scales the pauses meant for a human watching (default:
#   $LESSON_PACE or 1; 0 runs everything at full speed).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

run_examples=
if [[ ${1:-} == --examples ]]; then
    run_examples=yes
    shift
fi
pace=$(lesson_pace 1 "${1:-}")
enter_repo

# crate|extra arguments|what to watch
lessons=(
    "basic_process||the child's PID and PPID, and a counter the child set to 42 still 1 in the parent (examples: Command starting a fresh child; a shared file offset; a Mutex locked forever in a threaded fork)"
    "multiple_processes||all workers alive at once, then reaped in the order they finish, each with its exit code (examples: a child seen R, S, T, S, Z; an overrunning child killed by SIGKILL; a lock held by another thread staying locked in a forked child)"
    "zombie||the child in state Z while the parent does not reap it, then exit code 42 (examples: no zombie with a SIGCHLD handler or SIG_IGN)"
    "orphan||the child's parent PID changing when its parent exits, and who adopted it (example: a subreaper grandparent reaping its exit code 7)"
    "pipe_communication||one pipe:[inode] in /proc, the write end in the parent, the read end in the child; counts and checksums equal on both sides (examples: a missing end-of-file caught by a timeout; helloworld from two writes, length-prefixed frames; a two-way exchange checked both ways; EPIPE, then death by SIGPIPE; only pipe() leaking into an exec'd program)"
    "queue_communication||producers waiting on a full queue; every item consumed exactly once, in order per producer (examples: priorities 9, 5, 5, 1; a receive giving up with ETIMEDOUT on an empty queue)"
    "shared_value||the value back at its start after locked increments and decrements (examples: fetch_add with no lock; a named /dev/shm object an exec'd child meets, removed at once)"
    "shared_array||updates lost without a lock (counted; a run may lose none), the count exact with one (example: a reader never sees a torn array under the lock; with --split it does, yet the array ends exact)"
    "manager||the server's PID and its thread per connection; the socket file gone before the first line; every client's item exactly once; the server exiting on Shutdown"
    "process_lock||updates lost without the lock, an exact count with it (examples: torn lines without the lock, none with it or in one write; a holder killed, recovered with EOWNERDEAD and pthread_mutex_consistent; an unrepaired lock, ENOTRECOVERABLE)"
    "process_semaphore||never more than 3 holders at once, and 3 reached"
    "process_barrier||no worker in phase k+1 before all finished phase k; one last arriver per phase (examples: a worker killed by SIGKILL breaks the barrier, every survivor told through its timed wait; barrier rounds/s between 2 processes)"
    "deadlock||two children stuck on each other's lock (state S), detected by timeout (examples: one global lock order, try-lock with back-off, both completing)"
    "process_pool||the same worker PIDs serving every task, in map and as_completed order; a panic, an abort, a SIGKILL and a hang each failing only their task, the worker replaced; fork per task costing far more per task"
    "performance|--quick|what creating processes and moving bytes cost on this machine"
    "signals||a worker finishing the step SIGTERM came in and saving its results (examples: one without a handler losing them; kill(pid, 0) ok for a live child and a zombie, ESRCH once reaped; three SIGUSR1 read as one from a signalfd; sigaction(SIGKILL) and sigaction(SIGSTOP) refused with EINVAL)"
    "named_pipe||a reader stuck inside open until a writer opens; the FIFO removed once everyone has opened it, still carrying data; records of at most PIPE_BUF bytes from several writers all whole, larger ones cut"
    "exec||a child stuck on a full stderr pipe, then 1 MiB per pipe read with poll; sleep 600 killed at its deadline; INJECTED printed only through sh -c"
    "supervisor||worker PIDs replaced after each crash with a doubling back-off; the always-crashing worker given up; live workers counted in /proc; a graceful stop with no child left (example: panic, abort and SIGKILL told apart by the wait status)"
    "prefork_server||connections spread across workers sharing one listening socket, then SO_REUSEPORT; every request answered exactly once"
)

present=()
for entry in "${lessons[@]}"; do
    name=${entry%%|*}
    [[ -d crates/$name ]] && present+=("$entry")
done

# Building them all takes a while; there is none with LESSON_BIN_DIR set.
[[ -n ${LESSON_BIN_DIR:-} ]] || echo "Building ${#present[@]} lessons..."
bin_dir=$(lesson_bin_dir debug --workspace --bins --examples)

n=0
for entry in "${present[@]}"; do
    name=${entry%%|*}
    rest=${entry#*|}
    extra=${rest%%|*}
    watch=${rest#*|}
    n=$((n + 1))
    printf '\n==== %d/%d  %s ====\n' "$n" "${#present[@]}" "$name"
    printf 'Watch for: %s\n' "$watch"
    printf 'Read it:   crates/%s/src/main.rs\n\n' "$name"
    # shellcheck disable=SC2086 # $extra is a list of words on purpose
    if ! "$bin_dir/$name" --pace "$pace" $extra; then
        echo "walkthrough: lesson $name failed" >&2
        exit 1
    fi
    for file in crates/"$name"/examples/*.rs; do
        [[ -f $file ]] || continue
        example=$(basename "$file" .rs)
        if [[ -z $run_examples ]]; then
            printf 'An example:  cargo run -p %s --example %s\n' "$name" "$example"
            continue
        fi
        printf '\n---- example %s (crates/%s/examples/%s.rs) ----\n' "$example" "$name" "$example"
        if ! "$bin_dir/examples/$example" --pace "$pace"; then
            echo "walkthrough: example $example failed" >&2
            exit 1
        fi
    done
done
printf '\nwalkthrough: all %d lessons ran and passed their own checks\n' "${#present[@]}"
