//! Runs the process_pool lesson and checks what it claims, from outside.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_rejected, assert_values_rejected,
    numbers, run, speaker, Lesson, Outcome, HANG_LIMIT, SETTLE,
};

const BIN: &str = env!("CARGO_BIN_EXE_process_pool");

/// One run with the defaults (3 workers, 10 tasks), shared by the tests
/// that read its output.
fn default_run() -> &'static Outcome {
    static RUN: OnceLock<Outcome> = OnceLock::new();
    RUN.get_or_init(|| {
        let o = run(BIN, &[]);
        o.assert_success();
        assert_nothing_left("process_pool", o.pid);
        o
    })
}

fn sum_to(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// A result line: `[parent P] <what>: task ID <op>(N) = VALUE by worker W pid PID`.
#[derive(Debug)]
struct Done {
    id: u64,
    input: u64,
    value: u64,
    pid: i32,
}

fn done_lines(o: &Outcome, what: &str) -> Vec<Done> {
    o.lines_with(&format!("] {what}: task "))
        .into_iter()
        .filter(|l| l.contains(" by worker "))
        .map(|l| {
            assert_eq!(speaker(l).map(|s| s.0), Some("parent"), "{l}");
            // [P, id, input, (input again for x * x), value, worker, pid]
            let n = numbers(l);
            let value = n[n.len() - 3];
            Done {
                id: n[1] as u64,
                input: n[2] as u64,
                value: value as u64,
                pid: n[n.len() - 1] as i32,
            }
        })
        .collect()
}

/// The worker PIDs from `pool: 3 workers started once, pids a, b, c; ...`.
fn first_workers(o: &Outcome) -> Vec<i32> {
    let line = o.line_with("workers started once, pids");
    let pids = line
        .split("pids ")
        .nth(1)
        .expect("pids")
        .split(';')
        .next()
        .expect("list");
    numbers(pids).into_iter().map(|p| p as i32).collect()
}

#[test]
fn results_are_correct_in_submission_order_and_as_completed() {
    let o = default_run();
    let map = done_lines(o, "map");
    let done = done_lines(o, "as_completed");
    assert_eq!(map.len(), 10, "{}", o.stdout);
    assert_eq!(done.len(), 10, "{}", o.stdout);
    // map: in submission order, each value right, and values beyond 0-255.
    for (k, d) in map.iter().enumerate() {
        assert_eq!(d.id, map[0].id + k as u64, "map keeps submission order");
        assert_eq!(d.value, sum_to(d.input), "{d:?}");
        assert!(d.value > 255);
    }
    // as_completed: the same inputs, every task once, each value right.
    let ids: BTreeSet<u64> = done.iter().map(|d| d.id).collect();
    let first = map.last().expect("map results").id + 1;
    assert_eq!(ids, (first..first + 10).collect());
    for d in &done {
        assert_eq!(d.value, sum_to(d.input), "{d:?}");
        assert_eq!(d.input, map[(d.id - first) as usize].input, "same inputs");
    }
}

#[test]
fn the_same_worker_pids_serve_many_tasks() {
    let o = default_run();
    let workers = first_workers(o);
    assert_eq!(workers.len(), 3);
    let mut served: BTreeMap<i32, usize> = BTreeMap::new();
    for d in done_lines(o, "map")
        .iter()
        .chain(&done_lines(o, "as_completed"))
    {
        *served.entry(d.pid).or_default() += 1;
    }
    let total: usize = served.values().sum();
    assert_eq!(total, 20);
    assert!(served.len() < total, "fewer processes than tasks");
    for (pid, n) in &served {
        assert!(workers.contains(pid), "pid {pid} is not a pool worker");
        assert!(*n >= 2, "pid {pid} served {n}: each worker served several");
    }
    assert!(o.stdout.contains("children of pid"), "/proc check shown");
    assert!(o.line_with("reuse:").contains("each reused"));
}

#[test]
fn each_fault_fails_alone_with_its_decoded_status() {
    let o = default_run();
    let failed = |what: &str| {
        let line = o.line_with(&format!("({what}) failed: "));
        line.split("failed: ").nth(1).expect("cause").to_string()
    };
    assert_eq!(failed("panic"), "exited with 101");
    assert!(failed("abort").starts_with("killed by SIGABRT"));
    assert_eq!(failed("SIGKILL halfway"), "killed by SIGKILL");
    assert_eq!(
        failed("hang"),
        "stopped answering, killed by the pool: killed by SIGKILL"
    );
    assert_eq!(
        o.lines_with(") failed: ").len(),
        4,
        "only the injected faults failed"
    );
    // Every other task of the batch is done, with the right value: 2 per worker.
    let others = done_lines(o, "faults");
    assert_eq!(others.len(), 6, "{}", o.stdout);
    for d in &others {
        assert_eq!(d.value, d.input * d.input, "{d:?}");
    }
    // Each dead worker was reaped, replaced, and its queued tasks resubmitted.
    assert_eq!(o.lines_with("in its place").len(), 4);
    assert!(
        !o.lines_with("without a result: resubmitted").is_empty(),
        "{}",
        o.stdout
    );
    let summary = o.line_with("faults: the 4 failures");
    let n = numbers(summary);
    assert_eq!(n[2], 4, "4 workers replaced: {summary}");
    assert!(n[3] >= 1, "queued tasks resubmitted: {summary}");
    // The workers said what they did, under their own names.
    for what in [
        "calling abort()",
        "killed by SIGKILL (as",
        "waiting forever",
    ] {
        let l = o.line_with(what);
        assert!(speaker(l).expect("prefix").0.starts_with("worker "), "{l}");
    }
    assert!(o.stderr.contains("panicked: task"), "{}", o.stderr);
}

#[test]
fn speedup_and_overhead_are_measured() {
    let o = default_run();
    let cpu = o.line_with("speedup");
    assert!(cpu.contains("ideal here"), "{cpu}");
    let over = o.line_with("overhead per trivial task");
    assert!(over.contains("forking a process per task"), "{over}");
    // The exit status keeps 8 bits: 1000 * 1000 = 1000000 comes back as 64.
    let trunc = o.line_with("fork per task returned");
    assert!(trunc.contains("returned 64 for 1000 * 1000"), "{trunc}");
    assert!(trunc.contains("the pool returned 1000000"), "{trunc}");
}

#[test]
fn close_and_terminate_leave_no_worker_and_no_zombie() {
    let o = default_run();
    let close = o.line_with("close: the ");
    assert!(close.contains("3 workers exited with 0"), "{close}");
    let term = o.line_with("terminate: 3 workers killed by SIGKILL");
    assert!(term.contains("gone from /proc"), "{term}");
    assert!(o.stdout.contains("no child process left"));
    assert!(o.stdout.ends_with("all checks passed\n"));
}

fn passes_with(args: &[&str], tasks: usize) {
    let o = run(BIN, args);
    o.assert_success();
    assert_eq!(done_lines(&o, "map").len(), tasks, "{}", o.stdout);
    assert_eq!(done_lines(&o, "as_completed").len(), tasks);
    assert_nothing_left("process_pool", o.pid);
}

#[test]
fn one_worker_one_task_in_flight_passes() {
    passes_with(&["--workers", "1", "--tasks", "3", "--inflight", "1"], 3);
}

#[test]
fn more_workers_than_tasks_passes() {
    passes_with(&["--workers", "5", "--tasks", "2", "--inflight", "64"], 2);
}

#[test]
fn bench_prints_three_tsv_figures() {
    let o = run(BIN, &["--bench", "--bench-tasks", "200"]);
    o.assert_success();
    let lines: Vec<&str> = o.stdout.lines().collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split('\t').next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "rs.pool2_tasks",
            "rs.pool2_map_chunked",
            "rs.cpu_speedup_2_vs_1_workers"
        ],
        "{}",
        o.stdout
    );
    for l in &lines {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f.len(), 3, "name<TAB>value<TAB>unit: {l:?}");
        let v: f64 = f[1].parse().expect("a number");
        assert!(v.is_finite() && v > 0.0, "{l}");
        assert!(!f[2].is_empty());
    }
    assert!(o.stderr.is_empty(), "{}", o.stderr);
    assert_nothing_left("process_pool", o.pid);
}

/// Start the lesson in a session of its own, wait until it pauses for the
/// reader (a 60 s pause at pace 20), and send `signal` to its whole process
/// group or to its main process alone. The lesson is waited for; its stderr
/// is read when the whole group was signalled.
fn interrupt_at_pause(
    signal: i32,
    whole_group: bool,
) -> (Lesson, std::process::ExitStatus, String) {
    let mut r = Lesson::start(BIN, &[], "20");
    r.expect_line("pausing", HANG_LIMIT);
    if whole_group {
        r.signal_group(signal);
    } else {
        r.signal(signal);
    }
    let status = r.wait_within(HANG_LIMIT);
    let stderr = if whole_group {
        r.stderr(SETTLE)
    } else {
        String::new()
    };
    (r, status, stderr)
}

#[test]
fn ctrl_c_or_sigterm_terminates_the_pool_and_leaves_nothing() {
    for (signal, name, code) in [
        (libc::SIGINT, "SIGINT", 130),
        (libc::SIGTERM, "SIGTERM", 143),
    ] {
        let (r, status, stderr) = interrupt_at_pause(signal, true);
        assert_eq!(status.code(), Some(code), "{name}: {status:?} {stderr}");
        assert!(
            stderr.contains(&format!(
                "interrupted by {name}: the pool was terminated; no worker and no zombie left"
            )),
            "{stderr}"
        );
        r.assert_all_gone("process_pool", SETTLE);
    }
}

#[test]
fn killing_the_main_process_alone_takes_the_workers_with_it() {
    let (r, status, _) = interrupt_at_pause(libc::SIGKILL, false);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    // PR_SET_PDEATHSIG: each worker gets SIGKILL when the parent dies.
    r.assert_all_gone("process_pool", SETTLE);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    let help = run(BIN, &["--help"]);
    assert!(help.stdout.contains("--workers N") && help.stdout.contains("(1-64, default 3)"));
    assert_values_rejected(BIN, "--workers", &["0", "1000"]);
    assert_values_rejected(BIN, "--tasks", &["0", "1001"]);
    assert_values_rejected(BIN, "--inflight", &["0", "65"]);
    assert_values_rejected(BIN, "--stuck-after", &["0.5", "601"]);
    assert_values_rejected(BIN, "--bench-tasks", &["10", "x"]);
    assert_rejected(BIN, &["--bench=yes"], "--bench");
}
