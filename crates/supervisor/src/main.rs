//! Demonstrate how a supervisor keeps N worker processes alive: it restarts
//! a worker that crashes after an exponential back-off, gives up on one that
//! crashes too often, and on SIGTERM stops every worker gracefully before it
//! exits itself.
//!
//! The supervisor forks N workers (3 by default). Each worker works in steps
//! and follows a crash plan drawn from a seeded random generator: crash at
//! step k by panicking, by calling `abort`, or by sending itself SIGKILL,
//! or stay healthy. The last worker is built to crash right after every
//! start, like a program with a bug at start-up. The supervisor logs every
//! death with its decoded wait status and checks that the status says what
//! the worker did; restarts the worker after a back-off that doubles with
//! each crash in the restart window; gives up on a worker that crashes more
//! than `--max-restarts` times within the window; and after each restart
//! checks in `/proc` that it has all its workers again. Once every planned
//! crash has happened, it shows the steady state for a moment, then stops
//! the way SIGTERM would stop it: SIGTERM to each worker, which finishes its
//! step and exits 0, and a check that no child is left in `/proc`.
//!
//! Key points:
//! - The supervisor sleeps in one place, `ppoll`, until a worker dies
//!   (SIGCHLD), a stop is asked for (SIGINT, SIGTERM), or the next restart
//!   is due. The three signals are blocked everywhere else and unblocked
//!   only inside `ppoll`, atomically: a signal that arrives between "check
//!   the flag" and "go to sleep" cannot be lost. The handlers only set a
//!   flag (or nothing: SIGCHLD only has to interrupt the wait). Once every
//!   worker is stopped, SIGINT and SIGTERM are let in for good: one that
//!   came during the stop, and waited blocked, still decides the exit status.
//! - Back-off: restart after 0.2 s, then 0.4, 0.8... (at pace 1), so a worker
//!   that crashes at once cannot make the supervisor fork in a tight loop.
//!   A restart limit in a window (Erlang/OTP's intensity and period) then
//!   separates "crashes now and then" from "is broken".
//! - A wait status tells how a process ended: exit code 101 is a Rust panic
//!   (here caught by the fork helper), SIGABRT is `abort`, SIGKILL is
//!   SIGKILL. `common::describe` decodes it.
//! - Graceful stop: SIGTERM asks, the worker decides when (after its current
//!   step) and exits 0. Only a worker that does not stop in time gets SIGKILL.
//! - Exit status: after a stop asked for from outside (SIGINT or SIGTERM),
//!   the supervisor cleans up and exits with 128 + the signal number (130,
//!   143), as a shell reports a process killed by that signal, so that a
//!   caller can tell an interrupted run from a completed one. After its own
//!   planned stop it exits 0.
//!
//! What to observe, in another terminal while it runs:
//! `watch -n 0.2 pstree -p <supervisor pid>` shows the worker PIDs change as
//! workers die and come back, and one worker slot go empty when it is given
//! up. `kill <supervisor pid>` (SIGTERM) stops everything gracefully;
//! `kill -9 <worker pid>` is a crash the plan did not foresee, and the
//! supervisor restarts that worker too. `scripts/supervisor.sh` does the
//! watching for you.
//!
//! The pitfall: the JavaScript example's SIGTERM handler calls
//! `process.exit(0)` at once: its worker is not stopped and carries on,
//! unsupervised. A worker that has used up its restarts takes the whole
//! supervisor down with `process.exit(1)`, and its crashes come from
//! `Math.random()`, so no run can be repeated. Here a stop reaches every
//! worker, the supervisor checks that none is left, a broken worker is
//! reported and the others kept, and `--seed` repeats a run's crash plan.
//!
//! Seed example: none; lesson 19 of this course, answering the JavaScript
//! set's later `18_process_restart.js` (a supervisor with back-off).
//!
//! Run with:
//! ```text
//! cargo run -p supervisor
//! cargo run -p supervisor -- --workers 5 --seed 7 --max-restarts 2
//! ```
//!
//! Try it:
//! - While it runs, `kill -9` a healthy worker: the supervisor logs
//!   "killed by SIGKILL (not in its plan)" and restarts it.
//! - Run with `--max-restarts 10`: the last worker is no longer given up
//!   and settles down after its crashes; watch its back-off grow.
//! - Press Ctrl-C: the terminal sends SIGINT to the whole process group;
//!   every worker finishes its step and exits 0, then the supervisor exits
//!   with 130 (`echo $?`).
//!
//! See also: `process_pool` (a pool that replaces a crashed worker),
//! `multiple_processes` (SIGTERM, then SIGKILL), `zombie` (SIGCHLD and
//! reaping), `signal-safety(7)`, `ppoll(2)`.

use std::collections::{BTreeSet, VecDeque};
use std::error::Error;
use std::ffi::c_int;
use std::fmt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::fork::{Child, Fork};
use common::opts::{Args, Opt, Pace, Spec};
use common::{describe, procfs, say, warn};
use nix::errno::Errno;
use nix::poll::{ppoll, PollFd};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{
    kill, sigaction, sigprocmask, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use nix::sys::time::TimeSpec;
use nix::sys::wait::WaitStatus;
use nix::unistd::getpid;

const SPEC: Spec = Spec {
    name: "supervisor",
    about: "Demonstrate how a supervisor keeps N workers alive: back-off, a restart limit, graceful stop.",
    options: &[
        Opt::int("workers", "workers to keep alive", 3, 1, 16),
        Opt::int("seed", "seed of the crash plan", 42, 0, 4_294_967_295),
        Opt::int(
            "max-restarts",
            "restarts of one worker allowed within the window; one more crash and it is given up",
            3,
            0,
            20,
        ),
        Opt::float(
            "window",
            "the restart window, in seconds (stretched by a pace above 1)",
            10.0,
            1.0,
            3600.0,
        ),
    ],
};

/// A worker's step at pace 1, and its floor at any pace (at pace 0 a
/// healthy worker must not spin).
const STEP_SECS: f64 = 0.5;
const MIN_STEP: Duration = Duration::from_millis(5);
/// The first back-off delay, doubled after each crash in the window, and
/// its ceiling. Scaled by the pace when slept; printed as the schedule.
const BACKOFF_BASE: f64 = 0.2;
const BACKOFF_CAP: f64 = 5.0;
/// How long the supervisor shows its steady state before the planned stop.
const STEADY_SECS: f64 = 3.0;
/// How long a worker gets after SIGTERM beyond finishing its step, and how
/// long `/proc` gets to agree with the supervisor. Safety floors, not scaled.
const STOP_GRACE: Duration = Duration::from_secs(2);
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest single sleep of the supervisor: a safety net, since every
/// event it waits for also interrupts the sleep.
const TICK: Duration = Duration::from_secs(1);

fn main() {
    let args = Args::parse(&SPEC);
    match run(&args) {
        // A SIGINT or SIGTERM that came after `run` last looked (they are
        // unblocked by then) still decides the exit status.
        Ok(Ended::Planned) => {
            if let Some(sig) = stop_requested() {
                std::process::exit(128 + sig as i32);
            }
        }
        // Asked to stop from outside: exit as a shell reports a process
        // killed by that signal (130 for SIGINT, 143 for SIGTERM).
        Ok(Ended::Signal(sig)) => std::process::exit(128 + sig as i32),
        Err(e) => {
            warn!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// Why supervision ended.
#[derive(Debug, Clone, Copy)]
enum Ended {
    /// Every planned crash happened and the steady state was shown.
    Planned,
    /// SIGINT or SIGTERM from outside.
    Signal(Signal),
}

fn run(args: &Args) -> Result<Ended, Box<dyn Error>> {
    // Before anything else: from now on SIGINT and SIGTERM only set a flag.
    let mask = install_signal_handlers()?;
    common::out::set_role("supervisor");
    let pace = args.pace();
    let n = args.usize("workers");
    let seed = args.int("seed");
    let policy = Policy {
        max_restarts: args.usize("max-restarts"),
        // At a pace below 1 the window keeps its full length, so that at
        // full speed every crash falls inside it; above 1 it stretches with
        // the delays, so that a slow run tells the same story.
        window: Duration::from_secs_f64(args.float("window") * pace.0.max(1.0)),
        pace,
    };
    say!(
        "keeping {n} workers alive; a worker crashing more than {} times within {:.1} s is given up",
        policy.max_restarts,
        policy.window.as_secs_f64()
    );
    let mut slots: Vec<Slot> = crash_plans(n, seed, policy.max_restarts)
        .into_iter()
        .enumerate()
        .map(|(i, plan)| Slot::new(i + 1, plan))
        .collect();
    say!(
        "crash plan from seed {seed}: {}; worker {n} crashes at every start",
        slots
            .iter()
            .map(|s| match s.plan.len() {
                1 => format!("worker {} crashes once", s.number),
                k => format!("worker {} crashes {k} times", s.number),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    for slot in &mut slots {
        slot.start(pace)?;
    }
    check_live(&slots)?;

    let ended = supervise(&mut slots, &policy, &mask)?;
    stop_all(&mut slots, ended, pace)?;
    // A stop asked for from outside while the planned stop was under way
    // still decides the exit status: whoever sent it must learn it worked.
    // Such a signal is still pending, blocked (they are let in only inside
    // `ppoll`), its handler not run: unblock them, and a pending one is
    // delivered before `sigprocmask` returns.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&stop), None)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let ended = match (ended, stop_requested()) {
        (Ended::Planned, Some(sig)) => Ended::Signal(sig),
        (ended, _) => ended,
    };
    match ended {
        Ended::Planned => say!("all checks passed"),
        Ended::Signal(sig) => say!(
            "stopped by {} from outside: exiting with {}",
            sig.as_str(),
            128 + sig as i32
        ),
    }
    Ok(ended)
}

// ---------------------------------------------------------------------------
// The crash plan: what each start of each worker will do.

/// How a worker crashes on purpose.
#[derive(Debug, Clone, Copy, PartialEq)]
enum How {
    Panic,
    Abort,
    Kill,
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            How::Panic => "panic",
            How::Abort => "abort",
            How::Kill => "SIGKILL to itself",
        })
    }
}

/// What one start of a worker does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Crash { step: u32, how: How },
    Healthy,
}

impl Fate {
    /// Whether `status` is what this fate ends in: exit code 101 for a
    /// panic (the fork helper turns a panic into `_exit(101)`, as a Rust
    /// `main` does), SIGABRT for `abort`, SIGKILL for SIGKILL.
    fn explains(self, status: WaitStatus) -> bool {
        matches!(
            (self, status),
            (
                Fate::Crash {
                    how: How::Panic,
                    ..
                },
                WaitStatus::Exited(_, 101)
            ) | (
                Fate::Crash {
                    how: How::Abort,
                    ..
                },
                WaitStatus::Signaled(_, Signal::SIGABRT, _)
            ) | (
                Fate::Crash { how: How::Kill, .. },
                WaitStatus::Signaled(_, Signal::SIGKILL, _)
            )
        )
    }
}

/// xorshift64* (Vigna, 2016): three shifts and a multiply, enough to draw
/// a crash plan that the same seed repeats. Not for cryptography.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Spread the seed's bits; the state must never be 0.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One list of crashes per worker; every start after the list is healthy.
/// A worker crashes once or twice, but never more than `max_restarts`
/// times (so it is never given up), except the last one, which crashes once more than that, each time right
/// after it starts: it will be given up.
fn crash_plans(workers: usize, seed: u64, max_restarts: usize) -> Vec<Vec<Fate>> {
    let mut rng = Rng::new(seed);
    (1..=workers)
        .map(|number| {
            let flaky = number == workers;
            let crashes = if flaky {
                max_restarts + 1
            } else {
                (1 + rng.below(2) as usize).min(max_restarts)
            };
            (0..crashes)
                .map(|_| Fate::Crash {
                    step: if flaky { 1 } else { 2 + rng.below(4) as u32 },
                    how: [How::Panic, How::Abort, How::Kill][rng.below(3) as usize],
                })
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The supervisor.

struct Policy {
    max_restarts: usize,
    window: Duration,
    pace: Pace,
}

/// One worker's place in the supervisor.
struct Slot {
    number: usize,
    plan: Vec<Fate>,
    /// How many times this worker has been started.
    starts: usize,
    state: State,
    /// When it crashed within the current window.
    recent: VecDeque<Instant>,
}

enum State {
    Running { child: Child, fate: Fate },
    Waiting { until: Instant, last_pid: i32 },
    GivenUp,
    Stopped,
}

impl Slot {
    fn new(number: usize, plan: Vec<Fate>) -> Slot {
        Slot {
            number,
            plan,
            starts: 0,
            state: State::Stopped,
            recent: VecDeque::new(),
        }
    }

    /// Fork the worker's next start. It inherits the supervisor's signal
    /// handlers (flag only) and its blocked signals.
    fn start(&mut self, pace: Pace) -> Result<(), Box<dyn Error>> {
        self.starts += 1;
        let fate = self
            .plan
            .get(self.starts - 1)
            .copied()
            .unwrap_or(Fate::Healthy);
        let step = pace.secs(STEP_SECS).max(MIN_STEP);
        let start = self.starts;
        let child =
            Fork::new(&format!("worker {}", self.number)).run(move || worker(start, fate, step))?;
        match self.state {
            State::Waiting { last_pid, .. } => say!(
                "restarted worker {}: pid {last_pid} is replaced by pid {} (start {start})",
                self.number,
                child.raw()
            ),
            _ => say!("started worker {} as pid {}", self.number, child.raw()),
        }
        self.state = State::Running { child, fate };
        Ok(())
    }

    fn pid(&self) -> Option<i32> {
        match &self.state {
            State::Running { child, .. } => Some(child.raw()),
            _ => None,
        }
    }

    /// Every crash of its plan has happened: it runs healthy, or it was
    /// given up.
    fn settled(&self) -> bool {
        match self.state {
            State::Running { fate, .. } => fate == Fate::Healthy,
            State::GivenUp => true,
            _ => false,
        }
    }

    /// The worker died: log how, and decide between restart and giving up.
    fn died(&mut self, status: WaitStatus, policy: &Policy) {
        let State::Running { child, fate } = &self.state else {
            return;
        };
        let (pid, fate) = (child.raw(), *fate);
        let why = if fate.explains(status) {
            match fate {
                Fate::Crash { how, .. } => format!(", as planned ({how})"),
                Fate::Healthy => String::new(),
            }
        } else {
            " (not in its plan: killed from outside?)".to_string()
        };
        say!(
            "worker {} (pid {pid}) died: {}{why}",
            self.number,
            describe(status)
        );
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) > policy.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let crashes = self.recent.len();
        if crashes > policy.max_restarts {
            say!(
                "worker {} crashed {} within {:.1} s, more than --max-restarts {}: giving up on it",
                self.number,
                match crashes {
                    1 => "once".to_string(),
                    k => format!("{k} times"),
                },
                policy.window.as_secs_f64(),
                policy.max_restarts
            );
            self.state = State::GivenUp;
            return;
        }
        // The schedule is counted, the sleep is paced.
        let exponent = crashes as i32 - 1;
        let delay = (BACKOFF_BASE * 2f64.powi(exponent)).min(BACKOFF_CAP);
        let slept = policy.pace.secs(delay);
        say!(
            "back-off for worker {}: crash {crashes} in the window, restart in {delay:.1} s ({BACKOFF_BASE} s x 2^{exponent}){}",
            self.number,
            if policy.pace.0 == 1.0 {
                String::new()
            } else {
                format!(", {:.2} s at pace {}", slept.as_secs_f64(), policy.pace.0)
            }
        );
        self.state = State::Waiting {
            until: now + slept,
            last_pid: pid,
        };
    }
}

/// The supervisor's loop: reap, decide, restart, check, sleep.
fn supervise(slots: &mut [Slot], policy: &Policy, mask: &SigSet) -> Result<Ended, Box<dyn Error>> {
    let mut steady_until: Option<Instant> = None;
    loop {
        if let Some(sig) = stop_requested() {
            return Ok(Ended::Signal(sig));
        }
        // Reap every worker that has died (WNOHANG, one PID at a time).
        let mut changed = false;
        for slot in slots.iter_mut() {
            if let State::Running { child, .. } = &mut slot.state {
                if let Some(status) = child.try_wait()? {
                    slot.died(status, policy);
                    changed = true;
                }
            }
        }
        if stop_requested().is_some() {
            continue;
        }
        // Restart those whose back-off is over.
        let now = Instant::now();
        for slot in slots.iter_mut() {
            if matches!(slot.state, State::Waiting { until, .. } if until <= now) {
                slot.start(policy.pace)?;
                changed = true;
            }
        }
        // It never hangs, even when restarting is broken: a worker still
        // down long after its back-off ended is an error, not a wait.
        for slot in slots.iter() {
            if let State::Waiting { until, .. } = slot.state {
                if now > until + SYSTEM_TIMEOUT {
                    return Err(format!(
                        "worker {} is still down {:?} after its back-off ended: it was never restarted",
                        slot.number, SYSTEM_TIMEOUT
                    )
                    .into());
                }
            }
        }
        // Back to full strength? Ask /proc, not our own bookkeeping.
        let waiting = slots
            .iter()
            .any(|s| matches!(s.state, State::Waiting { .. }));
        if changed && !waiting {
            check_live(slots)?;
        }
        // Once every planned crash has happened, show the steady state for
        // a while, then stop as SIGTERM would.
        if slots.iter().all(Slot::settled) {
            let until = *steady_until.get_or_insert_with(|| {
                say!(
                    "steady: every planned crash has happened; stopping in {:.1} s",
                    policy.pace.secs(STEADY_SECS).as_secs_f64()
                );
                now + policy.pace.secs(STEADY_SECS)
            });
            if now >= until {
                return Ok(Ended::Planned);
            }
        } else {
            steady_until = None;
        }
        // Sleep until a worker dies (SIGCHLD), a stop is asked for, or the
        // next deadline.
        let next = slots
            .iter()
            .filter_map(|s| match s.state {
                State::Waiting { until, .. } => Some(until),
                _ => None,
            })
            .chain(steady_until)
            .min();
        let timeout = next.map_or(TICK, |t| {
            t.saturating_duration_since(Instant::now()).min(TICK)
        });
        sleep_unless_signalled(timeout, mask)?;
    }
}

/// Wait until `/proc` lists exactly the workers the supervisor believes
/// are running: children of ours, not zombies. Skips the check if one of
/// them died meanwhile (its restart is checked instead).
fn check_live(slots: &[Slot]) -> Result<(), Box<dyn Error>> {
    let me = getpid().as_raw();
    let expected: BTreeSet<i32> = slots.iter().filter_map(Slot::pid).collect();
    let given_up = slots
        .iter()
        .filter(|s| matches!(s.state, State::GivenUp))
        .count();
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    loop {
        let live: BTreeSet<i32> =
            procfs::processes(|s| s.ppid == me && !matches!(s.state, 'Z' | 'X'))?
                .iter()
                .map(|s| s.pid)
                .collect();
        if live == expected {
            let pids: Vec<String> = live.iter().map(i32::to_string).collect();
            say!(
                "live workers in /proc: {} of {} slots, {given_up} given up (pids {})",
                live.len(),
                slots.len(),
                pids.join(" ")
            );
            return Ok(());
        }
        if let Some(dead) = slots
            .iter()
            .find(|s| s.pid().is_some_and(|p| procfs::is_dead(p, None)))
        {
            say!(
                "live workers not counted now: worker {} died meanwhile (counted again once it is dealt with)",
                dead.number
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "/proc lists live workers {live:?}, the supervisor runs {expected:?}"
            )
            .into());
        }
        sleep(Duration::from_millis(1));
    }
}

/// Stop every worker: SIGTERM, then wait for it to finish its step and exit
/// 0; SIGKILL only if it does not within its step plus [`STOP_GRACE`].
/// Then check that no child is left.
fn stop_all(slots: &mut [Slot], ended: Ended, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!(
        "{}: SIGTERM to every worker",
        match ended {
            Ended::Planned => "the demonstration is over, stopping as SIGTERM would".to_string(),
            Ended::Signal(sig) => format!("{} received, stopping", sig.as_str()),
        }
    );
    for slot in slots.iter_mut() {
        match &slot.state {
            State::Running { child, .. } => child.signal(Signal::SIGTERM)?,
            State::Waiting { .. } => {
                say!("worker {}: restart cancelled", slot.number);
                slot.state = State::Stopped;
            }
            _ => {}
        }
    }
    let limit = pace.secs(STEP_SECS) + STOP_GRACE;
    let mut problems = Vec::new();
    for slot in slots.iter_mut() {
        let State::Running { child, fate } = &mut slot.state else {
            continue;
        };
        let pid = child.raw();
        match child.wait_timeout(limit)? {
            // Exit 0 is a graceful stop; a worker may also have reached its
            // planned crash just before the SIGTERM came.
            Some(status)
                if status == WaitStatus::Exited(child.pid(), 0) || fate.explains(status) =>
            {
                say!(
                    "worker {} (pid {pid}) stopped: {}",
                    slot.number,
                    describe(status)
                );
            }
            Some(status) => problems.push(format!(
                "worker {} (pid {pid}): {}",
                slot.number,
                describe(status)
            )),
            None => {
                child.signal(Signal::SIGKILL)?;
                child.wait()?;
                problems.push(format!(
                    "worker {} (pid {pid}) ignored SIGTERM for {limit:?}: killed",
                    slot.number
                ));
            }
        }
        slot.state = State::Stopped;
    }
    // Nothing may remain: no child of ours in /proc, running or zombie.
    let me = getpid().as_raw();
    let left = procfs::processes(|s| s.ppid == me)?;
    if !left.is_empty() {
        problems.push(format!("children left in /proc: {left:?}"));
    }
    if !problems.is_empty() {
        return Err(problems.join("; ").into());
    }
    say!("no worker left: /proc lists no child of {me}");
    Ok(())
}

// ---------------------------------------------------------------------------
// A worker.

/// Work in steps; crash as planned; on SIGTERM (or SIGINT) finish the
/// current step and exit 0.
fn worker(start: usize, fate: Fate, step: Duration) -> i32 {
    match fate {
        Fate::Crash { step, how } => say!("start {start}: will crash at step {step} ({how})"),
        Fate::Healthy => say!("start {start}: healthy, working until told to stop"),
    }
    // The handler inherited from the supervisor sets the same flag here.
    // The signals were blocked at the fork: one sent meanwhile is
    // delivered now, not lost.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    if let Err(e) = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&stop), None) {
        warn!("sigprocmask: {e}");
        return 1;
    }
    for n in 1.. {
        // One step of work. std's sleep resumes after a signal handler has
        // run, so a step is always finished.
        sleep(step);
        if let Some(sig) = stop_requested() {
            say!("{}: finished step {n}, exiting 0", sig.as_str());
            return 0;
        }
        if let Fate::Crash { step: at, how } = fate {
            if n == at {
                say!("step {n}: crashing on purpose ({how})");
                crash(how);
            }
        }
    }
    unreachable!("a worker only leaves its loop by returning or crashing")
}

fn crash(how: How) -> ! {
    match how {
        // The fork helper catches the unwind and leaves with _exit(101).
        How::Panic => {
            std::panic::set_hook(Box::new(|info| {
                let what = info
                    .payload()
                    .downcast_ref::<&str>()
                    .copied()
                    .unwrap_or("panic");
                warn!("panicked: {what}");
            }));
            panic!("a worker panics on purpose")
        }
        How::Abort => {
            // No core file, please: not in the current directory (size
            // limit 0) and not through a core-dump helper program either
            // (which ignores that limit, but not a non-dumpable process).
            let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
            let _ = nix::sys::prctl::set_dumpable(false);
            std::process::abort()
        }
        How::Kill => {
            let _ = kill(getpid(), Signal::SIGKILL);
            unreachable!("SIGKILL to itself ends a process before kill returns")
        }
    }
}

// ---------------------------------------------------------------------------
// Signals: flags set by handlers, received only inside ppoll.

/// The stop signal received (0: none). Written by the handler, read by the
/// loops of the supervisor and of the workers.
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop(signal: c_int) {
    // Atomics are async-signal-safe; nothing else happens here. The first
    // signal wins: a worker that got SIGINT from the terminal and then
    // SIGTERM from the supervisor reports SIGINT.
    let _ = STOP.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

extern "C" fn on_child(_: c_int) {
    // Nothing to do: SIGCHLD only has to interrupt ppoll. The loop reaps.
}

fn stop_requested() -> Option<Signal> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        s => Signal::try_from(s).ok(),
    }
}

/// Install the handlers and block their signals; returns the mask to sleep
/// with, in which they are unblocked.
fn install_signal_handlers() -> Result<SigSet, Box<dyn Error>> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        set.add(s);
    }
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
        .map_err(|e| format!("sigprocmask: {e}"))?;
    // No SA_RESTART: not needed, since these signals are only ever
    // unblocked inside ppoll, which a handler always interrupts.
    let stop = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let child = SigAction::new(
        SigHandler::Handler(on_child),
        SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handlers only store to an atomic, or do nothing; the
    // disposition put back is the one we found.
    unsafe {
        let before =
            sigaction(Signal::SIGINT, &stop).map_err(|e| format!("sigaction(SIGINT): {e}"))?;
        // A shell starts background jobs with SIGINT ignored, so that Ctrl-C
        // reaches only the foreground job. Keep it so (the classic rule for
        // a program that catches SIGINT).
        if matches!(before.handler(), SigHandler::SigIgn) {
            sigaction(Signal::SIGINT, &before).map_err(|e| format!("sigaction(SIGINT): {e}"))?;
        }
        sigaction(Signal::SIGTERM, &stop).map_err(|e| format!("sigaction(SIGTERM): {e}"))?;
        sigaction(Signal::SIGCHLD, &child).map_err(|e| format!("sigaction(SIGCHLD): {e}"))?;
    }
    let mut sleeping = old;
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        sleeping.remove(s);
    }
    Ok(sleeping)
}

/// Sleep for at most `timeout` with the signals unblocked: `ppoll` swaps
/// the mask in and out atomically, so a signal that came before the call
/// (and waits, blocked) interrupts it at once instead of being missed.
fn sleep_unless_signalled(timeout: Duration, mask: &SigSet) -> Result<(), Box<dyn Error>> {
    let mut no_fds: [PollFd; 0] = [];
    match ppoll(
        &mut no_fds,
        Some(TimeSpec::from_duration(timeout)),
        Some(*mask),
    ) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(format!("ppoll: {e}").into()),
    }
}
