//! Demonstrate how an atomic read-modify-write keeps a shared integer exact
//! with no lock at all.
//!
//! The same race as the lesson: the parent maps one `AtomicI64` with
//! `MAP_SHARED` and forks an incrementer and a decrementer, which change it
//! `--iterations` times each, with `fetch_add(1)` and `fetch_sub(1)`. Each
//! call loads, adds and stores as one indivisible instruction, so no update
//! is lost, and the parent checks that the final value is exactly the start
//! value.
//!
//! What to observe: the same `grep rw-s /proc/<pid>/maps` as the lesson
//! during the pause (3 s at pace 1), and, with
//! `objdump -d --no-show-raw-insn target/debug/examples/shared_value_atomics | grep 'lock '`,
//! the locked instruction the compiler emitted on x86-64.
//!
//! ```text
//! cargo run -p shared_value --example shared_value_atomics
//! cargo run -p shared_value --example shared_value_atomics -- --iterations 1000000 --pace 0
//! ```

use std::error::Error;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use clap::Parser;
use common::fork::{exit_code, spawn, Child};
use common::{describe, say, warn, Semaphore, Shared};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res {
    let (n, start) = (args.iterations, args.start);
    say!("an incrementer and a decrementer change one i64 with no lock: atomic fetch_add and fetch_sub");
    // One atomic i64 in an anonymous MAP_SHARED mapping made before the
    // forks (common makes the call: mmap(MAP_SHARED | MAP_ANONYMOUS)).
    let value = Shared::new(AtomicI64::new(start))?;
    let gate = Semaphore::shared(0)?;
    let patience = SYSTEM_TIMEOUT + args.pace.secs(PAUSE_SECS);

    let worker = |step: i64| {
        let (value, gate) = (&value, &gate);
        move || -> Res {
            if !gate.wait_timeout(patience)? {
                return Err(format!("the gate stayed shut for {patience:?}").into());
            }
            for _ in 0..n {
                // Load, add and store as one indivisible step. `Relaxed` is
                // enough: nothing else is ordered by this counter, and the
                // parent reads it only after `waitpid` has reported the
                // child's end.
                if step > 0 {
                    value.fetch_add(1, Ordering::Relaxed);
                } else {
                    value.fetch_sub(1, Ordering::Relaxed);
                }
            }
            say!("done: {n} atomic changes of {step:+}");
            Ok(())
        }
    };
    // common::fork::spawn flushes stdout, forks (refusing if threaded), sets
    // PR_SET_PDEATHSIG, runs the closure and leaves with _exit (1 on an error).
    let mut inc = spawn("incrementer", worker(1))?;
    let mut dec = spawn("decrementer", worker(-1))?;

    pause_to_watch(args.pace, &[inc.raw(), dec.raw()]);
    gate.post()?;
    gate.post()?;
    reap(&mut inc)?;
    reap(&mut dec)?;

    let last = value.load(Ordering::Relaxed);
    if last != start {
        return Err(format!("with atomics: final value {last}, expected {start}").into());
    }
    say!("with atomics: final value {last} == start value {start} after {n} fetch_add and {n} fetch_sub");
    say!("why: `v += 1` is three steps (load, add, store); two processes can both load 5 and both store 6");
    say!(
        "fetch_add does all three as one indivisible step; a lock does it for any number of steps"
    );
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

/// Demonstrate how atomic fetch_add/fetch_sub keep a shared integer exact without a lock.
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

/// How long the example pauses, at pace 1, for you to look at the mappings.
const PAUSE_SECS: f64 = 3.0;

/// Safety limits for waits on another process, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
