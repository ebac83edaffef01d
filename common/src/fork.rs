//! Forking a child that runs a closure and always leaves with `_exit`, and a
//! handle to wait for it, with or without a timeout.
//!
//! Why `fork` is `unsafe` in Rust: the child is a copy of the parent with
//! only the thread that called `fork`. A lock another thread held at that
//! moment stays locked forever in the child: Rust's stdout lock, any `Mutex`
//! of the program, or the allocator's lock with an allocator that does not
//! prepare for `fork` (glibc's malloc does: it resets its locks in the
//! child). So POSIX allows the child of a multithreaded process only
//! async-signal-safe calls until it `exec`s or `_exit`s. Our lessons are single-threaded, which
//! [`Fork::run`] checks (in `/proc/self/stat`) before it forks, so the child
//! may then do anything.
//!
//! Why `_exit`: the child owns a copy of every value of the parent. If it
//! returned from `main`, destructors would run twice: once in each process
//! (unlinking a shared name under the parent, say). `_exit` ends the process
//! at once; stdout is flushed by hand first.

use std::io;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};

use crate::out;

/// What a child closure can return: its exit code.
pub trait ChildResult {
    fn exit_code(self) -> i32;
}

impl ChildResult for i32 {
    fn exit_code(self) -> i32 {
        self
    }
}

impl ChildResult for () {
    fn exit_code(self) -> i32 {
        0
    }
}

impl<T: ChildResult, E: std::fmt::Display> ChildResult for Result<T, E> {
    fn exit_code(self) -> i32 {
        match self {
            Ok(v) => v.exit_code(),
            Err(e) => {
                crate::warn!("error: {e}");
                1
            }
        }
    }
}

/// Leave the process now, with `code`, without running destructors or
/// `atexit` handlers: what a forked child must do. Flushes stdout first.
pub fn child_exit(code: i32) -> ! {
    out::flush();
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// How to fork: the child's role in the output, and whether it dies with its
/// parent.
pub struct Fork {
    role: String,
    die_with_parent: bool,
}

impl Fork {
    /// A child that prints as `[role pid]` and is killed if its parent dies.
    pub fn new(role: &str) -> Self {
        Fork {
            role: role.to_string(),
            die_with_parent: true,
        }
    }

    /// Let the child outlive its parent (the orphan lesson). By default a
    /// child asks the kernel for SIGKILL when its parent dies
    /// (`PR_SET_PDEATHSIG`), so a killed lesson leaves no workers behind.
    pub fn outlive_parent(mut self) -> Self {
        self.die_with_parent = false;
        self
    }

    /// Fork; the child runs `f` and leaves with `_exit(code)`: 0 for `()`
    /// or `Ok`, 1 for `Err` (printed), 101 for a panic. Refuses to fork a
    /// multithreaded process.
    pub fn run<R: ChildResult>(self, f: impl FnOnce() -> R) -> io::Result<Child> {
        let threads = crate::procfs::stat(std::process::id() as i32)?.map_or(0, |s| s.num_threads);
        if threads != 1 {
            return Err(io::Error::other(format!(
                "fork: refusing to fork a process with {threads} threads (the child could deadlock)"
            )));
        }
        // SAFETY: the process has one thread, so the child may make any call.
        unsafe { self.fork_then(true, f) }
    }

    /// [`Fork::run`] without the single-thread check.
    ///
    /// # Safety
    /// If the process has other threads, `f` may only make
    /// async-signal-safe calls (no allocation, no locks, no printing). The
    /// child leaves with `_exit` without flushing stdout, whose lock another
    /// thread may have held at the fork.
    pub unsafe fn run_unchecked<R: ChildResult>(self, f: impl FnOnce() -> R) -> io::Result<Child> {
        // SAFETY: passed on to the caller; the child does not touch the role
        // (a lock and an allocation) here.
        unsafe { self.fork_then(false, f) }
    }

    /// # Safety
    /// As for [`Fork::run_unchecked`]; `named` only in a single-threaded process.
    unsafe fn fork_then<R: ChildResult>(
        self,
        named: bool,
        f: impl FnOnce() -> R,
    ) -> io::Result<Child> {
        out::flush();
        let parent = getpid();
        // SAFETY: the caller upholds the threads rule above.
        match unsafe { fork() }.map_err(|e| io::Error::other(format!("fork: {e}")))? {
            ForkResult::Child => {
                if self.die_with_parent {
                    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                    // The parent may have died before the prctl took effect.
                    if getppid() != parent {
                        child_exit(1);
                    }
                }
                if named {
                    out::set_role(&self.role);
                }
                let code = catch_unwind(AssertUnwindSafe(|| f().exit_code())).unwrap_or(101);
                if named {
                    child_exit(code)
                }
                // Another thread may have held stdout's lock at the fork:
                // flushing here could block forever, so leave at once.
                // SAFETY: `_exit` is async-signal-safe and never returns.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => Ok(Child {
                pid: child,
                status: None,
                forker: parent,
            }),
        }
    }
}

/// Fork a child named `role` in the output that runs `f` (see [`Fork::run`]).
pub fn spawn<R: ChildResult>(role: &str, f: impl FnOnce() -> R) -> io::Result<Child> {
    Fork::new(role).run(f)
}

/// A forked child. Dropping an unreaped `Child` kills and reaps it, so an
/// error path in the parent leaves no stray process and no zombie.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    status: Option<WaitStatus>,
    forker: Pid,
}

fn retry_eintr<T>(call: &str, mut f: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(|e| io::Error::other(format!("{call}: {e}"))),
        }
    }
}

/// Sleep in `poll` on a pidfd of `pid` until it ends or `timeout` passes,
/// calling `reap` (a `WNOHANG` wait) after each wake-up; `None` if it still
/// runs at the end. `pid` must be an unreaped child of the caller, so that
/// the PID cannot belong to another process yet. Errors name the call and
/// `who`.
pub(crate) fn wait_pidfd<T>(
    pid: i32,
    who: &str,
    timeout: Duration,
    mut reap: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    let raw = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| io::Error::other(format!("pidfd_open({who}): not a process ID")))?;
    let pidfd: OwnedFd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
        .map_err(|e| io::Error::other(format!("pidfd_open({who}): {e}")))?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io::Error::other(format!("poll(pidfd of {who}): {e}"))),
        }
        if let Some(s) = reap()? {
            return Ok(Some(s));
        }
        if left.is_zero() {
            return Ok(None);
        }
    }
}

impl Child {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The PID as a plain number, for `/proc` paths.
    pub fn raw(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The exit status, once reaped.
    pub fn status(&self) -> Option<WaitStatus> {
        self.status
    }

    /// Wait until the child ends and reap it (`waitpid(pid, 0)`).
    pub fn wait(&mut self) -> io::Result<WaitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = retry_eintr("waitpid", || waitpid(self.pid, None))?;
        self.status = Some(s);
        Ok(s)
    }

    /// Reap the child if it has ended; `None` if it still runs (`WNOHANG`).
    pub fn try_wait(&mut self) -> io::Result<Option<WaitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        match retry_eintr("waitpid", || waitpid(self.pid, Some(WaitPidFlag::WNOHANG)))? {
            WaitStatus::StillAlive => Ok(None),
            s => {
                self.status = Some(s);
                Ok(Some(s))
            }
        }
    }

    /// Wait at most `timeout` for the child to end; `None` if it still runs.
    /// Sleeps in `poll` on a pidfd, which becomes readable when the child
    /// ends: no busy loop, no signal handler.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<WaitStatus>> {
        if let Some(s) = self.try_wait()? {
            return Ok(Some(s));
        }
        // Not reaped yet, so the PID is still this child's.
        let pid = self.raw();
        wait_pidfd(pid, &pid.to_string(), timeout, || self.try_wait())
    }

    /// Send `signal` to the child (nothing if it has been reaped: its PID
    /// may belong to someone else by now).
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        kill(self.pid, signal).map_err(|e| io::Error::other(format!("kill({signal}): {e}")))
    }

    /// Record a status reaped elsewhere (by `waitpid(-1)`, say), so the
    /// handle knows the child is gone.
    pub fn set_reaped(&mut self, status: WaitStatus) {
        self.status = Some(status);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() && getpid() == self.forker {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = retry_eintr("waitpid", || waitpid(self.pid, None));
        }
    }
}

/// A wait status in words: "exited with 42", "killed by SIGKILL",
/// "killed by SIGSEGV (core dumped)", "stopped by SIGSTOP", "continued".
pub fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!(
                "killed by {}{}",
                sig.as_str(),
                if core { " (core dumped)" } else { "" }
            )
        }
        WaitStatus::Stopped(_, sig) => format!("stopped by {}", sig.as_str()),
        WaitStatus::Continued(_) => "continued".to_string(),
        WaitStatus::StillAlive => "still running".to_string(),
        other => format!("{other:?}"),
    }
}

/// The exit code, if the child exited normally.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        _ => None,
    }
}
