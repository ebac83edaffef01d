//! Demonstrate what happens to a worker without a SIGTERM handler: the
//! signal's default action ends it on the spot, mid-step, and the results it
//! kept in memory are lost.
//!
//! The same worker as the lesson's (numbered steps, results kept in memory
//! and saved only at clean-up), but it installs no handler. When it has
//! begun step `--signal-at`, the parent sends SIGTERM. The kernel ends the
//! worker at once: no line of its own code runs after the signal, so the
//! clean-up never happens. The parent checks that the worker was killed by
//! SIGTERM and that it saved nothing.
//!
//! What to observe: `grep SigCgt /proc/<worker>/status` shows bit 14
//! (0x4000) clear: SIGTERM is not caught (compare with `cargo run -p
//! signals`).
//!
//! ```text
//! cargo run -p signals --example signals_no_handler
//! cargo run -p signals --example signals_no_handler -- --signal-at 5
//! ```

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::spawn;
use common::{describe, say, warn, Pace, Shared};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

/// The worker: numbered steps, results kept in memory and saved only at
/// clean-up, which it reaches only if something tells its loop to stop.
fn worker_loop(report: &Report, pace: Pace) -> Result<(), Box<dyn Error>> {
    let me = std::process::id();
    say!("no SIGTERM handler: the default action ends me (see: grep SigCgt /proc/{me}/status)");
    let mut results: Vec<u64> = Vec::new();
    let give_up = Instant::now() + SYSTEM_TIMEOUT * 4;
    while Instant::now() < give_up {
        let step = results.len() as u64 + 1;
        report.started.store(step, SeqCst);
        results.push(step);
        pace.sleep(0.5);
        report.finished.store(step, SeqCst);
    }
    // The clean-up a SIGTERM never lets it reach.
    report.saved.store(results.len() as u64, SeqCst);
    Err("nobody stopped me".into())
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    // common::Shared maps the report (anonymous, MAP_SHARED); common's spawn
    // forks (PR_SET_PDEATHSIG, `_exit`), and its Child reaps on drop.
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
    if status != WaitStatus::Signaled(pid, Signal::SIGTERM, false) {
        return Err(format!("the worker without a handler {}", describe(status)).into());
    }
    if report.saved.load(SeqCst) != 0 {
        return Err(format!("the killed worker saved results: {:?}", *report).into());
    }
    let (started, finished) = (report.started.load(SeqCst), report.finished.load(SeqCst));
    let cut = if started > finished {
        format!("step {started} was cut off midway; ")
    } else {
        String::new()
    };
    say!("checked: {cut}the results of its {finished} finished steps were lost (0 saved)");
    say!("all checks passed");
    Ok(())
}

/// What the worker tells its parent, in shared memory. Only the worker writes.
#[derive(Default, Debug)]
struct Report {
    started: AtomicU64,  // the last step begun
    finished: AtomicU64, // the last step completed
    saved: AtomicU64,    // the results saved at clean-up
}

/// Demonstrate a worker without a SIGTERM handler losing its results.
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
