//! Runs the process_barrier lesson and checks what it claims, from outside.

use std::collections::{HashMap, HashSet};

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_process_barrier");

/// The numbers after the `[role pid]` prefix.
fn figures(line: &str) -> Vec<i64> {
    numbers(line.split_once("] ").expect("prefixed line").1)
}

/// The phase number of a worker's "phase K: ..." line.
fn phase_of(line: &str) -> i64 {
    figures(line)[0]
}

/// Part 1, checked from the workers' own lines: in every phase each worker
/// finished once and exactly one arrived last, and every "finished" ticket
/// of phase k is below every ticket of phase k+1 (tickets are taken in
/// order, so the finish tickets alone show the phases did not overlap).
fn check_phases(o: &Outcome, workers: usize, phases: i64) {
    let part1: Vec<&str> = o
        .stdout
        .lines()
        .take_while(|l| !l.contains("part 2"))
        .collect();
    let mut finished: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut lasts: HashMap<i64, usize> = HashMap::new();
    let mut finishers: HashMap<i64, HashSet<i32>> = HashMap::new();
    for l in &part1 {
        let Some((role, pid)) = speaker(l) else {
            continue;
        };
        if !role.starts_with("worker") {
            continue;
        }
        if l.contains("finished (#") {
            let f = figures(l);
            finished.entry(f[0]).or_default().push(f[1]);
            assert!(finishers.entry(f[0]).or_default().insert(pid), "{l}");
        } else if l.contains("I arrived last") {
            *lasts.entry(phase_of(l)).or_default() += 1;
        }
    }
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
        let f = figures(l);
        assert!(f[2] < f[3], "last finish < first start: {l}");
    }
    o.line_with(&format!(
        "each of the {phases} phases had exactly one last arriver"
    ));
}

/// Part 2: the dying worker was killed, every survivor reported the
/// barrier broken, exactly one of them by timing out first.
fn check_broken(o: &Outcome, workers: usize) {
    let part2 = o.stdout.split_once("part 2").expect("part 2").1;
    let dying = o.line_with("dying before I reach the barrier");
    let (_, dead) = speaker(dying).expect("prefixed");
    assert!(o
        .line_with("killed by SIGKILL")
        .contains(&format!("worker {} killed by SIGKILL", workers - 1)));
    let broke: Vec<&str> = part2
        .lines()
        .filter(|l| l.contains("I broke the barrier"))
        .collect();
    let told: Vec<&str> = part2
        .lines()
        .filter(|l| l.contains("the barrier is broken, no more waiting"))
        .collect();
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
}

#[test]
fn phases_stay_in_step_and_a_dead_worker_breaks_the_barrier() {
    let o = run(BIN, &[]);
    o.assert_success();
    check_phases(&o, 4, 3);
    check_broken(&o, 4);
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left("process_barrier", o.pid);
}

#[test]
fn the_same_barrier_serves_many_phases() {
    let o = run(BIN, &["--workers", "3", "--phases", "12"]);
    o.assert_success();
    check_phases(&o, 3, 12);
    check_broken(&o, 3);
    assert_nothing_left("process_barrier", o.pid);
}

#[test]
fn bench_prints_one_tsv_line() {
    let o = run(BIN, &["--bench", "--rounds", "2000"]);
    o.assert_success();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "TSV only: {:?}", o.stdout);
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(fields.len(), 3, "{:?}", lines[0]);
    assert_eq!(fields[0], "rs.barrier_2proc");
    let rate: f64 = fields[1].parse().expect("a number");
    assert!(rate > 0.0, "{rate}");
    assert_eq!(fields[2], "rounds/s");
    assert_nothing_left("process_barrier", o.pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--workers", &["1", "1000"]);
    assert_values_rejected(BIN, "--phases", &["0", "x"]);
    assert_values_rejected(BIN, "--rounds", &["0", "1000000000"]);
}
