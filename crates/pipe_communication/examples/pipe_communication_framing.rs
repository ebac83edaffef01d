//! Demonstrate how a pipe carries a stream of bytes, not messages, and how
//! a length in front of each message (a frame) brings the boundaries back.
//!
//! A writer child makes two writes, "hello" and "world", and exits; the
//! parent's one `read` then returns "helloworld": the boundary is lost. Next
//! the writer sends the same two messages, each after a 4-byte length, and
//! the parent reads back "hello" and "world", then end of file. (The
//! two-way example sends frames of every size, up to larger than the pipe.)
//!
//! What to observe while the two writes wait in the pipe (1 s at pace 1):
//! the parent prints how many bytes the pipe holds (`ioctl(FIONREAD)`).
//!
//! ```text
//! cargo run -p pipe_communication --example pipe_communication_framing
//! cargo run -p pipe_communication --example pipe_communication_framing -- --pace 0
//! ```

use std::error::Error;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};

use clap::Parser;
use common::{describe, say, warn};
use nix::fcntl::OFlag;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{alarm, fork, getpid, getppid, pipe2, ForkResult, Pid};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    // Reads, writes and waits block: SIGALRM ends this process if it still
    // runs 60 s after the pause.
    alarm::set(60 + args.pace.secs(1.0).as_secs() as u32);

    // Two plain writes, one read.
    let (mut rx, writer) = start_writer(|tx| {
        tx.write_all(b"hello")?;
        tx.write_all(b"world")?;
        say!("two writes: \"hello\", then \"world\"");
        Ok(())
    })?;
    reap(writer)?; // once the writer is gone, both writes wait in the pipe
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD stores the number of unread bytes into `pending`.
    if unsafe { libc::ioctl(rx.as_raw_fd(), libc::FIONREAD, &mut pending) } != 0 {
        return Err(format!("ioctl(FIONREAD): {}", io::Error::last_os_error()).into());
    }
    say!(
        "the pipe holds {pending} bytes (ioctl FIONREAD); reading in {:.1} s",
        args.pace.secs(1.0).as_secs_f64()
    );
    args.pace.sleep(1.0);
    let mut buf = [0u8; 64];
    let n = rx.read(&mut buf)?;
    let got = String::from_utf8_lossy(&buf[..n]);
    if got != "helloworld" {
        return Err(format!("expected both writes in one read, got {got:?}").into());
    }
    say!("one read returned {n} bytes, {got:?}: two messages glued together, the boundary lost");

    // The same two messages, each with its length in front.
    let (mut rx, writer) = start_writer(|tx| {
        send(tx, b"hello")?;
        send(tx, b"world")?;
        say!("two framed messages: a 4-byte length, then the bytes");
        Ok(())
    })?;
    reap(writer)?;
    let mut got = Vec::new();
    while let Some(msg) = recv(&mut rx)? {
        got.push(String::from_utf8_lossy(&msg).into_owned());
    }
    if got != ["hello", "world"] {
        return Err(
            format!("expected the framed messages \"hello\", \"world\", got {got:?}").into(),
        );
    }
    say!(
        "framed: read back {} messages, {got:?}, then end of file",
        got.len()
    );

    say!("all checks passed");
    Ok(())
}

/// Fork a writer child that runs `body` on the write end of a new pipe and
/// exits 0 if it succeeds; return the read end and the child.
fn start_writer(
    body: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(File, Pid), Box<dyn Error>> {
    let (rx, tx): (OwnedFd, OwnedFd) = pipe2(OFlag::O_CLOEXEC)?;
    let me = getpid();
    io::stdout().flush()?;
    // SAFETY: a single thread here; the child ends in `_exit`.
    match unsafe { fork() }? {
        ForkResult::Child => {
            common::out::set_role("writer");
            if set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != me {
                // SAFETY: `_exit` ends the process at once.
                unsafe { libc::_exit(1) }
            }
            drop(rx); // close the end the writer does not use
                      // Whatever `body` does, the child must not unwind into `main`.
            let code = match catch_unwind(AssertUnwindSafe(|| body(&mut File::from(tx)))) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    warn!("error: {e}");
                    1
                }
                Err(_) => 101,
            };
            // SAFETY: `_exit` ends the process at once.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok((File::from(rx), child)), // `tx` closes here
    }
}

fn reap(child: Pid) -> Result<(), Box<dyn Error>> {
    match waitpid(child, None)? {
        WaitStatus::Exited(_, 0) => Ok(()),
        other => Err(format!("writer {child} {}", describe(other)).into()),
    }
}

/// One frame: the length as 4 bytes (big-endian), then the bytes, in one
/// write (a frame of at most PIPE_BUF, 4096, bytes is never interleaved with
/// another writer's).
fn send(tx: &mut File, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    tx.write_all(&[&len.to_be_bytes()[..], payload].concat())
}

/// One frame; `None` at end of file between frames.
fn recv(rx: &mut File) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match rx.read(&mut header[..1])? {
        0 => return Ok(None),
        _ => rx.read_exact(&mut header[1..])?, // `read_exact`: as many reads as it takes
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a header says {len} bytes: not a frame"
        )));
    }
    let mut payload = vec![0u8; len];
    rx.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// The largest frame a reader accepts: a corrupt length fails cleanly.
const MAX_FRAME: usize = 1 << 20;

/// Demonstrate how framing keeps message boundaries in a pipe.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}
