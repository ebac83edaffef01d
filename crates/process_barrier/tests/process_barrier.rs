//! Runs the process_barrier lesson and its examples and checks what they
//! claim, from outside.

use std::collections::{HashMap, HashSet};

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_rejected, assert_values_rejected,
    example, numbers, run, speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_process_barrier");

/// The numbers after the `[role pid]` prefix.
fn figures(line: &str) -> Vec<i64> {
    numbers(line.split_once("] ").expect("prefixed line").1)
}

/// The lesson, checked from the workers' own lines: in every phase each
/// worker finished once and exactly one arrived last, and every "finished"
/// ticket of phase k is below every ticket of phase k+1 (tickets are taken
/// in order, so the finish tickets alone show the phases did not overlap).
fn check_phases(o: &Outcome, workers: usize, phases: i64) {
    let mut finished: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut lasts: HashMap<i64, usize> = HashMap::new();
    let mut finishers: HashMap<i64, HashSet<i32>> = HashMap::new();
    for l in o.stdout.lines() {
        let (role, pid) = speaker(l).expect("every line is prefixed");
        if !role.starts_with("worker") {
            continue;
        }
        if l.contains("finished (#") {
            let f = figures(l);
            finished.entry(f[0]).or_default().push(f[1]);
            assert!(finishers.entry(f[0]).or_default().insert(pid), "{l}");
        } else if l.contains("I arrived last") {
            *lasts.entry(figures(l)[0]).or_default() += 1;
        }
    }
    assert_eq!(finishers.len() as i64, phases, "{}", o.stdout);
    for k in 0..phases {
        assert_eq!(finishers[&k].len(), workers, "phase {k}:\n{}", o.stdout);
        assert_eq!(lasts.get(&k), Some(&1), "one last arriver in phase {k}");
        if k > 0 {
            let before = finished[&(k - 1)].iter().max().unwrap();
            let after = finished[&k].iter().min().unwrap();
            assert!(before < after, "phase {k} overlaps phase {}", k - 1);
        }
    }
    // The parent's own proof, one line per boundary.
    for k in 1..phases {
        let l = o.line_with(&format!("phase {} -> {k}:", k - 1));
        assert_eq!(speaker(l).expect("prefixed"), ("parent", o.pid), "{l}");
        let f = figures(l);
        assert!(f[2] < f[3], "last finish < first start: {l}");
    }
    o.line_with(&format!(
        "each of the {phases} phases had exactly one last arriver"
    ));
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
}

#[test]
fn phases_stay_in_step_with_one_last_arriver_each() {
    let o = run(BIN, &[]);
    o.assert_success();
    check_phases(&o, 4, 3);
    assert_nothing_left("process_barrier", o.pid);
}

#[test]
fn the_same_barrier_serves_many_phases() {
    for (workers, phases) in [(3, 12), (2, 32), (16, 2)] {
        let (w, p) = (workers.to_string(), phases.to_string());
        let o = run(BIN, &["--workers", &w, "--phases", &p]);
        o.assert_success();
        check_phases(&o, workers, phases);
        assert_nothing_left("process_barrier", o.pid);
    }
}

/// The broken barrier: the dying worker was killed, every survivor reported
/// the barrier broken, exactly one of them by timing out first, and a late
/// arrival is refused at once.
fn check_broken(o: &Outcome, workers: usize) {
    let dying = o.line_with("dying before I reach the barrier");
    let (_, dead) = speaker(dying).expect("prefixed");
    assert!(o
        .line_with("killed by SIGKILL")
        .contains(&format!("worker {} killed by SIGKILL", workers - 1)));
    let broke = o.lines_with("I broke the barrier");
    let told = o.lines_with("the barrier is broken, no more waiting");
    assert_eq!(broke.len(), 1, "one waiter timed out first:\n{}", o.stdout);
    assert_eq!(broke.len() + told.len(), workers - 1, "{}", o.stdout);
    let survivors: HashSet<i32> = broke
        .iter()
        .chain(&told)
        .map(|l| speaker(l).expect("prefixed").1)
        .collect();
    assert_eq!(survivors.len(), workers - 1);
    assert!(!survivors.contains(&dead));
    let breaker = speaker(broke[0]).expect("prefixed").1;
    let summary = o.line_with("survivors reported the barrier broken");
    assert_eq!(figures(summary), vec![workers as i64 - 1, breaker as i64]);
    assert!(o.line_with("a late arrival").ends_with("Broken"));
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
}

#[test]
fn a_dead_worker_breaks_the_barrier_for_everyone() {
    let bin = example(BIN, "process_barrier_broken");
    for workers in [4, 2] {
        let o = run(&bin, &["--workers", &workers.to_string()]);
        o.assert_success();
        check_broken(&o, workers);
        assert_nothing_left("process_barrier_broken", o.pid);
    }
}

#[test]
fn bench_counts_every_round_and_prints_one_tsv_line() {
    let bin = example(BIN, "process_barrier_bench");
    let o = run(&bin, &["--rounds", "2000"]);
    o.assert_success();
    assert!(
        o.line_with("rounds/s").contains("2000 rounds in"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);

    let o = run(&bin, &["--tsv", "--rounds", "2000"]);
    o.assert_success();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "TSV only: {:?}", o.stdout);
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(fields.len(), 3, "{:?}", lines[0]);
    assert_eq!(fields[0], "rs.barrier_2proc");
    let rate: f64 = fields[1].parse().expect("a number");
    assert!(rate > 0.0, "{rate}");
    assert_eq!(fields[2], "rounds/s");
    assert_nothing_left("process_barrier_bench", o.pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--workers", &["1", "17", "-3"]);
    assert_values_rejected(BIN, "--phases", &["0", "33", "x"]);
    let broken = example(BIN, "process_barrier_broken");
    assert_help_and_bad_options(&broken);
    assert_values_rejected(&broken, "--workers", &["1", "17"]);
    let bench = example(BIN, "process_barrier_bench");
    assert_help_and_bad_options(&bench);
    assert_values_rejected(&bench, "--rounds", &["0", "1000001", "many"]);
    assert_rejected(&bench, &["--tsv=yes"], "--tsv");
}
