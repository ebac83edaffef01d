//! Runs the shared_value lesson and checks what it claims, from outside.

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_shared_value");

/// The numbers of a line after its `[role pid]` prefix.
fn numbers_in(line: &str) -> Vec<i64> {
    numbers(line.split_once("] ").expect("prefixed line").1)
}

/// The PID of the one line containing `needle`, checking its role.
fn pid_of(o: &Outcome, needle: &str, role: &str) -> i32 {
    let (r, pid) = speaker(o.line_with(needle)).expect("prefixed line");
    assert_eq!(r, role, "{needle:?} printed by {r}");
    pid
}

/// Everything a successful run must show, for `n` iterations from `start`.
fn check_run(o: &Outcome, n: i64, start: i64) {
    o.assert_success();
    let parent = o.pid;
    assert!(
        o.line_with("lock back end:").ends_with(common::BACKEND),
        "the lesson uses the back end this test was built with"
    );

    // Parts 1 and 2: two forked workers each time, and the exact value.
    for (part, needle) in [
        ("under the lock", "under the lock: final value"),
        ("with atomics", "with atomics: final value"),
    ] {
        assert_eq!(
            numbers_in(o.line_with(needle)),
            vec![start, start, n, n],
            "{part}: final value == start value after n increments and n decrements"
        );
    }
    let workers: Vec<(&str, i32)> = o
        .stdout
        .lines()
        .filter(|l| l.contains("] done: "))
        .map(|l| speaker(l).expect("prefixed"))
        .collect();
    assert_eq!(workers.len(), 4, "two workers per part:\n{}", o.stdout);
    for (role, pid) in &workers {
        assert!(["incrementer", "decrementer"].contains(role), "{role}");
        assert_ne!(*pid, parent, "workers are other processes");
    }

    // Part 3: the child started with Command opens the segment by name.
    let child = pid_of(o, "by its name", "child");
    assert_ne!(child, parent);
    let opened = o.line_with("by its name");
    let name = opened
        .split_whitespace()
        .find(|w| w.starts_with('/'))
        .expect("the segment's name");
    assert!(
        name.starts_with(&format!("/shared_value-{parent}-")),
        "unique name with the lesson's PID: {name}"
    );
    assert!(opened.ends_with(&format!("the value in it is {start}")));

    let removed = o.line_with("removed the name");
    assert_eq!(pid_of(o, "removed the name", "parent"), parent);
    assert!(
        removed.contains(&format!("child {child} attached")) && removed.contains(name),
        "{removed}"
    );
    let mapped = o.line_with("still mapped here");
    assert!(
        mapped.contains(&format!("/dev/shm{name}")) && mapped.ends_with("(deleted)"),
        "the parent's own maps line: {mapped}"
    );

    // The child's change, made after the name was gone, is seen by the parent.
    assert_eq!(pid_of(o, "the memory is not", "child"), child);
    assert_eq!(
        numbers_in(o.line_with("the memory is not")),
        vec![n, start + n]
    );
    assert_eq!(
        numbers_in(o.line_with("the child's change is seen")),
        vec![start + n, start, n, child as i64],
        "value == start + n, written by the child"
    );
    assert!(o
        .line_with("is left in /dev/shm")
        .contains(&format!("nothing named shared_value-{parent}-*")));
    assert_eq!(pid_of(o, "all checks passed", "parent"), parent);
    assert_nothing_left("shared_value", o.pid);
}

#[test]
fn every_part_keeps_the_value_exact_and_the_named_child_is_seen() {
    let o = run(BIN, &[]);
    check_run(&o, 100_000, 1000);
}

#[test]
fn the_numbers_follow_the_options_with_real_pauses() {
    // Real pauses too: the workers wait at their gates, and the named child
    // waits for its order, across them.
    let o = run(
        BIN,
        &["--iterations", "1234", "--start", "7", "--pace", "0.1"],
    );
    check_run(&o, 1234, 7);
    assert_eq!(o.lines_with("pausing 0.3 s").len(), 3, "{}", o.stdout);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--iterations", &["0", "1000001", "many"]);
    assert_values_rejected(BIN, "--start", &["-1", "1000000001"]);
}
