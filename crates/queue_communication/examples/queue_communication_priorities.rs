//! Demonstrate how a POSIX message queue orders messages by priority: the
//! highest waiting priority comes out first, and within one priority, first
//! in, first out.
//!
//! Four messages sent with priorities 1, 9, 5, 5 come out as 9, 5, 5, 1; the
//! program checks that order and exits 1 if the queue disagrees. The queue is
//! created with `O_CREAT|O_EXCL`, mode 0600, and unlinked at once.
//!
//! What to observe: "received" lines in the order 9, 5, 5, 1.
//!
//! ```text
//! cargo run -p queue_communication --example queue_communication_priorities
//! ```

use std::error::Error;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{names, say, warn};
use nix::errno::Errno;
use nix::mqueue::{mq_open, mq_timedreceive, mq_unlink, MQ_OFlag, MqAttr};
use nix::sys::{stat::Mode, time::TimeSpec};
use nix::time::{clock_gettime, ClockId};

const SENT: [(&str, u32); 4] = [
    ("routine", 1),
    ("urgent", 9),
    ("normal", 5),
    ("normal, sent later", 5),
];

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let name = names::unique("queue_communication_priorities")?;
    let attr = MqAttr::new(0, SENT.len() as _, 4, 0);
    let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR;
    let private = Mode::S_IRUSR | Mode::S_IWUSR;
    // SIGINT and SIGTERM wait (blocked) while the name exists: a Ctrl-C
    // cannot end us between the two calls and leave it in /dev/mqueue.
    let held = common::signals::Hold::new()?;
    let mq = mq_open(name.as_str(), flags, private, Some(&attr)).map_err(sys("mq_open"))?;
    mq_unlink(name.as_str()).map_err(sys("mq_unlink"))?;
    drop(held);
    let fd = mq.as_raw_fd();
    for (i, (label, priority)) in SENT.iter().enumerate() {
        let bytes = (i as u32).to_ne_bytes();
        let at = deadline(Duration::ZERO)?;
        // SAFETY: `bytes` holds 4 bytes; `fd` is open; `at` is a valid timespec.
        let r = unsafe { libc::mq_timedsend(fd, bytes.as_ptr().cast(), 4, *priority, at.as_ref()) };
        Errno::result(r).map_err(sys("mq_timedsend"))?;
        say!("sent {label:?} with priority {priority}");
    }
    args.pace.sleep(1.0);
    let mut order = Vec::new();
    for _ in 0..SENT.len() {
        let (mut buf, mut priority) = ([0u8; 4], 0);
        let end = Instant::now() + Duration::from_secs(10);
        // mq_timedreceive takes a CLOCK_REALTIME deadline, which a step of
        // the wall clock moves: wait in slices of at most 100 ms until `end`,
        // measured with Instant (CLOCK_MONOTONIC).
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let at = deadline(left.min(Duration::from_millis(100)))?;
            match mq_timedreceive(&mq, &mut buf, &mut priority, &at) {
                Err(Errno::ETIMEDOUT | Errno::EINTR) if !left.is_zero() => continue,
                r => {
                    r.map_err(sys("mq_timedreceive"))?;
                    break;
                }
            };
        }
        let i = u32::from_ne_bytes(buf) as usize;
        let label = SENT.get(i).ok_or("a message nobody sent")?.0;
        say!("received {label:?} (priority {priority})");
        order.push(priority);
    }
    if order != [9, 5, 5, 1] {
        return Err(format!("came out as {order:?}, expected [9, 5, 5, 1]").into());
    }
    say!("highest priority first, and in the order sent within a priority: all checks passed");
    Ok(())
}

fn deadline(after: Duration) -> nix::Result<TimeSpec> {
    Ok(clock_gettime(ClockId::CLOCK_REALTIME)? + TimeSpec::from_duration(after))
}

fn sys(call: &str) -> impl Fn(Errno) -> String + '_ {
    move |e| format!("{call}: {e}")
}

/// Demonstrate how a POSIX message queue orders messages by priority.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}
