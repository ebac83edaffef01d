//! Runs the shared_array lesson and checks what it claims, from outside.

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_shared_array");
const LEN: i64 = 8;
const START: i64 = 1000;

/// The numbers of a line after its `[role pid]` prefix.
fn numbers_in(line: &str) -> Vec<i64> {
    numbers(line.split_once("] ").expect("prefixed line").1)
}

/// Everything a successful run must show, for `iterations` passes per adder
/// (first attempt) and `rounds` whole-array updates per writer.
fn check_run(o: &Outcome, iterations: i64, rounds: i64) {
    o.assert_success();
    assert!(o.line_with("lock back end:").ends_with(common::BACKEND));

    // Part 1: the attempts, each with its own arithmetic; only the last one
    // lost updates, and it did.
    let attempts = o.lines_with("updates expected, the array holds");
    assert!(!attempts.is_empty() && attempts.len() <= 3, "{}", o.stdout);
    let mut passes = iterations;
    for (i, line) in attempts.iter().enumerate() {
        let [attempt, adders, p, cells, expected, holds, lost] = numbers_in(line)[..] else {
            panic!("unexpected attempt line: {line}")
        };
        assert_eq!(
            (attempt, adders, p, cells),
            (i as i64 + 1, 2, passes, LEN),
            "{line}"
        );
        assert_eq!(expected, 2 * passes * LEN, "{line}");
        assert_eq!(holds + lost, expected, "{line}");
        // An adder never loses its own updates, so at most half are lost.
        assert!(holds >= passes * LEN, "{line}");
        if i + 1 < attempts.len() {
            assert_eq!(
                lost, 0,
                "retried only after an attempt lost nothing: {line}"
            );
        } else {
            assert!(lost > 0, "the anti-pattern lost updates: {line}");
        }
        passes *= 4;
    }
    let last = numbers_in(attempts[attempts.len() - 1]);
    assert_eq!(
        numbers_in(o.line_with("] lost ")),
        vec![last[6], last[4]],
        "the summary repeats the last attempt's loss"
    );

    // Part 2: the final array is exact...
    let mut want = vec![START; LEN as usize];
    want.extend([START, rounds, rounds]);
    assert_eq!(numbers_in(o.line_with("final array")), want);

    // ...and the reader, another process, did its reads while the writers
    // were mid-run, and saw no half-updated array.
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
    assert_eq!(torn, 0, "no torn read under the lock");
    assert!(
        mid_run > 0 && reads >= mid_run,
        "the reader overlapped the writers"
    );
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left("shared_array", o.pid);
}

#[test]
fn updates_are_lost_without_a_lock_and_exact_with_one() {
    let o = run(BIN, &[]);
    check_run(&o, 200, 2000);
}

#[test]
fn the_numbers_follow_the_options_with_real_pauses() {
    let o = run(
        BIN,
        &["--iterations", "50", "--rounds", "300", "--pace", "0.1"],
    );
    check_run(&o, 50, 300);
    assert_eq!(
        o.lines_with("pausing 0.3 s").len(),
        o.lines_with("attempt ").len() + 1
    );
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--iterations", &["9", "2001"]);
    assert_values_rejected(BIN, "--rounds", &["99", "20001", "lots"]);
}
