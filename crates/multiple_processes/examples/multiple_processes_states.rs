//! Demonstrate how a parent sees its child's condition in `/proc`: running,
//! sleeping, stopped, sleeping again, zombie; and how `waitpid` reports a
//! stop and a continue without reaping.
//!
//! One child spins on the CPU (state `R`), then sleeps on a semaphore
//! (`S`), is stopped with SIGSTOP (`T`) and resumed with SIGCONT (`S`
//! again), then exits with code 7 and waits to be reaped (`Z`). The parent
//! waits for each state in `/proc/<pid>/stat` rather than sleeping and
//! hoping the child got there, and fails if one never comes. Between the
//! states it pauses (1 s at pace 1) for a human watching.
//!
//! What to observe, in another terminal, at `--pace 2`:
//! `ps -o pid,ppid,stat,wchan:32,comm --ppid <parent pid>` shows the child
//! going `R`, `S`, `T`, `S`, `Z`.
//!
//! The fork is `common::fork::spawn` here (main.rs writes it out): it
//! flushes stdout, sets PR_SET_PDEATHSIG, runs the closure, leaves with
//! `_exit`, and kills and reaps the child if the parent errs out.
//!
//! ```text
//! cargo run -p multiple_processes --example multiple_processes_states
//! cargo run -p multiple_processes --example multiple_processes_states -- --pace 2
//! ```

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{describe, procfs, say, warn, Semaphore, Shared};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args.pace) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

/// What the child tells the parent, and the reverse. In a `MAP_SHARED`
/// mapping made before the fork, so both see the same atomics.
#[derive(Default)]
struct Control {
    /// 1: about to spin; 2: about to sleep on the semaphore.
    phase: AtomicU32,
    stop_spinning: AtomicBool,
}

fn run(pace: common::Pace) -> Result<(), Box<dyn Error>> {
    say!("semaphore back end: {}", common::BACKEND);
    let control = Shared::new(Control::default())?;
    let wake = Semaphore::shared(0)?;
    let mut child = common::fork::spawn("watched", || -> Result<i32, Box<dyn Error>> {
        say!("spinning on the CPU until told to stop");
        control.phase.store(1, Ordering::SeqCst);
        let until = Instant::now() + SYSTEM_TIMEOUT;
        while !control.stop_spinning.load(Ordering::SeqCst) {
            if Instant::now() > until {
                return Err("nobody told me to stop spinning".into());
            }
            std::hint::spin_loop();
        }
        say!("sleeping on a semaphore until woken");
        control.phase.store(2, Ordering::SeqCst);
        if !wake.wait_timeout(SYSTEM_TIMEOUT)? {
            return Err("nobody woke me".into());
        }
        say!("woken: exiting with code 7");
        Ok(7)
    })?;
    let pid = child.raw();
    say!(
        "watch it: ps -o pid,ppid,stat,wchan:32,comm --ppid {}",
        std::process::id()
    );

    // Each state is checked once the child says it is doing the thing that
    // puts it there, so a state seen while it starts up does not count.
    wait_phase(&control, 1)?;
    wait_state(pid, 'R', "running: on a CPU, or ready for one")?;
    pace.sleep(1.0);

    control.stop_spinning.store(true, Ordering::SeqCst);
    wait_phase(&control, 2)?;
    wait_state(
        pid,
        'S',
        "sleeping: blocked in the kernel until the semaphore is posted",
    )?;
    pace.sleep(1.0);

    child.signal(Signal::SIGSTOP)?;
    wait_state(
        pid,
        'T',
        "stopped by SIGSTOP: it will not run, whatever happens",
    )?;
    let report = wait_report(child.pid(), WaitPidFlag::WUNTRACED)?;
    say!("waitpid(WUNTRACED) reports it {}", describe(report));
    if !matches!(report, WaitStatus::Stopped(_, Signal::SIGSTOP)) {
        return Err(format!("expected stopped by SIGSTOP, got {}", describe(report)).into());
    }
    pace.sleep(1.0);

    child.signal(Signal::SIGCONT)?;
    let report = wait_report(child.pid(), WaitPidFlag::WCONTINUED)?;
    say!(
        "sent SIGCONT; waitpid(WCONTINUED) reports it {}",
        describe(report)
    );
    if !matches!(report, WaitStatus::Continued(_)) {
        return Err(format!("expected continued, got {}", describe(report)).into());
    }
    wait_state(
        pid,
        'S',
        "sleeping again: resumed, still waiting for the semaphore",
    )?;
    pace.sleep(1.0);

    wake.post()?;
    wait_state(
        pid,
        'Z',
        "zombie: it has exited and waits for us to reap it",
    )?;
    pace.sleep(1.0);

    // Reaps with waitpid(pid), sleeping in poll on a pidfd meanwhile.
    let status = child
        .wait_timeout(SYSTEM_TIMEOUT)?
        .ok_or("the zombie could not be reaped")?;
    say!("reaped the watched child {pid}: {}", describe(status));
    if status != WaitStatus::Exited(child.pid(), 7) {
        return Err(format!("expected exit code 7, got {}", describe(status)).into());
    }
    say!("all checks passed");
    Ok(())
}

/// Wait until the child has reached `phase`.
fn wait_phase(control: &Control, phase: u32) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    while control.phase.load(Ordering::SeqCst) < phase {
        if Instant::now() > deadline {
            return Err(format!("the watched child never reached phase {phase}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Poll `/proc/<pid>/stat` until the child is in `state`; say so.
fn wait_state(pid: i32, state: char, meaning: &str) -> Result<(), Box<dyn Error>> {
    match procfs::wait_for(pid, SYSTEM_TIMEOUT, |s| s.is_some_and(|s| s.state == state))? {
        Ok(_) => {
            say!("child {pid} is in state {state}: {meaning}");
            Ok(())
        }
        Err(last) => Err(format!(
            "child {pid} never reached state {state} (last seen: {:?})",
            last.map(|s| s.state)
        )
        .into()),
    }
}

/// Collect a stopped or continued report (`WUNTRACED` / `WCONTINUED`).
/// These do not reap: the child lives on. Polled with `WNOHANG`, so a
/// report that never comes is an error, not a hang.
fn wait_report(pid: Pid, flag: WaitPidFlag) -> Result<WaitStatus, Box<dyn Error>> {
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    loop {
        match waitpid(pid, Some(flag | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(status) => return Ok(status),
            Err(e) => return Err(format!("waitpid: {e}").into()),
        }
        if Instant::now() > deadline {
            return Err(
                format!("waitpid({pid}) reported nothing within {SYSTEM_TIMEOUT:?}").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Demonstrate how a child's state shows in /proc: R, S, T, S, Z.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the system gets to do what the parent waits for (a state, a
/// report). A safety limit, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(30);
