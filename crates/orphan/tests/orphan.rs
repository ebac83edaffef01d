//! Runs the orphan lesson and checks what it claims, from outside.

use std::os::unix::process::ExitStatusExt;

use nix::sys::signal::Signal;

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_rejected, assert_values_rejected,
    numbers, run, speaker, Lesson, Outcome, HANG_LIMIT, LINE_LIMIT, SETTLE,
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
        .and_then(|(_, r)| r.split_once(')'))
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

#[test]
fn the_orphan_is_adopted_by_someone_else_and_reaped_by_it() {
    let o = run(BIN, &[]);
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
        "not the grandparent's without --subreaper: {f:?}"
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
            "was {} and is now {} ({})",
            f.before, f.after, f.adopter_name
        )),
        "{g}"
    );
    assert!(o
        .line_with("fails with ECHILD")
        .contains(&format!("waitpid({})", f.orphan)));
    assert!(o.line_with("is gone from /proc").contains(&format!(
        "orphan {} is gone from /proc: its adopter {} ({}) reaped it",
        f.orphan, f.after, f.adopter_name
    )));
    assert!(o
        .line_with("reaped the parent")
        .contains(&format!("{}: exited with 0", f.parent)));
    assert_nothing_left("orphan", o.pid);
}

#[test]
fn a_subreaper_grandparent_adopts_and_reaps_the_orphan() {
    let o = run(BIN, &["--subreaper"]);
    o.assert_success();
    let f = family(&o);
    assert_eq!(f.before, i64::from(f.parent), "{f:?}");
    assert_eq!(f.after, i64::from(f.grandparent), "{f:?}");
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
    assert!(o.lines_with("ECHILD").is_empty());
    assert_nothing_left("orphan", o.pid);
}

/// SIGKILL the lesson's main process while the orphan is set to live on for
/// a minute: the orphan notices that nobody is left to report to and ends,
/// and its adopter reaps it, within the few seconds `assert_all_gone`
/// allows.
#[test]
fn a_killed_grandparent_leaves_no_orphan_running() {
    for mode in [&[][..], &["--subreaper"]] {
        let args = [&["--parent-stays", "0", "--orphan-stays", "60"][..], mode].concat();
        let mut r = Lesson::start(BIN, &args, "1");
        let line = r
            .wait_for_line(|l| l.contains("living on for 60.0 s"), LINE_LIMIT)
            .unwrap_or_else(|| panic!("{mode:?}: the orphan never said it lives on"));
        let orphan = speaker(&line).expect("prefixed").1;
        r.signal(Signal::SIGKILL as i32);
        let status = r.wait_within(HANG_LIMIT);
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        r.assert_all_gone("orphan", SETTLE);
        // Every process that held stderr has ended: the read completes.
        let errors = r.stderr(SETTLE);
        assert!(
            errors.contains(&format!(
                "[orphan {orphan}] the grandparent is gone: leaving early"
            )),
            "{mode:?}: {errors}"
        );
    }
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_rejected(BIN, &["--subreaper=yes"], "--subreaper");
    assert_values_rejected(BIN, "--parent-stays", &["61"]);
    assert_values_rejected(BIN, "--orphan-stays", &["-1", "soon"]);
}
