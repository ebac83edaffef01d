//! Runs the basic_process lesson and its examples and checks what they
//! claim, from outside.

use std::process::Command;

use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, example, numbers,
    run, run_command, speaker, Outcome,
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

/// The child is a new process whose parent is the one that started it.
fn assert_child_of(o: &Outcome, role: &str) -> i32 {
    let kids = children(o);
    assert_eq!(kids.len(), 1, "{}", o.stdout);
    let (r, pid, said, parent) = &kids[0];
    assert_eq!(r, role, "{}", o.stdout);
    assert_ne!(*pid, o.pid, "{role} is a new process");
    assert_eq!(*said, i64::from(*pid), "{role} prints its own PID");
    assert_eq!(*parent, i64::from(o.pid), "{role}'s parent is the lesson");
    *pid
}

#[test]
fn the_child_has_its_own_copy_of_memory() {
    let o = run(BIN, &[]);
    o.assert_success();
    let me = o.pid;
    let child = assert_child_of(&o, "child");

    // The same address in both processes, different values.
    let before = o.line_with("counter = 1 at address");
    let set = o.line_with("I set counter = 42");
    let still = o.line_with("my counter is still 1");
    assert_eq!(speaker(before).unwrap().1, me);
    assert_eq!(speaker(set).unwrap().1, child);
    assert_eq!(speaker(still).unwrap().1, me);
    assert_eq!(address(before), address(set), "same virtual address");
    assert_eq!(address(before), address(still));
    assert!(
        o.stdout.contains(&format!("child {child} exited with 42")),
        "{}",
        o.stdout
    );

    // The heap too: the child's list has two PIDs, the parent's still one.
    let list = o.line_with("my copy of the list");
    assert!(list.ends_with(&format!("[{me}, {child}]")), "{list}");
    assert!(o.line_with("my list is still").contains(&format!("[{me}]")));
    assert_nothing_left("basic_process", me);
}

#[test]
fn the_value_travels_through_the_exit_status() {
    let o = run(BIN, &["--value", "7"]);
    o.assert_success();
    let child = pid_of(&o, "I set counter = 7");
    assert!(o.stdout.contains(&format!("child {child} exited with 7")));
    assert!(o.line_with("my counter is still 1").contains("still 1"));
    assert_nothing_left("basic_process", o.pid);
}

#[test]
fn command_starts_a_fresh_child() {
    let bin = example(BIN, "basic_process_command");
    for value in ["42", "7"] {
        let o = run(&bin, &["--value", value]);
        o.assert_success();
        let spawned = assert_child_of(&o, "spawned");
        // It learned the value from its command line, not from memory.
        assert!(o
            .line_with("my command line")
            .contains(&format!(r#"["--value", "{value}", "--pace", "0"]"#)));
        assert!(o
            .stdout
            .contains(&format!("child {spawned} exited with {value}")));
        assert_nothing_left("basic_process_command", o.pid);
    }
}

#[test]
fn the_spawned_mode_checks_its_parent() {
    let bin = example(BIN, "basic_process_command");
    // Run by hand, the child mode refuses: no parent named...
    let mut cmd = Command::new(&bin);
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
    let mut cmd = Command::new(&bin);
    cmd.env("LESSON_CHILD", "spawned")
        .env("LESSON_PARENT", "1")
        .env("LESSON_PACE", "0");
    let o = run_command(cmd);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("my parent 1 is gone"), "{}", o.stderr);
    assert!(o.stdout.is_empty());
}

#[test]
fn descriptors_are_copied_their_offset_and_flags_shared() {
    let bin = example(BIN, "basic_process_open_files");
    let o = run(&bin, &[]);
    o.assert_success();
    let child = pid_of(&o, "where the parent left it");
    assert_ne!(child, o.pid);
    // The child starts where the parent's write left the shared offset...
    let first = numbers(o.line_with("wrote 28 bytes"));
    let at_fork = *first.last().expect("offset");
    assert!(o
        .line_with("where the parent left it")
        .contains(&format!("offset {at_fork},")));
    // ...and the parent finds it where the child's write left it.
    let after_child = *numbers(o.line_with("turned on O_APPEND"))
        .last()
        .expect("offset");
    assert!(o
        .line_with("my offset is now")
        .contains(&format!("now {after_child}:")));
    assert!(after_child > at_fork);
    assert_eq!(pid_of(&o, "closed my descriptor"), child);
    assert_eq!(pid_of(&o, "only the child set"), o.pid);
    assert_eq!(pid_of(&o, "still works"), o.pid);
    let file: Vec<&str> = o
        .lines_with("the file: ")
        .iter()
        .map(|l| l.split_once("the file: ").unwrap().1)
        .collect();
    assert_eq!(
        file,
        [
            "parent: written before fork",
            "child: written through my copy of the descriptor",
            "parent: written after the child closed its copy"
        ]
    );
    // The file was unlinked at once: nothing in the temporary directory.
    assert_nothing_left("basic_process_open_files", o.pid);
}

#[test]
fn a_mutex_held_by_another_thread_stays_locked_in_the_child() {
    let bin = example(BIN, "basic_process_threads");
    let o = run(&bin, &[]);
    o.assert_success();
    assert!(o.line_with("this process has").ends_with("has 2 threads"));
    assert!(o
        .line_with("common::fork::spawn refuses")
        .contains("2 threads"));
    let child = numbers(o.line_with("forked child"))[1];
    assert!(o.line_with("the child has").contains("has 1 thread"));
    assert!(o.line_with("in the parent").contains("the mutex is free"));
    assert!(
        o.stdout.contains(&format!("child {child} exited with 3")),
        "{}",
        o.stdout
    );
    // The child of a multithreaded process prints nothing itself.
    assert!(o
        .stdout
        .lines()
        .all(|l| speaker(l).map(|s| s.1) == Some(o.pid)));
    assert_nothing_left("basic_process_threads", o.pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--value", &["1", "256", "abc"]);
    for name in [
        "basic_process_command",
        "basic_process_open_files",
        "basic_process_threads",
    ] {
        assert_help_and_bad_options(&example(BIN, name));
    }
    let command = example(BIN, "basic_process_command");
    assert_values_rejected(&command, "--value", &["1", "256", "abc"]);
}
