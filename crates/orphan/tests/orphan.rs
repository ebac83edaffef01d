//! Runs the orphan lesson and checks what it claims, from outside.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use common::testing::{
    assert_help_and_bad_options, assert_nothing_left, numbers, run, speaker, Outcome,
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
/// and its adopter reaps it, within the few seconds `assert_nothing_left`
/// allows.
#[test]
fn a_killed_grandparent_leaves_no_orphan_running() {
    for mode in [&[][..], &["--subreaper"]] {
        let mut cmd = Command::new(BIN);
        cmd.args(["--pace", "1", "--parent-stays", "0", "--orphan-stays", "60"])
            .args(mode)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start the lesson");
        let pid = child.id() as i32;
        let out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let errors = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let orphan = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).unwrap_or_else(|_| {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                panic!("{mode:?}: the orphan never said it lives on")
            });
            if line.contains("living on for 60.0 s") {
                break speaker(&line).expect("prefixed").1;
            }
        };
        kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        assert_nothing_left("orphan", pid);
        // Every process that held stderr has ended: the read completes.
        let errors = errors.join().expect("stderr");
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
    for bad in [
        &["--subreaper=yes"][..],
        &["--parent-stays", "61"],
        &["--orphan-stays", "-1"],
        &["--orphan-stays", "soon"],
    ] {
        let o = run(BIN, bad);
        assert_eq!(o.code(), Some(2), "{bad:?}: {o:?}");
        assert!(
            o.stderr.contains(bad[0].split('=').next().unwrap()),
            "{}",
            o.stderr
        );
    }
}
