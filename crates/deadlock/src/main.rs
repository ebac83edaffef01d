//! Demonstrate how two processes that take the same two locks in opposite
//! order deadlock, how a lock timeout detects it, and two ways to prevent it.
//!
//! Part 1, the deadlock: worker 1 takes lock A and then wants B; worker 2
//! takes B and then wants A. They meet once both hold their first lock (a
//! rendezvous in shared memory, where the seed sleeps one second and hopes),
//! then each asks for the other's lock, with a timeout. The parent waits until
//! both have asked and finds both in state `S` in `/proc`: asleep in the
//! kernel, not spinning. It leaves them so for a moment (`--window`), then
//! lets them time out: each reports the deadlock, lets go of its lock and
//! ends.
//!
//! Part 2, fix 1, one global lock order: both workers take A before B,
//! whatever order their code asks for them in. A cycle of waits needs someone
//! who holds B and waits for A, and now nobody does. The first round is
//! forced into part 1's interleaving (each holds its first lock before it
//! asks for its second, or waits at the one the other holds), so a fix that
//! still takes opposite orders deadlocks on every run, and the lesson says
//! so and fails. Both take the two locks `--rounds` times and finish.
//!
//! Part 3, fix 2, try-lock with back-off: the workers keep their opposite
//! orders but take the second lock with `try_lock`; when it is taken, they
//! release the first, wait a random moment and start over. The lesson sets up
//! the first step of the deadlock on purpose, so at least one back-off
//! happens, and both workers still finish.
//!
//! The four conditions for a deadlock (Coffman, 1971), all needed at once:
//! 1. Mutual exclusion: a lock has one holder at a time.
//! 2. Hold and wait: a process holds one lock while it waits for another.
//! 3. No preemption: nobody can take a lock away from its holder.
//! 4. Circular wait: a cycle of processes, each waiting for a lock that the
//!    next one holds.
//!
//! Break any one of them and deadlock cannot happen. The global order breaks
//! circular wait; try-lock with back-off breaks hold and wait (a worker never
//! waits while it holds). The timeout of part 1 prevents nothing: it detects,
//! and the worker recovers by giving its lock up (a preemption of its own).
//!
//! Key points:
//! - The locks are `common::Mutex`es, process-shared, in a `MAP_SHARED`
//!   mapping made before `fork`: robust pthread mutexes (POSIX back end) or a
//!   futex word (futex back end). A blocked waiter sleeps in the kernel's
//!   futex wait, state `S`, and the futex back end sleeps in slices with
//!   timeouts (checking that the holder still lives): also `S`. A deadlock
//!   costs no CPU, which is why it goes unnoticed: only a timeout, or a look
//!   from outside (`ps`, `/proc`), reveals it.
//! - Without timeouts it never ends: the seed's C++ (`sem_wait` on named
//!   semaphores) hangs for good, and when killed it leaves `/lock_a` and
//!   `/lock_b` in `/dev/shm`. Here nothing has a name, and every wait has a
//!   timeout.
//! - The children are forked from a single-threaded parent and leave with
//!   `_exit`; `common::fork` checks the first and does the second (and
//!   flushes stdout before forking).
//!
//! What to observe, in another terminal, while the parent says the workers
//! are blocked (`--window 30` gives you time):
//! `ps -o pid,ppid,stat,wchan:20,comm --ppid <parent pid>` shows both workers
//! in `S`, asleep in a futex wait. `scripts/deadlock.sh` does it for you.
//!
//! The pitfall: a timeout detects "waited too long", not a deadlock. Too
//! short, it calls a slow holder a deadlock; and a process that times out
//! must let go of what it holds, or the other side stays stuck. Back-off has
//! a trap of its own: two processes that back off for the same time retry in
//! lockstep and can fail forever (a livelock). The random wait breaks the tie.
//!
//! Seed example: 03, deadlock (C++ named semaphores and `sleep(1)`; Python
//! `multiprocessing.Lock`; both hang forever).
//!
//! Run with:
//! ```text
//! cargo run -p deadlock
//! cargo run -p deadlock -- --window 30     # time to look with ps
//! ```
//!
//! Try it:
//! - In part 1, drop the first lock as soon as the timeout expires, without
//!   waiting for the other worker's verdict: the other worker then gets its
//!   second lock after all (the lesson calls that an error). One side
//!   backing off is enough to break the cycle.
//! - In fix 2, make the back-off a fixed 100 µs for both workers and
//!   compare the back-off counts at `--rounds 100000` with the random wait's.
//! - In part 1, replace `lock_timeout` with `lock` (no timeout), as the seed
//!   does: nobody detects anything. After its safety limit the parent gives
//!   up on the workers, and dropping their `Child` handles kills and reaps
//!   them; `ps` shows nothing left.
//!
//! See also: `process_lock` (one lock, and a holder that dies with it),
//! `process_semaphore`.

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn};
use common::opts::{Args, Opt, Spec};
use common::{describe, procfs, say, warn, Child, Locked, Mutex, MutexGuard, Shared};

const SPEC: Spec = Spec {
    name: "deadlock",
    about: "Demonstrate how two processes taking two locks in opposite order deadlock, how a \
            timeout detects it, and two ways to prevent it.",
    options: &[
        Opt::float(
            "timeout",
            "seconds a worker waits for its second lock before it calls it a deadlock \
             (not scaled by --pace)",
            2.0,
            0.5,
            60.0,
        ),
        Opt::float(
            "window",
            "seconds the parent leaves the deadlock in place for you to look",
            3.0,
            0.0,
            600.0,
        ),
        Opt::int(
            "rounds",
            "times each worker takes both locks in the fixes",
            1000,
            1,
            100_000,
        ),
    ],
};

/// How long the system gets for what the lesson waits for (a worker to
/// start, to reach a state, to take a lock that is free). A safety floor,
/// not scaled by the pace.
const SAFETY: Duration = Duration::from_secs(30);

/// How long a worker that has timed out keeps waiting at a time, until the
/// parent has looked at the deadlock.
const SLICE: Duration = Duration::from_millis(50);

fn main() {
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    say!("lock back end: {}", common::BACKEND);
    deadlock(args)?;
    let rounds = args.int("rounds");
    let timeout = Duration::from_secs_f64(args.float("timeout"));
    fix(
        "fix 1: one global lock order (A before B, always)",
        rounds,
        timeout,
        in_global_order,
    )?;
    let backoffs = fix(
        "fix 2: try-lock with back-off (opposite orders, as in part 1)",
        rounds,
        timeout,
        with_back_off,
    )?;
    if backoffs == 0 {
        return Err("fix 2 never backed off, although the lesson set up the conflict".into());
    }
    say!("all checks passed");
    Ok(())
}

/// What the workers of part 1 tell each other and the parent.
#[derive(Default)]
struct Board {
    /// How many workers hold their first lock.
    holding_first: AtomicU32,
    /// Set by each worker just before it asks for its second lock.
    asking: [AtomicBool; 2],
    /// Set by the parent once it has seen both workers blocked.
    looked: AtomicBool,
    /// Set by each worker that gave up waiting for its second lock.
    gave_up: [AtomicBool; 2],
}

fn deadlock(args: &Args) -> Result<(), Box<dyn Error>> {
    let timeout = Duration::from_secs_f64(args.float("timeout"));
    let window = args.pace().secs(args.float("window"));
    say!("part 1: worker 1 takes A then B, worker 2 takes B then A");
    let a = Mutex::shared(0u64)?;
    let b = Mutex::shared(0u64)?;
    let board = Shared::new(Board::default())?;

    let mut workers = [
        spawn("worker 1", || {
            hold_and_wait(0, ("A", &a), ("B", &b), &board, timeout)
        })?,
        spawn("worker 2", || {
            hold_and_wait(1, ("B", &b), ("A", &a), &board, timeout)
        })?,
    ];

    // Both have asked for their second lock. Now wait for them to be
    // asleep in the kernel, as /proc tells it.
    wait_until("both workers to ask for their second lock", || {
        board.asking.iter().all(|f| f.load(Ordering::SeqCst))
    })?;
    for (w, holds, wants) in [(&workers[0], "A", "B"), (&workers[1], "B", "A")] {
        let pid = w.raw();
        match procfs::wait_for(pid, SAFETY, |s| s.is_some_and(|s| s.state == 'S'))? {
            Ok(_) => say!(
                "worker {pid} holds {holds} and waits for {wants}: state S, asleep in {}",
                // Where in the kernel it sleeps (/proc/<pid>/wchan).
                procfs::wchan(pid)?.unwrap_or_else(|| "the kernel (wchan hidden)".to_string())
            ),
            Err(last) => {
                return Err(format!(
                    "worker {pid} is not asleep waiting for {wants} (last state: {:?})",
                    last.map(|s| s.state)
                )
                .into())
            }
        }
    }
    say!("both workers are blocked: each waits for a lock the other holds");
    say!(
        "see it yourself: ps -o pid,ppid,stat,wchan:20,comm --ppid {}",
        std::process::id()
    );
    std::thread::sleep(window);
    board.looked.store(true, Ordering::SeqCst);

    reap_both(&mut workers, SAFETY + timeout)?;
    if !board.gave_up.iter().all(|f| f.load(Ordering::SeqCst)) {
        return Err("a worker ended without detecting the deadlock".into());
    }
    // Both let go: the locks are free again.
    if a.try_lock()?.is_none() || b.try_lock()?.is_none() {
        return Err("a lock is still taken after both workers ended".into());
    }
    say!("both workers detected the deadlock, let go of their lock and ended");
    Ok(())
}

/// Part 1's worker: hold the first lock, meet the other worker, then wait
/// for the second lock, which the other worker holds, with a timeout.
fn hold_and_wait(
    me: usize,
    (first_name, first): (&str, &Mutex<u64>),
    (second_name, second): (&str, &Mutex<u64>),
    board: &Board,
    timeout: Duration,
) -> Result<(), Box<dyn Error>> {
    let held = lock(first, first_name)?;
    say!("holding lock {first_name}");
    board.holding_first.fetch_add(1, Ordering::SeqCst);
    // From here on each holds what the other needs.
    wait_until("the other worker to take its first lock", || {
        board.holding_first.load(Ordering::SeqCst) == 2
    })?;
    say!(
        "asking for lock {second_name}, for at most {:.1} s",
        timeout.as_secs_f64()
    );
    board.asking[me].store(true, Ordering::SeqCst);
    let asked = Instant::now();
    let mut got = second.lock_timeout(timeout)?;
    // Timed out before the parent has looked: wait on, a slice at a time,
    // so that the demonstration does not depend on who is faster.
    while got.is_none() && !board.looked.load(Ordering::SeqCst) && asked.elapsed() < SAFETY {
        got = second.lock_timeout(SLICE)?;
    }
    if got.is_some() {
        return Err(format!("got lock {second_name} after all: no deadlock").into());
    }
    say!(
        "no lock {second_name} after {:.1} s: deadlock, giving up",
        asked.elapsed().as_secs_f64()
    );
    board.gave_up[me].store(true, Ordering::SeqCst);
    // One side letting go would be enough to break the cycle. Waiting for
    // the other's verdict first makes both of them report it.
    wait_until("the other worker to give up", || {
        board.gave_up[1 - me].load(Ordering::SeqCst)
    })?;
    drop(held);
    say!("released lock {first_name}");
    Ok(())
}

/// What a worker of the fixes does: take both locks `rounds` times, one
/// lock first, the other second, and say how often it backed off.
type Strategy =
    fn(usize, u64, (&str, &Mutex<u64>), (&str, &Mutex<u64>), &Start) -> Result<u64, Box<dyn Error>>;

/// A start line for the two workers of a fix, and their back-offs.
#[derive(Default)]
struct Start {
    ready: AtomicU32,
    backoffs: AtomicU64,
    /// Per worker: the first letter of the lock it is asking for first.
    asking: [AtomicU32; 2],
    /// Per worker: it holds its first lock.
    holding: [AtomicBool; 2],
    /// How long a worker waits for its second lock in a forced round.
    timeout: Duration,
}

impl Start {
    /// Wait until both workers have arrived here.
    fn meet(&self) -> Result<(), Box<dyn Error>> {
        self.ready.fetch_add(1, Ordering::SeqCst);
        wait_until("the other worker", || {
            self.ready.load(Ordering::SeqCst) >= 2
        })
    }
}

/// Run one fix: worker 1 asks for A then B, worker 2 for B then A, as in
/// part 1; `strategy` decides what they do with that. Returns the back-offs.
fn fix(
    title: &str,
    rounds: u64,
    timeout: Duration,
    strategy: Strategy,
) -> Result<u64, Box<dyn Error>> {
    say!("{title}");
    let a = Mutex::shared(0u64)?;
    let b = Mutex::shared(0u64)?;
    let start = Shared::new(Start {
        timeout,
        ..Start::default()
    })?;
    let run_worker = |me, first, second| {
        strategy(me, rounds, first, second, &start).map(|backoffs| {
            start.backoffs.fetch_add(backoffs, Ordering::SeqCst);
        })
    };
    let mut workers = [
        spawn("worker 1", || run_worker(0, ("A", &a), ("B", &b)))?,
        spawn("worker 2", || run_worker(1, ("B", &b), ("A", &a)))?,
    ];
    // A generous limit: a millisecond per round on top of the floor.
    reap_both(&mut workers, SAFETY + Duration::from_millis(rounds))?;

    // Every round of both workers went through both locks.
    let (in_a, in_b) = (*lock(&a, "A")?, *lock(&b, "B")?);
    if in_a != 2 * rounds || in_b != 2 * rounds {
        return Err(format!("counted {in_a} rounds under A and {in_b} under B").into());
    }
    let backoffs = start.backoffs.load(Ordering::SeqCst);
    say!(
        "both workers finished: {} rounds under A and B, {backoffs} back-off(s)",
        2 * rounds
    );
    Ok(backoffs)
}

/// Fix 1: take the locks in one global order (here: by name), whatever
/// order the caller asks for them in. Nobody holds B while waiting for A.
fn in_global_order(
    me: usize,
    rounds: u64,
    x: (&str, &Mutex<u64>),
    y: (&str, &Mutex<u64>),
    start: &Start,
) -> Result<u64, Box<dyn Error>> {
    let ((first_name, first), (second_name, second)) = if x.0 <= y.0 { (x, y) } else { (y, x) };
    say!(
        "asked for {} then {}; taking {first_name} then {second_name}",
        x.0,
        y.0
    );
    start.meet()?;
    // Round 1 is forced into part 1's interleaving: holding its first lock,
    // each worker waits until the other holds its first lock too, or waits
    // for the one this worker holds. Were the orders opposite, both would
    // now hold one lock and ask for the other, on every run, and the timed
    // wait below would report it. In one order the cycle cannot close: the
    // other worker is stuck at its first lock, the one this worker holds.
    let letter = |name: &str| u32::from(name.as_bytes()[0]);
    start.asking[me].store(letter(first_name), Ordering::SeqCst);
    let mut g1 = lock(first, first_name)?;
    start.holding[me].store(true, Ordering::SeqCst);
    wait_until(
        "the other worker to hold its first lock or wait for mine",
        || {
            start.holding[1 - me].load(Ordering::SeqCst)
                || start.asking[1 - me].load(Ordering::SeqCst) == letter(first_name)
        },
    )?;
    let mut g2 = second.lock_within(start.timeout).map_err(|e| {
        format!(
            "holding {first_name}, no {second_name} within {:.1} s ({e}): the fix deadlocks",
            start.timeout.as_secs_f64()
        )
    })?;
    (*g1, *g2) = (*g1 + 1, *g2 + 1);
    drop((g1, g2));
    for _ in 1..rounds {
        let mut g1 = lock(first, first_name)?;
        let mut g2 = lock(second, second_name)?;
        *g1 += 1;
        *g2 += 1;
    }
    say!("took {first_name} then {second_name} {rounds} times");
    Ok(0)
}

/// Fix 2: block for the first lock only. If the second is taken, release
/// the first, wait a random moment, and start over. Nobody waits while
/// holding a lock.
fn with_back_off(
    _me: usize,
    rounds: u64,
    (first_name, first): (&str, &Mutex<u64>),
    (second_name, second): (&str, &Mutex<u64>),
    start: &Start,
) -> Result<u64, Box<dyn Error>> {
    let mut jitter = Jitter::new();
    let mut backoffs = 0;
    let mut met = false;
    for _ in 0..rounds {
        let deadline = Instant::now() + SAFETY;
        loop {
            let mut g1 = lock(first, first_name)?;
            if !met {
                // Set up part 1's situation once: both hold their first
                // lock, so whoever tries its second lock first finds it taken.
                start.meet()?;
                met = true;
            }
            match second.try_lock()? {
                Some(Locked::Acquired(mut g2)) => {
                    *g1 += 1;
                    *g2 += 1;
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
                        return Err(format!("no round done in {SAFETY:?}: a livelock?").into());
                    }
                    std::thread::sleep(jitter.up_to(Duration::from_micros(200)));
                }
            }
        }
    }
    say!("took {first_name} and {second_name} {rounds} times, backing off {backoffs} time(s)");
    Ok(backoffs)
}

/// A few random bits without a crate: xorshift, seeded from the PID and
/// the clock, so the two workers wait for different times.
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

/// Lock `m`; a lock that stays taken for the whole safety floor is an
/// error, not a hang (and so is a holder that died holding it).
fn lock<'a>(m: &'a Mutex<u64>, name: &str) -> Result<MutexGuard<'a, u64>, Box<dyn Error>> {
    Ok(m.lock_within(SAFETY).map_err(|e| format!("{name}: {e}"))?)
}

/// Wait for both workers, each to exit 0.
fn reap_both(workers: &mut [Child; 2], limit: Duration) -> Result<(), Box<dyn Error>> {
    for (i, w) in workers.iter_mut().enumerate() {
        let status = w
            .wait_timeout(limit)?
            .ok_or_else(|| format!("worker {} still runs after {limit:?}", i + 1))?;
        if exit_code(status) != Some(0) {
            return Err(format!("worker {} {}", i + 1, describe(status)).into());
        }
    }
    Ok(())
}

/// Check `done` every millisecond, for at most [`SAFETY`].
fn wait_until(what: &str, done: impl Fn() -> bool) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + SAFETY;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("waited {SAFETY:?} for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
