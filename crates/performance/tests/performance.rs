//! Runs the performance lesson in quick mode: its exactness checks pass and
//! every figure is reported. No timing is asserted.

use testkit::{assert_help_and_bad_options, assert_nothing_left, assert_rejected, run};

const BIN: &str = env!("CARGO_BIN_EXE_performance");

const FIGURES: &[(&str, &str)] = &[
    ("rs.thread_spawn_join", "us"),
    ("rs.fork_exit_wait", "us/proc"),
    ("rs.fork_helper_exit_wait", "us/proc"),
    ("rs.command_spawn_wait", "us/proc"),
    ("rs.pipe_64k_throughput", "GB/s"),
    ("rs.shm_handoff_throughput", "GB/s"),
    ("rs.pingpong_pipe", "us/roundtrip"),
    ("rs.pingpong_posix_mq", "us/roundtrip"),
    ("rs.pingpong_sem_pshared", "us/roundtrip"),
    ("rs.pingpong_futex_shared", "us/roundtrip"),
    ("rs.lock_mutex_posix", "incr/s"),
    ("rs.lock_mutex_futex", "incr/s"),
    ("rs.lock_atomic_fetch_add", "incr/s"),
];

#[test]
fn quick_run_checks_every_count() {
    let o = run(BIN, &["--quick"]);
    o.assert_success();
    assert!(o.stdout.contains("all counts exact"), "{}", o.stdout);
    assert!(
        o.stdout.contains("debug build") == cfg!(debug_assertions),
        "warns about debug builds"
    );
    assert_nothing_left("performance", o.pid);
}

#[test]
fn tsv_reports_every_figure_once() {
    let o = run(BIN, &["--quick", "--tsv"]);
    o.assert_success();
    let lines: Vec<Vec<&str>> = o.stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        lines.len(),
        FIGURES.len(),
        "one line per figure:\n{}",
        o.stdout
    );
    for (name, unit) in FIGURES {
        let row = lines
            .iter()
            .find(|r| r[0] == *name)
            .unwrap_or_else(|| panic!("{name} missing:\n{}", o.stdout));
        assert_eq!(row.len(), 3, "{row:?}");
        let value: f64 = row[1].parse().expect("a number");
        assert!(value.is_finite() && value > 0.0, "{name} = {value}");
        assert_eq!(row[2], *unit, "{name}");
    }
    assert_nothing_left("performance", o.pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_rejected(BIN, &["--quick=yes"], "--quick");
}
