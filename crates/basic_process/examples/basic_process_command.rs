//! Demonstrate how `std::process::Command` creates a child the other way
//! round from `fork`: a fresh run of a program, which starts at `main()` with
//! nothing of its parent's memory (Python's "spawn" start method).
//!
//! The parent runs this same program again, telling it through the
//! environment that it is the child and giving it `--value` (42) on its
//! command line. The child checks who its parent is, says that it started
//! at `main()` with only its command line, its environment and its open
//! files, and exits with the value; the parent waits with a deadline and
//! checks "exited with 42". Rust's standard library starts the child with
//! `posix_spawn` where it can, otherwise with `fork` + `exec`.
//!
//! What to observe while the child pauses (1 s at pace 1):
//! `ps -o pid,ppid,stat,args --ppid <parent pid>` shows the child's
//! command line, `tr '\0' '\n' < /proc/<child pid>/environ | grep LESSON_`
//! the environment it was given.
//!
//! ```text
//! cargo run -p basic_process --example basic_process_command
//! cargo run -p basic_process --example basic_process_command -- --value 7
//! ```

use std::error::Error;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{describe, out, say, warn};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::{getpid, getppid, Pid};

/// The environment variable that makes a run of this program the child,
/// and the one that names the parent it must find.
const CHILD_ENV: &str = "LESSON_CHILD";
const PARENT_ENV: &str = "LESSON_PARENT";

fn main() {
    let args = Args::parse();
    // The environment tells a run of this program that it is the child.
    // (Python's spawn start method does the same with a command-line flag.)
    let spawned = std::env::var_os(CHILD_ENV).is_some_and(|v| v == "spawned");
    if spawned {
        out::set_role("spawned");
    }
    let result = if spawned { child(&args) } else { parent(&args) };
    if let Err(e) = result {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn parent(args: &Args) -> Result<(), Box<dyn Error>> {
    say!("my PID is {}, my parent's PID is {}", getpid(), getppid());
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let value = args.value.to_string();
    let pace = args.pace.factor().to_string();
    let mut child = Command::new(&exe)
        .args(["--value", &value, "--pace", &pace])
        .env(CHILD_ENV, "spawned")
        .env(PARENT_ENV, getpid().to_string())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", exe.display()))?;
    let pid = child.id();
    say!("started child {pid}: {} --value {value}", exe.display());

    // Wait with a deadline: poll `try_wait` (waitpid with WNOHANG).
    let deadline = Instant::now() + args.pace.secs(CHILD_PAUSE) + SYSTEM_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            stuck_or_failed => {
                // Do not leave it running.
                let _ = child.kill();
                let _ = child.wait();
                return Err(match stuck_or_failed {
                    Err(e) => format!("waitpid: {e}"),
                    _ => format!("child {pid} did not exit in time"),
                }
                .into());
            }
        }
    };
    let status = WaitStatus::from_raw(Pid::from_raw(pid as i32), status.into_raw())?;
    say!("child {pid} {}", describe(status));
    if status != WaitStatus::Exited(Pid::from_raw(pid as i32), i32::from(args.value)) {
        return Err(format!(
            "expected the child to exit with {}, got {}",
            args.value,
            describe(status)
        )
        .into());
    }
    say!("all checks passed");
    Ok(())
}

/// The child: a fresh run of this program. It knows only what it was
/// given: its command line, its environment and its open files (stdout).
fn child(args: &Args) -> Result<(), Box<dyn Error>> {
    // No child, forked or started by Command, is killed when its parent
    // dies unless it asks. Ask, then check that the parent is still there:
    // it may have died before the request took effect.
    set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    let parent = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
        .ok_or_else(|| format!("{PARENT_ENV} is not set: this mode is for the child"))?;
    if getppid().as_raw() != parent {
        return Err(format!("my parent {parent} is gone").into());
    }
    say!("my PID is {}, my parent's PID is {}", getpid(), getppid());
    let command_line: Vec<String> = std::env::args().skip(1).collect();
    say!("I started at main(), with no copy of my parent's memory; my command line: {command_line:?}");
    say!("exiting with the --value I was given: {}", args.value);
    args.pace.sleep(CHILD_PAUSE);
    std::process::exit(i32::from(args.value))
}

/// Demonstrate how Command starts a fresh child that begins at main().
#[derive(Parser)]
struct Args {
    /// What the child is told on its command line and exits with (2-255)
    #[arg(long, value_name = "N", default_value_t = 42, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u8).range(2..=255))]
    value: u8,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the child pauses, so that you can look at it. Scaled by the pace.
const CHILD_PAUSE: f64 = 1.0;

/// How long a child may take beyond its pause before the parent gives up.
/// A safety limit, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
