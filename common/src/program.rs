//! A program started with `std::process::Command` that dies with the lesson
//! and never outlives an error path.
//!
//! A forked child of [`crate::fork`] asks for SIGKILL when its parent dies.
//! A program started with `Command` does not, unless someone asks between
//! `fork` and `exec`: [`Program::start`] does, in a `pre_exec` hook, so a
//! lesson that is SIGKILLed (and cannot clean up) still takes its programs
//! with it. The hook also clears the signal mask, which survives `fork` and
//! `exec` alike (Rust's `Command` keeps it): a lesson that holds SIGINT and
//! SIGTERM back while a name exists ([`crate::signals::Hold`]) would
//! otherwise start a program that holds them back for good.
//!
//! Dropping a `Program` that still runs (an error path) kills and reaps it:
//! no stray process, no zombie.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{getpid, getppid, Pid};

/// A program started with `Command` (see the module documentation).
#[derive(Debug)]
pub struct Program {
    child: std::process::Child,
    /// `reader (4243)`: the name given to `start`, with the PID.
    name: String,
}

impl Program {
    /// Start `cmd` as the program `name` (the name is for messages only).
    /// It gets `PR_SET_PDEATHSIG(SIGKILL)` and an empty signal mask before
    /// its `exec`; it is not started if the lesson died before the `prctl`.
    ///
    /// The death signal is tied to the *thread* that starts the program: it
    /// fires when that thread ends. Lessons are single-threaded, so that is
    /// when the lesson ends.
    pub fn start(name: &str, cmd: &mut Command) -> io::Result<Program> {
        let lesson = getpid();
        let unblocked = SigSet::empty();
        // SAFETY: the closure runs in the child between fork and exec, where
        // (the parent may have threads) only async-signal-safe calls are
        // allowed. It makes three system calls, prctl, getppid and
        // sigprocmask, and allocates nothing: its errors are built from the
        // raw errno (`io::Error::from(Errno)` stores just the number).
        unsafe {
            cmd.pre_exec(move || {
                // SIGKILL when the lesson ends, however it ends; the setting
                // survives the exec.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                // The lesson may have died before the prctl took effect:
                // then no signal will ever come. Do not start.
                if getppid() != lesson {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                // Do not pass on signals the lesson holds back right now.
                sigprocmask(SigmaskHow::SIG_SETMASK, Some(&unblocked), None)
                    .map_err(io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "spawn {name} ({}): {e}",
                    cmd.get_program().to_string_lossy()
                ),
            )
        })?;
        Ok(Program {
            name: format!("{name} ({})", child.id()),
            child,
        })
    }

    /// The program's PID, as a plain number for `/proc` paths.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The name given to [`Program::start`], with the PID: `reader (4243)`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `std::process::Child` inside, for its `stdin`/`stdout` pipes.
    /// Do not wait for it there: the `Program` must know when it is reaped.
    pub fn child_mut(&mut self) -> &mut std::process::Child {
        &mut self.child
    }

    /// Reap the program if it has ended; `None` if it still runs.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        try_wait(&mut self.child, &self.name)
    }

    /// Wait at most `timeout` for the program to end and reap it; `None` if
    /// it still runs. Sleeps in `poll` on a pidfd, which becomes readable
    /// when the program ends: no busy loop.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.try_wait()? {
            return Ok(Some(s));
        }
        // Not reaped yet, so the PID is still this program's.
        let pid = self.pid();
        let (child, name) = (&mut self.child, &self.name);
        crate::fork::wait_pidfd(pid, name, timeout, || try_wait(child, name))
    }

    /// Wait at most `timeout` for the program to exit 0. An error names the
    /// program if it failed ("writer 2 (4245) exited with 1") or still runs.
    pub fn expect_success(&mut self, timeout: Duration) -> io::Result<()> {
        match self.wait_timeout(timeout)? {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(io::Error::other(format!("{} {}", self.name, describe(s)))),
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} still running after {timeout:?}", self.name),
            )),
        }
    }
}

impl Drop for Program {
    /// Kill and reap the program if it still runs. (In a forked copy of the
    /// lesson, `waitpid` fails with `ECHILD`: the copy touches nothing.)
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `waitpid(pid, WNOHANG)`, through std (which keeps the status once
/// reaped); errors name the program.
fn try_wait(child: &mut std::process::Child, name: &str) -> io::Result<Option<ExitStatus>> {
    child
        .try_wait()
        .map_err(|e| io::Error::new(e.kind(), format!("waitpid({name}): {e}")))
}

/// An exit status in the words of [`crate::describe`]: "exited with 1",
/// "killed by SIGKILL".
fn describe(status: ExitStatus) -> String {
    // The pid in a WaitStatus is not shown by `describe`.
    match WaitStatus::from_raw(Pid::from_raw(0), status.into_raw()) {
        Ok(s) => crate::describe(s),
        Err(_) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs;
    use crate::signals::Hold;

    #[test]
    fn dropping_a_running_program_kills_and_reaps_it() {
        // Started while SIGTERM and company are held in this thread.
        let held = Hold::new().expect("hold");
        let mut p = Program::start("sleeper", Command::new("/bin/sleep").arg("30")).expect("start");
        drop(held);
        let pid = p.pid();
        assert_eq!(p.name(), format!("sleeper ({pid})"));
        let start_time = procfs::stat(pid)
            .expect("read stat")
            .expect("it runs")
            .start_time;
        // The mask was cleared before the exec: nothing held is passed on.
        assert_eq!(
            procfs::status_field(pid, "SigBlk").expect("SigBlk"),
            "0000000000000000"
        );
        assert_eq!(p.try_wait().expect("try_wait"), None);
        // Asleep in the kernel: wchan names a function, or is hidden.
        procfs::wait_for(pid, Duration::from_secs(10), |s| {
            s.is_some_and(|s| s.state == 'S')
        })
        .expect("read stat")
        .expect("sleep 30 goes to sleep");
        let w = procfs::wchan(pid).expect("wchan");
        assert!(
            w.as_ref().is_none_or(|w| !w.is_empty() && w != "0"),
            "{w:?}"
        );
        assert_eq!(
            p.wait_timeout(Duration::from_millis(20))
                .expect("wait_timeout"),
            None,
            "sleep 30 still runs"
        );
        drop(p);
        // Reaped, so gone from /proc (or the PID already belongs to a
        // process with another start time).
        let now = procfs::stat(pid).expect("read stat");
        assert!(
            now.as_ref().is_none_or(|s| s.start_time != start_time),
            "{pid} left behind: {now:?}"
        );
    }

    #[test]
    fn expect_success_waits_and_names_the_program() {
        let mut ok = Program::start("truth", &mut Command::new("true")).expect("start true");
        ok.expect_success(Duration::from_secs(10))
            .expect("true exits 0");

        let mut bad = Program::start("liar", &mut Command::new("false")).expect("start false");
        let e = bad
            .expect_success(Duration::from_secs(10))
            .expect_err("false exits 1");
        assert_eq!(e.to_string(), format!("liar ({}) exited with 1", bad.pid()));

        let mut slow =
            Program::start("sleeper", Command::new("/bin/sleep").arg("30")).expect("start");
        let e = slow
            .expect_success(Duration::from_millis(20))
            .expect_err("still running");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e
            .to_string()
            .starts_with(&format!("sleeper ({}) still running", slow.pid())));
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let e = Program::start("ghost", &mut Command::new("/nonexistent/ghost"))
            .expect_err("no such file");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string()
                .starts_with("spawn ghost (/nonexistent/ghost): "),
            "{e}"
        );
    }
}
