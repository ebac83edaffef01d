//! Demonstrate how a parent runs several children at once, reaps them in the
//! order they end, checks a child's state, and stops a child that overruns.
//!
//! Part 1: the parent forks `--workers` children (3 by default) with
//! different amounts of work: worker 1 has the most, the last worker the
//! least. Each child reports at a rendezvous and then waits at a gate (two
//! semaphores), so the parent can show from `/proc` that all of them are
//! alive at the same moment. Then it opens the gate and reaps them with
//! `waitpid(-1)`, which returns whichever child has ended: at the default
//! pace the last worker first, the reverse of the order they were started in.
//! The whole part takes about as long as the longest child, not the sum.
//!
//! Part 2: the parent's other duties from the seed's notes. One child spins
//! (state `R`), then sleeps on a semaphore (`S`), is stopped with SIGSTOP
//! (`T`) and resumed with SIGCONT (`S` again), then exits and waits to be
//! reaped (`Z`). The parent waits for each state in `/proc/<pid>/stat`
//! rather than sleeping and hoping the child got there.
//!
//! Part 3: a child that takes too long. It blocks SIGTERM, as a process in
//! the middle of something it will not leave halfway might. After its
//! deadline the parent sends SIGTERM, which stays pending (seen in
//! `/proc/<pid>/status`); after a grace period, SIGKILL, which cannot be
//! blocked, caught or ignored, ends it: `waitpid` reports "killed by SIGKILL".
//!
//! Key points:
//! - `waitpid(-1)` reaps any ended child; `waitpid(pid)` waits for that one,
//!   while children that ended earlier sit as zombies. The seed (C++ and
//!   Python alike) waits in creation order.
//! - Each child has its own copy of the parent's memory. What they share
//!   here (the semaphores) lives in a `MAP_SHARED` mapping made before `fork`.
//! - `fork` is `unsafe` in Rust: the child of a multithreaded process gets
//!   only the forking thread, and locks other threads held (stdout's, any
//!   `Mutex`) stay locked, so such a child may only make async-signal-safe
//!   calls. This parent has one thread (`common::fork` checks it before
//!   forking), so its children may print and allocate. The helper flushes
//!   stdout before each fork (or a buffered line would be printed twice), and
//!   children leave with `_exit`, so the parent's destructors never run twice.
//! - `waitpid` has no timeout. To never hang on a stuck child, the parent
//!   sleeps in `poll` on one pidfd per child (readable once that child has
//!   ended), then reaps with `waitpid(-1, WNOHANG)`, which cannot block.
//! - SIGTERM asks, SIGKILL forces. Send SIGTERM first so the child can clean
//!   up, and SIGKILL only after a grace period.
//!
//! What to observe, in another terminal (the parent prints its PID), at
//! `--pace 2` or so:
//! `ps -o pid,ppid,stat,wchan:20,comm --ppid <parent pid>` shows the workers
//! side by side, then the watched child going `R`, `S`, `T`, `S`, `Z`;
//! `grep -E 'State|SigBlk|ShdPnd' /proc/<child pid>/status` shows the
//! overrunning child's blocked and pending SIGTERM (signal 15 is bit 14, counting from 0: `4000` in hex).
//!
//! The pitfall: `waitpid(-1)` returns the *oldest* of the children that have
//! already ended, not the first one to end: the kernel scans its list of
//! children in creation order. Reaping follows finishing order only while the
//! parent is waiting as they end; at `--pace 0` they end almost together and
//! the reaping order is anyone's guess, so the lesson prints it and does not
//! check it.
//!
//! Seed example: 02, multiple processes (C++ two `fork`s and `waitpid` in
//! creation order; Python `multiprocessing.Process` and `join`).
//!
//! Run with:
//! ```text
//! cargo run -p multiple_processes
//! cargo run -p multiple_processes -- --workers 5 --pace 2
//! ```
//!
//! Try it:
//! - Replace the reaping loop with `child.wait()` for each worker in
//!   creation order, and watch with `ps` at `--pace 4`: the short workers
//!   stay `Z` until worker 1 is done.
//! - In the overrunning child, ignore SIGTERM (`SigHandler::SigIgn`) instead
//!   of blocking it: `/proc/<pid>/status` shows it in `SigIgn`, and SIGTERM no
//!   longer shows as pending (the lesson's check fails): an ignored signal
//!   is thrown away when it is sent.
//! - Run `--workers 8 --pace 0` a few times and compare the reaping orders.
//!
//! See also: `zombie` (an ended child nobody reaps), `orphan` (the parent
//! ends first), `process_pool` (workers that take many tasks each).

use std::error::Error;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn};
use common::opts::{Args, Opt, Pace, Spec};
use common::{describe, procfs, say, warn, Child, Semaphore, Shared};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const SPEC: Spec = Spec {
    name: "multiple_processes",
    about: "Demonstrate how a parent runs several children at once, reaps them as they end, \
            watches their state and stops one that overruns.",
    options: &[
        Opt::int("workers", "children working side by side", 3, 1, 16),
        Opt::float(
            "work",
            "seconds per unit of work; worker 1 has the most units",
            0.5,
            0.0,
            10.0,
        ),
        Opt::float(
            "deadline",
            "seconds the overrunning child gets before SIGTERM",
            2.0,
            0.0,
            60.0,
        ),
        Opt::float(
            "grace",
            "seconds between SIGTERM and SIGKILL",
            1.0,
            0.0,
            60.0,
        ),
    ],
};

/// How long the system gets to do what the lesson waits for (a child to
/// start, reach a state, end). A safety floor, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    say!("semaphore back end: {}", common::BACKEND);
    side_by_side(args)?;
    watch_states(args.pace())?;
    stop_overrunner(args)?;
    say!("all checks passed");
    Ok(())
}

/// One worker of part 1: its number (also its exit code) and its work.
struct Worker {
    n: usize,
    units: usize,
    child: Child,
}

fn side_by_side(args: &Args) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    let workers = args.usize("workers");
    let unit = pace.secs(args.float("work"));
    say!("part 1: {workers} workers side by side, worker 1 with the most work");

    // Made before the forks, so every child shares them (MAP_SHARED).
    let arrived = Semaphore::shared(0)?;
    let gate = Semaphore::shared(0)?;

    let mut team = Vec::new();
    for n in 1..=workers {
        let units = workers + 1 - n;
        let work = unit * units as u32;
        let child = spawn(&format!("worker {n}"), || -> Result<i32, Box<dyn Error>> {
            say!(
                "started: {units} unit(s) of work, {:.2} s",
                work.as_secs_f64()
            );
            arrived.post()?;
            if !gate.wait_timeout(SYSTEM_TIMEOUT)? {
                return Err("the parent never opened the gate".into());
            }
            // A stand-in for real work: a sleep lets the workers overlap
            // even on one core, so the timing below reads clearly.
            std::thread::sleep(work);
            say!("done: exiting with code {n}");
            Ok(n as i32)
        })?;
        team.push(Worker { n, units, child });
    }

    // The rendezvous: once every worker has posted `arrived`, all of them
    // are alive and held at the gate, none can have ended yet.
    for _ in 0..workers {
        if !arrived.wait_timeout(SYSTEM_TIMEOUT)? {
            return Err("a worker never reached the rendezvous".into());
        }
    }
    let me = std::process::id() as i32;
    let mut seen = Vec::new();
    for w in &team {
        match procfs::stat(w.child.raw())? {
            Some(s) if s.ppid == me && !matches!(s.state, 'Z' | 'X') => {
                seen.push(format!("{} ({})", s.pid, s.state));
            }
            other => {
                return Err(
                    format!("worker {} is not alive at the rendezvous: {other:?}", w.n).into(),
                )
            }
        }
    }
    say!(
        "all {workers} workers are alive at the same moment: {}",
        seen.join(", ")
    );
    say!("see them yourself: ps -o pid,ppid,stat,wchan:20,comm --ppid {me}");
    pace.sleep(1.0);

    let start = Instant::now();
    for _ in 0..workers {
        gate.post()?;
    }
    say!("gate open: the workers run side by side");

    // Reap whichever worker ends, until none is left.
    let mut order = Vec::new();
    while order.len() < workers {
        let running: Vec<&Child> = team
            .iter()
            .filter(|w| w.child.status().is_none())
            .map(|w| &w.child)
            .collect();
        let limit = SYSTEM_TIMEOUT + unit * workers as u32;
        let status = reap_any(&running, limit)?;
        let pid = status
            .pid()
            .ok_or("waitpid(-1) returned a status without a PID")?;
        let Some(w) = team.iter_mut().find(|w| w.child.pid() == pid) else {
            return Err(format!("waitpid(-1) reaped {pid}, which is none of the workers").into());
        };
        // The handle must learn that its child is gone: otherwise dropping
        // it would signal and wait for a PID that may be reused by now.
        w.child.set_reaped(status);
        say!(
            "reaped worker {} (pid {pid}, {} unit(s)) after {:.2} s: {}",
            w.n,
            w.units,
            start.elapsed().as_secs_f64(),
            describe(status)
        );
        if exit_code(status) != Some(w.n as i32) {
            return Err(format!("worker {} should exit with {}", w.n, w.n).into());
        }
        order.push(w.n);
    }
    let total = start.elapsed();

    let names: Vec<String> = order.iter().map(|n| format!("worker {n}")).collect();
    say!(
        "reaped in this order: {} (started in order 1 to {workers})",
        names.join(", ")
    );
    // Information, not a check: it depends on timing (see the pitfall).
    let by_work = order.windows(2).all(|p| p[0] > p[1]);
    if by_work {
        say!("that follows the amount of work, least first: at this pace, the order they ended");
    } else {
        say!("that is not the order of the amount of work: they ended (almost) together");
    }
    let units_total: usize = (1..=workers).sum();
    say!(
        "all reaped after {:.2} s; longest work {:.2} s, sum of all work {:.2} s \
         (timing is information, not a check)",
        total.as_secs_f64(),
        (unit * workers as u32).as_secs_f64(),
        (unit * units_total as u32).as_secs_f64()
    );
    Ok(())
}

/// `waitpid(-1)` with a timeout. `waitpid` itself has none, so sleep in
/// `poll` on a pidfd per running child (a pidfd becomes readable when its
/// process ends), then reap with `WNOHANG`, which never blocks.
fn reap_any(running: &[&Child], timeout: Duration) -> Result<WaitStatus, Box<dyn Error>> {
    let pidfds = running
        .iter()
        .map(|c| pidfd(c.raw()))
        .collect::<Result<Vec<OwnedFd>, _>>()?;
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(status) => return Ok(status),
            Err(e) => return Err(format!("waitpid(-1): {e}").into()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no worker ended within {timeout:?}").into());
        }
        let mut fds: Vec<_> = pidfds
            .iter()
            .map(|fd| rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN))
            .collect();
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as _,
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("poll(pidfd): {e}").into()),
        }
    }
}

fn pidfd(pid: i32) -> Result<OwnedFd, Box<dyn Error>> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or("a child PID is positive")?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| format!("pidfd_open: {e}").into())
}

/// What the watched child of part 2 tells the parent, and the reverse.
#[derive(Default)]
struct Control {
    /// 1: about to spin; 2: about to sleep on the semaphore.
    phase: AtomicU32,
    stop_spinning: AtomicBool,
}

fn watch_states(pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 2: checking a child's condition in /proc");
    let control = Shared::new(Control::default())?;
    let wake = Semaphore::shared(0)?;
    let mut child = spawn("watched", || -> Result<i32, Box<dyn Error>> {
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

    // Each state is checked once the child says it is doing the thing that
    // puts it there, so a state seen while it starts up does not count.
    wait_phase(&control, 1)?;
    wait_state(pid, "R", "running: on a CPU, or ready for one")?;
    pace.sleep(1.0);

    control.stop_spinning.store(true, Ordering::SeqCst);
    wait_phase(&control, 2)?;
    wait_state(
        pid,
        "S",
        "sleeping: blocked in the kernel until the semaphore is posted",
    )?;
    pace.sleep(1.0);

    child.signal(Signal::SIGSTOP)?;
    wait_state(
        pid,
        "T",
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
        "S",
        "sleeping again: resumed, still waiting for the semaphore",
    )?;
    pace.sleep(1.0);

    wake.post()?;
    wait_state(
        pid,
        "Z",
        "zombie: it has exited and waits for us to reap it",
    )?;
    pace.sleep(1.0);

    let status = child
        .wait_timeout(SYSTEM_TIMEOUT)?
        .ok_or("the zombie could not be reaped")?;
    say!("reaped the watched child {pid}: {}", describe(status));
    if exit_code(status) != Some(7) {
        return Err(format!("expected exit code 7, got {}", describe(status)).into());
    }
    Ok(())
}

/// Wait until the watched child has reached `phase`.
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
fn wait_state(pid: i32, state: &str, meaning: &str) -> Result<(), Box<dyn Error>> {
    let want = state.chars().next().ok_or("empty state")?;
    match procfs::wait_for(pid, SYSTEM_TIMEOUT, |s| s.is_some_and(|s| s.state == want))? {
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

fn stop_overrunner(args: &Args) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    let deadline = pace.secs(args.float("deadline"));
    let grace = pace.secs(args.float("grace"));
    say!("part 3: stopping a child that overruns its deadline");
    let ready = Semaphore::shared(0)?;
    let mut child = spawn("overrunner", || -> Result<i32, Box<dyn Error>> {
        let mut term = SigSet::empty();
        term.add(Signal::SIGTERM);
        term.thread_block()
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
    let term_bit = 1u64 << (Signal::SIGTERM as i32 - 1);
    if signal_mask(pid, "SigBlk")? & term_bit == 0 {
        return Err(format!("/proc/{pid}/status does not show SIGTERM blocked").into());
    }
    say!("/proc/{pid}/status SigBlk shows SIGTERM blocked in the child");

    if let Some(s) = child.wait_timeout(deadline)? {
        return Err(format!("the overrunning child ended by itself: {}", describe(s)).into());
    }
    say!(
        "child {pid} still runs after its deadline of {:.2} s: sending SIGTERM",
        deadline.as_secs_f64()
    );
    child.signal(Signal::SIGTERM)?;
    // A blocked signal is not lost: it waits in the pending set.
    if signal_mask(pid, "ShdPnd")? & term_bit == 0 {
        return Err(format!("/proc/{pid}/status does not show SIGTERM pending").into());
    }
    say!(
        "/proc/{pid}/status ShdPnd shows SIGTERM pending: sent, but blocked, so not yet delivered"
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
    Ok(())
}

/// A signal set from `/proc/<pid>/status` (`SigBlk`, `ShdPnd`, `SigIgn`...),
/// a hexadecimal mask in which bit `n - 1` stands for signal `n`.
fn signal_mask(pid: i32, field: &str) -> Result<u64, Box<dyn Error>> {
    let hex = procfs::status_field(pid, field)?;
    u64::from_str_radix(&hex, 16).map_err(|e| format!("/proc/{pid}/status: {field}: {e}").into())
}
