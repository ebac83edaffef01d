//! Runs the shared_value lesson and its examples and checks what they claim, from outside.

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, example, numbers,
    run, speaker, Outcome,
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

/// The lesson and the atomics example: two forked workers, other processes
/// than the parent, and the exact final value, `needle` on that line.
fn check_race(o: &Outcome, needle: &str, n: i64, start: i64) {
    o.assert_success();
    assert_eq!(
        numbers_in(o.line_with(needle)),
        vec![start, start, n, n],
        "{needle}: final value == start value after n increments and n decrements"
    );
    let workers: Vec<(&str, i32)> = o
        .stdout
        .lines()
        .filter(|l| l.contains("] done: "))
        .map(|l| speaker(l).expect("prefixed"))
        .collect();
    assert_eq!(workers.len(), 2, "two workers:\n{}", o.stdout);
    let mut roles: Vec<&str> = workers.iter().map(|w| w.0).collect();
    roles.sort();
    assert_eq!(roles, ["decrementer", "incrementer"]);
    for (_, pid) in &workers {
        assert_ne!(*pid, o.pid, "workers are other processes");
    }
    for line in o.lines_with("] done: ") {
        assert_eq!(numbers_in(line)[0], n, "{line}");
    }
    assert_eq!(pid_of(o, "all checks passed", "parent"), o.pid);
}

#[test]
fn under_the_lock_the_value_is_exact() {
    let o = run(BIN, &[]);
    check_race(&o, "under the lock: final value", 100_000, 1000);
    assert!(
        o.line_with("lock back end:").ends_with(common::BACKEND),
        "the lesson uses the back end this test was built with"
    );
    assert_nothing_left("shared_value", o.pid);
}

#[test]
fn the_numbers_follow_the_options_with_a_real_pause() {
    // A real pause too: the workers wait at their gate across it.
    let args = ["--iterations", "1234", "--start", "7", "--pace", "0.1"];
    let o = run(BIN, &args);
    check_race(&o, "under the lock: final value", 1234, 7);
    assert_eq!(o.lines_with("pausing 0.3 s").len(), 1, "{}", o.stdout);
    assert_nothing_left("shared_value", o.pid);
}

#[test]
fn with_atomics_the_value_is_exact_too() {
    let bin = example(BIN, "shared_value_atomics");
    let o = run(&bin, &[]);
    check_race(&o, "with atomics: final value", 100_000, 1000);
    assert!(o.line_with("why:").contains("three steps"));
    assert_nothing_left("shared_value_atomics", o.pid);
    let args = ["--iterations", "999", "--start", "0", "--pace", "0.1"];
    let o = run(&bin, &args);
    check_race(&o, "with atomics: final value", 999, 0);
    assert_eq!(o.lines_with("pausing 0.3 s").len(), 1, "{}", o.stdout);
    assert_nothing_left("shared_value_atomics", o.pid);
}

/// Everything a run of `shared_value_named` must show, for `n` from `start`.
fn check_named(o: &Outcome, n: i64, start: i64) {
    o.assert_success();
    let parent = o.pid;
    // The child started with Command opens the memory by its name.
    let child = pid_of(o, "by its name", "child");
    assert_ne!(child, parent);
    let opened = o.line_with("by its name");
    let name = opened
        .split_whitespace()
        .find(|w| w.starts_with('/'))
        .expect("the memory's name");
    assert!(
        name.starts_with(&format!("/shared_value_named-{parent}-")),
        "unique name with the example's PID: {name}"
    );
    assert!(opened.ends_with(&format!("the value in it is {start}")));
    assert!(
        o.line_with("created /dev/shm")
            .contains(&format!("{name} (exclusive; mode 0600, says stat)")),
        "{}",
        o.stdout
    );

    let removed = o.line_with("removed the name");
    assert_eq!(pid_of(o, "removed the name", "parent"), parent);
    assert!(
        removed.contains(&format!("child {child} attached")) && removed.contains(name),
        "{removed}"
    );
    let mapped = o.line_with("still mapped here");
    assert!(
        mapped.contains(" rw-s ") && mapped.contains(&format!("/dev/shm{name}")),
        "a shared mapping of the object: {mapped}"
    );
    assert!(mapped.ends_with("(deleted)"), "{mapped}");

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
    assert_eq!(pid_of(o, "all checks passed", "parent"), parent);
    // Nothing named shared_value_named-<pid>-* is left in /dev/shm, and no process.
    assert_nothing_left("shared_value_named", o.pid);
}

#[test]
fn a_program_started_by_exec_meets_the_memory_by_name() {
    let bin = example(BIN, "shared_value_named");
    check_named(&run(&bin, &[]), 100_000, 1000);
}

#[test]
fn the_named_child_waits_for_its_order_across_a_real_pause() {
    let bin = example(BIN, "shared_value_named");
    let args = ["--iterations", "1234", "--start", "7", "--pace", "0.1"];
    let o = run(&bin, &args);
    check_named(&o, 1234, 7);
    assert_eq!(o.lines_with("pausing 0.3 s").len(), 1, "{}", o.stdout);
}

#[test]
fn help_and_bad_options() {
    for bin in [
        BIN.to_string(),
        example(BIN, "shared_value_atomics"),
        example(BIN, "shared_value_named"),
    ] {
        assert_help_and_bad_options(&bin);
        assert_values_rejected(&bin, "--iterations", &["0", "1000001", "many"]);
        assert_values_rejected(&bin, "--start", &["-1", "1000000001"]);
    }
}
