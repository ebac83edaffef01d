//! Demonstrate how two processes change one integer in shared memory under
//! a process-shared lock, and lose no update.
//!
//! The parent maps one `i64` (inside a process-shared mutex) with
//! `MAP_SHARED` and forks an incrementer and a decrementer. Each changes the
//! value `--iterations` times, taking the lock every time. After both have
//! ended, the parent checks that the value is exactly the start value.
//!
//! What to observe while the lesson pauses (3 s at pace 1) before it lets
//! the workers go: `grep rw-s /proc/<pid>/maps` of the parent and of each
//! child shows two `/dev/zero (deleted)` mappings (the value, the gate),
//! each with the same inode in all three: one object, not three copies
//! (`scripts/shared_memory.sh` finds them for you).
//!
//! ```text
//! cargo run -p shared_value
//! cargo run -p shared_value -- --iterations 1000000 --start 7 --pace 0
//! cargo run -p shared_value --example shared_value_atomics  # no lock: fetch_add
//! cargo run -p shared_value --example shared_value_named    # exec'd: meet by name
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::time::Duration;

use clap::Parser;
use common::fork::{exit_code, spawn, Child};
use common::{describe, say, warn, Mutex, Semaphore};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res {
    let (n, start) = (args.iterations, args.start);
    say!("process-shared lock back end: {}", common::BACKEND);
    say!("an incrementer and a decrementer change one i64 under a process-shared lock");
    // The i64 lives inside the mutex, in one anonymous MAP_SHARED mapping
    // made before the forks: parent and children see the very same page,
    // not copies. common makes the calls: mmap(MAP_SHARED | MAP_ANONYMOUS),
    // then pthread_mutex_init, process-shared and robust (POSIX back end),
    // or an unlocked futex word (futex back end).
    let value = Mutex::shared(start)?;
    // The workers wait at this gate until the parent opens it, after a pause
    // for you to look at them; then they race each other.
    let gate = Semaphore::shared(0)?;
    let patience = SYSTEM_TIMEOUT + args.pace.secs(PAUSE_SECS);

    let worker = |step: i64| {
        let (value, gate) = (&value, &gate);
        move || -> Res {
            if !gate.wait_timeout(patience)? {
                return Err(format!("the gate stayed shut for {patience:?}").into());
            }
            for _ in 0..n {
                // Load, add, store: three steps, made one by the lock.
                let mut v = value.lock_within(LOCK_TIMEOUT)?;
                *v += step;
            } // the guard unlocks here, every iteration
            say!("done: {n} changes of {step:+}");
            Ok(())
        }
    };
    // common::fork::spawn flushes stdout, forks (refusing if threaded), sets
    // PR_SET_PDEATHSIG, runs the closure and leaves with _exit (1 on an
    // error), so a child never runs the parent's destructors. A `Child`
    // dropped on an error path is killed and reaped.
    let mut inc = spawn("incrementer", worker(1))?;
    let mut dec = spawn("decrementer", worker(-1))?;

    pause_to_watch(args.pace, &[inc.raw(), dec.raw()]);
    gate.post()?;
    gate.post()?;
    reap(&mut inc)?;
    reap(&mut dec)?;

    // Both have ended and been reaped: every change they made is in the page.
    let last = *value.lock_within(LOCK_TIMEOUT)?;
    if last != start {
        return Err(format!("under the lock: final value {last}, expected {start}").into());
    }
    say!("under the lock: final value {last} == start value {start} after {n} increments and {n} decrements");
    say!("all checks passed");
    Ok(())
}

/// Reap a forked worker, which must exit 0.
fn reap(child: &mut Child) -> Res {
    let pid = child.raw();
    match child.wait_timeout(CHILD_TIMEOUT)? {
        Some(s) if exit_code(s) == Some(0) => Ok(()),
        Some(s) => Err(format!("worker {pid}: {}", describe(s)).into()),
        None => Err(format!("worker {pid} still running after {CHILD_TIMEOUT:?}").into()),
    }
}

/// Give a human time to look at the mappings (nothing at pace 0).
fn pause_to_watch(pace: common::Pace, children: &[i32]) {
    let mut files = vec![format!("/proc/{}/maps", std::process::id())];
    files.extend(children.iter().map(|p| format!("/proc/{p}/maps")));
    let secs = pace.secs(PAUSE_SECS).as_secs_f64();
    say!("pausing {secs:.1} s; look: grep rw-s {}", files.join(" "));
    pace.sleep(PAUSE_SECS);
}

type Res = Result<(), Box<dyn Error>>;

/// Demonstrate how processes change one shared integer under a process-shared lock.
#[derive(Parser)]
struct Args {
    /// Increments (or decrements) each worker makes (1-1000000)
    #[arg(long, value_name = "N", default_value_t = 100_000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    iterations: u64,
    /// The value to start from (0-1000000000)
    #[arg(long, value_name = "N", default_value_t = 1000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
    start: i64,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the lesson pauses, at pace 1, for you to look at the mappings.
const PAUSE_SECS: f64 = 3.0;

/// Safety limits for waits on another process: fixed floors, not scaled by
/// the pace, generous because the machine may be loaded.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
