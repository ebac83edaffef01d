//! Demonstrate how a SIGTERM handler that only sets a flag lets a worker stop
//! cleanly: it finishes the step it is in, saves its results, and exits 0.
//!
//! The parent forks a worker that runs numbered steps and keeps each step's
//! result in memory. When the worker has begun step `--signal-at`, the parent
//! sends it SIGTERM. The handler only stores `true` in an atomic; the worker's
//! loop sees the flag between two steps, saves its results (its clean-up) and
//! exits 0. In shared memory it reports the step the signal came in and the
//! steps it began and finished; the parent checks that it finished that very
//! step, began no other, and saved every result.
//!
//! What to observe, while the worker runs: `grep SigCgt /proc/<worker>/status`
//! has bit 14 (0x4000) set: signal 15, SIGTERM, is caught.
//!
//! ```text
//! cargo run -p signals
//! cargo run -p signals -- --signal-at 5                # SIGTERM in step 5
//! cargo run -p signals --example signals_no_handler    # no handler: results lost
//! cargo run -p signals --example signals_kill          # SIGCHLD; kill(pid, 0)
//! cargo run -p signals --example signals_signalfd      # signals read as data
//! cargo run -p signals --example signals_uncatchable   # SIGKILL, SIGSTOP
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::spawn;
use common::{describe, say, warn, Pace, Shared};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::WaitStatus;

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

// The worker's flags, set by its handler (after `fork` it has its own copy).
static STOP: AtomicBool = AtomicBool::new(false);
static STEP_NOW: AtomicU64 = AtomicU64::new(0);
static SIGNALLED_IN: AtomicU64 = AtomicU64::new(0);

/// The SIGTERM handler. It may run between any two instructions of the
/// worker, even inside `malloc`, so it makes only async-signal-safe calls:
/// loads and stores of lock-free atomics. No `say!`, no `Vec::push`.
extern "C" fn on_sigterm(_: c_int) {
    SIGNALLED_IN.store(STEP_NOW.load(SeqCst), SeqCst);
    STOP.store(true, SeqCst);
}

/// The worker: numbered steps until SIGTERM, results kept in memory and saved
/// only at clean-up (a stand-in for writing a file).
fn worker_loop(report: &Report, pace: Pace) -> Result<(), Box<dyn Error>> {
    let flags = SaFlags::SA_RESTART; // see README.md: not every call restarts
    let action = SigAction::new(SigHandler::Handler(on_sigterm), flags, SigSet::empty());
    // SAFETY: the handler only touches lock-free atomics.
    unsafe { sigaction(Signal::SIGTERM, &action) }?;
    let me = std::process::id();
    say!("SIGTERM handler installed: it only sets a flag (see: grep SigCgt /proc/{me}/status)");
    let term = SigSet::from(Signal::SIGTERM);
    let mut results: Vec<u64> = Vec::new();
    loop {
        // Check the flag and begin the step with SIGTERM blocked: a signal
        // arriving meanwhile stays pending, so it cannot fall in between.
        term.thread_block()?;
        let (stop, step) = (STOP.load(SeqCst), results.len() as u64 + 1);
        if !stop {
            STEP_NOW.store(step, SeqCst);
            report.started.store(step, SeqCst);
        }
        term.thread_unblock()?; // a pending SIGTERM's handler runs here
        if stop {
            break;
        }
        // The step runs to its end: the handler only set a flag. (A signal
        // interrupts the sleep; `thread::sleep` sleeps the rest.)
        results.push(step);
        pace.sleep(0.5);
        report.finished.store(step, SeqCst);
    }
    // Clean-up, in the main loop, where any call is allowed.
    let at = SIGNALLED_IN.load(SeqCst);
    report.signalled_in.store(at, SeqCst);
    report.saved.store(results.len() as u64, SeqCst);
    let done = results.len();
    say!("SIGTERM came in step {at}; I finished step {done}, began no other, saved {done} results; exiting 0");
    Ok(())
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    // common::Shared maps the report (anonymous, MAP_SHARED), so the parent
    // sees what the worker writes; common's spawn forks (the child asks for
    // PR_SET_PDEATHSIG, leaves with `_exit`), and its Child reaps on drop.
    let report = Shared::new(Report::default())?;
    let mut worker = spawn("worker", || worker_loop(&report, args.pace))?;
    let pid = worker.pid();
    let limit = SYSTEM_TIMEOUT + args.pace.secs(0.5) * (args.signal_at + 2);
    let (deadline, signal_at) = (Instant::now() + limit, u64::from(args.signal_at));
    while report.started.load(SeqCst) < signal_at {
        if Instant::now() > deadline || worker.try_wait()?.is_some() {
            return Err(format!("worker {pid} never began step {signal_at}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let step = report.started.load(SeqCst);
    say!("worker {pid} is in step {step}: kill({pid}, SIGTERM)");
    kill(pid, Signal::SIGTERM)?;
    let status = (worker.wait_timeout(limit)?)
        .ok_or_else(|| format!("worker {pid} did not end within {limit:?} of SIGTERM"))?;

    say!("worker {pid} {}", describe(status));
    if status != WaitStatus::Exited(pid, 0) {
        return Err(format!("the worker with a handler {}", describe(status)).into());
    }
    let at = report.signalled_in.load(SeqCst);
    let done = report.finished.load(SeqCst);
    if at < signal_at || report.started.load(SeqCst) != at || done != at {
        return Err(format!("SIGTERM in step {at}, but the worker says {:?}", *report).into());
    }
    if report.saved.load(SeqCst) != done {
        return Err(format!("not all {done} results saved: {:?}", *report).into());
    }
    say!("checked: SIGTERM came in step {at}; step {at} was finished and no step began after it; all {done} results saved");
    say!("all checks passed");
    Ok(())
}

/// What the worker tells its parent, in shared memory. Only the worker writes.
#[derive(Default, Debug)]
struct Report {
    started: AtomicU64,      // the last step begun
    finished: AtomicU64,     // the last step completed
    signalled_in: AtomicU64, // the step begun most recently when SIGTERM came
    saved: AtomicU64,        // the results saved at clean-up
}

/// Demonstrate a SIGTERM handler that only sets a flag: a graceful shutdown.
#[derive(Parser)]
struct Args {
    /// The worker's step in which the parent sends SIGTERM (1-50)
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    signal_at: u32,
    #[command(flatten)]
    pace: Pace,
}

/// How long the system gets to fork and end a process; not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
