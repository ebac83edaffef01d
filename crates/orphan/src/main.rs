//! Demonstrate how a child whose parent exits first becomes an orphan, and
//! who adopts it: init, or the nearest ancestor that is a subreaper.
//!
//! Three generations. The lesson's main process (the grandparent) forks the
//! parent, which forks the child that will be orphaned. The child reads its
//! parent's PID and tells the parent so; the parent stays a while (2 s at
//! pace 1) so that you can look at the family, then exits without waiting
//! for its child. The child, now an orphan, waits until `getppid()` changes,
//! prints its new parent's PID and name from `/proc`, reports both PIDs to
//! the grandparent through a pipe, lives on a little (3 s at pace 1) and
//! exits. The grandparent checks the report: the PPID changed, from the
//! parent's PID to another. Without `--subreaper`, the orphan is not the
//! grandparent's: `waitpid` on it fails with `ECHILD`, and the grandparent
//! watches it vanish from `/proc` when its adopter reaps it. With
//! `--subreaper`, the grandparent has asked for orphans
//! (`PR_SET_CHILD_SUBREAPER`): the orphan's new PPID is the grandparent's
//! PID, `/proc` shows the dead orphan as the grandparent's zombie, and
//! `waitpid` returns its exit code, 7.
//!
//! Key points:
//! - A process that exits does not take its children with it. The kernel
//!   gives each living child a new parent: the nearest ancestor marked as a
//!   subreaper, or else init, PID 1 of the PID namespace. Subreapers are
//!   common: `systemd --user` in a desktop session, a container's init
//!   (`tini`, `docker run --init`), service managers.
//! - The orphan runs on unaware; only `getppid()` changes. To notice, wait
//!   until it differs from the old value, as TLPI's `orphan.c` does; never
//!   compare it with 1.
//! - The adopter must reap the orphan when it exits. init does it for every
//!   orphan; a subreaper has taken on the same duty for its descendants. A
//!   container whose PID 1 never calls `wait` fills up with zombies.
//! - A grandparent gets nothing from its grandchildren unless it is a
//!   subreaper.
//! - The children of these lessons normally ask the kernel to be killed when
//!   their parent dies (`PR_SET_PDEATHSIG`, the default of `common::fork`).
//!   The orphan opts out with `Fork::new(..).outlive_parent()`, and the
//!   parent forgets its `Child` handle, whose drop would kill and reap it.
//!   The orphan still ends by itself: after a short, pace-scaled stay, at
//!   once if the grandparent is gone (no reader left on the report pipe),
//!   and within a fixed bound if its parent never exits.
//!
//! What to observe, in another terminal: `ps -o pid,ppid,stat,comm -p
//! <grandparent>,<parent>,<orphan>` (the lesson prints the line) shows the
//! orphan's PPID change from the parent's PID to its adopter's;
//! `pstree -p -s <orphan pid>` shows its line of ancestors.
//! `scripts/orphan.sh` does this for you.
//!
//! The pitfall: assuming the orphan's new parent is PID 1, as the seed's
//! comments do. In a desktop terminal or a container it is usually not.
//! The second one: leaving the orphan running after the program that made it
//! has returned, as the seed does (it prints after the shell prompt is back).
//!
//! Seed example: 13, orphan (C++ `fork`, the parent returns at once while the
//! child sleeps 10 s; Python `os.fork`, likewise).
//!
//! Run with:
//! ```text
//! cargo run -p orphan
//! cargo run -p orphan -- --subreaper       # the grandparent adopts and reaps it
//! cargo run -p orphan -- --pace 3          # longer pauses to look with ps
//! ```
//!
//! Try it:
//! - Remove `.outlive_parent()`: the child dies with its parent, and the
//!   grandparent reports that the orphan exited without a report.
//! - Remove `std::mem::forget(child)` from the parent: dropping the handle
//!   kills and reaps the child before the parent exits, with the same result.
//! - Run it under a subreaper of your own: `systemd-run --user --scope
//!   cargo run -p orphan`, or `docker run --init`, and see who adopts.
//!
//! See also: `zombie` (a child that exits before its parent reaps it),
//! `basic_process` (fork, wait and exit statuses), TLPI's
//! `procexec/orphan.c`.

use std::error::Error;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn, Fork};
use common::opts::{Args, Opt, Spec};
use common::{describe, out, procfs, say, warn};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::prctl::set_child_subreaper;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{close, getpid, getppid, pipe, read, write, Pid};

const SPEC: Spec = Spec {
    name: "orphan",
    about: "Demonstrate how a child whose parent exits is adopted by init or the nearest subreaper.",
    options: &[
        Opt::flag(
            "subreaper",
            "make the main process a subreaper (PR_SET_CHILD_SUBREAPER): it adopts and reaps the orphan",
        ),
        Opt::float(
            "parent-stays",
            "seconds the parent stays with its child before it exits",
            2.0,
            0.0,
            60.0,
        ),
        Opt::float(
            "orphan-stays",
            "seconds the orphan lives on after its adoption",
            3.0,
            0.0,
            60.0,
        ),
    ],
};

/// The orphan's exit code, which a subreaper grandparent collects.
const ORPHAN_EXIT: i32 = 7;

/// How long the system gets for each step it takes by itself (a process
/// exits, the kernel reparents, an adopter reaps). A safety floor, not
/// scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);

/// The pauses meant for a human watching, already scaled by the pace.
#[derive(Clone, Copy)]
struct Stays {
    parent: Duration,
    orphan: Duration,
}

fn main() {
    let args = Args::parse(&SPEC);
    // The lesson's main process is the orphan's grandparent.
    out::set_role("grandparent");
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    let stays = Stays {
        parent: pace.secs(args.float("parent-stays")),
        orphan: pace.secs(args.float("orphan-stays")),
    };
    let subreaper = args.flag("subreaper");
    let me = getpid();

    if subreaper {
        set_child_subreaper(true).map_err(|e| format!("prctl(PR_SET_CHILD_SUBREAPER): {e}"))?;
        say!("I am a subreaper now: orphans among my descendants will be given to me, not to init");
    }
    // The orphan reports to us through this pipe. It also tells the orphan
    // when we are gone: with no reader left, its write end reports POLLERR.
    let (from_orphan, to_grandparent) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut parent = spawn("parent", || {
        parent_role(me, &from_orphan, &to_grandparent, stays)
    })?;
    // Only the orphan writes. Once its copy is closed (when it exits), we
    // read end-of-file.
    drop(to_grandparent);
    say!("forked the parent {}", parent.pid());

    // The parent exits by itself; it is our child, so we reap it.
    let status = parent
        .wait_timeout(stays.parent + SYSTEM_TIMEOUT)?
        .ok_or_else(|| format!("the parent {} did not exit", parent.pid()))?;
    say!("reaped the parent {}: {}", parent.pid(), describe(status));
    if exit_code(status) != Some(0) {
        return Err(format!("the parent failed: {}", describe(status)).into());
    }

    let report = read_report(from_orphan.as_fd())?;
    let orphan = report.orphan;
    let adopter = procfs::name(report.after)?.unwrap_or_else(|| "gone".to_string());
    say!(
        "the orphan {orphan} reports: its parent was {} and is now {} ({adopter})",
        report.before,
        report.after
    );
    if report.before != parent.raw() {
        return Err(format!(
            "the orphan's first parent was {}, not the parent {}",
            report.before,
            parent.raw()
        )
        .into());
    }
    if report.after == report.before {
        return Err("the orphan's parent did not change".into());
    }
    if subreaper && report.after != me.as_raw() {
        return Err(format!(
            "the orphan was adopted by {}, not by me, although I am a subreaper",
            report.after
        )
        .into());
    }

    // End-of-file: the orphan has exited (its last copy of the write end
    // closed). Now its adopter must reap it.
    wait_for_end_of_file(from_orphan.as_fd(), stays.orphan + SYSTEM_TIMEOUT)?;
    if subreaper {
        reap_it_myself(&report, me)?;
    } else {
        watch_its_adopter_reap_it(&report, &adopter)?;
    }
    say!("all checks passed");
    Ok(())
}

/// The parent: forks the child that will be orphaned, waits until that
/// child has seen it as its parent, stays a while, and exits without
/// waiting for it.
fn parent_role(
    grandparent: Pid,
    from_orphan: &OwnedFd,
    to_grandparent: &OwnedFd,
    stays: Stays,
) -> Result<(), Box<dyn Error>> {
    // `fork` copied every open descriptor, the grandparent's read end of the
    // report pipe too. Close our copy before forking again, so that the
    // grandparent holds the only one. (The `OwnedFd` in our copy of its
    // memory is never dropped: a forked child leaves with `_exit`.)
    close(from_orphan.as_raw_fd()).map_err(|e| format!("close: {e}"))?;
    // The child says "seen" here once it has read its parent's PID, so
    // that its "before" is really from before we exit.
    let (seen, to_parent) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let child = Fork::new("orphan")
        .outlive_parent()
        .run(|| orphan_role(grandparent, &to_parent, to_grandparent, stays))?;
    drop(to_parent);
    say!(
        "forked my child {}; waiting until it has seen me as its parent",
        child.pid()
    );
    let mut byte = [0u8; 1];
    if poll_for(seen.as_fd(), PollFlags::POLLIN, SYSTEM_TIMEOUT)?.is_empty()
        || read(&seen, &mut byte).map_err(|e| format!("read: {e}"))? != 1
    {
        return Err(format!("my child {} did not check in", child.pid()).into());
    }
    say!(
        "see the family: ps -o pid,ppid,stat,comm -p {grandparent},{},{}",
        getpid(),
        child.pid()
    );
    say!(
        "exiting in {:.1} s, without waiting for my child {}",
        stays.parent.as_secs_f64(),
        child.pid()
    );
    std::thread::sleep(stays.parent);
    // Dropping the handle would kill and reap the child. A parent that
    // walks away from its child forgets the handle instead.
    std::mem::forget(child);
    Ok(())
}

/// The child that becomes an orphan. Returns its exit code.
fn orphan_role(
    grandparent: Pid,
    to_parent: &OwnedFd,
    to_grandparent: &OwnedFd,
    stays: Stays,
) -> Result<i32, Box<dyn Error>> {
    let before = getppid();
    say!("my parent is {before}");
    write(to_parent, b"!").map_err(|e| format!("write: {e}"))?;

    // As TLPI's orphan.c: wait until getppid() changes, and do not assume
    // the new parent is PID 1. A fixed bound, in case the parent never exits.
    let deadline = Instant::now() + stays.parent + SYSTEM_TIMEOUT;
    let after = loop {
        let now = getppid();
        if now != before {
            break now;
        }
        if Instant::now() > deadline {
            return Err(format!("my parent {before} never exited").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let name = procfs::name(after.as_raw())?.unwrap_or_else(|| "gone".to_string());
    let who = if after == grandparent {
        "my grandparent, a subreaper"
    } else if after.as_raw() == 1 {
        "PID 1, the init of this PID namespace"
    } else {
        "the nearest subreaper among my ancestors"
    };
    say!("my parent {before} has exited; my parent is now {after} ({name}): {who}");

    let me = getpid();
    let start_time = procfs::stat(me.as_raw())?
        .ok_or("/proc/self/stat: not found")?
        .start_time;
    let report = Report {
        orphan: me.as_raw(),
        before: before.as_raw(),
        after: after.as_raw(),
        start_time,
    };
    // One write of fewer than PIPE_BUF bytes: it arrives whole.
    let n = write(to_grandparent, &report.to_bytes()).map_err(|e| format!("write: {e}"))?;
    if n != Report::LEN {
        return Err(format!("write: {n} of {} bytes", Report::LEN).into());
    }

    say!(
        "living on for {:.1} s as an orphan: ps -o pid,ppid,stat,comm -p {me}",
        stays.orphan.as_secs_f64()
    );
    // Wait on the report pipe rather than sleep: POLLERR says that its
    // reader, the grandparent, is gone, and then there is no one to watch.
    if poll_for(to_grandparent.as_fd(), PollFlags::empty(), stays.orphan)?
        .contains(PollFlags::POLLERR)
    {
        warn!("the grandparent is gone: leaving early");
        return Ok(1);
    }
    say!("exiting with code {ORPHAN_EXIT}");
    Ok(ORPHAN_EXIT)
}

/// With `--subreaper`: the orphan is our child now, so its zombie is ours
/// to reap, and `waitpid` gives us its exit code.
fn reap_it_myself(report: &Report, me: Pid) -> Result<(), Box<dyn Error>> {
    let orphan = report.orphan;
    match procfs::wait_for(orphan, SYSTEM_TIMEOUT, |s| {
        s.is_some_and(|s| s.state == 'Z')
    })? {
        Ok(Some(s)) if s.ppid == me.as_raw() => say!(
            "/proc/{orphan}/stat: state Z, parent {}: the dead orphan is mine to reap",
            s.ppid
        ),
        Ok(s) | Err(s) => {
            return Err(
                format!("expected the orphan {orphan} as my zombie, /proc says {s:?}").into(),
            )
        }
    }
    let status = waitpid(Pid::from_raw(orphan), Some(WaitPidFlag::WNOHANG))
        .map_err(|e| format!("waitpid({orphan}): {e}"))?;
    say!("reaped the orphan {orphan}: {}", describe(status));
    if exit_code(status) != Some(ORPHAN_EXIT) {
        return Err(format!(
            "expected the orphan to exit with {ORPHAN_EXIT}, got {}",
            describe(status)
        )
        .into());
    }
    Ok(())
}

/// Without `--subreaper`: the orphan is not our child, and its adopter
/// reaps it.
fn watch_its_adopter_reap_it(report: &Report, adopter: &str) -> Result<(), Box<dyn Error>> {
    let orphan = report.orphan;
    match waitpid(Pid::from_raw(orphan), Some(WaitPidFlag::WNOHANG)) {
        Err(Errno::ECHILD) => say!(
            "waitpid({orphan}) fails with ECHILD: the orphan is not my child, I cannot reap it"
        ),
        other => {
            return Err(format!(
                "expected ECHILD from waitpid({orphan}), got {other:?}: did I adopt it?"
            )
            .into())
        }
    }
    // Gone from /proc (or its PID already reused by a process with another
    // start time): reaped.
    let reaped = procfs::wait_for(orphan, SYSTEM_TIMEOUT, |s| {
        s.is_none_or(|s| s.start_time != report.start_time)
    })?;
    if let Err(Some(s)) = reaped {
        return Err(format!(
            "the orphan {orphan} is still in /proc (state {}) after {SYSTEM_TIMEOUT:?}: \
             its adopter {} ({adopter}) does not reap",
            s.state, report.after
        )
        .into());
    }
    say!(
        "the orphan {orphan} is gone from /proc: its adopter {} ({adopter}) reaped it",
        report.after
    );
    Ok(())
}

/// What the orphan tells the grandparent, in one write.
struct Report {
    orphan: i32,
    /// The orphan's parent's PID before and after the parent exited.
    before: i32,
    after: i32,
    /// With the PID, names the orphan for good (a reused PID has another).
    start_time: u64,
}

impl Report {
    const LEN: usize = 20;

    fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&self.orphan.to_ne_bytes());
        b[4..8].copy_from_slice(&self.before.to_ne_bytes());
        b[8..12].copy_from_slice(&self.after.to_ne_bytes());
        b[12..20].copy_from_slice(&self.start_time.to_ne_bytes());
        b
    }

    fn from_bytes(b: &[u8; Self::LEN]) -> Report {
        let i32_at = |i: usize| i32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[12..20]);
        Report {
            orphan: i32_at(0),
            before: i32_at(4),
            after: i32_at(8),
            start_time: u64::from_ne_bytes(t),
        }
    }
}

/// Wait for the orphan's report, which comes once the parent has exited.
fn read_report(fd: BorrowedFd) -> Result<Report, Box<dyn Error>> {
    if poll_for(fd, PollFlags::POLLIN, SYSTEM_TIMEOUT)?.is_empty() {
        return Err(format!("no report from the orphan within {SYSTEM_TIMEOUT:?}").into());
    }
    let mut buf = [0u8; Report::LEN];
    match read(fd, &mut buf).map_err(|e| format!("read: {e}"))? {
        Report::LEN => Ok(Report::from_bytes(&buf)),
        0 => Err("the orphan exited without a report".into()),
        n => Err(format!("a short report from the orphan: {n} bytes").into()),
    }
}

/// Wait until every write end of the pipe is closed.
fn wait_for_end_of_file(fd: BorrowedFd, timeout: Duration) -> Result<(), Box<dyn Error>> {
    if poll_for(fd, PollFlags::POLLIN, timeout)?.is_empty() {
        return Err(format!("the orphan did not exit within {timeout:?}").into());
    }
    let mut buf = [0u8; 1];
    match read(fd, &mut buf).map_err(|e| format!("read: {e}"))? {
        0 => Ok(()),
        _ => Err("the orphan wrote more than its report".into()),
    }
}

/// Wait until `fd` reports one of `events` (or an error or hang-up, which
/// poll always reports), for at most `timeout`. Returns what it reported:
/// nothing if the time ran out.
fn poll_for(
    fd: BorrowedFd,
    events: PollFlags,
    timeout: Duration,
) -> Result<PollFlags, Box<dyn Error>> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Round up to whole milliseconds, so that we do not wake up early.
        let ms =
            PollTimeout::try_from(left + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, events)];
        match poll(&mut fds, ms) {
            Ok(0) if left.is_zero() => return Ok(PollFlags::empty()),
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(fds[0].revents().unwrap_or(PollFlags::empty())),
            Err(e) => return Err(format!("poll: {e}").into()),
        }
    }
}
