//! Runs the deadlock lesson and its examples and checks what they claim, from outside.

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, example, numbers,
    run, speaker, Outcome,
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
    assert!(o.stdout.ends_with("all checks passed\n"));
}

#[test]
fn the_deadlock_is_detected_by_both() {
    let o = run(BIN, &[]);
    o.assert_success();
    check_deadlock_detected(&o, 2.0);
    assert_nothing_left("deadlock", o.pid);
}

#[test]
fn a_short_timeout_still_detects() {
    let o = run(BIN, &["--timeout", "0.5"]);
    o.assert_success();
    check_deadlock_detected(&o, 0.5);
    assert_nothing_left("deadlock", o.pid);
}

/// Both workers finished `rounds` rounds each, counted under A and under B.
fn check_finished(o: &Outcome, rounds: i64) -> Vec<i64> {
    let line = o.line_with("both workers finished:");
    assert_eq!(speaker(line).expect("prefixed").1, o.pid, "{line}");
    let n = numbers(line.split("finished: ").nth(1).expect("text"));
    assert_eq!(n[0], 2 * rounds, "{line}");
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    n
}

#[test]
fn in_one_global_order_both_take_a_first_and_finish() {
    let bin = example(BIN, "deadlock_lock_order");
    for rounds in [1000, 1] {
        let o = run(&bin, &["--rounds", &rounds.to_string()]);
        o.assert_success();
        // Whatever order they ask in, both take A then B.
        let one = pid_of(&o, "] asked for A then B; taking A then B");
        let two = pid_of(&o, "] asked for B then A; taking A then B");
        assert_ne!(one, two);
        let took = o.lines_with(&format!("took A then B {rounds} times"));
        assert_eq!(took.len(), 2, "{}", o.stdout);
        // Round 1 was forced: one held both while the other, holding
        // nothing, was asleep waiting for A; no cycle, no timeout.
        let holder = pid_of(&o, "] holding A and B, waiting for the parent");
        let waiter = if holder == one { two } else { one };
        let seen = o.line_with(&format!(
            "worker {waiter} waits for A, holding nothing: state S"
        ));
        assert!(
            seen.contains(&format!("worker {holder} holds A and B")),
            "{seen}"
        );
        assert_eq!(speaker(seen).expect("prefixed").1, o.pid, "{seen}");
        assert!(!o.stdout.contains("the fix deadlocks"), "{}", o.stdout);
        check_finished(&o, rounds);
        assert_nothing_left("deadlock_lock_order", o.pid);
    }
}

#[test]
fn with_back_off_both_finish_and_someone_backed_off() {
    let bin = example(BIN, "deadlock_back_off");
    for rounds in [1000, 1] {
        let o = run(&bin, &["--rounds", &rounds.to_string()]);
        o.assert_success();
        o.line_with("both workers hold their first lock (A and B)");
        // The set-up conflict costs at least one back-off even in a single
        // round; the workers print their own shares, which add up.
        let backoffs = check_finished(&o, rounds)[1];
        assert!(backoffs >= 1, "{}", o.stdout);
        assert!(
            !o.lines_with("is taken: released").is_empty(),
            "{}",
            o.stdout
        );
        let shares: i64 = o
            .lines_with("] took ")
            .iter()
            .map(|l| numbers(l.split("backing off").nth(1).expect("text"))[0])
            .sum();
        assert_eq!(shares, backoffs, "{}", o.stdout);
        assert_eq!(
            o.lines_with(&format!(" {rounds} times, backing off")).len(),
            2
        );
        assert_nothing_left("deadlock_back_off", o.pid);
    }
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--timeout", &["0.1", "61"]);
    assert_values_rejected(BIN, "--window", &["-1"]);
    let order = example(BIN, "deadlock_lock_order");
    assert_help_and_bad_options(&order);
    assert_values_rejected(&order, "--rounds", &["0", "100001"]);
    assert_values_rejected(&order, "--timeout", &["0.1", "61"]);
    let back_off = example(BIN, "deadlock_back_off");
    assert_help_and_bad_options(&back_off);
    assert_values_rejected(&back_off, "--rounds", &["0", "100001"]);
    assert_values_rejected(&back_off, "--window", &["-1"]);
}
