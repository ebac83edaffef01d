//! Runs the process_lock lesson and checks what it claims, from outside.

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_process_lock");

/// Lines per worker in part 2 (the lesson's `LINES`).
const LINES: i64 = 20;

/// The one stdout line holding every needle.
fn line<'a>(o: &'a Outcome, needles: &[&str]) -> &'a str {
    let found: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one line with {needles:?} in:\n{}",
        o.stdout
    );
    found[0]
}

/// The numbers after the `[role pid]` prefix.
fn figures(line: &str) -> Vec<i64> {
    numbers(line.split_once("] ").expect("prefixed line").1)
}

#[test]
fn the_count_is_exact_and_no_line_tears_under_the_lock() {
    let o = run(BIN, &["--workers", "3", "--iterations", "50000"]);
    o.assert_success();
    assert!(
        line(&o, &["lock back end"]).ends_with(common::BACKEND),
        "the lesson uses the back end this test was built with:\n{}",
        o.stdout
    );

    // Part 1: the unlocked figures add up; the locked count is exact.
    let racy = figures(line(&o, &["without the lock:", "counter ="]));
    assert_eq!(racy.len(), 3, "{racy:?}");
    assert_eq!(racy[1], 150_000);
    assert_eq!(racy[0] + racy[2], racy[1], "got + lost = expected");
    let locked = figures(line(&o, &["with the lock:", "counter ="]));
    assert_eq!(locked, vec![150_000, 150_000]);

    // Part 2: without the lock, any number may tear (it is reported, not
    // required); with the lock, none of the 3 x 20 lines does.
    let unlocked = figures(line(&o, &["without the lock:", "lines torn"]));
    assert_eq!(unlocked[1], 3 * LINES, "{unlocked:?}");
    assert!(unlocked[0] <= unlocked[1]);
    if unlocked[0] > 0 {
        assert!(o.stdout.contains("for example:"), "{}", o.stdout);
    }
    let under_lock = figures(line(&o, &["with the lock:", "lines torn"]));
    assert_eq!(under_lock, vec![0, 3 * LINES]);
    assert!(o.stdout.contains("would not tear anyway"));
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left("process_lock", o.pid);
}

#[test]
fn a_holder_killed_with_the_lock_is_noticed_and_the_data_repaired() {
    let o = run(BIN, &["--workers", "2", "--iterations", "1000"]);
    o.assert_success();
    let took = line(&o, &["took 30 out of a"]);
    let (role, holder) = speaker(took).expect("prefixed");
    assert_eq!(role, "holder");
    assert!(
        line(&o, &["killed by SIGKILL"]).contains(&format!("holder {holder} killed by SIGKILL")),
        "{}",
        o.stdout
    );

    // The rescuer, another process, was told the owner died and saw the
    // half-done transfer: a = 70, b = 0, sum 70, 30 in flight.
    let told = line(&o, &["told the owner died"]);
    let (role, rescuer) = speaker(told).expect("prefixed");
    assert_eq!(role, "rescuer");
    assert!(rescuer != holder && rescuer != o.pid);
    assert_eq!(figures(told), vec![70, 0, 70, 100, 30]);
    let repaired = line(&o, &["repaired:"]);
    assert_eq!(speaker(repaired).expect("prefixed").1, rescuer);
    assert_eq!(figures(repaired), vec![70, 30, 100]);
    assert!(repaired.contains("consistent"));

    // Afterwards the parent locks normally and finds the invariant whole.
    let again = line(&o, &["the lock works again"]);
    assert_eq!(speaker(again).expect("prefixed").1, o.pid);
    assert_eq!(figures(again), vec![70, 30, 100, 1]);
    assert_nothing_left("process_lock", o.pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--workers", &["1", "17", "many"]);
    assert_values_rejected(BIN, "--iterations", &["0", "99999999999"]);
}
