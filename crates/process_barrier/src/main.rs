//! Demonstrate how a reusable barrier keeps several processes in step, phase
//! after phase, and how it breaks, telling everyone, when a process dies
//! before it arrives, instead of leaving the others waiting forever.
//!
//! The parent forks N workers (4 by default) that run several phases (3 by
//! default). Between two phases each worker waits at a barrier in shared
//! memory: nobody starts phase k+1 before everyone has finished phase k. The
//! last to arrive opens the barrier for all and is told so, like
//! `PTHREAD_BARRIER_SERIAL_THREAD`. The barrier is written here, since it is
//! the lesson's point: a round number that the last arriver bumps, and a
//! futex on which the others sleep until it changes. Each worker takes a
//! ticket from a shared counter when it starts and when it finishes a phase;
//! the parent then checks that every "finished phase k" ticket is lower than
//! every "started phase k+1" ticket, and that each phase had exactly one
//! last arriver.
//!
//! Then a worker dies before it reaches a fresh barrier. The others wait
//! with a timeout; the first whose time runs out breaks the barrier, which
//! releases every waiter at once with the outcome "broken" (Python's
//! `BrokenBarrierError`), and any later arrival is told the same at once.
//!
//! Key points:
//! - Reusable means that waiters wait for the *round* to change, not for a
//!   count to reach N. The last arriver resets the count for the next round
//!   before it bumps the round, so a worker that races ahead into the next
//!   phase counts afresh, while a slow waker still sees that its round ended.
//! - Waiters sleep in the kernel with `futex(FUTEX_WAIT)` on the round word.
//!   Without `FUTEX_PRIVATE_FLAG` the kernel keys the wait by the shared
//!   object behind the mapping and the offset in it, so every process that
//!   maps the barrier, at any address, shares one wait queue.
//! - A barrier cannot know that a party died. `pthread_barrier_wait` has no
//!   timeout and would wait forever; only a timed wait that breaks the
//!   barrier for everyone turns a dead peer into an error.
//!
//! What to observe, in another terminal while the workers wait (pace 1):
//! `ps -o pid,ppid,stat,wchan:20,comm --ppid <parent pid>` shows the waiting
//! workers in state `S`, asleep in the kernel's futex wait. In part 2 the
//! dying worker is gone while the others still sleep, until their timeout.
//!
//! The pitfall: the seed's C++ "barrier" is `sem_open("/barrier", ..., N)`
//! followed by `sem_wait; sem_post` in each worker. The semaphore starts at
//! N, so `sem_wait` never blocks: nobody waits for anybody. A semaphore
//! barrier that does block (start at 0, the last arriver posts N-1 times) is
//! still good for one use only: in the next round a fast worker can take a
//! permit meant for a slow one of this round. Hence the round number.
//!
//! Seed example: 12, process barrier (C++ with a POSIX semaphore, Python with
//! `multiprocessing.Barrier`).
//!
//! Run with:
//! ```text
//! cargo run -p process_barrier
//! cargo run -p process_barrier -- --workers 6 --phases 5 --pace 0.3
//! cargo run --release -p process_barrier -- --bench    # one TSV line: rounds/s
//! ```
//!
//! Try it:
//! - Delete the `barrier.wait` call in `worker`: the ordering check fails
//!   and names the phase that a worker entered too early.
//! - In `Barrier::wait`, let the waiters wait for `arrived` to reach
//!   `parties` instead of for the round to change. Phase 0 never opens: the
//!   last arriver has already reset the count (only the timeout saves you).
//! - Set `SPINS` and `YIELDS` to 0 and run `--bench` again: every crossing
//!   now sleeps in the kernel and needs a wake-up system call.
//!
//! See also: `process_lock` (a mutex that survives its holder's death),
//! `process_semaphore` (counting permits).

use std::error::Error;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn, Child};
use common::opts::{Args, Opt, Pace, Spec};
use common::shm::{Shared, SharedSlice};
use common::{describe, say, warn};
use nix::sys::signal::{raise, Signal};
use nix::sys::wait::WaitStatus;
use rustix::io::Errno;
use rustix::thread::futex;

const SPEC: Spec = Spec {
    name: "process_barrier",
    about:
        "Demonstrate how a reusable barrier keeps processes in step and breaks instead of hanging.",
    options: &[
        Opt::int("workers", "worker processes", 4, 2, 16),
        Opt::int("phases", "phases, with a barrier after each", 3, 1, 50),
        Opt::flag(
            "bench",
            "only measure: print one TSV line, barrier rounds/s between 2 processes",
        ),
        Opt::int(
            "rounds",
            "barrier rounds for --bench",
            100_000,
            1,
            1_000_000,
        ),
    ],
};

/// How long a worker of part 2 waits at the barrier before it gives up and
/// breaks it. A fixed floor: the pace can lengthen it, never shrink it.
const GIVE_UP: Duration = Duration::from_secs(2);

/// How long a wait that should succeed may take (part 1, the benchmark), on
/// top of the paced work: generous, since the machine may be loaded.
const SAFETY: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    if args.flag("bench") {
        return bench(args.int("rounds"));
    }
    let workers = args.usize("workers");
    let phases = args.usize("phases");
    in_step(workers, phases, args.pace())?;
    broken(workers, args.pace())?;
    say!("all checks passed");
    Ok(())
}

// ---------------------------------------------------------------------------
// The barrier.

/// How a waiter waits. First it spins, looking at the round again and
/// again (about a microsecond): when the late party runs on another core
/// and is about to arrive, this saves a sleep and a wake-up. Then it yields
/// the CPU a few times (`sched_yield`): if the late party is waiting for
/// *this* core, it runs now. Only then does it sleep in the kernel.
const SPINS: u32 = 50;
const YIELDS: u32 = 8;

/// The top bit of the round word: the barrier is broken, for good.
const BROKEN: u32 = 1 << 31;

/// A reusable barrier for `parties` processes, to be placed in shared
/// memory. Plain atomics, so it needs no set-up in place and no clean-up.
#[repr(C)]
struct Barrier {
    parties: u32,
    /// How many have arrived in this round.
    arrived: AtomicU32,
    /// The round number (low 31 bits), bumped by the last arriver, plus the
    /// `BROKEN` bit. Waiters sleep on this word until it changes.
    round: AtomicU32,
    /// The PID of the waiter that timed out and broke the barrier, else 0.
    broken_by: AtomicU32,
}

/// What [`Barrier::wait`] tells a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Everyone arrived, and this process was the last: it opened the barrier.
    Last,
    /// Everyone arrived; the last one released this process.
    Released,
    /// A waiter timed out (maybe this one): nobody will ever pass again.
    Broken,
}

impl Barrier {
    const fn new(parties: u32) -> Self {
        Barrier {
            parties,
            arrived: AtomicU32::new(0),
            round: AtomicU32::new(0),
            broken_by: AtomicU32::new(0),
        }
    }

    /// Arrive, and wait at most `timeout` for the others. On timeout the
    /// barrier breaks, for this process and for everyone else.
    fn wait(&self, timeout: Duration) -> io::Result<Outcome> {
        let deadline = Instant::now() + timeout;
        // Read the round before arriving: it cannot move on without us.
        let round = self.round.load(Ordering::Acquire);
        if round & BROKEN != 0 {
            return Ok(Outcome::Broken);
        }
        // AcqRel: what we wrote in this phase goes out with our arrival, and
        // the last arriver takes in everyone's before it opens the barrier.
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            // Reset the count for the next round *before* opening: the
            // released may arrive again at once.
            self.arrived.store(0, Ordering::Relaxed);
            let next = (round + 1) & !BROKEN;
            if self
                .round
                .compare_exchange(round, next, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // A waiter timed out and broke it just before we arrived.
                return Ok(Outcome::Broken);
            }
            futex_wake_all(&self.round);
            return Ok(Outcome::Last);
        }
        let mut looks = 0;
        loop {
            let now = self.round.load(Ordering::Acquire);
            if now & BROKEN != 0 {
                return Ok(Outcome::Broken);
            }
            if now != round {
                return Ok(Outcome::Released);
            }
            looks += 1;
            if looks <= SPINS {
                std::hint::spin_loop();
            } else if looks <= SPINS + YIELDS {
                std::thread::yield_now();
            } else {
                match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => futex_wait(&self.round, round, left)?,
                    _ => return Ok(self.break_for(round)),
                }
            }
        }
    }

    /// Time is up for a waiter of `round`: break the barrier, unless the
    /// round ended (or someone else broke it) meanwhile.
    fn break_for(&self, round: u32) -> Outcome {
        match self.round.compare_exchange(
            round,
            round | BROKEN,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.broken_by.store(std::process::id(), Ordering::SeqCst);
                // Everyone asleep on the round word wakes, sees BROKEN, leaves.
                futex_wake_all(&self.round);
                Outcome::Broken
            }
            Err(now) if now & BROKEN != 0 => Outcome::Broken,
            Err(_) => Outcome::Released,
        }
    }

    fn broken_by(&self) -> u32 {
        self.broken_by.load(Ordering::SeqCst)
    }
}

/// Sleep while `word` still holds `expected`, at most `timeout`. The kernel
/// compares and sleeps atomically, so a wake-up between our last look and
/// the sleep is not lost: the call returns at once.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> io::Result<()> {
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // Flags::empty(): a shared futex, not FUTEX_PRIVATE_FLAG.
    match futex::wait(word, futex::Flags::empty(), expected, Some(&ts)) {
        // Woken, the word changed before we slept, a signal, or time is up:
        // in every case the caller looks at the word again.
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::TIMEDOUT) => Ok(()),
        Err(e) => Err(io::Error::other(format!("futex(FUTEX_WAIT): {e}"))),
    }
}

fn futex_wake_all(word: &AtomicU32) {
    // The kernel reads the count as an `int`: i32::MAX means "all".
    // Waking can only fail for a bad address, which a reference rules out.
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}

// ---------------------------------------------------------------------------
// Part 1: phases in step.

/// When one worker started and finished one phase: tickets from a counter
/// shared by all, so they order every event of every process.
struct Stamp {
    start: AtomicU64,
    finish: AtomicU64,
}

fn in_step(n: usize, phases: usize, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 1: {n} workers, {phases} phases, a barrier after each phase");
    let barrier = Shared::new(Barrier::new(n as u32))?;
    let ticket = Shared::new(AtomicU64::new(0))?;
    let stamps = SharedSlice::new(n * phases, |_| Stamp {
        start: AtomicU64::new(0),
        finish: AtomicU64::new(0),
    })?;
    let lasts = SharedSlice::new(phases, |_| AtomicU32::new(0))?;
    // The slowest worker of a phase works (n-1)/2 s at pace 1.
    let timeout = SAFETY + pace.secs(0.5 * n as f64);

    say!(
        "watch them wait: ps -o pid,stat,wchan:20,comm --ppid {}",
        std::process::id()
    );
    // `spawn` forks. It refuses to fork a multithreaded process (the child
    // could find a lock, stdout's or any Mutex, held forever by a thread
    // that was not copied), and it flushes stdout first, so nothing buffered is
    // printed twice. The child runs the closure and leaves with `_exit`: it
    // never returns into main, never drops (unmaps) what the parent owns,
    // and it dies with the parent (PR_SET_PDEATHSIG).
    let mut children = Vec::new();
    for i in 0..n {
        let (barrier, ticket, stamps, lasts) = (&*barrier, &*ticket, &*stamps, &*lasts);
        children.push(spawn(&format!("worker {i}"), || {
            worker(i, n, phases, pace, timeout, barrier, ticket, stamps, lasts)
        })?);
    }
    join(&mut children, SAFETY + timeout * phases as u32)?;

    let stamp = |i: usize, k: usize| &stamps[i * phases + k];
    for k in 1..phases {
        let last_finish = (0..n)
            .map(|i| stamp(i, k - 1).finish.load(Ordering::SeqCst))
            .max()
            .unwrap_or(0);
        let first_start = (0..n)
            .map(|i| stamp(i, k).start.load(Ordering::SeqCst))
            .min()
            .unwrap_or(0);
        if last_finish >= first_start {
            return Err(format!(
                "a worker started phase {k} (#{first_start}) before all had finished phase {} (#{last_finish})",
                k - 1
            )
            .into());
        }
        say!(
            "phase {} -> {k}: last finish #{last_finish} < first start #{first_start}",
            k - 1
        );
    }
    say!("no worker started a phase before every worker had finished the one before");
    for (k, last) in lasts.iter().enumerate() {
        let last = last.load(Ordering::SeqCst);
        if last != 1 {
            return Err(format!("phase {k}: {last} workers were told they arrived last").into());
        }
    }
    say!("each of the {phases} phases had exactly one last arriver");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn worker(
    i: usize,
    n: usize,
    phases: usize,
    pace: Pace,
    timeout: Duration,
    barrier: &Barrier,
    ticket: &AtomicU64,
    stamps: &[Stamp],
    lasts: &[AtomicU32],
) -> Result<(), Box<dyn Error>> {
    for (k, last) in lasts.iter().enumerate() {
        let stamp = &stamps[i * phases + k];
        stamp
            .start
            .store(ticket.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        // The work: the workers take turns at being the slowest.
        pace.sleep(0.5 * ((i + k) % n) as f64);
        let finish = ticket.fetch_add(1, Ordering::SeqCst) + 1;
        stamp.finish.store(finish, Ordering::SeqCst);
        say!("phase {k}: finished (#{finish}), waiting at the barrier");
        match barrier.wait(timeout)? {
            Outcome::Last => {
                last.fetch_add(1, Ordering::SeqCst);
                say!("phase {k}: I arrived last, the barrier opens for all {n}");
            }
            Outcome::Released => {}
            Outcome::Broken => {
                return Err(
                    format!("phase {k}: the barrier broke (someone waited {timeout:?})").into(),
                )
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 2: a worker dies before it arrives; the barrier breaks.

fn broken(n: usize, pace: Pace) -> Result<(), Box<dyn Error>> {
    let doomed = n - 1;
    let give_up = GIVE_UP.max(pace.secs(5.0));
    say!(
        "part 2: worker {doomed} dies before it reaches a new barrier; the others give up after {:.1} s",
        give_up.as_secs_f64()
    );
    let barrier = Shared::new(Barrier::new(n as u32))?;
    let reported = Shared::new(AtomicU32::new(0))?;

    let mut children = Vec::new();
    for i in 0..n {
        let (barrier, reported) = (&*barrier, &*reported);
        children.push(spawn(&format!("worker {i}"), || {
            if i == doomed {
                say!("dying before I reach the barrier (SIGKILL)");
                raise(Signal::SIGKILL)?; // cannot be caught: never returns
            }
            survivor(barrier, reported, give_up)
        })?);
    }
    let mut dead = children.pop().expect("n >= 2 workers");
    match dead.wait_timeout(SAFETY)? {
        Some(s @ WaitStatus::Signaled(_, Signal::SIGKILL, _)) => {
            say!("worker {doomed} {}", describe(s))
        }
        Some(s) => return Err(format!("worker {doomed}: {}", describe(s)).into()),
        None => return Err(format!("worker {doomed} is still running").into()),
    }
    join(&mut children, SAFETY + give_up)?;

    let survivors = n - 1;
    let told = reported.load(Ordering::SeqCst) as usize;
    if told != survivors {
        return Err(format!("{told} of {survivors} survivors reported the barrier broken").into());
    }
    let breaker = barrier.broken_by() as i32;
    if !children.iter().any(|c| c.raw() == breaker) {
        return Err(format!("the barrier was broken by {breaker}, not by a survivor").into());
    }
    say!(
        "all {survivors} survivors reported the barrier broken (process {breaker} timed out first)"
    );
    // The broken state sticks: a late arrival does not wait at all.
    let late = barrier.wait(Duration::ZERO)?;
    if late != Outcome::Broken {
        return Err(format!("a late arrival at the broken barrier got {late:?}").into());
    }
    say!("a late arrival is told at once: {late:?}");
    Ok(())
}

/// A worker that reaches the barrier and is told it is broken.
fn survivor(
    barrier: &Barrier,
    reported: &AtomicU32,
    give_up: Duration,
) -> Result<(), Box<dyn Error>> {
    let waited = Instant::now();
    if barrier.wait(give_up)? != Outcome::Broken {
        return Err("passed a barrier that cannot open".into());
    }
    reported.fetch_add(1, Ordering::SeqCst);
    let secs = waited.elapsed().as_secs_f64();
    if barrier.broken_by() == std::process::id() {
        say!("timed out after {secs:.2} s: I broke the barrier");
    } else {
        say!("told after {secs:.2} s: the barrier is broken, no more waiting");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The benchmark: 2 processes cross the barrier again and again.

fn bench(rounds: u64) -> Result<(), Box<dyn Error>> {
    // The parent lines the two up with a 3-party barrier, then times them.
    let start = Shared::new(Barrier::new(3))?;
    let bar = Shared::new(Barrier::new(2))?;
    let lasts = Shared::new(AtomicU64::new(0))?;
    let mut children = Vec::new();
    for i in 0..2 {
        let (start, bar, lasts) = (&*start, &*bar, &*lasts);
        children.push(spawn(&format!("bencher {i}"), || {
            crossings(start, bar, lasts, rounds)
        })?);
    }
    if start.wait(SAFETY)? == Outcome::Broken {
        return Err("the start barrier broke".into());
    }
    let t0 = Instant::now();
    join(
        &mut children,
        SAFETY + Duration::from_micros(100) * rounds as u32,
    )?;
    let secs = t0.elapsed().as_secs_f64();
    let crossed = lasts.load(Ordering::SeqCst);
    if crossed != rounds {
        return Err(format!("{crossed} of {rounds} rounds had a last arriver").into());
    }
    // TSV only, for scripts: name, value, unit.
    println!("rs.barrier_2proc\t{:.0}\trounds/s", rounds as f64 / secs);
    Ok(())
}

/// One benchmark process: line up at `start`, then cross `bar` `rounds` times.
fn crossings(
    start: &Barrier,
    bar: &Barrier,
    lasts: &AtomicU64,
    rounds: u64,
) -> Result<(), Box<dyn Error>> {
    if start.wait(SAFETY)? == Outcome::Broken {
        return Err("the start barrier broke".into());
    }
    for r in 0..rounds {
        match bar.wait(SAFETY)? {
            Outcome::Last => {
                lasts.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Released => {}
            Outcome::Broken => return Err(format!("round {r}: the barrier broke").into()),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------

/// Reap every child, waiting at most `limit` in all; fail unless each exited 0.
fn join(children: &mut [Child], limit: Duration) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + limit;
    for c in children.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.wait_timeout(left)? {
            Some(s) if exit_code(s) == Some(0) => {}
            Some(s) => return Err(format!("child {}: {}", c.raw(), describe(s)).into()),
            None => return Err(format!("child {} still running after {limit:?}", c.raw()).into()),
        }
    }
    Ok(())
}
