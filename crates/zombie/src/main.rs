//! Demonstrate how a child that has exited becomes a zombie until its parent
//! reaps it with `waitpid`.
//!
//! The child exits at once with code 42. The parent does not reap it for a
//! while (10 s at pace 1): the kernel keeps the dead child's process-table
//! entry, with its exit status, for the parent to collect, and
//! `/proc/<pid>/stat` shows state `Z`. The parent checks that state the
//! whole time, then reaps the child, gets 42, and checks that the entry is gone.
//!
//! What to observe, in another terminal while the parent waits:
//! `ps -o pid,ppid,stat,comm --ppid <parent pid>` shows `Z+ zombie <defunct>`
//! (`scripts/zombie.sh` does it for you).
//!
//! ```text
//! cargo run -p zombie
//! cargo run -p zombie -- --pace 0.2                   # a 2-second zombie window
//! cargo run -p zombie --example zombie_sigchld_handler  # reap in a handler
//! cargo run -p zombie --example zombie_sig_ign          # let the kernel reap
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{describe, procfs, say, warn};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getppid, ForkResult, Pid};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    // Anything still buffered would be printed twice: once by each process.
    io::stdout().flush()?;
    // SAFETY: this process has a single thread (nothing here starts one),
    // so the child may run ordinary code; it prints one line and `_exit`s.
    let child = match unsafe { fork() }? {
        ForkResult::Child => {
            common::out::set_role("child");
            say!("my parent is {}; exiting with code 42", getppid());
            // `_exit`, not `return`: the child must not run the parent's
            // destructors or go on with the rest of `main`.
            // SAFETY: `_exit` ends the process at once; nothing runs after it.
            unsafe { libc::_exit(42) }
        }
        ForkResult::Parent { child } => child,
    };

    // Watch the zombie; whatever happens, reap the child before returning.
    let watched = watch_zombie(child, args.pace.secs(args.window));
    let status = waitpid(child, None)?;
    watched?;

    // Reaping delivered the status and freed the process-table entry.
    say!("reaped child {child}: {}", describe(status));
    if status != WaitStatus::Exited(child, 42) {
        return Err(format!("expected exit code 42, got {}", describe(status)).into());
    }
    match procfs::state(child.as_raw())? {
        None => say!("/proc/{child} is gone: no zombie left"),
        Some(s) => {
            return Err(format!("child {child} still in /proc (state {s}) after reaping").into())
        }
    }
    say!("all checks passed");
    Ok(())
}

/// Wait until the child is a zombie, then check that it stays one for
/// `window`, since nobody reaps it.
fn watch_zombie(child: Pid, window: Duration) -> Result<(), Box<dyn Error>> {
    let pid = child.as_raw();
    // Wait for the condition, not for a lucky amount of time: poll /proc
    // until the child has exited and sits in state Z.
    let zombie = |s: Option<&procfs::Stat>| s.is_some_and(|s| s.state == 'Z');
    if let Err(last) = procfs::wait_for(pid, SYSTEM_TIMEOUT, zombie)? {
        return Err(format!("child {pid} never became a zombie (last seen: {last:?})").into());
    }
    say!("child {pid} has exited but is not reaped: /proc/{pid}/stat says state Z");
    say!(
        "see it yourself: ps -o pid,ppid,stat,comm --ppid {}",
        std::process::id()
    );
    say!("leaving it unreaped for {:.1} s", window.as_secs_f64());
    let until = Instant::now() + window;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100).min(window));
        let state = procfs::state(pid)?;
        if state != Some('Z') {
            return Err(
                format!("the zombie changed to {state:?} although nobody reaped it").into(),
            );
        }
    }
    Ok(())
}

/// Demonstrate how an unreaped child becomes a zombie.
#[derive(Parser)]
struct Args {
    /// Seconds the parent leaves the zombie unreaped, scaled by the pace (0-600)
    #[arg(long, value_name = "X", default_value_t = 10.0, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 600.0))]
    window: f64,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the system gets to do what the lesson waits for (the child to
/// exit). A safety limit, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
