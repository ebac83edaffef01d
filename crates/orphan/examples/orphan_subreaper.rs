//! Demonstrate how a subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`) adopts the
//! orphans among its descendants, and so gets to reap them and read their
//! exit statuses.
//!
//! The same three generations as the lesson, with the grandparent a
//! subreaper. While the parent lives, the child is only a grandchild:
//! `waitpid` on it fails with `ECHILD`. Then the grandparent lets the parent
//! exit; the orphan's `getppid()` now returns the grandparent's PID. When the
//! orphan exits (code 7), `/proc` shows it as the grandparent's zombie, and
//! `waitpid` returns its exit code.
//!
//! What to observe: "ECHILD" while it is a grandchild, "my parent is now
//! <the grandparent>", then state Z with the grandparent as parent and "exited
//! with 7". In another terminal: `ps -o pid,ppid,stat,comm -p <orphan>`.
//!
//! ```text
//! cargo run -p orphan --example orphan_subreaper
//! cargo run -p orphan --example orphan_subreaper -- --pace 3
//! ```

use std::error::Error;
use std::io::{self, BufRead, BufReader, PipeReader, PipeWriter, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{describe, procfs, say, warn};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::prctl::set_child_subreaper;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{close, fork, getpid, getppid, ForkResult, Pid};

/// The orphan's exit code, which its subreaper collects.
const ORPHAN_EXIT: i32 = 7;

fn main() {
    let args = Args::parse();
    common::out::set_role("grandparent");
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res<()> {
    let me = getpid();
    set_child_subreaper(true).map_err(|e| format!("prctl(PR_SET_CHILD_SUBREAPER): {e}"))?;
    say!("I am a subreaper now: orphans among my descendants will be given to me");
    // The orphan reports through this pipe, one line at a time.
    let (from_orphan, to_grandparent) = io::pipe()?;
    // The parent exits when it reads a byte (or end-of-file) here.
    let (go_read, mut go) = io::pipe()?;
    // `common::fork::spawn` forks the parent (PR_SET_PDEATHSIG, `_exit`).
    let mut parent = common::fork::spawn("parent", || {
        close(from_orphan.as_raw_fd())?; // we hold the only read end
        close(go.as_raw_fd())?;
        parent(args, &go_read, &to_grandparent)
    })?;
    drop((to_grandparent, go_read));
    let pid = parent.pid();
    say!("forked the parent {pid}");
    let mut lines = BufReader::new(from_orphan).lines();
    let mut next = || lines.next().unwrap_or(Ok(String::new()));

    // First line: the orphan-to-be and its parent's PID.
    let first: Vec<i32> = next()?.split(' ').flat_map(str::parse).collect();
    let &[orphan, before] = &first[..] else {
        return Err(format!("no first report from the child: {first:?}").into());
    };
    if before != pid.as_raw() {
        return Err(format!("the child's parent is {before}, not the parent {pid}").into());
    }
    // A grandchild is not ours, subreaper or not, while its parent lives.
    match waitpid(Pid::from_raw(orphan), Some(WaitPidFlag::WNOHANG)) {
        Err(Errno::ECHILD) => say!("waitpid({orphan}) fails with ECHILD: a grandchild, not mine"),
        other => return Err(format!("expected ECHILD from waitpid({orphan}): {other:?}").into()),
    }
    go.write_all(b"!")?; // let the parent exit
    let limit = args.pace.secs(args.parent_stays) + SYSTEM_TIMEOUT;
    let status = parent.wait_timeout(limit)?.ok_or("the parent hangs")?;
    say!("reaped the parent {pid}: {}", describe(status));
    if status != WaitStatus::Exited(pid, 0) {
        return Err("the parent failed".into());
    }

    // Second line: the orphan's new parent, which must be us.
    let after: i32 = next()?.trim().parse().map_err(|_| "no second report")?;
    say!("the orphan {orphan} reports: its parent was {before} and is now {after}");
    if after != me.as_raw() {
        return Err(format!("adopted by {after}, not by me, although I am a subreaper").into());
    }
    // End-of-file: the orphan has exited. It is our child: its zombie is ours.
    if !next()?.is_empty() {
        return Err("the orphan wrote more than its reports".into());
    }
    let zombie = |s: Option<&procfs::Stat>| s.is_some_and(|s| s.state == 'Z');
    match procfs::wait_for(orphan, SYSTEM_TIMEOUT, zombie)? {
        Ok(Some(s)) if s.ppid == me.as_raw() => {
            say!(
                "/proc/{orphan}/stat: state Z, parent {}: mine to reap",
                s.ppid
            )
        }
        Ok(s) | Err(s) => return Err(format!("expected my zombie, /proc says {s:?}").into()),
    }
    let status = waitpid(Pid::from_raw(orphan), Some(WaitPidFlag::WNOHANG))?;
    say!("reaped the orphan {orphan}: {}", describe(status));
    if status != WaitStatus::Exited(Pid::from_raw(orphan), ORPHAN_EXIT) {
        return Err(format!("expected exit code {ORPHAN_EXIT}").into());
    }
    say!("all checks passed");
    Ok(())
}

/// The parent: forks the child, stays until the grandparent lets it go, and
/// exits without waiting for the child.
fn parent(args: &Args, mut go: &PipeReader, report: &PipeWriter) -> Res<()> {
    io::stdout().flush()?;
    // SAFETY: single-threaded; the child runs `orphan` and leaves with `_exit`.
    let child = match unsafe { fork() }? {
        ForkResult::Child => {
            common::out::set_role("orphan");
            // No PR_SET_PDEATHSIG: this child is meant to outlive its parent.
            // (A panic unwinds only to `spawn`'s catch_unwind: `_exit(101)`.)
            let code = orphan(args, report);
            let code = code.map_err(|e| warn!("error: {e}")).unwrap_or(1);
            // SAFETY: `_exit` ends the process at once; nothing runs after it.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    say!("forked my child {child}; waiting for the grandparent's go");
    // A byte, or end-of-file if the grandparent is gone (we die with it anyway).
    if go.read(&mut [0u8; 1])? == 0 {
        return Err("the grandparent is gone".into());
    }
    let secs = args.parent_stays * args.pace.factor();
    say!("exiting in {secs:.1} s, without waiting for my child {child}");
    args.pace.sleep(args.parent_stays);
    Ok(())
}

/// The child that becomes an orphan.
fn orphan(args: &Args, mut report: &PipeWriter) -> Res<i32> {
    let (me, before) = (getpid(), getppid());
    say!("my parent is {before}");
    // Each write of fewer than PIPE_BUF bytes arrives whole.
    report.write_all(format!("{me} {before}\n").as_bytes())?;
    // Wait until getppid() changes; never compare it with 1.
    let deadline = Instant::now() + args.pace.secs(args.parent_stays) + SYSTEM_TIMEOUT * 2;
    while getppid() == before {
        if Instant::now() > deadline {
            return Err(format!("my parent {before} never exited").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = getppid();
    let name = procfs::name(after.as_raw())?.unwrap_or_else(|| "gone".to_string());
    say!("my parent {before} has exited; my parent is now {after} ({name})");
    report.write_all(format!("{after}\n").as_bytes())?;
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
    say!("exiting with code {ORPHAN_EXIT}");
    Ok(ORPHAN_EXIT)
}

/// Demonstrate how a subreaper adopts and reaps the orphans among its descendants.
#[derive(Parser)]
struct Args {
    /// Seconds the parent stays before it exits, once let go, scaled by the pace (0-60)
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
