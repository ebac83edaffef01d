//! Demonstrate how a supervisor keeps N worker processes alive: it sees each
//! crash (SIGCHLD, then `waitpid`), restarts the worker after a back-off that
//! doubles with each crash, gives up on a worker that crashes too often, and
//! at the end stops every worker gracefully (SIGTERM, SIGKILL after a grace).
//!
//! Worker k crashes once (`abort`) at step k+1; the last worker crashes at
//! every start, like a program with a bug at start-up, and is given up once
//! it crashes more than `--max-restarts` times within the window. After each
//! restart the supervisor counts its live workers in `/proc` (an error if it
//! has not all its workers back in time). Once steady, it stops them all: each
//! finishes its step and exits 0, and no child may be left. SIGINT or SIGTERM
//! from outside ends it the same way, with exit status 130 or 143.
//!
//! What to observe, in another terminal: `watch -n 0.2 pstree -p <pid>` shows
//! worker PIDs replaced and one slot go empty (`scripts/supervisor.sh`).
//!
//! ```text
//! cargo run -p supervisor
//! cargo run -p supervisor -- --workers 2 --max-restarts 8   # the back-off's ceiling
//! cargo run -p supervisor --example supervisor_crash_kinds  # panic, abort, SIGKILL
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::{Child, Fork};
use common::{describe, procfs, say, warn};
use nix::errno::Errno;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow::*, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, Pid};

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(None) => {}
        Ok(Some(sig)) => std::process::exit(128 + sig as i32),
        Err(e) => {
            warn!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<Option<Signal>, Box<dyn Error>> {
    // SIGCHLD, SIGINT and SIGTERM stay blocked: each one sent waits, pending,
    // until taken with sigtimedwait. None is lost; no handler interrupts.
    let stops = stop_signals()?;
    let mut waited = stops;
    waited.add(Signal::SIGCHLD);
    sigprocmask(SIG_BLOCK, Some(&waited), None)?;
    common::out::set_role("supervisor");
    let (n, limit) = (args.workers, args.max_restarts);
    say!("keeping {n} workers alive; one crashing over {limit} times in the window is given up");
    // Dropping a slot on an error path kills and reaps its worker (common's `Child`).
    let mut slots: Vec<Slot> = (0..n).map(|_| Slot::default()).collect();
    let ended = supervise(&mut slots, args, &stops, &waited)?;
    match ended {
        None => say!("the demonstration is over, stopping as SIGTERM would"),
        Some(sig) => say!("{} received, stopping", sig.as_str()),
    }
    stop_all(&mut slots, args)?;
    // A SIGINT or SIGTERM sent during the stop still waits, blocked: it decides too.
    if let Some(sig) = ended.or(take_signal(&stops, Duration::ZERO)?) {
        let code = 128 + sig as i32;
        say!(
            "stopped by {} from outside: exiting with {code}",
            sig.as_str()
        );
        return Ok(Some(sig));
    }
    // One sent from now on ends the process at once: death by that signal.
    sigprocmask(SIG_UNBLOCK, Some(&stops), None)?;
    say!("all checks passed");
    Ok(None)
}

/// The supervisor's loop: reap, decide, (re)start, count, sleep until a signal.
fn supervise(slots: &mut [Slot], args: &Args, stops: &SigSet, waited: &SigSet) -> SigResult {
    let window = Duration::from_secs_f64(args.window * args.pace.factor().max(1.0));
    let mut steady = None;
    for slot in slots.iter_mut() {
        slot.restart_at = Some(Instant::now()); // the first start
    }
    loop {
        let mut changed = false;
        // One SIGCHLD may stand for several deaths: reap until none is left.
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => status,
                Err(e) => return Err(format!("waitpid: {e}").into()),
            };
            let pid = status.pid().map_or(0, Pid::as_raw);
            if let Some(i) = slots.iter().position(|s| s.pid() == Some(pid)) {
                slots[i].died(i, status, args, window);
                changed = true;
            }
        }
        let now = Instant::now();
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.restart_at.is_some_and(|t| t <= now) {
                slot.start(i, args, stops)?;
                changed = true;
            }
        }
        // It never hangs, even if restarting is broken: a deadline, then an error.
        let late = |s: &Slot| s.restart_at.is_some_and(|t| now > t + SYSTEM_TIMEOUT);
        if let Some(i) = slots.iter().position(late) {
            let i = i + 1;
            return Err(format!("Waiting: worker {i} still down 10 s after its back-off").into());
        }
        if changed && slots.iter().all(|s| s.restart_at.is_none()) {
            check_live(slots)?;
        }
        // Once every planned crash has happened, show the steady state, then stop.
        if slots.iter().enumerate().all(|(i, s)| s.settled(i, args)) {
            let until = *steady.get_or_insert_with(|| {
                say!("steady: every planned crash has happened; stopping soon");
                now + args.pace.secs(STEADY)
            });
            if now >= until {
                return Ok(None);
            }
        }
        let next = slots.iter().filter_map(|s| s.restart_at);
        let next = next.map(|t| if t > now { t } else { t + SYSTEM_TIMEOUT });
        let timeout = next
            .chain(steady)
            .min()
            .map_or(TICK, |t| (t - now).min(TICK));
        if let Some(sig) = take_signal(waited, timeout)?.filter(|&s| s != Signal::SIGCHLD) {
            return Ok(Some(sig));
        }
    }
}

/// One worker's place: its process, its starts, its crashes in the window.
#[derive(Default)]
struct Slot {
    child: Option<Child>,
    last: i32,
    starts: u32,
    crashes: Vec<Instant>,
    restart_at: Option<Instant>,
    given_up: bool,
}

impl Slot {
    /// The step this start crashes at: the last worker's first --max-restarts
    /// + 1 starts at step 1; worker k's first start at step k + 1 (if allowed).
    fn plan(&self, i: usize, args: &Args) -> Option<u32> {
        let last = i + 1 == args.workers as usize && self.starts <= args.max_restarts + 1;
        let once = self.starts == 1 && args.max_restarts > 0;
        (last || once).then_some(if last { 1 } else { i as u32 + 2 })
    }

    fn settled(&self, i: usize, args: &Args) -> bool {
        self.given_up || (self.child.is_some() && self.plan(i, args).is_none())
    }

    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(Child::raw)
    }

    /// Fork the worker's next start (common's `Fork` makes the `fork` call,
    /// asks for SIGKILL should the supervisor die, and leaves with `_exit`).
    fn start(&mut self, i: usize, args: &Args, stops: &SigSet) -> Result<(), Box<dyn Error>> {
        self.starts += 1;
        let (start, crash_at, stops) = (self.starts, self.plan(i, args), *stops);
        let step = args.pace.secs(STEP).max(Duration::from_millis(5));
        let child = Fork::new(&format!("worker {}", i + 1))
            .run(move || worker(start, crash_at, step, &stops))?;
        let (n, pid) = (i + 1, child.raw());
        match start {
            1 => say!("started worker {n} as pid {pid}"),
            _ => say!(
                "restarted worker {n}: pid {} is replaced by pid {pid}",
                self.last
            ),
        }
        (self.child, self.last, self.restart_at) = (Some(child), pid, None);
        Ok(())
    }

    /// Log how it died; restart it after a doubling back-off, or give up.
    fn died(&mut self, i: usize, status: WaitStatus, args: &Args, window: Duration) {
        let planned = self.plan(i, args).is_some()
            && matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _));
        let why = if planned {
            "as planned"
        } else {
            "not in its plan: from outside?"
        };
        let (n, pid, now) = (i + 1, self.last, Instant::now());
        say!("worker {n} (pid {pid}) died: {} ({why})", describe(status));
        if let Some(mut child) = self.child.take() {
            child.set_reaped(status);
        }
        self.crashes.retain(|&t| now.duration_since(t) <= window);
        self.crashes.push(now);
        let (k, limit, w) = (self.crashes.len(), args.max_restarts, window.as_secs_f64());
        if k > limit as usize {
            let times = if k == 1 {
                "once".into()
            } else {
                format!("{k} times")
            };
            say!("worker {n} crashed {times} within {w:.1} s, more than --max-restarts {limit}: giving up on it");
            self.given_up = true;
            return;
        }
        let delay = (BACKOFF_BASE * 2f64.powi(k as i32 - 1)).min(BACKOFF_CAP);
        say!("back-off for worker {n}: crash {k} in the window, restart in {delay:.1} s (x pace)");
        self.restart_at = Some(now + args.pace.secs(delay));
    }
}

/// Wait until `/proc` lists exactly the workers the supervisor runs: its
/// children, not zombies (unless one died meanwhile: it is counted later).
fn check_live(slots: &[Slot]) -> Result<(), Box<dyn Error>> {
    let me = getpid().as_raw();
    let mut expected: Vec<i32> = slots.iter().filter_map(Slot::pid).collect();
    expected.sort();
    let given_up = slots.iter().filter(|s| s.given_up).count();
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    loop {
        let live = procfs::processes(|s| s.ppid == me && !matches!(s.state, 'Z' | 'X'))?;
        let mut live: Vec<i32> = live.iter().map(|s| s.pid).collect();
        live.sort();
        if live == expected {
            let (k, n) = (live.len(), slots.len());
            say!("live workers in /proc: {k} of {n} slots, {given_up} given up (pids {live:?})");
            return Ok(());
        } else if expected.iter().any(|&p| procfs::is_dead(p, None)) {
            return Ok(());
        } else if Instant::now() > deadline {
            return Err(format!("/proc lists workers {live:?}, expected {expected:?}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// SIGTERM to every worker; each gets its step plus [`GRACE`] to finish and
/// exit 0, then SIGKILL. Then no child of ours may be left in `/proc`.
fn stop_all(slots: &mut [Slot], args: &Args) -> Result<(), Box<dyn Error>> {
    say!("SIGTERM to every worker");
    for child in slots.iter().filter_map(|s| s.child.as_ref()) {
        child.signal(Signal::SIGTERM)?;
    }
    let (limit, mut problems) = (args.pace.secs(STEP) + GRACE, Vec::new());
    for (i, slot) in slots.iter_mut().enumerate() {
        let Some(mut child) = slot.child.take() else {
            continue;
        };
        let (n, pid) = (i + 1, child.raw());
        let status = match child.wait_timeout(limit)? {
            Some(status) => status,
            None => {
                child.signal(Signal::SIGKILL)?;
                problems.push(format!("worker {n} ignored SIGTERM for {limit:?}: SIGKILL"));
                child.wait()?
            }
        };
        // Exit 0: a graceful stop. Or it crashed as planned just before.
        let (ok, how) = (WaitStatus::Exited(child.pid(), 0), describe(status));
        if status == ok || matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)) {
            say!("worker {n} (pid {pid}) stopped: {how}");
        } else {
            problems.push(format!("worker {n} (pid {pid}): {how}"));
        }
    }
    let me = getpid().as_raw();
    let left = procfs::processes(|s| s.ppid == me)?;
    if !left.is_empty() || !problems.is_empty() {
        return Err(format!("{problems:?}; children left in /proc: {left:?}").into());
    }
    say!("no worker left: /proc lists no child of {me}");
    Ok(())
}

/// Work in steps; crash as planned; on SIGTERM or SIGINT (blocked: pending
/// until taken) finish the current step and exit 0.
fn worker(start: u32, crash_at: Option<u32>, step: Duration, stops: &SigSet) -> i32 {
    match crash_at {
        Some(k) => say!("start {start}: will crash at step {k} (SIGKILL to itself)"),
        None => say!("start {start}: healthy, working until told to stop"),
    }
    for n in 1.. {
        std::thread::sleep(step); // one step of work
        if let Ok(Some(sig)) = take_signal(stops, Duration::ZERO) {
            say!("{}: finished step {n}, exiting 0", sig.as_str());
            return 0;
        } else if crash_at == Some(n) {
            say!("step {n}: crashing on purpose (SIGKILL to itself)");
            let _ = nix::sys::signal::kill(getpid(), Signal::SIGKILL);
        }
    }
    1
}

/// SIGTERM, and SIGINT unless it came ignored, as a shell without job control
/// starts background jobs (`cmd &` in a script): keep it ignored then.
fn stop_signals() -> Result<SigSet, Box<dyn Error>> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    // SAFETY: a null new action only reads the current one into `old`.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    if unsafe { libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old) } != 0 {
        return Err("sigaction(SIGINT): cannot read it".into());
    }
    if old.sa_sigaction != libc::SIG_IGN {
        set.add(Signal::SIGINT);
    }
    Ok(set)
}

/// Take one pending signal of `set`, waiting at most `timeout` for one.
fn take_signal(set: &SigSet, timeout: Duration) -> SigResult {
    let (s, ns) = (timeout.as_secs() as _, timeout.subsec_nanos() as _);
    let ts = libc::timespec {
        tv_sec: s,
        tv_nsec: ns,
    };
    // SAFETY: a valid signal set and timespec; no siginfo asked for.
    match unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) } {
        -1 if matches!(Errno::last(), Errno::EAGAIN | Errno::EINTR) => Ok(None),
        -1 => Err(format!("sigtimedwait: {}", Errno::last()).into()),
        sig => Ok(Signal::try_from(sig).ok()),
    }
}

type SigResult = Result<Option<Signal>, Box<dyn Error>>;

/// Demonstrate how a supervisor keeps N workers alive: back-off, a restart limit, a graceful stop.
#[derive(Parser)]
struct Args {
    /// Workers to keep alive (1-16)
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    workers: u32,
    /// Restarts of one worker allowed within the window; one crash more and it is given up (0-20)
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=20))]
    max_restarts: u32,
    /// The restart window in seconds, stretched by a pace above 1 (1-3600)
    #[arg(long, value_name = "X", default_value_t = 10.0, allow_negative_numbers = true,
          value_parser = common::args::number(1.0, 3600.0))]
    window: f64,
    #[command(flatten)]
    pace: common::Pace,
}

// Seconds at pace 1: a worker's step, the first back-off (doubled at each
// crash) and its ceiling, the steady show. The limits are not scaled.
const STEP: f64 = 0.5;
const BACKOFF_BASE: f64 = 0.2;
const BACKOFF_CAP: f64 = 5.0;
const STEADY: f64 = 3.0;
const GRACE: Duration = Duration::from_secs(2);
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_secs(1);
