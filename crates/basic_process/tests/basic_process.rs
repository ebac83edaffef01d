//! Runs the basic_process lesson and checks what it claims, from outside.

use std::process::Command;

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    run_command, speaker, Outcome,
};

const BIN: &str = env!("CARGO_BIN_EXE_basic_process");

/// The PID of the process that printed the one line containing `needle`.
fn pid_of(o: &Outcome, needle: &str) -> i32 {
    speaker(o.line_with(needle)).expect("prefixed line").1
}

/// The `0x...` address on a line.
fn address(line: &str) -> &str {
    let at = line.find("0x").expect("an address");
    line[at..].split([' ', ':']).next().expect("address")
}

/// Every child says who it is and who its parent is: (role, pid, said pid, said parent).
fn children(o: &Outcome) -> Vec<(String, i32, i64, i64)> {
    o.lines_with("my parent's PID is")
        .into_iter()
        .filter_map(|l| {
            let (role, pid) = speaker(l)?;
            let n = numbers(l.split_once(']')?.1);
            (role != "parent").then(|| (role.to_string(), pid, n[0], n[1]))
        })
        .collect()
}

#[test]
fn three_children_with_their_own_memory() {
    let o = run(BIN, &[]);
    o.assert_success();
    let me = o.pid;

    // Three children, each a new process whose parent is the lesson.
    let kids = children(&o);
    let roles: Vec<&str> = kids.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(roles, ["child", "child", "spawned"], "{}", o.stdout);
    for (role, pid, said, parent) in &kids {
        assert_ne!(*pid, me, "{role} is a new process");
        assert_eq!(*said, i64::from(*pid), "{role} prints its own PID");
        assert_eq!(*parent, i64::from(me), "{role}'s parent is the lesson");
    }

    // Part 1: the same address in both processes, different values.
    let first = kids[0].1;
    let before = o.line_with("counter = 1 at address");
    let set = o.line_with("I set counter = 42");
    let still = o.line_with("my counter is still 1");
    assert_eq!(speaker(set).unwrap().1, first);
    assert_eq!(speaker(still).unwrap().1, me);
    assert_eq!(address(before), address(set), "same virtual address");
    assert_eq!(address(before), address(still));
    assert!(
        o.stdout.contains(&format!("child {first} exited with 42")),
        "{}",
        o.stdout
    );

    // Part 2: the child's list has two PIDs, the parent's still one.
    let second = kids[1].1;
    let list = o.line_with("my copy of the list");
    assert!(list.ends_with(&format!("[{me}, {second}]")), "{list}");
    assert!(o.stdout.contains(&format!("child {second} exited with 2")));
    assert!(o.line_with("my list is still").contains(&format!("[{me}]")));

    // Part 3: a fresh run of the binary, given the value on its command line.
    let spawned = kids[2].1;
    assert!(o
        .line_with("my command line")
        .contains(r#"["--value", "42", "--pace", "0"]"#));
    assert!(o
        .stdout
        .contains(&format!("child {spawned} exited with 42")));
    assert_nothing_left("basic_process", me);
}

#[test]
fn the_value_travels_through_the_exit_status() {
    let o = run(BIN, &["--value", "7"]);
    o.assert_success();
    let first = pid_of(&o, "I set counter = 7");
    let spawned = pid_of(&o, "my command line");
    assert!(o.stdout.contains(&format!("child {first} exited with 7")));
    assert!(o.stdout.contains(&format!("child {spawned} exited with 7")));
    assert!(o.line_with("my counter is still 1").contains("still 1"));
    assert_nothing_left("basic_process", o.pid);
}

#[test]
fn the_spawned_mode_checks_its_parent() {
    // Run by hand, the child mode refuses: no parent named...
    let mut cmd = Command::new(BIN);
    cmd.env("LESSON_CHILD", "spawned").env("LESSON_PACE", "0");
    let o = run_command(cmd);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(
        o.stderr.contains("LESSON_PARENT is not set"),
        "{}",
        o.stderr
    );
    assert_eq!(speaker(o.stderr.trim()).map(|s| s.0), Some("spawned"));
    // ...or the wrong one: its real parent is this test, not PID 1.
    let mut cmd = Command::new(BIN);
    cmd.env("LESSON_CHILD", "spawned")
        .env("LESSON_PARENT", "1")
        .env("LESSON_PACE", "0");
    let o = run_command(cmd);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("my parent 1 is gone"), "{}", o.stderr);
    assert!(o.stdout.is_empty());
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--value", &["1", "256", "abc"]);
}
