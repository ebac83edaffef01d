//! Demonstrate how a reader that keeps its own copy of the write end open
//! never sees end of file, and how a timeout catches the missing end of file.
//!
//! A writer child sends three lines and exits. The parent forgot to close
//! its write end: it reads the three lines, then waits for end of file in
//! `poll` with a timeout (2 s at pace 1, at least 0.2 s). The timeout passes
//! with no data and no `POLLHUP`; a plain `read` would block forever. Then
//! the parent closes its write end: `poll` says `POLLHUP` at once and `read`
//! returns 0, end of file.
//!
//! What to observe while it waits: `ls -l /proc/<pid>/fd` of the parent shows
//! the read end (`lr-x`) and the forgotten write end (`l-wx`) of one pipe.
//!
//! ```text
//! cargo run -p pipe_communication --example pipe_communication_missing_eof
//! cargo run -p pipe_communication --example pipe_communication_missing_eof -- --pace 0
//! ```

use std::error::Error;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{describe, say, warn};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{alarm, fork, getpid, getppid, pipe2, read, ForkResult};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    // The one blocking wait below (waitpid) has no timeout of its own: if
    // this process still runs after 60 s more than the pause, SIGALRM ends it.
    alarm::set(60 + args.pace.secs(2.0).as_secs() as u32);
    let (rx, tx) = pipe2(OFlag::O_CLOEXEC)?;
    let me = getpid();
    io::stdout().flush()?;
    // SAFETY: a single thread here; the child cannot panic and ends in `_exit`.
    let writer = match unsafe { fork() }? {
        ForkResult::Child => {
            common::out::set_role("writer");
            if set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != me {
                // SAFETY: `_exit` ends the process at once.
                unsafe { libc::_exit(1) }
            }
            drop(rx); // the writer does close the end it does not use
            let sent = File::from(tx).write_all(b"one\ntwo\nthree\n");
            say!("sent 3 messages; exiting closes my write end");
            // SAFETY: `_exit` ends the process at once.
            unsafe { libc::_exit(i32::from(sent.is_err())) }
        }
        ForkResult::Parent { child } => child,
    };
    // The mistake under study: the parent reads, but never closes `tx`.
    // Reap the writer first: then its copy of the write end is surely
    // closed, and the only write end left is our own. (14 bytes fit in an
    // empty pipe, so the writer cannot block.)
    let status = waitpid(writer, None)?;
    if status != WaitStatus::Exited(writer, 0) {
        return Err(format!("writer {writer} {}", describe(status)).into());
    }
    watch(args, rx, tx)?;
    say!("all checks passed");
    Ok(())
}

fn watch(args: &Args, rx: OwnedFd, tx: OwnedFd) -> Result<(), Box<dyn Error>> {
    let mut buf = [0u8; 64];
    let n = read(rx.as_fd(), &mut buf)?; // all 14 bytes wait in the pipe
    let lines = buf[..n].iter().filter(|&&b| b == b'\n').count();
    if lines != 3 {
        return Err(format!(
            "expected 3 messages, read {:?}",
            String::from_utf8_lossy(&buf[..n])
        )
        .into());
    }
    let waited = args.pace.secs(2.0).max(Duration::from_millis(200));
    say!(
        "read the 3 messages; the writer is gone; waiting up to {:.1} s for end of file: ls -l /proc/{}/fd",
        waited.as_secs_f64(),
        std::process::id()
    );
    let t = Instant::now();
    let events = poll_once(&rx, PollTimeout::try_from(waited)?)?;
    let took = t.elapsed().as_secs_f64();
    if !events.is_empty() {
        return Err(
            format!("expected no event while our write end is open, poll said {events:?}").into(),
        );
    }
    say!("no end of file: poll timed out after {took:.1} s with no data and no POLLHUP (a plain read would block forever): this process still holds a write end");

    drop(tx); // close(2): now no write end is open anywhere
    let events = poll_once(&rx, PollTimeout::try_from(Duration::from_secs(10))?)?;
    let n = read(rx.as_fd(), &mut buf)?;
    if !events.contains(PollFlags::POLLHUP) || n != 0 {
        return Err(format!(
            "after closing our write end: poll said {events:?}, read returned {n}"
        )
        .into());
    }
    say!("closed our own write end: poll says POLLHUP at once and read returns 0, end of file");
    Ok(())
}

/// One `poll` for input on `fd`: the events that happened, none on timeout.
fn poll_once(fd: &OwnedFd, timeout: PollTimeout) -> Result<PollFlags, Box<dyn Error>> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, timeout)?;
    Ok(if ready == 0 {
        PollFlags::empty()
    } else {
        fds[0].revents().unwrap_or(PollFlags::empty())
    })
}

/// Demonstrate how a forgotten write end withholds end of file.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}
