//! Runs the signals lesson and its examples and checks what they claim, from
//! outside; one test sends the signalfd example a SIGUSR1 itself while it
//! blocks it.

use std::thread;
use std::time::{Duration, Instant};

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, example, numbers,
    run, speaker, Lesson, HANG_LIMIT, SETTLE,
};

const BIN: &str = env!("CARGO_BIN_EXE_signals");

fn graceful_run(signal_at: i64) {
    let at_arg = signal_at.to_string();
    let o = run(BIN, &["--signal-at", &at_arg]);
    o.assert_success();
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    // The worker with a handler finished the step the signal came in.
    let graceful = o.line_with("began no other");
    let (role, worker) = speaker(graceful).expect("prefixed");
    assert_eq!(role, "worker");
    let n = numbers(graceful);
    let (at, finished, saved) = (n[n.len() - 4], n[n.len() - 3], n[n.len() - 2]);
    assert!(at >= signal_at, "signal in step {at}, sent at {signal_at}");
    assert_eq!((at, finished, saved), (at, at, at), "{graceful}");
    assert!(o
        .line_with("checked: SIGTERM came")
        .contains(&format!("all {at} results saved")));
    assert!(o.stdout.contains(&format!("worker {worker} exited with 0")));
    let (role, parent) = speaker(o.line_with("kill(")).expect("prefixed");
    assert_eq!((role, parent), ("parent", o.pid));
    assert_nothing_left("signals", o.pid);
}

#[test]
fn the_worker_finishes_its_step_and_saves_its_results() {
    graceful_run(3);
}

#[test]
fn the_worker_stops_in_the_step_it_is_told() {
    graceful_run(7);
}

#[test]
fn a_worker_without_a_handler_loses_its_results() {
    let o = run(example(BIN, "signals_no_handler"), &[]);
    o.assert_success();
    let killed = o.line_with("killed by SIGTERM");
    let victim = numbers(killed)[1];
    let (role, worker) = speaker(o.line_with("no SIGTERM handler")).expect("prefixed");
    assert_eq!((role, i64::from(worker)), ("worker", victim));
    assert!(o.line_with("were lost").contains("(0 saved)"));
    assert!(!o.stdout.contains("exiting 0"), "{}", o.stdout);
    assert_nothing_left("signals_no_handler", o.pid);
}

#[test]
fn signal_0_on_a_live_child_a_zombie_and_a_reaped_pid() {
    let o = run(example(BIN, "signals_kill"), &[]);
    o.assert_success();
    let sleeper = speaker(o.line_with("sleeping in pause()"))
        .expect("prefixed")
        .1;
    assert!(o
        .line_with("while it runs")
        .contains(&format!("kill({sleeper}, 0) while it runs: ok")));
    assert!(o.stdout.contains("SIGCHLD: the handler set the flag"));
    assert!(o.line_with("while it is a zombie").contains(": ok:"));
    assert!(o
        .line_with("reaped child")
        .contains(&format!("{sleeper}: killed by SIGUSR1")));
    assert!(o.line_with("after reaping").contains("ESRCH"));
    assert_nothing_left("signals_kill", o.pid);
}

#[test]
fn three_sigusr1_are_read_as_one_from_the_signalfd() {
    let o = run(example(BIN, "signals_signalfd"), &[]);
    o.assert_success();
    assert!(o.line_with("status SigBlk").contains("SIGUSR1 SIGCHLD"));
    assert!(o.line_with("status SigIgn").contains("SIGPIPE"));
    assert!(o.line_with("status SigCgt").contains("SIGCHLD"));
    let sender = speaker(o.line_with("three times")).expect("prefixed").1;
    assert!(o
        .line_with("read SIGCHLD from the signalfd")
        .contains(&format!("child {sender} exited with status 5")));
    assert!(o
        .line_with("do not queue")
        .contains("delivered it 1 time(s)"));
    assert!(o.stdout.contains("the SIGCHLD handler never ran"));
    assert_nothing_left("signals_signalfd", o.pid);
}

#[test]
fn sigkill_and_sigstop_cannot_be_caught() {
    let o = run(example(BIN, "signals_uncatchable"), &[]);
    o.assert_success();
    assert!(o.line_with("sigaction(SIGKILL").ends_with("EINVAL"));
    assert!(o.line_with("sigaction(SIGSTOP").ends_with("EINVAL"));
    let stubborn = o.line_with("installed a handler for");
    assert!(
        stubborn.contains("SIGKILL: EINVAL") && stubborn.contains("SIGSTOP: EINVAL"),
        "{stubborn}"
    );
    assert!(o.line_with("lacks").ends_with("lacks SIGKILL SIGSTOP"));
    assert!(o.line_with("SIGTERM to child").contains("lives on"));
    assert!(o.line_with("SIGSTOP to child").contains("state T"));
    assert!(o
        .line_with("SIGKILL to child")
        .ends_with("killed by SIGKILL"));
    assert_nothing_left("signals_uncatchable", o.pid);
}

/// The SigBlk bit of SIGUSR1 in `/proc/<pid>/status`.
fn blocks_sigusr1(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|m| m & (1 << (libc::SIGUSR1 - 1)) != 0)
}

#[test]
fn a_sigusr1_from_outside_is_read_from_the_signalfd() {
    // A long window at a fast pace: up to 30 s, ended by our signal.
    let bin = example(BIN, "signals_signalfd");
    let mut r = Lesson::start(&bin, &["--window", "300"], "0.1");
    // Send only once it blocks SIGUSR1 (unblocked, it would die).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !blocks_sigusr1(r.pid()) {
        assert!(Instant::now() < deadline, "it never blocked SIGUSR1");
        assert!(r.try_wait().is_none(), "it ended early");
        thread::sleep(Duration::from_millis(5));
    }
    r.signal(libc::SIGUSR1);
    r.read_to_end(HANG_LIMIT);
    let status = r.wait_within(HANG_LIMIT);
    let all = r.stdout();
    assert!(status.success(), "{status:?}\n{all}");
    let me = std::process::id();
    assert!(
        all.contains(&format!("SIGUSR1 from PID {me} (uid")),
        "it names this test as the sender:\n{all}"
    );
    assert!(!all.contains("no SIGUSR1 from outside"), "{all}");
    assert!(all.ends_with("all checks passed"), "{all}");
    r.assert_all_gone("signals_signalfd", SETTLE);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--signal-at", &["0", "51"]);
    let no_handler = example(BIN, "signals_no_handler");
    assert_values_rejected(&no_handler, "--signal-at", &["0", "51"]);
    let signalfd = example(BIN, "signals_signalfd");
    assert_values_rejected(&signalfd, "--window", &["-1", "601"]);
    for name in [
        "signals_no_handler",
        "signals_kill",
        "signals_signalfd",
        "signals_uncatchable",
    ] {
        assert_help_and_bad_options(&example(BIN, name));
    }
}
