//! Demonstrate how try-lock with back-off prevents the deadlock of `cargo run -p deadlock`.
//!
//! Worker 1 takes A then B, worker 2 takes B then A, the opposite orders of
//! the lesson, but each blocks only for its first lock and takes the second
//! with `try_lock`. When the second is taken, it releases the first, waits a
//! random moment (up to 200 µs) and starts over: nobody waits while it holds
//! a lock. The parent sets up the lesson's first step on purpose: both hold
//! their first lock (shown for `--window` s) before either tries its second,
//! so at least one back-off must happen; the program fails if none did. Then
//! both take the two locks `--rounds` times and the parent checks the count
//! under each lock.
//!
//! What to observe: the back-off counts, which differ from run to run
//! (`--rounds 100000`), while the counts under A and B are always exact.
//!
//! ```text
//! cargo run -p deadlock --example deadlock_back_off
//! cargo run -p deadlock --example deadlock_back_off -- --rounds 100000
//! ```
//!
//! The chapter (Coffman's four conditions, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::{exit_code, spawn};
use common::{describe, say, warn, Locked, Mutex, Shared};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res {
    let rounds = args.rounds;
    let backend = common::BACKEND;
    say!("{backend} locks; worker 1 takes A then B, worker 2 takes B then A");
    let (a, b) = (Mutex::shared(0u64)?, Mutex::shared(0u64)?);
    let locks: Locks = [("A", &a), ("B", &b)];
    let window = args.pace.secs(args.window);
    let patience = SAFETY + window;
    let start = Shared::new(Start::default())?;
    // common::fork::spawn flushes stdout, forks, sets PDEATHSIG, runs this, _exits.
    let work = |me| with_back_off(me, locks, &start, rounds, patience);
    let mut workers = [
        spawn("worker 1", || work(0))?,
        spawn("worker 2", || work(1))?,
    ];

    // The set-up conflict: both hold their first lock, as in the lesson.
    wait_until("both workers to hold their first lock", SAFETY, || {
        start.ready.load(SeqCst) == 2
    })?;
    say!("both workers hold their first lock (A and B): the deadlock's first step");
    say!("neither will wait for its second lock while it holds the first");
    std::thread::sleep(window);
    start.go.store(true, SeqCst);

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
    let backoffs = start.backoffs.load(SeqCst);
    say!("both workers finished: {in_a} rounds under A and B, {backoffs} back-off(s)");
    if backoffs == 0 {
        return Err("nobody backed off, although both held their first lock".into());
    }
    say!("all checks passed");
    Ok(())
}

/// Worker `me`: block for lock `me` only; if the other is taken, release,
/// wait a random moment, and start over.
fn with_back_off(me: usize, locks: Locks, start: &Start, rounds: u64, patience: Duration) -> Res {
    let ((first_name, first), (second_name, second)) = (locks[me], locks[1 - me]);
    say!("taking {first_name} then {second_name}, with try_lock for {second_name}");
    let mut jitter = Jitter::new();
    let (mut backoffs, mut met) = (0, false);
    for _ in 0..rounds {
        let deadline = Instant::now() + patience;
        loop {
            let lock = |e: std::io::Error| format!("lock {first_name}: {e}");
            let mut g1 = first.lock_within(patience).map_err(lock)?;
            if !met {
                // Set up the lesson's situation once: both hold their first
                // lock, so whoever tries its second first finds it taken.
                start.ready.fetch_add(1, SeqCst);
                wait_until("the parent's go", patience, || start.go.load(SeqCst))?;
                met = true;
            }
            match second.try_lock()? {
                Some(Locked::Acquired(mut g2)) => {
                    (*g1, *g2) = (*g1 + 1, *g2 + 1);
                    break;
                }
                Some(Locked::OwnerDied(_)) => {
                    return Err(format!("lock {second_name}: its holder died").into())
                }
                None => {
                    drop(g1);
                    backoffs += 1;
                    if backoffs == 1 {
                        say!("lock {second_name} is taken: released {first_name}, backing off");
                    }
                    if Instant::now() > deadline {
                        return Err(format!("no round done in {patience:?}: a livelock?").into());
                    }
                    std::thread::sleep(jitter.up_to(Duration::from_micros(200)));
                }
            }
        }
    }
    start.backoffs.fetch_add(backoffs, SeqCst);
    say!("took {first_name} and {second_name} {rounds} times, backing off {backoffs} time(s)");
    Ok(())
}

type Res = Result<(), Box<dyn Error>>;
type Locks<'a> = [(&'static str, &'a Mutex<u64>); 2]; // each lock with its name

/// What the workers tell each other and the parent, in shared memory.
#[derive(Default)]
struct Start {
    ready: AtomicU32,    // workers holding their first lock, before any try
    go: AtomicBool,      // set by the parent once it has shown them
    backoffs: AtomicU64, // both workers' back-offs
}

/// A few random bits without a crate: xorshift, seeded from the PID and the
/// clock, so that the two workers wait for different times.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Jitter((u64::from(std::process::id()) << 32 | u64::from(nanos)) | 1)
    }

    fn up_to(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        max.mul_f64((self.0 % 1024) as f64 / 1023.0)
    }
}

/// Check `done` every millisecond, for at most `limit`.
fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) -> Res {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("waited {limit:?} for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Demonstrate how try-lock with back-off prevents a deadlock.
#[derive(Parser)]
struct Args {
    /// Times each worker takes both locks (1-100000)
    #[arg(long, value_name = "N", default_value_t = 1000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rounds: u64,
    /// Seconds the parent shows both workers holding their first lock, scaled by the pace (0-600)
    #[arg(long, value_name = "X", default_value_t = 1.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 600.0))]
    window: f64,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the system gets to start a worker or reach a state; not scaled by the pace.
const SAFETY: Duration = Duration::from_secs(30);
