//! Helpers for tests that run a lesson binary as a subprocess and look at
//! the system from outside: its output, its exit status, and what it left
//! behind. Tests never fork inside the (multithreaded) test harness; they
//! start the lesson with `Command`, in a process group of its own, so every
//! process it starts can be found by group ID afterwards.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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
    if let Ok(procs) = crate::procfs::processes(|s| s.pgrp == pid) {
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
/// pace option; an unknown option and a bad pace exit 2 with one line.
pub fn assert_help_and_bad_options(bin: &str) {
    let help = run(bin, &["--help"]);
    assert_eq!(help.code(), Some(0), "--help: {help:?}");
    assert!(
        help.stdout.contains("--pace"),
        "--help shows --pace: {}",
        help.stdout
    );
    for bad in [
        &["--no-such-option"][..],
        &["--pace", "fast"],
        &["--pace", "-1"],
        &["--pace", "1e9"],
    ] {
        let o = run(bin, bad);
        assert_eq!(o.code(), Some(2), "{bad:?} should exit 2: {o:?}");
        assert_eq!(
            o.stderr.lines().count(),
            1,
            "{bad:?}: one line: {:?}",
            o.stderr
        );
        assert!(
            o.stdout.is_empty(),
            "{bad:?}: nothing started: {:?}",
            o.stdout
        );
    }
}
