//! Demonstrate how one lock around each whole-array update keeps a reader
//! from ever seeing the array half-updated, and how an update split into
//! two critical sections leaves the final array exact yet torn meanwhile.
//!
//! An incrementer adds 1 to all 8 cells and a decrementer subtracts 1, each
//! `--rounds` times, each update under one process-shared lock and sleeping
//! halfway. A reader process takes the same lock again and again and checks
//! that all cells are equal. The writers wait after their first update until
//! the reader has read, so the reads surely overlap them. Checked: every cell
//! back to 1000, reads mid-run, no torn array. With `--split` each update is
//! two critical sections (one per half); the incrementer stops between the
//! halves of its first update until the reader has seen the torn array (an
//! unlucky schedule, made certain): the final array is exact all the same.
//! What to observe: the reader's counts; during the pause (3 s at pace 1),
//! `ps -o pid,ppid,stat,comm --ppid <parent pid>` shows the workers asleep.
//!
//! ```text
//! cargo run -p shared_array --example shared_array_reader
//! cargo run -p shared_array --example shared_array_reader -- --split
//! cargo run -p shared_array --example shared_array_reader -- --rounds 20000 --pace 0
//! ```

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::{exit_code, spawn, Child};
use common::{describe, say, warn, Mutex, Pace, Semaphore, Shared};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

/// What the lock protects: the cells, and the whole-array updates made so far.
struct Table {
    cells: [i64; LEN],
    updates: u64,
}

/// What the reader found, for the writers to wait on and the parent to check.
#[derive(Default)]
struct Findings {
    reads: AtomicU64,
    mid_run: AtomicU64, // reads while some updates were done, not all
    torn: AtomicU64,    // reads that saw cells not all equal: half-updated
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    say!("process-shared lock back end: {}", common::BACKEND);
    let (rounds, split) = (u64::from(args.rounds), args.split);
    let how = ["under one lock", "in two critical sections (--split)"][split as usize];
    say!("an incrementer and a decrementer update all {LEN} cells {how}; a reader checks");
    // common's Mutex::shared / Shared: an anonymous MAP_SHARED mapping, the
    // cells inside a process-shared mutex (robust pthread mutex, or futex).
    let table = Mutex::shared(Table {
        cells: [START; LEN],
        updates: 0,
    })?;
    let findings = Shared::new(Findings::default())?;
    let gate = Semaphore::shared(0)?;
    let total = 2 * rounds;
    let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);

    let writer = |step: i64| -> Result<(), Box<dyn Error>> {
        pass_gate(&gate, args.pace)?;
        for round in 0..rounds {
            let mut t = table.lock_within(SYSTEM_TIMEOUT)?;
            t.cells[..LEN / 2].iter_mut().for_each(|c| *c += step);
            // Halfway: a reader without the lock would see half the cells
            // changed. Sleep here to give it every chance.
            give_way();
            if split {
                drop(t); // the anti-pattern: unlock in the middle
                if round == 0 && step == 1 {
                    wait_for(&findings.torn, "the reader never saw the torn array")?;
                }
                t = table.lock_within(SYSTEM_TIMEOUT)?;
            }
            t.cells[LEN / 2..].iter_mut().for_each(|c| *c += step);
            t.updates += 1;
            drop(t); // unlock, then let the others have a turn:
            give_way(); // a mutex promises exclusion, not fairness
            if round == 0 {
                wait_for(&findings.mid_run, "the reader never read mid-run")?;
            }
        }
        Ok(())
    };
    let reader = || -> Result<(), Box<dyn Error>> {
        pass_gate(&gate, args.pace)?;
        let deadline = Instant::now() + CHILD_TIMEOUT;
        loop {
            let t = table.lock_within(SYSTEM_TIMEOUT)?;
            let torn = t.cells.iter().any(|&c| c != t.cells[0]);
            let done = t.updates == total;
            let mid_run = t.updates > 0 && !done;
            drop(t); // count outside the lock
            findings.reads.fetch_add(1, Ordering::SeqCst);
            findings.mid_run.fetch_add(mid_run as u64, Ordering::SeqCst);
            findings.torn.fetch_add(torn as u64, Ordering::SeqCst);
            if done {
                break;
            }
            if Instant::now() > deadline {
                return Err("the writers never finished".into());
            }
            give_way(); // let the writers have a turn
        }
        let [r, m, t] = [&findings.reads, &findings.mid_run, &findings.torn].map(load);
        say!("{r} reads under the lock, {m} of them mid-run, {t} torn");
        Ok(())
    };
    let workers = [
        spawn("incrementer", || writer(1))?,
        spawn("decrementer", || writer(-1))?,
        spawn("reader", reader)?,
    ];
    open_gate(&gate, &workers, args.pace)?;
    reap(workers)?;

    let t = table.lock_within(SYSTEM_TIMEOUT)?; // all reaped: nobody else locks now
    let (cells, n) = (t.cells.map(|c| c.to_string()).join(" "), t.updates);
    if t.cells != [START; LEN] || n != total {
        return Err(format!("the final array is [{cells}] after {n} updates; expected every cell back to {START} after {total} updates").into());
    }
    say!("final array [{cells}]: every cell is back to {START} after {rounds} increments and {rounds} decrements of the whole array");

    let [reads, mid_run, torn] = [&findings.reads, &findings.mid_run, &findings.torn].map(load);
    if mid_run == 0 {
        return Err("the reader never read while the writers were mid-run".into());
    }
    say!("reader: {reads} reads, {mid_run} of them while the writers were mid-run, {torn} half-updated arrays seen");
    if split && torn == 0 {
        return Err("with the update split, the reader saw no torn array".into());
    } else if split {
        say!("split in two critical sections: the array ends exact, yet the reader saw {torn} torn arrays");
    } else if torn != 0 {
        return Err(format!("the reader saw {torn} half-updated arrays under the lock").into());
    }
    say!("all checks passed");
    Ok(())
}

/// Wait (not holding the lock) until the reader has counted something.
fn wait_for(counter: &AtomicU64, what: &str) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    while counter.load(Ordering::SeqCst) == 0 {
        if Instant::now() > deadline {
            return Err(format!("{what} (waited {SYSTEM_TIMEOUT:?})").into());
        }
        give_way();
    }
    Ok(())
}

/// Leave the CPU for a moment. A sleep gives the CPU away, but does not
/// promise that any particular other process runs now.
fn give_way() {
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
    let pids: Vec<String> = workers.iter().map(|w| w.raw().to_string()).collect();
    let secs = pace.secs(PAUSE_SECS).as_secs_f64();
    say!(
        "pausing {secs:.1} s; the workers {} wait at the gate",
        pids.join(" ")
    );
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

/// Demonstrate how a lock around each whole-array update keeps a reader from seeing it torn.
#[derive(Parser)]
struct Args {
    /// Whole-array updates each writer makes (100-20000)
    #[arg(long, value_name = "N", default_value_t = 2_000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(100..=20_000))]
    rounds: u32,
    /// Split each update into two critical sections, one per half (a switch)
    #[arg(long)]
    split: bool,
    #[command(flatten)]
    pace: Pace,
}

const LEN: usize = 8; // cells
const START: i64 = 1000; // every cell's value at the start
const PAUSE_SECS: f64 = 3.0; // the parent's pause before the workers go, at pace 1
/// Safety limits for waits on another process (not scaled by the pace).
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
const CHILD_TIMEOUT: Duration = Duration::from_secs(100);
