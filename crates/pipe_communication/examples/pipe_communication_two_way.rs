//! Demonstrate how two processes talk both ways: one pipe per direction,
//! requests from the parent (client) to a child (server), replies back.
//!
//! A pipe goes one way, so a two-way exchange takes two pipes, and each
//! process closes the two ends it does not use. The client sends
//! `--messages` framed requests of 0 to `--max-len` bytes of any value (above
//! 64 KiB a frame does not fit in the pipe and goes in pieces); the server
//! answers each with its bytes reversed, in lockstep (one request, then its
//! reply). When the client closes its request end, the server sees end of
//! file, sends its own totals and exits. Both sides count, sum up and
//! checksum what they sent and received; the client checks that the four
//! totals agree, and that every reply is its request reversed.
//!
//! What to observe while the client pauses (1 s at pace 1):
//! `cat /proc/<server pid>/wchan` names the kernel function the server
//! sleeps in (a kernel internal: `anon_pipe_read` on Linux 6.18, `pipe_read`
//! on older kernels).
//!
//! ```text
//! cargo run -p pipe_communication --example pipe_communication_two_way
//! cargo run -p pipe_communication --example pipe_communication_two_way -- --max-len 65536
//! ```

use std::error::Error;
use std::fs::File;
use std::io::{self, Read, Write};

use clap::Parser;
use common::{describe, say, warn};
use nix::fcntl::OFlag;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{alarm, fork, getpid, getppid, pipe2, ForkResult};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    // Reads and writes block: SIGALRM ends a process still running 60 s
    // after the pause.
    let net = 60 + args.pace.secs(1.0).as_secs() as u32;
    alarm::set(net);
    let (req_rx, req_tx) = pipe2(OFlag::O_CLOEXEC)?; // client -> server
    let (rep_rx, rep_tx) = pipe2(OFlag::O_CLOEXEC)?; // server -> client
    let me = getpid();
    io::stdout().flush()?;
    // SAFETY: a single thread here; the child cannot panic and ends in `_exit`.
    let server = match unsafe { fork() }? {
        ForkResult::Child => {
            common::out::set_role("server");
            if set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != me {
                // SAFETY: `_exit` ends the process at once.
                unsafe { libc::_exit(1) }
            }
            drop((req_tx, rep_rx)); // the two ends the server does not use
            alarm::set(net); // an alarm is not inherited by fork
            let result = serve(File::from(req_rx), File::from(rep_tx));
            if let Err(e) = &result {
                warn!("error: {e}");
            }
            // SAFETY: `_exit` ends the process at once.
            unsafe { libc::_exit(i32::from(result.is_err())) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((req_rx, rep_tx)); // the two ends the client does not use
    let secs = args.pace.secs(1.0).as_secs_f64();
    say!("server {server} started; pausing {secs:.1} s: cat /proc/{server}/wchan");
    args.pace.sleep(1.0);
    // On an error the client's ends are closed when it returns: the server
    // sees end of file (or EPIPE) and exits, and we reap it.
    let result = client(args, File::from(req_tx), File::from(rep_rx));
    let status = waitpid(server, None)?;
    result?;
    if status != WaitStatus::Exited(server, 0) {
        return Err(format!("server {server} {}", describe(status)).into());
    }
    say!("all checks passed");
    Ok(())
}

/// The server: answer each request with its bytes reversed, until end of file.
fn serve(mut requests: File, mut replies: File) -> io::Result<()> {
    let (mut received, mut sent) = (Tally::default(), Tally::default());
    while let Some(request) = recv(&mut requests)? {
        received.add(&request);
        let reply = reversed(&request);
        send(&mut replies, &reply)?;
        sent.add(&reply);
    }
    say!("server received requests: {received}");
    say!("server sent replies: {sent}");
    // Last, the server's own totals, for the client to compare.
    send(&mut replies, format!("{received}\n{sent}").as_bytes())
}

/// The client: requests in lockstep, then compare the four totals.
fn client(args: &Args, mut requests: File, mut replies: File) -> Result<(), Box<dyn Error>> {
    // Lockstep: one request, then its reply. Had both sides written large
    // messages without reading, both pipes could fill and both block.
    let (mut sent, mut received) = (Tally::default(), Tally::default());
    for i in 0..args.messages {
        let request = message(i + 1, args.max_len);
        send(&mut requests, &request)?;
        sent.add(&request);
        let reply = recv(&mut replies)?.ok_or("reply pipe: end of file before a reply")?;
        if reply != reversed(&request) {
            return Err(format!("reply {i} is not request {i} reversed").into());
        }
        received.add(&reply);
    }
    drop(requests); // end of file on the request pipe: "no more requests"
    say!("client sent requests: {sent}");
    say!("client received replies: {received}");
    let totals = recv(&mut replies)?.ok_or("reply pipe: end of file before the totals")?;
    if recv(&mut replies)?.is_some() {
        return Err("reply pipe: more data after the server's totals".into());
    }
    let theirs = String::from_utf8_lossy(&totals);
    if theirs != format!("{sent}\n{received}") {
        return Err(format!("client sent {sent}, received {received}; server: {theirs:?}").into());
    }
    say!("both directions check out: counts and checksums agree on both sides, every reply matches its request");
    Ok(())
}

/// One frame: the length as 4 bytes (big-endian), then the bytes.
fn send(tx: &mut File, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    tx.write_all(&[&len.to_be_bytes()[..], payload].concat())
}

/// One frame; `None` at end of file between frames.
fn recv(rx: &mut File) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    if rx.read(&mut header[..1])? == 0 {
        return Ok(None);
    }
    rx.read_exact(&mut header[1..])?; // as many reads as it takes
    let len = u32::from_be_bytes(header) as usize;
    if len > 1 << 20 {
        return Err(io::Error::other(format!(
            "a header says {len} bytes: not a frame"
        )));
    }
    let mut payload = vec![0u8; len];
    rx.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// Messages, bytes, and a checksum (64-bit FNV-1a) over each message's
/// length and bytes, in order.
struct Tally(u64, u64, u64);

impl Default for Tally {
    fn default() -> Tally {
        Tally(0, 0, 0xcbf2_9ce4_8422_2325)
    }
}

impl Tally {
    fn add(&mut self, msg: &[u8]) {
        (self.0, self.1) = (self.0 + 1, self.1 + msg.len() as u64);
        for &b in (msg.len() as u32).to_be_bytes().iter().chain(msg) {
            self.2 = (self.2 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Tally(count, bytes, sum) = self;
        write!(f, "{count} messages, {bytes} bytes, checksum {sum:016x}")
    }
}

/// Message `i`: 0 to `max_len` bytes of any value (zero bytes and newlines
/// included: a pipe does not care), different for every `i`.
fn message(i: u32, max_len: u32) -> Vec<u8> {
    let len = u64::from(i) * 2_654_435_761 % (u64::from(max_len) + 1);
    let mut x = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1; // xorshift64
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    };
    (0..len).map(|_| next()).collect()
}

fn reversed(msg: &[u8]) -> Vec<u8> {
    msg.iter().rev().copied().collect()
}

/// Demonstrate how two pipes carry a two-way exchange.
#[derive(Parser)]
struct Args {
    /// Requests the client sends (1-100000)
    #[arg(long, value_name = "N", default_value_t = 100, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    messages: u32,
    /// Largest request, in bytes (0-65536)
    #[arg(long, value_name = "N", default_value_t = 2000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=65_536))]
    max_len: u32,
    #[command(flatten)]
    pace: common::Pace,
}
