//! Demonstrate how pipe ends leak into a program started with fork + exec
//! unless they are close-on-exec, and how a leaked write end withholds end
//! of file.
//!
//! The parent makes three pipes: `pipe()`, `pipe2(O_CLOEXEC)` and
//! `std::io::pipe()`, and checks `FD_CLOEXEC` on each end (`fcntl(F_GETFD)`):
//! clear for `pipe()`, set for the other two. It starts a holder, this
//! program again (`Command`: fork, then exec; `common::program::Program`
//! makes it die with the parent), which asks for no pipe at all, and checks
//! in `/proc` that it holds both ends of the `pipe()` pipe and nothing of the
//! other two. The parent then closes its write ends: the close-on-exec pipes
//! report end of file at once, the `pipe()` pipe only once the holder exits.
//!
//! What to observe while the parent waits (2 s at pace 1):
//! `ls -l /proc/<holder pid>/fd` shows the leaked `pipe:[...]` ends.
//!
//! ```text
//! cargo run -p pipe_communication --example pipe_communication_cloexec
//! cargo run -p pipe_communication --example pipe_communication_cloexec -- --pace 0
//! ```

use std::error::Error;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use common::program::Program;
use common::{say, warn};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{pipe, pipe2, read};

fn main() {
    let args = Args::parse();
    // The holder is this program again, told its job by the environment.
    let result = match std::env::var("LESSON_CHILD").as_deref() {
        Ok("holder") => holder(),
        Ok(other) => Err(format!("LESSON_CHILD: unknown role {other:?}").into()),
        Err(_) => run(&args),
    };
    if let Err(e) = result {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let (leaky_rx, leaky_tx) = pipe()?;
    let (tight_rx, tight_tx) = pipe2(OFlag::O_CLOEXEC)?;
    let (std_rx, std_tx) = io::pipe()?;
    let (std_rx, std_tx): (OwnedFd, OwnedFd) = (std_rx.into(), std_tx.into());
    let pipes = [
        ("nix::unistd::pipe()", &leaky_rx, &leaky_tx, false),
        ("nix::unistd::pipe2(O_CLOEXEC)", &tight_rx, &tight_tx, true),
        ("std::io::pipe()", &std_rx, &std_tx, true),
    ];
    for (call, rx, tx, want) in pipes {
        let (r, w) = (cloexec(rx.as_fd())?, cloexec(tx.as_fd())?);
        let word = |on: bool| if on { "set" } else { "clear" };
        let (rfd, wfd) = (rx.as_raw_fd(), tx.as_raw_fd());
        say!(
            "{call}: FD_CLOEXEC {} on the read end (fd {rfd}) and {} on the write end (fd {wfd})",
            word(r),
            word(w)
        );
        if (r, w) != (want, want) {
            return Err(format!("{call}: expected FD_CLOEXEC {} on both ends", word(want)).into());
        }
    }

    // `Command` forks (every descriptor is copied) and execs (those marked
    // FD_CLOEXEC are closed). It closes nothing else, and neither does C's
    // fork + exec. `start` returns once the exec has succeeded.
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.env("LESSON_CHILD", "holder").stdin(Stdio::piped());
    let mut holder = Program::start("holder", &mut cmd)?;
    let pid = holder.pid();
    let held: Vec<Vec<i32>> = pipes
        .iter()
        .map(|(_, _, tx, _)| ends(pid, tx))
        .collect::<io::Result<_>>()?;
    if held[0].len() != 2 || !held[1].is_empty() || !held[2].is_empty() {
        return Err(format!(
            "holder {pid} holds fds {held:?} of the three pipes; expected both ends of pipe() only"
        )
        .into());
    }
    say!("holder {pid}, a new program, holds both ends of the nix::unistd::pipe() pipe (fds {:?}) without asking for them, and nothing of the other two: ls -l /proc/{pid}/fd", held[0]);

    // We close all our write ends. The close-on-exec pipes end at once.
    drop((leaky_tx, tight_tx, std_tx));
    for (call, rx) in [
        ("nix::unistd::pipe2(O_CLOEXEC)", &tight_rx),
        ("std::io::pipe()", &std_rx),
    ] {
        eof(rx.as_fd(), Duration::from_secs(10))?.ok_or(format!("{call}: no end of file"))?;
        say!("{call}: end of file as soon as our write end closed");
    }
    let waited = args.pace.secs(2.0).max(Duration::from_millis(200));
    if eof(leaky_rx.as_fd(), waited)?.is_some() {
        return Err("pipe(): end of file while the holder still holds a write end".into());
    }
    say!("nix::unistd::pipe(): no end of file after {:.1} s: the holder's leaked copy keeps the pipe open", waited.as_secs_f64());
    // Close the holder's stdin (its cue to leave) and wait for it to exit.
    drop(holder.child_mut().stdin.take());
    holder.expect_success(Duration::from_secs(10))?;
    eof(leaky_rx.as_fd(), Duration::from_secs(10))?
        .ok_or("pipe(): no end of file after the holder exited")?;
    say!("holder {pid} exited: only now does nix::unistd::pipe() report end of file");
    say!("all checks passed");
    Ok(())
}

/// Wait up to `timeout` for input on `fd`; then `read` must return 0 (end
/// of file). `None` if the time passed with nothing to read.
fn eof(fd: BorrowedFd<'_>, timeout: Duration) -> Result<Option<()>, Box<dyn Error>> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::try_from(timeout)?)? == 0 {
        return Ok(None);
    }
    match read(fd, &mut [0u8; 16])? {
        0 => Ok(Some(())),
        n => Err(format!("read {n} bytes, expected end of file").into()),
    }
}

/// Whether `fd` is closed by `exec` (`fcntl(F_GETFD)` has `FD_CLOEXEC`).
fn cloexec(fd: BorrowedFd<'_>) -> Result<bool, Box<dyn Error>> {
    let flags = fcntl(fd, FcntlArg::F_GETFD)?;
    Ok(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC))
}

/// The descriptors of process `pid` on the same pipe as `fd`, from the
/// links in `/proc/<pid>/fd` (`3 -> pipe:[123456]`).
fn ends(pid: i32, fd: &OwnedFd) -> io::Result<Vec<i32>> {
    let target = format!("pipe:[{}]", nix::sys::stat::fstat(fd)?.st_ino);
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let path = entry?.path();
        if std::fs::read_link(&path).is_ok_and(|l| l.as_os_str() == target.as_str()) {
            found.extend(
                path.file_name()
                    .and_then(|n| n.to_str()?.parse::<i32>().ok()),
            );
        }
    }
    found.sort();
    Ok(found)
}

/// The holder's whole life: wait until stdin reaches end of file.
fn holder() -> Result<(), Box<dyn Error>> {
    common::out::set_role("holder");
    say!("a new program (fork + exec); I leave when my stdin closes");
    // The parent closes stdin within seconds; its death kills us anyway.
    io::stdin().read_to_end(&mut Vec::new())?;
    Ok(())
}

/// Demonstrate how close-on-exec keeps pipe ends out of exec'd programs.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}
