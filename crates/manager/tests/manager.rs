//! Runs the manager lesson and checks what it claims, from outside.

use std::path::Path;
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use testkit::{
    assert_help_and_bad_options, assert_nothing_left, assert_values_rejected, numbers, run,
    speaker, Lesson, Outcome, HANG_LIMIT, SETTLE,
};

const BIN: &str = env!("CARGO_BIN_EXE_manager");

/// The server's PID, from the parent's "manager server: pid" line; also
/// checks that the parent printing it is the lesson's main process.
fn server_pid(o: &Outcome) -> i32 {
    let line = o.line_with("manager server: pid");
    let (role, parent) = speaker(line).expect("prefixed line");
    assert_eq!((role, parent), ("parent", o.pid), "{line}");
    let n = numbers(line.split_once("] ").expect("prefix").1);
    assert_eq!(n[1], o.pid as i64, "the parent names its own pid: {line}");
    n[0] as i32
}

/// Check a whole successful run with `clients` clients.
fn check_run(o: &Outcome, clients: usize) {
    o.assert_success();
    assert!(
        o.stdout
            .lines()
            .last()
            .is_some_and(|l| l.ends_with("all checks passed")),
        "{}",
        o.stdout
    );
    let server = server_pid(o);
    assert_ne!(server, o.pid, "the server is a process of its own");

    // The socket's directory, printed at the start, is gone.
    let start = o.line_with("manager server: pid");
    let socket = start
        .split_whitespace()
        .find(|w| w.ends_with("manager.sock"))
        .expect("the socket path");
    let socket = Path::new(socket);
    let dir = socket.parent().expect("the socket's directory");
    assert!(
        dir.file_name()
            .expect("name")
            .to_string_lossy()
            .starts_with(&format!("manager-{}-", o.pid)),
        "{start}"
    );
    assert!(
        !socket.exists() && !dir.exists(),
        "{} still there",
        dir.display()
    );
    assert!(
        start.contains(&format!("all {} connections", clients + 1)),
        "{start}"
    );
    o.line_with("the socket file and its directory are already gone");
    // The server removed them before anyone printed a line: its line about
    // it comes first.
    let first = o.stdout.lines().next().expect("output");
    assert_eq!(speaker(first).expect("prefixed").1, server, "{}", o.stdout);
    assert!(
        first.contains("removed the socket file and its directory"),
        "{}",
        o.stdout
    );

    // Every server line comes from the server's PID; it served everyone at
    // once, with one thread per connection.
    for line in o.lines_with("[server ") {
        assert_eq!(speaker(line).expect("prefixed").1, server, "{line}");
    }
    let connections = clients + 1;
    assert!(first.contains(&format!("accepted {connections} connections")));
    assert!(
        o.line_with("threads (this one").contains(&format!(
            "serving {connections} connections with {} threads",
            connections + 1
        )),
        "{}",
        o.stdout
    );

    // Each client: its own process, talking to the same server.
    let mut pids = Vec::new();
    let mut roles = Vec::new();
    for line in o.lines_with("connected to the manager server") {
        let (role, pid) = speaker(line).expect("prefixed");
        assert!(role.starts_with("client "), "{line}");
        assert!(
            line.contains(&format!("(pid {server})")),
            "the client talks to the forked server: {line}"
        );
        assert!(line.contains(&format!("\"{role}\" -> {pid}")), "{line}");
        assert!(pid != o.pid && pid != server, "{line}");
        pids.push(pid);
        roles.push(role.to_string());
    }
    pids.sort();
    pids.dedup();
    roles.sort();
    roles.dedup();
    assert_eq!(
        (pids.len(), roles.len()),
        (clients, clients),
        "{}",
        o.stdout
    );

    // The final list holds every client's number exactly once.
    let list = o.line_with("final list");
    let mut order: Vec<i64> = numbers(list.rsplit_once(':').expect("a list").1);
    order.sort();
    assert_eq!(order, (0..clients as i64).collect::<Vec<_>>(), "{list}");
    // The map holds each client's PID under its name.
    let map = o.line_with("final map");
    for line in o.lines_with("connected to the manager server") {
        let (role, pid) = speaker(line).expect("prefixed");
        assert!(map.contains(&format!("\"{role}\": {pid}")), "{map}");
    }
    assert!(o
        .line_with("exactly once")
        .contains(&format!("({clients} items)")));
    assert!(
        o.line_with("Shutdown: served").contains(&format!(
            "the list holds {clients} items, the map {clients} keys"
        )),
        "{}",
        o.stdout
    );
    assert!(o
        .line_with("after the Shutdown request")
        .contains(&format!("server {server} exited with 0")));
    o.line_with("a request to the stopped server fails at once");
    assert!(o.stderr.is_empty(), "{}", o.stderr);
    assert_nothing_left("manager", o.pid);
}

#[test]
fn every_clients_item_is_in_the_list_exactly_once() {
    let o = run(BIN, &[]);
    check_run(&o, 5);
}

#[test]
fn twelve_clients_at_once() {
    let o = run(BIN, &["--clients", "12"]);
    check_run(&o, 12);
}

#[test]
fn the_benchmark_prints_one_tsv_line_and_checks_the_count() {
    let o = run(BIN, &["--bench", "--appends", "2001"]);
    o.assert_success();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "TSV only: {:?}", o.stdout);
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(fields.len(), 3, "{:?}", lines[0]);
    assert_eq!(fields[0], "rs.manager_list_append_2proc");
    let rate: f64 = fields[1].parse().expect("a number");
    assert!(rate > 0.0, "{rate}");
    assert_eq!(fields[2], "ops/s");
    assert!(o.stderr.is_empty(), "{}", o.stderr);
    assert_nothing_left("manager", o.pid);
}

/// Kill the server while the clients hold their connections: the parent's
/// next request fails with an error (no hang), the lesson exits 1 and leaves
/// nothing behind. The clients linger for 2 s x pace after their work and
/// the parent waits for them before its next request, so the kill lands in
/// that window.
#[test]
fn a_dead_server_is_an_error_not_a_hang() {
    let mut r = Lesson::start(BIN, &[], "3");
    let mut server = None;
    let deadline = Instant::now() + HANG_LIMIT;
    let mut killed = false;
    while let Some(line) = r.next_line(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("manager server: pid") {
            server = Some(numbers(line.split_once("] ").expect("prefix").1)[0] as i32);
        }
        // Kill once every client has done its work (and now lingers) and the
        // parent is waiting for them: the parent's next request meets a dead
        // server.
        let seen = r.lines();
        let done = seen
            .iter()
            .filter(|l| l.contains("connected to the manager server"));
        if !killed && done.count() == 5 && seen.iter().any(|l| l.contains("hold their connections"))
        {
            let server = server.expect("the server's pid came first");
            kill(Pid::from_raw(server), Signal::SIGKILL).expect("kill the server");
            killed = true;
        }
    }
    let status = r.wait_within(deadline.saturating_duration_since(Instant::now()));
    let seen = r.lines().to_vec();
    let stderr = r.stderr(SETTLE);
    assert!(killed, "never saw the window: {seen:#?}");
    assert_eq!(status.code(), Some(1), "{seen:#?}\n{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.contains("error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        error.contains("get_list:")
            && (error.contains("the server closed the connection")
                || error.contains("Broken pipe")),
        "{error}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("all checks passed")),
        "{seen:#?}"
    );
    r.assert_all_gone("manager", SETTLE);
}

#[test]
fn help_and_bad_options() {
    assert_help_and_bad_options(BIN);
    assert_values_rejected(BIN, "--clients", &["0", "33", "many"]);
    assert_values_rejected(BIN, "--appends", &["1", "200001"]);
}
