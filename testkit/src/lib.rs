//! Helpers for tests that run a lesson binary as a subprocess and look at
//! the system from outside: its output, its exit status, and what it left
//! behind. Tests never fork inside the (multithreaded) test harness; they
//! start the lesson with `Command`, in a process group of its own, so every
//! process it starts can be found by group ID afterwards.
//!
//! Two ways to run a lesson:
//! - [`run`]: start it, wait for the end, look at the whole [`Outcome`].
//! - [`Lesson::start`]: start it in a session of its own and act while it
//!   runs: wait for a line, signal it or its group, wait for the end within
//!   a limit, check that no process of its session is left.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::procfs;

/// How long a lesson may run in a test before it counts as hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(120);

/// How long leftovers get to disappear (init may reap adopted orphans late).
pub const SETTLE: Duration = Duration::from_secs(5);

/// A finished run of a lesson.
#[derive(Debug)]
pub struct Outcome {
    pub pid: i32,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panic with the whole output unless the lesson exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "lesson failed: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The stdout lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<&str> {
        self.stdout.lines().filter(|l| l.contains(needle)).collect()
    }

    /// The one stdout line containing `needle`; panics if there is not one.
    pub fn line_with(&self, needle: &str) -> &str {
        let found = self.lines_with(needle);
        assert_eq!(
            found.len(),
            1,
            "expected one line with {needle:?} in:\n{}",
            self.stdout
        );
        found[0]
    }

    /// The signal that killed the lesson, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }
}

/// The path of example `name` of the lesson whose binary is `bin` (from
/// `env!("CARGO_BIN_EXE_<lesson>")`): cargo gives examples no such variable,
/// and puts them in `examples/` beside the binaries. `cargo test` builds
/// them before it runs the tests; `cargo test --test x` does not.
pub fn example(bin: &str, name: &str) -> String {
    let path = Path::new(bin)
        .parent()
        .expect("the binary's folder")
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo test -p <lesson>` or `cargo test --workspace`, which build the examples",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// The `[role pid]` prefix of a line: `Some(("child", 4243))`.
pub fn speaker(line: &str) -> Option<(&str, i32)> {
    let inner = line.strip_prefix('[')?.split(']').next()?;
    let (role, pid) = inner.rsplit_once(' ')?;
    Some((role, pid.parse().ok()?))
}

/// The whole numbers in `line`, in order.
pub fn numbers(line: &str) -> Vec<i64> {
    line.split(|c: char| !c.is_ascii_digit() && c != '-')
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Run `bin args...` with `LESSON_PACE=0`, in its own process group, and
/// wait for it (at most [`HANG_LIMIT`]; then the group is killed and the
/// test fails).
pub fn run(bin: impl AsRef<OsStr>, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("LESSON_PACE", "0");
    run_command(cmd)
}

/// Run a prepared command the way [`run`] does.
pub fn run_command(mut cmd: Command) -> Outcome {
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start the lesson");
    let pid = child.id() as i32;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + HANG_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waitpid") {
            break s;
        }
        if Instant::now() > deadline {
            // SAFETY: kill is a plain system call; -pid names our process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
            panic!("lesson {pid} still running after {HANG_LIMIT:?}: killed its process group");
        }
        thread::sleep(Duration::from_millis(5));
    };
    // The pipes close once every process of the lesson has closed them; a
    // stray child holding them would keep the readers waiting, so do not
    // wait for the readers forever.
    let stdout = join_within(out_reader, SETTLE);
    let stderr = join_within(err_reader, SETTLE);
    Outcome {
        pid,
        status,
        stdout,
        stderr,
    }
}

fn join_within(h: thread::JoinHandle<String>, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    while !h.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    if h.is_finished() {
        h.join().unwrap_or_default()
    } else {
        "<output pipe still held open by a leftover process>".to_string()
    }
}

/// Whether `/dev/mqueue` can be looked at. Where it is not mounted, a test
/// that needs it fails under `CI=true` and is skipped (with a word) elsewhere.
pub fn mqueue_visible() -> bool {
    if Path::new("/dev/mqueue").is_dir() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("/dev/mqueue is not mounted: mount -t mqueue none /dev/mqueue");
    }
    eprintln!("SKIPPED: /dev/mqueue not mounted, message queues not checked");
    false
}

/// What the run of `topic` started as process `pid` left behind: processes
/// of its group (running or unreaped), and entries named `<topic>-<pid>-*`
/// in `/dev/shm`, `/dev/mqueue` and the temporary directory.
pub fn leftovers(topic: &str, pid: i32) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(procs) = procfs::processes(|s| s.pgrp == pid) {
        for s in procs {
            left.push(format!(
                "process {} ({}) in state {}",
                s.pid, s.comm, s.state
            ));
        }
    }
    let prefix = format!("{topic}-{pid}-");
    let mut dirs = vec![Path::new("/dev/shm").to_path_buf(), std::env::temp_dir()];
    if mqueue_visible() {
        dirs.push(Path::new("/dev/mqueue").to_path_buf());
    }
    for dir in dirs {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    left.push(format!("{}", e.path().display()));
                }
            }
        }
    }
    left
}

/// Panic unless, within [`SETTLE`], the run left nothing behind.
pub fn assert_nothing_left(topic: &str, pid: i32) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = leftovers(topic, pid);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("{topic} (pid {pid}) left behind:\n  {}", left.join("\n  "));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The usual checks on any lesson binary: `--help` exits 0 and shows the
/// pace option; an unknown option and a bad pace are rejected
/// ([`assert_rejected`]).
pub fn assert_help_and_bad_options(bin: &str) {
    let help = run(bin, &["--help"]);
    assert_eq!(help.code(), Some(0), "--help: {help:?}");
    assert!(
        help.stdout.contains("--pace"),
        "--help shows --pace: {}",
        help.stdout
    );
    assert_rejected(bin, &["--no-such-option"], "--no-such-option");
    assert_values_rejected(bin, "--pace", &["fast", "-1", "1e9"]);
}

/// Panic unless `bin args...` (run as [`run`] does) is refused the way a bad
/// option must be: exit status 2, a short message on stderr (at most three
/// non-empty lines, clap's shape: the error, a usage line, a pointer to
/// `--help`) whose first line names `option`, nothing on stdout (nothing
/// started), no panic, and nothing left behind ([`assert_nothing_left`],
/// with the binary's file name as the topic: a lesson's binary is named
/// after it). Returns the [`Outcome`] for further checks.
///
/// ```no_run
/// use testkit::assert_rejected;
/// # const BIN: &str = "lesson";
/// let o = assert_rejected(BIN, &["--quick=yes"], "--quick");
/// assert!(o.stderr.contains("yes"));
/// ```
pub fn assert_rejected(bin: &str, args: &[&str], option: &str) -> Outcome {
    let o = run(bin, args);
    let case = format!("{bin} {}", args.join(" "));
    assert_eq!(o.code(), Some(2), "{case}: should exit 2: {o:?}");
    assert!(
        !o.stderr.contains("panicked"),
        "{case}: panicked: {:?}",
        o.stderr
    );
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        (1..=3).contains(&lines.len()),
        "{case}: one to three stderr lines: {:?}",
        o.stderr
    );
    assert!(
        lines[0].contains(option),
        "{case}: the first stderr line names {option}: {:?}",
        o.stderr
    );
    assert!(
        o.stdout.is_empty(),
        "{case}: nothing on stdout: {:?}",
        o.stdout
    );
    let topic = Path::new(bin)
        .file_name()
        .map_or_else(|| bin.into(), |n| n.to_string_lossy());
    assert_nothing_left(&topic, o.pid);
    o
}

/// [`assert_rejected`] for each of `values`, run as `bin option value`:
/// one line per option for the usual out-of-range and malformed values.
///
/// ```no_run
/// use testkit::assert_values_rejected;
/// # const BIN: &str = "lesson";
/// assert_values_rejected(BIN, "--workers", &["0", "17", "many"]);
/// ```
pub fn assert_values_rejected(bin: &str, option: &str, values: &[&str]) {
    assert!(!values.is_empty(), "{option}: no value to check");
    for value in values {
        assert_rejected(bin, &[option, value], option);
    }
}

/// How long a test waits for a line it expects from a running [`Lesson`]
/// (the machine may be loaded: generous).
pub const LINE_LIMIT: Duration = Duration::from_secs(60);

/// A lesson running while a test watches it: started by [`Lesson::start`]
/// in a session of its own, its stdout read line by line as it comes, its
/// stderr collected.
///
/// The lesson's PID is also its session ID and its process group ID. Every
/// process it starts stays in that session (unless it calls `setsid`
/// itself), even one that makes a process group of its own or is adopted
/// by init after its parent died, so
/// [`Lesson::session`] finds them all and [`Lesson::assert_all_gone`] can
/// say that none is left; [`leftovers`] and [`assert_nothing_left`] (which
/// look by process group) apply as well.
///
/// The stdout lines a test has read (with [`Lesson::next_line`],
/// [`Lesson::wait_for_line`], ...) are kept, in order, for its assertions
/// and its failure messages: [`Lesson::lines`], [`Lesson::stdout`].
///
/// Dropping the handle of a lesson that was not waited for, or dropping it
/// while the test panics, kills whatever is left of the session (and reaps
/// the lesson): a failing test does not leave processes behind.
///
/// ```no_run
/// use testkit::{Lesson, LINE_LIMIT, SETTLE};
/// # const BIN: &str = "lesson";
/// let mut lesson = Lesson::start(BIN, &["--workers", "2"], "1");
/// lesson.expect_line("pausing", LINE_LIMIT);
/// lesson.signal_group(libc::SIGINT); // Ctrl-C in a terminal
/// let status = lesson.wait_within(SETTLE);
/// assert_eq!(status.code(), Some(130), "{}", lesson.stdout());
/// lesson.assert_all_gone("lesson", SETTLE);
/// ```
pub struct Lesson {
    child: Child,
    pid: i32,
    lines: Receiver<String>,
    seen: Vec<String>,
    err_reader: Option<thread::JoinHandle<String>>,
    stderr: Option<String>,
    status: Option<ExitStatus>,
}

impl Lesson {
    /// Start `bin args...` with `LESSON_PACE=pace` (a `--pace` in `args`
    /// wins over it), in a new session, stdin from `/dev/null`.
    pub fn start(bin: impl AsRef<OsStr>, args: &[&str], pace: &str) -> Lesson {
        let mut cmd = Command::new(bin);
        cmd.args(args).env("LESSON_PACE", pace);
        Lesson::start_command(cmd)
    }

    /// Start a prepared command (its arguments, environment and directory
    /// set by the caller) the way [`Lesson::start`] does. Its stdin, stdout
    /// and stderr are replaced.
    pub fn start_command(mut cmd: Command) -> Lesson {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setsid, signal, sigemptyset and sigprocmask are
        // async-signal-safe, as the child of a multithreaded process (the
        // test harness) requires between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // A session of its own, and with it a process group whose ID
                // is the lesson's PID.
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                // A test run started in the background inherits SIGINT
                // ignored (and exec keeps it so): give the lesson the
                // defaults a terminal would, or a Ctrl-C could not reach it.
                // Likewise SIGTERM, and no blocked signal.
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start the lesson");
        let pid = child.id() as i32;
        let out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err_reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Lesson {
            child,
            pid,
            lines,
            seen: Vec::new(),
            err_reader: Some(err_reader),
            stderr: None,
            status: None,
        }
    }

    /// The lesson's PID: its main process, its process group, its session.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The next stdout line, waiting at most `timeout`. `None` if none came
    /// in time, or stdout is closed (every process of the lesson closed it).
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Read stdout until a line satisfies `wanted` and return that line;
    /// `None` if none came within `timeout` (or stdout closed first). The
    /// lines before it are kept too ([`Lesson::lines`]).
    pub fn wait_for_line(
        &mut self,
        mut wanted: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.next_line(deadline.saturating_duration_since(Instant::now()))?;
            if wanted(&line) {
                return Some(line);
            }
            // A lesson that prints without pause must not keep us here.
            if Instant::now() > deadline {
                return None;
            }
        }
    }

    /// The first (further) stdout line containing `needle`; panics with
    /// the output so far if none comes within `timeout`.
    pub fn expect_line(&mut self, needle: &str, timeout: Duration) -> String {
        match self.wait_for_line(|l| l.contains(needle), timeout) {
            Some(line) => line,
            None => panic!(
                "lesson {} printed no line with {needle:?} within {timeout:?}; its stdout:\n{}",
                self.pid,
                self.stdout()
            ),
        }
    }

    /// Wait until the lesson has printed `n` more lines (it is then busy
    /// with its demonstration), at most [`LINE_LIMIT`] in all; false if it
    /// ended or went quiet first.
    pub fn after_lines(&mut self, n: usize) -> bool {
        let deadline = Instant::now() + LINE_LIMIT;
        (0..n).all(|_| {
            self.next_line(deadline.saturating_duration_since(Instant::now()))
                .is_some()
        })
    }

    /// Read the rest of stdout: until every process of the lesson has
    /// closed it, or `limit` has passed. Returns every line read so far.
    pub fn read_to_end(&mut self, limit: Duration) -> &[String] {
        let deadline = Instant::now() + limit;
        while Instant::now() <= deadline
            && self
                .next_line(deadline.saturating_duration_since(Instant::now()))
                .is_some()
        {}
        &self.seen
    }

    /// The stdout lines read so far, in order.
    pub fn lines(&self) -> &[String] {
        &self.seen
    }

    /// The stdout read so far, its lines joined by newlines (no newline at
    /// the end): for assertions on the whole text and failure messages.
    pub fn stdout(&self) -> String {
        self.seen.join("\n")
    }

    /// What the lesson wrote to stderr, once every process holding stderr
    /// has closed it (waiting at most `limit`, then a note saying a leftover
    /// process still holds it). Call it after the lesson ended.
    pub fn stderr(&mut self, limit: Duration) -> String {
        if let Some(reader) = self.err_reader.take() {
            let deadline = Instant::now() + limit;
            while !reader.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if reader.is_finished() {
                self.stderr = Some(reader.join().unwrap_or_default());
            } else {
                self.err_reader = Some(reader);
            }
        }
        self.stderr
            .clone()
            .unwrap_or_else(|| "<stderr still held open by a leftover process>".to_string())
    }

    /// Send `sig` to the lesson's main process alone.
    pub fn signal(&self, sig: i32) {
        self.send(self.pid, sig);
    }

    /// Send `sig` to the lesson's whole process group, as a terminal sends
    /// Ctrl-C (SIGINT) to the foreground job.
    pub fn signal_group(&self, sig: i32) {
        self.send(-self.pid, sig);
    }

    fn send(&self, target: i32, sig: i32) {
        // Once reaped, the PID is free for the system to reuse.
        assert!(
            self.status.is_none(),
            "lesson {} was already waited for: not signalling a PID that may be reused",
            self.pid
        );
        // SAFETY: kill is a plain system call; `target` is the lesson this
        // test started (or its group), not reaped yet, so the PID is its.
        let rc = unsafe { libc::kill(target, sig) };
        assert_eq!(
            rc,
            0,
            "kill({target}, {sig}): {}",
            io::Error::last_os_error()
        );
    }

    /// The exit status of the lesson's main process if it has ended (it
    /// is then reaped), `None` while it runs. Does not wait.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid");
        }
        self.status
    }

    /// Wait for the lesson's main process to end, at most `limit`; past
    /// it, kill the whole session and panic with the output so far.
    pub fn wait_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill_session();
                self.status = self.child.wait().ok();
                while let Ok(line) = self.lines.try_recv() {
                    self.seen.push(line);
                }
                panic!(
                    "lesson {} still running after {limit:?}: killed its session; its stdout:\n{}",
                    self.pid,
                    self.stdout()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The processes of the lesson's session, as `/proc` lists them now
    /// (the main process too, until it is reaped).
    pub fn session(&self) -> Vec<procfs::Stat> {
        procfs::processes(|s| s.session == self.pid).expect("read /proc")
    }

    /// SIGKILL every process left in the lesson's session, so that a
    /// failing test cleans up after itself.
    pub fn kill_session(&self) {
        // Called on the way out of a failing test too: never panic here.
        for s in procfs::processes(|s| s.session == self.pid).unwrap_or_default() {
            // SAFETY: a plain system call on a process of the session this
            // test started.
            unsafe { libc::kill(s.pid, libc::SIGKILL) };
        }
    }

    /// Panic unless, within `limit`, no process of the lesson's session
    /// remains, and then (within [`SETTLE`]) no named object of the run
    /// ([`assert_nothing_left`] for `topic`). Call it once the lesson was
    /// waited for ([`Lesson::wait_within`]): until then its main process
    /// counts as left.
    pub fn assert_all_gone(&self, topic: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let procs = self.session();
            if procs.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                self.kill_session();
                panic!("{topic}: processes left {limit:?} after the lesson ended: {procs:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        assert_nothing_left(topic, self.pid);
    }
}

impl Drop for Lesson {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill_session();
            let _ = self.child.wait();
        } else if thread::panicking() {
            self.kill_session();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The [`Lesson`] handle on small `sh` scripts: what it keeps, and that
    //! its checks fail when they should.

    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    const TOPIC: &str = "testing-selftest";

    fn sh(script: &str) -> Lesson {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        Lesson::start_command(cmd)
    }

    /// Whether `assert_rejected` on `sh -c script` passes.
    fn rejected_by_sh(script: &str, option: &str) -> bool {
        catch_unwind(|| {
            assert_rejected("sh", &["-c", script], option);
        })
        .is_ok()
    }

    #[test]
    fn assert_rejected_passes_only_a_proper_refusal() {
        let refusal = "echo 'lesson: --workers: expected 1-16, got \"0\"' >&2; exit 2";
        assert!(rejected_by_sh(refusal, "--workers"), "a proper refusal");
        // A command that does not reject fails the check, and so does every
        // way of half-rejecting.
        assert!(!rejected_by_sh("exit 0", "--workers"), "exit 0 accepted");
        assert!(
            catch_unwind(|| assert_rejected("true", &[], "--workers")).is_err(),
            "`true` accepted"
        );
        assert!(!rejected_by_sh(refusal, "--rounds"), "other option named");
        assert!(
            !rejected_by_sh("echo '--workers bad' >&2; exit 1", "--workers"),
            "exit 1 accepted"
        );
        assert!(
            !rejected_by_sh(&format!("echo started; {refusal}"), "--workers"),
            "stdout accepted"
        );
        assert!(
            !rejected_by_sh(&format!("echo more >&2; {refusal}"), "--workers"),
            "two stderr lines accepted"
        );
        assert!(
            !rejected_by_sh(
                "echo \"thread 'main' panicked at --workers\" >&2; exit 2",
                "--workers"
            ),
            "panic accepted"
        );
        assert!(
            catch_unwind(|| assert_values_rejected("true", "--workers", &["0"])).is_err(),
            "assert_values_rejected passes `true`"
        );
    }

    #[test]
    fn lines_before_the_wanted_one_are_kept_and_the_group_is_signalled() {
        let mut l = sh("echo one; echo two; echo ready; exec sleep 30");
        let ready = l.wait_for_line(|x| x == "ready", LINE_LIMIT);
        assert_eq!(ready.as_deref(), Some("ready"));
        assert_eq!(l.lines(), ["one", "two", "ready"]);
        assert_eq!(l.stdout(), "one\ntwo\nready");
        assert_eq!(l.session().len(), 1, "only the main process");
        l.signal_group(libc::SIGTERM);
        assert_eq!(l.wait_within(SETTLE).signal(), Some(libc::SIGTERM));
        l.assert_all_gone(TOPIC, SETTLE);
        // Reaped: its PID is no longer ours to signal.
        assert!(catch_unwind(AssertUnwindSafe(|| l.signal(libc::SIGTERM))).is_err());
    }

    #[test]
    fn the_end_of_stdout_ends_a_wait_and_stderr_is_collected() {
        let mut l = sh("echo a; echo oops >&2; exit 3");
        assert_eq!(l.wait_for_line(|x| x == "b", LINE_LIMIT), None);
        assert_eq!(l.lines(), ["a"]);
        assert_eq!(l.wait_within(SETTLE).code(), Some(3));
        assert_eq!(l.stderr(SETTLE), "oops\n");
        assert!(!l.after_lines(1), "nothing more to read");
        l.assert_all_gone(TOPIC, SETTLE);
    }

    #[test]
    fn a_lesson_still_running_at_the_limit_is_killed_and_the_wait_fails() {
        let mut l = sh("echo started; exec sleep 30");
        assert!(l.after_lines(1));
        let waited = catch_unwind(AssertUnwindSafe(|| {
            l.wait_within(Duration::from_millis(100))
        }));
        assert!(waited.is_err(), "the wait must fail");
        assert_eq!(l.try_wait().and_then(|s| s.signal()), Some(libc::SIGKILL));
        assert!(l.session().is_empty());
    }

    #[test]
    fn a_process_left_in_the_session_fails_the_check_and_is_killed() {
        let mut l = sh("sleep 30 >/dev/null 2>&1 & echo $!");
        let stray: i32 = l
            .next_line(LINE_LIMIT)
            .and_then(|p| p.parse().ok())
            .expect("the stray's pid");
        assert!(l.wait_within(SETTLE).success());
        let checked = catch_unwind(AssertUnwindSafe(|| {
            l.assert_all_gone(TOPIC, Duration::from_millis(100))
        }));
        assert!(checked.is_err(), "sleep {stray} was left in the session");
        let deadline = Instant::now() + SETTLE;
        while !procfs::is_dead(stray, None) {
            assert!(Instant::now() < deadline, "sleep {stray} was not killed");
            thread::sleep(Duration::from_millis(10));
        }
    }
}
