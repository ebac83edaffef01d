//! Demonstrate how producer and consumer processes pass messages through a
//! bounded POSIX message queue: a full queue makes the sender wait
//! (backpressure), and one sentinel per consumer stops the consumers.
//!
//! Observe (`--pace 5`): `ps -o pid,stat,wchan:24,comm --ppid <parent pid>`
//! shows producers asleep in `wq_sleep` (Linux 6.18) while the queue is full,
//! and `ls /dev/mqueue` shows nothing: the name is unlinked before the forks.
//!
//! ```text
//! cargo run -p queue_communication -- --capacity 1 --producers 3
//! cargo run -p queue_communication --example queue_communication_priorities
//! cargo run -p queue_communication --example queue_communication_timeout
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::{exit_code, spawn, Child};
use common::{describe, names, say, shm::SharedSlice, warn, Semaphore};
use nix::errno::Errno;
use nix::mqueue::{mq_open, mq_timedreceive, mq_unlink, MQ_OFlag, MqAttr};
use nix::sys::{stat::fstat, stat::Mode, time::TimeSpec};
use nix::time::{clock_gettime, ClockId};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Res {
    // As in the seed, a message is one 4-byte number: 1000 * producer + seq.
    let attr = MqAttr::new(0, a.capacity.into(), 4, 0);
    let name = names::unique("queue_communication")?;
    let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR;
    let private = Mode::S_IRUSR | Mode::S_IWUSR;
    // SIGINT and SIGTERM wait (blocked) while the name exists: a Ctrl-C
    // cannot end us between the two calls and leave it in /dev/mqueue.
    let held = common::signals::Hold::new()?;
    let mq = mq_open(name.as_str(), flags, private, Some(&attr)).map_err(sys("mq_open"))?;
    // Gone from /dev/mqueue at once: from here on not even SIGKILL leaves it.
    mq_unlink(name.as_str()).map_err(sys("mq_unlink"))?;
    drop(held);
    let mode = fstat(&mq).map_err(sys("fstat"))?.st_mode & 0o7777;
    if mode != 0o600 {
        return Err(format!("{name} was created with mode {mode:04o}, not 0600").into());
    }
    let me = std::process::id();
    say!("created {name}, mode {mode:04o} (says fstat), unlinked; see: ps -o pid,stat,wchan:24,comm --ppid {me}");
    // Shared memory: a semaphore posted when a send finds the queue full, and
    // a tally of every item received. Any wait longer than `limit` is an error.
    let (full, total) = (Semaphore::shared(0)?, a.producers * ITEMS);
    let tally = SharedSlice::new(total as usize, |_| AtomicU32::new(0))?;
    let limit = LIMIT + a.pace.secs(f64::from(total) * CONSUME_SECS);
    let fd = mq.as_raw_fd();
    let send = |value: u32, at: &TimeSpec| {
        // SAFETY: the 4 bytes outlive the call; `fd` is open, `at` is valid.
        Errno::result(unsafe {
            libc::mq_timedsend(fd, value.to_ne_bytes().as_ptr().cast(), 4, 0, at.as_ref())
        })
    };

    let produce = |me: u32| -> Res {
        for seq in 1..=ITEMS {
            let send_by = |end| timed(end, |at| send(1000 * me + seq, at));
            // First with a deadline of now: a send that does not wait.
            if let Err(Errno::ETIMEDOUT) = send_by(Instant::now()) {
                say!("queue full, waiting to send p{me}#{seq}");
                full.post()?;
                send_by(Instant::now() + limit).map_err(sys("mq_timedsend"))?;
            }
            say!("sent p{me}#{seq}");
        }
        Ok(())
    };
    let consume = || -> Res {
        let (mut last, mut n) = (vec![0; a.producers as usize + 1], 0);
        loop {
            let mut buf = [0u8; 4]; // mq_msgsize bytes, or the receive fails: EMSGSIZE
            let recv = |at: &TimeSpec| mq_timedreceive(&mq, &mut buf, &mut 0, at);
            timed(Instant::now() + limit, recv).map_err(sys("mq_timedreceive"))?;
            let v = u32::from_ne_bytes(buf);
            let (p, seq) = (v / 1000, v % 1000);
            if p == 0 {
                say!("got a sentinel after {n} item(s): stopping");
                return Ok(());
            } else if p > a.producers || seq == 0 || seq > ITEMS || seq <= last[p as usize] {
                return Err(format!("got p{p}#{seq}: out of order, or nobody sent it").into());
            }
            (last[p as usize], n) = (seq, n + 1);
            tally[((p - 1) * ITEMS + seq - 1) as usize].fetch_add(1, SeqCst);
            say!("got p{p}#{seq}");
            a.pace.sleep(CONSUME_SECS);
        }
    };

    // common's `spawn` flushes stdout, forks, sets PR_SET_PDEATHSIG, ends the
    // child with `_exit`; a `Child` dropped unreaped is killed and reaped.
    let mut kids = Vec::new();
    for p in 1..=a.producers {
        kids.push(spawn(&format!("producer {p}"), || produce(p))?);
    }
    // The consumers start once a send has found the queue full: for certain.
    if total > a.capacity && !full.wait_timeout(limit)? {
        return Err("more items than room, yet no send found the queue full".into());
    } else if total > a.capacity {
        say!("backpressure: a send found the queue full and waits; starting the consumers");
    }
    for c in 1..=a.consumers {
        kids.push(spawn(&format!("consumer {c}"), consume)?);
    }
    let (producers, consumers) = kids.split_at_mut(a.producers as usize);
    reap(producers, limit)?;
    // Sentinels last, behind every item, one per consumer: each stops at one.
    for _ in 0..a.consumers {
        timed(Instant::now() + limit, |at| send(0, at)).map_err(sys("mq_timedsend"))?;
    }
    say!("all producers done: sent one sentinel per consumer");
    reap(consumers, limit)?;
    if let Some(k) = tally.iter().position(|n| n.load(SeqCst) != 1) {
        let (p, s) = (k as u32 / ITEMS + 1, k as u32 % ITEMS + 1);
        return Err(format!("p{p}#{s} was received {} times", tally[k].load(SeqCst)).into());
    }
    say!("exactly once: {total} items produced, {total} received, 0 lost, 0 twice");
    say!("in order: every consumer got each producer's items in the order they were sent");
    say!("all checks passed");
    Ok(())
}

/// Call `call` until it succeeds or `end` has passed (then ETIMEDOUT). The
/// mq timed calls take a CLOCK_REALTIME deadline, which a step of the wall
/// clock moves; so each wait is a slice of at most 100 ms, until `end`,
/// measured with `Instant` (CLOCK_MONOTONIC): a clock step costs one slice.
fn timed<T>(end: Instant, mut call: impl FnMut(&TimeSpec) -> nix::Result<T>) -> nix::Result<T> {
    loop {
        let left = end.saturating_duration_since(Instant::now()).min(SLICE);
        match call(&(clock_gettime(ClockId::CLOCK_REALTIME)? + TimeSpec::from_duration(left))) {
            Err(Errno::ETIMEDOUT | Errno::EINTR) if !left.is_zero() => continue,
            done => return done,
        }
    }
}

/// Wait for each child (at most `limit` each); each must exit with 0.
fn reap(kids: &mut [Child], limit: Duration) -> Res {
    for k in kids {
        let s = k.wait_timeout(limit)?.ok_or("a child is still running")?;
        if exit_code(s) != Some(0) {
            return Err(format!("child {} {}", k.pid(), describe(s)).into());
        }
    }
    Ok(())
}

/// An error that names the call: "mq_open: EEXIST: File exists".
fn sys(call: &str) -> impl Fn(Errno) -> String + '_ {
    move |e| format!("{call}: {e}")
}

type Res = Result<(), Box<dyn Error>>;

/// Demonstrate how processes pass messages through a bounded POSIX message queue.
#[derive(Parser)]
struct Args {
    /// Producer processes, each sending 5 items (1-8)
    #[arg(long, value_name = "N", default_value_t = 2, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=8))]
    producers: u32,
    /// Consumer processes (1-8)
    #[arg(long, value_name = "N", default_value_t = 2, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=8))]
    consumers: u32,
    /// Messages the queue holds; /proc/sys/fs/mqueue/msg_max is 10 by default (1-10)
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=10))]
    capacity: u32,
    #[command(flatten)]
    pace: common::Pace,
}

/// Items per producer, as in the seed; a consumer's pause per item, for a human
/// watching; the time the system gets (not paced) for any wait; the slice.
const ITEMS: u32 = 5;
const CONSUME_SECS: f64 = 1.0;
const LIMIT: Duration = Duration::from_secs(10);
const SLICE: Duration = Duration::from_millis(100);
