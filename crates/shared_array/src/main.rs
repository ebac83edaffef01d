//! Demonstrate how two processes share one array through a `MAP_SHARED`
//! mapping, how their updates get lost without a lock, and how a
//! process-shared lock makes the count exact.
//!
//! Two forked adders add 1 to each of 8 shared cells, pass after pass, as a
//! load, a short sleep and a store of the loaded value plus one. Part 1, no
//! lock: a store landing between the other's load and store is overwritten.
//! The program counts the losses; a run may lose none (the window was never
//! hit), and it says so. Part 2, each pass under one lock: the count must be
//! exact, or the program exits 1. What to observe during its pauses (3 s at
//! pace 1): `grep rw-s /proc/<pid>/maps` of the parent and of a child show
//! the same `/dev/zero (deleted)` mapping, same inode: one object, no copy.
//!
//! ```text
//! cargo run -p shared_array
//! cargo run -p shared_array -- --iterations 2000 --pace 0
//! cargo run -p shared_array --example shared_array_reader   # never a torn array
//! cargo run -p shared_array --example shared_array_reader -- --split  # exact, yet torn
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::Duration;

use clap::Parser;
use common::fork::{exit_code, spawn, Child};
use common::shm::SharedSlice;
use common::{describe, say, warn, Mutex, Pace, Semaphore, Shared};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    say!("process-shared lock back end: {}", common::BACKEND);
    let passes = u64::from(args.iterations);
    let expected = 2 * passes * LEN as u64;

    say!("part 1 (no lock): 2 adders do load, sleep, store on {LEN} shared cells");
    // common's SharedSlice: mmap(MAP_SHARED | MAP_ANONYMOUS) of LEN cells, which
    // a forked child inherits as the same memory (not a copy-on-write copy).
    let cells = SharedSlice::new(LEN, |_| AtomicU64::new(0))?;
    let gate = Semaphore::shared(0)?;
    let adder = || -> Result<(), Box<dyn Error>> {
        pass_gate(&gate, args.pace)?;
        for _ in 0..passes {
            for cell in cells.iter() {
                // WRONG on purpose: each step is atomic, the sequence is not.
                let v = cell.load(Ordering::Relaxed); // 1. load
                widen_window(); // if the other adder stores now...
                cell.store(v + 1, Ordering::Relaxed); // 2. add, 3. store: ...it is overwritten
            }
        }
        Ok(())
    };
    // common's spawn forks (flushing stdout first); the child runs the closure,
    // dies with the parent (PR_SET_PDEATHSIG) and leaves with `_exit`.
    let adders = [spawn("adder 1", adder)?, spawn("adder 2", adder)?];
    open_gate(&gate, &adders, args.pace)?;
    reap(adders)?; // both reaped: every store they made is visible here
    let total: u64 = cells.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    let lost = expected - total; // a store writes a loaded value + 1: total <= expected
    say!("2 adders x {passes} passes x {LEN} cells = {expected} updates expected, the array holds {total}: {lost} lost");
    if lost > 0 {
        say!("lost {lost} of {expected} updates: a store based on a stale load overwrote the other's update");
    } else {
        say!("no update lost this run: the adders never met inside a load-store window; the race is still there (run again, or raise --iterations)");
    }

    say!("part 2 (one lock): the same adders, each pass over the {LEN} cells under the lock");
    // common's Mutex::shared: the cells inside a process-shared mutex (a robust
    // pthread mutex, or a futex word with the futex back end) in such a mapping.
    let table = Mutex::shared([0u64; LEN])?;
    let adder = || -> Result<(), Box<dyn Error>> {
        pass_gate(&gate, args.pace)?;
        for _ in 0..passes {
            let mut t = table.lock_within(SYSTEM_TIMEOUT)?;
            for cell in t.iter_mut() {
                let v = *cell; // the same three steps, the same window...
                widen_window(); // ...but the other adder waits for the lock
                *cell = v + 1;
            }
            drop(t); // unlock: the other adder may take the next pass
        }
        Ok(())
    };
    let adders = [spawn("adder 1", adder)?, spawn("adder 2", adder)?];
    open_gate(&gate, &adders, args.pace)?;
    reap(adders)?;
    let cells = *table.lock_within(SYSTEM_TIMEOUT)?;
    let total: u64 = cells.iter().sum();
    if cells != [2 * passes; LEN] {
        return Err(format!("under the lock the array holds {total} of {expected} updates: some were lost; cells {cells:?}").into());
    }
    say!("under the lock: the array holds {total} of {expected} updates: exact");
    say!("all checks passed");
    Ok(())
}

/// Sleep between load and store: a wider window for the other adder's store.
/// A sleep gives the CPU away, but does not promise that the other runs now.
fn widen_window() {
    sleep(Duration::from_micros(1));
}

/// In a worker: wait for the gate, at most the pause plus a safety margin.
fn pass_gate(gate: &Semaphore, pace: Pace) -> Result<(), Box<dyn Error>> {
    let limit = SYSTEM_TIMEOUT + pace.secs(PAUSE_SECS);
    if gate.wait_timeout(limit)? {
        return Ok(());
    }
    Err(format!("the gate stayed shut for {limit:?}").into())
}

/// In the parent: pause for a human to look (not at pace 0), open the gate.
fn open_gate(gate: &Shared<Semaphore>, workers: &[Child], pace: Pace) -> std::io::Result<()> {
    let pids = std::iter::once(std::process::id() as i32).chain(workers.iter().map(Child::raw));
    let maps: Vec<String> = pids.map(|p| format!("/proc/{p}/maps")).collect();
    let secs = pace.secs(PAUSE_SECS).as_secs_f64();
    say!("pausing {secs:.1} s; look: grep rw-s {}", maps.join(" "));
    pace.sleep(PAUSE_SECS);
    workers.iter().try_for_each(|_| gate.post())
}

/// Reap the workers, which must exit 0 (common kills and reaps the rest).
fn reap<const N: usize>(workers: [Child; N]) -> Result<(), Box<dyn Error>> {
    for mut w in workers {
        let late = format!("worker {} still running after {CHILD_TIMEOUT:?}", w.raw());
        let status = w.wait_timeout(CHILD_TIMEOUT)?.ok_or(late)?;
        if exit_code(status) != Some(0) {
            return Err(format!("worker {}: {}", w.raw(), describe(status)).into());
        }
    }
    Ok(())
}

/// Demonstrate how processes share an array: lost updates without a lock, an exact count with one.
#[derive(Parser)]
struct Args {
    /// Passes over the array each adder makes, in each part (10-2000)
    #[arg(long, value_name = "N", default_value_t = 200, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(10..=2000))]
    iterations: u32,
    #[command(flatten)]
    pace: Pace,
}

const LEN: usize = 8; // cells
/// How long the parent pauses before each part, at pace 1.
const PAUSE_SECS: f64 = 3.0;
/// Safety limits for waits on another process (not scaled by the pace).
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
const CHILD_TIMEOUT: Duration = Duration::from_secs(100);
