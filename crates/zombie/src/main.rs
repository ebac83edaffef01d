//! Demonstrate how a child that has exited becomes a zombie until its parent
//! reaps it, and two ways to prevent zombies.
//!
//! The child exits at once with code 42. The parent does not call `waitpid`
//! for a while (10 s at pace 1). Meanwhile the child is dead but not gone:
//! the kernel keeps its process-table entry, with its exit status, for the
//! parent to collect. `/proc/<pid>/stat` shows state `Z`, and `ps` shows
//! `<defunct>`. When the parent reaps it, the status (42) is delivered and
//! the entry disappears.
//!
//! Then prevention: a SIGCHLD handler that reaps every ended child, and
//! setting SIGCHLD to `SIG_IGN`, which tells the kernel to reap children
//! itself. In both cases the lesson shows that the child vanished without the
//! parent ever calling `waitpid` on it.
//!
//! Key points:
//! - Every child is a zombie for a moment; a zombie holds no memory, only a
//!   PID and a status. Zombies pile up (and PIDs run out) only when a
//!   long-lived parent never reaps.
//! - A zombie cannot be killed: it is already dead. Reap it (or end its
//!   parent, so init adopts and reaps it).
//! - A SIGCHLD handler must reap in a loop with `WNOHANG`: signals do not
//!   queue, so one SIGCHLD may stand for several ended children.
//!
//! What to observe, in another terminal while the parent waits:
//! `ps -o pid,ppid,stat,comm --ppid <parent pid>` shows the child as
//! `Z+ zombie <defunct>`; `cat /proc/<child pid>/status` says `State: Z (zombie)`.
//! `scripts/zombie.sh` does this for you.
//!
//! The pitfall: `SIG_IGN` for SIGCHLD also makes `waitpid` fail with `ECHILD`,
//! so a parent that ignores SIGCHLD can no longer learn its children's exit
//! codes. The handler keeps them.
//!
//! Seed example: 14, zombie process (C++ `fork` + `sleep` in the parent,
//! Python `multiprocessing`).
//!
//! Run with:
//! ```text
//! cargo run -p zombie
//! cargo run -p zombie -- --pace 0.2    # a 2-second zombie window
//! ```
//!
//! Try it:
//! - While the zombie is shown, `kill -9` it from another terminal. Nothing
//!   changes: it is already dead. Then kill the parent instead and watch init
//!   (or a subreaper) adopt and reap the zombie.
//! - Remove the `WNOHANG` loop from the handler and reap only one child per
//!   signal; fork three children that exit together and count the zombies.
//!
//! See also: `orphan` (the parent dies first), `multiple_processes`
//! (reaping children in the order they end).

use std::error::Error;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn};
use common::opts::{Args, Opt, Spec};
use common::{describe, procfs, say, warn};
use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const SPEC: Spec = Spec {
    name: "zombie",
    about: "Demonstrate how an unreaped child becomes a zombie, and how to prevent it.",
    options: &[Opt::float(
        "window",
        "seconds the parent leaves the zombie unreaped",
        10.0,
        0.0,
        600.0,
    )],
};

/// How long the system gets to do what the lesson waits for (the child to
/// exit, the kernel to reap). A safety floor, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    let window = pace.secs(args.float("window"));

    // Part 1: a zombie, made on purpose.
    let mut child = spawn("child", || {
        say!(
            "my parent is {}; exiting with code 42",
            nix::unistd::getppid()
        );
        42
    })?;
    let pid = child.raw();

    // Wait for the condition, not for a lucky amount of time: poll /proc
    // until the child has exited and sits in state Z.
    match procfs::wait_for(pid, SYSTEM_TIMEOUT, |s| s.is_some_and(|s| s.state == 'Z'))? {
        Ok(_) => say!("child {pid} has exited but is not reaped: /proc/{pid}/stat says state Z"),
        Err(last) => {
            return Err(format!("child {pid} never became a zombie (last seen: {last:?})").into())
        }
    }
    say!(
        "see it yourself: ps -o pid,ppid,stat,comm --ppid {}",
        std::process::id()
    );
    say!("leaving it unreaped for {:.1} s", window.as_secs_f64());
    let until = Instant::now() + window;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100).min(window));
        let state = procfs::state(pid)?;
        if state != Some('Z') {
            return Err(
                format!("the zombie changed to {state:?} although nobody reaped it").into(),
            );
        }
    }

    // Reaping delivers the status and frees the process-table entry.
    let status = child.wait()?;
    say!("reaped child {pid}: {}", describe(status));
    if exit_code(status) != Some(42) {
        return Err(format!("expected exit code 42, got {}", describe(status)).into());
    }
    match procfs::state(pid)? {
        None => say!("/proc/{pid} is gone: no zombie left"),
        Some(s) => {
            return Err(format!("child {pid} still in /proc (state {s}) after reaping").into())
        }
    }

    prevent_with_a_handler()?;
    prevent_with_sig_ign()?;
    say!("all checks passed");
    Ok(())
}

// The handler may only make async-signal-safe calls: waitpid is one, and
// storing to atomics is fine. No printing, no allocation here.
static REAPED: AtomicU32 = AtomicU32::new(0);
static LAST_PID: AtomicI32 = AtomicI32::new(0);
static LAST_CODE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn reap_children(_: std::ffi::c_int) {
    let saved = Errno::last_raw();
    // One SIGCHLD may stand for several children: reap until none is left.
    while let Ok(WaitStatus::Exited(pid, code)) =
        waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG))
    {
        LAST_PID.store(pid.as_raw(), Ordering::SeqCst);
        LAST_CODE.store(code, Ordering::SeqCst);
        REAPED.fetch_add(1, Ordering::SeqCst);
    }
    Errno::set_raw(saved);
}

fn set_sigchld(handler: SigHandler) -> Result<SigAction, Box<dyn Error>> {
    // SA_RESTART: system calls interrupted by the signal resume by themselves.
    let action = SigAction::new(
        handler,
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler above only calls waitpid and touches atomics.
    Ok(unsafe { sigaction(Signal::SIGCHLD, &action) }?)
}

fn prevent_with_a_handler() -> Result<(), Box<dyn Error>> {
    say!("prevention 1: a SIGCHLD handler reaps children as they end");
    let previous = set_sigchld(SigHandler::Handler(reap_children))?;
    let mut child = spawn("child", || 7)?;
    let pid = child.raw();
    let gone = procfs::wait_for(pid, SYSTEM_TIMEOUT, |s| s.is_none())?;
    // SAFETY: restores the disposition we replaced.
    unsafe { sigaction(Signal::SIGCHLD, &previous) }?;
    if gone.is_err() {
        return Err(format!("child {pid} was not reaped by the handler").into());
    }
    if LAST_PID.load(Ordering::SeqCst) != pid || LAST_CODE.load(Ordering::SeqCst) != 7 {
        return Err("the handler did not record the child's exit code".into());
    }
    child.set_reaped(WaitStatus::Exited(child.pid(), 7));
    say!(
        "child {pid} vanished without a waitpid in main; the handler reaped it ({} so far) and kept its exit code 7",
        REAPED.load(Ordering::SeqCst)
    );
    Ok(())
}

fn prevent_with_sig_ign() -> Result<(), Box<dyn Error>> {
    say!("prevention 2: SIGCHLD set to SIG_IGN, the kernel reaps children itself");
    let previous = set_sigchld(SigHandler::SigIgn)?;
    let mut child = spawn("child", || 9)?;
    let pid = child.raw();
    let gone = procfs::wait_for(pid, SYSTEM_TIMEOUT, |s| s.is_none())?;
    // With SIGCHLD ignored, there is no status left to collect.
    let waited = waitpid(child.pid(), None);
    // SAFETY: restores the disposition we replaced.
    unsafe { sigaction(Signal::SIGCHLD, &previous) }?;
    if gone.is_err() {
        return Err(format!("child {pid} was not reaped by the kernel").into());
    }
    child.set_reaped(WaitStatus::Exited(child.pid(), 9));
    match waited {
        Err(Errno::ECHILD) => {
            say!("child {pid} never became a zombie; waitpid says ECHILD: its exit code is lost")
        }
        other => return Err(format!("expected ECHILD from waitpid, got {other:?}").into()),
    }
    Ok(())
}
