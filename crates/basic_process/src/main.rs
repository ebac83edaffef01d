//! Demonstrate how `fork` creates a child process with its own copy of the
//! parent's memory, how the parent waits for it and decodes its exit status,
//! and how `std::process::Command` creates a child the other way: a fresh
//! run of a program (fork + exec, Python's "spawn" start method).
//!
//! The parent starts three children, one at a time. Part 1 writes `fork` by
//! hand: the child prints its PID and its parent's PID, writes `--value` (42)
//! into its copy of a variable `counter` that the parent set to 1, and exits
//! with that value. The parent waits, decodes the status ("exited with 42")
//! and checks that its own `counter`, at the very same address, is still 1.
//! Part 2 does the same with the helper `common::fork::spawn`, this time
//! with a `Vec` on the heap. Part 3 runs this same binary again with
//! `Command`, telling it through the environment that it is the child: that
//! child starts at `main()` with nothing of the parent's memory and learns
//! the value from its command line.
//!
//! Key points:
//! - `fork` returns twice: in the parent with the child's PID, in the child
//!   with 0 (`ForkResult::Child`). Both go on from the same line.
//! - After `fork` the two processes have separate memory: the same virtual
//!   addresses, but a write lands in the writer's copy only. The kernel does
//!   not copy everything at once: pages are shared read-only and copied when
//!   one side first writes to them (copy-on-write), which makes `fork` cheap.
//! - Open file descriptors are shared, not copied: both write to the same
//!   stdout. So anything still in a buffer must be flushed before `fork`, or
//!   both processes print it.
//! - The child hands back one byte, its exit code; `waitpid` returns it with
//!   how the child ended (exited with a code, or killed by a signal).
//! - Why `fork` is `unsafe`: the child gets a copy of only the thread that
//!   called `fork`. A lock another thread held at that moment (the
//!   allocator's, stdout's) stays locked forever in the child, so the child
//!   of a multithreaded process may only make async-signal-safe calls until
//!   it calls `exec` or `_exit`. This lesson checks it has one thread before
//!   forking; `common::fork::Fork::run` checks the same and refuses otherwise.
//! - Why the child leaves with `_exit` (`child_exit`): it owns a copy of every
//!   value of the parent. Returning from `main` would run their destructors a
//!   second time, and a second copy of the rest of the parent's program.
//!
//! When to prefer which:
//! - `fork` when the child should start from the parent's state as it is now
//!   (a large table already loaded, a listening socket: pre-forking servers),
//!   cheaply, and the process is single-threaded. Linux and Unix only.
//! - `Command` for any other program, or this one in a mode chosen by its
//!   arguments or environment; from any thread (it is how a multithreaded
//!   Rust program starts processes, and it needs no `unsafe`); when the child
//!   should start clean. It costs a program start, and the child knows only
//!   what it is given: arguments, environment, open files and pipes.
//!
//! What to observe, in another terminal while a child pauses (1 s each at
//! pace 1): `ps -o pid,ppid,stat,comm --ppid <parent pid>` lists the child,
//! with the parent's PID as its PPID; `grep PPid /proc/<child pid>/status`.
//!
//! The pitfall: expecting a change made in the child to reach the parent.
//! It never does; to share, use shared memory (`shared_value`) or send it
//! (`pipe_communication`). The second one: letting the child fall out of its
//! branch, so that it runs the rest of the parent's code too.
//!
//! Seed example: 01, basic_process (C++ `fork` + `waitpid`; Python
//! `multiprocessing.Process(target=foo)` with `start` and `join`, which
//! forks on Linux up to Python 3.13 and uses "forkserver" from 3.14).
//!
//! Run with:
//! ```text
//! cargo run -p basic_process
//! cargo run -p basic_process -- --value 7 --pace 5    # 5-second pauses to look
//! ```
//!
//! Try it:
//! - In part 1, replace `child_exit(...)` with `return Ok(())`: the child
//!   goes back into `run` and performs parts 2 and 3 as well; count the
//!   "all checks passed" lines.
//! - Start a thread (`std::thread::spawn(|| std::thread::sleep(...))`) at the
//!   top of `run`: part 1 and the helper refuse to fork, while `Command` in
//!   part 3 would still work.
//! - Compare `cat /proc/<parent pid>/maps` with the child's: the same
//!   addresses, in two separate address spaces.
//!
//! See also: `multiple_processes` (several children at once), `zombie` (a
//! child between its exit and its parent's wait), `orphan` (a parent that
//! exits first), `shared_value` (memory that is really shared).

use std::error::Error;
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fork::{child_exit, exit_code, spawn};
use common::opts::{Args, Opt, Pace, Spec};
use common::{describe, out, procfs, say, warn};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};

const SPEC: Spec = Spec {
    name: "basic_process",
    about: "Demonstrate how fork creates a child with its own copy of memory, and how Command starts a fresh one.",
    options: &[Opt::int(
        "value",
        "what each child writes into its copy of the counter and exits with",
        42,
        2,
        255,
    )],
};

/// How long each child pauses, so that you can look at it with `ps`.
/// Scaled by the pace.
const CHILD_PAUSE: f64 = 1.0;

/// How long a child may take beyond its pause before the parent gives up.
/// A safety floor, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable that makes a run of this binary the child of
/// part 3, and the one that names the parent it must find.
const CHILD_ENV: &str = "LESSON_CHILD";
const PARENT_ENV: &str = "LESSON_PARENT";

fn main() {
    // Part 3 runs this same binary again; the environment tells it that it
    // is the child. (Python's spawn start method does the same with a
    // hidden command-line flag.)
    if std::env::var_os(CHILD_ENV).is_some_and(|v| v == "spawned") {
        out::set_role("spawned");
        let code = spawned_child().unwrap_or_else(|e| {
            warn!("error: {e}");
            1
        });
        std::process::exit(code);
    }
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    let value = u8::try_from(args.int("value"))?;
    say!("my PID is {}, my parent's PID is {}", getpid(), getppid());
    fork_by_hand(value, pace)?;
    fork_with_the_helper(pace)?;
    run_a_fresh_copy(value, pace)?;
    say!("all checks passed");
    Ok(())
}

/// Part 1: the bare shape of a fork, which part 2's helper wraps.
fn fork_by_hand(value: u8, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 1: fork by hand");
    let mut counter: u8 = 1;
    say!("counter = {counter} at address {:p}", &counter);

    // The child of a multithreaded process could deadlock on a lock held
    // by a thread that was not copied: make sure we are alone.
    let threads = procfs::stat(getpid().as_raw())?.map_or(0, |s| s.num_threads);
    if threads != 1 {
        return Err(
            format!("fork: this process has {threads} threads, its child could deadlock").into(),
        );
    }
    // Whatever sits in stdout's buffer would be copied into the child and
    // printed twice.
    io::stdout().flush()?;
    // SAFETY: the process has one thread (checked above), so the child may
    // make any call; it never returns from this arm, it leaves by `_exit`.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            out::set_role("child");
            say!("my PID is {}, my parent's PID is {}", getpid(), getppid());
            counter = value;
            say!("I set counter = {counter} at address {:p}", &counter);
            pace.sleep(CHILD_PAUSE);
            // `_exit` with the value: no destructors, no second copy of the
            // parent's program. (The helper also turns a panic into an exit
            // status; this arm has nothing that could panic.)
            child_exit(i32::from(counter))
        }
        ForkResult::Parent { child } => {
            say!(
                "forked child {child}; see it: ps -o pid,ppid,stat,comm --ppid {}",
                getpid()
            );
            // A blocking wait is fine here: this child only prints and
            // pauses. Part 2's helper waits with a timeout.
            let status = waitpid(child, None).map_err(|e| format!("waitpid: {e}"))?;
            say!("child {child} {}", describe(status));
            if exit_code(status) != Some(i32::from(value)) {
                return Err(format!(
                    "expected the child to exit with {value}, got {}",
                    describe(status)
                )
                .into());
            }
            if counter != 1 {
                return Err(format!(
                    "the parent sees counter = {counter}: the child's write reached the parent"
                )
                .into());
            }
            say!(
                "my counter is still {counter} at address {:p}: the child changed only its own copy",
                &counter
            );
        }
    }
    Ok(())
}

/// Part 2: the same with `common::fork::spawn`, which flushes stdout, checks
/// for threads, names the child in the output, asks the kernel to kill it if
/// the parent dies (`PR_SET_PDEATHSIG`), turns a panic into exit status 101
/// and always leaves through `_exit`.
fn fork_with_the_helper(pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 2: the same with common::fork::spawn, and memory on the heap");
    let mut pids = vec![std::process::id()];
    let mut child = spawn("child", || {
        pids.push(std::process::id());
        say!(
            "my PID is {}, my parent's PID is {}; my copy of the list: {pids:?}",
            getpid(),
            getppid()
        );
        pace.sleep(CHILD_PAUSE);
        pids.len() as i32
    })?;
    say!("forked child {}", child.pid());
    let status = child
        .wait_timeout(pace.secs(CHILD_PAUSE) + SYSTEM_TIMEOUT)?
        .ok_or_else(|| format!("child {} did not exit in time", child.pid()))?;
    say!("child {} {}", child.pid(), describe(status));
    if exit_code(status) != Some(2) {
        return Err(format!(
            "expected the child's list to hold 2 PIDs, got {}",
            describe(status)
        )
        .into());
    }
    if pids.len() != 1 {
        return Err(
            format!("the parent's list is {pids:?}: the child's push reached the parent").into(),
        );
    }
    say!("my list is still {pids:?}: the heap was copied too");
    Ok(())
}

/// Part 3: `Command` starts this binary again as a new program. Rust's
/// standard library does it with `posix_spawn` where it can, otherwise with
/// `fork` + `exec`; either way the child starts at `main()`.
fn run_a_fresh_copy(value: u8, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 3: std::process::Command runs this program again as a fresh child");
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(&exe)
        .args(["--value", &value.to_string(), "--pace", &pace.0.to_string()])
        .env(CHILD_ENV, "spawned")
        .env(PARENT_ENV, getpid().to_string())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", exe.display()))?;
    let pid = child.id();
    say!("started child {pid}: {} --value {value}", exe.display());

    let deadline = Instant::now() + pace.secs(CHILD_PAUSE) + SYSTEM_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            stuck_or_failed => {
                // Do not leave it running.
                let _ = child.kill();
                let _ = child.wait();
                return Err(match stuck_or_failed {
                    Err(e) => format!("waitpid: {e}"),
                    _ => format!("child {pid} did not exit in time"),
                }
                .into());
            }
        }
    };
    let status = WaitStatus::from_raw(Pid::from_raw(pid as i32), status.into_raw())?;
    say!("child {pid} {}", describe(status));
    if exit_code(status) != Some(i32::from(value)) {
        return Err(format!(
            "expected the child to exit with {value}, got {}",
            describe(status)
        )
        .into());
    }
    Ok(())
}

/// The child of part 3: a fresh run of this program. It knows only what it
/// was given: its command line, its environment and its open files (stdout).
fn spawned_child() -> Result<i32, Box<dyn Error>> {
    // Unlike the helper's forked children, a Command child is not killed
    // when its parent dies. Ask for it, then check that the parent is still
    // there: it may have died before the request took effect.
    set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    let parent = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
        .ok_or_else(|| format!("{PARENT_ENV} is not set: this mode is for the child of part 3"))?;
    if getppid().as_raw() != parent {
        return Err(format!("my parent {parent} is gone").into());
    }
    let args = Args::parse(&SPEC);
    let value = args.int("value");
    say!("my PID is {}, my parent's PID is {}", getpid(), getppid());
    let command_line: Vec<String> = std::env::args().skip(1).collect();
    say!("I started at main(), with no copy of my parent's memory; my command line: {command_line:?}");
    say!("exiting with the --value I was given: {value}");
    args.pace().sleep(CHILD_PAUSE);
    Ok(value as i32)
}
