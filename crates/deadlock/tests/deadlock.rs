//! Runs the deadlock lesson and checks what it claims, from outside.

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_deadlock");

/// The PID of the process that printed the one line containing `needle`.
fn pid_of(o: &Outcome, needle: &str) -> i32 {
    speaker(o.line_with(needle)).expect("prefixed line").1
}

/// The seconds in "after 2.0 s".
fn seconds_after(line: &str) -> f64 {
    line.split(" after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in {line}"))
}

fn check_deadlock_detected(o: &Outcome, timeout: f64) {
    let one = pid_of(o, "] holding lock A");
    let two = pid_of(o, "] holding lock B");
    assert_ne!(one, two);
    // The parent saw each worker asleep (state S) while holding one lock
    // and waiting for the other.
    for (pid, holds, wants) in [(one, "A", "B"), (two, "B", "A")] {
        let seen = o.line_with(&format!(
            "worker {pid} holds {holds} and waits for {wants}: state S"
        ));
        assert_eq!(speaker(seen).expect("prefixed").1, o.pid, "{seen}");
    }
    o.line_with("both workers are blocked");
    // Both detected it, no sooner than the timeout, and let go.
    for (pid, wants, holds) in [(one, "B", "A"), (two, "A", "B")] {
        let gave_up = o.line_with(&format!("] no lock {wants} after "));
        assert_eq!(speaker(gave_up).expect("prefixed").1, pid, "{gave_up}");
        assert!(gave_up.ends_with("deadlock, giving up"), "{gave_up}");
        assert!(seconds_after(gave_up) >= timeout, "{gave_up}");
        assert_eq!(pid_of(o, &format!("] released lock {holds}")), pid);
    }
    assert!(!o.stdout.contains("after all"), "{}", o.stdout);
    o.line_with("both workers detected the deadlock");
}

/// The back-offs fix 2 reports, after checking both fixes completed.
fn check_fixes(o: &Outcome, rounds: i64) -> i64 {
    let finished = o.lines_with("both workers finished:");
    assert_eq!(finished.len(), 2, "{}", o.stdout);
    for line in &finished {
        let n = numbers(line.split("finished: ").nth(1).expect("text"));
        assert_eq!(n[0], 2 * rounds, "{line}");
    }
    assert_eq!(
        o.lines_with(&format!("took A then B {rounds} times")).len(),
        2,
        "fix 1: both workers take A first: {}",
        o.stdout
    );
    assert!(o
        .line_with("] asked for B then A")
        .ends_with("taking A then B"));
    let fix2 = numbers(finished[1].split("finished: ").nth(1).expect("text"));
    assert!(
        fix2[1] >= 1,
        "fix 2 backs off at least once: {}",
        finished[1]
    );
    assert!(o.stdout.ends_with("all checks passed\n"));
    fix2[1]
}

#[test]
fn the_deadlock_is_detected_by_both_and_both_fixes_complete() {
    let o = run(BIN, &[]);
    o.assert_success();
    check_deadlock_detected(&o, 2.0);
    check_fixes(&o, 1000);
    assert_nothing_left("deadlock", o.pid);
}

#[test]
fn one_round_still_backs_off_and_a_short_timeout_still_detects() {
    let o = run(BIN, &["--rounds", "1", "--timeout", "0.5"]);
    o.assert_success();
    check_deadlock_detected(&o, 0.5);
    let backoffs = check_fixes(&o, 1);
    // The set-up conflict of fix 2 costs at least one back-off even in a
    // single round; the workers print their own share.
    let shares: i64 = o
        .lines_with("] took ")
        .iter()
        .filter(|l| l.contains("backing off"))
        .map(|l| numbers(l.split("backing off").nth(1).expect("text"))[0])
        .sum();
    assert_eq!(shares, backoffs);
    assert_nothing_left("deadlock", o.pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--timeout", &["0.1", "61"]);
    assert_values_rejected(BIN, "--window", &["-1"]);
    assert_values_rejected(BIN, "--rounds", &["0", "100001"]);
}
