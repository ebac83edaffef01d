//! Runs the process_lock lesson and its examples and checks what they claim, from outside.

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, example, numbers,
    run, speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_process_lock");

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
fn the_count_is_exact_under_the_lock() {
    let o = run(BIN, &["--workers", "3", "--iterations", "50000"]);
    o.assert_success();
    assert!(
        line(&o, &["lock back end"]).ends_with(common::BACKEND),
        "the lesson uses the back end this test was built with:\n{}",
        o.stdout
    );

    // The unlocked figures add up; the locked count is exact.
    let racy = figures(line(&o, &["without the lock:", "counter ="]));
    assert_eq!(racy.len(), 3, "{racy:?}");
    assert_eq!(racy[1], 150_000);
    assert_eq!(racy[0] + racy[2], racy[1], "got + lost = expected");
    let locked = figures(line(&o, &["with the lock:", "counter ="]));
    assert_eq!(locked, vec![150_000, 150_000]);

    // Three other processes did the locked work, 50000 each.
    let done = o.lines_with("done: added 50000 under the lock");
    let mut workers: Vec<i32> = done
        .iter()
        .map(|l| speaker(l).expect("prefixed").1)
        .collect();
    workers.sort();
    workers.dedup();
    assert_eq!(workers.len(), 3, "{}", o.stdout);
    assert!(!workers.contains(&o.pid));
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left("process_lock", o.pid);
}

#[test]
fn no_line_tears_under_the_lock_or_in_one_write() {
    const LINES: i64 = 20;
    let bin = example(BIN, "process_lock_lines");
    let o = run(&bin, &["--workers", "3", "--lines", "20"]);
    o.assert_success();
    assert!(line(&o, &["lock back end"]).ends_with(common::BACKEND));

    // Without the lock, any number may tear (it is reported, not
    // required); with the lock, and in one write per line, none of the
    // 3 x 20 lines does.
    let unlocked = figures(line(&o, &["one write per word, without the lock:"]));
    assert_eq!(unlocked[1], 3 * LINES, "{unlocked:?}");
    assert!(unlocked[0] <= unlocked[1]);
    let quoted = o.lines_with("    torn: ").len() as i64;
    assert_eq!(quoted, unlocked[0].min(2), "{}", o.stdout);
    let under_lock = figures(line(&o, &["one write per word, with the lock:"]));
    assert_eq!(under_lock, vec![0, 3 * LINES]);
    let one_write = figures(line(&o, &["one write per line, without the lock:"]));
    assert_eq!(one_write, vec![0, 3 * LINES]);
    assert!(o
        .stdout
        .contains("println! writes through stdout's 1024-byte buffer"));
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left("process_lock_lines", o.pid);
}

#[test]
fn a_holder_killed_with_the_lock_is_noticed_and_the_data_repaired() {
    let bin = example(BIN, "process_lock_owner_died");
    let o = run(&bin, &[]);
    o.assert_success();
    let took = line(&o, &["took 30 out of a"]);
    let (role, holder) = speaker(took).expect("prefixed");
    assert_eq!(role, "holder");
    assert!(
        line(&o, &["killed by SIGKILL"]).contains(&format!("holder {holder} killed by SIGKILL")),
        "{}",
        o.stdout
    );

    // The rescuer, another process, got EOWNERDEAD and saw the half-done
    // transfer: a = 70, b = 0, sum 70, 30 in flight.
    let told = line(&o, &["EOWNERDEAD", "told the owner died"]);
    let (role, rescuer) = speaker(told).expect("prefixed");
    assert_eq!(role, "rescuer");
    assert!(rescuer != holder && rescuer != o.pid);
    assert_eq!(figures(told), vec![70, 0, 70, 100, 30]);
    let repaired = line(&o, &["repaired:"]);
    assert_eq!(speaker(repaired).expect("prefixed").1, rescuer);
    assert_eq!(figures(repaired), vec![70, 30, 100]);
    assert!(repaired.contains("pthread_mutex_consistent"));

    // Afterwards the parent locks normally and finds the invariant whole.
    let again = line(&o, &["the lock works again"]);
    assert_eq!(speaker(again).expect("prefixed").1, o.pid);
    assert_eq!(figures(again), vec![70, 30, 100, 1]);
    assert_nothing_left("process_lock_owner_died", o.pid);
}

#[test]
fn an_unrepaired_lock_is_not_recoverable_on_either_back_end() {
    let bin = example(BIN, "process_lock_unrepaired");
    let o = run(&bin, &[]);
    o.assert_success();
    assert!(line(&o, &["lock back end"]).ends_with(common::BACKEND));
    // Two holders, each another process, left without unlocking.
    let holders: Vec<i32> = o
        .lines_with("exiting without unlocking")
        .iter()
        .map(|l| speaker(l).expect("prefixed").1)
        .collect();
    assert_eq!(holders.len(), 2, "{}", o.stdout);
    assert!(holders[0] != holders[1] && !holders.contains(&o.pid));
    // The parent was told both times; repaired once, then not.
    let told = o.lines_with("told the owner died");
    assert_eq!(told.len(), 2, "{}", o.stdout);
    assert!(told[0].contains("then mark_consistent"));
    assert!(told[1].contains("WITHOUT mark_consistent"));
    assert!(o.line_with("works as before").ends_with("1 repair"));
    assert!(o.line_with("the next lock").contains("ENOTRECOVERABLE"));
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left("process_lock_unrepaired", o.pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--workers", &["1", "17", "many", "-2"]);
    assert_values_rejected(BIN, "--iterations", &["0", "10000001"]);
    let lines = example(BIN, "process_lock_lines");
    assert_help_and_bad_options(&lines);
    assert_values_rejected(&lines, "--workers", &["1", "17"]);
    assert_values_rejected(&lines, "--lines", &["0", "1001", "some"]);
    for name in ["process_lock_owner_died", "process_lock_unrepaired"] {
        assert_help_and_bad_options(&example(BIN, name));
    }
}
