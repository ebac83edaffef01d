//! Runs the multiple_processes lesson and its examples and checks what they
//! claim, from outside.

use std::collections::BTreeMap;

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, example, numbers,
    run, speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_multiple_processes");

/// Worker number -> (PID, units of work), from the workers' own "started" lines.
fn workers_started(o: &Outcome) -> BTreeMap<i64, (i32, i64)> {
    o.lines_with("] started:")
        .iter()
        .map(|l| {
            let (role, pid) = speaker(l).expect("prefixed line");
            let n = role
                .strip_prefix("worker ")
                .and_then(|n| n.parse().ok())
                .expect("a worker's role");
            let units = numbers(l.split("started:").nth(1).expect("text"))[0];
            (n, (pid, units))
        })
        .collect()
}

fn check_side_by_side(o: &Outcome, workers: i64) {
    let started = workers_started(o);
    assert_eq!(
        started.keys().copied().collect::<Vec<_>>(),
        (1..=workers).collect::<Vec<_>>(),
        "{}",
        o.stdout
    );
    // Worker 1 has the most work, the last worker the least.
    for (n, (_, units)) in &started {
        assert_eq!(*units, workers + 1 - n, "worker {n}:\n{}", o.stdout);
    }
    // The parent saw every worker alive at once, by PID.
    let alive = o.line_with("workers are alive at once");
    assert_eq!(speaker(alive).expect("prefixed").1, o.pid);
    for (pid, _) in started.values() {
        assert!(alive.contains(&pid.to_string()), "{alive}");
    }
    // Each worker reaped once by the parent, with its own number as exit
    // code (a real status from waitpid). The order is not asserted: it
    // depends on timing (see the README's pitfall).
    let reaped = o.lines_with("] reaped worker ");
    assert_eq!(reaped.len(), workers as usize, "{}", o.stdout);
    let mut seen = Vec::new();
    for line in &reaped {
        assert_eq!(speaker(line).expect("prefixed").1, o.pid, "{line}");
        // "reaped worker N (pid P) after T s: exited with N"
        let n = numbers(line.split("reaped worker ").nth(1).expect("text"))[0];
        let pid = started[&n].0;
        assert!(line.contains(&format!("(pid {pid})")), "{line}");
        assert!(line.ends_with(&format!("exited with {n}")), "{line}");
        seen.push(n);
    }
    // The summary gives the order of the reaped lines.
    let order: Vec<String> = seen.iter().map(|n| format!("worker {n}")).collect();
    assert!(
        o.line_with("reaped in this order:")
            .ends_with(&order.join(", ")),
        "{}",
        o.stdout
    );
    seen.sort();
    assert_eq!(seen, (1..=workers).collect::<Vec<_>>());
    // Each worker said it was done before it was reaped.
    for n in 1..=workers {
        let done = o
            .stdout
            .find(&format!("] done: exiting with code {n}\n"))
            .expect("done line");
        let reaped = o
            .stdout
            .find(&format!("] reaped worker {n} "))
            .expect("reaped line");
        assert!(done < reaped, "worker {n}:\n{}", o.stdout);
    }
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
    let bin = example(BIN, "multiple_processes_states");
    let o = run(&bin, &[]);
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
    assert_nothing_left("multiple_processes_states", o.pid);
}

#[test]
fn the_overrunning_child_blocks_sigterm_and_is_killed_by_sigkill() {
    let bin = example(BIN, "multiple_processes_deadline");
    for pace in ["0", "0.1"] {
        let o = run(&bin, &["--pace", pace]);
        o.assert_success();
        let child = speaker(o.line_with("SIGTERM blocked;")).expect("prefixed");
        assert_eq!(child.0, "overrunner");
        let pid = child.1;
        assert!(o
            .line_with("SigBlk shows SIGTERM blocked")
            .contains(&format!("/proc/{pid}/status")));
        assert!(o.line_with("SigBlk").ends_with("(mask 0x4000)"));
        assert!(o
            .line_with("ShdPnd shows SIGTERM pending")
            .contains(&format!("/proc/{pid}/status")));
        let term = o.stdout.find("sending SIGTERM").expect("SIGTERM sent");
        let kill = o.stdout.find("sending SIGKILL").expect("SIGKILL sent");
        assert!(term < kill, "{}", o.stdout);
        assert!(
            o.line_with("reaped the overrunning child")
                .ends_with(&format!("{pid}: killed by SIGKILL")),
            "{}",
            o.stdout
        );
        assert!(!o.stdout.contains("nobody stopped me"));
        assert_nothing_left("multiple_processes_deadline", o.pid);
    }
}

#[test]
fn a_mutex_held_by_another_thread_stays_locked_in_the_child() {
    let bin = example(BIN, "multiple_processes_threads");
    let o = run(&bin, &[]);
    o.assert_success();
    assert!(o.line_with("threads here").contains("] 2 threads here"));
    let blocked = o.line_with("blocked in lock(): state S");
    let child = numbers(blocked.split("child ").nth(1).expect("text"))[0];
    assert!(blocked.contains("has 1 thread"), "{blocked}");
    assert!(o
        .line_with("unlocked the mutex")
        .ends_with("the parent can lock it again"));
    assert!(o
        .line_with("still blocked")
        .contains(&format!("child {child} is still blocked in lock()")));
    assert!(o
        .line_with("reaped child")
        .ends_with(&format!("{child}: killed by SIGKILL")));
    // The child never printed: it may make only async-signal-safe calls.
    assert!(o
        .stdout
        .lines()
        .all(|l| speaker(l).expect("prefixed").1 == o.pid));
    assert_nothing_left("multiple_processes_threads", o.pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--workers", &["0", "17", "-1"]);
    assert_values_rejected(BIN, "--work", &["-1", "11", "soon"]);
    for name in [
        "multiple_processes_states",
        "multiple_processes_deadline",
        "multiple_processes_threads",
    ] {
        assert_help_and_bad_options(&example(BIN, name));
    }
    let deadline = example(BIN, "multiple_processes_deadline");
    assert_values_rejected(&deadline, "--deadline", &["soon", "-1", "61"]);
    assert_values_rejected(&deadline, "--grace", &["61", "-0.5"]);
}
