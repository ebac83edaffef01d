//! Demonstrate how a barrier whose party died breaks for everyone through a
//! timed wait, instead of leaving the others waiting forever.
//!
//! `--workers` (4) processes meet at a barrier in shared memory; the last of
//! them kills itself with SIGKILL before it arrives. A barrier cannot know that a
//! party died, and `pthread_barrier_wait` has no timeout. Here each waiter
//! waits with a deadline; the first whose time runs out *breaks* the barrier:
//! it sets a BROKEN bit in the round word and wakes every sleeper, which
//! leaves with the outcome "broken" (Python's `BrokenBarrierError`). A later
//! arrival is told the same at once. The parent checks that the worker died
//! of SIGKILL, that every survivor reported the barrier broken, that a
//! survivor broke it, and that a late arrival is refused.
//!
//! What to observe at pace 1 (the survivors give up after 5 s):
//! `ps -o pid,stat,wchan:20,comm --ppid <pid>` shows the survivors asleep in
//! the futex wait, and the dead worker already gone (reaped).
//!
//! ```text
//! cargo run -p process_barrier --example process_barrier_broken
//! cargo run -p process_barrier --example process_barrier_broken -- --workers 8 --pace 0.4
//! ```

use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering::*};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::{exit_code, spawn, Child};
use common::{describe, say, warn, Shared};
use nix::sys::signal::{raise, Signal};
use nix::sys::wait::WaitStatus;
use rustix::{io::Errno, thread::futex, time::Timespec};

/// The top bit of the round word: the barrier is broken, for good.
const BROKEN: u32 = 1 << 31;

/// The barrier of `src/main.rs`, with a timed wait that can break it.
#[derive(Default)]
struct Barrier {
    parties: u32,
    arrived: AtomicU32,   // how many have arrived in this round
    round: AtomicU32,     // the round number (low 31 bits) and the BROKEN bit
    broken_by: AtomicU32, // the PID of the waiter that timed out and broke it
}

/// What [`Barrier::wait`] tells a process.
#[derive(Debug, PartialEq)]
enum Outcome {
    Last,     // everyone arrived, and this process opened the barrier
    Released, // everyone arrived; the last one released this process
    Broken,   // a waiter timed out (maybe this one): nobody will pass again
}

impl Barrier {
    /// Arrive, and wait at most `timeout`; then break the barrier for all.
    fn wait(&self, timeout: Duration) -> Result<Outcome, Box<dyn Error>> {
        let deadline = Instant::now() + timeout;
        let round = self.round.load(Acquire); // before arriving: it cannot move on without us
        if round & BROKEN != 0 {
            return Ok(Outcome::Broken); // the broken state sticks
        }
        if self.arrived.fetch_add(1, AcqRel) + 1 == self.parties {
            self.arrived.store(0, Relaxed);
            // A compare-exchange, not a store: a waiter may have broken it meanwhile.
            let next = (round + 1) & !BROKEN;
            let swapped = self.round.compare_exchange(round, next, AcqRel, Acquire);
            if swapped.is_err() {
                return Ok(Outcome::Broken);
            }
            futex::wake(&self.round, futex::Flags::empty(), i32::MAX as u32)?;
            return Ok(Outcome::Last);
        }
        loop {
            let now = self.round.load(Acquire);
            if now & BROKEN != 0 {
                return Ok(Outcome::Broken);
            }
            if now != round {
                return Ok(Outcome::Released);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.break_for(round);
            }
            let ts: Timespec = left.try_into()?;
            match futex::wait(&self.round, futex::Flags::empty(), round, Some(&ts)) {
                Ok(()) | Err(Errno::AGAIN | Errno::INTR | Errno::TIMEDOUT) => {}
                Err(e) => return Err(format!("futex(FUTEX_WAIT): {e}").into()),
            }
        }
    }

    /// Time is up for a waiter of `round`: break the barrier, unless the
    /// round ended (or someone else broke it) meanwhile.
    fn break_for(&self, round: u32) -> Result<Outcome, Box<dyn Error>> {
        let next = round | BROKEN;
        match self.round.compare_exchange(round, next, AcqRel, Acquire) {
            Ok(_) => {
                self.broken_by.store(std::process::id(), SeqCst);
                // Everyone asleep on the round word wakes, sees BROKEN, leaves.
                futex::wake(&self.round, futex::Flags::empty(), i32::MAX as u32)?;
                Ok(Outcome::Broken)
            }
            Err(now) if now & BROKEN != 0 => Ok(Outcome::Broken),
            Err(_) => Ok(Outcome::Released),
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let n = args.workers as usize;
    let doomed = n - 1;
    // A floor: the pace can lengthen the wait, never shrink it below 2 s.
    let give_up = Duration::from_secs(2).max(args.pace.secs(5.0));
    let secs = give_up.as_secs_f64();
    say!("worker {doomed} dies before the barrier; the others give up after {secs:.1} s");
    // One MAP_SHARED mapping made before the forks (common::Shared calls mmap).
    let parties = args.workers;
    let barrier = Shared::new(Barrier {
        parties,
        ..Default::default()
    })?;
    let reported = Shared::new(AtomicU32::new(0))?;
    let me = std::process::id();
    say!("watch them wait: ps -o pid,stat,wchan:20,comm --ppid {me}");

    // common::fork::spawn flushes stdout, forks, sets PR_SET_PDEATHSIG, runs work, _exits.
    let mut team = Vec::new();
    for i in 0..n {
        team.push(spawn(&format!("worker {i}"), || {
            if i == doomed {
                say!("dying before I reach the barrier (SIGKILL)");
                raise(Signal::SIGKILL)?; // cannot be caught: never returns
            }
            survivor(&barrier, &reported, give_up)
        })?);
    }
    let mut dead = team.pop().ok_or("no workers")?;
    match dead.wait_timeout(SYSTEM_TIMEOUT)? {
        Some(s @ WaitStatus::Signaled(_, Signal::SIGKILL, _)) => {
            say!("worker {doomed} {}", describe(s))
        }
        Some(s) => return Err(format!("worker {doomed}: {}", describe(s)).into()),
        None => return Err(format!("worker {doomed} is still running").into()),
    }
    join(&mut team, SYSTEM_TIMEOUT + give_up)?;

    // The claim: every survivor was told, and one of them broke the barrier.
    let survivors = n - 1;
    let told = reported.load(SeqCst) as usize;
    if told != survivors {
        return Err(format!("{told} of {survivors} survivors reported the barrier broken").into());
    }
    let breaker = barrier.broken_by.load(SeqCst) as i32;
    if !team.iter().any(|c| c.raw() == breaker) {
        return Err(format!("the barrier was broken by {breaker}, not by a survivor").into());
    }
    say!("all {survivors} survivors reported the barrier broken ({breaker} timed out first)");
    // The broken state sticks: a late arrival does not wait at all.
    let late = barrier.wait(Duration::ZERO)?;
    if late != Outcome::Broken {
        return Err(format!("a late arrival at the broken barrier got {late:?}").into());
    }
    say!("a late arrival is told at once: {late:?}");
    say!("all checks passed");
    Ok(())
}

/// A worker that reaches the barrier and is told it is broken.
fn survivor(barrier: &Barrier, told: &AtomicU32, give_up: Duration) -> Result<(), Box<dyn Error>> {
    let waited = Instant::now();
    if barrier.wait(give_up)? != Outcome::Broken {
        return Err("passed a barrier that cannot open".into());
    }
    told.fetch_add(1, SeqCst);
    let secs = waited.elapsed().as_secs_f64();
    if barrier.broken_by.load(SeqCst) == std::process::id() {
        say!("timed out after {secs:.2} s: I broke the barrier");
    } else {
        say!("told after {secs:.2} s: the barrier is broken, no more waiting");
    }
    Ok(())
}

/// Reap every child, waiting at most `limit` in all; fail unless each exited 0.
fn join(children: &mut [Child], limit: Duration) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + limit;
    for c in children.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.wait_timeout(left)? {
            Some(s) if exit_code(s) == Some(0) => {}
            Some(s) => return Err(format!("worker {}: {}", c.raw(), describe(s)).into()),
            None => return Err(format!("worker {} still runs after {limit:?}", c.raw()).into()),
        }
    }
    Ok(())
}

/// Demonstrate how a barrier whose party died breaks for everyone through a timed wait.
#[derive(Parser)]
struct Args {
    /// Worker processes, the last of which dies (2-16)
    #[arg(long, value_name = "N", default_value_t = 4, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(2..=16))]
    workers: u32,
    #[command(flatten)]
    pace: common::Pace,
}

/// Time for the system on top of the paced waits; not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
