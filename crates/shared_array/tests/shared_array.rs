//! Runs the shared_array lesson and its example and checks what they claim,
//! from outside.

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_rejected, assert_values_rejected,
    example, numbers, run, speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_shared_array");
const READER: &str = "shared_array_reader";
const LEN: i64 = 8;
const START: i64 = 1000;

/// The numbers of a line after its `[role pid]` prefix.
fn numbers_in(line: &str) -> Vec<i64> {
    numbers(line.split_once("] ").expect("prefixed line").1)
}

/// Everything a successful run of the lesson must show, for `passes`
/// passes per adder.
fn check_lesson(o: &Outcome, passes: i64) {
    o.assert_success();
    assert!(o.line_with("lock back end:").ends_with(common::BACKEND));
    let expected = 2 * passes * LEN;

    // Part 1: the arithmetic of the one race. Whether updates were lost
    // depends on the schedule, so either outcome passes, but the program
    // must say which one it was.
    let line = o.line_with("updates expected, the array holds");
    let [adders, p, cells, e, holds, lost] = numbers_in(line)[..] else {
        panic!("unexpected part 1 line: {line}")
    };
    assert_eq!((adders, p, cells, e), (2, passes, LEN, expected), "{line}");
    assert_eq!(holds + lost, expected, "{line}");
    // Each store writes a loaded value plus one, so nothing is gained; and
    // two adders making n >= 2 increments of a cell leave it at 2 or more.
    assert!((2 * LEN..=expected).contains(&holds), "{line}");
    if lost > 0 {
        assert_eq!(
            numbers_in(o.line_with("] lost ")),
            vec![lost, expected],
            "the summary repeats the loss"
        );
    } else {
        assert!(o.stdout.contains("no update lost this run"), "{}", o.stdout);
    }

    // Part 2: under the lock the count is exact.
    assert_eq!(
        numbers_in(o.line_with("under the lock: the array holds")),
        vec![expected, expected]
    );
    assert_eq!(o.lines_with(" pausing ").len(), 2, "{}", o.stdout);
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left("shared_array", o.pid);
}

#[test]
fn updates_may_be_lost_without_a_lock_and_the_count_is_exact_with_one() {
    let o = run(BIN, &[]);
    check_lesson(&o, 200);
}

#[test]
fn the_numbers_follow_the_options_with_real_pauses() {
    let o = run(BIN, &["--iterations", "10", "--pace", "0.1"]);
    check_lesson(&o, 10);
    assert_eq!(o.lines_with("pausing 0.3 s").len(), 2, "{}", o.stdout);
}

/// Everything a successful run of the example must show, for `rounds`
/// whole-array updates per writer; returns the reader's torn count.
fn check_reader(o: &Outcome, rounds: i64) -> i64 {
    o.assert_success();
    assert!(o.line_with("lock back end:").ends_with(common::BACKEND));
    // The final array is exact...
    let mut want = vec![START; LEN as usize];
    want.extend([START, rounds, rounds]);
    assert_eq!(numbers_in(o.line_with("final array")), want);

    // ...and the reader, another process, read while the writers were
    // mid-run, and reported what it counted to the parent.
    let (role, reader) = speaker(o.line_with("reads under the lock")).expect("prefixed");
    assert_eq!(role, "reader");
    assert_ne!(reader, o.pid);
    let [reads, mid_run, torn] = numbers_in(o.line_with("reader: "))[..] else {
        panic!("unexpected reader line")
    };
    assert_eq!(
        numbers_in(o.line_with("reads under the lock")),
        vec![reads, mid_run, torn],
        "the parent reports what the reader counted"
    );
    assert!(
        mid_run > 0 && reads >= mid_run,
        "the reader overlapped the writers"
    );
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left(READER, o.pid);
    torn
}

#[test]
fn a_reader_under_the_lock_never_sees_a_torn_array() {
    let o = run(example(BIN, READER), &[]);
    assert_eq!(check_reader(&o, 2000), 0, "no torn read under the lock");
    assert!(o.line_with("a reader checks").contains("under one lock"));
}

#[test]
fn split_updates_leave_the_array_exact_but_torn_meanwhile() {
    let o = run(example(BIN, READER), &["--split", "--rounds", "300"]);
    let torn = check_reader(&o, 300);
    assert!(torn > 0, "split updates were seen torn: {}", o.stdout);
    assert_eq!(
        numbers_in(o.line_with("split in two critical sections:")),
        vec![torn]
    );
}

#[test]
fn the_example_follows_its_options_with_real_pauses() {
    let o = run(example(BIN, READER), &["--rounds", "100", "--pace", "0.1"]);
    assert_eq!(check_reader(&o, 100), 0);
    assert_eq!(o.lines_with("pausing 0.3 s").len(), 1, "{}", o.stdout);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--iterations", &["9", "2001", "-3", "lots"]);
    let reader = example(BIN, READER);
    assert_help_and_bad_options(&reader);
    assert_values_rejected(&reader, "--rounds", &["99", "20001", "lots"]);
    assert_rejected(&reader, &["--split=yes"], "--split");
}
