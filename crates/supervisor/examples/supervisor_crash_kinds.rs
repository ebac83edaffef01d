//! Demonstrate how a supervisor tells crashes apart by their wait status:
//! exit code 101 is a Rust panic (caught, then `_exit(101)`, as a Rust `main`
//! does), SIGABRT is `abort`, SIGKILL is SIGKILL.
//!
//! A crash plan drawn from `--seed` (xorshift64*, so a seed repeats its
//! plan) gives each worker a way to crash and a step to crash at. The
//! supervisor reaps each worker with `waitpid`, decodes its status, and
//! checks that it says what the worker did: a mismatch is an error.
//!
//! What to observe: the workers in `ps -o pid,stat,cmd --ppid <pid>` during
//! the pause (2 s at pace 1), then each death decoded, matched to the plan.
//!
//! ```text
//! cargo run -p supervisor --example supervisor_crash_kinds
//! cargo run -p supervisor --example supervisor_crash_kinds -- --seed 7 --workers 6
//! ```

use std::error::Error;
use std::time::Duration;

use clap::Parser;
use common::fork::Fork;
use common::{describe, say, warn};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::getpid;

const HOWS: [&str; 3] = ["panic", "abort", "SIGKILL to itself"];

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    common::out::set_role("supervisor");
    // xorshift64* (Vigna, 2016): enough to draw a plan the seed repeats.
    let mut state = args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut below = |n: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    let plan: Vec<(usize, u32)> = (0..args.workers)
        .map(|_| (below(3) as usize, 1 + below(3) as u32))
        .collect();
    let words: Vec<String> = plan
        .iter()
        .enumerate()
        .map(|(i, (h, k))| format!("worker {} {} at step {k}", i + 1, HOWS[*h]))
        .collect();
    say!("crash plan from seed {}: {}", args.seed, words.join(", "));
    let step = args.pace.secs(0.5).max(Duration::from_millis(5));
    let mut children = Vec::new();
    for (i, &(how, at)) in plan.iter().enumerate() {
        // common's Fork makes the fork, catches a panic as exit 101, `_exit`s.
        let child = Fork::new(&format!("worker {}", i + 1)).run(move || worker(how, at, step))?;
        say!("started worker {} as pid {}", i + 1, child.raw());
        children.push(child);
    }
    say!("see them: ps -o pid,stat,cmd --ppid {}", std::process::id());
    args.pace.sleep(2.0);
    let mut wrong = Vec::new();
    for (i, (child, &(how, _))) in children.iter_mut().zip(&plan).enumerate() {
        let status = child.wait()?;
        let pid = child.raw();
        let matches = match how {
            0 => matches!(status, WaitStatus::Exited(_, 101)),
            1 => matches!(status, WaitStatus::Signaled(_, Signal::SIGABRT, _)),
            _ => matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
        };
        let what = describe(status);
        if matches {
            say!(
                "worker {} (pid {pid}) died: {what}, as planned ({})",
                i + 1,
                HOWS[how]
            );
        } else {
            wrong.push(format!(
                "worker {} (pid {pid}) planned {}, got {what}",
                i + 1,
                HOWS[how]
            ));
        }
    }
    if !wrong.is_empty() {
        return Err(format!("statuses that do not say what happened: {wrong:?}").into());
    }
    say!("every death decoded as what the worker did; all checks passed");
    Ok(())
}

/// Work in steps, then crash at step `at` the planned way.
fn worker(how: usize, at: u32, step: Duration) -> i32 {
    say!("start 1: will crash at step {at} ({})", HOWS[how]);
    for n in 1..at {
        std::thread::sleep(step);
        say!("step {n} done");
    }
    std::thread::sleep(step);
    say!("step {at}: crashing on purpose ({})", HOWS[how]);
    match how {
        0 => {
            // The default hook would print unprefixed lines.
            std::panic::set_hook(Box::new(|_| warn!("panicked: a worker panics on purpose")));
            panic!("a worker panics on purpose")
        }
        1 => {
            // No core file: not here (size limit 0), nor through a core-dump
            // helper (which ignores that limit, not a non-dumpable process).
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            let _ = nix::sys::prctl::set_dumpable(false);
            std::process::abort()
        }
        _ => {
            let _ = kill(getpid(), Signal::SIGKILL);
            1
        }
    }
}

/// Demonstrate how a wait status tells a panic, an abort and a SIGKILL apart.
#[derive(Parser)]
struct Args {
    /// Workers to start (1-16)
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    workers: u32,
    /// Seed of the crash plan (0-4294967295)
    #[arg(long, value_name = "N", default_value_t = 42, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(0..=4_294_967_295))]
    seed: u64,
    #[command(flatten)]
    pace: common::Pace,
}
