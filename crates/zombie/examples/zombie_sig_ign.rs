//! Demonstrate how setting SIGCHLD to `SIG_IGN` makes the kernel reap
//! children itself, and what the parent loses: their exit statuses.
//!
//! With SIGCHLD ignored, an ended child never becomes a zombie. `waitpid`
//! still waits: `WNOHANG` returns 0 ("still running") while the child runs,
//! and a blocking `waitpid` waits until the child has ended and then fails
//! with `ECHILD`, because no status was kept (wait(2): "blocks until all
//! children have terminated, and then fails with the error ECHILD"). The
//! program checks each step: still running, then ECHILD only once the
//! child is gone from `/proc`.
//!
//! What to observe: "WNOHANG: still running", then "ECHILD" after the
//! child's 1-second life (at pace 1), and no `Z` in `ps` at any time.
//!
//! ```text
//! cargo run -p zombie --example zombie_sig_ign
//! cargo run -p zombie --example zombie_sig_ign -- --pace 0.2
//! ```

use std::error::Error;
use std::io::{self, Read, Write};
use std::time::Instant;

use clap::Parser;
use common::{procfs, say, warn};
use nix::errno::Errno;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getppid, ForkResult, Pid};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN runs no code of ours.
    unsafe { sigaction(Signal::SIGCHLD, &ignore) }?;
    say!("SIGCHLD set to SIG_IGN: the kernel reaps our children itself");

    let life = args.pace.secs(1.0);
    let parent = nix::unistd::getpid();
    // The child waits for end-of-file on this pipe before it starts its
    // life, so it is surely running when the parent asks with WNOHANG.
    let (mut go, release) = io::pipe()?;
    io::stdout().flush()?;
    // SAFETY: single-threaded; the child sleeps and leaves with `_exit`.
    let child = match unsafe { fork() }? {
        ForkResult::Child => {
            // Die with the parent, and close the race where it died first.
            if set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != parent {
                // SAFETY: `_exit` ends the process at once.
                unsafe { libc::_exit(1) }
            }
            drop(release);
            let _ = go.read(&mut [0u8; 1]);
            std::thread::sleep(life);
            // SAFETY: as above.
            unsafe { libc::_exit(9) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(go);
    let result = watch(child, release);
    if result.is_err() {
        // Do not leave the child behind on an error path.
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
    }
    result
}

fn watch(child: Pid, release: io::PipeWriter) -> Result<(), Box<dyn Error>> {
    // The child is blocked reading the pipe, so it is certainly running.
    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => say!("WNOHANG: child {child} is still running"),
        other => return Err(format!("expected StillAlive from WNOHANG, got {other:?}").into()),
    }
    drop(release); // end-of-file: the child starts its life
    say!("a blocking waitpid now waits for the child to end...");
    let t = Instant::now();
    let waited = waitpid(child, None);
    let took = t.elapsed().as_secs_f64();
    // When waitpid returns, the child has ended and the kernel reaped it:
    // no zombie ever stood in /proc.
    let gone = procfs::state(child.as_raw())?.is_none();
    match waited {
        Err(Errno::ECHILD) if gone => say!(
            "after {took:.2} s: ECHILD, and /proc/{child} is gone: the kernel reaped it, its exit code 9 is lost"
        ),
        Err(Errno::ECHILD) => return Err(format!("ECHILD while child {child} is still in /proc").into()),
        other => return Err(format!("expected ECHILD from waitpid, got {other:?}").into()),
    }
    say!("all checks passed");
    Ok(())
}

/// Demonstrate how SIG_IGN for SIGCHLD lets the kernel reap children.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}
