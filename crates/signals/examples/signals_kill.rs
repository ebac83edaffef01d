//! Demonstrate how SIGCHLD tells a parent that a child ended, how `kill`
//! sends a signal, and what `kill(pid, 0)` says about a PID.
//!
//! The parent installs a SIGCHLD handler that only sets a flag, and keeps
//! SIGCHLD blocked except while it sleeps in `ppoll`, which unblocks and
//! sleeps in one step: a SIGCHLD cannot fall between "is the flag set?" and
//! "sleep". It forks a child that sleeps in `pause()`. `kill(pid, 0)` (signal
//! 0: check, send nothing) succeeds. `kill(pid, SIGUSR1)` ends the child (no
//! handler; SIGUSR1's default action is to terminate); SIGCHLD wakes the
//! parent. While the child is a zombie, `kill(pid, 0)` still succeeds; once
//! the parent has reaped it, it fails with ESRCH. Each step is checked.
//!
//! What to observe, during the pause (2 s at pace 1):
//! `ps -o pid,stat,comm --ppid <parent>` shows the sleeper in state `S`.
//!
//! ```text
//! cargo run -p signals --example signals_kill
//! ```

use std::error::Error;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::spawn;
use common::{describe, procfs, say, warn, Shared};
use nix::errno::Errno;
use nix::poll::ppoll;
use nix::sys::signal::Signal::{SIGCHLD, SIGUSR1};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};
use nix::sys::time::TimeSpec;
use nix::sys::wait::WaitStatus;
use nix::unistd::{getpid, pause, Pid};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

static CHILD_ENDED: AtomicBool = AtomicBool::new(false);

/// The SIGCHLD handler: sets a flag, nothing else (async-signal-safe).
/// Reaping happens in the main loop.
extern "C" fn on_sigchld(_: c_int) {
    CHILD_ENDED.store(true, SeqCst);
}

/// What `kill(pid, 0)` says: it checks that `pid` exists and may be
/// signalled, and sends nothing.
fn probe(pid: Pid) -> String {
    match kill(pid, None) {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("{e}"),
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let action = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to a lock-free atomic.
    unsafe { sigaction(SIGCHLD, &action) }?;
    // Keep SIGCHLD blocked except while waiting in ppoll.
    let old = SigSet::from(SIGCHLD).thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    let mut unblocked = old;
    unblocked.remove(SIGCHLD);

    // common's spawn forks (PR_SET_PDEATHSIG, `_exit`); its Child reaps on drop.
    let ready = Shared::new(AtomicBool::new(false))?;
    let mut child = spawn("sleeper", || -> i32 {
        say!("sleeping in pause() until a signal ends me");
        ready.store(true, SeqCst);
        loop {
            pause();
        }
    })?;
    let pid = child.pid();
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    while !ready.load(SeqCst) {
        if Instant::now() > deadline || procfs::state(pid.as_raw())? == Some('Z') {
            return Err(format!("the sleeper {pid} never got ready").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    say!("kill({pid}, 0) while it runs: {}", probe(pid));
    if kill(pid, None).is_err() {
        return Err("signal 0 failed for a running child".into());
    }
    say!("see it: ps -o pid,stat,comm --ppid {}", getpid());
    args.pace.sleep(2.0);
    say!("kill({pid}, SIGUSR1): the sleeper has no handler, and the default action of SIGUSR1 is to terminate");
    kill(pid, SIGUSR1)?;

    // The main loop: sleep until the handler has set the flag. ppoll
    // installs `unblocked` and sleeps in one step, then blocks SIGCHLD again.
    // (ppoll fails with EINTR when a handler ran, whatever SA_RESTART says.)
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    while !CHILD_ENDED.load(SeqCst) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no SIGCHLD arrived".into());
        }
        match ppoll(
            &mut [],
            Some(TimeSpec::from_duration(left)),
            Some(unblocked),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("ppoll: {e}").into()),
        }
    }
    say!("SIGCHLD: the handler set the flag; the main loop takes over");
    let zombie = |s: Option<&procfs::Stat>| s.is_some_and(|s| s.state == 'Z');
    if procfs::wait_for(pid.as_raw(), SYSTEM_TIMEOUT, zombie)?.is_err() {
        return Err(format!("child {pid} is not a zombie after SIGCHLD").into());
    }
    let answer = probe(pid);
    say!("kill({pid}, 0) while it is a zombie (state Z): {answer}: the PID still exists");
    if answer != "ok" {
        return Err("signal 0 failed for a zombie".into());
    }
    // Reap it (waitpid with WNOHANG). A SIGCHLD can stand for several ended
    // children: a parent with more children reaps in a loop.
    let status = child
        .try_wait()?
        .ok_or("SIGCHLD came, but the child has not ended")?;
    say!("reaped child {pid}: {}", describe(status));
    if status != WaitStatus::Signaled(pid, SIGUSR1, false) {
        return Err(format!("expected killed by SIGUSR1, got {}", describe(status)).into());
    }
    match kill(pid, None) {
        Err(Errno::ESRCH) => say!("kill({pid}, 0) after reaping: ESRCH: no such process"),
        other => return Err(format!("expected ESRCH after reaping, got {other:?}").into()),
    }
    old.thread_set_mask()?;
    say!("all checks passed");
    Ok(())
}

/// Demonstrate SIGCHLD, kill, and signal 0 on a live child, a zombie, a reaped PID.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the system gets to start, end or signal a process; not scaled
/// by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
