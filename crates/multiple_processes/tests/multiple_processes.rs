//! Runs the multiple_processes lesson and checks what it claims, from outside.

use std::collections::BTreeMap;

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_multiple_processes");

/// Worker number -> PID, from the workers' own "started" lines.
fn worker_pids(o: &Outcome) -> BTreeMap<i64, i32> {
    o.lines_with("] started:")
        .iter()
        .map(|l| {
            let (role, pid) = speaker(l).expect("prefixed line");
            let n = role
                .strip_prefix("worker ")
                .and_then(|n| n.parse().ok())
                .expect("a worker's role");
            (n, pid)
        })
        .collect()
}

fn check_side_by_side(o: &Outcome, workers: i64) {
    let pids = worker_pids(o);
    assert_eq!(
        pids.keys().copied().collect::<Vec<_>>(),
        (1..=workers).collect::<Vec<_>>(),
        "{}",
        o.stdout
    );
    // The parent saw every worker alive at once, by PID.
    let alive = o.line_with("workers are alive at the same moment");
    assert_eq!(speaker(alive).expect("prefixed").1, o.pid);
    for pid in pids.values() {
        assert!(alive.contains(&pid.to_string()), "{alive}");
    }
    // Each worker reaped once, with its own number as exit code. The order
    // is not asserted: the lesson does not enforce it (see its pitfall).
    let reaped = o.lines_with("] reaped worker ");
    assert_eq!(reaped.len(), workers as usize, "{}", o.stdout);
    let mut seen = Vec::new();
    for line in reaped {
        // "reaped worker N (pid P, U unit(s)) after T s: exited with N"
        let n = numbers(line.split("reaped worker ").nth(1).expect("text"))[0];
        let pid = pids[&n];
        assert!(
            line.contains(&format!("(pid {pid}, {} unit(s))", workers + 1 - n)),
            "{line}"
        );
        assert!(line.ends_with(&format!("exited with {n}")), "{line}");
        seen.push(n);
    }
    seen.sort();
    assert_eq!(seen, (1..=workers).collect::<Vec<_>>());
}

#[test]
fn workers_run_side_by_side_and_are_all_reaped_with_their_codes() {
    let o = run(BIN, &[]);
    o.assert_success();
    check_side_by_side(&o, 3);
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left("multiple_processes", o.pid);
}

#[test]
fn more_workers_with_real_work() {
    let o = run(BIN, &["--workers", "6", "--pace", "0.1"]);
    o.assert_success();
    check_side_by_side(&o, 6);
    assert_nothing_left("multiple_processes", o.pid);
}

#[test]
fn the_watched_child_goes_through_r_s_t_s_z() {
    let o = run(BIN, &[]);
    o.assert_success();
    let watched = speaker(o.line_with("spinning on the CPU"))
        .expect("prefixed")
        .1;
    let states: Vec<char> = o
        .lines_with(&format!("child {watched} is in state "))
        .iter()
        .map(|l| {
            assert_eq!(speaker(l).expect("prefixed").1, o.pid, "{l}");
            l.split("is in state ")
                .nth(1)
                .expect("state")
                .chars()
                .next()
                .expect("letter")
        })
        .collect();
    assert_eq!(states, ['R', 'S', 'T', 'S', 'Z'], "{}", o.stdout);
    assert!(o
        .line_with("waitpid(WUNTRACED)")
        .ends_with("stopped by SIGSTOP"));
    assert!(o.line_with("waitpid(WCONTINUED)").ends_with("continued"));
    assert!(o
        .line_with(&format!("reaped the watched child {watched}"))
        .ends_with("exited with 7"));
    assert_nothing_left("multiple_processes", o.pid);
}

#[test]
fn the_overrunning_child_ignores_sigterm_and_is_killed_by_sigkill() {
    let o = run(BIN, &[]);
    o.assert_success();
    let child = speaker(o.line_with("SIGTERM blocked;")).expect("prefixed");
    assert_eq!(child.0, "overrunner");
    let pid = child.1;
    assert!(o
        .line_with("SigBlk shows SIGTERM blocked")
        .contains(&pid.to_string()));
    assert!(o
        .line_with("ShdPnd shows SIGTERM pending")
        .contains(&pid.to_string()));
    assert!(o.stdout.contains("sending SIGTERM"));
    assert!(o.stdout.contains("sending SIGKILL"));
    assert!(
        o.line_with("reaped the overrunning child")
            .ends_with(&format!("{pid}: killed by SIGKILL")),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("nobody stopped me"));
    assert_nothing_left("multiple_processes", o.pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--workers", &["0", "17"]);
    assert_values_rejected(BIN, "--work", &["-1", "11"]);
    assert_values_rejected(BIN, "--deadline", &["soon"]);
    assert_values_rejected(BIN, "--grace", &["61"]);
}
