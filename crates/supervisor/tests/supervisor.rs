//! Runs the supervisor lesson and checks what it claims, from outside.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, example, numbers,
    run, speaker, Lesson, Outcome, LINE_LIMIT, SETTLE,
};

const BIN: &str = env!("CARGO_BIN_EXE_supervisor");

/// The text of a line after its `[role pid]` prefix.
fn text(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, t)| t)
}

fn nums(line: &str) -> Vec<i64> {
    numbers(text(line))
}

/// The supervisor's lines (role "supervisor", the lesson's own pid).
fn supervisor_lines(o: &Outcome) -> Vec<&str> {
    o.stdout
        .lines()
        .filter(|l| speaker(l) == Some(("supervisor", o.pid)))
        .collect()
}

/// How each worker process said it would crash: pid -> "panic", "abort"...
fn announced_crashes(o: &Outcome) -> HashMap<i32, String> {
    o.stdout
        .lines()
        .filter(|l| l.contains("crashing on purpose"))
        .map(|l| {
            let (role, pid) = speaker(l).expect("prefixed");
            assert!(role.starts_with("worker "), "{l}");
            let how = l.rsplit_once('(').expect("(how)").1.trim_end_matches(')');
            (pid, how.to_string())
        })
        .collect()
}

/// Checks every run makes: each death decoded as what the worker did, a
/// restart replacing the dead PID, live counts that add up, a graceful stop.
fn check_run(o: &Outcome, workers: i64) {
    let sup = supervisor_lines(o);
    let announced = announced_crashes(o);
    let deaths: Vec<&str> = sup
        .iter()
        .copied()
        .filter(|l| l.contains(" died: "))
        .collect();
    assert_eq!(
        deaths.len(),
        announced.len(),
        "one death per planned crash:\n{}",
        o.stdout
    );
    for d in &deaths {
        let pid = nums(d)[1] as i32;
        let how = announced
            .get(&pid)
            .expect("the dead worker announced its crash");
        assert_eq!(how, "SIGKILL to itself", "{d}");
        assert!(
            d.contains("killed by SIGKILL") && d.contains("as planned"),
            "{d} ({how})"
        );
    }
    // Each restart replaces the PID that died last in that slot.
    let mut last_dead: HashMap<i64, i64> = HashMap::new();
    for l in &sup {
        let n = nums(l);
        if l.contains(" died: ") {
            last_dead.insert(n[0], n[1]);
        } else if l.contains("is replaced by") {
            assert_eq!(last_dead.get(&n[0]), Some(&n[1]), "{l}");
            assert_ne!(n[1], n[2]);
        }
    }
    // Every count from /proc is the slots minus those given up.
    let live: Vec<&str> = sup
        .iter()
        .copied()
        .filter(|l| l.contains("live workers in /proc"))
        .collect();
    assert!(!live.is_empty(), "{}", o.stdout);
    for l in &live {
        let n = nums(l);
        assert_eq!(n[1], workers, "{l}");
        assert_eq!(n[0], n[1] - n[2], "{l}");
    }
    // The last count, once steady, names the workers that are then stopped
    // gracefully; nothing is left.
    let steady = sup
        .iter()
        .position(|l| l.contains("steady:"))
        .expect("steady");
    let last = sup[..steady]
        .iter()
        .rev()
        .find(|l| l.contains("live workers in /proc"))
        .expect("a count before steady");
    let mut running: Vec<i64> = nums(last)[3..].to_vec();
    let mut stopped: Vec<i64> = sup
        .iter()
        .filter(|l| l.contains(") stopped: exited with 0"))
        .map(|l| nums(l)[1])
        .collect();
    running.sort();
    stopped.sort();
    assert_eq!(running, stopped, "{}", o.stdout);
    for pid in &stopped {
        assert!(
            o.stdout.lines().any(|l| {
                speaker(l).is_some_and(|(_, p)| i64::from(p) == *pid)
                    && l.contains("SIGTERM: finished step")
            }),
            "worker {pid} finished its step on SIGTERM:\n{}",
            o.stdout
        );
    }
    assert!(o.stdout.contains("no worker left: /proc lists no child"));
    assert!(!o.stdout.contains("not in its plan"));
    assert_nothing_left("supervisor", o.pid);
}

#[test]
fn crashed_workers_come_back_with_back_off_and_the_flaky_one_is_given_up() {
    let o = run(BIN, &[]);
    o.assert_success();
    assert!(o.stdout.ends_with("all checks passed\n"), "{}", o.stdout);
    check_run(&o, 3);
    let sup = supervisor_lines(&o);
    // Worker 3 crashes at every start: back-off 0.2, 0.4, 0.8 s, then, at
    // its fourth crash within the window, it is given up.
    let delays: Vec<&str> = sup
        .iter()
        .filter(|l| l.contains("back-off for worker 3"))
        .map(|l| l.split("restart in ").nth(1).expect("delay"))
        .map(|d| d.split(' ').next().expect("number"))
        .collect();
    assert_eq!(delays, ["0.2", "0.4", "0.8"], "{}", o.stdout);
    assert!(o
        .line_with("giving up on it")
        .contains("worker 3 crashed 4 times"));
    let last = sup
        .iter()
        .rev()
        .find(|l| l.contains("live workers in /proc"))
        .expect("a count");
    assert!(last.contains("2 of 3 slots, 1 given up"), "{last}");
}

/// The crash plan of a run: each worker's announced start, in order.
fn plan(o: &Outcome) -> Vec<(String, String)> {
    o.stdout
        .lines()
        .filter(|l| l.contains("] start "))
        .map(|l| {
            let role = speaker(l).expect("prefixed").0.to_string();
            (role, text(l).to_string())
        })
        .collect()
}

#[test]
fn each_death_is_decoded_as_what_the_worker_did_and_the_seed_repeats_the_plan() {
    let bin = example(BIN, "supervisor_crash_kinds");
    let a = run(&bin, &["--seed", "7", "--workers", "9"]);
    let b = run(&bin, &["--seed", "7", "--workers", "9"]);
    for o in [&a, &b] {
        o.assert_success();
        let announced = announced_crashes(o);
        let deaths = o.lines_with(" died: ");
        assert_eq!(deaths.len(), 9, "{}", o.stdout);
        for d in &deaths {
            let pid = nums(d)[1] as i32;
            let how = announced.get(&pid).expect("the worker announced its crash");
            let want = match how.as_str() {
                "panic" => "exited with 101",
                "abort" => "killed by SIGABRT",
                "SIGKILL to itself" => "killed by SIGKILL",
                other => panic!("unknown crash {other}"),
            };
            assert!(d.contains(want) && d.contains("as planned"), "{d} ({how})");
        }
        assert_nothing_left("supervisor_crash_kinds", o.pid);
    }
    let (mut pa, mut pb) = (plan(&a), plan(&b));
    pa.sort();
    pb.sort();
    assert_eq!(pa, pb);
    assert_eq!(
        text(a.line_with("crash plan")),
        text(b.line_with("crash plan"))
    );
    // Nine workers from seed 7 use every way to crash.
    for how in ["(panic)", "(abort)", "(SIGKILL to itself)"] {
        assert!(a.stdout.contains(how), "{how}:\n{}", a.stdout);
    }
}

#[test]
fn the_back_off_has_a_ceiling_and_the_limit_is_an_option() {
    let o = run(BIN, &["--workers", "2", "--max-restarts", "8"]);
    o.assert_success();
    check_run(&o, 2);
    let delays: Vec<f64> = supervisor_lines(&o)
        .iter()
        .filter(|l| l.contains("back-off for worker 2"))
        .map(|l| {
            l.split("restart in ")
                .nth(1)
                .and_then(|d| d.split(' ').next())
                .and_then(|d| d.parse().ok())
                .expect("a delay")
        })
        .collect();
    let want: Vec<f64> = (0..8).map(|k| (0.2 * 2f64.powi(k)).min(5.0)).collect();
    assert_eq!(delays.len(), want.len(), "{}", o.stdout);
    for (got, want) in delays.iter().zip(&want) {
        assert!((got - want).abs() < 0.051, "{delays:?} vs {want:?}");
    }
    assert!(o
        .line_with("giving up on it")
        .contains("worker 2 crashed 9 times"));

    // With no restart allowed, the only worker is given up at its first
    // crash and nothing is left to stop.
    let o = run(BIN, &["--workers", "1", "--max-restarts", "0"]);
    o.assert_success();
    assert!(o.line_with("giving up on it").contains("crashed once"));
    assert!(o
        .stdout
        .contains("live workers in /proc: 0 of 1 slots, 1 given up"));
    assert!(!o.stdout.contains("stopped: exited"));
    assert_nothing_left("supervisor", o.pid);
}

/// Start the lesson at a slow pace in a session of its own. SIGINT gets its
/// default action back there: a shell that runs these tests in the
/// background passes SIGINT on ignored, and the supervisor keeps it ignored
/// then.
fn start() -> Lesson {
    Lesson::start(BIN, &[], "0.3")
}

/// Wait (at most 5 s) for the lesson to end, and read the rest of its output.
fn finish(r: &mut Lesson) -> ExitStatus {
    let status = r.wait_within(SETTLE);
    r.read_to_end(SETTLE);
    status
}

#[test]
fn sigterm_to_the_supervisor_alone_stops_every_worker_gracefully() {
    let mut r = start();
    r.expect_line("restarted worker", LINE_LIMIT);
    r.signal(libc::SIGTERM);
    let status = finish(&mut r);
    let all = r.stdout();
    assert_eq!(status.code(), Some(143), "{all}");
    assert!(all.contains("SIGTERM received, stopping"), "{all}");
    let stopped: Vec<&String> = r
        .lines()
        .iter()
        .filter(|l| l.contains(") stopped: "))
        .collect();
    assert!(!stopped.is_empty(), "{all}");
    // Only the supervisor got the signal: each worker heard it from the
    // supervisor, finished its step and exited 0 (or had just crashed as
    // planned).
    for l in &stopped {
        assert!(
            l.contains("exited with 0") || l.contains("killed by") || l.contains("exited with 101"),
            "{l}"
        );
    }
    assert!(all.contains("SIGTERM: finished step"), "{all}");
    assert!(all.contains("no worker left"), "{all}");
    assert!(all.contains("exiting with 143"), "{all}");
    r.assert_all_gone("supervisor", SETTLE);
}

/// The race the rule must survive: a SIGTERM that comes while the planned
/// stop is under way, when the supervisor no longer sleeps in `ppoll` and
/// keeps the signal blocked. It still decides the exit status.
#[test]
fn sigterm_during_the_planned_stop_still_decides_the_exit_status() {
    // A run counts only if the supervisor was provably alive after the
    // signal was sent (a zombie has exited: the signal came too late).
    for _ in 0..5 {
        let mut r = start();
        r.expect_line("the demonstration is over", LINE_LIMIT);
        r.signal(libc::SIGTERM);
        let alive = common::procfs::stat(r.pid())
            .expect("read /proc")
            .is_some_and(|s| !matches!(s.state, 'Z' | 'X'));
        let status = finish(&mut r);
        let all = r.stdout();
        r.assert_all_gone("supervisor", SETTLE);
        if !alive {
            eprintln!("the supervisor had exited before the SIGTERM came: again");
            continue;
        }
        // 143, or death by SIGTERM if it came after the last look.
        assert!(
            status.code() == Some(143) || status.signal() == Some(libc::SIGTERM),
            "{status:?}\n{all}"
        );
        return;
    }
    panic!("5 runs ended before the SIGTERM came");
}

#[test]
fn ctrl_c_to_the_group_ends_everything_with_130() {
    let mut r = start();
    r.expect_line("live workers in /proc", LINE_LIMIT);
    r.signal_group(libc::SIGINT);
    let status = finish(&mut r);
    let all = r.stdout();
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(all.contains("SIGINT: finished step"), "{all}");
    assert!(all.contains("no worker left"), "{all}");
    r.assert_all_gone("supervisor", SETTLE);
}

#[test]
fn a_killed_supervisor_takes_its_workers_with_it() {
    let mut r = start();
    r.expect_line("live workers in /proc", LINE_LIMIT);
    r.signal(libc::SIGKILL);
    assert_eq!(finish(&mut r).signal(), Some(libc::SIGKILL));
    // The workers die of PR_SET_PDEATHSIG.
    r.assert_all_gone("supervisor", SETTLE);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--workers", &["0", "17"]);
    assert_values_rejected(BIN, "--max-restarts", &["21"]);
    assert_values_rejected(BIN, "--window", &["0.5", "x"]);
    let bin = example(BIN, "supervisor_crash_kinds");
    assert_help_and_bad_options(&bin);
    assert_values_rejected(&bin, "--seed", &["-1", "4294967296"]);
    assert_values_rejected(&bin, "--workers", &["0", "17"]);
}

#[test]
fn the_lessons_own_plan_repeats() {
    // The lesson's own plan does not depend on a seed: two runs announce
    // the same starts.
    let (a, b) = (run(BIN, &[]), run(BIN, &[]));
    let (mut pa, mut pb) = (plan(&a), plan(&b));
    pa.sort();
    pb.sort();
    assert_eq!(pa, pb);
}
