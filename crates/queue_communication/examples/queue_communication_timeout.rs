//! Demonstrate how a timed receive on an empty POSIX message queue, and a
//! timed send on a full one, give up with ETIMEDOUT instead of hanging; and
//! that an unlinked queue lives on while a descriptor is open.
//!
//! The program creates a queue of one message (`O_CREAT|O_EXCL`, mode 0600),
//! unlinks it, checks that its name no longer opens (ENOENT), then waits
//! `--wait` seconds for a message nobody sends, fills the queue and waits as
//! long for room nobody makes. Each wait must end with ETIMEDOUT, and only
//! once the time has really passed (measured on CLOCK_MONOTONIC). It also
//! prints this machine's `/proc/sys/fs/mqueue/msg_max`, the queue length limit.
//!
//! ```text
//! cargo run -p queue_communication --example queue_communication_timeout
//! cargo run -p queue_communication --example queue_communication_timeout -- --wait 2
//! ```

use std::error::Error;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{names, say, warn};
use nix::errno::Errno;
use nix::mqueue::{mq_open, mq_timedreceive, mq_unlink, MQ_OFlag, MqAttr, MqdT};
use nix::sys::{stat::Mode, time::TimeSpec};
use nix::time::{clock_gettime, ClockId};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let msg_max = std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max")?;
    say!(
        "msg_max here: {} (the longest queue without CAP_SYS_RESOURCE)",
        msg_max.trim()
    );
    let name = names::unique("queue_communication_timeout")?;
    let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR;
    let private = Mode::S_IRUSR | Mode::S_IWUSR;
    let attr = MqAttr::new(0, 1, 4, 0);
    // SIGINT and SIGTERM wait (blocked) while the name exists: a Ctrl-C
    // cannot end us between the two calls and leave it in /dev/mqueue.
    let held = common::signals::Hold::new()?;
    let mq = mq_open(name.as_str(), flags, private, Some(&attr)).map_err(sys("mq_open"))?;
    mq_unlink(name.as_str()).map_err(sys("mq_unlink"))?;
    drop(held);
    match mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None) {
        Err(Errno::ENOENT) => {
            say!("the name is gone (mq_open: ENOENT); our descriptor keeps the queue")
        }
        other => return Err(format!("mq_open after mq_unlink: {other:?}").into()),
    }
    let wait = Duration::from_secs_f64(args.wait);
    let start = Instant::now();
    let mut buf = [0u8; 4];
    let got = timed(Instant::now() + wait, |at| {
        mq_timedreceive(&mq, &mut buf, &mut 0, at)
    });
    check(
        "mq_timedreceive on the empty queue",
        got.map(drop),
        start,
        wait,
    )?;
    timed(Instant::now(), |at| send(&mq, 7, at)).map_err(sys("mq_timedsend"))?;
    say!("sent one message: the queue of one is full");
    let start = Instant::now();
    let sent = timed(Instant::now() + wait, |at| send(&mq, 8, at));
    check(
        "mq_timedsend on the full queue",
        sent.map(drop),
        start,
        wait,
    )?;
    say!("both waits ended at their deadline with ETIMEDOUT: all checks passed");
    Ok(())
}

/// The wait must have failed with ETIMEDOUT, and only after `wait`.
fn check(what: &str, r: nix::Result<()>, start: Instant, wait: Duration) -> Result<(), String> {
    let took = start.elapsed();
    match r {
        Err(Errno::ETIMEDOUT) if took >= wait => {
            say!("{what}: ETIMEDOUT after {:.2} s", took.as_secs_f64());
            Ok(())
        }
        other => Err(format!(
            "{what}: {other:?} after {took:?}, expected ETIMEDOUT after {wait:?}"
        )),
    }
}

/// `mq_timedsend` (nix 0.32 does not wrap it) of one 4-byte message.
fn send(mq: &MqdT, value: u32, at: &TimeSpec) -> nix::Result<i32> {
    let bytes = value.to_ne_bytes();
    // SAFETY: `bytes` holds 4 bytes; the descriptor is open; `at` is valid.
    Errno::result(unsafe {
        libc::mq_timedsend(mq.as_raw_fd(), bytes.as_ptr().cast(), 4, 0, at.as_ref())
    })
}

/// Call `call` until it succeeds or `end` has passed (then ETIMEDOUT). The
/// mq timed calls take a CLOCK_REALTIME deadline, which a step of the wall
/// clock moves; so each wait is a slice of at most 100 ms, until `end`,
/// measured with `Instant` (CLOCK_MONOTONIC): a clock step costs one slice.
fn timed<T>(end: Instant, mut call: impl FnMut(&TimeSpec) -> nix::Result<T>) -> nix::Result<T> {
    loop {
        let left = end
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match call(&(clock_gettime(ClockId::CLOCK_REALTIME)? + TimeSpec::from_duration(left))) {
            Err(Errno::ETIMEDOUT | Errno::EINTR) if !left.is_zero() => continue,
            done => return done,
        }
    }
}

fn sys(call: &str) -> impl Fn(Errno) -> String + '_ {
    move |e| format!("{call}: {e}")
}

/// Demonstrate how timed queue calls give up with ETIMEDOUT.
#[derive(Parser)]
struct Args {
    /// Seconds each wait lasts; a real timeout, not scaled by the pace (0.1-10)
    #[arg(long, value_name = "X", default_value_t = 0.5, allow_negative_numbers = true,
          value_parser = common::args::number(0.1, 10.0))]
    wait: f64,
    #[command(flatten)]
    pace: common::Pace,
}
