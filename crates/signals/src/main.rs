//! Demonstrate how a process takes signals safely: handlers that only set a
//! flag while the main loop does the work, a graceful shutdown on SIGTERM,
//! SIGCHLD, `kill` and signal 0, a blocked signal read from a `signalfd`,
//! and the two signals that no process can catch.
//!
//! Part 1 forks a worker that runs numbered steps and keeps their results in
//! memory. Its SIGTERM handler only sets a flag; the worker finishes the
//! step it is in, saves its results (its clean-up) and exits 0. It reports,
//! in shared memory, the step the signal arrived in and the steps it
//! started and finished; the parent checks them. A second worker without a
//! handler is killed mid-run by the same signal and loses its results.
//! Part 2 blocks SIGCHLD, installs a flag handler for it and waits with
//! `ppoll`, which unblocks and sleeps in one step. A child is sent SIGUSR1
//! with `kill`; SIGCHLD wakes the parent, which reaps in its main loop.
//! `kill(pid, 0)` (signal 0: check, send nothing) succeeds while the child
//! lives, still succeeds while it is a zombie, and fails with ESRCH once
//! reaped. Part 3 blocks SIGUSR1 and SIGCHLD and reads them as data from a
//! `signalfd`: the sender's PID, the child's exit status. It waits a while
//! for a SIGUSR1 from another terminal, shows its own signal masks from
//! `/proc/self/status`, and proves that three SIGUSR1 sent while blocked
//! arrive as one. Part 4 shows that SIGKILL and SIGSTOP cannot be caught:
//! `sigaction` refuses them with EINVAL, and a child that installed a
//! handler for every other signal survives SIGTERM, is stopped by SIGSTOP
//! and dies of SIGKILL.
//!
//! Key points:
//! - A handler runs on top of whatever the process was doing, perhaps in
//!   the middle of `malloc` or while holding stdout's lock. So it may only
//!   make async-signal-safe calls (see `man 7 signal-safety`): no printing,
//!   no allocation, no locks. A store to a lock-free atomic is safe. Set a
//!   flag, return, and do the work in the main loop.
//! - "Check the flag, then act" races with a signal arriving in between.
//!   Block the signal around the check (`sigprocmask`), or wait with
//!   `ppoll`/`sigsuspend`, which unblock and sleep atomically. `pause()`
//!   after a check can sleep forever.
//! - Standard signals do not queue: one pending SIGUSR1 absorbs the next
//!   ones. A SIGCHLD may stand for several ended children, so reap in a loop.
//! - `signalfd` is the modern way: block the signal, then read it like data
//!   from a file descriptor, in the same `poll` loop as pipes and sockets,
//!   with no handler and none of a handler's rules.
//! - SIGKILL and SIGSTOP cannot be caught, blocked or ignored: that is how
//!   an administrator can always stop a process.
//! - We register handlers with nix's `sigaction` and a static atomic. The
//!   `signal-hook` crate does the same (`signal_hook::flag::register`) and
//!   adds iterators and guards against misuse; it is a fine choice in an
//!   application, but here the mechanism is the point, and nix is already
//!   a dependency.
//!
//! What to observe, in another terminal while part 3 waits:
//! `grep Sig /proc/<pid>/status` shows SigBlk (blocked), SigIgn (ignored;
//! Rust's runtime ignores SIGPIPE) and SigCgt (caught) as hex bit masks,
//! bit n-1 for signal n. `kill -USR1 <pid>` ends the wait; the lesson prints
//! your shell's PID as the sender. During part 4, `ps -o pid,stat,comm
//! --ppid <pid>` shows the stopped child in state `T`.
//! `scripts/signals.sh` does this for you.
//!
//! The pitfall: `println!` in a handler. Rust's stdout lock is re-entrant,
//! so a handler that interrupts a `println!` does not wait for itself: the
//! inner `RefCell` borrow panics, and a panic cannot unwind out of an
//! `extern "C"` handler, so the process aborts. The real hang is the
//! allocator: `format!` allocates, and glibc's malloc lock may be held by
//! the code the signal interrupted. Set a flag; print in the main code. And `kill(pid, 0)` says a PID exists, not that it is still
//! your process: a zombie answers, and after reaping the PID may be reused.
//! A pidfd (`pidfd_send_signal`) names one process for good.
//!
//! Seed: none among the fourteen; lesson 16 here, answering the C++ signals
//! example (`signals.cpp`) and the JS one (`17_process_signals.js`). The C++
//! SIGCHLD demo counts one wake-up per child, which signals do not promise;
//! this lesson shows them merging and checks every claim on the system.
//!
//! Run with:
//! ```text
//! cargo run -p signals
//! cargo run -p signals -- --window 30      # 30 s to send SIGUSR1 yourself
//! cargo run -p signals -- --signal-at 5    # SIGTERM the worker in step 5
//! ```
//!
//! Try it:
//! - Replace `SA_RESTART` in `install` with no flags, and make the worker's
//!   step a blocking `read` on a pipe: the handler makes it fail with EINTR.
//! - Run with `--window 60` and, during the wait, send `kill -USR2 <pid>`:
//!   SIGUSR2 is neither blocked nor caught, so its default action ends the
//!   lesson (its children go too: they asked for PR_SET_PDEATHSIG).
//! - In part 3, have the sender send a real-time signal (`SIGRTMIN`) three
//!   times (with `libc::kill` and `libc::sigaddset`: nix's `Signal` has no
//!   real-time signals): real-time signals queue, so all three arrive.
//!
//! See also: `zombie` (reaping from a SIGCHLD handler), `exec` (killing a
//! runaway child), `multiple_processes` (SIGSTOP and SIGCONT).

use std::error::Error;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::fork::spawn;
use common::opts::{Args, Opt, Pace, Spec};
use common::{describe, procfs, say, warn, Shared};
use nix::errno::Errno;
use nix::poll::{poll, ppoll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{
    kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::wait::WaitStatus;
use nix::unistd::{getpid, pause, Pid};

const SPEC: Spec = Spec {
    name: "signals",
    about: "Demonstrate signal handlers that only set a flag, graceful shutdown, SIGCHLD, kill, signalfd, and the two signals nobody can catch.",
    options: &[
        Opt::int(
            "signal-at",
            "the step of the worker in which the parent sends SIGTERM",
            3,
            1,
            50,
        ),
        Opt::float(
            "window",
            "seconds part 3 waits for a SIGUSR1 from another terminal",
            5.0,
            0.0,
            600.0,
        ),
    ],
};

/// How long one step of the worker lasts, for a human watching. Scaled by
/// the pace; the step also does some real computing.
const STEP_SECS: f64 = 0.3;

/// How long the system gets to do what the lesson waits for (a child to
/// start, end, stop). A safety floor, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    let signal_at = args.int("signal-at");
    graceful_shutdown(signal_at, pace)?;
    sigchld_and_kill(pace)?;
    read_from_a_signalfd(pace.secs(args.float("window")))?;
    uncatchable(pace)?;
    say!("all checks passed");
    Ok(())
}

/// Install `handler` for `signal`; returns the previous action, to restore.
/// SA_RESTART: some system calls the handler interrupted (`read` on a pipe,
/// `waitpid`) resume by themselves instead of failing with EINTR; others
/// fail with EINTR whatever the flag (`poll`, `ppoll`, `select`,
/// `epoll_wait`, `nanosleep`, `sigsuspend`, `sem_timedwait`: signal(7)).
fn install(signal: Signal, handler: extern "C" fn(c_int)) -> Result<SigAction, Box<dyn Error>> {
    let action = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: every handler in this file only touches lock-free atomics,
    // which is async-signal-safe.
    unsafe { sigaction(signal, &action) }.map_err(|e| format!("sigaction({signal}): {e}").into())
}

/// Put back an action saved by `install`.
fn restore(signal: Signal, previous: &SigAction) -> Result<(), Box<dyn Error>> {
    // SAFETY: `previous` is the action that was in place before.
    unsafe { sigaction(signal, previous) }.map_err(|e| format!("sigaction({signal}): {e}"))?;
    Ok(())
}

/// Poll `cond` every millisecond until it holds, for at most `limit`.
fn wait_until(limit: Duration, what: &str, cond: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting until {what}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 1: the handler sets a flag; the worker's main loop stops cleanly.
// ---------------------------------------------------------------------------

/// What a worker tells its parent, in shared memory. Only the worker writes.
#[derive(Default)]
struct Report {
    /// The last step begun, and the last step completed.
    started: AtomicU64,
    finished: AtomicU64,
    /// The step begun most recently when SIGTERM arrived (0: no signal yet),
    /// and whether that step was still running then.
    signalled_in: AtomicU64,
    mid_step: AtomicBool,
    /// The results saved at clean-up: how many, and their sum.
    saved: AtomicU64,
    saved_sum: AtomicU64,
}

// The worker's own flags. After `fork` each child has its own copy.
static STOP: AtomicBool = AtomicBool::new(false);
static STEP_NOW: AtomicU64 = AtomicU64::new(0);
static FINISHED: AtomicU64 = AtomicU64::new(0);
static SIGNALLED_IN: AtomicU64 = AtomicU64::new(0);
static SIGNALLED_MID: AtomicBool = AtomicBool::new(false);

/// The SIGTERM handler. It may run between any two instructions of the
/// worker, even inside `malloc` or while stdout's lock is held, so it only
/// makes async-signal-safe calls: loads and stores of lock-free atomics.
/// No `say!` (a lock and an allocation), no `Vec::push`.
extern "C" fn on_sigterm(_: c_int) {
    let step = STEP_NOW.load(SeqCst);
    SIGNALLED_IN.store(step, SeqCst);
    SIGNALLED_MID.store(FINISHED.load(SeqCst) < step, SeqCst);
    STOP.store(true, SeqCst);
}

/// One step's work: some real computing (and a pause for a human). The
/// parent recomputes it to check what the worker saved.
fn step_result(step: u64) -> u64 {
    let mut x = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn expected_sum(steps: u64) -> u64 {
    (1..=steps).map(step_result).fold(0, u64::wrapping_add)
}

/// The worker: numbered steps until asked to stop, results kept in memory
/// and saved only at clean-up (a stand-in for flushing a file).
fn worker(
    report: &Report,
    with_handler: bool,
    pace: Pace,
    give_up: Duration,
) -> Result<i32, Box<dyn Error>> {
    if with_handler {
        install(Signal::SIGTERM, on_sigterm)?;
        say!("SIGTERM handler installed: it only sets a flag");
    } else {
        say!("no SIGTERM handler: the default action ends the process");
    }
    let term = SigSet::from(Signal::SIGTERM);
    let deadline = Instant::now() + give_up;
    let mut results = Vec::new();
    let mut step = 0;
    loop {
        // Decide whether to begin another step with SIGTERM blocked. A
        // signal that arrives meanwhile waits (pending) until the unblock,
        // so it cannot slip in between the check and the start of a step.
        term.thread_block()?;
        let stop = STOP.load(SeqCst);
        if !stop {
            step += 1;
            STEP_NOW.store(step, SeqCst);
            report.started.store(step, SeqCst);
        }
        term.thread_unblock()?; // a pending SIGTERM is handled here
        if stop {
            break;
        }
        // The step runs to its end: the handler only sets the flag. (The
        // sleep is interrupted by the handler; `thread::sleep` resumes it.)
        results.push(step_result(step));
        pace.sleep(STEP_SECS);
        FINISHED.store(step, SeqCst);
        report.finished.store(step, SeqCst);
        if Instant::now() > deadline {
            return Err(format!("nobody stopped me within {give_up:?}").into());
        }
    }
    // Clean-up, in the main loop, where any call is allowed.
    let sum = results.iter().fold(0, |a: u64, r| a.wrapping_add(*r));
    report.saved_sum.store(sum, SeqCst);
    report.saved.store(results.len() as u64, SeqCst);
    let (at, mid) = (SIGNALLED_IN.load(SeqCst), SIGNALLED_MID.load(SeqCst));
    report.signalled_in.store(at, SeqCst);
    report.mid_step.store(mid, SeqCst);
    say!(
        "SIGTERM arrived {} step {at}; I finished step {step} and began no other, saved {} results; exiting 0",
        if mid { "during" } else { "just after" },
        results.len()
    );
    Ok(0)
}

fn graceful_shutdown(signal_at: u64, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 1: a SIGTERM handler that only sets a flag; the worker stops between steps");
    let reach = SYSTEM_TIMEOUT + pace.secs(STEP_SECS) * (signal_at as u32 + 2);
    for with_handler in [true, false] {
        let report = Shared::new(Report::default())?;
        let mut child = spawn("worker", || worker(&report, with_handler, pace, reach * 2))?;
        let pid = child.raw();
        wait_until(
            reach,
            &format!("worker {pid} began step {signal_at}"),
            || report.started.load(SeqCst) >= signal_at,
        )?;
        say!(
            "worker {pid} is in step {}: sending it SIGTERM",
            report.started.load(SeqCst)
        );
        child.signal(Signal::SIGTERM)?;
        let status = child
            .wait_timeout(reach)?
            .ok_or_else(|| format!("worker {pid} did not end after SIGTERM"))?;
        let started = report.started.load(SeqCst);
        let finished = report.finished.load(SeqCst);
        let saved = report.saved.load(SeqCst);
        say!("worker {pid} {}", describe(status));
        if with_handler {
            let at = report.signalled_in.load(SeqCst);
            if status != WaitStatus::Exited(child.pid(), 0) {
                return Err(format!("the worker with a handler {}", describe(status)).into());
            }
            if at < signal_at || started != at || finished != at {
                return Err(format!(
                    "signal in step {at}, but steps started {started}, finished {finished}"
                )
                .into());
            }
            if saved != finished || report.saved_sum.load(SeqCst) != expected_sum(finished) {
                return Err(format!("saved {saved} results, expected all {finished}").into());
            }
            say!(
                "checked: the signal came {} step {at}; step {at} was finished and no step began after it; all {saved} results saved",
                if report.mid_step.load(SeqCst) { "during" } else { "just after" }
            );
        } else {
            if status != WaitStatus::Signaled(child.pid(), Signal::SIGTERM, false) {
                return Err(format!("the worker without a handler {}", describe(status)).into());
            }
            if saved != 0 {
                return Err("the killed worker saved results".into());
            }
            let cut = if started > finished {
                format!("step {started} was cut off midway; ")
            } else {
                String::new()
            };
            say!("checked: {cut}the results of its {finished} finished steps were lost (0 saved)");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 2: SIGCHLD tells the parent a child ended; kill and signal 0.
// ---------------------------------------------------------------------------

static CHILD_ENDED: AtomicBool = AtomicBool::new(false);

/// The SIGCHLD handler: sets a flag, nothing else (async-signal-safe).
/// Reaping happens in the main loop.
extern "C" fn on_sigchld(_: c_int) {
    CHILD_ENDED.store(true, SeqCst);
}

/// What `kill(pid, 0)` says: it checks that `pid` exists and may be
/// signalled, and sends nothing.
fn probe(pid: Pid) -> String {
    match kill(pid, None) {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("{e}"),
    }
}

fn sigchld_and_kill(pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 2: SIGCHLD wakes the parent; kill sends a signal; signal 0 tests a PID");
    CHILD_ENDED.store(false, SeqCst);
    let previous = install(Signal::SIGCHLD, on_sigchld)?;
    // Keep SIGCHLD blocked except while waiting, so it cannot arrive between
    // "is the flag set?" and "sleep": that would be a wake-up lost for good.
    let chld = SigSet::from(Signal::SIGCHLD);
    let old = chld.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    let mut unblocked = old;
    unblocked.remove(Signal::SIGCHLD);
    let result = sigchld_demo(pace, &unblocked);
    old.thread_set_mask()?;
    restore(Signal::SIGCHLD, &previous)?;
    result
}

fn sigchld_demo(pace: Pace, unblocked: &SigSet) -> Result<(), Box<dyn Error>> {
    let ready = Shared::new(AtomicBool::new(false))?;
    let mut child = spawn("sleeper", || -> i32 {
        say!("sleeping in pause() until a signal ends me");
        ready.store(true, SeqCst);
        loop {
            pause();
        }
    })?;
    let pid = child.pid();
    wait_until(SYSTEM_TIMEOUT, "the sleeper is ready", || {
        ready.load(SeqCst)
    })?;
    say!("kill({pid}, 0) while it runs: {}", probe(pid));
    if kill(pid, None).is_err() {
        return Err("signal 0 failed for a running child".into());
    }
    say!("see it: ps -o pid,stat,comm --ppid {}", getpid());
    pace.sleep(1.0);
    say!("kill({pid}, SIGUSR1): the sleeper has no handler, and the default action of SIGUSR1 is to terminate");
    kill(pid, Signal::SIGUSR1).map_err(|e| format!("kill(SIGUSR1): {e}"))?;

    // The main loop: sleep until the handler has set the flag. ppoll
    // installs `unblocked` (SIGCHLD allowed) and sleeps in one step, then
    // puts SIGCHLD back to blocked.
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    while !CHILD_ENDED.load(SeqCst) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no SIGCHLD arrived".into());
        }
        match ppoll(
            &mut [],
            Some(TimeSpec::from_duration(left)),
            Some(*unblocked),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("ppoll: {e}").into()),
        }
    }
    say!("SIGCHLD: the handler set the flag; the main loop takes over");
    if procfs::wait_for(pid.as_raw(), SYSTEM_TIMEOUT, |s| {
        s.is_some_and(|s| s.state == 'Z')
    })?
    .is_err()
    {
        return Err(format!("child {pid} is not a zombie after SIGCHLD").into());
    }
    let zombie = probe(pid);
    say!("kill({pid}, 0) while it is a zombie (state Z): {zombie}: the PID still exists");
    if zombie != "ok" {
        return Err("signal 0 failed for a zombie".into());
    }
    // Reap everything that ended: one SIGCHLD can stand for several children.
    let status = child
        .try_wait()?
        .ok_or("SIGCHLD came, but the child has not ended")?;
    say!("reaped child {pid}: {}", describe(status));
    if status != WaitStatus::Signaled(pid, Signal::SIGUSR1, false) {
        return Err(format!("expected killed by SIGUSR1, got {}", describe(status)).into());
    }
    match kill(pid, None) {
        Err(Errno::ESRCH) => say!("kill({pid}, 0) after reaping: ESRCH: no such process"),
        other => return Err(format!("expected ESRCH after reaping, got {other:?}").into()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 3: block the signals and read them from a signalfd.
// ---------------------------------------------------------------------------

/// The signal masks of a process, from `/proc/<pid>/status`: bit n-1 of
/// each mask stands for signal n.
struct Masks {
    blocked: u64,
    ignored: u64,
    caught: u64,
}

fn masks(pid: u32) -> Result<Masks, Box<dyn Error>> {
    let field = |name: &str| -> Result<u64, Box<dyn Error>> {
        let hex = procfs::status_field(pid as i32, name)?;
        u64::from_str_radix(&hex, 16).map_err(|e| format!("/proc/{pid}/status: {name}: {e}").into())
    };
    Ok(Masks {
        blocked: field("SigBlk")?,
        ignored: field("SigIgn")?,
        caught: field("SigCgt")?,
    })
}

fn bit(signal: Signal) -> u64 {
    1 << (signal as u32 - 1)
}

/// A mask in words: "SIGUSR1 SIGCHLD".
fn names(mask: u64) -> String {
    let mut found = Vec::new();
    for n in 1..=64 {
        if mask & (1 << (n - 1)) != 0 {
            found.push(match Signal::try_from(n) {
                Ok(s) => s.as_str().to_string(),
                Err(_) if n >= libc::SIGRTMIN() => format!("SIGRTMIN+{}", n - libc::SIGRTMIN()),
                Err(_) => format!("signal {n}"),
            });
        }
    }
    if found.is_empty() {
        "none".to_string()
    } else {
        found.join(" ")
    }
}

fn read_from_a_signalfd(window: Duration) -> Result<(), Box<dyn Error>> {
    say!("part 3: SIGUSR1 and SIGCHLD blocked and read from a signalfd");
    // A SIGCHLD handler is installed too, to show that while the signal is
    // blocked the handler never runs: the signalfd takes it.
    CHILD_ENDED.store(false, SeqCst);
    let previous = install(Signal::SIGCHLD, on_sigchld)?;
    let mut set = SigSet::from(Signal::SIGUSR1);
    set.add(Signal::SIGCHLD);
    // Block first: a signal in the set that arrives from now on stays
    // pending until the signalfd reads it (or the mask is restored).
    let old = set.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    let result = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}").into())
        .and_then(|sfd| signalfd_demo(&sfd, window));
    old.thread_set_mask()?;
    restore(Signal::SIGCHLD, &previous)?;
    result
}

fn signalfd_demo(sfd: &SignalFd, window: Duration) -> Result<(), Box<dyn Error>> {
    let me = std::process::id();
    let m = masks(me)?;
    say!(
        "/proc/{me}/status SigBlk {:016x}: {}",
        m.blocked,
        names(m.blocked)
    );
    say!(
        "/proc/{me}/status SigIgn {:016x}: {}",
        m.ignored,
        names(m.ignored)
    );
    say!(
        "/proc/{me}/status SigCgt {:016x}: {}",
        m.caught,
        names(m.caught)
    );
    let usr1_chld = bit(Signal::SIGUSR1) | bit(Signal::SIGCHLD);
    if m.blocked & usr1_chld != usr1_chld || m.caught & bit(Signal::SIGCHLD) == 0 {
        return Err("/proc does not show SIGUSR1 and SIGCHLD blocked, SIGCHLD caught".into());
    }
    if m.ignored & bit(Signal::SIGPIPE) == 0 {
        return Err("/proc does not show SIGPIPE ignored (Rust's runtime ignores it)".into());
    }
    say!("SIGPIPE is ignored by Rust's runtime (a write to a closed pipe fails with EPIPE instead); it catches SIGSEGV and SIGBUS to report a stack overflow");

    // A signalfd is a file descriptor: wait for it with poll, as for a pipe.
    say!(
        "waiting up to {:.1} s for a SIGUSR1 from outside: kill -USR1 {me}",
        window.as_secs_f64()
    );
    let deadline = Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(sfd_fd(sfd), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) => {
                say!("no SIGUSR1 from outside");
                break;
            }
            Ok(_) => {
                let mut outside = 0;
                while let Some(si) = sfd
                    .read_signal()
                    .map_err(|e| format!("read(signalfd): {e}"))?
                {
                    say!(
                        "{} from PID {} (uid {}), read from the signalfd",
                        signal_name(si.ssi_signo),
                        si.ssi_pid,
                        si.ssi_uid
                    );
                    outside += 1;
                }
                if outside > 0 {
                    break;
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll(signalfd): {e}").into()),
        }
        if left.is_zero() {
            say!("no SIGUSR1 from outside");
            break;
        }
    }

    // Now a child sends three SIGUSR1 and exits. Both are blocked here, so
    // they stay pending until we read them.
    let parent = getpid();
    let mut sender = spawn("sender", move || -> Result<i32, String> {
        for _ in 0..3 {
            kill(parent, Signal::SIGUSR1).map_err(|e| format!("kill(SIGUSR1): {e}"))?;
        }
        say!("sent my parent SIGUSR1 three times; exiting with 5");
        Ok(5)
    })?;
    let pid = sender.pid();
    // Wait until the sender has ended (a pidfd, not the signalfd), so that
    // everything it sent is pending before we read a single signal.
    let status = sender
        .wait_timeout(SYSTEM_TIMEOUT)?
        .ok_or("the sender did not end")?;
    if status != WaitStatus::Exited(pid, 5) {
        return Err(format!("the sender {}", describe(status)).into());
    }
    let (mut usr1, mut chld) = (0, 0);
    while let Some(si) = sfd
        .read_signal()
        .map_err(|e| format!("read(signalfd): {e}"))?
    {
        let from_sender = si.ssi_pid == pid.as_raw() as u32;
        match Signal::try_from(si.ssi_signo as i32) {
            Ok(Signal::SIGUSR1) if from_sender => usr1 += 1,
            Ok(Signal::SIGCHLD) if from_sender => {
                say!(
                    "read SIGCHLD from the signalfd: child {} {} with status {}",
                    si.ssi_pid,
                    if si.ssi_code == libc::CLD_EXITED {
                        "exited"
                    } else {
                        "ended"
                    },
                    si.ssi_status
                );
                if si.ssi_code != libc::CLD_EXITED || si.ssi_status != 5 {
                    return Err("the signalfd's SIGCHLD does not say exited with 5".into());
                }
                chld += 1;
            }
            _ => say!(
                "also read {} from PID {}",
                signal_name(si.ssi_signo),
                si.ssi_pid
            ),
        }
    }
    say!("the sender sent SIGUSR1 3 times while it was blocked; the signalfd delivered it {usr1} time(s): standard signals do not queue");
    if usr1 != 1 || chld != 1 {
        return Err(format!("expected 1 SIGUSR1 and 1 SIGCHLD, read {usr1} and {chld}").into());
    }
    if CHILD_ENDED.load(SeqCst) {
        return Err("the SIGCHLD handler ran although SIGCHLD was blocked".into());
    }
    say!("the SIGCHLD handler never ran: a blocked signal goes to the signalfd");
    Ok(())
}

fn sfd_fd(sfd: &SignalFd) -> std::os::fd::BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(sfd)
}

fn signal_name(signo: u32) -> String {
    Signal::try_from(signo as i32).map_or_else(|_| format!("signal {signo}"), |s| s.to_string())
}

// ---------------------------------------------------------------------------
// Part 4: SIGKILL and SIGSTOP cannot be caught.
// ---------------------------------------------------------------------------

/// What the stubborn child tells its parent, in shared memory.
#[derive(Default)]
struct Stubborn {
    ready: AtomicBool,
    installed: AtomicU32,
    /// Bit n-1: `sigaction` refused signal n.
    refused: AtomicU64,
    /// Its SigBlk after asking to block every signal.
    blocked: AtomicU64,
    /// Bit n-1: signal n was caught.
    caught: AtomicU64,
}

static CAUGHT: AtomicU64 = AtomicU64::new(0);

/// Note which signal came: one atomic `fetch_or`, async-signal-safe.
extern "C" fn note_signal(signo: c_int) {
    CAUGHT.fetch_or(1 << (signo - 1), SeqCst);
}

/// A child that tries to catch every signal there is.
fn stubborn(state: &Stubborn) -> Result<i32, Box<dyn Error>> {
    // Block everything first; signals are taken only inside sigsuspend.
    // The kernel quietly leaves SIGKILL and SIGSTOP out of the mask.
    SigSet::all().thread_block()?;
    let action = SigAction::new(
        SigHandler::Handler(note_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let mut refused = Vec::new();
    for signal in Signal::iterator() {
        // SAFETY: the handler only does an atomic fetch_or.
        match unsafe { sigaction(signal, &action) } {
            Ok(_) => {
                state.installed.fetch_add(1, SeqCst);
            }
            Err(e) => {
                state.refused.fetch_or(bit(signal), SeqCst);
                refused.push(format!("{signal}: {e}"));
            }
        }
    }
    state
        .blocked
        .store(masks(std::process::id())?.blocked, SeqCst);
    say!(
        "installed a handler for {} signals; sigaction refused {}",
        state.installed.load(SeqCst),
        refused.join(", ")
    );
    state.ready.store(true, SeqCst);
    loop {
        state.caught.store(CAUGHT.load(SeqCst), SeqCst);
        // Unblock everything and sleep, in one step; back to blocked after
        // a handler has run.
        SigSet::empty().suspend()?;
    }
}

fn uncatchable(pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 4: SIGKILL and SIGSTOP cannot be caught, blocked or ignored");
    let action = SigAction::new(
        SigHandler::Handler(note_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGKILL, Signal::SIGSTOP] {
        // SAFETY: the handler only does an atomic fetch_or.
        match unsafe { sigaction(signal, &action) } {
            Err(Errno::EINVAL) => say!("sigaction({signal}, handler) in the parent: EINVAL"),
            other => return Err(format!("sigaction({signal}) gave {other:?}, not EINVAL").into()),
        }
    }

    let state = Shared::new(Stubborn::default())?;
    let mut child = spawn("stubborn", || stubborn(&state))?;
    let pid = child.pid();
    wait_until(
        SYSTEM_TIMEOUT,
        "the stubborn child installed its handlers",
        || state.ready.load(SeqCst) || procfs::is_dead(pid.as_raw(), None),
    )?;
    let expected_refused = bit(Signal::SIGKILL) | bit(Signal::SIGSTOP);
    let all = Signal::iterator().count() as u32;
    if !state.ready.load(SeqCst)
        || state.refused.load(SeqCst) != expected_refused
        || state.installed.load(SeqCst) != all - 2
    {
        return Err("the stubborn child did not install exactly all handlers but two".into());
    }
    let blocked = state.blocked.load(SeqCst);
    say!(
        "the child asked to block every signal; its SigBlk lacks {}",
        names(!blocked & (expected_refused | bit(Signal::SIGTERM)))
    );
    if blocked & expected_refused != 0 || blocked & bit(Signal::SIGTERM) == 0 {
        return Err(format!("unexpected SigBlk {blocked:016x}").into());
    }

    child.signal(Signal::SIGTERM)?;
    wait_until(SYSTEM_TIMEOUT, "the stubborn child caught SIGTERM", || {
        state.caught.load(SeqCst) & bit(Signal::SIGTERM) != 0
    })?;
    let alive = procfs::state(pid.as_raw())?.filter(|s| *s != 'Z');
    let Some(state_now) = alive else {
        return Err("the stubborn child died of SIGTERM".into());
    };
    say!("SIGTERM to child {pid}: caught by its handler; it lives on (state {state_now})");

    child.signal(Signal::SIGSTOP)?;
    // State T; t if a debugger or strace traces the child.
    if procfs::wait_for(pid.as_raw(), SYSTEM_TIMEOUT, |s| {
        s.is_some_and(|s| matches!(s.state, 'T' | 't'))
    })?
    .is_err()
    {
        return Err("SIGSTOP did not stop the child".into());
    }
    say!("SIGSTOP to child {pid}: stopped (state T) although it tried to catch everything; see it: ps -o pid,stat,comm --ppid {}", getpid());
    pace.sleep(1.0);
    child.signal(Signal::SIGCONT)?;
    wait_until(SYSTEM_TIMEOUT, "the stubborn child caught SIGCONT", || {
        state.caught.load(SeqCst) & bit(Signal::SIGCONT) != 0
    })?;
    say!("SIGCONT: it runs again (SIGCONT can be caught, but it continues the process anyway)");

    child.signal(Signal::SIGKILL)?;
    let status = child
        .wait_timeout(SYSTEM_TIMEOUT)?
        .ok_or("the child survived SIGKILL")?;
    say!("SIGKILL to child {pid}: {}", describe(status));
    if status != WaitStatus::Signaled(pid, Signal::SIGKILL, false) {
        return Err(format!("expected killed by SIGKILL, got {}", describe(status)).into());
    }
    Ok(())
}
