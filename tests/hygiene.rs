//! Hygiene under faults, for every lesson, looking from outside: Ctrl-C
//! (SIGINT) and SIGTERM to the whole process group, early and in the
//! middle of a run (during its longest pause); SIGKILL to the main process alone; two copies at once;
//! every named object created exclusively and privately; each crate copied
//! out on its own.
//!
//! Each lesson runs in a session of its own (`setsid`), so every process it
//! started, even one adopted by init after its parent died, can be found by
//! session ID afterwards.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use course_tests::{examples, lesson_bin, per_lesson, quick_args, repo_root, LESSONS};
use testkit::{assert_nothing_left, leftovers, run, run_command, Lesson};

/// How long everything gets to end after a signal: a limit, not an
/// expectation, so generous. Some lessons' own stop limits are longer than
/// a few seconds (the supervisor gives each worker its step plus 2 s of
/// grace, and `/proc` 10 s to agree), and the machine may be busy.
const WITHIN: Duration = Duration::from_secs(30);

/// Start a lesson at `pace` in a new session, its stdout read line by line.
fn start(name: &str, pace: &str) -> Lesson {
    Lesson::start(lesson_bin(name), quick_args(name), pace)
}

/// A point in a lesson's output to signal it at: after its `count`-th
/// line, or after the `nth` line of `shape` if that comes first.
#[derive(Debug, Clone)]
struct Pause {
    count: usize,
    shape: Option<(String, usize)>,
}

impl Pause {
    fn first_line() -> Pause {
        Pause {
            count: 1,
            shape: None,
        }
    }
}

/// A line with every number replaced by `#`: PIDs, counts and times change
/// from run to run, the words do not.
fn shape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}

/// Where a lesson pauses longest: the line it prints before its longest
/// quiet stretch between two lines, measured on a run at pace 1, the pace
/// the signal tests run at. Signalling right after that line lands in the
/// middle of the lesson's work, not after its end. (A run at a smaller pace
/// is quicker but misleads: a wait the pace does not scale, such as a final
/// 0.2 s receive timeout, then stands out as the longest and is followed by
/// the lesson's exit.) Cached per lesson.
///
/// The line is found again by its shape, not only by its number: another
/// run can print a line more or fewer (a retry, a check that found a worker
/// dead meanwhile) or interleave its processes' lines otherwise, so the
/// same count could land later, up to after the lesson's last line, where
/// it may already have exited. Whichever of the two comes first.
fn pause_point(name: &str) -> Pause {
    static CACHE: Mutex<Vec<(String, Pause)>> = Mutex::new(Vec::new());
    if let Some((_, p)) = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(n, _)| n == name)
    {
        return p.clone();
    }
    let mut r = start(name, "1");
    let mut times = Vec::new();
    while r.next_line(Duration::from_secs(120)).is_some() {
        times.push(Instant::now());
    }
    let status = r.wait_within(WITHIN);
    assert!(status.success(), "{name} at pace 1: {status:?}");
    r.assert_all_gone(name, WITHIN);
    // Between two lines only: after the last one the lesson is ending.
    let longest = times
        .windows(2)
        .enumerate()
        .max_by_key(|(_, w)| w[1].duration_since(w[0]))
        .map_or(0, |(i, _)| i);
    let lines = r.lines();
    let at = shape(lines.get(longest).expect("the lesson printed something"));
    let nth = lines[..=longest].iter().filter(|l| shape(l) == at).count();
    let p = Pause {
        count: longest + 1,
        shape: Some((at, nth)),
    };
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((name.to_string(), p.clone()));
    p
}

/// Read `r`'s output up to `p`; `false` if it ended before.
fn reach(r: &mut Lesson, p: &Pause) -> bool {
    let deadline = Instant::now() + testkit::LINE_LIMIT;
    let (mut count, mut nth) = (0, 0);
    while let Some(line) = r.next_line(deadline.saturating_duration_since(Instant::now())) {
        count += 1;
        if let Some((at, want)) = &p.shape {
            if shape(&line) == *at {
                nth += 1;
                if nth == *want {
                    return true;
                }
            }
        }
        if count == p.count {
            return true;
        }
    }
    false
}

fn interrupted_by(name: &str, signal: i32, at: Pause) {
    let mut r = start(name, "1");
    if !reach(&mut r, &at) {
        let s = r.wait_within(WITHIN);
        panic!("{name} ended ({s:?}) before {at:?}");
    }
    r.signal_group(signal);
    let status = r.wait_within(WITHIN);
    let interrupted = status.code() == Some(128 + signal) || status.signal() == Some(signal);
    assert!(
        interrupted,
        "{name}: exit status {status:?} does not say it was interrupted by signal {signal} (sent after {at:?})"
    );
    r.assert_all_gone(name, WITHIN);
}

fn sigint_early(name: &str) {
    interrupted_by(name, libc::SIGINT, Pause::first_line());
}

fn sigint_middle(name: &str) {
    interrupted_by(name, libc::SIGINT, pause_point(name));
}

fn sigterm_middle(name: &str) {
    interrupted_by(name, libc::SIGTERM, pause_point(name));
}

fn parent_killed(name: &str) {
    let middle = pause_point(name);
    let mut r = start(name, "1");
    assert!(reach(&mut r, &middle), "{name} ended before its middle");
    r.signal(libc::SIGKILL);
    let status = r.wait_within(WITHIN);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{name}: exit status {status:?}, not SIGKILL (sent after {middle:?})"
    );
    // The orphan lesson's orphan outlives its parent by design, for a
    // bounded time.
    let limit = if name == "orphan" || name.starts_with("orphan_") {
        Duration::from_secs(30)
    } else {
        WITHIN
    };
    r.assert_all_gone(name, limit);
}

fn twins(name: &str) {
    let bin = lesson_bin(name);
    let args = quick_args(name);
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| run(&bin, args));
        let b = s.spawn(|| run(&bin, args));
        (a.join().expect("first"), b.join().expect("second"))
    });
    a.assert_success();
    b.assert_success();
    assert_nothing_left(name, a.pid);
    assert_nothing_left(name, b.pid);
}

fn have_strace() -> bool {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "strace is required under CI"
        );
        eprintln!("SKIPPED: strace is not installed");
    }
    ok
}

/// The quoted path in a traced call, such as `openat(AT_FDCWD, "/dev/shm/x", ...)`.
fn quoted(line: &str) -> Option<&str> {
    let start = line.find('"')? + 1;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// Check every object-creating call in an strace log; returns what is wrong.
fn private_object_faults(trace: &str, tmp: &str) -> Vec<String> {
    let mut faults = Vec::new();
    let mut private_dirs = Vec::new();
    for line in trace.lines() {
        let creates = line.contains("O_CREAT");
        if line.contains("mkdir") && line.contains(tmp) && !line.contains("= -1") {
            if line.contains(", 0700)") {
                private_dirs.push(quoted(line).unwrap_or_default().to_string());
            } else {
                faults.push(format!("directory not 0700: {line}"));
            }
        } else if (line.contains("openat(") && line.contains("\"/dev/shm/") && creates)
            || (line.contains("mq_open(") && creates)
        {
            if !line.contains("O_EXCL") || !line.contains(", 0600") {
                faults.push(format!("not O_EXCL with mode 0600: {line}"));
            }
        } else if line.contains("bind(") && line.contains("sun_path=")
            || line.contains("mknodat(") && line.contains("S_IFIFO")
        {
            let path = line
                .split("sun_path=")
                .nth(1)
                .and_then(quoted)
                .or_else(|| quoted(line))
                .unwrap_or_default();
            let dir = Path::new(path)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !private_dirs.contains(&dir) {
                faults.push(format!(
                    "socket or FIFO outside a fresh 0700 directory: {line}"
                ));
            }
            if line.contains("mknodat(") && !line.contains("0600") {
                faults.push(format!("FIFO not 0600: {line}"));
            }
        }
    }
    faults
}

fn private_objects(name: &str) {
    if !have_strace() {
        return;
    }
    let log = std::env::temp_dir().join(format!("hygiene-strace-{name}-{}", std::process::id()));
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-s",
        "256",
        "-e",
        "trace=openat,mq_open,bind,mkdir,mkdirat,mknodat",
        "-o",
    ])
    .arg(&log)
    .arg(lesson_bin(name))
    .args(quick_args(name))
    .env("LESSON_PACE", "0");
    let o = run_command(cmd);
    let trace = std::fs::read_to_string(&log).expect("strace log");
    let _ = std::fs::remove_file(&log);
    // Under ptrace some /proc states differ (a stopped tracee shows `t`),
    // so only the calls are judged here, not the lesson's own verdict.
    assert!(o.status.code().is_some(), "{name} under strace: {o:?}");
    let tmp = std::env::temp_dir().to_string_lossy().into_owned();
    let faults = private_object_faults(&trace, &tmp);
    assert!(faults.is_empty(), "{name}:\n{}", faults.join("\n"));
    assert!(
        leftovers(name, o.pid)
            .iter()
            .all(|l| l.starts_with("process")),
        "{name} left objects"
    );
}

per_lesson!(sigint_early: basic_process, multiple_processes, zombie, orphan, pipe_communication, queue_communication, shared_value, shared_array, manager, process_lock, process_semaphore, process_barrier, deadlock, process_pool, performance, signals, named_pipe, exec, supervisor, prefork_server);
per_lesson!(sigint_middle: basic_process, multiple_processes, zombie, orphan, pipe_communication, queue_communication, shared_value, shared_array, manager, process_lock, process_semaphore, process_barrier, deadlock, process_pool, performance, signals, named_pipe, exec, supervisor, prefork_server);
per_lesson!(sigterm_middle: basic_process, multiple_processes, zombie, orphan, pipe_communication, queue_communication, shared_value, shared_array, manager, process_lock, process_semaphore, process_barrier, deadlock, process_pool, performance, signals, named_pipe, exec, supervisor, prefork_server);
per_lesson!(parent_killed: basic_process, multiple_processes, zombie, orphan, pipe_communication, queue_communication, shared_value, shared_array, manager, process_lock, process_semaphore, process_barrier, deadlock, process_pool, performance, signals, named_pipe, exec, supervisor, prefork_server);
per_lesson!(twins: basic_process, multiple_processes, zombie, orphan, pipe_communication, queue_communication, shared_value, shared_array, manager, process_lock, process_semaphore, process_barrier, deadlock, process_pool, performance, signals, named_pipe, exec, supervisor, prefork_server);
per_lesson!(private_objects: basic_process, multiple_processes, zombie, orphan, pipe_communication, queue_communication, shared_value, shared_array, manager, process_lock, process_semaphore, process_barrier, deadlock, process_pool, performance, signals, named_pipe, exec, supervisor, prefork_server);

#[test]
fn the_private_object_check_can_fail() {
    let bad = "12 openat(AT_FDCWD, \"/dev/shm/x\", O_RDWR|O_CREAT, 0666) = 3\n\
               12 mq_open(\"q\", O_RDWR|O_CREAT|O_EXCL, 0644, NULL) = 3\n\
               12 bind(3, {sa_family=AF_UNIX, sun_path=\"/tmp/sock\"}, 110) = 0\n\
               12 mkdir(\"/tmp/d\", 0755) = 0\n";
    assert_eq!(private_object_faults(bad, "/tmp").len(), 4);
    let good = "12 mkdir(\"/tmp/m-1-ab\", 0700) = 0\n\
                12 bind(3, {sa_family=AF_UNIX, sun_path=\"/tmp/m-1-ab/sock\"}, 110) = 0\n\
                12 openat(AT_FDCWD, \"/dev/shm/x\", O_RDWR|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, 0600) = 3\n\
                12 mq_open(\"q\", O_RDWR|O_CREAT|O_EXCL, 0600, {mq_flags=0}) = 3\n";
    assert_eq!(private_object_faults(good, "/tmp"), Vec::<String>::new());
}

/// Each lesson crate, copied with `common` and `testkit` beside it as the README says,
/// builds on its own, with its examples, and runs them. One target directory serves all copies, so
/// the dependencies are compiled once.
#[test]
fn every_lesson_copies_out() {
    let base = std::env::temp_dir().join(format!("copyout-{}", std::process::id()));
    let target = base.join("target");
    for (name, _) in LESSONS {
        let course = base.join(name);
        let krate = course.join("crates").join(name);
        std::fs::create_dir_all(course.join("crates")).expect("mkdir");
        let cp = |from: &Path, to: &Path| {
            let ok = Command::new("cp")
                .arg("-r")
                .arg(from)
                .arg(to)
                .status()
                .expect("cp")
                .success();
            assert!(ok, "cp {from:?} {to:?}");
        };
        cp(&repo_root().join("crates").join(name), &krate);
        cp(&repo_root().join("common"), &course.join("common"));
        cp(&repo_root().join("testkit"), &course.join("testkit"));
        let _ = std::fs::remove_dir_all(krate.join("target"));
        cp(&repo_root().join("Cargo.lock"), &krate.join("Cargo.lock"));
        let build = Command::new("cargo")
            .args(["build", "--offline", "-q", "--bins", "--examples"])
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .expect("cargo");
        assert!(
            build.status.success(),
            "{name} copied out does not build:\n{}",
            String::from_utf8_lossy(&build.stderr)
        );
        let o = run(target.join("debug").join(name), quick_args(name));
        o.assert_success();
        assert_nothing_left(name, o.pid);
        for example in examples(name) {
            let o = run(
                target.join("debug").join("examples").join(&example),
                quick_args(&example),
            );
            o.assert_success();
            assert_nothing_left(&example, o.pid);
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
