//! Runs the orphan lesson and its example and checks what they claim, from outside.

use std::os::unix::process::ExitStatusExt;

use nix::sys::signal::Signal;

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_rejected, assert_values_rejected,
    example, numbers, run, speaker, Lesson, Outcome, HANG_LIMIT, LINE_LIMIT, SETTLE,
};

const BIN: &str = env!("CARGO_BIN_EXE_orphan");

/// The PIDs of one run: the lesson (grandparent), the parent, the orphan,
/// and the orphan's parent before and after, as the orphan printed them.
#[derive(Debug)]
struct Family {
    grandparent: i32,
    parent: i32,
    orphan: i32,
    before: i64,
    after: i64,
    adopter_name: String,
}

fn family(o: &Outcome) -> Family {
    let parent = speaker(o.line_with("forked my child")).expect("prefixed");
    assert_eq!(parent.0, "parent");
    let first = o.line_with("] my parent is ");
    let (role, orphan) = speaker(first).expect("prefixed");
    assert_eq!(role, "orphan");
    let before = numbers(first.split_once(']').unwrap().1)[0];
    let change = o.line_with("has exited; my parent is now");
    assert_eq!(speaker(change), Some(("orphan", orphan)));
    let n = numbers(change.split_once(']').unwrap().1);
    assert_eq!(n[0], before, "{change}");
    let adopter_name = change
        .split_once('(')
        .and_then(|(_, r)| r.rsplit_once(')'))
        .map(|(name, _)| name.to_string())
        .expect("the adopter's name");
    Family {
        grandparent: o.pid,
        parent: parent.1,
        orphan,
        before,
        after: n[1],
        adopter_name,
    }
}

/// The index of the first stdout line containing `needle`.
fn position(o: &Outcome, needle: &str) -> usize {
    o.stdout
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?}:\n{}", o.stdout))
}

/// Whether `pid` is still a process of the run's process group (the orphan
/// keeps the lesson's group: running, or a zombie nobody has reaped).
fn in_group(pid: i32, group: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After "pid (comm) ": state, ppid, pgrp.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().nth(2) == Some(&group.to_string())
}

#[test]
fn the_orphan_is_adopted_by_someone_else_and_reaped_by_it() {
    for pace in ["0", "0.05"] {
        let o = run(BIN, &["--pace", pace]);
        o.assert_success();
        let f = family(&o);
        assert_eq!(
            f.before,
            i64::from(f.parent),
            "first the parent's child: {f:?}"
        );
        assert_ne!(f.after, f.before, "then someone else's: {f:?}");
        assert_ne!(
            f.after,
            i64::from(f.grandparent),
            "not the grandparent's, which is no subreaper: {f:?}"
        );
        assert!(
            !f.adopter_name.is_empty() && f.adopter_name != "gone",
            "{f:?}"
        );
        // The grandparent's view agrees with the orphan's.
        let g = o.line_with("reports: its parent was");
        assert_eq!(speaker(g), Some(("grandparent", f.grandparent)));
        assert!(
            g.ends_with(&format!(
                "the orphan {} reports: its parent was {} and is now {} ({})",
                f.orphan, f.before, f.after, f.adopter_name
            )),
            "{g}"
        );
        assert!(o
            .line_with("reaped the parent")
            .contains(&format!("{}: exited with 0", f.parent)));
        // The lesson does not return before its orphan has ended.
        assert!(
            position(&o, &format!("[orphan {}] exiting", f.orphan))
                < position(&o, "all checks passed"),
            "{}",
            o.stdout
        );
        // And the adopter reaps it: no process (not even a zombie) of the
        // run's group is left.
        assert_nothing_left("orphan", o.pid);
        assert!(
            !in_group(f.orphan, o.pid),
            "the orphan {} is not reaped",
            f.orphan
        );
    }
}

#[test]
fn a_subreaper_grandparent_adopts_and_reaps_the_orphan() {
    let bin = example(BIN, "orphan_subreaper");
    let o = run(&bin, &[]);
    o.assert_success();
    let f = family(&o);
    assert_eq!(f.before, i64::from(f.parent), "{f:?}");
    assert_eq!(f.after, i64::from(f.grandparent), "{f:?}");
    // While its parent lived, the child was a grandchild: not ours to wait for.
    let echild = o.line_with("fails with ECHILD");
    assert_eq!(speaker(echild), Some(("grandparent", o.pid)));
    assert!(
        echild.contains(&format!("waitpid({})", f.orphan)),
        "{echild}"
    );
    assert!(
        position(&o, "fails with ECHILD") < position(&o, "reaped the parent"),
        "{}",
        o.stdout
    );
    assert!(o.line_with("state Z, parent").contains(&format!(
        "/proc/{}/stat: state Z, parent {}",
        f.orphan, o.pid
    )));
    let reaped = o.line_with("reaped the orphan");
    assert_eq!(speaker(reaped), Some(("grandparent", o.pid)));
    assert!(
        reaped.ends_with(&format!("reaped the orphan {}: exited with 7", f.orphan)),
        "{reaped}"
    );
    assert_nothing_left("orphan_subreaper", o.pid);
}

/// SIGKILL the lesson's main process while the orphan is set to live on for
/// a minute: the orphan notices that nobody is left to report to and ends,
/// and its adopter reaps it, within the few seconds `assert_all_gone`
/// allows.
#[test]
fn a_killed_grandparent_leaves_no_orphan_running() {
    for (bin, topic) in [
        (BIN.to_string(), "orphan"),
        (example(BIN, "orphan_subreaper"), "orphan_subreaper"),
    ] {
        let args = ["--parent-stays", "0", "--orphan-stays", "60"];
        let mut r = Lesson::start(&bin, &args, "1");
        let line = r
            .wait_for_line(|l| l.contains("living on for 60.0 s"), LINE_LIMIT)
            .unwrap_or_else(|| panic!("{topic}: the orphan never said it lives on"));
        let orphan = speaker(&line).expect("prefixed").1;
        r.signal(Signal::SIGKILL as i32);
        let status = r.wait_within(HANG_LIMIT);
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        r.assert_all_gone(topic, SETTLE);
        // Every process that held stderr has ended: the read completes.
        let errors = r.stderr(SETTLE);
        assert!(
            errors.contains(&format!(
                "[orphan {orphan}] the grandparent is gone: leaving early"
            )),
            "{topic}: {errors}"
        );
    }
}

#[test]
fn help_and_bad_options() {
    for bin in [BIN.to_string(), example(BIN, "orphan_subreaper")] {
        assert_help_and_bad_options(&bin);
        assert_rejected(&bin, &["--parent-stays", "-1"], "--parent-stays");
        assert_values_rejected(&bin, "--parent-stays", &["61"]);
        assert_values_rejected(&bin, "--orphan-stays", &["-1", "soon"]);
    }
    // The subreaper is the example's, not an option of the lesson's.
    assert_rejected(BIN, &["--subreaper"], "--subreaper");
}
