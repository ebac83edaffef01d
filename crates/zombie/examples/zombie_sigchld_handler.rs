//! Demonstrate how a SIGCHLD handler prevents zombies: it reaps every ended
//! child with `waitpid(-1, WNOHANG)`, in a loop, whatever each child died of.
//!
//! Three children end while SIGCHLD is blocked: one exits with 7, one is
//! killed by SIGKILL, one exits with 9. All three sit in state `Z`, and the
//! kernel keeps one pending SIGCHLD for them (standard signals do not
//! queue). When the parent unblocks SIGCHLD, the handler runs once and must
//! reap all three: a handler that reaps one child per signal, or stops at
//! the first child killed by a signal, leaves zombies behind, and this
//! program says so and fails.
//!
//! What to observe: the three `Z` entries in `ps` during the pause (2 s at
//! pace 1), then "3 children reaped in 1 handler run", with each status.
//!
//! ```text
//! cargo run -p zombie --example zombie_sigchld_handler
//! ```

use std::error::Error;
use std::io::{self, Write};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use clap::Parser;
use common::{describe, procfs, say, warn};
use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

const CHILDREN: usize = 3;

// The handler may only make async-signal-safe calls: waitpid is one, and
// storing to atomics is fine. No printing, no allocation in it.
static RUNS: AtomicU32 = AtomicU32::new(0);
static REAPED: AtomicU32 = AtomicU32::new(0);
static PIDS: [AtomicI32; CHILDREN] = [const { AtomicI32::new(0) }; CHILDREN];
static STATUSES: [AtomicI32; CHILDREN] = [const { AtomicI32::new(0) }; CHILDREN];

extern "C" fn reap_children(_: std::ffi::c_int) {
    let saved = Errno::last_raw();
    RUNS.fetch_add(1, Ordering::SeqCst);
    // One SIGCHLD may stand for several children: reap until none is left
    // to reap now (0, "still alive") or none at all (ECHILD), whatever each
    // child died of. The raw call keeps the whole status word.
    loop {
        let mut status = 0;
        // SAFETY: waitpid is async-signal-safe; `status` is a valid int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        let i = REAPED.fetch_add(1, Ordering::SeqCst) as usize;
        if i < CHILDREN {
            PIDS[i].store(pid, Ordering::SeqCst);
            STATUSES[i].store(status, Ordering::SeqCst);
        }
    }
    Errno::set_raw(saved);
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args.pace) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(pace: common::Pace) -> Result<(), Box<dyn Error>> {
    // SA_NOCLDSTOP: no SIGCHLD when a child is merely stopped.
    let action = SigAction::new(
        SigHandler::Handler(reap_children),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler only calls waitpid and touches atomics.
    unsafe { sigaction(Signal::SIGCHLD, &action) }?;

    // Hold SIGCHLD back while the children end, so that they all end
    // before the handler first runs: the case a one-child handler gets wrong.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    chld.thread_block()?;

    let mut children = Vec::new();
    for code in [7, -1, 9] {
        io::stdout().flush()?;
        // SAFETY: single-threaded; the child only makes async-signal-safe
        // calls (kill, _exit) and never returns into main.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => unsafe {
                // SAFETY: both calls are async-signal-safe; _exit never returns.
                if code < 0 {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
                libc::_exit(code.max(0))
            },
            Ok(ForkResult::Parent { child }) => children.push(child),
            Err(e) => {
                reap_now(&children);
                return Err(format!("fork: {e}").into());
            }
        }
    }
    let list: Vec<String> = children.iter().map(|c| c.to_string()).collect();
    say!(
        "forked {}; SIGCHLD is blocked while they end",
        list.join(", ")
    );
    for child in &children {
        let zombie = |s: Option<&procfs::Stat>| s.is_some_and(|s| s.state == 'Z');
        if procfs::wait_for(child.as_raw(), Duration::from_secs(10), zombie)?.is_err() {
            reap_now(&children);
            return Err(format!("child {child} never became a zombie").into());
        }
    }
    say!(
        "all {CHILDREN} are zombies (state Z): ps -o pid,stat,cmd --ppid {}",
        std::process::id()
    );
    // A pause for a human watching; the checks above and below do not rest on it.
    pace.sleep(2.0);
    say!("unblocking SIGCHLD");
    // The pending SIGCHLD is delivered before this call returns.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&chld), None)?;

    let (runs, reaped) = (RUNS.load(Ordering::SeqCst), REAPED.load(Ordering::SeqCst));
    say!("{reaped} children reaped in {runs} handler run(s)");
    for i in 0..(reaped as usize).min(CHILDREN) {
        let pid = Pid::from_raw(PIDS[i].load(Ordering::SeqCst));
        let status = WaitStatus::from_raw(pid, STATUSES[i].load(Ordering::SeqCst))?;
        say!("  the handler reaped {pid}: {}", describe(status));
    }
    let left: Vec<&Pid> = children
        .iter()
        .filter(|c| procfs::state(c.as_raw()).ok().flatten().is_some())
        .collect();
    if reaped as usize != CHILDREN || !left.is_empty() {
        reap_now(&children);
        return Err(format!("the handler left {left:?} unreaped").into());
    }
    if runs != 1 {
        return Err(format!("expected one SIGCHLD for three children, got {runs}").into());
    }
    say!("no zombie left, every status kept; all checks passed");
    Ok(())
}

/// On an error path: reap what we forked, so nothing is left behind.
fn reap_now(children: &[Pid]) {
    for &c in children {
        let _ = waitpid(c, Some(WaitPidFlag::empty()));
    }
}

/// Demonstrate a SIGCHLD handler that reaps every child, whatever it died of.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}
