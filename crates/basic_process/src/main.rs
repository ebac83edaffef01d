//! Demonstrate how `fork` creates a child process with its own copy of the
//! parent's memory, and how the parent waits for it with `waitpid` and
//! decodes its exit status.
//!
//! The child prints its PID and its parent's, writes `--value` (42) into its
//! copy of `counter`, which the parent set to 1, pushes its PID onto its copy
//! of a list on the heap, and exits with the value. The parent waits, gets
//! "exited with 42", and checks that its own `counter`, at the very same
//! address, is still 1 and its list still holds one PID.
//!
//! What to observe, in another terminal while the child pauses (1 s at
//! pace 1): `ps -o pid,ppid,stat,comm --ppid <parent pid>` lists the child,
//! with the parent's PID as its PPID.
//!
//! ```text
//! cargo run -p basic_process
//! cargo run -p basic_process -- --value 7 --pace 5     # 5-second pause to look
//! cargo run -p basic_process --example basic_process_command   # a fresh child
//! cargo run -p basic_process --example basic_process_open_files  # shared offsets
//! cargo run -p basic_process --example basic_process_threads  # fork with threads
//! ```
//!
//! The chapter (key points, fork or `Command`, the pitfall, "Try it") is this
//! crate's README.md.

use std::error::Error;
use std::io::{self, Write};

use clap::Parser;
use common::{describe, say, warn};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let me = getpid();
    say!("my PID is {me}, my parent's PID is {}", getppid());
    let mut counter: u8 = 1; // on the stack
    let mut pids = vec![std::process::id()]; // on the heap
    say!("counter = {counter} at address {:p}", &counter);

    // Anything still buffered would be printed twice: once by each process.
    io::stdout().flush()?;
    // SAFETY: this process has a single thread (nothing here starts one),
    // so the child may run ordinary code; it never returns from its arm
    // and leaves with `_exit`.
    match unsafe { fork() }? {
        ForkResult::Child => {
            common::out::set_role("child");
            // This child pauses: have the kernel kill it if the parent dies,
            // and check that the parent did not die before the request.
            if set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != me {
                // SAFETY: `_exit` ends the process at once.
                unsafe { libc::_exit(1) }
            }
            say!("my PID is {}, my parent's PID is {}", getpid(), getppid());
            counter = args.value;
            pids.push(std::process::id());
            say!("I set counter = {counter} at address {:p}", &counter);
            say!("my copy of the list: {pids:?}");
            args.pace.sleep(CHILD_PAUSE);
            // `_exit`, not `return`: the child must not go on with the rest
            // of the parent's program, nor run its destructors a second time.
            // SAFETY: `_exit` ends the process at once; nothing runs after it.
            unsafe { libc::_exit(i32::from(counter)) }
        }
        ForkResult::Parent { child } => {
            say!("forked child {child}; see it: ps -o pid,ppid,stat,comm --ppid {me}");
            // A blocking wait: this child only prints, pauses and exits.
            let status = waitpid(child, None)?;
            say!("child {child} {}", describe(status));
            if status != WaitStatus::Exited(child, i32::from(args.value)) {
                return Err(format!(
                    "expected the child to exit with {}, got {}",
                    args.value,
                    describe(status)
                )
                .into());
            }
        }
    }

    // The child's writes went to its own copy of the memory.
    if counter != 1 || pids.len() != 1 {
        return Err(format!(
            "the parent sees counter = {counter} and list {pids:?}: the child's writes reached the parent"
        )
        .into());
    }
    say!(
        "my counter is still {counter} at address {:p}: the child changed only its own copy",
        &counter
    );
    say!("my list is still {pids:?}: the heap was copied too");
    say!("all checks passed");
    Ok(())
}

/// Demonstrate how fork creates a child with its own copy of memory.
#[derive(Parser)]
struct Args {
    /// What the child writes into its copy of the counter and exits with (2-255)
    #[arg(long, value_name = "N", default_value_t = 42, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u8).range(2..=255))]
    value: u8,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the child pauses, so that you can look at it with `ps`.
/// Scaled by the pace.
const CHILD_PAUSE: f64 = 1.0;
