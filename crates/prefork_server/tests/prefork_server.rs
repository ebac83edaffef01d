//! Runs the prefork_server lesson and checks what it claims, from outside.

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_prefork_server");
const MODES: [&str; 2] = ["shared socket", "SO_REUSEPORT"];

/// One row of a run's table: (worker number, pid, requests answered).
fn table(o: &Outcome, mode: &str) -> Vec<(i64, i32, u64)> {
    o.lines_with(&format!("] {mode}: worker "))
        .into_iter()
        .map(|l| {
            // [parent P] MODE: worker N (pid W) answered C ... slept S times, woken for nothing E
            let n = numbers(l.split_once(": worker").expect("row").1);
            (n[0], n[1] as i32, n[2] as u64)
        })
        .collect()
}

/// The lines printed by the run of `mode`: from its heading to the next.
fn section<'a>(o: &'a Outcome, mode: &str) -> Vec<&'a str> {
    o.stdout
        .lines()
        .skip_while(|l| !l.ends_with(&format!("---- {mode} ----")))
        .skip(1)
        .take_while(|l| !l.contains("] ---- "))
        .collect()
}

/// Check one run's proof from its output: `workers` rows whose counts add
/// up to `connections + 1`, the same numbers in the workers' own exit
/// lines, and the in-flight request answered after SIGTERM by the worker
/// that held it.
fn check_run(o: &Outcome, mode: &str, workers: usize, connections: u64) {
    let parent = o.pid;
    let rows = table(o, mode);
    assert_eq!(rows.len(), workers, "{mode} table:\n{}", o.stdout);
    let total: u64 = rows.iter().map(|r| r.2).sum();
    assert_eq!(total, connections + 1, "{mode} counts:\n{}", o.stdout);
    let lines = section(o, mode);
    for (n, pid, count) in &rows {
        // The worker's own report, on exit, says the same count.
        let exit = lines
            .iter()
            .find(|l| {
                speaker(l) == Some((format!("worker {n}").as_str(), *pid))
                    && l.contains("SIGTERM from")
            })
            .unwrap_or_else(|| {
                panic!(
                    "{mode}: no exit line from worker {n} ({pid}):\n{}",
                    o.stdout
                )
            });
        assert!(
            exit.contains(&format!("SIGTERM from {parent}:")),
            "the parent sent SIGTERM: {exit}"
        );
        assert!(
            exit.contains(&format!("answered {count} requests")),
            "{mode}: worker {n} reports {count}: {exit}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "{} requests sent, {0} replies received, the workers counted {0}: every id answered exactly once",
            connections + 1
        ))),
        "{mode}:\n{}",
        o.stdout
    );
    // The in-flight request: held by one worker when SIGTERM came, answered
    // before that worker's exit line, and received by the late client.
    let slow = connections;
    let held = lines
        .iter()
        .position(|l| l.contains(&format!("request {slow} is in flight in worker")))
        .expect("in flight line");
    let busy = *numbers(lines[held]).last().expect("pid") as i32;
    let pending = lines
        .iter()
        .position(|l| {
            l.contains("SIGTERM is pending, but request") && speaker(l).map(|s| s.1) == Some(busy)
        })
        .expect("the busy worker saw SIGTERM while serving");
    assert!(
        pending > held,
        "SIGTERM came after the request was in flight"
    );
    let exit = lines
        .iter()
        .position(|l| l.contains("SIGTERM from") && speaker(l).map(|s| s.1) == Some(busy))
        .expect("the busy worker's exit line");
    assert!(exit > pending, "{mode}: the busy worker finished first");
    assert!(
        lines.iter().any(|l| l.starts_with("[late client ")
            && l.contains(&format!(
                "request {slow} was answered by worker {busy} after the shutdown began"
            ))),
        "{mode}:\n{}",
        o.stdout
    );
    assert!(rows.iter().any(|r| r.1 == busy), "the busy worker is ours");
}

#[test]
fn every_request_is_answered_exactly_once_both_ways() {
    let o = run(BIN, &[]);
    o.assert_success();
    for mode in MODES {
        check_run(&o, mode, 4, 400);
    }
    // How the port is shared, as the kernel's tables show it.
    assert!(o
        .line_with("/proc/net/tcp lists 1 socket listening on port")
        .contains("all 4 workers hold it"));
    assert!(o
        .line_with("/proc/net/tcp lists 4 sockets listening on port")
        .contains("one in each worker"));
    // Eight different workers in all, none of them the parent.
    let mut pids: Vec<i32> = MODES
        .iter()
        .flat_map(|m| table(&o, m))
        .map(|r| r.1)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 8);
    assert!(!pids.contains(&o.pid));
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left("prefork_server", o.pid);
}

#[test]
fn one_worker_and_one_client() {
    let o = run(
        BIN,
        &["--workers", "1", "--clients", "1", "--connections", "5"],
    );
    o.assert_success();
    for mode in MODES {
        check_run(&o, mode, 1, 5);
    }
    assert_nothing_left("prefork_server", o.pid);
}

#[test]
fn more_workers_and_clients_than_requests() {
    // Some workers answer nothing and some clients send nothing; the sums
    // must still be exact.
    let o = run(
        BIN,
        &["--workers", "6", "--clients", "5", "--connections", "3"],
    );
    o.assert_success();
    for mode in MODES {
        check_run(&o, mode, 6, 3);
    }
    assert_nothing_left("prefork_server", o.pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--workers", &["0", "17"]);
    assert_values_rejected(BIN, "--connections", &["0", "5001"]);
    assert_values_rejected(BIN, "--clients", &["0", "17"]);
}
