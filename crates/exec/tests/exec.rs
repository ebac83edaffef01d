//! Runs the exec lesson and checks what it claims, from outside; one test
//! SIGKILLs the lesson while its runaway child runs and checks that the
//! child went with it.

use std::thread;
use std::time::{Duration, Instant};

use common::procfs;
use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run, Lesson,
    Outcome, HANG_LIMIT, SETTLE,
};

const BIN: &str = env!("CARGO_BIN_EXE_exec");

/// The hex number after the last `word` in `line`.
fn hex_after(line: &str, word: &str) -> u64 {
    let rest = line.rsplit(word).next().expect("word in line").trim_start();
    let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u64::from_str_radix(&hex, 16).expect("hex")
}

fn check_a_whole_run(o: &Outcome, bytes: i64) {
    o.assert_success();
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);

    // Part 1: every status decoded as the kernel reported it.
    assert!(o.line_with("] true:").contains("exited with 0"));
    assert!(o.line_with("] false:").contains("exited with 1"));
    assert!(o.line_with("'exit 3'").contains("exited with 3"));
    assert!(o
        .line_with("kill -TERM")
        .contains("killed by SIGTERM (code() = None, signal() = Some(15))"));
    assert!(o
        .line_with("sh -c exec-lesson-no-such")
        .contains("exited with 127"));
    assert!(o.line_with(".spawn(): error").contains("No such file"));

    // Part 2: stuck exactly where the pipe sizes say, then every byte read.
    let stuck = o.line_with("reading stdout only");
    let n = numbers(stuck);
    let (got, waiting, queued, cap) = (n[1], n[2], n[n.len() - 2], n[n.len() - 1]);
    assert_eq!(waiting, 0, "{stuck}");
    assert_eq!(queued, cap, "the stderr pipe is full: {stuck}");
    assert_eq!(
        got,
        cap + 4096,
        "stdout gave one chunk past the pipe size: {stuck}"
    );
    assert!(stuck.contains("state S"), "{stuck}");
    assert!(cap < bytes);
    for stream in ["] stdout:", "] stderr:"] {
        let line = o.line_with(stream);
        assert_eq!(numbers(line)[1], bytes, "{line}");
        assert_eq!(
            hex_after(line, "checksum"),
            hex_after(line, "bytes,"),
            "{line}"
        );
    }

    // Part 3: the runaway killed at its deadline, and reaped.
    assert!(o
        .line_with("deadline passed, killed")
        .ends_with("killed by SIGKILL"));
    assert!(o
        .line_with("is gone from /proc")
        .contains("killed and reaped"));

    // Part 4: exactly the variables given, in the directory given.
    let cleared = o.line_with("env_clear + env");
    assert!(
        cleared.contains(r#"{"GREETING=hello from the parent", "LESSON_CHILD=show-env"}"#),
        "{cleared}"
    );
    assert!(cleared.contains(&format!("/exec-{}-", o.pid)), "{cleared}");
    assert!(o.line_with("by default").contains("inherits all"));

    // Part 5: one argument stays one; the pasted command line ran two commands.
    assert!(o
        .line_with("printf printed")
        .contains(r#"["[x; echo INJECTED]"]"#));
    assert!(o
        .line_with("the shell printed [\"processing")
        .ends_with(r#"["processing x", "INJECTED"]"#));
    assert!(o
        .line_with("one word")
        .contains(r#"["[x; echo INJECTED]"]"#));
}

#[test]
fn every_part_proves_its_claim() {
    let o = run(BIN, &[]);
    check_a_whole_run(&o, 1024 * 1024);
    assert_nothing_left("exec", o.pid);
}

#[test]
fn a_smaller_stream_still_deadlocks_when_read_one_pipe_at_a_time() {
    let o = run(BIN, &["--kib", "256"]);
    check_a_whole_run(&o, 256 * 1024);
    assert_nothing_left("exec", o.pid);
}

#[test]
fn the_runaway_dies_with_a_sigkilled_lesson() {
    let mut r = Lesson::start(BIN, &["--timeout", "60"], "1");
    let line = r.expect_line("sleep 600", HANG_LIMIT);
    let sleeper = numbers(&line)[1] as i32;
    let start = procfs::stat(sleeper)
        .expect("read /proc")
        .expect("the runaway runs")
        .start_time;
    r.signal(libc::SIGKILL);
    let status = r.wait_within(HANG_LIMIT);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let deadline = Instant::now() + SETTLE;
    while !procfs::is_dead(sleeper, Some(start)) {
        assert!(
            Instant::now() < deadline,
            "sleep {sleeper} outlived the lesson"
        );
        thread::sleep(Duration::from_millis(10));
    }
    r.assert_all_gone("exec", SETTLE);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--kib", &["255", "16385"]);
    assert_values_rejected(BIN, "--timeout", &["-1", "61"]);
}
