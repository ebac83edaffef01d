//! Demonstrate how a parent stops a child that overruns its deadline:
//! SIGTERM first, which a process can block, then SIGKILL, which it cannot.
//!
//! The child blocks SIGTERM, as a process in the middle of something it will
//! not leave halfway might, and works far longer than anyone will wait.
//! After its deadline (2 s at pace 1) the parent sends SIGTERM. A blocked
//! signal is not lost and not delivered: it is generated and stays pending,
//! which the parent checks in `/proc/<pid>/status` (`ShdPnd`, the set
//! pending for the whole process, where `kill` puts it). After a grace
//! period (1 s) the parent sends SIGKILL, which cannot be blocked, caught or
//! ignored, and `waitpid` reports "killed by SIGKILL".
//!
//! What to observe, in another terminal, while the child runs:
//! `grep -E 'SigBlk|ShdPnd' /proc/<child pid>/status`. The masks are
//! hexadecimal, bit n-1 standing for signal n: SIGTERM (15) is bit 14,
//! `0000000000004000`.
//!
//! The fork is `common::fork::spawn` here (main.rs writes it out); the wait
//! is its `Child::wait_timeout`: `waitpid` after a sleep in `poll` on a pidfd.
//!
//! ```text
//! cargo run -p multiple_processes --example multiple_processes_deadline
//! cargo run -p multiple_processes --example multiple_processes_deadline -- --deadline 5 --grace 3
//! ```

use std::error::Error;
use std::time::Duration;

use clap::Parser;
use common::{describe, procfs, say, warn, Semaphore};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::WaitStatus;

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let deadline = args.pace.secs(args.deadline);
    let grace = args.pace.secs(args.grace);
    let ready = Semaphore::shared(0)?;
    let mut child = common::fork::spawn("overrunner", || -> Result<i32, Box<dyn Error>> {
        SigSet::from(Signal::SIGTERM)
            .thread_block()
            .map_err(|e| format!("sigprocmask: {e}"))?;
        say!("SIGTERM blocked; working far longer than anyone will wait");
        ready.post()?;
        // "Forever", with a cap so that nothing can outlive a broken parent.
        std::thread::sleep(SYSTEM_TIMEOUT * 4);
        say!("nobody stopped me");
        Ok(3)
    })?;
    let pid = child.raw();
    if !ready.wait_timeout(SYSTEM_TIMEOUT)? {
        return Err("the overrunning child never got ready".into());
    }
    // Bit n-1 stands for signal n: SIGTERM (15) is bit 14, 0x4000.
    let term_bit = 1u64 << (Signal::SIGTERM as i32 - 1);
    if signal_mask(pid, "SigBlk")? & term_bit == 0 {
        return Err(format!("/proc/{pid}/status does not show SIGTERM blocked").into());
    }
    say!("/proc/{pid}/status SigBlk shows SIGTERM blocked in the child (mask {term_bit:#x})");

    if let Some(s) = child.wait_timeout(deadline)? {
        return Err(format!("the overrunning child ended by itself: {}", describe(s)).into());
    }
    say!(
        "child {pid} still runs after its deadline of {:.2} s: sending SIGTERM",
        deadline.as_secs_f64()
    );
    child.signal(Signal::SIGTERM)?;
    // kill(2) has returned, so the signal has been generated: blocked, it
    // waits in the process's pending set instead of being delivered.
    if signal_mask(pid, "ShdPnd")? & term_bit == 0 {
        return Err(format!("/proc/{pid}/status does not show SIGTERM pending").into());
    }
    say!(
        "/proc/{pid}/status ShdPnd shows SIGTERM pending: generated, but blocked, so not delivered"
    );

    if let Some(s) = child.wait_timeout(grace)? {
        return Err(format!("the child ended despite blocking SIGTERM: {}", describe(s)).into());
    }
    say!(
        "still running after a grace period of {:.2} s: sending SIGKILL",
        grace.as_secs_f64()
    );
    child.signal(Signal::SIGKILL)?;
    let status = child
        .wait_timeout(SYSTEM_TIMEOUT)?
        .ok_or("the child survived SIGKILL")?;
    say!("reaped the overrunning child {pid}: {}", describe(status));
    if !matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)) {
        return Err(format!("expected killed by SIGKILL, got {}", describe(status)).into());
    }
    say!("all checks passed");
    Ok(())
}

/// A signal set from `/proc/<pid>/status` (`SigBlk`, `ShdPnd`, `SigIgn`...),
/// a hexadecimal mask in which bit `n - 1` stands for signal `n`.
fn signal_mask(pid: i32, field: &str) -> Result<u64, Box<dyn Error>> {
    let hex = procfs::status_field(pid, field)?;
    u64::from_str_radix(&hex, 16).map_err(|e| format!("/proc/{pid}/status: {field}: {e}").into())
}

/// Demonstrate how a parent stops an overrunning child: SIGTERM, then SIGKILL.
#[derive(Parser)]
struct Args {
    /// Seconds the child gets before SIGTERM, scaled by the pace (0-60)
    #[arg(long, value_name = "X", default_value_t = 2.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 60.0))]
    deadline: f64,
    /// Seconds between SIGTERM and SIGKILL, scaled by the pace (0-60)
    #[arg(long, value_name = "X", default_value_t = 1.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 60.0))]
    grace: f64,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the system gets to do what the parent waits for (the child to
/// get ready, to die of SIGKILL). A safety limit, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(30);
