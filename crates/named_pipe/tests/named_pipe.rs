//! Runs the named_pipe lesson and checks what it claims, from outside.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    speaker, Lesson, Outcome, LINE_LIMIT, SETTLE,
};

const BIN: &str = env!("CARGO_BIN_EXE_named_pipe");

/// The FIFO paths the run printed: each in a fresh private directory named
/// after the run, and gone by now.
fn assert_fifos_private_and_gone(o: &Outcome) {
    let prefix = std::env::temp_dir().join(format!("named_pipe-{}-", o.pid));
    let made = o.lines_with("mkfifo made");
    assert!(!made.is_empty(), "{}", o.stdout);
    for line in made {
        let path = line
            .split_whitespace()
            .find(|w| w.ends_with("/fifo"))
            .expect("a path");
        assert!(
            path.starts_with(prefix.to_str().expect("utf-8")),
            "{path} is not in a directory of this run"
        );
        assert!(line.contains("mode 600") && line.contains("directory of mode 700"));
        assert!(!Path::new(path).exists(), "{path} left behind");
        assert!(!Path::new(path).parent().expect("dir").exists());
    }
}

/// The numbers in a line, after its `[role pid]` prefix.
fn nums(line: &str) -> Vec<i64> {
    numbers(line.split_once("] ").map_or(line, |(_, text)| text))
}

/// The writers' lines: (writer number, pid, bytes or records they report).
fn writer_lines(o: &Outcome) -> Vec<(String, i32, &str)> {
    o.stdout
        .lines()
        .filter_map(|l| speaker(l).map(|(r, p)| (r.to_string(), p, l)))
        .filter(|(r, _, _)| r.starts_with("writer "))
        .collect()
}

#[test]
fn the_reader_blocks_in_open_and_small_writes_stay_whole() {
    let o = run(BIN, &[]);
    o.assert_success();
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_fifos_private_and_gone(&o);

    // Part 1: the non-blocking opens, then a reader blocked inside open.
    assert!(o
        .line_with("open(O_WRONLY | O_NONBLOCK) failed with ENXIO")
        .contains("nobody"));
    let blocked = o.line_with("waits in it");
    assert_eq!(speaker(blocked).expect("prefixed").1, o.pid);
    assert!(blocked.contains("state S"), "{blocked}");
    let reader = numbers(blocked.split("reader ").nth(1).expect("reader pid"))[0] as i32;
    assert_ne!(reader, o.pid);
    let got = o.lines_with("got \"message");
    assert_eq!(got.len(), 3, "{}", o.stdout);
    for line in got {
        assert_eq!(speaker(line), Some(("reader", reader)), "{line}");
    }
    assert!(o.line_with("still open").contains("(deleted)"));
    assert!(o
        .line_with(&format!("reader {reader} got all 3 messages"))
        .contains("exited 0"));

    // Part 2: 4 writers x 500 records, all whole; the bytes add up.
    let received = o.line_with("each writer's in order");
    let n = nums(received);
    assert_eq!(n[0], 4 * 500, "{received}");
    let writers = writer_lines(&o);
    let small: Vec<_> = writers
        .iter()
        .filter(|(_, _, l)| l.contains("records ("))
        .collect();
    assert_eq!(small.len(), 4, "{}", o.stdout);
    let sum: i64 = small.iter().map(|(_, _, l)| nums(l)[1]).sum();
    assert_eq!(
        sum, n[1],
        "the writers' bytes add up to what the reader got"
    );
    let mut pids: Vec<i32> = small.iter().map(|(_, p, _)| *p).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 4, "four separate writer processes");
    assert!(!pids.contains(&o.pid) && !pids.contains(&reader));
    // Every fourth record of each writer is exactly PIPE_BUF bytes (others
    // may happen to be).
    assert!(nums(o.line_with("exactly PIPE_BUF"))[0] >= 4 * (500 / 4));

    // Part 3: every byte arrived; some records may have been cut.
    assert!(o.stdout.contains("received all 40 records of 100000 bytes"));
    let cut = nums(o.line_with("were cut by other writers"));
    assert!(cut[0] <= 40 && cut[1] == 40, "{cut:?}");
    assert_nothing_left("named_pipe", o.pid);
}

#[test]
fn the_options_set_the_counts() {
    let o = run(
        BIN,
        &["--writers", "2", "--records", "37", "--big-records", "0"],
    );
    o.assert_success();
    assert_eq!(nums(o.line_with("each writer's in order"))[0], 2 * 37);
    assert!(o.stdout.contains("all 2 writers opened it"));
    assert!(o.stdout.contains("part 3 skipped"));
    assert_eq!(writer_lines(&o).len(), 2, "{}", o.stdout);
    assert_fifos_private_and_gone(&o);
    assert_nothing_left("named_pipe", o.pid);

    let o = run(
        BIN,
        &["--writers", "3", "--records", "1", "--big-records", "2"],
    );
    o.assert_success();
    assert!(o.stdout.contains("received all 6 records of 100000 bytes"));
    assert_nothing_left("named_pipe", o.pid);
}

/// Start the lesson at a slow pace in a session of its own, its output read
/// line by line.
fn start() -> Lesson {
    Lesson::start(BIN, &[], "0.3")
}

#[test]
fn a_signal_to_the_group_at_any_point_leaves_nothing() {
    for (needle, signal) in [
        ("part 1", libc::SIGINT),
        ("sent 3 messages", libc::SIGTERM),
        ("part 2", libc::SIGINT),
        ("released the writers", libc::SIGTERM),
        ("part 3", libc::SIGTERM),
    ] {
        let mut r = start();
        r.expect_line(needle, LINE_LIMIT);
        r.signal_group(signal);
        let status = r.wait_within(SETTLE);
        assert!(
            status.signal() == Some(signal) || status.code() == Some(128 + signal),
            "after {needle:?}: {status:?}"
        );
        r.assert_all_gone("named_pipe", SETTLE);
    }
}

#[test]
fn the_lesson_killed_alone_takes_its_programs_with_it() {
    for needle in ["waits in it", "released the writers"] {
        let mut r = start();
        r.expect_line(needle, LINE_LIMIT);
        r.signal(libc::SIGKILL);
        assert_eq!(r.wait_within(SETTLE).signal(), Some(libc::SIGKILL));
        // The reader and the writers die of PR_SET_PDEATHSIG; the FIFO was
        // already removed when these lines were printed.
        r.assert_all_gone("named_pipe", SETTLE);
    }
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--writers", &["0", "17"]);
    assert_values_rejected(BIN, "--records", &["0", "20001"]);
    assert_values_rejected(BIN, "--big-records", &["201", "x"]);
}
