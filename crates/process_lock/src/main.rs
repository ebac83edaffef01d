//! Demonstrate how a mutex shared between processes keeps a shared counter
//! exact, where the same work without it loses updates.
//!
//! `--workers` processes (4) each add 1 to a counter in shared memory
//! `--iterations` times (200000). First without a lock: each step is a load
//! and then a store, and another process may store in between, so updates
//! are lost. Then under a process-shared mutex: the count is exact, which
//! the program checks (it exits 1 if not).
//!
//! What to observe: "N updates lost" without the lock (a different N each
//! run, sometimes 0); while the parent holds the lock (2 s at pace 1), `ps`
//! shows every worker asleep in `futex_do_wait`; then the exact count.
//!
//! ```text
//! cargo run -p process_lock
//! cargo run -p process_lock -- --workers 8 --iterations 1000000
//! cargo run -p process_lock --features common/futex-default    # the futex back end
//! cargo run -p process_lock --example process_lock_lines       # torn lines, whole ones
//! cargo run -p process_lock --example process_lock_owner_died  # the holder is killed
//! cargo run -p process_lock --example process_lock_unrepaired  # the pitfall
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::{exit_code, spawn, Child};
use common::{describe, say, warn, Mutex, Semaphore, Shared};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res {
    let (n, iterations) = (args.workers, args.iterations);
    let expected = u64::from(n) * iterations;
    say!("lock back end: {}", common::BACKEND);
    say!("{n} workers each add 1 to a shared counter {iterations} times");

    // Without a lock: a load, then a store. Each is atomic (no undefined
    // behaviour), but another process can store between our two steps, and
    // then one of the two updates is lost.
    let racy = Shared::new(AtomicU64::new(0))?;
    let mut team = start(n, |_| {
        for _ in 0..iterations {
            let v = racy.load(Relaxed);
            racy.store(v + 1, Relaxed);
        }
        Ok(())
    })?;
    reap(&mut team, patience(n, iterations))?;
    let got = racy.load(SeqCst);
    let lost = expected - got;
    say!("without the lock: counter = {got}, expected {expected}: {lost} updates lost");

    // The lock and the counter it protects, in one MAP_SHARED mapping made
    // before the forks. common makes the lock: pthread_mutexattr_setpshared
    // (PTHREAD_PROCESS_SHARED), _setrobust and pthread_mutex_init in place
    // (POSIX back end), or a futex word without FUTEX_PRIVATE_FLAG (futex).
    let counter = Mutex::shared(0u64)?;
    // The parent holds the lock at the start, for a human to see every
    // worker wait for it; the count does not rest on this pause.
    let hold = args.pace.secs(2.0);
    let held = counter.lock_within(SYSTEM_TIMEOUT)?;
    let mut team = start(n, |_| {
        for _ in 0..iterations {
            // Lock, load, add, store, unlock: one step for everyone else.
            *counter.lock_within(SYSTEM_TIMEOUT + hold)? += 1;
        }
        say!("done: added {iterations} under the lock");
        Ok(())
    })?;
    let me = std::process::id();
    say!("holding the lock for {hold:.1?}: ps -o pid,stat,wchan:20,comm --ppid {me}");
    std::thread::sleep(hold);
    drop(held);
    reap(&mut team, patience(n, iterations) + hold)?;
    let got = *counter.lock_within(SYSTEM_TIMEOUT)?;
    say!("with the lock:    counter = {got}, expected {expected}");
    if got != expected {
        return Err(format!("the locked count is {got}, expected {expected}").into());
    }
    say!("the count under the lock is exact: no update lost");
    say!("all checks passed");
    Ok(())
}

/// Fork `n` workers that all run `work(i)` at the same time.
fn start(n: u32, work: impl Fn(u32) -> Res) -> Result<Vec<Child>, Box<dyn Error>> {
    // Each worker waits at this gate (a semaphore at 0) until all exist,
    // so they really run at the same time, not one after the other.
    let gate = Semaphore::shared(0)?;
    // common::fork::spawn flushes stdout, forks (refusing if threaded), sets
    // PR_SET_PDEATHSIG, runs the closure and leaves with _exit (1 on an
    // error). A `Child` dropped unreaped is killed and reaped.
    let mut team = Vec::new();
    for i in 0..n {
        let (work, gate) = (&work, &gate);
        team.push(spawn(&format!("worker {i}"), move || {
            if !gate.wait_timeout(SYSTEM_TIMEOUT)? {
                return Err(format!("the start gate stayed shut for {SYSTEM_TIMEOUT:?}").into());
            }
            work(i)
        })?);
    }
    for _ in 0..n {
        gate.post()?;
    }
    Ok(team)
}

/// Time for a round: the safety limit plus 1 µs per increment.
fn patience(n: u32, iterations: u64) -> Duration {
    SYSTEM_TIMEOUT + Duration::from_micros(u64::from(n) * iterations)
}

/// Reap every worker within `patience` in all; each must exit 0.
fn reap(team: &mut [Child], patience: Duration) -> Res {
    let deadline = Instant::now() + patience;
    for child in team.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        match child.wait_timeout(left)? {
            Some(s) if exit_code(s) == Some(0) => {}
            Some(s) => return Err(format!("worker {}: {}", child.raw(), describe(s)).into()),
            None => {
                return Err(format!("worker {} still runs after {patience:?}", child.raw()).into())
            }
        }
    }
    Ok(())
}

type Res = Result<(), Box<dyn Error>>;

/// Demonstrate how a process-shared mutex keeps a shared counter exact.
#[derive(Parser)]
struct Args {
    /// Worker processes (2-16)
    #[arg(long, value_name = "N", default_value_t = 4, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(2..=16))]
    workers: u32,
    /// Increments per worker, in each round (1-10000000)
    #[arg(long, value_name = "N", default_value_t = 200_000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    iterations: u64,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long a lock or the start gate may take before the lesson calls it
/// stuck. A safety limit for a loaded machine, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
