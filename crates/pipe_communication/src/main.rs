//! Demonstrate how a parent and a child talk through a pipe, in the shape of
//! the C++ original: `pipe()`, `fork()`, each side closes the end it does not
//! use, the parent writes messages, the child reads until end of file.
//!
//! The child counts messages and bytes and takes a checksum; it sends its
//! totals back on a second pipe, and the parent exits 1 unless they equal its
//! own. Before writing, the parent checks in `/proc` that each process holds
//! one end of the same `pipe:[inode]`, and pauses (10 s at pace 1) for you to
//! look: `ls -l /proc/<parent>/fd /proc/<child>/fd` (or scripts/pipe_communication.sh).
//!
//! ```text
//! cargo run -p pipe_communication
//! cargo run -p pipe_communication --example pipe_communication_missing_eof
//! cargo run -p pipe_communication --example pipe_communication_framing
//! cargo run -p pipe_communication --example pipe_communication_two_way
//! cargo run -p pipe_communication --example pipe_communication_epipe
//! cargo run -p pipe_communication --example pipe_communication_cloexec
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::{error::Error, fs::File, time::Duration, time::Instant};

use clap::Parser;
use common::{describe, say, warn};
use nix::sys::{prctl::set_pdeathsig, signal::Signal, wait::waitpid, wait::WaitStatus};
use nix::unistd::{alarm, fork, getpid, getppid, pipe, ForkResult};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Outcome {
    // Reads and writes below block, with no timeout of their own: if this
    // process still runs 60 s after the pause, SIGALRM ends it ("Alarm clock").
    let net = 60 + args.pace.secs(args.window).as_secs() as u32;
    alarm::set(net);
    let (data_rx, data_tx) = pipe()?; // the C++'s pipe_fd[0] and pipe_fd[1]
    let (report_rx, report_tx) = pipe()?; // the consumer's totals come back
    let (rfd, me) = (data_rx.as_raw_fd(), getpid());
    // Anything still buffered would be printed twice: once by each process.
    io::stdout().flush()?;
    // SAFETY: a single thread here; the child cannot panic and ends in `_exit`.
    match unsafe { fork() }? {
        ForkResult::Child => {
            common::out::set_role("consumer");
            // Die with the parent, and close the race where it died first.
            if set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != me {
                // SAFETY: `_exit` ends the process at once.
                unsafe { libc::_exit(1) }
            }
            // It holds copies of all four ends. While any copy of the data
            // write end is open, even its own, `read` never returns 0 (EOF).
            drop((data_tx, report_rx));
            alarm::set(net); // an alarm is not inherited by fork
            let result = consume(File::from(data_rx), File::from(report_tx));
            if let Err(e) = &result {
                warn!("error: {e}");
            }
            // SAFETY: `_exit` ends the process at once; nothing runs after it.
            unsafe { libc::_exit(i32::from(result.is_err())) }
        }
        ForkResult::Parent { child } => {
            // The parent closes its copies of the ends it does not use.
            drop((data_rx, report_tx));
            // On an error, `produce` has closed our ends: the consumer ends.
            let result = produce(args, child.as_raw(), rfd, data_tx, report_rx);
            let status = waitpid(child, None)?;
            result?;
            if status != WaitStatus::Exited(child, 0) {
                return Err(format!("consumer {child} {}", describe(status)).into());
            }
        }
    }
    say!("all checks passed");
    Ok(())
}

/// The child: read until end of file, then report what arrived.
fn consume(mut data: File, mut report: File) -> Outcome {
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    // Blocks until there is data; 0 (end of file) once no write end is open.
    while let n @ 1.. = data.read(&mut buf)? {
        got.extend_from_slice(&buf[..n]);
    }
    say!("end of file; consumer received: {}", tally(&got));
    Ok(report.write_all(tally(&got).as_bytes())?)
}

/// The parent: see the pipe in /proc, pause, write, close, compare.
fn produce(args: &Args, child: i32, rfd: i32, data: OwnedFd, report: OwnedFd) -> Outcome {
    let (me, wfd) = (std::process::id() as i32, data.as_raw_fd());
    let pipe = format!("pipe:[{}]", nix::sys::stat::fstat(&data)?.st_ino);
    // What `ls -l /proc/<pid>/fd/<fd>` shows: the link is `pipe:[inode]`.
    let holds = |pid: i32, fd: i32| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .is_ok_and(|l| l.as_os_str() == pipe.as_str())
    };
    // The consumer closes its write end on its own schedule: wait for it.
    let t = Instant::now();
    while holds(child, wfd) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    if holds(me, rfd) || !holds(me, wfd) || holds(child, wfd) || !holds(child, rfd) {
        return Err(format!("expected {pipe} as fd {wfd} in {me}, as fd {rfd} in {child}").into());
    }
    say!("{pipe}: the parent holds only the write end (fd {wfd}), consumer {child} only the read end (fd {rfd})");
    let secs = args.pace.secs(args.window).as_secs_f64();
    say!("pausing {secs:.1} s: see it yourself with ls -l /proc/{me}/fd /proc/{child}/fd");
    args.pace.sleep(args.window);
    let (mut data, mut sent) = (File::from(data), Vec::new());
    for i in 1..=args.messages {
        let msg = format!("message {i} of {}\n", args.messages);
        // A write into a full pipe blocks until the reader makes room.
        data.write_all(msg.as_bytes())?;
        sent.extend_from_slice(msg.as_bytes());
    }
    drop(data); // closing the last write end is how the consumer learns "no more"
    let sent = tally(&sent);
    say!("closed the write end; producer sent: {sent}");
    let mut got = String::new();
    File::from(report).read_to_string(&mut got)?;
    if got != sent {
        return Err(format!("the consumer received {got}, the producer sent {sent}").into());
    }
    say!("the consumer's count and checksum match the producer's");
    Ok(())
}

/// Messages (lines), bytes and a checksum (64-bit FNV-1a) of a stream.
fn tally(s: &[u8]) -> String {
    let lines = s.iter().filter(|&&b| b == b'\n').count();
    let sum = s.iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{lines} messages, {} bytes, checksum {sum:016x}", s.len())
}

/// Demonstrate how two processes talk through a pipe.
#[derive(Parser)]
struct Args {
    /// Messages the parent writes (1-100000)
    #[arg(long, value_name = "N", default_value_t = 100, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    messages: u32,
    /// Seconds the parent pauses with the pipe open, scaled by the pace (0-600)
    #[arg(long, value_name = "X", default_value_t = 10.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 600.0))]
    window: f64,
    #[command(flatten)]
    pace: common::Pace,
}

type Outcome = Result<(), Box<dyn Error>>;
