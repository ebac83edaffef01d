#!/usr/bin/env bash
# Description: Debug a program that forks, two ways, on the zombie lesson.
#              1. `strace -f` follows every child and shows the process
#                 calls: clone (fork), exit_group (the child ends), wait4
#                 (the parent reaps it), with each line tagged by its PID.
#              2. `gdb` with `follow-fork-mode child` and `detach-on-fork on`
#                 stops at a breakpoint that only a forked child reaches
#                 here (`_exit`, where the zombie lesson's child leaves; the
#                 parent, detached at the fork, is no longer traced), in the
#                 child's PID, not the parent's.
#              Exits non-zero if either part did not show what it says.
# Usage: scripts/debugging.sh
#   Installs strace and gdb with apt-get when missing and run as root.
#   Run from anywhere inside the repository. Takes a few seconds.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

enter_repo
need_tool strace
need_tool gdb
# gdb needs the debug build (symbols and line numbers): lesson_bin's.
bin=$(lesson_bin zombie)
work=$(mktemp -d)
remove_at_exit "$work"
fail() {
    echo "debugging.sh: $*" >&2
    exit 1
}

echo "==== 1. strace -f: follow the children ===="
echo "\$ strace -f -e trace=clone,clone3,fork,vfork,wait4,waitid,exit_group,kill -o LOG $bin --pace 0"
LESSON_PACE=0 strace -f -q -o "$work/strace.log" \
    -e trace=clone,clone3,fork,vfork,wait4,waitid,exit_group,kill \
    "$bin" --pace 0 >"$work/lesson.out" 2>&1 ||
    fail "the zombie lesson failed under strace: $(cat "$work/lesson.out")"
# The process calls, the exits and the SIGCHLDs; every line starts with the
# PID that made the call.
grep -E 'clone3?\(|fork\(|wait4\(|waitid\(|exit_group\(|exited with|SIGCHLD' "$work/strace.log" |
    cut -c1-150 || true
# The first clone is the parent forking its first child.
first=$(grep -m1 -E 'clone3?\(|fork\(' "$work/strace.log" || true)
tracee=${first%% *}
child=${first##*= }
[[ $tracee =~ ^[0-9]+$ && $child =~ ^[0-9]+$ ]] || fail "no fork in the strace log"
echo
echo "How to read it:"
echo "- '$tracee clone(child_stack=NULL, flags=...|SIGCHLD, ...) = $child': fork() in Rust"
echo "  (nix, glibc) is the clone system call. It returns twice: the child's PID ($child)"
echo "  in the parent, as shown, and 0 in the child. SIGCHLD in the flags is the"
echo "  signal the parent gets when the child ends. A new thread would be a clone"
echo "  (clone3 with glibc 2.34 and later) with CLONE_VM|CLONE_THREAD instead."
echo "- '$child exit_group(42)': the child ends every thread it has, with status 42."
echo "  Its _exit() is this call; '+++ exited with 42 +++' is strace saying it is gone."
echo "- '--- SIGCHLD {... si_pid=$child, si_status=42 ...} ---': the kernel tells the"
echo "  parent. Until the parent reaps it, the child is a zombie."
echo "- '$tracee wait4($child, [{WIFEXITED(s) && WEXITSTATUS(s) == 42}], 0, NULL) = $child':"
echo "  waitpid() is wait4; it collects the status and frees the zombie."
# strace pads the PID to five columns: "4242  exit_group(42)".
grep -qE "^$child +exit_group\(42\)" "$work/strace.log" ||
    fail "strace did not show the child $child calling exit_group(42)"
grep -qE "^$tracee +wait4\($child, \[\{WIFEXITED\(s\) && WEXITSTATUS\(s\) == 42\}\], 0, NULL\) = $child" "$work/strace.log" ||
    fail "strace did not show the parent $tracee reaping $child with status 42"
echo "strace: parent $tracee forked $child, $child called exit_group(42), $tracee reaped it with wait4"

echo
echo "==== 2. gdb: stop inside a forked child ===="
# The child leaves with _exit(42). gdb follows the child at the fork and
# lets the parent go, so the first _exit it sees is the child's. The
# breakpoint is pending until libc is loaded.
gdb_args=(
    -nx -q --batch
    -iex 'set auto-load python-scripts off'
    -ex 'set pagination off'
    -ex 'set confirm off'
    -ex 'set disable-randomization off'
    -ex 'set follow-fork-mode child'
    -ex 'set detach-on-fork on'
    -ex 'set breakpoint pending on'
    -ex 'break _exit'
    -ex 'run'
    -ex 'info inferiors'
    -ex 'backtrace 6'
    -ex 'info proc status'
    -ex 'continue'
)
echo "\$ gdb --batch -ex 'set follow-fork-mode child' -ex 'set detach-on-fork on' \\"
echo "      -ex 'break _exit' -ex run -ex 'info inferiors' -ex 'backtrace 6' \\"
echo "      -ex 'info proc status' -ex continue --args $bin --pace 0"
LESSON_PACE=0 timeout 60 gdb "${gdb_args[@]}" --args "$bin" --pace 0 >"$work/gdb.out" 2>&1 ||
    fail "gdb failed: $(cat "$work/gdb.out")"
parent=$(sed -n 's/^\[Detaching after fork from parent process \([0-9]*\)\]$/\1/p' "$work/gdb.out" | head -1)
# The parent that gdb detached from runs on by itself: until it is done, the
# exit trap stops it (it is not our child: the trap cannot wait for it).
lesson_pid=$parent
hit=$(grep -m1 -E 'Breakpoint 1[.0-9]*, .*_exit' "$work/gdb.out" || true)
stopped=$(sed -n 's/^process \([0-9]*\)$/\1/p' "$work/gdb.out" | head -1)
ppid=$(sed -n 's/^PPid:[[:space:]]*\([0-9]*\)$/\1/p' "$work/gdb.out" | head -1)
state=$(sed -n 's/^State:[[:space:]]*//p' "$work/gdb.out" | head -1)
grep -E '^\[(Attaching|Detaching) after|^\[New inferior|hit Breakpoint|^\*? +[0-9]+ +(process|<null>)|^#[0-9]|^process [0-9]|^(State|Pid|PPid|TracerPid):|^\[Inferior 2' \
    "$work/gdb.out" | cut -c1-150 || true
echo
echo "How to read it:"
echo "- 'Attaching after ... fork to child process $stopped', 'Detaching after fork from"
echo "  parent process $parent': with follow-fork-mode child, gdb follows the child at the"
echo "  fork; with detach-on-fork on, it lets the parent run on untraced."
echo "  (detach-on-fork off would keep both under gdb: 'info inferiors', 'inferior 1'.)"
echo "- 'hit Breakpoint 1.1, __GI__exit (status=42)' (glibc's _exit): the child is stopped just before it leaves;"
echo "  the backtrace shows it came from zombie::run, the ForkResult::Child arm."
echo "- 'info proc status' is /proc/$stopped/status: Pid $stopped, PPid $parent (the lesson's"
echo "  parent), State '$state' (stopped by the tracer), TracerPid = gdb."
[[ -n $hit ]] || fail "gdb did not report the breakpoint in _exit"
[[ $parent =~ ^[0-9]+$ && $stopped =~ ^[0-9]+$ ]] || fail "gdb did not name the parent and the child"
[[ $stopped != "$parent" ]] || fail "the breakpoint was hit in the parent ($parent)"
[[ $ppid == "$parent" ]] || fail "the stopped process $stopped has parent $ppid, not $parent"
grep -q "^\[child $stopped\] my parent is $parent;" "$work/gdb.out" ||
    fail "the lesson did not report child $stopped of parent $parent"

# The detached parent finishes the lesson on its own; wait for it (it is not
# our child, so poll), at most 10 s.
for _ in $(seq 1 500); do
    if [[ ! -e /proc/$parent ]] || [[ $(awk '{print $3}' "/proc/$parent/stat" 2>/dev/null) == Z ]]; then
        break
    fi
    sleep 0.02
done
if kill -0 "$parent" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$parent/stat" 2>/dev/null) != Z ]]; then
    fail "the detached parent $parent is still running"
fi
if grep -q "^\[parent $parent\] all checks passed" "$work/gdb.out"; then
    echo "the detached parent $parent finished the lesson by itself: all checks passed"
fi
echo "gdb: the breakpoint was hit in child $stopped, whose parent $parent is the process gdb detached from"
lesson_pid=
