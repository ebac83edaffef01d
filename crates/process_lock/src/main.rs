//! Demonstrate how a mutex shared between processes keeps a count exact,
//! keeps lines of output whole, and survives the death of the process that
//! holds it.
//!
//! Part 1: N workers (4 by default) each add 1 to a counter in shared memory
//! many times, first without a lock (a load and a store, between which
//! another process slips in, so updates are lost) and then under a
//! process-shared mutex, where the final count is exact. Part 2: each worker
//! prints lines one word at a time, one `write` per word, into a pipe that
//! the parent reads; without the lock the lines tear into each other, with
//! it none does. Part 3: a process is killed with SIGKILL while it holds the
//! lock, halfway through a transfer between two accounts. The next process
//! to lock is told that the owner died, repairs the accounts, marks the
//! mutex consistent, and goes on instead of waiting forever.
//!
//! Key points:
//! - A lock in shared memory must be made for it: a robust pthread mutex
//!   with `PTHREAD_PROCESS_SHARED` (the POSIX back end), or a futex word
//!   without `FUTEX_PRIVATE_FLAG` (the futex back end). `std::sync::Mutex`
//!   is process-private and cannot do this.
//! - The lock protects a sequence of steps, not a single write: a line made
//!   of twelve `write` calls, a transfer made of two stores.
//! - When a holder dies, the lock cannot silently pass on: the data may be
//!   half-updated. The next locker gets `Locked::OwnerDied`, repairs, and
//!   calls `mark_consistent`. The POSIX back end learns of the death from
//!   the kernel (`EOWNERDEAD`: the dead thread's robust list); the futex
//!   back end finds the recorded owner dead in `/proc` (a zombie counts as
//!   dead).
//!
//! What to observe, in another terminal during part 3 (pace 1):
//! `ps -o pid,ppid,stat,wchan:20,comm --ppid <parent pid>` shows the holder
//! asleep while it holds the lock, and the rescuer asleep in a futex wait
//! for it; after the SIGKILL the holder is gone and the rescuer finishes.
//!
//! The pitfall: dropping the guard after `OwnerDied` without calling
//! `mark_consistent` makes the mutex unusable for everyone, forever
//! (`ENOTRECOVERABLE`). And a lock that does not survive its holder's death
//! (the seed's C++ mutex is not robust, Python's `multiprocessing.Lock` is a
//! semaphore) leaves every other process waiting forever.
//!
//! Seed example: 10, process lock (C++ with a `PTHREAD_PROCESS_SHARED`
//! mutex, Python with `multiprocessing.Lock`).
//!
//! Run with:
//! ```text
//! cargo run -p process_lock
//! cargo run -p process_lock -- --workers 8 --iterations 1000000
//! cargo run -p process_lock --features common/futex-default    # the futex back end
//! ```
//!
//! Try it:
//! - In part 3, delete the `mark_consistent` call: the parent's next lock
//!   fails with "State not recoverable" (`ENOTRECOVERABLE`), for good.
//! - Pin the lesson to one CPU (`taskset -c 0 target/debug/process_lock`):
//!   updates are still lost without the lock. A worker switched out between
//!   its load and its store later writes back a stale value, wiping out all
//!   that the others added meanwhile.
//! - Make each worker print its line with one `write` (build the line
//!   first, as `say!` does) and no lock: nothing tears.
//!
//! See also: `shared_value` (a counter without a lock), `process_barrier`
//! (a reusable barrier), `process_semaphore` (counting permits), `deadlock`.

use std::collections::HashMap;
use std::error::Error;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn, Child};
use common::opts::{Args, Opt, Pace, Spec};
use common::shm::Shared;
use common::{describe, procfs, say, warn, Locked, Mutex, Semaphore, BACKEND};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::{dup2_stdout, pipe2, read};

const SPEC: Spec = Spec {
    name: "process_lock",
    about: "Demonstrate how a process-shared mutex keeps a count exact, keeps lines whole, and survives a holder's death.",
    options: &[
        Opt::int("workers", "worker processes", 4, 2, 16),
        Opt::int(
            "iterations",
            "increments per worker in part 1",
            200_000,
            1,
            10_000_000,
        ),
    ],
};

/// How long anything that should happen soon may take (a lock, a child's
/// end, the output's end) before the lesson calls it stuck. A fixed floor,
/// not scaled by the pace: generous, since the machine may be loaded.
const SAFETY: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let workers = args.usize("workers");
    say!("lock back end: {BACKEND}");
    count(workers, args.int("iterations"))?;
    print_lines(workers)?;
    owner_dies(args.pace())?;
    say!("all checks passed");
    Ok(())
}

/// Fork `n` workers that wait at `gate` (a semaphore at 0), then run
/// `work(i)`; open the gate once all exist, so they really run at the same
/// time. The caller keeps the gate until it has reaped the workers.
fn start_workers(
    n: usize,
    gate: &Semaphore,
    work: impl Fn(usize) -> Result<(), Box<dyn Error>>,
) -> Result<Vec<Child>, Box<dyn Error>> {
    // `spawn` forks. It refuses to fork a multithreaded process (the child
    // could find a lock, stdout's or any Mutex, held forever by a thread
    // that was not copied), and it flushes stdout first, so nothing buffered is
    // printed twice. The child runs the closure and leaves with `_exit`: it
    // never returns into main, never drops (unmaps) what the parent owns,
    // and it dies with the parent (PR_SET_PDEATHSIG).
    let mut children = Vec::new();
    for i in 0..n {
        let work = &work;
        children.push(spawn(&format!("worker {i}"), || {
            if !gate.wait_timeout(SAFETY)? {
                return Err(format!("the start gate stayed shut for {SAFETY:?}").into());
            }
            work(i)
        })?);
    }
    for _ in 0..n {
        gate.post()?;
    }
    Ok(children)
}

/// Reap every child, waiting at most [`SAFETY`] in all; fail unless each exited 0.
fn join(children: &mut [Child]) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + SAFETY;
    for c in children.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.wait_timeout(left)? {
            Some(s) if exit_code(s) == Some(0) => {}
            Some(s) => return Err(format!("child {}: {}", c.raw(), describe(s)).into()),
            None => return Err(format!("child {} still running after {SAFETY:?}", c.raw()).into()),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 1: a shared counter.

fn count(n: usize, iterations: u64) -> Result<(), Box<dyn Error>> {
    let expected = n as u64 * iterations;
    say!("part 1: {n} workers each add 1 to a shared counter {iterations} times");

    // Without a lock: a load, then a store. Atomic each, so no undefined
    // behaviour, but another process can store between our two steps, and
    // then one of the two updates is lost.
    let gate = Semaphore::shared(0)?;
    let racy = Shared::new(AtomicU64::new(0))?;
    join(&mut start_workers(n, &gate, |_| {
        for _ in 0..iterations {
            let v = racy.load(Ordering::Relaxed);
            racy.store(v + 1, Ordering::Relaxed);
        }
        Ok(())
    })?)?;
    let got = racy.load(Ordering::SeqCst);
    say!(
        "without the lock: counter = {got}, expected {expected}: {} updates lost",
        expected - got
    );

    // With the lock, the load, add and store are one step for everyone else.
    let counter = Mutex::shared(0u64)?;
    join(&mut start_workers(n, &gate, |_| {
        for _ in 0..iterations {
            *counter.lock_within(SAFETY)? += 1;
        }
        Ok(())
    })?)?;
    let got = *counter.lock_within(SAFETY)?;
    say!("with the lock:    counter = {got}, expected {expected}");
    if got != expected {
        return Err(format!("the locked count is {got}, expected {expected}").into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 2: lines written one word at a time.

/// Lines each worker prints in part 2, and what they say.
const LINES: usize = 20;
const TEXT: &str = "the quick brown fox jumps over the lazy dog";

/// The line worker `i` prints, again and again.
fn line_of(i: usize) -> String {
    format!("worker {i} says: {TEXT}")
}

fn print_lines(n: usize) -> Result<(), Box<dyn Error>> {
    let words = line_of(0).split(' ').count();
    say!("part 2: each worker prints {LINES} lines, each in {words} writes (one per word), into a pipe the parent reads");
    let (whole, torn, examples) = print_round(n, None)?;
    if torn == 0 {
        say!("without the lock: 0 of {whole} lines torn: no other worker wrote mid-line this time (run again)");
    } else {
        say!(
            "without the lock: {torn} of {} lines torn, for example:",
            whole + torn
        );
        for e in examples {
            say!("    {e:?}");
        }
    }
    let stdout_lock = Mutex::shared(())?;
    let (whole, torn, examples) = print_round(n, Some(&stdout_lock))?;
    say!("with the lock:    {torn} of {} lines torn", whole + torn);
    if torn != 0 || whole != n * LINES {
        return Err(format!("lines tore under the lock, for example {examples:?}").into());
    }
    say!("a single say! is one write(2) per line and would not tear anyway (a pipe write of up to PIPE_BUF, 4096 bytes, is atomic); println! goes through a 1024-byte buffer, so a longer line takes several writes and can tear");
    Ok(())
}

/// Let `n` workers print their lines into one pipe, under `lock` if given.
/// Returns how many lines came out whole, how many torn, and a few torn ones.
fn print_round(
    n: usize,
    lock_for_lines: Option<&Mutex<()>>,
) -> Result<(usize, usize, Vec<String>), Box<dyn Error>> {
    let gate = Semaphore::shared(0)?;
    let (reader, writer) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    let mut children = start_workers(n, &gate, |i| {
        // The pipe becomes this worker's standard output, as with `| cat`.
        dup2_stdout(&writer).map_err(|e| format!("dup2: {e}"))?;
        let mut out = io::stdout();
        let line = line_of(i);
        for _ in 0..LINES {
            let _guard = lock_for_lines.map(|m| m.lock_within(SAFETY)).transpose()?;
            let mut words = line.split(' ').peekable();
            while let Some(word) = words.next() {
                let end = if words.peek().is_some() { " " } else { "\n" };
                out.write_all(format!("{word}{end}").as_bytes())?;
                // Rust's stdout keeps text until a newline; flush sends
                // this word now, in a write(2) of its own.
                out.flush()?;
                // Give the CPU away between two words (sched_yield), as a
                // program busy between its writes is preempted there: any
                // other worker ready to run can write now.
                std::thread::yield_now();
            }
        }
        Ok(())
    })?;
    // Our copy of the write end must go, or the reader never sees the end.
    drop(writer);
    let output = read_to_end(reader)?;
    join(&mut children)?;

    let sent: usize = (0..n).map(|i| LINES * (line_of(i).len() + 1)).sum();
    if output.len() != sent {
        return Err(format!("the pipe carried {} bytes, expected {sent}", output.len()).into());
    }
    // Each line that is exactly some worker's line, and not one too many of
    // them, is whole; any other line is torn.
    let mut due: HashMap<String, usize> = (0..n).map(|i| (line_of(i), LINES)).collect();
    let (mut whole, mut torn, mut examples) = (0, 0, Vec::new());
    for line in String::from_utf8_lossy(&output).lines() {
        match due.get_mut(line) {
            Some(left) if *left > 0 => {
                *left -= 1;
                whole += 1;
            }
            _ => {
                torn += 1;
                if examples.len() < 2 {
                    examples.push(line.to_string());
                }
            }
        }
    }
    Ok((whole, torn, examples))
}

/// Read until every write end is closed, waiting at most [`SAFETY`].
fn read_to_end(reader: OwnedFd) -> Result<Vec<u8>, Box<dyn Error>> {
    let deadline = Instant::now() + SAFETY;
    let mut output = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("read: the output did not end within {SAFETY:?}").into());
        }
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll: {e}").into()),
        }
        match read(&reader, &mut chunk) {
            Ok(0) => return Ok(output),
            Ok(k) => output.extend_from_slice(&chunk[..k]),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("read: {e}").into()),
        }
    }
}

// ---------------------------------------------------------------------------
// Part 3: the holder dies.

/// Two accounts holding `TOTAL` between them. A transfer is two stores, so
/// in between the sum is off: a holder killed there leaves it off.
struct Accounts {
    a: i64,
    b: i64,
    /// A one-line journal: the amount of the transfer under way, else 0.
    in_flight: i64,
    /// How many times a dead holder's transfer was repaired.
    repairs: u32,
}

const TOTAL: i64 = 100;
const AMOUNT: i64 = 30;

fn owner_dies(pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 3: a holder is killed with SIGKILL while it holds the lock");
    let accounts = Mutex::shared(Accounts {
        a: TOTAL,
        b: 0,
        in_flight: 0,
        repairs: 0,
    })?;
    let holding = Semaphore::shared(0)?;
    // How long the parent leaves both asleep, for a human to look at them.
    let window = pace.secs(3.0);

    let mut holder = spawn("holder", || -> Result<(), Box<dyn Error>> {
        let mut acc = accounts.lock_within(SAFETY)?;
        acc.in_flight = AMOUNT;
        acc.a -= AMOUNT;
        say!(
            "locked; took {AMOUNT} out of a (a = {}, b = {}), about to credit b",
            acc.a,
            acc.b
        );
        holding.post()?;
        // Stuck here, holding the lock, until the parent kills us (or the
        // parent dies, and PR_SET_PDEATHSIG takes us with it).
        std::thread::sleep(SAFETY * 2 + window);
        Err("the holder was never killed".into())
    })?;
    if !holding.wait_timeout(SAFETY)? {
        return Err("the holder never took the lock".into());
    }

    let mut rescuer = spawn("rescuer", || -> Result<(), Box<dyn Error>> {
        say!("waiting for the lock");
        let limit = SAFETY + window;
        let mut acc = match accounts.lock_timeout(limit)? {
            Some(Locked::OwnerDied(acc)) => acc,
            Some(Locked::Acquired(_)) => return Err("locked as if nothing had happened".into()),
            None => return Err(format!("lock: no news of the dead owner in {limit:?}").into()),
        };
        say!(
            "locked, and told the owner died: a = {}, b = {}, a + b = {} (should be {TOTAL}), {} in flight",
            acc.a,
            acc.b,
            acc.a + acc.b,
            acc.in_flight
        );
        // Repair from the journal: the money left a but never reached b,
        // so finish the transfer.
        if acc.a + acc.b + acc.in_flight != TOTAL {
            return Err("the journal does not explain the accounts".into());
        }
        acc.b += acc.in_flight;
        acc.in_flight = 0;
        acc.repairs += 1;
        acc.mark_consistent()?;
        say!(
            "repaired: a = {}, b = {}, a + b = {}; marked the mutex consistent",
            acc.a,
            acc.b,
            acc.a + acc.b
        );
        Ok(())
    })?;

    // Wait until the rescuer sleeps, blocked on the lock (state S).
    let blocked = procfs::wait_for(rescuer.raw(), SAFETY, |s| s.is_some_and(|s| s.state == 'S'))?;
    if blocked.is_err() {
        return Err("the rescuer never went to sleep waiting for the lock".into());
    }
    say!(
        "rescuer {} is asleep, waiting for the lock; see: ps -o pid,stat,wchan:20,comm --ppid {}",
        rescuer.raw(),
        std::process::id()
    );
    std::thread::sleep(window);
    holder.signal(Signal::SIGKILL)?;
    match holder.wait_timeout(SAFETY)? {
        Some(s @ WaitStatus::Signaled(_, Signal::SIGKILL, _)) => {
            say!(
                "holder {} {}, with the lock held",
                holder.raw(),
                describe(s)
            )
        }
        Some(s) => return Err(format!("holder: {}", describe(s)).into()),
        None => return Err("the holder survived SIGKILL".into()),
    }
    join(std::slice::from_mut(&mut rescuer))?;

    // The lock works as before (no owner-died this time), and the data is whole.
    let acc = accounts.lock_within(SAFETY)?;
    say!(
        "the lock works again: a = {}, b = {}, a + b = {}, {} repair",
        acc.a,
        acc.b,
        acc.a + acc.b,
        acc.repairs
    );
    if acc.a + acc.b != TOTAL || acc.in_flight != 0 || acc.repairs != 1 {
        return Err("the accounts were not repaired".into());
    }
    Ok(())
}
