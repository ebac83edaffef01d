//! Runs the queue_communication lesson and checks what it claims, from outside.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;

use nix::sys::signal::Signal;
use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_rejected, assert_values_rejected,
    numbers, run, speaker, Lesson, Outcome, HANG_LIMIT, SETTLE,
};

const BIN: &str = env!("CARGO_BIN_EXE_queue_communication");
const TOPIC: &str = "queue_communication";

/// The numbers of a line after its `[role pid]` prefix.
fn values(line: &str) -> Vec<i64> {
    numbers(line.split_once("] ").map_or(line, |(_, rest)| rest))
}

/// `(producer, seq)` of an item label such as `p2#3` right after `marker`.
fn item_after(line: &str, marker: &str) -> Option<(i64, i64)> {
    let rest = line.split_once(marker)?.1;
    let (p, s) = rest.split_once('#')?;
    let s: String = s.chars().take_while(char::is_ascii_digit).collect();
    Some((p.parse().ok()?, s.parse().ok()?))
}

/// What each consumer (by PID) printed as received, in its own order.
fn deliveries(o: &Outcome) -> BTreeMap<i32, Vec<(i64, i64)>> {
    let mut got: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for line in o.lines_with("] got p") {
        let (role, pid) = speaker(line).expect("prefixed line");
        assert!(role.starts_with("consumer "), "{line}");
        got.entry(pid)
            .or_default()
            .push(item_after(line, "got p").expect("an item label"));
    }
    got
}

/// From the output alone: every item of `producers` x `items` was received
/// exactly once, each consumer got each producer's items in increasing
/// order, and the lesson's own summary says the same.
fn assert_exactly_once_in_order(o: &Outcome, producers: i64, items: i64, consumers: usize) {
    let got = deliveries(o);
    assert!(got.len() <= consumers, "{got:?}");
    let mut all = Vec::new();
    for (pid, list) in &got {
        for p in 1..=producers {
            let seqs: Vec<i64> = list.iter().filter(|i| i.0 == p).map(|i| i.1).collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "consumer {pid} got producer {p}'s items as {seqs:?}"
            );
        }
        all.extend(list.iter().copied());
    }
    let expected: Vec<(i64, i64)> = (1..=producers)
        .flat_map(|p| (1..=items).map(move |s| (p, s)))
        .collect();
    all.sort();
    assert_eq!(all, expected, "every item exactly once");
    let summary = values(o.line_with("exactly once:"));
    let total = producers * items;
    assert_eq!(summary, vec![total, producers, items, total, 0, 0]);
    // Each consumer stopped at one sentinel, after the items it reported.
    let stops = o.lines_with("got a sentinel after");
    assert_eq!(stops.len(), consumers, "one sentinel per consumer");
    for line in stops {
        let pid = speaker(line).expect("prefixed").1;
        let n = got.get(&pid).map_or(0, Vec::len) as i64;
        assert_eq!(values(line), vec![n], "{line}");
    }
}

/// `(times full, deepest seen)` from the lesson's backpressure summary, after
/// checking it against the producers' own "queue full" lines.
fn backpressure(o: &Outcome, capacity: i64) -> (i64, i64) {
    let waits = o.lines_with("queue full, waiting");
    for line in &waits {
        let (role, _) = speaker(line).expect("prefixed");
        assert!(role.starts_with("producer "), "{line}");
    }
    let v = values(o.line_with("backpressure:"));
    assert_eq!(v.len(), 3, "{v:?}");
    assert_eq!(
        v[0],
        waits.len() as i64,
        "the count matches the producers' lines"
    );
    assert_eq!(v[1], capacity);
    assert!(v[2] <= capacity, "deepest {} > capacity {capacity}", v[2]);
    for line in o.lines_with("(queue holds") {
        let v = values(line);
        let (depth, of) = (v[v.len() - 2], v[v.len() - 1]);
        assert_eq!(of, capacity, "{line}");
        assert!(depth <= capacity, "{line}");
    }
    (v[0], v[2])
}

fn msg_max() -> i64 {
    std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max")
        .expect("read msg_max")
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn every_item_arrives_exactly_once_and_in_order_per_producer() {
    let o = run(BIN, &[]);
    o.assert_success();
    assert_exactly_once_in_order(&o, 2, 5, 2);
    let (full, _) = backpressure(&o, 3);
    assert!(full >= 1, "10 items through a queue of 3 must fill it");
    assert!(o.line_with("mq_open: ENOENT").contains("name is gone"));
    assert!(o.line_with("ETIMEDOUT").contains("queue is empty"));
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left(TOPIC, o.pid);
}

#[test]
fn a_queue_of_one_makes_producers_wait() {
    let o = run(
        BIN,
        &[
            "--capacity",
            "1",
            "--producers",
            "3",
            "--consumers",
            "2",
            "--items",
            "4",
        ],
    );
    o.assert_success();
    assert_exactly_once_in_order(&o, 3, 4, 2);
    let (full, deepest) = backpressure(&o, 1);
    assert!(full >= 1, "{}", o.stdout);
    assert!(deepest <= 1);
    assert!(o
        .line_with("opened the consumers' gate")
        .starts_with("[producer "));
    assert_nothing_left(TOPIC, o.pid);
}

#[test]
fn many_items_through_a_small_queue_at_the_limit() {
    // Capacity msg_max itself is allowed; more items than fit in it.
    let cap = msg_max();
    let o = run(
        BIN,
        &[
            "--capacity",
            &cap.to_string(),
            "--producers",
            "4",
            "--consumers",
            "3",
            "--items",
            "40",
        ],
    );
    o.assert_success();
    assert_exactly_once_in_order(&o, 4, 40, 3);
    let (full, _) = backpressure(&o, cap);
    assert!(full >= 1);
    assert_nothing_left(TOPIC, o.pid);
}

#[test]
fn the_queue_never_fills_when_everything_fits() {
    let o = run(
        BIN,
        &["--producers", "1", "--items", "2", "--capacity", "3"],
    );
    o.assert_success();
    assert_exactly_once_in_order(&o, 1, 2, 2);
    assert_eq!(backpressure(&o, 3).0, 0);
    assert!(o.line_with("never filled").starts_with("[parent "));
    assert_nothing_left(TOPIC, o.pid);
}

#[test]
fn higher_priorities_come_out_first() {
    let o = run(BIN, &["--items", "1"]);
    o.assert_success();
    let label = |l: &str| l.split('"').nth(1).expect("a quoted label").to_string();
    let sent: Vec<(String, i64)> = o
        .lines_with("priorities: sent")
        .iter()
        .map(|l| (label(l), *values(l).last().expect("a priority")))
        .collect();
    let received: Vec<(String, i64)> = o
        .lines_with("priorities: received")
        .iter()
        .map(|l| (label(l), *values(l).last().expect("a priority")))
        .collect();
    assert!(sent.len() >= 2, "{}", o.stdout);
    let distinct: BTreeSet<i64> = sent.iter().map(|s| s.1).collect();
    assert!(distinct.len() >= 2, "several priorities: {sent:?}");
    // What came out is what went in, sorted by priority, highest first,
    // and in send order within a priority (a stable sort).
    let mut expected = sent.clone();
    expected.sort_by_key(|s| std::cmp::Reverse(s.1));
    assert_eq!(received, expected);
    assert_ne!(received, sent, "the demo reorders something");
    assert_nothing_left(TOPIC, o.pid);
}

#[test]
fn a_capacity_above_msg_max_is_refused_before_anything_starts() {
    let max = msg_max();
    let o = assert_rejected(BIN, &["--capacity", &(max + 1).to_string()], "--capacity");
    assert!(o.stderr.contains("msg_max"), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!("({max})")),
        "names the limit: {}",
        o.stderr
    );
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    let help = run(BIN, &["--help"]);
    for option in [
        "--producers",
        "--consumers",
        "--items",
        "--capacity",
        "msg_max",
    ] {
        assert!(help.stdout.contains(option), "{option}: {}", help.stdout);
    }
    assert_values_rejected(BIN, "--producers", &["0", "1000"]);
    assert_values_rejected(BIN, "--consumers", &["0", "many"]);
    assert_values_rejected(BIN, "--items", &["0", "100000"]);
    assert_values_rejected(BIN, "--capacity", &["0", "-3"]);
}

/// Start the lesson at a human pace, wait for the first "queue full" (the
/// queue is in use by every process then), send `signal` to the main
/// process alone or to the whole group, and check it left nothing.
fn interrupt_while_full(signal: Signal, whole_group: bool) {
    let mut r = Lesson::start(BIN, &[], "2");
    let full = r
        .wait_for_line(|l| l.contains("queue full, waiting"), HANG_LIMIT)
        .is_some();
    if whole_group {
        r.signal_group(signal as i32);
    } else {
        r.signal(signal as i32);
    }
    let status = r.wait_within(HANG_LIMIT);
    assert!(full, "no \"queue full\" line; saw:\n{}", r.stdout());
    assert_eq!(status.signal(), Some(signal as i32), "{status:?}");
    r.assert_all_gone(TOPIC, SETTLE);
}

#[test]
fn a_sigkill_of_the_main_process_alone_leaves_nothing() {
    interrupt_while_full(Signal::SIGKILL, false);
}

#[test]
fn sigint_to_the_whole_group_leaves_nothing() {
    interrupt_while_full(Signal::SIGINT, true);
}
