//! Demonstrate how unrelated processes talk through a named pipe (a FIFO):
//! a pipe with a name in the file system, which any process allowed to can
//! open, where an anonymous pipe reaches only the children of its creator.
//!
//! Part 1: the lesson makes a FIFO with `mkfifo` (mode 0600) inside a fresh
//! directory of mode 0700, and shows the opening rules. With `O_NONBLOCK`,
//! opening for reading succeeds at once and opening for writing fails with
//! `ENXIO` while nobody reads. Then another program (this binary started
//! again with `Command`, not a forked copy) opens the FIFO for reading and
//! stays stuck inside `open`: the lesson sees it in `/proc` (state `S`,
//! wchan `wait_for_partner`) until it opens the write end itself. Once both
//! ends are open, nobody needs the name: the lesson removes the FIFO and its
//! directory, and the two processes go on talking through it. The reader
//! gets end of file when the writer closes.
//!
//! Part 2: several writer programs, one reader (the lesson). Each writer
//! opens the FIFO, says hello, and once every writer has opened it (and the
//! name is gone) sends hundreds of self-describing records (writer, sequence
//! number, length, checksum) of at most `PIPE_BUF` (4096) bytes, a quarter of
//! them exactly 4096. The reader checks that every record arrived whole and
//! in order per writer, never mixed with another writer's bytes. Part 3
//! repeats this with records of 100 000 bytes and counts how many were cut by
//! other writers' bytes: above `PIPE_BUF`, POSIX promises nothing.
//!
//! Key points:
//! - A FIFO is a pipe: the same kernel buffer, end of file and `EPIPE`. The
//!   name serves only to open it; no data ever goes to the disk. `ls -l`
//!   shows it with type `p`.
//! - Opening blocks until the other side shows up: a reader waits in `open`
//!   for a writer, a writer for a reader. With `O_NONBLOCK` the reader's
//!   open succeeds at once and the writer's fails with `ENXIO`. The lesson
//!   never waits without a limit: its own opens are non-blocking, its reads
//!   wait in `poll` with a timeout, and each program it starts has a
//!   watchdog (`alarm`) for its blocking `open`. Each is a
//!   `common::program::Program`: it dies with the lesson
//!   (`PR_SET_PDEATHSIG`), even a SIGKILLed one, and is killed and reaped on
//!   an error path.
//! - A `write` of at most `PIPE_BUF` bytes lands in the pipe in one piece,
//!   whatever other writers do. A longer one may be split and interleaved.
//!   A `read` can cut anywhere: the reader reassembles records from their
//!   length, atomicity is about the writers.
//! - Removing the name closes nothing. Remove it as soon as every process
//!   has opened it: a crash can then leave nothing behind in `/tmp`.
//! - Open with `O_CLOEXEC`: a program started later with `Command` would
//!   otherwise inherit the lesson's end of the FIFO.
//!
//! What to observe, in another terminal while the lesson pauses (2 s at pace
//! 1): `ls -l /proc/<writer pid>/fd` shows the FIFO as
//! `/tmp/named_pipe-<pid>-<random>/fifo (deleted)`: still open, no longer
//! in the file system. `ls -d /tmp/named_pipe-*` finds nothing.
//!
//! The pitfall: the seed's C++ uses the fixed path `/tmp/example_fifo`,
//! created with mode 0666 and an `EEXIST` from `mkfifo` ignored. Anyone can
//! plant a symlink or a file of their own at that name first: `mkfifo` then
//! fails with `EEXIST`, the program carries on, and its `open` follows the
//! symlink and writes into the target (only `fs.protected_symlinks` may stop
//! that). With 0666, any user can also read the messages or inject some, and
//! a second copy of the program shares the first one's FIFO. The FIFO is
//! removed only at the very end, so a Ctrl-C leaves it in `/tmp`. Here the
//! FIFO is made inside a directory that `mkdir` has just created with mode
//! 0700 (it fails if the name exists), so nobody else can plant or open
//! anything in it, and both are gone as soon as everyone has opened the FIFO.
//!
//! Seed example: none; lesson 17 of this course, answering the C++ set's
//! later `named_pipe.cpp` (`mkfifo`, a forked reader and writer).
//!
//! Run with:
//! ```text
//! cargo run -p named_pipe
//! cargo run -p named_pipe -- --writers 8 --records 2000 --big-records 50
//! ```
//!
//! Try it:
//! - In a shell: `d=$(mktemp -d); mkfifo -m 600 $d/f; cat $d/f` blocks; in
//!   another terminal `ps -o pid,stat,wchan:20,cmd -C cat` shows it in
//!   `wait_for_partner`, and `echo hi > $d/f` releases it.
//! - Set `BIG` to `PIPE_BUF` and run part 3 again: no record is cut any more.
//! - Remove `OFlag::O_CLOEXEC` from the read end's `open` in part 2 and look
//!   at `ls -l /proc/<writer pid>/fd` during the pause: every writer now
//!   holds a read end too, so its writes could never fail with `EPIPE`.
//!
//! See also: `pipe_communication` (anonymous pipes, framing, `EPIPE`),
//! `manager` (a Unix socket, the two-way relative of a FIFO), `fifo(7)`,
//! `pipe(7)` (the `PIPE_BUF` rule), `mkfifo(3)`.

use std::collections::HashSet;
use std::error::Error;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::names::PrivateDir;
use common::opts::{Args, Opt, Pace, Spec};
use common::program::Program;
use common::signals::Hold;
use common::{procfs, say, warn};
use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::unistd::{alarm, mkfifo, read, write};

const SPEC: Spec = Spec {
    name: "named_pipe",
    about: "Demonstrate how unrelated processes talk through a named pipe (FIFO).",
    options: &[
        Opt::int("writers", "writer programs in parts 2 and 3", 4, 1, 16),
        Opt::int(
            "records",
            "records of at most PIPE_BUF bytes each writer sends in part 2",
            500,
            1,
            20_000,
        ),
        Opt::int(
            "big-records",
            "records of 100000 bytes each writer sends in part 3 (0 skips it)",
            10,
            0,
            200,
        ),
    ],
};

/// The largest write that POSIX guarantees to be atomic on a pipe (4096 on
/// Linux).
const PIPE_BUF: usize = libc::PIPE_BUF;
/// A record size well above `PIPE_BUF`, and above the pipe's 64 KiB buffer.
const BIG: usize = 100_000;

/// How long a peer gets to do its part (start, open, write, exit) before we
/// call it stuck. A safety floor, not scaled by the pace; generous for a
/// loaded machine.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a wait also checks that the programs it waits for still run.
const SLICE: Duration = Duration::from_millis(20);
/// Pauses at pace 1: before each part, and while the FIFO is open but gone.
const INTRO_SECS: f64 = 1.0;
const PAUSE_SECS: f64 = 2.0;

/// The environment of the programs the lesson starts.
const CHILD_ENV: &str = "LESSON_CHILD";
const FIFO_ENV: &str = "NAMED_PIPE_FIFO";
const ID_ENV: &str = "NAMED_PIPE_WRITER";
const COUNT_ENV: &str = "NAMED_PIPE_COUNT";
const SIZE_ENV: &str = "NAMED_PIPE_SIZE";
const LIMIT_ENV: &str = "NAMED_PIPE_LIMIT";

fn main() {
    let args = Args::parse(&SPEC);
    // This binary plays three parts. The lesson starts itself again with
    // `Command` (fork, then exec) as a reader or a writer: programs that
    // share nothing with it but the FIFO's name, given in their environment.
    // Python's spawn start method does the same with a hidden command-line
    // flag.
    let result = match std::env::var(CHILD_ENV).as_deref() {
        Ok("reader") => reader(),
        Ok("writer") => writer(),
        Ok(other) => Err(format!("{CHILD_ENV}: unknown role {other:?}").into()),
        Err(_) => run(&args),
    };
    if let Err(e) = result {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    let writers = args.int("writers") as u16;
    blocking_open(pace)?;
    small_writes(writers, args.int("records") as u32, pace)?;
    match args.int("big-records") as u32 {
        0 => say!("part 3 skipped (--big-records 0)"),
        n => big_writes(writers, n, pace)?,
    }
    say!("all checks passed");
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 1: opening blocks until the other side opens too.

/// The messages of part 1, and what the reader expects.
const MESSAGES: u32 = 3;

fn message(i: u32) -> String {
    format!("message {i} of {MESSAGES}, through a FIFO whose name is gone")
}

fn blocking_open(pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 1: opening a FIFO waits for the other side");
    pace.sleep(INTRO_SECS);

    // From mkfifo until the FIFO is removed, a Ctrl-C or SIGTERM would end
    // us with the FIFO still in /tmp: hold those signals back until then.
    // Nothing is printed and nothing paces in this window; what we see is
    // reported once the name is gone. A SIGKILL cannot be held back: the
    // window stays a few milliseconds long. Created first, the hold is
    // dropped last, after the clean-up, on an error path too.
    let held = Hold::new()?;
    let mut fifo = Fifo::create()?;
    let made = fifo.check_private()?;

    // With O_NONBLOCK, nobody waits: a writer without a reader is refused...
    let lonely_writer = match open_fifo(&fifo.path, OFlag::O_WRONLY) {
        Err(Errno::ENXIO) => "failed with ENXIO: nobody has it open for reading",
        Ok(_) => return Err("open(O_WRONLY | O_NONBLOCK) succeeded without a reader".into()),
        Err(e) => return Err(format!("open(O_WRONLY | O_NONBLOCK): {e}").into()),
    };
    // ...and a reader without a writer is let in at once.
    drop(open_fifo(&fifo.path, OFlag::O_RDONLY).map_err(|e| format!("open(O_RDONLY): {e}"))?);

    // A separate program opens it for reading, blocking.
    let mut reader = start(
        "reader",
        &fifo.path,
        &[(COUNT_ENV, MESSAGES.to_string())],
        false,
        pace,
    )?;
    let blocked = blocked_in_open(&mut reader)?;

    // Its open waits for a writer: be that writer. Now that a reader is
    // there, the same non-blocking open that failed above succeeds.
    let tx = open_fifo(&fifo.path, OFlag::O_WRONLY)
        .map_err(|e| format!("open(O_WRONLY | O_NONBLOCK) with a reader waiting: {e}"))?;
    // The reader looked the name up before it started to wait, so both ends
    // are open now: nobody needs the name any more.
    fifo.remove()?;
    drop(held);

    say!("mkfifo made {made}");
    say!("open(O_WRONLY | O_NONBLOCK) {lonely_writer}");
    say!("open(O_RDONLY | O_NONBLOCK) succeeded at once: a reader needs no writer to open");
    say!(
        "reader {} (this binary run anew with Command: fork + exec, no copy of our memory) called open(O_RDONLY) and waits in it: {blocked}",
        reader.pid()
    );
    say!(
        "opened the write end: the reader's open returns; removed {} and its directory",
        fifo.path.display()
    );
    let link = fs::read_link(format!("/proc/self/fd/{}", tx.as_raw_fd()))
        .map_err(|e| format!("readlink /proc/self/fd: {e}"))?;
    let link = link.to_string_lossy().into_owned();
    if !link.ends_with("(deleted)") || fifo.path.exists() {
        return Err(format!("the FIFO should be gone but open: /proc/self/fd says {link}").into());
    }
    say!(
        "our end is still open: /proc/self/fd/{} -> {link}",
        tx.as_raw_fd()
    );
    pause(pace, &[reader.pid()]);

    for i in 1..=MESSAGES {
        write_all(tx.as_fd(), format!("{}\n", message(i)).as_bytes())?;
    }
    drop(tx);
    say!("sent {MESSAGES} messages and closed the write end");
    reader.expect_success(SYSTEM_TIMEOUT)?;
    say!(
        "reader {} got all {MESSAGES} messages, then end of file, and exited 0",
        reader.pid()
    );
    Ok(())
}

/// The reader program of part 1: open the FIFO for reading (blocking), read
/// lines until end of file, check them.
fn reader() -> Result<(), Box<dyn Error>> {
    common::out::set_role("reader");
    let path = env_var(FIFO_ENV)?;
    let expected: u32 = env_var(COUNT_ENV)?.parse()?;
    let limit = watchdog()?;
    // Blocks until some process opens the FIFO for writing.
    let fd = nix::fcntl::open(
        Path::new(&path),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open({path}, O_RDONLY): {e}"))?;
    // Nothing is printed before the first message arrives: the lesson sends
    // it only after removing the FIFO.
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = read_some(
            fd.as_fd(),
            &mut buf,
            limit,
            "read a message",
            &mut || Ok(()),
        )?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(text).map_err(|e| format!("messages are not UTF-8: {e}"))?;
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines {
        say!("got {line:?}");
    }
    let want: Vec<String> = (1..=expected).map(message).collect();
    if lines != want {
        return Err(format!("expected {want:?}, got {lines:?}").into());
    }
    say!("end of file: the only writer closed its end");
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 2: many writers, one reader, writes of at most PIPE_BUF bytes.

/// A record: a 24-byte header, then a payload.
///
/// | bytes  | field                                  |
/// |--------|----------------------------------------|
/// | 0..4   | magic `FIFO`                           |
/// | 4..6   | writer number                          |
/// | 6..8   | whole record length (24 to `PIPE_BUF`) |
/// | 8..12  | sequence number (0 is the hello)       |
/// | 12..16 | zero                                   |
/// | 16..24 | FNV-1a checksum of the payload         |
const HEADER: usize = 24;
const MAGIC: [u8; 4] = *b"FIFO";

/// The length of record `seq` of `writer`: every fourth exactly `PIPE_BUF`,
/// the others spread between the header alone and `PIPE_BUF`. Both sides
/// compute it, so the reader knows what to expect.
fn record_len(writer: u16, seq: u32) -> usize {
    if seq == 0 {
        return HEADER;
    }
    if seq.is_multiple_of(4) {
        return PIPE_BUF;
    }
    let spread = (PIPE_BUF - HEADER + 1) as u64;
    HEADER + ((seq as u64 * 2_654_435_761 + writer as u64 * 40_503) % spread) as usize
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn encode(writer: u16, seq: u32) -> Vec<u8> {
    let len = record_len(writer, seq);
    let mut rec = vec![0u8; len];
    for (i, b) in rec[HEADER..].iter_mut().enumerate() {
        *b = (writer as usize * 31 + seq as usize * 7 + i) as u8;
    }
    let sum = fnv1a(&rec[HEADER..]);
    rec[0..4].copy_from_slice(&MAGIC);
    rec[4..6].copy_from_slice(&writer.to_le_bytes());
    rec[6..8].copy_from_slice(&(len as u16).to_le_bytes());
    rec[8..12].copy_from_slice(&seq.to_le_bytes());
    rec[16..24].copy_from_slice(&sum.to_le_bytes());
    rec
}

/// The record at the front of `buf`: `Ok(None)` if it has not fully arrived
/// yet, an error if it is not a whole record of one writer.
fn decode(buf: &[u8], writers: u16) -> Result<Option<(u16, u32, usize)>, String> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    if buf[0..4] != MAGIC {
        return Err(format!("no magic at the start: {:02x?}", &buf[0..4]));
    }
    let (writer, len, seq) = (u16_at(4), u16_at(6) as usize, u32_at(8));
    if writer >= writers || len != record_len(writer, seq) {
        return Err(format!(
            "header says writer {writer}, seq {seq}, length {len}: not a record anyone sent"
        ));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let sum = u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
    if fnv1a(&buf[HEADER..len]) != sum {
        return Err(format!(
            "writer {writer}'s record {seq} ({len} bytes) fails its checksum: other bytes got in"
        ));
    }
    Ok(Some((writer, seq, len)))
}

fn small_writes(writers: u16, records: u32, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 2: {writers} writers, one reader; each write at most PIPE_BUF = {PIPE_BUF} bytes");
    pace.sleep(INTRO_SECS);
    let mut meeting = Meeting::open(writers, records, "small", pace)?;
    meeting.release(pace)?;

    let mut next_seq = vec![1u32; writers as usize];
    let (mut total, mut bytes, mut full) = (0u64, 0u64, 0u64);
    loop {
        match decode(&meeting.buf, writers) {
            Ok(Some((w, seq, len))) => {
                if seq != next_seq[w as usize] {
                    return Err(format!(
                        "writer {w}: record {seq} arrived where {} was due",
                        next_seq[w as usize]
                    )
                    .into());
                }
                next_seq[w as usize] += 1;
                total += 1;
                bytes += len as u64;
                full += u64::from(len == PIPE_BUF);
                meeting.buf.drain(..len);
            }
            Ok(None) => {
                if !meeting.fill()? {
                    break;
                }
            }
            Err(why) => {
                return Err(format!("record {} at byte {bytes} is torn: {why}", total + 1).into())
            }
        }
    }
    if !meeting.buf.is_empty() {
        return Err(format!("{} stray bytes after the last record", meeting.buf.len()).into());
    }
    if let Some(w) = next_seq.iter().position(|&s| s != records + 1) {
        return Err(format!(
            "writer {w}: {} records, expected {records}",
            next_seq[w] - 1
        )
        .into());
    }
    meeting.finish()?;
    say!(
        "received {total} records ({bytes} bytes) from {writers} writers: every one whole, each writer's in order"
    );
    say!("{full} of them exactly PIPE_BUF bytes: a write that size is still never cut");
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 3: writes larger than PIPE_BUF.

/// Every byte of writer `w`'s big records: `A` for writer 0, `B` for 1...
fn tag(writer: u16) -> u8 {
    b'A' + writer as u8
}

fn big_writes(writers: u16, records: u32, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 3: the same with writes of {BIG} bytes, above PIPE_BUF");
    pace.sleep(INTRO_SECS);
    let mut meeting = Meeting::open(writers, records, "big", pace)?;
    meeting.release(pace)?;

    // The stream is now runs of tags. A run that ends before its record is
    // complete was cut by another writer's bytes.
    let mut got = vec![0usize; writers as usize];
    let mut cut = HashSet::new();
    let mut current: Option<usize> = None;
    loop {
        for &b in &meeting.buf {
            let w = b.wrapping_sub(b'A') as usize;
            if w >= writers as usize {
                return Err(format!("byte {b:#04x} belongs to no writer").into());
            }
            if current != Some(w) {
                if let Some(c) = current {
                    if !got[c].is_multiple_of(BIG) {
                        cut.insert((c, got[c] / BIG));
                    }
                }
                current = Some(w);
            }
            got[w] += 1;
        }
        meeting.buf.clear();
        if !meeting.fill()? {
            break;
        }
    }
    let want = records as usize * BIG;
    if let Some(w) = got.iter().position(|&n| n != want) {
        return Err(format!("writer {w}: {} bytes arrived, expected {want}", got[w]).into());
    }
    meeting.finish()?;
    let all = writers as usize * records as usize;
    say!("received all {all} records of {BIG} bytes: no byte lost");
    say!(
        "{} of the {all} were cut by other writers' bytes{}",
        cut.len(),
        if cut.is_empty() {
            " (none this time: POSIX allows it above PIPE_BUF, it does not promise it)"
        } else {
            ": only writes of at most PIPE_BUF bytes are whole"
        }
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Parts 2 and 3: the meeting of one reader and many writers.

/// The reader's side of parts 2 and 3: the FIFO, its read end, the writer
/// programs and the bytes read but not yet taken.
struct Meeting {
    rx: OwnedFd,
    writers: Vec<Program>,
    buf: Vec<u8>,
}

impl Meeting {
    /// Make the FIFO, open its read end, start the writers and wait until
    /// each has opened it and said hello; then remove the FIFO.
    fn open(writers: u16, records: u32, size: &str, pace: Pace) -> Result<Meeting, Box<dyn Error>> {
        // No signal may end us while the FIFO exists (see part 1), and we
        // print nothing meanwhile.
        let held = Hold::new()?;
        let mut fifo = Fifo::create()?;
        let made = fifo.check_private()?;
        // Read end first, non-blocking: it needs no writer. O_CLOEXEC, or
        // every writer started below would inherit a read end too.
        let rx = open_fifo(&fifo.path, OFlag::O_RDONLY)
            .map_err(|e| format!("open(O_RDONLY | O_NONBLOCK): {e}"))?;
        let mut meeting = Meeting {
            rx,
            writers: Vec::new(),
            buf: Vec::new(),
        };
        for id in 0..writers {
            meeting.writers.push(start(
                &format!("writer {id}"),
                &fifo.path,
                &[
                    (ID_ENV, id.to_string()),
                    (COUNT_ENV, records.to_string()),
                    (SIZE_ENV, size.to_string()),
                ],
                true,
                pace,
            )?);
        }
        // Each writer's first record is a hello (sequence 0). Until the
        // writers are released they send nothing else.
        let mut hello = vec![false; writers as usize];
        while hello.contains(&false) {
            match decode(&meeting.buf, writers) {
                Ok(Some((w, 0, len))) if !hello[w as usize] => {
                    hello[w as usize] = true;
                    meeting.buf.drain(..len);
                }
                Ok(Some((w, seq, _))) => {
                    return Err(
                        format!("writer {w} sent record {seq} before it was released").into(),
                    )
                }
                Ok(None) => {
                    if !meeting.fill()? {
                        return Err("end of file before every writer said hello".into());
                    }
                }
                Err(why) => return Err(format!("a hello is torn: {why}").into()),
            }
        }
        fifo.remove()?;
        drop(held);
        say!("mkfifo made {made}");
        say!(
            "all {writers} writers opened it (each sent a hello record); removed it and its directory"
        );
        Ok(meeting)
    }

    /// Let the writers go: close their standard input, which each waits on.
    fn release(&mut self, pace: Pace) -> Result<(), Box<dyn Error>> {
        let pids: Vec<i32> = self.writers.iter().map(Program::pid).collect();
        pause(pace, &pids);
        for w in &mut self.writers {
            drop(w.child_mut().stdin.take());
        }
        say!("released the writers: they write through a FIFO that no longer has a name");
        Ok(())
    }

    /// Read more bytes into `buf`; false at end of file (no writer left).
    fn fill(&mut self) -> Result<bool, Box<dyn Error>> {
        let mut chunk = vec![0u8; 1 << 16];
        let writers = &mut self.writers;
        let n = read_some(
            self.rx.as_fd(),
            &mut chunk,
            SYSTEM_TIMEOUT,
            "read from the writers",
            &mut || {
                // A writer that failed will never send what we wait for.
                for w in writers.iter_mut() {
                    if let Some(status) = w.try_wait()? {
                        if !status.success() {
                            return Err(format!("{} failed: {status}", w.name()).into());
                        }
                    }
                }
                Ok(())
            },
        )?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// After end of file: every writer must exit 0.
    fn finish(mut self) -> Result<(), Box<dyn Error>> {
        for w in &mut self.writers {
            w.expect_success(SYSTEM_TIMEOUT)?;
        }
        Ok(())
    }
}

/// The writer program of parts 2 and 3.
fn writer() -> Result<(), Box<dyn Error>> {
    let path = env_var(FIFO_ENV)?;
    let id: u16 = env_var(ID_ENV)?.parse()?;
    let records: u32 = env_var(COUNT_ENV)?.parse()?;
    let big = env_var(SIZE_ENV)? == "big";
    common::out::set_role(&format!("writer {id}"));
    let limit = watchdog()?;
    // The lesson opened the read end first, so this succeeds at once; ENXIO
    // would mean the reader is gone.
    let tx = open_fifo(Path::new(&path), OFlag::O_WRONLY)
        .map_err(|e| format!("open({path}, O_WRONLY | O_NONBLOCK): {e}"))?;
    // Back to blocking writes: a write then waits while the pipe is full
    // (the watchdog stops us if the reader never drains it).
    fcntl(tx.as_fd(), FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(|e| format!("fcntl(F_SETFL): {e}"))?;
    write_record(tx.as_fd(), &encode(id, 0))?;

    // Wait to be released: the lesson closes our standard input.
    let stdin = io::stdin();
    if read_some(
        stdin.as_fd(),
        &mut [0u8; 16],
        limit,
        "be released",
        &mut || Ok(()),
    )? != 0
    {
        return Err("expected end of file on stdin".into());
    }

    if big {
        let record = vec![tag(id); BIG];
        for _ in 0..records {
            write_record(tx.as_fd(), &record)?;
        }
        say!("wrote {records} records of {BIG} bytes, one write() call each");
    } else {
        let mut bytes = 0;
        for seq in 1..=records {
            let record = encode(id, seq);
            write_record(tx.as_fd(), &record)?;
            bytes += record.len();
        }
        say!("wrote {records} records ({bytes} bytes), one write() call each");
    }
    Ok(())
}

/// One `write` call for the whole record. A blocking write to a pipe
/// returns only when every byte is in (or on a signal); a write of at most
/// PIPE_BUF bytes goes in at once, in one piece, or waits until it can.
fn write_record(fd: BorrowedFd<'_>, record: &[u8]) -> Result<(), Box<dyn Error>> {
    let mut done = 0;
    while done < record.len() {
        match write(fd, &record[done..]) {
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("write: {e}").into()),
        }
        if done < record.len() && record.len() <= PIPE_BUF {
            return Err(format!("write of {} bytes was cut after {done}", record.len()).into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The FIFO, in a directory of its own.

struct Fifo {
    dir: Option<PrivateDir>,
    path: PathBuf,
}

impl Fifo {
    /// `mkdir <tmp>/named_pipe-<pid>-<random>` with mode 0700 (fails if the
    /// name exists), then `mkfifo <dir>/fifo` with mode 0600. Nobody else
    /// can enter the directory, so nobody can plant a symlink in it.
    fn create() -> Result<Fifo, Box<dyn Error>> {
        let dir = PrivateDir::new("named_pipe")?;
        let path = dir.path().join("fifo");
        mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(|e| format!("mkfifo {}: {e}", path.display()))?;
        Ok(Fifo {
            dir: Some(dir),
            path,
        })
    }

    /// Check on the file system that the FIFO is a FIFO that only we can open.
    fn check_private(&self) -> Result<String, Box<dyn Error>> {
        let meta = fs::symlink_metadata(&self.path)
            .map_err(|e| format!("stat {}: {e}", self.path.display()))?;
        let dir = self.path.parent().ok_or("the FIFO has no directory")?;
        let dir_meta =
            fs::symlink_metadata(dir).map_err(|e| format!("stat {}: {e}", dir.display()))?;
        let (mode, dir_mode) = (
            meta.permissions().mode() & 0o777,
            dir_meta.permissions().mode() & 0o777,
        );
        if !meta.file_type().is_fifo() || mode & 0o077 != 0 || dir_mode != 0o700 {
            return Err(format!(
                "{} is not a private FIFO: fifo {}, mode {mode:o}, directory mode {dir_mode:o}",
                self.path.display(),
                meta.file_type().is_fifo()
            )
            .into());
        }
        Ok(format!(
            "{} (type p, mode {mode:o}) in a new directory of mode 700",
            self.path.display()
        ))
    }

    /// Unlink the FIFO and remove its directory. Processes that have it
    /// open keep it; nobody can open it any more.
    fn remove(&mut self) -> Result<(), Box<dyn Error>> {
        fs::remove_file(&self.path).map_err(|e| format!("unlink {}: {e}", self.path.display()))?;
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            drop(dir); // rmdir
            if path.exists() {
                return Err(format!("{} still exists", path.display()).into());
            }
        }
        Ok(())
    }
}

/// `open(path, how | O_NONBLOCK | O_CLOEXEC)`: never waits.
fn open_fifo(path: &Path, how: OFlag) -> Result<OwnedFd, Errno> {
    open(
        path,
        how | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

// ---------------------------------------------------------------------------
// The programs the lesson starts.

/// Start this binary as `name` (a `common::program::Program`), with
/// `LESSON_CHILD=<first word of name>`, the FIFO's path and its time limit
/// in its environment. With `gate`, its standard input is a pipe from us.
///
/// `Program::start` asks, between fork and exec, for SIGKILL when the lesson
/// dies (`PR_SET_PDEATHSIG`, which survives the exec), so even a SIGKILLed
/// lesson takes its programs with it. It also clears the signal mask, which
/// survives fork and exec too: the lesson starts these programs while it
/// holds SIGINT, SIGTERM and SIGHUP back, and must not pass that on.
fn start(
    name: &str,
    fifo: &Path,
    env: &[(&str, String)],
    gate: bool,
    pace: Pace,
) -> Result<Program, Box<dyn Error>> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let role = name.split(' ').next().unwrap_or(name);
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, role)
        .env(FIFO_ENV, fifo)
        .env(LIMIT_ENV, child_limit(pace).as_secs().to_string())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if gate { Stdio::piped() } else { Stdio::null() });
    Ok(Program::start(name, &mut cmd)?)
}

/// Wait until `/proc` shows the program asleep inside its `open` of the
/// FIFO; returns what `/proc` said.
fn blocked_in_open(program: &mut Program) -> Result<String, Box<dyn Error>> {
    let pid = program.pid();
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    loop {
        let stat = procfs::stat(pid)?;
        let Some(stat) = stat.filter(|s| s.state != 'Z') else {
            let status = program.try_wait()?;
            return Err(format!("{} ended before it blocked: {status:?}", program.name()).into());
        };
        if stat.state == 'S' {
            // wchan: the kernel function it sleeps in. syscall: the
            // number of the system call it is in (and its arguments).
            let wchan = procfs::wchan(pid)?;
            let syscall = fs::read_to_string(format!("/proc/{pid}/syscall"))
                .ok()
                .and_then(|s| s.split(' ').next().and_then(|n| n.parse::<i64>().ok()));
            let in_fifo_open = matches!(
                wchan.as_deref(),
                Some("wait_for_partner" | "fifo_open" | "pipe_wait")
            );
            let in_openat = syscall == Some(libc::SYS_openat);
            // wchan reads "0" where the kernel hides it; then the
            // system call number must do.
            if in_fifo_open || (in_openat && wchan.is_none()) {
                let call = match syscall {
                    Some(n) if n == libc::SYS_openat => format!("{n} (openat)"),
                    Some(n) => n.to_string(),
                    None => "unreadable".to_string(),
                };
                return Ok(format!(
                    "/proc/{pid}/stat state S, /proc/{pid}/wchan {}, /proc/{pid}/syscall {call}",
                    wchan.as_deref().unwrap_or("0")
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} never blocked in open (last state {})",
                program.name(),
                stat.state
            )
            .into());
        }
        sleep(Duration::from_millis(1));
    }
}

/// How long a started program may live: a few times the lesson's own
/// limit, plus the pause for a human during which it waits for us.
fn child_limit(pace: Pace) -> Duration {
    3 * SYSTEM_TIMEOUT + pace.secs(PAUSE_SECS) + Duration::from_secs(1)
}

/// In a started program: end with SIGALRM (its default action kills) once
/// the time limit the lesson gave us is up. The blocking `open` of part 1
/// has no timeout of its own; this is it. Returns the limit, which also
/// bounds each wait.
fn watchdog() -> Result<Duration, Box<dyn Error>> {
    let secs: u32 = env_var(LIMIT_ENV)?.parse()?;
    alarm::set(secs);
    Ok(Duration::from_secs(secs.into()))
}

fn env_var(name: &str) -> Result<String, Box<dyn Error>> {
    std::env::var(name).map_err(|e| format!("{name}: {e}").into())
}

// ---------------------------------------------------------------------------
// Reading and writing without ever hanging.

/// One `read` after waiting in `poll` (in slices, calling `check` between
/// them) for at most `timeout`. 0 means end of file: no write end is open
/// anywhere.
fn read_some(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Duration,
    what: &str,
    check: &mut dyn FnMut() -> Result<(), Box<dyn Error>>,
) -> Result<usize, Box<dyn Error>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(SLICE).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => match read(fd, buf) {
                Ok(n) => return Ok(n),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(format!("read: {e}").into()),
            },
            Err(e) => return Err(format!("poll: {e}").into()),
        }
        check()?;
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting to {what}").into());
        }
    }
}

/// Write all of `buf` to a non-blocking descriptor, waiting in `poll` while
/// the pipe is full.
fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EAGAIN | Errno::EINTR) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(
                    &mut fds,
                    PollTimeout::try_from(SLICE).unwrap_or(PollTimeout::MAX),
                );
                if Instant::now() > deadline {
                    return Err("write: the pipe stayed full (is the reader stuck?)".into());
                }
            }
            Err(e) => return Err(format!("write: {e}").into()),
        }
    }
    Ok(())
}

/// A pause for a human, with the commands to look at the open, unnamed FIFO.
fn pause(pace: Pace, pids: &[i32]) {
    if pace.0 == 0.0 {
        return;
    }
    let fds: Vec<String> = pids.iter().map(|p| format!("/proc/{p}/fd")).collect();
    say!(
        "pausing {:.1} s; look: ls -l {}",
        pace.secs(PAUSE_SECS).as_secs_f64(),
        fds.join(" ")
    );
    pace.sleep(PAUSE_SECS);
}
