//! Runs the zombie lesson and checks what it claims, from outside.

use common::testing::{
    assert_help_and_bad_options, assert_nothing_left, assert_rejected, run, speaker,
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
    let child = speaker(o.line_with("exiting with code 42"))
        .expect("prefixed")
        .1;
    assert_ne!(child, parent);
    assert!(
        o.line_with("reaped child")
            .contains(&format!("{child}: exited with 42")),
        "{}",
        o.stdout
    );
    assert!(o.line_with("is gone").contains(&child.to_string()));
    assert!(o.line_with("the handler reaped it").contains("exit code 7"));
    assert!(o.line_with("ECHILD").contains("never became a zombie"));
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
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_rejected(BIN, &["--window", "-3"], "--window");
}
