//! Demonstrate how processes share an array in shared memory: updates get
//! lost when a read-modify-write is not atomic, and a lock around the whole
//! array keeps it exact and never lets a reader see it half-updated.
//!
//! Part 1, the anti-pattern: the parent maps an array of 8 counters and forks
//! two adders. Each adds 1 to every cell, pass after pass, by loading the
//! cell, leaving the CPU for a moment, and storing the loaded value plus one.
//! When the other adder stores in between, its update is overwritten: lost.
//! The lesson counts the lost updates (expected total minus the array's
//! total) and fails if there are none.
//!
//! Part 2, the fix: the array lives inside a process-shared mutex. An
//! incrementer adds 1 to every cell and a decrementer subtracts 1, each
//! changing the whole array under the lock, and each pausing halfway through
//! on purpose. A reader process locks and checks that all cells are equal,
//! again and again, until the writers are done. The final array is exactly
//! the start array, and no read saw a half-updated one.
//!
//! Key points:
//! - `a[i] += 1` on shared memory is three steps (load, add, store). Two
//!   processes that both load 5 both store 6: one increment vanishes. Nothing
//!   crashes and nothing is reported; the count is just wrong.
//! - Safe Rust does not let you write that data race on a plain integer:
//!   shared memory is reached through `&T`, so a write needs an atomic or a
//!   lock. Part 1 therefore spells the broken read-modify-write as an atomic
//!   load followed by an atomic store: each step is atomic, the sequence is
//!   not. (In C or C++, `a[i] += 1` on a plain int from two processes is
//!   that race, and undefined behaviour besides.)
//! - The window is widened on purpose with a 1 µs sleep. `yield_now()`
//!   (`sched_yield`) is the classic way, but it does not promise to give the
//!   CPU away: with nothing else waiting on this CPU it returns at once, and
//!   Linux's scheduler (EEVDF) may keep the caller running anyway. Measured
//!   on a busy 2-core machine, yielding lost nothing in some runs; sleeping
//!   lost updates in every run.
//! - Atomics fix one cell at a time (`fetch_add`), but an invariant across
//!   cells (here: all equal) needs every cell to change in one critical
//!   section, and readers must take the same lock.
//! - An exact final array does not prove the updates were whole: split each
//!   update into two critical sections (one per half) and the final array
//!   is still exact, since every cell changes under the lock, yet the reader
//!   sees thousands of half-updated arrays. Only the reader's check shows it.
//! - With `common::Mutex`, the cells are inside the mutex: the guard is the
//!   only way to them, so no process can forget the lock.
//!
//! What to observe, in another terminal while the lesson pauses (3 s at pace
//! 1, before each part lets its workers go): `grep rw-s /proc/<pid>/maps` for
//! the parent and a child shows the anonymous shared mappings as
//! `/dev/zero (deleted)`, with the same inode numbers in both: one object,
//! not a copy. `ps -o pid,ppid,stat,comm --ppid <parent pid>` shows the
//! workers waiting at the gate (`S`). `scripts/shared_memory.sh` watches the
//! mappings of `shared_value`, whose parts 1 and 2 look the same.
//!
//! The pitfall: the seed's C++ and Python run `shared_array[i] += 1` in two
//! processes with no lock and never notice, because they print instead of
//! checking; Python's `Array` even has a lock that `+=` does not take. And
//! they loop forever, leaving the cleanup to a Ctrl-C.
//!
//! Seed example: 08, shared array (C++ `mmap(MAP_SHARED | MAP_ANONYMOUS)` +
//! `fork`, Python `multiprocessing.Array`).
//!
//! Run with:
//! ```text
//! cargo run -p shared_array
//! cargo run -p shared_array -- --iterations 20000 --rounds 20000 --pace 0
//! ```
//!
//! Try it:
//! - In part 1, replace the load-sleep-store with `fetch_add(1)`: no update
//!   is lost, and the lesson fails, because it then has no loss to show.
//! - Replace the sleep in part 1 with `yield_now()`, or remove it, and run a
//!   few times: sometimes nothing is lost. A race that shows only sometimes
//!   is still a race; its window is just narrower.
//! - In part 2, make the reader look without the lock: keep a copy of the
//!   cells in a `SharedSlice<AtomicI64>` that the writers update alongside,
//!   read that copy, and watch the torn count climb.
//!
//! See also: `shared_value` (one value: lock, atomics, named segments),
//! `process_lock`.

use std::error::Error;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread::{sleep, yield_now};
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn, Child};
use common::opts::{Args, Opt, Pace, Spec};
use common::shm::SharedSlice;
use common::{describe, say, warn, Mutex, Semaphore, Shared};

const SPEC: Spec = Spec {
    name: "shared_array",
    about: "Demonstrate how processes share an array: lost updates without a lock, whole-array updates under one.",
    options: &[
        Opt::int(
            "iterations",
            "passes over the array each adder makes in part 1 (no lock)",
            200,
            10,
            2_000,
        ),
        Opt::int(
            "rounds",
            "whole-array updates each writer makes in part 2 (under the lock)",
            2_000,
            100,
            20_000,
        ),
    ],
};

/// The number of cells.
const LEN: usize = 8;
/// Every cell's value at the start of part 2.
const START: i64 = 1000;
/// Part 1 tries this many times (each time with 4 times the passes) before
/// it gives up on showing a lost update.
const ATTEMPTS: u32 = 3;

/// How long the lesson pauses, at pace 1, for you to look at the mappings.
const PAUSE_SECS: f64 = 3.0;

/// Safety limits for waits on another process (fixed floors, not scaled by
/// the pace, generous because the machine may be loaded).
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
const CHILD_TIMEOUT: Duration = Duration::from_secs(100);

fn main() {
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    say!("process-shared lock back end: {}", common::BACKEND);
    lost_updates(args.int("iterations"), pace)?;
    under_a_lock(args.int("rounds"), pace)?;
    say!("all checks passed");
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 1: the anti-pattern, two unsynchronised read-modify-writes.

fn lost_updates(iterations: u64, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 1 (anti-pattern): two adders do load, sleep, store on {LEN} shared cells, no lock");
    let mut passes = iterations;
    for attempt in 1..=ATTEMPTS {
        let expected = 2 * passes * LEN as u64;
        let total = race_once(passes, pace)?;
        let lost = expected - total;
        say!("attempt {attempt}: 2 adders x {passes} passes x {LEN} cells = {expected} updates expected, the array holds {total}: {lost} lost");
        if lost > 0 {
            say!("lost {lost} of {expected} updates: a store based on a stale load overwrote the other's update");
            return Ok(());
        }
        // Possible in principle (the adders never switched inside a
        // window), so try again, longer, before giving up on the point.
        passes *= 4;
    }
    Err(format!("no update was lost in {ATTEMPTS} attempts: the adders never met inside a load-store window; try more --iterations").into())
}

/// Run the two adders once on a fresh array; return the array's total.
fn race_once(passes: u64, pace: Pace) -> Result<u64, Box<dyn Error>> {
    // `SharedSlice`: cells in an anonymous MAP_SHARED mapping, inherited by
    // the children as the same memory, not a copy-on-write copy.
    let cells = SharedSlice::new(LEN, |_| AtomicU64::new(0))?;
    let start = Start::new(2, pace)?;

    // `spawn` forks. That is sound here because the lesson has one thread
    // (the helper checks: a child of a multithreaded process could deadlock
    // on a lock another thread held). Stdout is flushed before the fork, and
    // the child leaves with `_exit`, so it never runs the parent's
    // destructors.
    let adder = || {
        let (cells, start) = (&cells, &start);
        move || -> Result<(), Box<dyn Error>> {
            start.wait()?;
            for _ in 0..passes {
                for cell in cells.iter() {
                    // WRONG on purpose: three separate steps. Each step is
                    // atomic; the sequence is not.
                    let v = cell.load(Ordering::Relaxed); // 1. load
                    give_way(); // the other adder's store lands here...
                    cell.store(v + 1, Ordering::Relaxed); // 2. add, 3. store: ...and is overwritten
                }
            }
            Ok(())
        }
    };
    let mut first = spawn("adder 1", adder())?;
    let mut second = spawn("adder 2", adder())?;

    pause_to_watch(pace, &[first.raw(), second.raw()]);
    start.open()?;
    reap(&mut first)?;
    reap(&mut second)?;
    // Both adders are reaped: every store they made is visible here.
    Ok(cells.iter().map(|c| c.load(Ordering::Relaxed)).sum())
}

// ---------------------------------------------------------------------------
// Part 2: the whole array under one process-shared lock.

/// The data the lock protects: the cells, and how many whole-array updates
/// have been made (so the reader knows when the writers are done).
struct Table {
    cells: [i64; LEN],
    updates: u64,
}

/// What the reader found, for the parent to check after reaping it.
#[derive(Default)]
struct Findings {
    reads: AtomicU64,
    /// Reads made while the writers were mid-run (some updates done, not all).
    mid_run: AtomicU64,
    /// Reads that saw cells not all equal: a half-updated array.
    torn: AtomicU64,
}

fn under_a_lock(rounds: u64, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 2: an incrementer and a decrementer update all {LEN} cells under one lock; a reader checks");
    let table = Mutex::shared(Table {
        cells: [START; LEN],
        updates: 0,
    })?;
    let findings = Shared::new(Findings::default())?;
    let start = Start::new(3, pace)?;
    let total = 2 * rounds;

    let writer = |step: i64| {
        let (table, start) = (&table, &start);
        move || -> Result<(), Box<dyn Error>> {
            start.wait()?;
            for _ in 0..rounds {
                let mut t = table.lock_within(LOCK_TIMEOUT)?;
                for (i, cell) in t.cells.iter_mut().enumerate() {
                    *cell += step;
                    if i == LEN / 2 - 1 {
                        // Halfway: a reader without the lock would see half
                        // the cells changed. Pause here on purpose to give it
                        // every chance; with the lock it has none.
                        give_way();
                    }
                }
                t.updates += 1;
                drop(t); // unlock, then let the others have a turn:
                give_way(); // a mutex promises exclusion, not fairness
            }
            Ok(())
        }
    };
    let mut inc = spawn("incrementer", writer(1))?;
    let mut dec = spawn("decrementer", writer(-1))?;

    let mut reader = spawn("reader", || -> Result<(), Box<dyn Error>> {
        start.wait()?;
        let deadline = Instant::now() + CHILD_TIMEOUT;
        loop {
            let t = table.lock_within(LOCK_TIMEOUT)?;
            let torn = t.cells.iter().any(|&c| c != t.cells[0]);
            let done = t.updates == total;
            let mid_run = t.updates > 0 && !done;
            drop(t); // count outside the lock
            give_way(); // let the writers have a turn
            findings.reads.fetch_add(1, Ordering::Relaxed);
            findings
                .mid_run
                .fetch_add(mid_run as u64, Ordering::Relaxed);
            findings.torn.fetch_add(torn as u64, Ordering::Relaxed);
            if done {
                break;
            }
            if Instant::now() > deadline {
                return Err("the writers never finished".into());
            }
        }
        say!(
            "{} reads under the lock, {} of them mid-run, {} torn",
            findings.reads.load(Ordering::Relaxed),
            findings.mid_run.load(Ordering::Relaxed),
            findings.torn.load(Ordering::Relaxed)
        );
        Ok(())
    })?;

    pause_to_watch(pace, &[inc.raw(), dec.raw(), reader.raw()]);
    start.open()?;
    reap(&mut inc)?;
    reap(&mut dec)?;
    reap(&mut reader)?;

    let t = table.lock_within(LOCK_TIMEOUT)?;
    let cells = t.cells.map(|c| c.to_string()).join(" ");
    if t.cells != [START; LEN] || t.updates != total {
        return Err(format!(
            "under the lock: cells [{cells}] after {} updates, expected all {START} after {total}",
            t.updates
        )
        .into());
    }
    say!("final array [{cells}]: every cell is back to {START} after {rounds} increments and {rounds} decrements of the whole array");
    drop(t);

    let reads = findings.reads.load(Ordering::Relaxed);
    let mid_run = findings.mid_run.load(Ordering::Relaxed);
    let torn = findings.torn.load(Ordering::Relaxed);
    if torn != 0 {
        return Err(format!("the reader saw {torn} half-updated arrays under the lock").into());
    }
    if mid_run == 0 {
        // No overlap means the torn count proves nothing.
        return Err(
            "the reader never read while the writers were mid-run; try more --rounds".into(),
        );
    }
    say!("reader: {reads} reads, {mid_run} of them while the writers were mid-run, {torn} half-updated arrays seen");
    Ok(())
}

// ---------------------------------------------------------------------------
// Small helpers.

/// How the workers start together: they sleep at a gate until the parent
/// opens it (after its pause), then meet at a start line. Without the start
/// line, a worker that the busy kernel wakes late can find the others
/// already finished: no overlap, nothing to show.
struct Start {
    gate: Shared<Semaphore>,
    ready: Shared<AtomicU32>,
    workers: u32,
    gate_timeout: Duration,
}

impl Start {
    fn new(workers: u32, pace: Pace) -> io::Result<Self> {
        Ok(Start {
            gate: Semaphore::shared(0)?,
            ready: Shared::new(AtomicU32::new(0))?,
            workers,
            gate_timeout: SYSTEM_TIMEOUT + pace.secs(PAUSE_SECS),
        })
    }

    /// In the parent: let every worker through the gate.
    fn open(&self) -> io::Result<()> {
        (0..self.workers).try_for_each(|_| self.gate.post())
    }

    /// In a worker: the gate (at most the pause plus a safety margin: a
    /// parent that died never opens it), then the start line.
    fn wait(&self) -> Result<(), Box<dyn Error>> {
        if !self.gate.wait_timeout(self.gate_timeout)? {
            return Err(format!("the gate stayed shut for {:?}", self.gate_timeout).into());
        }
        self.ready.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + SYSTEM_TIMEOUT;
        while self.ready.load(Ordering::SeqCst) < self.workers {
            if Instant::now() > deadline {
                return Err("start line: the other workers never came".into());
            }
            yield_now();
        }
        Ok(())
    }
}

/// Reap a forked worker, which must exit 0. On timeout the `Child` handle
/// kills and reaps it when dropped.
fn reap(child: &mut Child) -> Result<(), Box<dyn Error>> {
    match child.wait_timeout(CHILD_TIMEOUT)? {
        Some(s) if exit_code(s) == Some(0) => Ok(()),
        Some(s) => Err(format!("worker {}: {}", child.raw(), describe(s)).into()),
        None => Err(format!(
            "worker {} still running after {CHILD_TIMEOUT:?}",
            child.raw()
        )
        .into()),
    }
}

/// Leave the CPU for a moment, so that another process runs now.
/// `yield_now()` does not promise that (see the header); a sleep does.
fn give_way() {
    sleep(Duration::from_micros(1));
}

/// Give a human time to look at the mappings (nothing at pace 0).
fn pause_to_watch(pace: Pace, children: &[i32]) {
    let mut pids = vec![std::process::id() as i32];
    pids.extend_from_slice(children);
    let files: Vec<String> = pids.iter().map(|p| format!("/proc/{p}/maps")).collect();
    say!(
        "pausing {:.1} s; look: grep rw-s {}",
        pace.secs(PAUSE_SECS).as_secs_f64(),
        files.join(" ")
    );
    pace.sleep(PAUSE_SECS);
}
