//! Runs the process_semaphore lesson and checks what it claims, from outside.

use std::collections::BTreeMap;

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_process_semaphore");

/// Run with `args`, check the lesson's own verdict and the workers' lines,
/// and return the most holders at once that the lesson reports.
fn run_and_check(args: &[&str], workers: usize, permits: i64) -> Outcome {
    let o = run(BIN, args);
    o.assert_success();

    // Every worker waited, acquired and released, in that order, once.
    let mut events: BTreeMap<i32, Vec<&str>> = BTreeMap::new();
    for line in o.stdout.lines() {
        let (role, pid) = speaker(line).expect("prefixed line");
        if role == "parent" {
            assert_eq!(pid, o.pid);
            continue;
        }
        assert!(role.starts_with("worker "), "{line}");
        for event in ["waiting", "acquired", "released"] {
            if line.contains(&format!("] {event} ")) {
                events.entry(pid).or_default().push(event);
            }
        }
    }
    assert_eq!(events.len(), workers, "{}", o.stdout);
    for (pid, seen) in &events {
        assert_eq!(seen, &["waiting", "acquired", "released"], "worker {pid}");
    }

    // The holder counts the workers printed never exceed the permits.
    let counts: Vec<i64> = o
        .lines_with("acquired a permit:")
        .iter()
        .map(|l| {
            *numbers(l.split("] ").nth(1).expect("text"))
                .first()
                .expect("count")
        })
        .collect();
    assert_eq!(counts.len(), workers);
    assert!(
        counts.iter().all(|&c| (1..=permits).contains(&c)),
        "{counts:?}"
    );

    // The lesson's own record: the bound was reached and never passed.
    let most = numbers(o.line_with("the most holders at once:"))[1..].to_vec();
    let expected = permits.min(workers as i64);
    assert_eq!(most, [expected, permits, workers as i64], "{}", o.stdout);
    assert!(counts.contains(&expected), "{counts:?}");
    assert!(o
        .stdout
        .contains(&format!("never above the {permits} permits")));
    assert!(o.stdout.ends_with("all checks passed\n"));
    assert_nothing_left("process_semaphore", o.pid);
    o
}

#[test]
fn ten_workers_three_permits_reach_the_limit_and_never_pass_it() {
    let o = run_and_check(&[], 10, 3);
    assert!(o.stdout.contains("all 3 permits came back"));
}

#[test]
fn fewer_workers_than_permits_do_not_wait_forever() {
    run_and_check(&["--workers", "2", "--permits", "3"], 2, 3);
}

#[test]
fn one_permit_is_mutual_exclusion() {
    run_and_check(&["--workers", "6", "--permits", "1"], 6, 1);
}

#[test]
fn holders_overlap_with_real_holds() {
    run_and_check(
        &["--workers", "7", "--permits", "2", "--pace", "0.05"],
        7,
        2,
    );
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--workers", &["0", "1000"]);
    assert_values_rejected(BIN, "--permits", &["0", "17"]);
    assert_values_rejected(BIN, "--hold", &["-0.5", "long"]);
}
