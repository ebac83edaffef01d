//! Demonstrate how a child whose parent exits first becomes an orphan, and
//! who adopts it: the nearest ancestor that is a subreaper, or else the init
//! of its PID namespace.
//!
//! The lesson's main process (the grandparent) forks the parent, which forks
//! the child. The parent stays a while (2 s at pace 1) and exits without
//! waiting. The orphan waits until `getppid()` changes, names its new parent,
//! lives on (3 s at pace 1) and exits; its adopter reaps it. The grandparent
//! reads the orphan's report until it has exited, and checks the change.
//!
//! What to observe: `ps -o pid,ppid,stat,comm -p <the three PIDs>` (the lesson
//! prints it) shows the orphan's PPID change; `scripts/orphan.sh` does it.
//!
//! ```text
//! cargo run -p orphan
//! cargo run -p orphan -- --pace 3                  # longer pauses to look with ps
//! cargo run -p orphan --example orphan_subreaper    # the grandparent adopts it
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::io::{self, PipeWriter, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{describe, procfs, say, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{close, fork, getpid, getppid, ForkResult};

fn main() {
    let args = Args::parse();
    common::out::set_role("grandparent");
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res<()> {
    // The orphan reports through this pipe, and we read it until it exits.
    let (mut from_orphan, to_grandparent) = io::pipe()?;
    // `common::fork::spawn` forks the parent (PR_SET_PDEATHSIG, `_exit`).
    let mut parent = common::fork::spawn("parent", || {
        close(from_orphan.as_raw_fd())?; // we hold the only read end
        parent(args, &to_grandparent)
    })?;
    drop(to_grandparent);
    let pid = parent.pid();
    say!("forked the parent {pid}");
    let limit = args.pace.secs(args.parent_stays) + SYSTEM_TIMEOUT * 2;
    let status = parent.wait_timeout(limit)?.ok_or("the parent hangs")?;
    say!("reaped the parent {pid}: {}", describe(status));
    if status != WaitStatus::Exited(pid, 0) {
        return Err("the parent failed".into());
    }
    // Read until end-of-file, when the orphan has exited (its life is bounded).
    let mut text = String::new();
    from_orphan.read_to_string(&mut text)?;
    let n: Vec<i32> = text.split(' ').flat_map(str::parse).collect();
    let &[orphan, before, after] = &n[..] else {
        return Err(format!("no report from the orphan: {text:?}").into());
    };
    let adopter = procfs::name(after)?.unwrap_or_else(|| "gone".to_string());
    say!("the orphan {orphan} reports: its parent was {before} and is now {after} ({adopter})");
    if before != pid.as_raw() || after == before {
        return Err(format!("expected a change from the parent {pid} to another").into());
    }
    say!("all checks passed");
    Ok(())
}

/// The parent: forks the child, waits until the child has seen it as its
/// parent, stays a while, and exits without waiting for it.
fn parent(args: &Args, report: &PipeWriter) -> Res<()> {
    // The child writes a byte here once it has read its parent's PID.
    let (mut seen, to_parent) = io::pipe()?;
    io::stdout().flush()?;
    // SAFETY: single-threaded; the child runs `orphan` and leaves with `_exit`.
    let child = match unsafe { fork() }? {
        ForkResult::Child => {
            common::out::set_role("orphan");
            // No PR_SET_PDEATHSIG: this child is meant to outlive its parent.
            // (A panic unwinds only to `spawn`'s catch_unwind: `_exit(101)`.)
            let code = orphan(args, to_parent, report);
            let code = code.map_err(|e| warn!("error: {e}")).unwrap_or(1);
            // SAFETY: `_exit` ends the process at once; nothing runs after it.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(to_parent);
    say!("forked my child {child}; waiting until it has seen me as its parent");
    if seen.read(&mut [0u8; 1])? != 1 {
        waitpid(child, None)?; // end-of-file: it has exited
        return Err(format!("my child {child} exited before it checked in").into());
    }
    let (grandparent, me) = (getppid(), getpid());
    say!("see the family: ps -o pid,ppid,stat,comm -p {grandparent},{me},{child}");
    let secs = args.parent_stays * args.pace.factor();
    say!("exiting in {secs:.1} s, without waiting for my child {child}");
    args.pace.sleep(args.parent_stays);
    Ok(())
}

/// The child that becomes an orphan.
fn orphan(args: &Args, mut to_parent: PipeWriter, mut report: &PipeWriter) -> Res<i32> {
    let before = getppid();
    say!("my parent is {before}");
    to_parent.write_all(b"!")?;
    // As TLPI's orphan.c: wait until getppid() changes; never compare it with
    // 1. A time limit, in case the parent never exits.
    let deadline = Instant::now() + args.pace.secs(args.parent_stays) + SYSTEM_TIMEOUT;
    while getppid() == before {
        if Instant::now() > deadline {
            return Err(format!("my parent {before} never exited").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = getppid();
    let name = procfs::name(after.as_raw())?.unwrap_or_else(|| "gone".to_string());
    say!("my parent {before} has exited; my parent is now {after} ({name})");
    let me = getpid();
    // One write of fewer than PIPE_BUF bytes: it arrives whole.
    report.write_all(format!("{me} {before} {after}").as_bytes())?;
    let stays = args.pace.secs(args.orphan_stays);
    let secs = stays.as_secs_f64();
    say!("living on for {secs:.1} s as an orphan: ps -o pid,ppid,stat,comm -p {me}");
    // Not a sleep: poll on the report pipe, whose POLLERR says its reader is gone.
    let ms = PollTimeout::try_from(stays + Duration::from_micros(999))?; // rounded up
    let mut fds = [PollFd::new(report.as_fd(), PollFlags::empty())];
    if poll(&mut fds, ms)? > 0 {
        warn!("the grandparent is gone: leaving early");
        return Ok(1);
    }
    say!("exiting");
    Ok(0)
}

/// Demonstrate how a child whose parent exits is adopted by init or the nearest subreaper.
#[derive(Parser)]
struct Args {
    /// Seconds the parent stays with its child before it exits, scaled by the pace (0-60)
    #[arg(long, value_name = "X", default_value_t = 2.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 60.0))]
    parent_stays: f64,
    /// Seconds the orphan lives on after its adoption, scaled by the pace (0-60)
    #[arg(long, value_name = "X", default_value_t = 3.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 60.0))]
    orphan_stays: f64,
    #[command(flatten)]
    pace: common::Pace,
}

type Res<T> = Result<T, Box<dyn Error>>;

/// How long the system gets for a step it takes by itself. Not scaled.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
