//! Demonstrate how a lock shared between processes keeps lines of output
//! whole when each line takes several writes.
//!
//! `--workers` processes (4) each write `--lines` lines (20) into one pipe
//! that the parent reads, three times. First one `write(2)` per word and no
//! lock: another worker writes mid-line, and lines tear into each other
//! (often, not always: the program reports it). Then the same under a
//! process-shared mutex held for the whole line: none tears. Last, no lock
//! but the whole line in one `write(2)`, as `common::say!` does: none tears,
//! since a pipe write of up to PIPE_BUF (4096) bytes is never interleaved.
//! The program checks both "none" rounds and every byte's arrival.
//!
//! What to observe: the torn lines quoted (a 1 s pause after each round at
//! pace 1); `strace -f -e trace=write`: 12 writes per line, then 1.
//!
//! ```text
//! cargo run -p process_lock --example process_lock_lines
//! cargo run -p process_lock --example process_lock_lines -- --workers 8 --lines 100
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::{exit_code, spawn, Child};
use common::{describe, say, warn, Mutex, Semaphore};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{pipe2, read, write};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

const TEXT: &str = "the quick brown fox jumps over the lazy dog";

fn line_of(i: u32) -> String {
    format!("worker {i} says: {TEXT}\n")
}

#[derive(Clone, Copy, PartialEq)]
enum How {
    WordsNoLock,
    WordsLocked,
    OneWrite,
}

fn run(args: &Args) -> Res {
    let (n, lines) = (args.workers, args.lines);
    say!("lock back end: {}", common::BACKEND);
    say!("{n} workers each write {lines} lines of 12 words into one pipe the parent reads");

    for (how, label) in [
        (How::WordsNoLock, "one write per word, without the lock"),
        (How::WordsLocked, "one write per word, with the lock"),
        (How::OneWrite, "one write per line, without the lock"),
    ] {
        let (whole, torn, examples) = round(n, lines, how)?;
        say!("{label}: {torn} of {} lines torn", whole + torn);
        if how != How::WordsNoLock && torn != 0 {
            return Err(format!("{label}: lines tore, for example {examples:?}").into());
        }
        for e in &examples {
            say!("    torn: {e:?}");
        }
        if how == How::WordsNoLock && torn == 0 {
            say!("    (no other worker wrote mid-line this time: run again, or add --workers)");
        }
        args.pace.sleep(1.0); // a moment to read the round's result
    }
    say!("a line written in one write(2) of at most PIPE_BUF bytes does not tear, as with say!; println! writes through stdout's 1024-byte buffer, so a longer line takes several writes and can tear");
    say!("all checks passed");
    Ok(())
}

/// Let `n` workers write `lines` lines each into one pipe, the way `how`
/// says. Returns how many lines came out whole, how many torn, and a few torn ones.
fn round(n: u32, lines: u32, how: How) -> Result<(u32, u32, Vec<String>), Box<dyn Error>> {
    // Held for a whole line; in a MAP_SHARED mapping, made by common (a robust
    // PTHREAD_PROCESS_SHARED pthread mutex, or a futex word).
    let line_lock = Mutex::shared(())?;
    let gate = Semaphore::shared(0)?;
    let (reader, writer) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    let mut team = Vec::new();
    for i in 0..n {
        let (line_lock, gate, writer) = (&line_lock, &gate, &writer);
        // common::fork::spawn flushes stdout, forks (refusing if threaded),
        // sets PR_SET_PDEATHSIG, runs this and leaves with _exit.
        team.push(spawn(&format!("worker {i}"), move || -> Res {
            if !gate.wait_timeout(SYSTEM_TIMEOUT)? {
                return Err("the start gate stayed shut".into());
            }
            // The line in pieces, one per word, or in one piece.
            let line = line_of(i);
            let pieces: Vec<&str> = match how {
                How::OneWrite => vec![&line],
                _ => line.split_inclusive(' ').collect(),
            };
            for _ in 0..lines {
                let locked = how == How::WordsLocked;
                let _held = locked
                    .then(|| line_lock.lock_within(SYSTEM_TIMEOUT))
                    .transpose()?;
                for piece in &pieces {
                    write_all(writer, piece.as_bytes())?;
                    // Give the CPU away (sched_yield), as a busy program is
                    // preempted: any other worker ready to run writes now.
                    std::thread::yield_now();
                }
            }
            Ok(())
        })?);
    }
    drop(writer); // or the reader never sees the end of the output
    for _ in 0..n {
        gate.post()?;
    }
    let output = read_to_end(reader)?;
    reap(&mut team)?;

    let sent: usize = (0..n).map(|i| lines as usize * line_of(i).len()).sum();
    if output.len() != sent {
        return Err(format!("the pipe carried {} bytes, expected {sent}", output.len()).into());
    }
    // A line that is exactly some worker's line, and not one too many of
    // them, is whole; any other line is torn.
    let mut due: HashMap<String, u32> = (0..n).map(|i| (line_of(i), lines)).collect();
    let (mut whole, mut torn, mut examples) = (0, 0, Vec::new());
    for line in String::from_utf8_lossy(&output).split_inclusive('\n') {
        match due.get_mut(line) {
            Some(left) if *left > 0 => {
                *left -= 1;
                whole += 1;
            }
            _ => {
                torn += 1;
                if examples.len() < 2 {
                    examples.push(line.trim_end().to_string());
                }
            }
        }
    }
    Ok((whole, torn, examples))
}

/// One write(2) of `bytes` (a blocking pipe takes up to PIPE_BUF bytes whole).
fn write_all(fd: &OwnedFd, bytes: &[u8]) -> Res {
    match write(fd, bytes) {
        Ok(k) if k == bytes.len() => Ok(()),
        Ok(k) => Err(format!("write: {k} of {} bytes", bytes.len()).into()),
        Err(e) => Err(format!("write: {e}").into()),
    }
}

/// Read until every write end is closed, waiting at most [`SYSTEM_TIMEOUT`].
fn read_to_end(reader: OwnedFd) -> Result<Vec<u8>, Box<dyn Error>> {
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    let (mut output, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("read: the output did not end within {SYSTEM_TIMEOUT:?}").into());
        }
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll: {e}").into()),
        }
        match read(&reader, &mut chunk) {
            Ok(0) => return Ok(output),
            Ok(k) => output.extend_from_slice(&chunk[..k]),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("read: {e}").into()),
        }
    }
}

/// Reap every worker within [`SYSTEM_TIMEOUT`] in all; each must exit 0.
fn reap(team: &mut [Child]) -> Res {
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    for child in team.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        match child.wait_timeout(left)? {
            Some(s) if exit_code(s) == Some(0) => {}
            Some(s) => return Err(format!("worker {}: {}", child.raw(), describe(s)).into()),
            None => return Err(format!("worker {} still runs", child.raw()).into()),
        }
    }
    Ok(())
}

type Res = Result<(), Box<dyn Error>>;

/// Demonstrate how a process-shared lock keeps lines written in pieces whole.
#[derive(Parser)]
struct Args {
    /// Worker processes (2-16)
    #[arg(long, value_name = "N", default_value_t = 4, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(2..=16))]
    workers: u32,
    /// Lines each worker writes, in each round (1-1000)
    #[arg(long, value_name = "N", default_value_t = 20, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    lines: u32,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long a wait may take before the lesson calls it stuck (not paced).
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
