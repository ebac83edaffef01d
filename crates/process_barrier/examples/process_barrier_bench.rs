//! Demonstrate how fast two processes can cross a shared-memory barrier
//! again and again, and why a waiter spins and yields before it sleeps.
//!
//! Two processes cross the barrier of `src/main.rs` `--rounds` times. A
//! waiter first spins, looking at the round word `SPINS` (50) times: when the
//! other process runs on another core and is about to arrive, this saves
//! going to sleep and being woken. Then it yields the CPU a few times (`sched_yield`): if the other process waits for *this* core, it runs
//! now. Only then does it sleep in `futex(FUTEX_WAIT)`. The parent lines the
//! two up with a 3-party barrier, times the crossings, and checks that every
//! round had exactly one last arriver.
//!
//! With `--tsv` it prints only one line, `rs.barrier_2proc<TAB>N<TAB>rounds/s`,
//! for `scripts/bench.sh`. Measure in a release build.
//!
//! ```text
//! cargo run --release -p process_barrier --example process_barrier_bench
//! cargo run --release -p process_barrier --example process_barrier_bench -- --tsv --rounds 100000
//! ```

use std::error::Error;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::{exit_code, spawn, Child};
use common::{describe, say, warn, Shared};
use rustix::{io::Errno, thread::futex, time::Timespec};

/// How a waiter waits: `SPINS` looks, then `YIELDS` looks with a
/// `sched_yield` each, then sleeps in the kernel.
const SPINS: u32 = 50;
const YIELDS: u32 = 8;

/// The barrier of `src/main.rs`, with spinning and yielding before the sleep.
#[derive(Default)]
struct Barrier {
    parties: u32,
    arrived: AtomicU32, // how many have arrived in this round
    round: AtomicU32,   // bumped by the last arriver; the others sleep on it
}

impl Barrier {
    fn new(parties: u32) -> Self {
        Barrier {
            parties,
            ..Default::default()
        }
    }

    /// Arrive and wait, at most `timeout`. True for the last arriver, who opened the barrier.
    fn wait(&self, timeout: Duration) -> Result<bool, Box<dyn Error>> {
        let deadline = Instant::now() + timeout;
        let round = self.round.load(Acquire); // before arriving: it cannot move on without us
        if self.arrived.fetch_add(1, AcqRel) + 1 == self.parties {
            self.arrived.store(0, Relaxed);
            self.round.store(round.wrapping_add(1), Release);
            futex::wake(&self.round, futex::Flags::empty(), i32::MAX as u32)?;
            return Ok(true);
        }
        let mut looks = 0;
        while self.round.load(Acquire) == round {
            looks += 1;
            if looks <= SPINS {
                std::hint::spin_loop();
                continue;
            }
            if looks <= SPINS + YIELDS {
                std::thread::yield_now();
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("not all arrived in {timeout:?}").into());
            }
            let ts: Timespec = left.try_into()?;
            match futex::wait(&self.round, futex::Flags::empty(), round, Some(&ts)) {
                Ok(()) | Err(Errno::AGAIN | Errno::INTR | Errno::TIMEDOUT) => {}
                Err(e) => return Err(format!("futex(FUTEX_WAIT): {e}").into()),
            }
        }
        Ok(false)
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
    let rounds = args.rounds;
    if !args.tsv {
        say!("2 processes cross a barrier {rounds} times (spins {SPINS}, yields {YIELDS})");
    }
    // MAP_SHARED mappings made before the forks (common::Shared calls mmap).
    let start = Shared::new(Barrier::new(3))?;
    let bar = Shared::new(Barrier::new(2))?;
    let lasts = Shared::new(AtomicU64::new(0))?;
    // common::fork::spawn flushes stdout, forks, sets PR_SET_PDEATHSIG, runs work, _exits.
    // A pause for a human watching before the timing (none with --tsv).
    let pause = if args.tsv {
        Duration::ZERO
    } else {
        args.pace.secs(1.0)
    };
    let mut pair = Vec::new();
    for i in 0..2 {
        let work = || crossings(&start, &bar, &lasts, rounds, SYSTEM_TIMEOUT + pause);
        pair.push(spawn(&format!("bencher {i}"), work)?);
    }
    if !args.tsv {
        let pids: Vec<String> = pair.iter().map(|c| c.raw().to_string()).collect();
        let secs = pause.as_secs_f64();
        say!(
            "starting in {secs:.1} s; the benchers wait: ps -o pid,stat,wchan:32 -p {}",
            pids.join(",")
        );
    }
    std::thread::sleep(pause);
    start.wait(SYSTEM_TIMEOUT)?;
    let t0 = Instant::now();
    // Generous: a loaded machine may need a context switch per crossing.
    join(
        &mut pair,
        SYSTEM_TIMEOUT + Duration::from_millis(1) * rounds,
    )?;
    let secs = t0.elapsed().as_secs_f64();

    // The check: every round opened once, so every crossing was counted.
    let crossed = lasts.load(SeqCst);
    if crossed != u64::from(rounds) {
        return Err(format!("{crossed} of {rounds} rounds had a last arriver").into());
    }
    let rate = f64::from(rounds) / secs;
    if args.tsv {
        // TSV only, for scripts: name, value, unit.
        println!("rs.barrier_2proc\t{rate:.0}\trounds/s");
        return Ok(());
    }
    say!("{rounds} rounds in {secs:.3} s: {rate:.0} rounds/s, each with exactly one last arriver");
    say!("all checks passed");
    Ok(())
}

/// One benchmark process: line up at `start`, then cross `bar` `rounds` times.
fn crossings(
    start: &Barrier,
    bar: &Barrier,
    lasts: &AtomicU64,
    rounds: u32,
    start_limit: Duration,
) -> Result<(), Box<dyn Error>> {
    start.wait(start_limit)?;
    for _ in 0..rounds {
        if bar.wait(SYSTEM_TIMEOUT)? {
            lasts.fetch_add(1, Relaxed);
        }
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
            Some(s) => return Err(format!("bencher {}: {}", c.raw(), describe(s)).into()),
            None => return Err(format!("bencher {} still runs after {limit:?}", c.raw()).into()),
        }
    }
    Ok(())
}

/// Demonstrate how fast two processes cross a shared-memory barrier.
#[derive(Parser)]
struct Args {
    /// Barrier rounds to cross (1-1000000)
    #[arg(long, value_name = "N", default_value_t = 10_000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rounds: u32,
    /// Print only one TSV line: name, rounds/s, unit (for scripts/bench.sh)
    #[arg(long)]
    tsv: bool,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long one wait at the barrier may take; not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
