//! Runs the pipe_communication lesson and its examples and checks what they
//! claim, from outside.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, example, numbers,
    run, speaker, Lesson, Outcome, HANG_LIMIT, SETTLE,
};

const BIN: &str = env!("CARGO_BIN_EXE_pipe_communication");
const TOPIC: &str = "pipe_communication";

/// One run of `name` (the lesson or an example) with no options, shared by
/// the tests that read it.
fn default_run(name: &str) -> &'static Outcome {
    static RUNS: OnceLock<std::sync::Mutex<Vec<(String, &'static Outcome)>>> = OnceLock::new();
    let runs = RUNS.get_or_init(Default::default);
    let mut runs = runs.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, o)) = runs.iter().find(|(n, _)| n == name) {
        return o;
    }
    let bin = if name == TOPIC {
        BIN.to_string()
    } else {
        example(BIN, name)
    };
    let o: &'static Outcome = Box::leak(Box::new(run(&bin, &[])));
    o.assert_success();
    assert_nothing_left(name, o.pid);
    assert_eq!(
        o.stdout.lines().last(),
        Some(o.line_with("all checks passed"))
    );
    runs.push((name.to_string(), o));
    o
}

/// What one side says it sent or received, on the line holding `label`:
/// (role, pid, count, bytes, checksum).
fn tally(o: &Outcome, label: &str) -> (String, i32, i64, i64, String) {
    let line = o.line_with(label);
    let (role, pid) = speaker(line).expect("prefixed line");
    let rest = line.split_once(label).expect("label").1;
    let n = numbers(rest);
    let checksum = rest
        .split_once("checksum ")
        .expect("a checksum")
        .1
        .trim()
        .to_string();
    assert!(n.len() >= 2 && checksum.len() == 16, "{line}");
    (role.to_string(), pid, n[0], n[1], checksum)
}

/// The index of the one stdout line holding `needle`.
fn position(o: &Outcome, needle: &str) -> usize {
    let line = o.line_with(needle);
    o.stdout.lines().position(|l| l == line).expect("present")
}

#[test]
fn one_way_counts_and_checksums_agree_on_both_sides() {
    let o = default_run(TOPIC);
    let sent = tally(o, "producer sent: ");
    let got = tally(o, "consumer received: ");
    assert_eq!((sent.0.as_str(), sent.1), ("parent", o.pid));
    assert_eq!(got.0, "consumer");
    assert_ne!(got.1, o.pid);
    assert_eq!(sent.2, 100, "--messages defaults to 100");
    assert_eq!((sent.2, sent.3, &sent.4), (got.2, got.3, &got.4));
    assert!(o
        .line_with("the consumer's count and checksum match the producer's")
        .starts_with(&format!("[parent {}]", o.pid)));
    // The ends each process holds were checked in /proc: the consumer's PID
    // is the one that later reports.
    let ends = o.line_with("the parent holds only the write end");
    assert!(
        ends.contains(&format!("consumer {} only the read end", got.1)),
        "{ends}"
    );
    assert!(position(o, "the parent holds only the write end") < position(o, "producer sent: "));
    assert!(position(o, "producer sent: ") < position(o, "match the producer's"));
}

#[test]
fn more_messages_than_the_pipe_holds_arrive_whole() {
    let o = run(BIN, &["--messages", "100000"]);
    o.assert_success();
    let sent = tally(&o, "producer sent: ");
    let got = tally(&o, "consumer received: ");
    assert_eq!(sent.2, 100_000);
    assert!(sent.3 > 65536, "more than one pipe's worth: {}", sent.3);
    assert_eq!((sent.2, sent.3, &sent.4), (got.2, got.3, &got.4));
    assert_nothing_left(TOPIC, o.pid);
}

/// The pipe links of `pid` (fds above 2), with their access from fdinfo.
fn pipe_ends(pid: i32, inode: &str) -> Vec<(i32, &'static str)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc") {
        let path = entry.expect("entry").path();
        let fd: i32 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let Ok(link) = std::fs::read_link(&path) else {
            continue;
        };
        if fd <= 2 || link.to_string_lossy() != format!("pipe:[{inode}]") {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).expect("fdinfo");
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .expect("flags");
        let flags = i32::from_str_radix(flags.trim(), 8).expect("octal flags");
        let access = if flags & libc::O_ACCMODE == libc::O_WRONLY {
            "write"
        } else {
            "read"
        };
        found.push((fd, access));
    }
    found
}

/// Start the lesson with a long pause, wait until it pauses (the consumer
/// alive, both holding the pipe), scan both processes' descriptors, send
/// `signal` to the main process or to its whole process group, and check
/// that nothing is left.
fn interrupt_during_the_pause(signal: Signal, whole_group: bool) {
    let mut r = Lesson::start(BIN, &["--window", "600"], "1");
    let ends = r.expect_line("the parent holds only the write end", HANG_LIMIT);
    let inode = ends
        .split_once("pipe:[")
        .expect("inode")
        .1
        .split(']')
        .next()
        .unwrap()
        .to_string();
    let paused = r.expect_line("pausing", HANG_LIMIT);
    // "... ls -l /proc/<parent>/fd /proc/<consumer>/fd"
    let pids = numbers(paused.split_once("ls -l").expect("the command").1);
    assert_eq!(pids[0], r.pid() as i64, "{paused}");
    let consumer = pids[1] as i32;
    let alive = common::procfs::state(consumer).expect("read /proc");
    assert!(
        matches!(alive, Some('S' | 'R')),
        "the consumer is alive during the pause: {alive:?}"
    );
    // One pipe, the same inode in both: the write end in the parent only,
    // the read end in the consumer only.
    assert_eq!(
        pipe_ends(r.pid(), &inode)
            .iter()
            .map(|e| e.1)
            .collect::<Vec<_>>(),
        ["write"]
    );
    assert_eq!(
        pipe_ends(consumer, &inode)
            .iter()
            .map(|e| e.1)
            .collect::<Vec<_>>(),
        ["read"]
    );
    if whole_group {
        r.signal_group(signal as i32);
    } else {
        r.signal(signal as i32);
    }
    let status = r.wait_within(HANG_LIMIT);
    assert!(!status.success());
    r.assert_all_gone(TOPIC, SETTLE);
}

#[test]
fn sigkill_to_the_main_process_alone_leaves_nothing() {
    interrupt_during_the_pause(Signal::SIGKILL, false);
}

#[test]
fn sigint_to_the_group_leaves_nothing() {
    interrupt_during_the_pause(Signal::SIGINT, true);
}

#[test]
fn the_missing_eof_is_detected_by_a_timeout_then_comes_on_close() {
    let o = default_run("pipe_communication_missing_eof");
    let writer = o.line_with("exiting closes my write end");
    assert_eq!(speaker(writer).expect("prefixed").0, "writer");
    let timed_out = position(o, "no end of file: poll timed out");
    let eof = position(o, "poll says POLLHUP at once and read returns 0");
    assert!(timed_out < eof, "{}", o.stdout);
    assert!(position(o, "read the 3 messages") < timed_out);
}

#[test]
fn unframed_writes_glue_and_framing_keeps_the_boundaries() {
    let o = default_run("pipe_communication_framing");
    assert!(o.line_with("the pipe holds").contains("holds 10 bytes"));
    assert!(o
        .line_with("one read returned")
        .contains("10 bytes, \"helloworld\""));
    assert!(o
        .line_with("framed: read back")
        .contains("2 messages, [\"hello\", \"world\"]"));
}

fn two_way(args: &[&str], messages: i64) -> Outcome {
    let o = run(example(BIN, "pipe_communication_two_way"), args);
    o.assert_success();
    let client_sent = tally(&o, "client sent requests: ");
    let server_got = tally(&o, "server received requests: ");
    let server_sent = tally(&o, "server sent replies: ");
    let client_got = tally(&o, "client received replies: ");
    assert_eq!((client_sent.0.as_str(), client_sent.1), ("parent", o.pid));
    assert_eq!(server_got.0, "server");
    assert_eq!(server_got.1, server_sent.1);
    assert_ne!(server_got.1, o.pid);
    for (a, b) in [(&client_sent, &server_got), (&server_sent, &client_got)] {
        assert_eq!(a.2, messages);
        assert_eq!((a.2, a.3, &a.4), (b.2, b.3, &b.4));
    }
    // Replies are the requests reversed: same sizes.
    assert_eq!(client_sent.3, client_got.3);
    o.line_with("both directions check out");
    assert_nothing_left("pipe_communication_two_way", o.pid);
    o
}

#[test]
fn two_way_counts_and_checksums_agree_in_both_directions() {
    let o = two_way(&["--messages", "37", "--max-len", "5000"], 37);
    let (sent, got) = (
        tally(&o, "client sent requests: "),
        tally(&o, "client received replies: "),
    );
    assert_ne!(sent.4, got.4, "reversed bytes, another checksum");
}

#[test]
fn message_sizes_from_empty_to_larger_than_the_pipe() {
    // Only empty messages: framing must still count them.
    let o = two_way(&["--messages", "3000", "--max-len", "0"], 3000);
    assert_eq!(tally(&o, "client sent requests: ").3, 0);
    // Messages up to 64 KiB: the pipe fills and writes come out in pieces.
    let o = two_way(&["--messages", "40", "--max-len", "65536"], 40);
    let sent = tally(&o, "client sent requests: ");
    assert!(sent.3 > 65536, "more than one pipe's worth: {}", sent.3);
}

#[test]
fn epipe_is_an_error_and_sigpipe_kills_by_default() {
    let o = default_run("pipe_communication_epipe");
    assert!(o
        .line_with("write failed with EPIPE")
        .starts_with(&format!("[parent {}]", o.pid)));
    let killed = o.line_with("killed by SIGPIPE");
    let writer = numbers(killed.split_once("writer ").expect("names the writer").1)[0];
    assert_ne!(writer as i32, o.pid);
    assert!(position(o, "closed my read end") < position(o, "write failed with EPIPE"));
}

#[test]
fn only_plain_pipe_leaks_into_the_execed_holder() {
    let o = default_run("pipe_communication_cloexec");
    let plain = o.line_with("nix::unistd::pipe(): FD_CLOEXEC");
    assert!(plain.contains("clear on the read end") && plain.contains("clear on the write end"));
    for call in ["nix::unistd::pipe2(O_CLOEXEC)", "std::io::pipe()"] {
        let line = o.line_with(&format!("{call}: FD_CLOEXEC"));
        assert!(
            line.contains("set on the read end") && line.contains("set on the write end"),
            "{line}"
        );
        o.line_with(&format!("{call}: end of file as soon as"));
    }
    let (role, holder) = speaker(o.line_with("I leave when my stdin closes")).expect("prefixed");
    assert_eq!(role, "holder");
    assert_ne!(holder, o.pid);
    assert!(o
        .line_with("without asking for them")
        .contains(&format!("holder {holder}, a new program")));
    let withheld = position(o, "the holder's leaked copy keeps the pipe open");
    let finally = position(o, "only now does nix::unistd::pipe() report end of file");
    assert!(withheld < finally);
}

#[test]
fn the_holder_leaves_when_its_stdin_closes() {
    let mut cmd = Command::new(example(BIN, "pipe_communication_cloexec"));
    cmd.env("LESSON_CHILD", "holder")
        .env("LESSON_PACE", "0")
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("start the holder");
    let pid = child.id() as i32;
    drop(child.stdin.take());
    let deadline = Instant::now() + HANG_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waitpid") {
            break s;
        }
        assert!(Instant::now() < deadline, "the holder outlived its stdin");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "{status:?}");
    assert_nothing_left("pipe_communication_cloexec", pid);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--messages", &["0", "100001", "many"]);
    assert_values_rejected(BIN, "--window", &["-1", "601", "soon"]);
    let two_way = example(BIN, "pipe_communication_two_way");
    assert_values_rejected(&two_way, "--messages", &["0", "100001"]);
    assert_values_rejected(&two_way, "--max-len", &["65537", "-1"]);
    for name in [
        "pipe_communication_missing_eof",
        "pipe_communication_framing",
        "pipe_communication_two_way",
        "pipe_communication_epipe",
        "pipe_communication_cloexec",
    ] {
        assert_help_and_bad_options(&example(BIN, name));
    }
}
