//! Demonstrate how a reusable barrier keeps several processes in step:
//! nobody starts phase k+1 before everyone has finished phase k.
//!
//! `--workers` (4) forked processes run `--phases` (3), with a barrier in shared memory
//! after each: a count of arrivals and a round number that the last arriver bumps, while
//! the others sleep on it in `futex(FUTEX_WAIT)`. From tickets of a shared counter the
//! parent checks that every "finished k" came before every "started k+1", and that each
//! phase had one last arriver.
//!
//! What to observe at pace 1: `ps -o pid,stat,wchan:20,comm --ppid <pid>` shows the
//! waiting workers in state `S`, asleep in the kernel's futex wait.
//!
//! ```text
//! cargo run -p process_barrier
//! cargo run -p process_barrier -- --workers 6 --phases 5 --pace 0.3
//! cargo run -p process_barrier --example process_barrier_broken  # a worker dies
//! cargo run --release -p process_barrier --example process_barrier_bench
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::{error::Error, time::Duration, time::Instant};

use clap::Parser;
use common::{describe, fork::exit_code, fork::spawn, say, warn, Shared};
use rustix::{io::Errno, thread::futex, time::Timespec};

/// A reusable barrier for `parties` processes, placed in shared memory.
#[derive(Default)]
struct Barrier {
    parties: u32,
    arrived: AtomicU32, // how many have arrived in this round
    round: AtomicU32,   // bumped by the last arriver; the others sleep on it
}

impl Barrier {
    /// Arrive and wait, at most `timeout`. True for the last arriver, who opened the barrier.
    fn wait(&self, timeout: Duration) -> Result<bool, Box<dyn Error>> {
        let deadline = Instant::now() + timeout;
        // Read the round before arriving (it cannot move on without us), then
        // arrive with AcqRel: our phase's writes go out, the last takes in all.
        let round = self.round.load(Acquire);
        if self.arrived.fetch_add(1, AcqRel) + 1 == self.parties {
            // Reset the count *before* opening: the released may arrive again at once.
            self.arrived.store(0, Relaxed);
            self.round.store(round.wrapping_add(1), Release);
            futex::wake(&self.round, futex::Flags::empty(), i32::MAX as u32)?; // all (an int)
            return Ok(true);
        }
        // Wait for the *round* to change: the count was reset already.
        while self.round.load(Acquire) == round {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("not all arrived in {timeout:?}").into());
            }
            // Sleep while the word holds `round`; no FUTEX_PRIVATE_FLAG: a shared futex.
            let ts: Timespec = left.try_into()?;
            match futex::wait(&self.round, futex::Flags::empty(), round, Some(&ts)) {
                // Woken, the word had changed, a signal, or time is up: look again.
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
    let (n, phases) = (args.workers as usize, args.phases as usize);
    let mut board = Board::default();
    board.barrier.parties = args.workers;
    let board = Shared::new(board)?; // MAP_SHARED, before the forks: common::Shared calls mmap
    let me = std::process::id();
    say!("{n} workers, {phases} phases; watch them: ps -o pid,stat,wchan:20,comm --ppid {me}");
    // common::fork::spawn flushes stdout, forks, sets PR_SET_PDEATHSIG, runs work, _exits.
    let mut team = Vec::new();
    for i in 0..n {
        team.push(spawn(&format!("worker {i}"), || worker(i, args, &board))?);
    }
    let patience = SYSTEM_TIMEOUT + args.pace.secs(0.5 * (n * phases) as f64);
    for (i, child) in team.iter_mut().enumerate() {
        let late = || format!("worker {i} still runs after {patience:?}");
        let status = child.wait_timeout(patience)?.ok_or_else(late)?;
        if exit_code(status) != Some(0) {
            return Err(format!("worker {i} {}", describe(status)).into());
        }
    }
    // The claim: the phases never overlap, and one process opened each.
    for k in 1..phases {
        let last_finish = (0..n).map(|i| board.finish[i][k - 1].load(SeqCst)).max();
        let first_start = (0..n).map(|i| board.start[i][k].load(SeqCst)).min();
        let (last_finish, first_start) = (last_finish.unwrap_or(0), first_start.unwrap_or(0));
        let seen = format!("last finish #{last_finish} < first start #{first_start}");
        if last_finish >= first_start {
            return Err(format!("phase {} -> {k}: not {seen}", k - 1).into());
        }
        say!("phase {} -> {k}: {seen}", k - 1);
    }
    let lasts = &board.lasts.each_ref().map(|l| l.load(SeqCst))[..phases];
    if lasts.iter().any(|&l| l != 1) {
        return Err(format!("workers told they arrived last, per phase: {lasts:?}").into());
    }
    say!("each of the {phases} phases had exactly one last arriver");
    say!("all checks passed");
    Ok(())
}

fn worker(i: usize, args: &Args, board: &Board) -> Result<(), Box<dyn Error>> {
    let n = args.workers as usize;
    let timeout = SYSTEM_TIMEOUT + args.pace.secs(0.5 * n as f64);
    for k in 0..args.phases as usize {
        board.start[i][k].store(board.ticket.fetch_add(1, SeqCst) + 1, SeqCst);
        args.pace.sleep(0.5 * ((i + k) % n) as f64); // the work; each is slowest in turn
        let finish = board.ticket.fetch_add(1, SeqCst) + 1;
        board.finish[i][k].store(finish, SeqCst);
        say!("phase {k}: finished (#{finish}), waiting at the barrier");
        if board.barrier.wait(timeout)? {
            board.lasts[k].fetch_add(1, SeqCst);
            say!("phase {k}: I arrived last, the barrier opens for all {n}");
        }
    }
    Ok(())
}

/// What the processes share. Tickets from one counter order all their events.
#[derive(Default)]
struct Board {
    barrier: Barrier,
    ticket: AtomicU64,
    start: [[AtomicU64; 32]; 16],  // [i][k]: worker i began phase k
    finish: [[AtomicU64; 32]; 16], // [i][k]: worker i ended phase k
    lasts: [AtomicU32; 32],        // how many were told "last" in phase k
}

/// Demonstrate how a reusable barrier keeps processes in step, phase after phase.
#[derive(Parser)]
struct Args {
    /// Worker processes (2-16)
    #[arg(long, value_name = "N", default_value_t = 4, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(2..=16))]
    workers: u32,
    /// Phases, with a barrier after each (1-32)
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=32))]
    phases: u32,
    #[command(flatten)]
    pace: common::Pace,
}

/// Time for the system on top of the paced work; not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
