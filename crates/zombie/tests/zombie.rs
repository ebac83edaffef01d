//! Runs the zombie lesson and its examples and checks what they claim, from outside.

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_rejected, example, numbers, run,
    speaker,
};

const BIN: &str = env!("CARGO_BIN_EXE_zombie");

#[test]
fn the_child_is_a_zombie_until_reaped_with_code_42() {
    let o = run(BIN, &[]);
    o.assert_success();
    let seen = o.line_with("state Z");
    let (role, parent) = speaker(seen).expect("prefixed line");
    assert_eq!(role, "parent");
    assert_eq!(parent, o.pid, "the lesson's main process is the parent");
    let (role, child) = speaker(o.line_with("exiting with code 42")).expect("prefixed");
    assert_eq!(role, "child");
    assert_ne!(child, parent);
    assert!(
        o.line_with("my parent is")
            .ends_with(&format!("my parent is {parent}; exiting with code 42")),
        "{}",
        o.stdout
    );
    assert!(
        o.line_with("reaped child")
            .contains(&format!("{child}: exited with 42")),
        "{}",
        o.stdout
    );
    assert!(o.line_with("is gone").contains(&child.to_string()));
    assert_nothing_left("zombie", o.pid);
}

#[test]
fn the_zombie_stays_for_the_whole_window() {
    // A short real window: the lesson itself checks the state throughout.
    let o = run(BIN, &["--window", "0.3", "--pace", "1"]);
    o.assert_success();
    assert!(
        o.stdout.contains("leaving it unreaped for 0.3 s"),
        "{}",
        o.stdout
    );
    assert_nothing_left("zombie", o.pid);
}

#[test]
fn one_handler_run_reaps_three_children_whatever_they_died_of() {
    let bin = example(BIN, "zombie_sigchld_handler");
    let o = run(&bin, &[]);
    o.assert_success();
    let forked = numbers(o.line_with("forked"));
    let forked = &forked[1..]; // after the speaker's own PID
    assert_eq!(forked.len(), 3, "{}", o.stdout);
    assert!(o
        .line_with("reaped in")
        .contains("3 children reaped in 1 handler run"));
    let reaped: Vec<&str> = o.lines_with("the handler reaped");
    assert_eq!(reaped.len(), 3, "{}", o.stdout);
    for (pid, what) in forked
        .iter()
        .zip(["exited with 7", "killed by SIGKILL", "exited with 9"])
    {
        assert!(
            reaped.iter().any(|l| l.contains(&format!("{pid}: {what}"))),
            "{pid} {what}:\n{}",
            o.stdout
        );
    }
    assert_nothing_left("zombie_sigchld_handler", o.pid);
}

#[test]
fn sig_ign_waits_then_says_echild() {
    let bin = example(BIN, "zombie_sig_ign");
    for pace in ["0", "0.2"] {
        let o = run(&bin, &["--pace", pace]);
        o.assert_success();
        assert!(o.line_with("WNOHANG").contains("still running"));
        assert!(o.line_with("ECHILD").contains("is gone"));
        assert_nothing_left("zombie_sig_ign", o.pid);
    }
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_rejected(BIN, &["--window", "-3"], "--window");
    for name in ["zombie_sigchld_handler", "zombie_sig_ign"] {
        assert_help_and_bad_options(&example(BIN, name));
    }
}
