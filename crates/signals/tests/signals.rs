//! Runs the signals lesson and checks what it claims, from outside; one
//! test sends the lesson a SIGUSR1 itself while the lesson blocks it.

use std::thread;
use std::time::{Duration, Instant};

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    speaker, Lesson, Outcome, HANG_LIMIT, SETTLE,
};

const BIN: &str = env!("CARGO_BIN_EXE_signals");

fn check_a_whole_run(o: &Outcome, signal_at: i64) {
    o.assert_success();
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);

    // Part 1: the worker with a handler finished the step the signal came in.
    let graceful = o.line_with("began no other");
    let (role, worker) = speaker(graceful).expect("prefixed");
    assert_eq!(role, "worker");
    let n = numbers(graceful);
    let (at, finished, saved) = (n[n.len() - 4], n[n.len() - 3], n[n.len() - 2]);
    assert!(at >= signal_at, "signal in step {at}, sent at {signal_at}");
    assert_eq!((at, finished, saved), (at, at, at), "{graceful}");
    assert!(o
        .line_with("checked: the signal came")
        .contains(&format!("all {at} results saved")));
    assert!(o.stdout.contains(&format!("worker {worker} exited with 0")));
    // The worker without one was killed by the signal and saved nothing.
    let killed = o.line_with("killed by SIGTERM");
    let victim = numbers(killed)[1];
    assert_ne!(victim, i64::from(worker));
    assert!(o.line_with("were lost").contains("(0 saved)"));

    // Part 2: signal 0 on a live child, a zombie, a reaped PID.
    let sleeper = speaker(o.line_with("sleeping in pause()"))
        .expect("prefixed")
        .1;
    assert!(o
        .line_with("while it runs")
        .contains(&format!("kill({sleeper}, 0) while it runs: ok")));
    assert!(o.line_with("while it is a zombie").contains(": ok:"));
    assert!(o
        .line_with("reaped child")
        .contains(&format!("{sleeper}: killed by SIGUSR1")));
    assert!(o.line_with("after reaping").contains("ESRCH"));

    // Part 3: masks seen in /proc, signals read from the signalfd.
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

    // Part 4: SIGKILL and SIGSTOP refused; the stubborn child stopped, killed.
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
}

#[test]
fn every_part_proves_its_claim() {
    let o = run(BIN, &[]);
    check_a_whole_run(&o, 3);
    assert_nothing_left("signals", o.pid);
}

#[test]
fn the_worker_stops_in_the_step_it_is_told() {
    let o = run(BIN, &["--signal-at", "7"]);
    check_a_whole_run(&o, 7);
    assert_nothing_left("signals", o.pid);
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
    let mut r = Lesson::start(BIN, &["--window", "300"], "0.1");
    // Send only once the lesson blocks SIGUSR1 (unblocked, it would die).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !blocks_sigusr1(r.pid()) {
        assert!(
            Instant::now() < deadline,
            "the lesson never blocked SIGUSR1"
        );
        assert!(r.try_wait().is_none(), "the lesson ended early");
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
        "the lesson names this test as the sender:\n{all}"
    );
    assert!(!all.contains("no SIGUSR1 from outside"), "{all}");
    assert!(all.ends_with("all checks passed"), "{all}");
    r.assert_all_gone("signals", SETTLE);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--signal-at", &["0", "51"]);
    assert_values_rejected(BIN, "--window", &["-1"]);
}
