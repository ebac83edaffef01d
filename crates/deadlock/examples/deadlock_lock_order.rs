//! Demonstrate how one global lock order prevents the deadlock of `cargo run -p deadlock`.
//!
//! Worker 1 asks for A then B, worker 2 for B then A, as in the lesson, but
//! both take them in one order, A before B, whatever order they ask in. A
//! cycle of waits needs someone who holds B and waits for A: now nobody does.
//! Round 1 is forced into the lesson's interleaving: holding its first lock,
//! each worker waits until the other holds its first lock too, or waits for
//! the one it holds; only then does it ask for its second, with `--timeout`.
//! So a fix whose orders are still opposite fails on every run ("the fix
//! deadlocks"). The parent shows the loser asleep at A, holding nothing, for
//! `--window` s; then both take the two locks `--rounds` times and the parent
//! checks the count under each lock.
//!
//! What to observe, while the parent says one worker waits for A:
//! `ps -o pid,ppid,stat,wchan:20,comm --ppid <pid>` shows it in `S`, the other in `S` too
//! (waiting for the parent, holding both locks).
//!
//! ```text
//! cargo run -p deadlock --example deadlock_lock_order
//! cargo run -p deadlock --example deadlock_lock_order -- --window 30
//! ```
//!
//! The chapter (Coffman's four conditions, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::{exit_code, spawn};
use common::{describe, procfs, say, warn, Mutex, Shared};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res {
    let (rounds, timeout) = (args.rounds, Duration::from_secs_f64(args.timeout));
    let backend = common::BACKEND;
    say!("{backend} locks; worker 1 asks for A then B, worker 2 for B then A");
    let (a, b) = (Mutex::shared(0u64)?, Mutex::shared(0u64)?);
    let locks: Locks = [("A", &a), ("B", &b)];
    let window = args.pace.secs(args.window);
    let patience = SAFETY + window + timeout;
    let start = Shared::new(Start::default())?;
    // common::fork::spawn flushes stdout, forks, sets PDEATHSIG, runs this, _exits.
    let work = |me| in_global_order(me, locks, &start, rounds, timeout, patience);
    let mut workers = [
        spawn("worker 1", || work(0))?,
        spawn("worker 2", || work(1))?,
    ];

    // Round 1: whoever took A first takes B too and waits for the parent;
    // the other waits for A. Unless a worker failed (the fix deadlocks).
    let deadline = Instant::now() + patience;
    while start.holder.load(SeqCst) == 0 {
        if workers[0].try_wait()?.is_some() || workers[1].try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("no worker took both locks within {patience:?}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Some(holder) = (start.holder.load(SeqCst) as usize).checked_sub(1) {
        let (holder, pid) = (workers[holder].raw(), workers[1 - holder].raw());
        if let Err(last) = procfs::wait_for(pid, SAFETY, |s| s.is_some_and(|s| s.state == 'S'))? {
            let last = last.map(|s| s.state);
            return Err(format!("worker {pid} is not asleep waiting for A: {last:?}").into());
        }
        let wchan = procfs::wchan(pid)?.unwrap_or_else(|| "the kernel (wchan hidden)".into());
        say!(
            "worker {holder} holds A and B; worker {pid} waits for A, holding nothing: \
              state S, asleep in {wchan}"
        );
        say!("no cycle: nobody holds B while it waits for A");
        let me = std::process::id();
        say!("see it yourself: ps -o pid,ppid,stat,wchan:20,comm --ppid {me}");
        std::thread::sleep(window);
        start.looked.store(true, SeqCst);
    }

    // A generous limit: a millisecond per round on top of the floor.
    let limit = patience + Duration::from_millis(rounds);
    for (i, w) in workers.iter_mut().enumerate() {
        let late = || format!("worker {} still runs after {limit:?}", i + 1);
        let status = w.wait_timeout(limit)?.ok_or_else(late)?;
        if exit_code(status) != Some(0) {
            return Err(format!("worker {} {}", i + 1, describe(status)).into());
        }
    }
    // Every round of both workers went through both locks.
    let (in_a, in_b) = (*a.lock_within(SAFETY)?, *b.lock_within(SAFETY)?);
    if in_a != 2 * rounds || in_b != 2 * rounds {
        return Err(format!("counted {in_a} rounds under A and {in_b} under B").into());
    }
    say!("both workers finished: {in_a} rounds under A and B, no deadlock");
    say!("all checks passed");
    Ok(())
}

/// Worker `me`: asks for lock `me` then the other, takes them in name order.
fn in_global_order(
    me: usize,
    locks: Locks,
    start: &Start,
    rounds: u64,
    timeout: Duration,
    patience: Duration,
) -> Res {
    let (x, y) = (locks[me], locks[1 - me]);
    // The fix: one order for everybody, here the order of the names.
    let ((first_name, first), (second_name, second)) = if x.0 <= y.0 { (x, y) } else { (y, x) };
    say!(
        "asked for {} then {}; taking {first_name} then {second_name}",
        x.0,
        y.0
    );
    let lock = |m: &'static str| move |e: std::io::Error| format!("lock {m}: {e}");

    // Round 1, forced into the lesson's interleaving: holding its first lock,
    // each waits until the other holds its first lock too, or waits for the
    // one this worker holds. Were the orders opposite, both would now hold
    // one lock and ask for the other, on every run, and the timed wait below
    // would report it. In one order the other is stuck at its first lock.
    let letter = |name: &str| u32::from(name.as_bytes()[0]);
    start.asking[me].store(letter(first_name), SeqCst);
    let mut g1 = first.lock_within(patience).map_err(lock(first_name))?;
    start.holding[me].store(true, SeqCst);
    wait_until(
        "the other worker to hold its first lock or wait for mine",
        || {
            start.holding[1 - me].load(SeqCst)
                || start.asking[1 - me].load(SeqCst) == letter(first_name)
        },
    )?;
    let mut g2 = second.lock_within(timeout).map_err(|e| {
        let secs = timeout.as_secs_f64();
        format!(
            "holding {first_name}, no {second_name} within {secs:.1} s ({e}): the fix deadlocks"
        )
    })?;
    (*g1, *g2) = (*g1 + 1, *g2 + 1);
    // The first to hold both, while the other waits for the lock it took
    // first (holding nothing), shows that to the parent.
    let waits_for_mine = start.asking[1 - me].load(SeqCst) == letter(first_name);
    if waits_for_mine
        && start
            .holder
            .compare_exchange(0, 1 + me as u32, SeqCst, SeqCst)
            .is_ok()
    {
        say!("holding {first_name} and {second_name}, waiting for the parent to look");
        let deadline = Instant::now() + patience;
        while !start.looked.load(SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop((g1, g2));

    for _ in 1..rounds {
        let mut g1 = first.lock_within(patience).map_err(lock(first_name))?;
        let mut g2 = second.lock_within(patience).map_err(lock(second_name))?;
        (*g1, *g2) = (*g1 + 1, *g2 + 1);
    }
    say!("took {first_name} then {second_name} {rounds} times");
    Ok(())
}

type Res = Result<(), Box<dyn Error>>;
type Locks<'a> = [(&'static str, &'a Mutex<u64>); 2]; // each lock with its name

/// What the workers tell each other and the parent, in shared memory.
#[derive(Default)]
struct Start {
    asking: [AtomicU32; 2], // per worker: the letter of the lock it asks for first
    holding: [AtomicBool; 2], // per worker: it holds its first lock
    holder: AtomicU32,      // 1 + the worker that took both locks first
    looked: AtomicBool,     // set by the parent once it has shown the waiter
}

/// Check `done` every millisecond, for at most [`SAFETY`].
fn wait_until(what: &str, done: impl Fn() -> bool) -> Res {
    let deadline = Instant::now() + SAFETY;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("waited {SAFETY:?} for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Demonstrate how one global lock order prevents a deadlock.
#[derive(Parser)]
struct Args {
    /// Times each worker takes both locks (1-100000)
    #[arg(long, value_name = "N", default_value_t = 1000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rounds: u64,
    /// Seconds a worker waits for its second lock in round 1 before it calls it a deadlock, not scaled by the pace (0.5-60)
    #[arg(long, value_name = "X", default_value_t = 2.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.5, 60.0))]
    timeout: f64,
    /// Seconds the parent shows the waiting worker for you to look, scaled by the pace (0-600)
    #[arg(long, value_name = "X", default_value_t = 1.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 600.0))]
    window: f64,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the system gets to start a worker or reach a state; not scaled by the pace.
const SAFETY: Duration = Duration::from_secs(30);
