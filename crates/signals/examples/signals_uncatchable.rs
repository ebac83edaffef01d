//! Demonstrate that SIGKILL and SIGSTOP cannot be caught, blocked or
//! ignored: that is how an administrator can always stop a process.
//!
//! `sigaction(SIGKILL)` and `sigaction(SIGSTOP)` fail with EINVAL. A child
//! blocks every signal and installs a handler for every signal it can; the
//! kernel quietly leaves SIGKILL and SIGSTOP out of its mask. SIGTERM is
//! caught by its handler and the child lives on; SIGSTOP stops it all the
//! same (state `T`); SIGCONT runs its handler and continues it; SIGKILL ends
//! it. The parent checks each step in `/proc` and in the exit status.
//!
//! What to observe, while the child is stopped (2 s at pace 1):
//! `ps -o pid,stat,comm --ppid <parent>` shows it in state `T`.
//!
//! ```text
//! cargo run -p signals --example signals_uncatchable
//! ```

use std::error::Error;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::spawn;
use common::{describe, procfs, say, warn, Shared};
use nix::errno::Errno;
use nix::sys::signal::Signal::{self, SIGCONT, SIGKILL, SIGSTOP, SIGTERM};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet};
use nix::sys::wait::WaitStatus;
use nix::unistd::getpid;

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

static CAUGHT: AtomicU64 = AtomicU64::new(0);

/// Note which signal came: one atomic `fetch_or`, async-signal-safe.
extern "C" fn note_signal(signo: c_int) {
    CAUGHT.fetch_or(1 << (signo - 1), SeqCst);
}

fn bit(signal: Signal) -> u64 {
    1 << (signal as u32 - 1)
}

/// What the stubborn child tells its parent, in shared memory.
#[derive(Default)]
struct Stubborn {
    ready: AtomicBool,
    installed: AtomicU32,
    refused: AtomicU64, // bit n-1: sigaction refused signal n
    blocked: AtomicU64, // its SigBlk after asking to block every signal
    caught: AtomicU64,  // bit n-1: signal n was caught
}

/// A child that tries to catch every signal there is.
fn stubborn(state: &Stubborn) -> Result<i32, Box<dyn Error>> {
    // Block everything first; signals are taken only inside sigsuspend.
    SigSet::all().thread_block()?;
    let action = SigAction::new(
        SigHandler::Handler(note_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let mut refused = Vec::new();
    for signal in Signal::iterator() {
        // SAFETY: the handler only does an atomic fetch_or.
        match unsafe { sigaction(signal, &action) } {
            Ok(_) => _ = state.installed.fetch_add(1, SeqCst),
            Err(e) => {
                state.refused.fetch_or(bit(signal), SeqCst);
                refused.push(format!("{signal}: {e}"));
            }
        }
    }
    let hex = procfs::status_field(std::process::id() as i32, "SigBlk")?;
    state.blocked.store(u64::from_str_radix(&hex, 16)?, SeqCst);
    let n = state.installed.load(SeqCst);
    say!(
        "installed a handler for {n} signals; sigaction refused {}",
        refused.join(", ")
    );
    state.ready.store(true, SeqCst);
    loop {
        state.caught.store(CAUGHT.load(SeqCst), SeqCst);
        // Unblock everything and sleep, in one step; blocked again after a
        // handler has run.
        SigSet::empty().suspend()?;
    }
}

/// Wait until `cond` holds, at most SYSTEM_TIMEOUT.
fn wait_until(what: &str, cond: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    while !cond() {
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {SYSTEM_TIMEOUT:?} waiting until {what}"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let action = SigAction::new(
        SigHandler::Handler(note_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [SIGKILL, SIGSTOP] {
        // SAFETY: the handler only does an atomic fetch_or.
        match unsafe { sigaction(signal, &action) } {
            Err(Errno::EINVAL) => say!("sigaction({signal}, handler) in the parent: EINVAL"),
            other => return Err(format!("sigaction({signal}) gave {other:?}, not EINVAL").into()),
        }
    }

    // common's spawn forks (PR_SET_PDEATHSIG, `_exit`); its Child kills and
    // reaps on drop, so an error path leaves nothing behind.
    let state = Shared::new(Stubborn::default())?;
    let mut child = spawn("stubborn", || stubborn(&state))?;
    let pid = child.pid();
    wait_until("the stubborn child installed its handlers", || {
        state.ready.load(SeqCst) || procfs::is_dead(pid.as_raw(), None)
    })?;
    let uncatchable = bit(SIGKILL) | bit(SIGSTOP);
    let all = Signal::iterator().count() as u32;
    if !state.ready.load(SeqCst)
        || state.refused.load(SeqCst) != uncatchable
        || state.installed.load(SeqCst) != all - 2
    {
        return Err("the stubborn child did not install exactly all handlers but two".into());
    }
    let blocked = state.blocked.load(SeqCst);
    let lacks: Vec<&str> = [SIGKILL, SIGSTOP, SIGTERM]
        .into_iter()
        .filter(|s| blocked & bit(*s) == 0)
        .map(|s| s.as_str())
        .collect();
    say!(
        "the child asked to block every signal; its SigBlk lacks {}",
        lacks.join(" ")
    );
    if blocked & uncatchable != 0 || blocked & bit(SIGTERM) == 0 {
        return Err(format!("unexpected SigBlk {blocked:016x}").into());
    }

    kill(pid, SIGTERM)?;
    wait_until("the stubborn child caught SIGTERM", || {
        state.caught.load(SeqCst) & bit(SIGTERM) != 0
    })?;
    let Some(now) = procfs::state(pid.as_raw())?.filter(|s| *s != 'Z') else {
        return Err("the stubborn child died of SIGTERM".into());
    };
    say!("SIGTERM to child {pid}: caught by its handler; it lives on (state {now})");

    kill(pid, SIGSTOP)?;
    // State T; t if a debugger or strace traces the child.
    let stopped = |s: Option<&procfs::Stat>| s.is_some_and(|s| matches!(s.state, 'T' | 't'));
    if procfs::wait_for(pid.as_raw(), SYSTEM_TIMEOUT, stopped)?.is_err() {
        return Err("SIGSTOP did not stop the child".into());
    }
    say!("SIGSTOP to child {pid}: stopped (state T) although it tried to catch everything; see it: ps -o pid,stat,comm --ppid {}", getpid());
    args.pace.sleep(2.0);
    kill(pid, SIGCONT)?;
    wait_until("the stubborn child caught SIGCONT", || {
        state.caught.load(SeqCst) & bit(SIGCONT) != 0
    })?;
    say!("SIGCONT: it runs again (SIGCONT can be caught, but it continues the process anyway)");

    kill(pid, SIGKILL)?;
    let status = child
        .wait_timeout(SYSTEM_TIMEOUT)?
        .ok_or("the child survived SIGKILL")?;
    say!("SIGKILL to child {pid}: {}", describe(status));
    if status != WaitStatus::Signaled(pid, SIGKILL, false) {
        return Err(format!("expected killed by SIGKILL, got {}", describe(status)).into());
    }
    say!("all checks passed");
    Ok(())
}

/// Demonstrate that SIGKILL and SIGSTOP cannot be caught, blocked or ignored.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the system gets to start, signal or end a process; not scaled
/// by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
