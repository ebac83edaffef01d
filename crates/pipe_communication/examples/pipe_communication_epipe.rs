//! Demonstrate how a write to a pipe that no process can read any more fails
//! with `EPIPE`, and kills a process that has not ignored SIGPIPE.
//!
//! A reader child closes its read end and exits without reading; the parent
//! closes its own copy of the read end too, so no read end is open anywhere.
//! The parent's `write` then fails with `EPIPE` (Broken pipe): Rust programs
//! ignore SIGPIPE (the runtime sets it to `SIG_IGN` before `main`), so this
//! is an error to handle. A second child sets SIGPIPE back to its default
//! action, as a C program has it, and makes the same write: the kernel kills
//! it with SIGPIPE (a shell reports status 141).
//!
//! What to observe while the parent pauses (1 s at pace 1):
//! `ls -l /proc/<pid>/fd` shows only the write end (`l-wx`) of the pipe, and
//! `grep SigIgn /proc/<pid>/status` has 0x1000 set (signal n is bit n-1:
//! SIGPIPE is 13).
//!
//! ```text
//! cargo run -p pipe_communication --example pipe_communication_epipe
//! cargo run -p pipe_communication --example pipe_communication_epipe -- --pace 0
//! ```

use std::error::Error;
use std::io::{self, Write};
use std::os::fd::AsFd;

use clap::Parser;
use common::{describe, say, warn};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{alarm, fork, getpid, getppid, pipe2, write, ForkResult, Pid};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    // The waits below block: SIGALRM ends this process if it still runs 60 s
    // after the pause.
    alarm::set(60 + args.pace.secs(1.0).as_secs() as u32);
    let (rx, tx) = pipe2(OFlag::O_CLOEXEC)?;
    let me = getpid();

    io::stdout().flush()?;
    // SAFETY: a single thread here; the child cannot panic and ends in `_exit`.
    let reader = match unsafe { fork() }? {
        ForkResult::Child => {
            common::out::set_role("reader");
            drop((rx, tx)); // closes both its ends, reads nothing
            say!("closed my read end; leaving without reading");
            // SAFETY: `_exit` ends the process at once.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    // While this process holds a read end there is still a reader: close it.
    drop(rx);
    expect(reader, WaitStatus::Exited(reader, 0))?;
    let secs = args.pace.secs(1.0).as_secs_f64();
    say!("no read end is open anywhere now; writing in {secs:.1} s: ls -l /proc/{me}/fd");
    args.pace.sleep(1.0);
    match write(tx.as_fd(), b"anyone there?") {
        Err(Errno::EPIPE) => say!(
            "write failed with EPIPE (Broken pipe): no read end is open anywhere; \
             Rust ignores SIGPIPE, so this is an error to handle, not death"
        ),
        other => return Err(format!("expected EPIPE from write, got {other:?}").into()),
    }

    // The same write from a process with SIGPIPE at its default action, as
    // in a C program (and in a program Rust's `Command` starts: it resets
    // SIGPIPE to the default before exec).
    io::stdout().flush()?;
    // SAFETY: as above; this child dies in `write` or leaves with `_exit`.
    let writer = match unsafe { fork() }? {
        ForkResult::Child => {
            common::out::set_role("writer");
            if set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != me {
                // SAFETY: `_exit` ends the process at once.
                unsafe { libc::_exit(1) }
            }
            // SAFETY: SIG_DFL installs no handler of ours.
            let reset = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
            let result = write(tx.as_fd(), b"anyone there?");
            warn!("still alive after write returned {result:?} (signal: {reset:?})");
            // SAFETY: `_exit` ends the process at once.
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => child,
    };
    expect(writer, WaitStatus::Signaled(writer, Signal::SIGPIPE, false))?;
    say!("writer {writer}: killed by SIGPIPE, the default action for the same write (a shell reports status 141)");
    say!("all checks passed");
    Ok(())
}

/// Reap `child` and insist on the status `want`.
fn expect(child: Pid, want: WaitStatus) -> Result<(), Box<dyn Error>> {
    match waitpid(child, None)? {
        got if got == want => Ok(()),
        got => Err(format!(
            "child {child}: expected {}, got {}",
            describe(want),
            describe(got)
        )
        .into()),
    }
}

/// Demonstrate how a write without readers fails with EPIPE or kills by SIGPIPE.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}
