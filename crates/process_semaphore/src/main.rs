//! Demonstrate how a counting semaphore shared by processes limits how many
//! of them use a resource at the same time.
//!
//! `--workers` processes (10) want a resource that at most `--permits` (3)
//! may use at once. Each worker says it is waiting, takes a permit
//! (`sem_wait`), uses the resource for a while, and gives the permit back
//! (`sem_post`). In shared memory the workers count how many hold a permit
//! right now and the most that ever did at once. At the end the parent checks
//! both sides of the promise: that number never went above the permits, and
//! it did reach them (or the number of workers, if there are fewer).
//!
//! Reaching the bound must not rest on lucky timing: at `--pace 0` a worker
//! could take a permit and give it back before the next one even starts. So
//! a holder keeps its permit until the room has been full (`permits` holders
//! at once) while it was inside, or nobody is left waiting. This cannot
//! deadlock: while the room is not full and someone still waits, a permit is
//! free for them to take.
//!
//! Key points:
//! - A semaphore is a counter of free permits: `sem_wait` takes one, or
//!   sleeps while there are none; `sem_post` puts one back and wakes a
//!   sleeper. With one permit it is a lock; with N it admits N at once.
//! - Here it is an unnamed semaphore (`sem_init` with `pshared = 1`) in a
//!   `MAP_SHARED` mapping made before `fork`: the children share it, and there
//!   is no name in `/dev/shm` to clean up. The seed's C++ opens
//!   `/semaphore_example` with `O_CREAT` and no `O_EXCL`, never checks the
//!   result, and leaves the name behind if it is killed.
//! - Count the holders *inside* the permit: add one after `sem_wait`, take
//!   one off before `sem_post`. Counted outside, the number could show four
//!   holders of three permits while the semaphore works fine.
//! - Every worker is a separate process with its own copy of memory; only
//!   what lives in the shared mapping (the semaphore, the counters) is seen
//!   by all. The counters are atomics, since several workers change them at
//!   once.
//! - The workers are forked from a single-threaded parent (`common::fork`
//!   refuses otherwise: the child of a multithreaded process may only make
//!   async-signal-safe calls) and leave with `_exit`, so no destructor runs
//!   in them: the semaphore is destroyed once, by the parent, at the end.
//!
//! What to observe, in another terminal, at `--pace 2`:
//! `ps -o pid,stat,wchan:20,comm --ppid <parent pid>` shows three workers
//! sleeping in a timer (using the resource) and the others in a futex wait
//! (waiting for a permit).
//!
//! The pitfall: a semaphore has no owner. Any process may post it, and when
//! a holder dies, nobody gives its permit back: the count is one short for
//! good, and with enough deaths everyone waits forever. So every wait here
//! has a timeout (`sem_timedwait`), and a lock that must survive its holder's
//! death is a robust mutex, not a semaphore (see `process_lock`).
//!
//! Seed example: 11, process semaphore (C++ named `sem_open`, Python
//! `multiprocessing.Semaphore` with a `Pool`).
//!
//! Run with:
//! ```text
//! cargo run -p process_semaphore
//! cargo run -p process_semaphore -- --workers 6 --permits 2 --pace 2
//! ```
//!
//! Try it:
//! - Create the semaphore with `permits + 1` and keep the check at
//!   `permits`: the lesson fails, naming the number of holders it saw.
//! - Remove the "keep the permit until the room has been full" wait; run at
//!   `--pace 0` a few times: the most holders at once drops below the permits
//!   now and then, which is why the lesson does not leave it to chance.
//! - Kill one worker with `kill -9` while it holds a permit (`--pace 4`):
//!   the others slow down to two at a time, and the run ends in an error.
//!
//! See also: `process_lock` (one permit, with an owner), `deadlock`,
//! `process_barrier` (everyone waits for everyone).

use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn};
use common::opts::{Args, Opt, Spec};
use common::{describe, say, warn, Semaphore, Shared};

const SPEC: Spec = Spec {
    name: "process_semaphore",
    about: "Demonstrate how a counting semaphore shared by processes limits how many use a \
            resource at once.",
    options: &[
        Opt::int("workers", "processes that want the resource", 10, 1, 32),
        Opt::int("permits", "how many may use it at once", 3, 1, 16),
        Opt::float(
            "hold",
            "seconds a worker uses the resource (some up to half again as long)",
            0.5,
            0.0,
            10.0,
        ),
    ],
};

/// How long the system gets for what the lesson waits for, on top of the
/// time the workers spend holding the resource. A safety floor, not scaled
/// by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(30);

/// What the workers record about the resource, in shared memory.
#[derive(Default)]
struct Room {
    /// Workers holding a permit right now.
    holders: AtomicU32,
    /// The most holders there ever were at once.
    most: AtomicU32,
    /// How many times a worker coming in made the room full.
    fills: AtomicU32,
    /// Workers that have not had a permit yet.
    not_yet_in: AtomicU32,
    /// Workers that had their turn and gave the permit back.
    served: AtomicU32,
}

fn main() {
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    let workers = args.int("workers") as u32;
    let permits = args.int("permits") as u32;
    let hold = pace.secs(args.float("hold"));
    // Enough for every worker to wait its turn, at the longest hold.
    let patience = SYSTEM_TIMEOUT + hold.mul_f64(1.5) * workers;
    say!(
        "{workers} workers, {permits} permits; semaphore back end: {}",
        common::BACKEND
    );

    // Made before the forks, so that every worker shares them.
    let sem = Semaphore::shared(permits)?;
    let room = Shared::new(Room {
        not_yet_in: AtomicU32::new(workers),
        ..Room::default()
    })?;

    let mut team = Vec::new();
    for i in 1..=workers {
        // Holds of different lengths, as the seed's random ones, but the
        // same on every run.
        let hold = hold.mul_f64(1.0 + f64::from(i % 5) / 8.0);
        team.push(spawn(&format!("worker {i}"), || {
            worker(&sem, &room, permits, hold, patience)
        })?);
    }
    say!(
        "see them yourself: ps -o pid,stat,wchan:20,comm --ppid {}",
        std::process::id()
    );

    let mut failed = 0;
    for (i, child) in team.iter_mut().enumerate() {
        let status = child
            .wait_timeout(patience)?
            .ok_or_else(|| format!("worker {} still runs after {patience:?}", i + 1))?;
        if exit_code(status) != Some(0) {
            warn!("worker {} {}", i + 1, describe(status));
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(format!("{failed} worker(s) failed").into());
    }

    let most = room.most.load(Ordering::SeqCst);
    let expected = permits.min(workers);
    say!("the most holders at once: {most} (permits: {permits}, workers: {workers})");
    if most > permits {
        return Err(
            format!("{most} workers held the resource at once: the limit is {permits}").into(),
        );
    }
    if most < expected {
        return Err(format!("never {expected} holders at once, only {most}").into());
    }
    say!("never above the {permits} permits, and {expected} workers held it at once");
    let served = room.served.load(Ordering::SeqCst);
    if served != workers {
        return Err(format!("{served} of {workers} workers had their turn").into());
    }
    if sem.value() != permits {
        return Err(format!("{} of {permits} permits came back", sem.value()).into());
    }
    say!("every worker had its turn, and all {permits} permits came back");
    say!("all checks passed");
    Ok(())
}

fn worker(
    sem: &Semaphore,
    room: &Room,
    permits: u32,
    hold: Duration,
    patience: Duration,
) -> Result<(), Box<dyn Error>> {
    say!("waiting for a permit");
    if !sem.wait_timeout(patience)? {
        return Err(format!("no permit within {patience:?}").into());
    }
    let now = room.holders.fetch_add(1, Ordering::SeqCst) + 1;
    room.most.fetch_max(now, Ordering::SeqCst);
    // The fills so far; if this worker made the room full, one more follows.
    let fills_before = if now >= permits {
        room.fills.fetch_add(1, Ordering::SeqCst)
    } else {
        room.fills.load(Ordering::SeqCst)
    };
    room.not_yet_in.fetch_sub(1, Ordering::SeqCst);
    say!("acquired a permit: {now} holder(s) now");

    // Using the resource.
    std::thread::sleep(hold);

    // Keep the permit until the room has been full while this worker was
    // in it, or nobody is left waiting, so that the limit is reached at any
    // pace (see the header).
    let full_or_last = wait_until(patience, || {
        room.fills.load(Ordering::SeqCst) > fills_before
            || room.not_yet_in.load(Ordering::SeqCst) == 0
    });

    let left = room.holders.fetch_sub(1, Ordering::SeqCst) - 1;
    room.served.fetch_add(1, Ordering::SeqCst);
    sem.post()?;
    say!("released the permit: {left} holder(s) left");
    full_or_last
}

/// Check `done` every millisecond, for at most `timeout`.
fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("the room neither filled nor emptied within {timeout:?}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
