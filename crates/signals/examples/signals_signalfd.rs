//! Demonstrate how a process reads signals as data from a `signalfd`, and
//! that standard signals do not queue: three SIGUSR1 sent while it is
//! blocked are read as one.
//!
//! The program blocks SIGUSR1 and SIGCHLD (a blocked signal stays pending)
//! and opens a signalfd for both. It installs a SIGCHLD handler too, to show
//! that it never runs: a blocked signal goes to the signalfd. It shows its
//! masks from `/proc/self/status` and waits `--window` seconds for a SIGUSR1
//! from another terminal, printing the sender's PID. Then a child sends it
//! SIGUSR1 three times and exits with 5; the signalfd yields one SIGUSR1 and
//! one SIGCHLD that carries the child's PID and exit status.
//!
//! What to observe, during the window: `grep Sig /proc/<pid>/status` shows
//! SigBlk (blocked), SigIgn (ignored) and SigCgt (caught) as hex masks, bit
//! n-1 for signal n; `kill -USR1 <pid>` ends the wait and the program names
//! your shell as the sender. `scripts/signals.sh` does this for you.
//!
//! ```text
//! cargo run -p signals --example signals_signalfd
//! cargo run -p signals --example signals_signalfd -- --window 30
//! ```

use std::error::Error;
use std::ffi::c_int;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Parser;
use common::fork::spawn;
use common::{describe, procfs, say, warn};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal::{self, SIGCHLD, SIGPIPE, SIGUSR1};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use nix::unistd::getpid;

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

static HANDLER_RAN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigchld(_: c_int) {
    HANDLER_RAN.store(true, SeqCst); // async-signal-safe: one atomic store
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let action = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to a lock-free atomic.
    unsafe { sigaction(SIGCHLD, &action) }?;
    let mut set = SigSet::from(SIGUSR1);
    set.add(SIGCHLD);
    // Block first: from now on a signal of the set stays pending until the
    // signalfd reads it.
    set.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;

    let me = std::process::id();
    let [blocked, ignored, caught] = ["SigBlk", "SigIgn", "SigCgt"].map(|f| mask(me, f));
    let (blocked, ignored, caught) = (blocked?, ignored?, caught?);
    say!(
        "/proc/{me}/status SigBlk {blocked:016x}: {}",
        names(blocked)
    );
    say!(
        "/proc/{me}/status SigIgn {ignored:016x}: {}",
        names(ignored)
    );
    say!("/proc/{me}/status SigCgt {caught:016x}: {}", names(caught));
    let usr1_chld = bit(SIGUSR1) | bit(SIGCHLD);
    if blocked & usr1_chld != usr1_chld || caught & bit(SIGCHLD) == 0 {
        return Err("/proc does not show SIGUSR1 and SIGCHLD blocked, SIGCHLD caught".into());
    }
    if ignored & bit(SIGPIPE) == 0 {
        return Err("/proc does not show SIGPIPE ignored (Rust's runtime ignores it)".into());
    }
    say!("SIGPIPE is ignored by Rust's runtime (a write to a closed pipe fails with EPIPE instead); it catches SIGSEGV and SIGBUS to report a stack overflow");

    // A signalfd is a file descriptor: wait for it with poll, as for a pipe.
    let window = args.pace.secs(args.window);
    say!(
        "waiting up to {:.1} s for a SIGUSR1 from outside: kill -USR1 {me}",
        window.as_secs_f64()
    );
    let deadline = Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll(signalfd): {e}").into()),
        }
        let mut outside = 0;
        while let Some(si) = sfd.read_signal()? {
            say!(
                "{} from PID {} (uid {}), read from the signalfd",
                name(si.ssi_signo),
                si.ssi_pid,
                si.ssi_uid
            );
            outside += 1;
        }
        if outside > 0 {
            break;
        }
        if left.is_zero() {
            say!("no SIGUSR1 from outside");
            break;
        }
    }

    // A child sends three SIGUSR1 and exits: both signals stay pending here.
    // (common's spawn forks; its Child waits on a pidfd, not on SIGCHLD.)
    let parent = getpid();
    let mut sender = spawn("sender", move || -> Result<i32, Errno> {
        for _ in 0..3 {
            kill(parent, SIGUSR1)?;
        }
        say!("sent my parent SIGUSR1 three times; exiting with 5");
        Ok(5)
    })?;
    let pid = sender.pid();
    // Wait until it has ended, so all it sent is pending before we read.
    let status = sender
        .wait_timeout(SYSTEM_TIMEOUT)?
        .ok_or("the sender did not end")?;
    if status != WaitStatus::Exited(pid, 5) {
        return Err(format!("the sender {}", describe(status)).into());
    }
    let (mut usr1, mut chld) = (0, 0);
    while let Some(si) = sfd.read_signal()? {
        let from_sender = si.ssi_pid == pid.as_raw() as u32;
        match Signal::try_from(si.ssi_signo as i32) {
            Ok(SIGUSR1) if from_sender => usr1 += 1,
            Ok(SIGCHLD) if from_sender => {
                let exited = si.ssi_code == libc::CLD_EXITED;
                let how = if exited { "exited" } else { "ended" };
                say!(
                    "read SIGCHLD from the signalfd: child {} {how} with status {}",
                    si.ssi_pid,
                    si.ssi_status
                );
                if !exited || si.ssi_status != 5 {
                    return Err("the signalfd's SIGCHLD does not say exited with 5".into());
                }
                chld += 1;
            }
            _ => say!("also read {} from PID {}", name(si.ssi_signo), si.ssi_pid),
        }
    }
    say!("the sender sent SIGUSR1 3 times while it was blocked; the signalfd delivered it {usr1} time(s): standard signals do not queue");
    if usr1 != 1 || chld != 1 {
        return Err(format!("expected 1 SIGUSR1 and 1 SIGCHLD, read {usr1} and {chld}").into());
    }
    if HANDLER_RAN.load(SeqCst) {
        return Err("the SIGCHLD handler ran although SIGCHLD was blocked".into());
    }
    say!("the SIGCHLD handler never ran: a blocked signal goes to the signalfd");
    say!("all checks passed");
    Ok(())
}

/// A signal mask from `/proc/<pid>/status`: bit n-1 stands for signal n.
fn mask(pid: u32, field: &str) -> Result<u64, Box<dyn Error>> {
    let hex = procfs::status_field(pid as i32, field)?;
    u64::from_str_radix(&hex, 16).map_err(|e| format!("/proc/{pid}/status: {field}: {e}").into())
}

fn bit(signal: Signal) -> u64 {
    1 << (signal as u32 - 1)
}

/// A mask in words: "SIGUSR1 SIGCHLD" (32 and up: real-time signals).
fn names(mask: u64) -> String {
    let found: Vec<String> = (1..=64i32)
        .filter(|n| mask & (1 << (n - 1)) != 0)
        .map(|n| Signal::try_from(n).map_or(format!("signal {n}"), |s| s.to_string()))
        .collect();
    Some(found.join(" "))
        .filter(|w| !w.is_empty())
        .unwrap_or("none".into())
}

fn name(signo: u32) -> String {
    Signal::try_from(signo as i32).map_or_else(|_| format!("signal {signo}"), |s| s.to_string())
}

/// Demonstrate signals read as data from a signalfd; three SIGUSR1 read as one.
#[derive(Parser)]
struct Args {
    /// Seconds to wait for a SIGUSR1 from another terminal, scaled by the pace (0-600)
    #[arg(long, value_name = "X", default_value_t = 5.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 600.0))]
    window: f64,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the system gets to start and end a process; not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
