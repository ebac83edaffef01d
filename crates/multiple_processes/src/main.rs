//! Demonstrate how a parent runs several children at once and reaps them
//! with `waitpid(-1)` in the order they finish, each with its real status.
//!
//! The parent forks `--workers` children in a loop, worker 1 with the most
//! work. Each waits at a gate (end-of-file on a pipe) while the parent checks
//! in `/proc` that all are alive at once. Then the gate opens, each worker
//! works (sleeps) and leaves with `_exit(n)`; `waitpid(-1)` returns whichever
//! child has ended (at pace 1 the last worker first) and its real exit code.
//!
//! What to observe at `--pace 4`: `ps -o pid,ppid,stat,comm --ppid <parent pid>`.
//!
//! ```text
//! cargo run -p multiple_processes
//! cargo run -p multiple_processes -- --workers 5 --pace 2
//! cargo run -p multiple_processes --example multiple_processes_states   # R S T S Z
//! cargo run -p multiple_processes --example multiple_processes_deadline # SIGTERM, SIGKILL
//! cargo run -p multiple_processes --example multiple_processes_threads  # fork + a thread
//! ```
//!
//! The chapter (key points, the pitfall, "Try it") is this crate's README.md.

use std::error::Error;
use std::io::{self, PipeWriter, Read, Write};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{describe, procfs, say, warn};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::time::TimeSpec;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let (workers, unit, me) = (args.workers as i32, args.pace.secs(args.work), getpid());
    say!("forking {workers} workers, worker 1 with the most work");
    // The gate: workers read this pipe until end-of-file: the parent's end closed.
    let (mut gate, open) = io::pipe()?;
    let mut team: Vec<(i32, Pid)> = Vec::new(); // (worker number, PID)
    for n in 1..=workers {
        let work = unit * (workers + 1 - n) as u32;
        // Flush, or a line still buffered would be printed twice.
        io::stdout().flush()?;
        // SAFETY: single-threaded, so the child may run any code; it leaves with `_exit`.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                common::out::set_role(&format!("worker {n}"));
                // Die with the parent, and close the race where it died first.
                if set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != me {
                    // SAFETY: `_exit` ends the process at once.
                    unsafe { libc::_exit(100) }
                }
                drop(open); // only the parent's write end may hold the gate shut
                say!("started: {} unit(s) of work", workers + 1 - n);
                let _ = gate.read(&mut [0u8; 1]);
                std::thread::sleep(work); // a stand-in for real work
                say!("done: exiting with code {n}");
                // SAFETY: as above; the parent's destructors must not run here.
                unsafe { libc::_exit(n) }
            }
            Ok(ForkResult::Parent { child }) => team.push((n, child)),
            Err(e) => {
                reap_now(&team);
                return Err(format!("fork: {e}").into());
            }
        }
    }
    // On an error path, leave nothing behind: kill and reap the rest.
    watch_and_reap(args, &mut team, open).inspect_err(|_| reap_now(&team))
}

fn watch_and_reap(args: &Args, team: &mut Vec<(i32, Pid)>, open: PipeWriter) -> Res {
    let (workers, unit) = (team.len() as i32, args.pace.secs(args.work));
    let mut seen = Vec::new(); // held at the gate, none can have ended yet
    for &(n, pid) in team.iter() {
        let alive = |s: &procfs::Stat| s.ppid == getpid().as_raw() && !matches!(s.state, 'Z' | 'X');
        let s = procfs::stat(pid.as_raw())?.filter(alive);
        let s = s.ok_or(format!("worker {n} is not alive at the gate"))?;
        seen.push(format!("{pid} ({})", s.state));
    }
    let seen = seen.join(", ");
    say!("all {workers} workers are alive at once: {seen}");
    say!("see them: ps -o pid,ppid,stat,comm --ppid {}", getpid());
    args.pace.sleep(1.0);
    // SIGCHLD blocked: it waits as pending, for `sigtimedwait` to take.
    let chld = SigSet::from(Signal::SIGCHLD);
    chld.thread_block()?;
    let start = Instant::now();
    let deadline = start + SYSTEM_TIMEOUT + unit * workers as u32;
    drop(open);
    say!("gate open: the workers run side by side");
    let mut order = Vec::new();
    while !team.is_empty() {
        // waitpid(-1): whichever child has ended. With WNOHANG, because
        // waitpid has no timeout: between tries, sleep until a SIGCHLD.
        let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::StillAlive => {
                let left = deadline.checked_duration_since(Instant::now());
                let ts = TimeSpec::from_duration(left.ok_or("no worker ended in time")?);
                // SAFETY: a valid set and timespec; the info may be null. A
                // SIGCHLD taken, the time up (EAGAIN) or EINTR: try again.
                unsafe { libc::sigtimedwait(chld.as_ref(), std::ptr::null_mut(), ts.as_ref()) };
                continue;
            }
            status => status,
        };
        let pid = status.pid().ok_or("waitpid(-1) returned no PID")?;
        let i = team.iter().position(|&(_, p)| p == pid);
        let (n, _) = team.remove(i.ok_or(format!("waitpid(-1) reaped {pid}, no worker"))?);
        let (after, what) = (start.elapsed().as_secs_f64(), describe(status));
        say!("reaped worker {n} (pid {pid}) after {after:.2} s: {what}");
        if status != WaitStatus::Exited(pid, n) {
            return Err(format!("worker {n} should have exited with {n}").into());
        }
        order.push(format!("worker {n}"));
    }
    say!("reaped in this order: {}", order.join(", "));
    let (all, unit) = (start.elapsed().as_secs_f64(), unit.as_secs_f64());
    let longest = unit * workers as f64;
    let sum = unit * (1..=workers).sum::<i32>() as f64;
    say!("all reaped after {all:.2} s: the longest work is {longest:.2} s, the sum {sum:.2} s");
    say!("all checks passed");
    Ok(())
}

type Res = Result<(), Box<dyn Error>>;

/// Kill and reap the workers not reaped yet (their PIDs are still theirs).
fn reap_now(team: &[(i32, Pid)]) {
    for &(_, pid) in team {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
}

/// Demonstrate how a parent runs several children at once and reaps them as they end.
#[derive(Parser)]
struct Args {
    /// Children working side by side (1-16)
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    workers: u32,
    /// Seconds per unit of work, scaled by the pace; worker 1 has the most units (0-10)
    #[arg(long, value_name = "X", default_value_t = 0.5, allow_negative_numbers = true,
          value_parser = common::args::number(0.0, 10.0))]
    work: f64,
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the system gets to end the workers beyond their work; not paced.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(30);
