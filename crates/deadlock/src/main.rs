//! Demonstrate how two processes that take the same two locks in opposite
//! order deadlock, and how a lock timeout detects it.
//!
//! Worker 1 takes lock A, then wants B; worker 2 takes B, then wants A. Once both hold their
//! first lock (the seed sleeps a second and hopes), each asks for the other's, with a timeout.
//! The parent finds both asleep in `/proc` (state `S`), leaves them so for `--window` s, then
//! lets them time out: each reports the deadlock, lets go of its lock and ends. Else: exit 1.
//!
//! What to observe, while both are blocked: `ps -o pid,stat,wchan:20,comm --ppid <pid>`: two `S`.
//!
//! ```text
//! cargo run -p deadlock
//! cargo run -p deadlock -- --window 30                  # time to look with ps
//! cargo run -p deadlock --example deadlock_lock_order   # fix 1: one global order
//! cargo run -p deadlock --example deadlock_back_off     # fix 2: try-lock, back off
//! ```
//!
//! The chapter (Coffman's four conditions, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::{exit_code, spawn};
use common::{describe, procfs, say, warn, Locked, Mutex, Shared};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res {
    let timeout = Duration::from_secs_f64(args.timeout);
    let backend = common::BACKEND;
    say!("{backend} locks; worker 1 takes A then B, worker 2 takes B then A");
    // Process-shared locks in a MAP_SHARED mapping made before the forks: common makes
    // a robust PTHREAD_PROCESS_SHARED pthread mutex (POSIX back end) or a futex word.
    let (a, b) = (Mutex::shared(0u64)?, Mutex::shared(0u64)?);
    let locks: Locks = [("A", &a), ("B", &b)];
    let board = Shared::new(Board::default())?;
    let window = args.pace.secs(args.window);
    board.window_ms.store(window.as_millis() as u64, SeqCst);
    // common::fork::spawn flushes stdout, forks, sets PDEATHSIG, runs this, _exits.
    let mut workers = [
        spawn("worker 1", || hold_and_wait(0, locks, &board, timeout))?,
        spawn("worker 2", || hold_and_wait(1, locks, &board, timeout))?,
    ];
    // Both have asked for their second lock: /proc must show them asleep (S), not spinning.
    wait_until("both workers to ask for their second lock", || {
        board.asking.iter().all(|f| f.load(SeqCst))
    })?;
    for (pid, holds, wants) in [(workers[0].raw(), "A", "B"), (workers[1].raw(), "B", "A")] {
        if let Err(last) = procfs::wait_for(pid, SAFETY, |s| s.is_some_and(|s| s.state == 'S'))? {
            let last = last.map(|s| s.state);
            return Err(format!("worker {pid} not asleep waiting for {wants}: {last:?}").into());
        }
        let wchan = procfs::wchan(pid)?.unwrap_or_else(|| "the kernel (wchan hidden)".into());
        say!("worker {pid} holds {holds} and waits for {wants}: state S, asleep in {wchan}");
    }
    say!("both workers are blocked: each waits for a lock the other holds");
    let me = std::process::id();
    say!("see it yourself: ps -o pid,ppid,stat,wchan:20,comm --ppid {me}");
    std::thread::sleep(window);
    board.looked.store(true, SeqCst);
    for (i, w) in workers.iter_mut().enumerate() {
        let late = || format!("worker {} still runs after {:?}", i + 1, SAFETY + timeout);
        let status = w.wait_timeout(SAFETY + timeout)?.ok_or_else(late)?;
        if exit_code(status) != Some(0) {
            return Err(format!("worker {} {}", i + 1, describe(status)).into());
        }
    }
    // Both let go: the locks are free again, not left behind by a holder that died.
    let free = |m: &Mutex<u64>| matches!(m.try_lock(), Ok(Some(Locked::Acquired(_))));
    if !free(&a) || !free(&b) {
        return Err("a worker ended without releasing its lock".into());
    }
    say!("both workers detected the deadlock, let go of their lock and ended");
    say!("all checks passed");
    Ok(())
}

/// Worker `me`: hold lock `me`, meet the other, wait for the other lock with a timeout.
fn hold_and_wait(me: usize, locks: Locks, board: &Board, timeout: Duration) -> Res {
    let ((first_name, first), (second_name, second)) = (locks[me], locks[1 - me]);
    let held = first.lock_within(SAFETY)?;
    say!("holding lock {first_name}");
    board.holding_first.fetch_add(1, SeqCst);
    // From here on each holds what the other needs.
    let holding = &board.holding_first;
    wait_until("the other's first lock", || holding.load(SeqCst) == 2)?;
    let secs = timeout.as_secs_f64();
    say!("asking for lock {second_name}, for at most {secs:.1} s");
    board.asking[me].store(true, SeqCst);
    let asked = Instant::now();
    let mut got = second.lock_timeout(timeout)?;
    // Timed out before the parent looked? Wait on, in slices: what it sees must not rest on speed.
    let patience = SAFETY + Duration::from_millis(board.window_ms.load(SeqCst));
    while got.is_none() && !board.looked.load(SeqCst) && asked.elapsed() < patience {
        got = second.lock_timeout(Duration::from_millis(50))?;
    }
    if got.is_some() {
        return Err(format!("got lock {second_name} after all: no deadlock").into());
    }
    let waited = asked.elapsed().as_secs_f64();
    say!("no lock {second_name} after {waited:.1} s: deadlock, giving up");
    board.gave_up[me].store(true, SeqCst);
    // One side letting go would break the cycle; waiting for the other's verdict lets both report.
    let other = &board.gave_up[1 - me];
    wait_until("the other worker to give up", || other.load(SeqCst))?;
    drop(held);
    say!("released lock {first_name}");
    Ok(())
}

type Res = Result<(), Box<dyn Error>>;
type Locks<'a> = [(&'a str, &'a Mutex<u64>); 2]; // each lock with its name

/// What the workers tell each other and the parent, in shared memory.
#[derive(Default)]
struct Board {
    holding_first: AtomicU32, // workers holding their first lock
    asking: [AtomicBool; 2],  // set just before asking for the second lock
    looked: AtomicBool,       // set by the parent once it has seen both blocked
    gave_up: [AtomicBool; 2], // set by a worker that timed out
    window_ms: AtomicU64,     // how long the parent looks (--window, scaled by the pace)
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

/// Demonstrate how two processes taking two locks in opposite order deadlock, and how a timeout detects it.
#[derive(Parser)]
struct Args {
    /// Seconds a worker waits for its second lock before it calls it a deadlock, not scaled by the pace (0.5-60)
    #[arg(long, value_name = "X", default_value_t = 2.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.5, 60.0))]
    timeout: f64,
    /// Seconds the parent leaves the deadlock in place for you to look, scaled by the pace (0-600)
    #[arg(long, value_name = "X", default_value_t = 3.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 600.0))]
    window: f64,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the system gets to start a worker or reach a state; not scaled by the pace.
const SAFETY: Duration = Duration::from_secs(30);
