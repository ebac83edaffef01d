//! Runs the queue_communication lesson and its example and checks what they
//! claim, from outside.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;

use nix::sys::signal::Signal;
use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, example, numbers,
    run, speaker, Lesson, Outcome, HANG_LIMIT, SETTLE,
};

const BIN: &str = env!("CARGO_BIN_EXE_queue_communication");
const TOPIC: &str = "queue_communication";
const ITEMS: i64 = 5;

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

/// From the output alone: every item was received exactly once, each
/// consumer got each producer's items in increasing order, one sentinel
/// stopped each consumer, and the lesson's own summary says the same.
fn assert_exactly_once_in_order(o: &Outcome, producers: i64, consumers: usize) {
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
        .flat_map(|p| (1..=ITEMS).map(move |s| (p, s)))
        .collect();
    all.sort();
    assert_eq!(all, expected, "every item exactly once");
    let total = producers * ITEMS;
    let summary = numbers(o.line_with("exactly once:").split_once("] ").unwrap().1);
    assert_eq!(summary, vec![total, total, 0, 0]);
    let stops = o.lines_with("got a sentinel after");
    assert_eq!(stops.len(), consumers, "one sentinel per consumer");
    for line in stops {
        let pid = speaker(line).expect("prefixed").1;
        let n = got.get(&pid).map_or(0, Vec::len) as i64;
        assert_eq!(numbers(line.split_once("] ").unwrap().1), vec![n], "{line}");
    }
}

/// Every "queue full, waiting" line is a producer's, and is followed by that
/// producer's "sent" of the same item. Returns how many there were.
fn waits(o: &Outcome) -> usize {
    let waits = o.lines_with("queue full, waiting to send p");
    for line in &waits {
        let (role, pid) = speaker(line).expect("prefixed");
        assert!(role.starts_with("producer "), "{line}");
        let (p, s) = item_after(line, "send p").expect("an item");
        let sent = format!("[{role} {pid}] sent p{p}#{s}");
        assert!(o.stdout.contains(&sent), "{sent}:\n{}", o.stdout);
    }
    waits.len()
}

#[test]
fn every_item_arrives_exactly_once_and_in_order_per_producer() {
    let o = run(BIN, &[]);
    o.assert_success();
    assert_exactly_once_in_order(&o, 2, 2);
    assert!(waits(&o) >= 1, "10 items through a queue of 3 must fill it");
    assert!(o.line_with("backpressure:").starts_with("[parent "));
    let created = o.line_with("created /queue_communication-");
    assert!(created.contains("mode 0600 (says fstat)"), "{created}");
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    assert_nothing_left(TOPIC, o.pid);
}

#[test]
fn a_queue_of_one_makes_producers_wait() {
    let o = run(
        BIN,
        &["--capacity", "1", "--producers", "3", "--consumers", "2"],
    );
    o.assert_success();
    assert_exactly_once_in_order(&o, 3, 2);
    assert!(waits(&o) >= 1, "{}", o.stdout);
    assert_nothing_left(TOPIC, o.pid);
}

#[test]
fn many_producers_and_consumers_at_the_limit() {
    let o = run(
        BIN,
        &["--capacity", "10", "--producers", "8", "--consumers", "8"],
    );
    o.assert_success();
    assert_exactly_once_in_order(&o, 8, 8);
    assert!(waits(&o) >= 1);
    assert_nothing_left(TOPIC, o.pid);
}

#[test]
fn the_queue_never_fills_when_everything_fits() {
    let o = run(BIN, &["--producers", "2", "--capacity", "10"]);
    o.assert_success();
    assert_exactly_once_in_order(&o, 2, 2);
    assert_eq!(waits(&o), 0);
    assert!(o.lines_with("backpressure:").is_empty());
    assert_nothing_left(TOPIC, o.pid);
}

#[test]
fn higher_priorities_come_out_first() {
    let bin = example(BIN, "queue_communication_priorities");
    let o = run(&bin, &[]);
    o.assert_success();
    let prio = |l: &&str| *numbers(l).last().expect("a priority");
    let sent: Vec<i64> = o.lines_with("] sent").iter().map(prio).collect();
    let received: Vec<i64> = o.lines_with("] received").iter().map(prio).collect();
    assert_eq!(sent, vec![1, 9, 5, 5]);
    assert_eq!(received, vec![9, 5, 5, 1]);
    let labels: Vec<&str> = o
        .lines_with("] received")
        .iter()
        .map(|l| l.split('"').nth(1).expect("a label"))
        .collect();
    assert_eq!(
        labels,
        ["urgent", "normal", "normal, sent later", "routine"]
    );
    assert_nothing_left("queue_communication_priorities", o.pid);
}

#[test]
fn timed_waits_give_up_with_etimedout_once_the_time_has_passed() {
    let bin = example(BIN, "queue_communication_timeout");
    let o = run(&bin, &["--wait", "0.3"]);
    o.assert_success();
    assert!(o.line_with("mq_open: ENOENT").contains("name is gone"));
    for what in [
        "mq_timedreceive on the empty queue",
        "mq_timedsend on the full queue",
    ] {
        let line = o.line_with(what);
        let secs: f64 = line
            .rsplit("after ")
            .next()
            .unwrap()
            .trim_end_matches(" s")
            .parse()
            .unwrap();
        assert!(line.contains("ETIMEDOUT") && secs >= 0.3, "{line}");
    }
    assert_nothing_left("queue_communication_timeout", o.pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    let help = run(BIN, &["--help"]);
    for option in ["--producers", "--consumers", "--capacity", "msg_max"] {
        assert!(help.stdout.contains(option), "{option}: {}", help.stdout);
    }
    assert_values_rejected(BIN, "--producers", &["0", "1000"]);
    assert_values_rejected(BIN, "--consumers", &["0", "many"]);
    assert_values_rejected(BIN, "--capacity", &["0", "-3", "11"]);
    assert_help_and_bad_options(&example(BIN, "queue_communication_priorities"));
    let timeout = example(BIN, "queue_communication_timeout");
    assert_help_and_bad_options(&timeout);
    assert_values_rejected(&timeout, "--wait", &["0", "11", "soon"]);
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
