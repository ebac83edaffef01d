//! Demonstrate how two processes talk through pipes, and the rules that make
//! a pipe work rather than hang: close the ends you do not use, frame your
//! messages, expect `EPIPE`, and create pipes close-on-exec.
//!
//! Part 1: the parent makes a pipe and forks a consumer. Each process closes
//! the end it does not use; the lesson checks this in `/proc` and pauses so
//! you can look too. The parent writes length-prefixed messages and closes
//! its write end; the consumer reads until end of file and sends its count
//! and checksum back on a second pipe, and the parent compares them with its
//! own. Then one part per rule: a reader that kept a write end open waits for
//! an end of file that never comes (2); two unframed writes come out of one
//! read glued together (3); a request/reply exchange over a pair of pipes
//! (4); a write to a pipe without readers fails with `EPIPE`, and kills a
//! process that has not ignored SIGPIPE (5); which calls make pipes
//! close-on-exec, and how a write end leaked into an exec'd program withholds
//! end of file (6; the program is started with `Command`, through
//! `common::program::Program`, which makes it die with the lesson).
//!
//! Key points:
//! - A pipe is a kernel buffer (64 KiB by default) with a read end and a
//!   write end. After `fork`, both processes hold copies of both ends, and
//!   the kernel counts every copy. `read` returns 0 (end of file) only once
//!   no write end is open in any process; `write` fails with `EPIPE` only once
//!   no read end is open. So every process, the parent too, closes the ends
//!   it does not use, right after the fork.
//! - A pipe carries a stream of bytes, not messages: two writes can arrive in
//!   one read and one write in several. Frame each message: here a 4-byte
//!   length, then the bytes, which is also what Python's `Connection` does.
//!   A write of at most `PIPE_BUF` (4096) bytes is never interleaved with
//!   another writer's; a longer one can be.
//! - A pipe goes one way. Two-way talk takes two pipes, one per direction
//!   (Python's duplex `Pipe()` is a socket pair instead).
//! - Rust ignores SIGPIPE, so a write to a pipe without readers returns
//!   `EPIPE` (`io::ErrorKind::BrokenPipe`) instead of killing the process.
//! - `fork` copies every descriptor; `exec` then closes those marked
//!   `FD_CLOEXEC`. `pipe2(O_CLOEXEC)` and `std::io::pipe` set the mark,
//!   `nix::unistd::pipe` (like C's `pipe`) does not.
//! - Never hang: every pipe of parts 1 to 5 is non-blocking, and every read
//!   and write first waits in `poll` with a timeout, so a dead or stuck peer
//!   turns into an error message, not a frozen program.
//!
//! What to observe, in another terminal while the parent pauses in part 1:
//! `ls -l /proc/<parent pid>/fd /proc/<consumer pid>/fd` shows
//! `pipe:[<inode>]` with the same inode in both processes; and
//! `cat /proc/<pid>/fdinfo/<fd>` shows `flags:`, ending in 1 for the write
//! end and 0 for the read end (02000000 is close-on-exec, 04000 non-blocking).
//! `scripts/pipe_communication.sh` does this for you.
//!
//! The pitfall: a write end left open somewhere, and the reader waits for end
//! of file forever. The seed's Python hangs this way under the `fork` start
//! method (Linux's default before Python 3.14): the consumer inherits a copy
//! of `parent_conn`, never closes it, and never gets its `EOFError`. The
//! seed's C++ closes its ends but ignores `write`'s result and would die
//! silently of SIGPIPE if the consumer went away.
//!
//! Seed example: 06, pipe communication (C++ `pipe` + `fork`, Python
//! `multiprocessing.Pipe`).
//!
//! Run with:
//! ```text
//! cargo run -p pipe_communication
//! cargo run -p pipe_communication -- --messages 1000 --max-len 65536 --window 3
//! ```
//!
//! Try it:
//! - Delete `data_tx.close()` in the consumer of part 1: the check in `/proc`
//!   reports the leaked write end. Delete that check too, and the consumer
//!   waits for an end of file that never comes, until its poll times out.
//! - Run `strace -f -e trace=read,write` on
//!   `pipe_communication --pace 0 --max-len 65536` and count how many calls
//!   one large message takes on each side.
//! - In part 6, mark the `pipe()` ends close-on-exec with
//!   `fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))` before the holder
//!   starts: the lesson now reports that nothing leaked.
//!
//! See also: `queue_communication` (messages with boundaries kept by the
//! kernel), `shared_value` (sharing memory instead of copying bytes),
//! `pipe(7)`, `fcntl(2)` (`FD_CLOEXEC`), PEP 446 (Python made new descriptors
//! close-on-exec by default in 3.4 for the reason shown in part 6).

use std::error::Error;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn, Child};
use common::opts::{Args, Opt, Pace, Spec};
use common::program::Program;
use common::{describe, say, warn};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{pipe, pipe2, read, write};

const SPEC: Spec = Spec {
    name: "pipe_communication",
    about: "Demonstrate how processes talk through pipes: closing ends, end of file, framing, EPIPE, close-on-exec.",
    options: &[
        Opt::int(
            "messages",
            "messages sent in part 1, requests in part 4",
            100,
            1,
            100_000,
        ),
        Opt::int("max-len", "largest message, in bytes", 2000, 0, 65_536),
        Opt::float(
            "window",
            "seconds part 1 pauses with the pipe open, for you to look at /proc",
            10.0,
            0.0,
            600.0,
        ),
    ],
};

/// How long a peer gets to do its part (write, read, exit) before we call it
/// stuck. A safety floor, not scaled by the pace; generous for a loaded box.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest frame a reader accepts. A corrupt length (say, reading an
/// unframed stream as framed) then fails cleanly instead of allocating 4 GiB.
const MAX_FRAME: usize = 1 << 20;

fn main() {
    let args = Args::parse(&SPEC);
    // A process started with `Command` (fork, then exec of this very binary)
    // learns its job from the environment. Python's spawn start method does
    // the same with a hidden command-line flag.
    let result = match std::env::var("LESSON_CHILD").as_deref() {
        Ok("holder") => holder(),
        Ok(other) => Err(format!("LESSON_CHILD: unknown role {other:?}").into()),
        Err(_) => run(&args),
    };
    if let Err(e) = result {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    let messages = args.int("messages");
    let max_len = args.usize("max-len");
    one_way(messages, max_len, pace.secs(args.float("window")))?;
    missing_eof(pace)?;
    framing()?;
    two_way(messages, max_len)?;
    broken_pipe()?;
    close_on_exec(pace)?;
    say!("all checks passed");
    Ok(())
}

/// Part 1: a one-way pipe from the parent (producer) to a child (consumer).
fn one_way(messages: u64, max_len: usize, window: Duration) -> Result<(), Box<dyn Error>> {
    say!("part 1: a one-way pipe, from the producer (this process) to a consumer (a child)");
    let (mut data_rx, mut data_tx) = pipe_ends("data")?;
    // The consumer's totals come back on a second pipe (part 4 is about
    // such two-way traffic).
    let (mut report_rx, mut report_tx) = pipe_ends("report")?;
    let data = inode(data_tx.fd()?)?;
    // The consumer waits for the first message through the pause below.
    let patience = SYSTEM_TIMEOUT + window;

    // `spawn` flushes stdout and forks; the closure runs only in the child,
    // on the child's copies of the ends, and the child then leaves with
    // `_exit`, so it never returns here to drop (close, again) what the
    // parent owns. `fork` is `unsafe` because a child of a multithreaded
    // process may only make async-signal-safe calls; `spawn` refuses to
    // fork unless this process has a single thread, as it does here.
    let mut consumer = spawn("consumer", || -> Result<(), Box<dyn Error>> {
        // The child holds copies of all four ends. It closes the two it does
        // not use, above all the data write end: while any copy of it is
        // open, even its own, the read end never reports end of file.
        data_tx.close();
        report_rx.close();
        let mut received = Tally::new();
        while let Some(msg) = data_rx.recv(patience)? {
            received.add(&msg);
        }
        say!("end of file; consumer received: {received}");
        report_tx.send(&received.to_bytes(), SYSTEM_TIMEOUT)?;
        Ok(())
    })?;
    // The parent closes its copies of the ends it does not use.
    data_rx.close();
    report_tx.close();

    // Check in /proc that each process holds just the end it uses. The
    // consumer closes its copies on its own schedule: wait for that.
    let me = std::process::id() as i32;
    let child = consumer.raw();
    let ours = pipe_fds(me, data)?;
    if !matches!(ours[..], [(_, Access::Write)]) {
        return Err(format!("the parent holds {} on pipe:[{data}]", list(&ours)).into());
    }
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    let theirs = loop {
        let fds = pipe_fds(child, data)?;
        if matches!(fds[..], [(_, Access::Read)]) {
            break fds;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "consumer {child} still holds {} on pipe:[{data}] after {SYSTEM_TIMEOUT:?}",
                list(&fds)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    say!(
        "pipe:[{data}]: the parent holds only the write end (fd {}), consumer {child} only the read end (fd {})",
        ours[0].0,
        theirs[0].0
    );
    say!(
        "pausing {:.1} s: see it yourself with ls -l /proc/{me}/fd /proc/{child}/fd",
        window.as_secs_f64()
    );
    std::thread::sleep(window);

    let mut sent = Tally::new();
    for i in 0..messages {
        let msg = message(i, max_len);
        data_tx.send(&msg, SYSTEM_TIMEOUT)?;
        sent.add(&msg);
    }
    // Closing the last write end is how the consumer learns "no more".
    data_tx.close();
    say!("closed the write end; producer sent: {sent}");

    let report = report_rx
        .recv(SYSTEM_TIMEOUT)?
        .ok_or("report pipe: end of file before the consumer's totals")?;
    let received = Tally::from_bytes(&report)?;
    reap(&mut consumer, "consumer")?;
    if received != sent {
        return Err(
            format!("the consumer received {received}, but the producer sent {sent}").into(),
        );
    }
    say!("the consumer's count and checksum match the producer's");
    Ok(())
}

/// Part 2: a reader that keeps its own copy of the write end open never sees
/// end of file. `poll` with a timeout shows it without hanging.
fn missing_eof(pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 2: a reader that forgot to close its write end");
    let (mut rx, mut tx) = pipe_ends("eof")?;
    let mut writer = spawn("writer", || -> Result<(), Box<dyn Error>> {
        rx.close();
        for word in ["one", "two", "three"] {
            tx.send(word.as_bytes(), SYSTEM_TIMEOUT)?;
        }
        say!("sent 3 messages; exiting closes my write end");
        Ok(())
    })?;
    // The mistake under study: the parent reads, but never closed `tx`.
    // Reap the writer first: then its copy of the write end is surely closed,
    // and the only write end left is our own.
    reap(&mut writer, "writer")?;
    for _ in 0..3 {
        rx.recv(SYSTEM_TIMEOUT)?
            .ok_or("eof pipe: end of file before 3 messages")?;
    }
    let waited = pace.secs(2.0).max(Duration::from_millis(200));
    say!(
        "read the 3 messages; the writer is gone; waiting up to {:.1} s for end of file",
        waited.as_secs_f64()
    );
    let events = poll_once(rx.fd()?, PollFlags::POLLIN, waited)?;
    if !events.is_empty() {
        return Err(
            format!("expected no event while our write end is open, poll said {events:?}").into(),
        );
    }
    say!("no end of file: poll timed out with no data and no POLLHUP (a plain read would block forever): this process still holds a write end");

    tx.close();
    let events = wait_ready(rx.fd()?, PollFlags::POLLIN, deadline(), "see end of file")?;
    let n = rx.read_some(&mut [0; 16])?;
    if !events.contains(PollFlags::POLLHUP) || n != 0 {
        return Err(format!(
            "after closing our write end: poll said {events:?}, read returned {n}"
        )
        .into());
    }
    say!("closed our own write end: poll says POLLHUP at once and read returns 0, end of file");
    Ok(())
}

/// Part 3: a pipe keeps no message boundaries.
fn framing() -> Result<(), Box<dyn Error>> {
    say!("part 3: a pipe carries bytes, not messages");
    let (mut rx, mut tx) = pipe_ends("unframed")?;
    let mut writer = spawn("writer", || -> Result<(), Box<dyn Error>> {
        rx.close();
        tx.write_all(b"hello")?;
        tx.write_all(b"world")?;
        say!("two writes: \"hello\", then \"world\"");
        Ok(())
    })?;
    tx.close();
    // Once the writer is reaped, both writes are waiting in the pipe.
    reap(&mut writer, "writer")?;
    let mut buf = [0; 64];
    let n = rx.read_some(&mut buf)?;
    let got = String::from_utf8_lossy(&buf[..n]);
    if got != "helloworld" {
        return Err(format!("expected both writes in one read, got {got:?}").into());
    }
    say!("one read returned {n} bytes, {got:?}: two messages glued together, the boundary lost");

    // The same two messages, each with its length in front.
    let (mut rx, mut tx) = pipe_ends("framed")?;
    let mut writer = spawn("writer", || -> Result<(), Box<dyn Error>> {
        rx.close();
        tx.send(b"hello", SYSTEM_TIMEOUT)?;
        tx.send(b"world", SYSTEM_TIMEOUT)?;
        say!("two framed messages: a 4-byte length, then the bytes");
        Ok(())
    })?;
    tx.close();
    reap(&mut writer, "writer")?;
    let mut got = Vec::new();
    while let Some(msg) = rx.recv(SYSTEM_TIMEOUT)? {
        got.push(String::from_utf8_lossy(&msg).into_owned());
    }
    if got != ["hello", "world"] {
        return Err(
            format!("expected the framed messages \"hello\", \"world\", got {got:?}").into(),
        );
    }
    say!(
        "framed: read back {} messages, {got:?}, then end of file",
        got.len()
    );
    Ok(())
}

/// Part 4: requests and replies over a pair of pipes, one per direction.
fn two_way(requests: u64, max_len: usize) -> Result<(), Box<dyn Error>> {
    say!("part 4: a two-way exchange over two pipes (requests to a server, replies back)");
    // Python's duplex `Pipe()` hands each side one object for both
    // directions (a socket pair underneath). With pipes, each direction is a
    // pipe of its own, and each process closes the two ends it does not use.
    let (mut req_rx, mut req_tx) = pipe_ends("request")?;
    let (mut rep_rx, mut rep_tx) = pipe_ends("reply")?;
    let mut server = spawn("server", || -> Result<(), Box<dyn Error>> {
        req_tx.close();
        rep_rx.close();
        let (mut received, mut sent) = (Tally::new(), Tally::new());
        // Serve until the client closes its request end.
        while let Some(request) = req_rx.recv(SYSTEM_TIMEOUT)? {
            received.add(&request);
            let reply = reversed(&request);
            rep_tx.send(&reply, SYSTEM_TIMEOUT)?;
            sent.add(&reply);
        }
        say!("server received requests: {received}");
        say!("server sent replies: {sent}");
        // Last, the server's own totals, for the client to compare.
        let totals = [received.to_bytes(), sent.to_bytes()].concat();
        rep_tx.send(&totals, SYSTEM_TIMEOUT)?;
        Ok(())
    })?;
    req_rx.close();
    rep_tx.close();

    // Lockstep: one request, then its reply. Had both sides written large
    // messages without reading, both pipes could fill and both block.
    let (mut sent, mut received) = (Tally::new(), Tally::new());
    for i in 0..requests {
        let request = message(i + 1, max_len);
        req_tx.send(&request, SYSTEM_TIMEOUT)?;
        sent.add(&request);
        let reply = rep_rx
            .recv(SYSTEM_TIMEOUT)?
            .ok_or("reply pipe: end of file before a reply")?;
        if reply != reversed(&request) {
            return Err(format!("reply {i} is not request {i} reversed").into());
        }
        received.add(&reply);
    }
    // End of file on the request pipe means "no more requests".
    req_tx.close();
    say!("client sent requests: {sent}");
    say!("client received replies: {received}");

    let totals = rep_rx
        .recv(SYSTEM_TIMEOUT)?
        .ok_or("reply pipe: end of file before the server's totals")?;
    if totals.len() != 2 * Tally::SIZE {
        return Err(format!(
            "server totals: {} bytes, expected {}",
            totals.len(),
            2 * Tally::SIZE
        )
        .into());
    }
    let server_received = Tally::from_bytes(&totals[..Tally::SIZE])?;
    let server_sent = Tally::from_bytes(&totals[Tally::SIZE..])?;
    if rep_rx.recv(SYSTEM_TIMEOUT)?.is_some() {
        return Err("reply pipe: more data after the server's totals".into());
    }
    reap(&mut server, "server")?;
    if server_received != sent {
        return Err(
            format!("the client sent {sent}, the server received {server_received}").into(),
        );
    }
    if server_sent != received {
        return Err(
            format!("the server sent {server_sent}, the client received {received}").into(),
        );
    }
    say!("both directions check out: counts and checksums agree on both sides, every reply matches its request");
    Ok(())
}

/// Part 5: a write to a pipe that no one can read any more.
fn broken_pipe() -> Result<(), Box<dyn Error>> {
    say!("part 5: writing to a pipe whose reader has gone");
    let (mut rx, mut tx) = pipe_ends("epipe")?;
    let mut reader = spawn("reader", || {
        tx.close();
        rx.close();
        say!("closed my read end; leaving without reading");
    })?;
    // While this process holds a read end there is still a reader: close it.
    rx.close();
    reap(&mut reader, "reader")?;
    match write(tx.fd()?, b"anyone there?") {
        Err(Errno::EPIPE) => say!(
            "write failed with EPIPE (Broken pipe): no read end is open anywhere; \
             Rust ignores SIGPIPE, so this is an error to handle, not death"
        ),
        other => return Err(format!("expected EPIPE from write, got {other:?}").into()),
    }

    // The same write from a process with SIGPIPE at its default action, as
    // in a C program (and in a program Rust's `Command` starts: it resets
    // SIGPIPE to the default before exec).
    let mut writer = spawn("writer", || -> Result<(), Box<dyn Error>> {
        // SAFETY: SIG_DFL installs no handler of ours.
        unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }?;
        let result = write(tx.fd()?, b"anyone there?");
        Err(format!("still alive after write returned {result:?}").into())
    })?;
    match writer.wait_timeout(SYSTEM_TIMEOUT)? {
        Some(WaitStatus::Signaled(_, Signal::SIGPIPE, _)) => say!(
            "writer {}: killed by SIGPIPE, the default action for the same write (a shell reports status 141)",
            writer.raw()
        ),
        Some(other) => return Err(format!("expected death by SIGPIPE, got: {}", describe(other)).into()),
        None => return Err(format!("writer {} still running after {SYSTEM_TIMEOUT:?}", writer.raw()).into()),
    }
    Ok(())
}

/// Part 6: which pipes survive `exec`, and what a leaked write end does.
fn close_on_exec(pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 6: close-on-exec, and a write end leaked into another program");
    let (leaky_rx, leaky_tx) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let (tight_rx, tight_tx) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    let (std_rx, std_tx) = std::io::pipe().map_err(|e| format!("std::io::pipe: {e}"))?;
    for (call, rx, tx, want) in [
        (
            "nix::unistd::pipe()",
            leaky_rx.as_fd(),
            leaky_tx.as_fd(),
            false,
        ),
        (
            "nix::unistd::pipe2(O_CLOEXEC)",
            tight_rx.as_fd(),
            tight_tx.as_fd(),
            true,
        ),
        ("std::io::pipe()", std_rx.as_fd(), std_tx.as_fd(), true),
    ] {
        let (r, w) = (cloexec(rx)?, cloexec(tx)?);
        let set_or_clear = |on: bool| if on { "set" } else { "clear" };
        say!(
            "{call}: FD_CLOEXEC {} on the read end (fd {}) and {} on the write end (fd {})",
            set_or_clear(r),
            rx.as_raw_fd(),
            set_or_clear(w),
            tx.as_raw_fd()
        );
        if (r, w) != (want, want) {
            return Err(format!(
                "{call}: expected FD_CLOEXEC {} on both ends",
                set_or_clear(want)
            )
            .into());
        }
    }

    // A new program: `Command` forks (every descriptor is copied) and then
    // execs (those marked FD_CLOEXEC are closed). Rust's `Command` closes
    // nothing else, and neither does C's `fork` + `exec`.
    let mut holder = start_holder()?;
    let pid = holder.pid();
    let leaked = pipe_fds(pid, inode(leaky_tx.as_fd())?)?;
    let tight = pipe_fds(pid, inode(tight_tx.as_fd())?)?;
    let std_kept = pipe_fds(pid, inode(std_tx.as_fd())?)?;
    if leaked.len() != 2 || !tight.is_empty() || !std_kept.is_empty() {
        return Err(format!(
            "holder {pid} holds {} of pipe(), {} of pipe2(O_CLOEXEC), {} of std::io::pipe(); \
             expected both ends of pipe() only",
            list(&leaked),
            list(&tight),
            list(&std_kept)
        )
        .into());
    }
    say!(
        "holder {pid}, a new program, holds both ends of the nix::unistd::pipe() pipe ({}) without asking for them, and nothing of the other two: ls -l /proc/{pid}/fd",
        list(&leaked)
    );

    // We close all our write ends. The close-on-exec pipes end at once.
    drop(tight_tx);
    drop(std_tx);
    drop(leaky_tx);
    for (call, rx) in [
        ("nix::unistd::pipe2(O_CLOEXEC)", tight_rx.as_fd()),
        ("std::io::pipe()", std_rx.as_fd()),
    ] {
        wait_ready(rx, PollFlags::POLLIN, deadline(), "see end of file")?;
        let n = read(rx, &mut [0; 16]).map_err(|e| format!("read: {e}"))?;
        if n != 0 {
            return Err(format!("{call}: read returned {n} bytes, expected end of file").into());
        }
        say!("{call}: end of file as soon as our write end closed");
    }
    let waited = pace.secs(2.0).max(Duration::from_millis(200));
    let events = poll_once(leaky_rx.as_fd(), PollFlags::POLLIN, waited)?;
    if !events.is_empty() {
        return Err(format!(
            "pipe(): expected no end of file while the holder lives, poll said {events:?}"
        )
        .into());
    }
    say!(
        "nix::unistd::pipe(): no end of file after {:.1} s: the holder's leaked copy keeps the pipe open",
        waited.as_secs_f64()
    );
    // Close the holder's stdin (its cue to leave) and wait for it to exit.
    drop(holder.child_mut().stdin.take());
    holder.expect_success(SYSTEM_TIMEOUT)?;
    wait_ready(
        leaky_rx.as_fd(),
        PollFlags::POLLIN,
        deadline(),
        "see end of file",
    )?;
    let n = read(leaky_rx.as_fd(), &mut [0; 16]).map_err(|e| format!("read: {e}"))?;
    if n != 0 {
        return Err(format!("pipe(): read returned {n} bytes, expected end of file").into());
    }
    say!("holder {pid} exited: only now does nix::unistd::pipe() report end of file");
    Ok(())
}

/// Whether `fd` is closed by `exec` (`fcntl(F_GETFD)` has `FD_CLOEXEC`).
fn cloexec(fd: BorrowedFd<'_>) -> Result<bool, Box<dyn Error>> {
    let flags = fcntl(fd, FcntlArg::F_GETFD).map_err(|e| format!("fcntl(F_GETFD): {e}"))?;
    Ok(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC))
}

/// Start the holder: this binary again with `LESSON_CHILD=holder`, through
/// `Command` (fork, then exec), as a `common::program::Program`, which dies
/// with the lesson and is killed and reaped if dropped early (an error path).
/// It lives until its stdin closes.
fn start_holder() -> Result<Program, Box<dyn Error>> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.env("LESSON_CHILD", "holder").stdin(Stdio::piped());
    // `start` returns once the exec has succeeded: the holder's descriptors
    // are final by now.
    Ok(Program::start("holder", &mut cmd)?)
}

/// The holder's whole life: wait until stdin reaches end of file.
fn holder() -> Result<(), Box<dyn Error>> {
    common::out::set_role("holder");
    say!("a new program (fork + exec); I leave when my stdin closes");
    let stdin = io::stdin();
    // A safety limit: the lesson closes stdin within seconds.
    let limit = Instant::now() + 2 * SYSTEM_TIMEOUT;
    loop {
        wait_ready(stdin.as_fd(), PollFlags::POLLIN, limit, "see stdin close")?;
        if read(stdin.as_fd(), &mut [0; 64]).map_err(|e| format!("read(stdin): {e}"))? == 0 {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------
// Pipe ends, and reading and writing them without ever hanging.

/// One end of a pipe, closed explicitly with `close`.
///
/// After `fork`, parent and child each hold their own copy of every end. A
/// forked child borrows the parent's `End`s (the closure runs only in the
/// child), so `close` there closes the child's copy and leaves the parent's
/// alone.
struct End {
    fd: Option<OwnedFd>,
    name: String,
}

impl End {
    fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        self.fd
            .as_ref()
            .map(|fd| fd.as_fd())
            .ok_or_else(|| io::Error::other(format!("{}: already closed", self.name)))
    }

    /// `close(2)`, by dropping the owned descriptor.
    fn close(&mut self) {
        self.fd = None;
    }

    /// Send one framed message (see [`send_frame`]).
    fn send(&self, payload: &[u8], timeout: Duration) -> io::Result<()> {
        send_frame(self.fd()?, payload, timeout).map_err(|e| self.context(e))
    }

    /// Receive one framed message; `None` at end of file.
    fn recv(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        recv_frame(self.fd()?, timeout).map_err(|e| self.context(e))
    }

    /// Write raw bytes, no frame.
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        write_all(self.fd()?, buf, deadline()).map_err(|e| self.context(e))
    }

    /// One raw `read`: whatever the pipe holds, up to `buf.len()` bytes.
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_some(self.fd()?, buf, deadline()).map_err(|e| self.context(e))
    }

    /// Name the pipe and end in an error: "report pipe read end: poll: ...".
    fn context(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.name))
    }
}

/// A pipe as (read end, write end), both close-on-exec (part 6) and
/// non-blocking (every read and write below waits in `poll` first).
fn pipe_ends(name: &str) -> io::Result<(End, End)> {
    let (rx, tx) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| sys_err("pipe2", e))?;
    let end = |fd, which| End {
        fd: Some(fd),
        name: format!("{name} pipe {which} end"),
    };
    Ok((end(rx, "read"), end(tx, "write")))
}

fn sys_err(call: &str, e: Errno) -> io::Error {
    io::Error::new(io::Error::from(e).kind(), format!("{call}: {e}"))
}

fn deadline() -> Instant {
    Instant::now() + SYSTEM_TIMEOUT
}

/// One `poll` on one descriptor: the events that happened, none on timeout.
fn poll_once(fd: BorrowedFd<'_>, events: PollFlags, timeout: Duration) -> io::Result<PollFlags> {
    // Round up to whole milliseconds, so a short wait is not a busy loop.
    let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(fd, events)];
    match poll(&mut fds, timeout) {
        Ok(0) | Err(Errno::EINTR) => Ok(PollFlags::empty()),
        Ok(_) => Ok(fds[0].revents().unwrap_or(PollFlags::empty())),
        Err(e) => Err(sys_err("poll", e)),
    }
}

/// Wait until `fd` is ready for `events`, has hung up or has an error; fail
/// once `deadline` has passed.
fn wait_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Instant,
    what: &str,
) -> io::Result<PollFlags> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = poll_once(fd, events, left)?;
        if !got.is_empty() {
            return Ok(got);
        }
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("poll: timed out waiting to {what} (is the other side stuck or gone?)"),
            ));
        }
    }
}

/// Write all of `buf`. A non-blocking write of more than PIPE_BUF bytes takes
/// what fits; one of at most PIPE_BUF bytes goes in whole or fails with
/// `EAGAIN`, as any write does when the pipe is full; then wait for the
/// reader to make room.
fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EAGAIN) => {
                wait_ready(fd, PollFlags::POLLOUT, deadline, "write (the pipe is full)")?;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(sys_err("write", e)),
        }
    }
    Ok(())
}

/// One `read`, after waiting for data. 0 means end of file: the pipe is
/// empty and no write end is open anywhere.
fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    loop {
        match read(fd, buf) {
            Ok(n) => return Ok(n),
            Err(Errno::EAGAIN) => {
                wait_ready(fd, PollFlags::POLLIN, deadline, "read (the pipe is empty)")?;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(sys_err("read", e)),
        }
    }
}

/// Fill `buf`, however many reads it takes. `Ok(false)` if the pipe ended
/// before the first byte; an error if it ended part-way.
fn read_full(fd: BorrowedFd<'_>, buf: &mut [u8], deadline: Instant) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match read_some(fd, &mut buf[got..], deadline)? {
            0 if got == 0 => return Ok(false),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read: end of file after {got} of {} bytes", buf.len()),
                ))
            }
            n => got += n,
        }
    }
    Ok(true)
}

/// Send one message: its length as 4 bytes (big-endian), then its bytes,
/// from one buffer (so a frame of up to `PIPE_BUF` bytes is one atomic write).
fn send_frame(fd: BorrowedFd<'_>, payload: &[u8], timeout: Duration) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| {
            io::Error::other(format!("a message of {} bytes is too long", payload.len()))
        })?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    write_all(fd, &frame, Instant::now() + timeout)
}

/// Receive one message; `None` at end of file between messages.
fn recv_frame(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + timeout;
    let mut header = [0; 4];
    if !read_full(fd, &mut header, deadline)? {
        return Ok(None);
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame header says {len} bytes, more than {MAX_FRAME}: not a frame"),
        ));
    }
    let mut payload = vec![0; len];
    if !read_full(fd, &mut payload, deadline)? {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("read: end of file after a header of {len} bytes"),
        ));
    }
    Ok(Some(payload))
}

// ---------------------------------------------------------------------------
// Proof: what was sent is what was received, and who holds which end.

/// What one side sent or received: how many messages, how many bytes, and a
/// checksum (64-bit FNV-1a) over every message's length and bytes, in order.
/// Each side computes its own; the parent compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    count: u64,
    bytes: u64,
    checksum: u64,
}

impl Tally {
    const SIZE: usize = 24;

    fn new() -> Tally {
        Tally {
            count: 0,
            bytes: 0,
            checksum: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn add(&mut self, msg: &[u8]) {
        self.count += 1;
        self.bytes += msg.len() as u64;
        for &b in (msg.len() as u32).to_be_bytes().iter().chain(msg) {
            self.checksum = (self.checksum ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn to_bytes(self) -> [u8; Tally::SIZE] {
        let mut out = [0; Tally::SIZE];
        for (chunk, v) in out
            .chunks_mut(8)
            .zip([self.count, self.bytes, self.checksum])
        {
            chunk.copy_from_slice(&v.to_be_bytes());
        }
        out
    }

    fn from_bytes(b: &[u8]) -> io::Result<Tally> {
        let field = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        match (b.len(), field(0), field(1), field(2)) {
            (Tally::SIZE, Some(count), Some(bytes), Some(checksum)) => Ok(Tally {
                count,
                bytes,
                checksum,
            }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("totals: {} bytes, expected {}", b.len(), Tally::SIZE),
            )),
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} messages, {} bytes, checksum {:016x}",
            self.count, self.bytes, self.checksum
        )
    }
}

/// Message `i`: 0 to `max_len` bytes of any value (zero bytes and newlines
/// included: a pipe does not care), different for every `i`.
fn message(i: u64, max_len: usize) -> Vec<u8> {
    let len = (i.wrapping_mul(2_654_435_761) % (max_len as u64 + 1)) as usize;
    // xorshift64: cheap bytes that look random; the state must not be 0.
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn reversed(msg: &[u8]) -> Vec<u8> {
    msg.iter().rev().copied().collect()
}

/// Wait (at most [`SYSTEM_TIMEOUT`]) for a child and insist it exited with 0.
fn reap(child: &mut Child, who: &str) -> Result<(), Box<dyn Error>> {
    match child.wait_timeout(SYSTEM_TIMEOUT)? {
        Some(status) if exit_code(status) == Some(0) => Ok(()),
        Some(status) => Err(format!("{who} {}: {}", child.raw(), describe(status)).into()),
        None => Err(format!(
            "{who} {} still running after {SYSTEM_TIMEOUT:?}",
            child.raw()
        )
        .into()),
    }
}

/// How a descriptor may be used, from the `flags:` line of
/// `/proc/<pid>/fdinfo/<fd>` (the low two bits: `O_RDONLY`, `O_WRONLY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    Read,
    Write,
}

/// The inode of the pipe behind `fd`: `ls -l /proc/<pid>/fd` shows it as
/// `pipe:[inode]`, the same in every process that holds an end.
fn inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| sys_err("fstat", e))?;
    Ok(st.st_ino)
}

/// The descriptors of process `pid` on the pipe `inode`, with their access,
/// from `/proc/<pid>/fd` (symlinks such as `4 -> pipe:[123456]`) and
/// `/proc/<pid>/fdinfo`.
fn pipe_fds(pid: i32, inode: u64) -> io::Result<Vec<(i32, Access)>> {
    let target = format!("pipe:[{inode}]");
    let dir = format!("/proc/{pid}/fd");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| io::Error::new(e.kind(), format!("{dir}: {e}")))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        // A descriptor may be closed while we look: skip it then.
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if link.as_os_str() != target.as_str() {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
            .ok_or_else(|| io::Error::other(format!("/proc/{pid}/fdinfo/{fd}: no flags line")))?;
        let access = if flags & libc::O_ACCMODE == libc::O_WRONLY {
            Access::Write
        } else {
            Access::Read
        };
        found.push((fd, access));
    }
    found.sort();
    Ok(found)
}

/// `fd 4 (write)`, or `nothing`.
fn list(fds: &[(i32, Access)]) -> String {
    if fds.is_empty() {
        return "nothing".to_string();
    }
    let words: Vec<String> = fds
        .iter()
        .map(|(fd, a)| {
            format!(
                "fd {fd} ({})",
                if *a == Access::Write { "write" } else { "read" }
            )
        })
        .collect();
    words.join(", ")
}
