//! Demonstrate how a counting semaphore shared by processes limits how many
//! of them use a resource at the same time.
//!
//! `--workers` processes (10) want a resource that at most `--permits` (3)
//! may use at once. Each waits for a permit, uses the resource a while and
//! gives the permit back, counting the holders in shared memory. The parent
//! checks that the most holders at once equals the permits and never
//! exceeds them; whoever fills the room tries for one more permit, so a
//! semaphore that admits too many is caught.
//!
//! What to observe at `--pace 2`: `ps -o pid,stat,wchan:20,comm --ppid <pid>`
//! shows the holders sleeping in a timer, the others waiting for a permit.
//!
//! ```text
//! cargo run -p process_semaphore
//! cargo run -p process_semaphore -- --workers 6 --permits 2 --pace 2
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::{exit_code, spawn};
use common::{describe, say, warn, Semaphore, Shared};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res {
    let (workers, permits, hold) = (args.workers, args.permits, args.pace.secs(args.hold));
    let patience = SYSTEM_TIMEOUT + hold.mul_f64(1.5) * workers; // all turns, longest holds
    let backend = common::BACKEND;
    say!("{workers} workers, {permits} permits; back end: {backend}");
    // In a MAP_SHARED mapping made before the forks, so every worker shares
    // them. common makes the call: sem_init(sem, 1, permits) (POSIX back
    // end) or a futex word set to `permits` (futex back end).
    let sem = Semaphore::shared(permits)?;
    let room = Shared::new(Room::default())?;
    room.not_yet_in.store(workers, SeqCst);

    // common::fork::spawn flushes stdout, forks (refusing if threaded), sets
    // PR_SET_PDEATHSIG, runs the closure and leaves with _exit (1 on an error).
    let mut team = Vec::new();
    for i in 1..=workers {
        // Holds of different lengths, as the seed's random ones, but fixed.
        let hold = hold.mul_f64(1.0 + f64::from(i % 5) / 8.0);
        let work = || worker(&sem, &room, permits, hold, patience);
        team.push(spawn(&format!("worker {i}"), work)?);
    }
    let me = std::process::id();
    say!("see them yourself: ps -o pid,stat,wchan:20,comm --ppid {me}");

    let mut failed = 0;
    for (i, child) in team.iter_mut().enumerate() {
        let late = || format!("worker {} still runs after {patience:?}", i + 1);
        let status = child.wait_timeout(patience)?.ok_or_else(late)?;
        if exit_code(status) != Some(0) {
            warn!("worker {} {}", i + 1, describe(status));
            failed += 1;
        }
    }

    // The claim, checked first: a worker that failed may have seen too many.
    let most = room.most.load(SeqCst);
    let expected = permits.min(workers);
    say!("the most holders at once: {most} (permits: {permits}, workers: {workers})");
    if most > permits {
        return Err(format!("{most} holders at once: the limit is {permits}").into());
    }
    if failed > 0 {
        return Err(format!("{failed} worker(s) failed").into());
    }
    if most < expected {
        return Err(format!("never {expected} holders at once, only {most}").into());
    }
    say!("never above the {permits} permits, and {expected} workers held it at once");
    if sem.value() != permits {
        return Err(format!("{} of {permits} permits came back", sem.value()).into());
    }
    say!("every worker had its turn, and all {permits} permits came back");
    say!("all checks passed");
    Ok(())
}

fn worker(sem: &Semaphore, room: &Room, permits: u32, hold: Duration, patience: Duration) -> Res {
    say!("waiting for a permit");
    if !sem.wait_timeout(patience)? {
        return Err(format!("no permit within {patience:?}").into());
    }
    // Count inside the permit: one more after the wait, one less before the post.
    let now = room.holders.fetch_add(1, SeqCst) + 1;
    room.most.fetch_max(now, SeqCst);
    say!("acquired a permit: {now} holder(s) now");
    if now == permits && sem.try_wait()? {
        // Room full: a permit now is one too many, or one given back since
        // (a holder leaves before it posts). Count it, so too many shows.
        let over = room.holders.fetch_add(1, SeqCst) + 1;
        room.most.fetch_max(over, SeqCst);
        room.holders.fetch_sub(1, SeqCst);
        sem.post()?;
    }
    // The fills so far; if this worker made the room full, one more follows.
    let fills_before = room.fills.fetch_add(u32::from(now >= permits), SeqCst);
    room.not_yet_in.fetch_sub(1, SeqCst);
    // Use the resource, then keep the permit until the room has been full
    // since, or nobody waits: the limit is reached at any pace, without luck.
    std::thread::sleep(hold);
    let deadline = Instant::now() + patience;
    while room.fills.load(SeqCst) == fills_before && room.not_yet_in.load(SeqCst) > 0 {
        if Instant::now() > deadline {
            return Err(format!("room neither full nor empty in {patience:?}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let left = room.holders.fetch_sub(1, SeqCst) - 1;
    sem.post()?;
    say!("released the permit: {left} holder(s) left");
    Ok(())
}

type Res = Result<(), Box<dyn Error>>;

/// What the workers record about the resource, in shared memory.
#[derive(Default)]
struct Room {
    holders: AtomicU32,    // holding a permit right now
    most: AtomicU32,       // the most holders there ever were at once
    fills: AtomicU32,      // times a worker coming in made the room full
    not_yet_in: AtomicU32, // workers that have not had a permit yet
}

/// Demonstrate how a counting semaphore shared by processes limits how many use a resource at once.
#[derive(Parser)]
struct Args {
    /// Processes that want the resource (1-32)
    #[arg(long, value_name = "N", default_value_t = 10, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=32))]
    workers: u32,
    /// How many may use it at once (1-16)
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    permits: u32,
    /// Seconds a worker uses the resource, some up to half again as long, scaled by the pace (0-10)
    #[arg(long, value_name = "X", default_value_t = 0.5, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 10.0))]
    hold: f64,
    #[command(flatten)]
    pace: common::Pace,
}

/// Time for the system on top of the workers' holds; not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(30);
