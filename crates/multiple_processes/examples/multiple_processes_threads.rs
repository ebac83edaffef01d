//! Demonstrate why `fork` in a multithreaded process is dangerous: the
//! child gets only the thread that called `fork`, and a lock another thread
//! held at that moment stays locked in the child, with nobody to unlock it.
//!
//! A second thread of the parent locks a `std::sync::Mutex` and holds it.
//! The main thread forks. The child (one thread, checked in `/proc`) calls
//! `lock()` on its copy of the mutex and blocks (state `S`, in a futex wait).
//! The parent's thread then unlocks the parent's mutex; the child's copy is
//! separate memory and stays locked, so the child stays blocked. The parent
//! ends it with SIGKILL and reaps it. This is why POSIX allows the child of
//! a multithreaded process only async-signal-safe calls until it `exec`s or
//! `_exit`s. The same trap: Rust's stdout lock held by another thread while
//! `fork` runs (the child's first `println!` blocks forever). glibc's
//! malloc is not an example: glibc's `fork` takes the allocator's locks
//! around the fork and resets them in the child.
//!
//! What to observe, in another terminal, during the pause:
//! `ps -L -o pid,lwp,stat,wchan:32,comm -p <parent pid>,<child pid>`: two
//! threads in the parent, one in the child, blocked in `futex_do_wait` (the
//! kernel's name on Linux 6.18; older kernels: `futex_wait_queue`).
//!
//! ```text
//! cargo run -p multiple_processes --example multiple_processes_threads
//! ```

use std::error::Error;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{describe, procfs, say, warn, Shared};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};

/// The mutex another thread holds while the main thread forks.
static LOCK: Mutex<u64> = Mutex::new(0);

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args.pace) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(pace: common::Pace) -> Result<(), Box<dyn Error>> {
    let (held, is_held) = mpsc::channel();
    let (release, on_release) = mpsc::channel::<()>();
    // Held until the parent says so (after its pause), or gives up.
    let hold = SYSTEM_TIMEOUT + pace.secs(2.0);
    let holder = std::thread::spawn(move || {
        let guard = LOCK.lock();
        let _ = held.send(());
        let _ = on_release.recv_timeout(hold);
        drop(guard);
    });
    is_held.recv_timeout(SYSTEM_TIMEOUT)?;
    let me = getpid();
    let threads = procfs::stat(me.as_raw())?.map_or(0, |s| s.num_threads);
    say!("{threads} threads here; the second one holds the mutex");

    // 1 once the child is about to lock; 2 if it ever got the lock.
    let phase = Shared::new(AtomicU32::new(0))?;
    io::stdout().flush()?;
    // SAFETY: this process has two threads, so until `_exit` the child makes
    // only async-signal-safe calls: prctl, getppid, atomic stores, and the
    // futex calls of `Mutex::lock` (no allocation, no printing, no panic).
    let child = match unsafe { fork() }? {
        ForkResult::Child => {
            if set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != me {
                // SAFETY: `_exit` ends the process at once.
                unsafe { libc::_exit(1) }
            }
            phase.store(1, Ordering::SeqCst);
            let guard = LOCK.lock();
            phase.store(2, Ordering::SeqCst);
            drop(guard);
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    let result = watch(pace, child, &phase, release);
    if result.is_err() {
        // Do not leave the child behind on an error path.
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
    }
    let _ = holder.join();
    result
}

fn watch(
    pace: common::Pace,
    child: Pid,
    phase: &AtomicU32,
    release: mpsc::Sender<()>,
) -> Result<(), Box<dyn Error>> {
    let pid = child.as_raw();
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    while phase.load(Ordering::SeqCst) < 1 {
        if Instant::now() > deadline {
            return Err(format!("child {pid} never got to lock()").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let asleep = |s: Option<&procfs::Stat>| s.is_some_and(|s| s.state == 'S');
    let seen = procfs::wait_for(pid, SYSTEM_TIMEOUT, asleep)?
        .map_err(|last| format!("child {pid} never blocked in lock() (last seen: {last:?})"))?;
    let seen = seen.ok_or("the child vanished")?;
    if seen.num_threads != 1 || phase.load(Ordering::SeqCst) != 1 {
        return Err(format!("expected one thread blocked in lock(), saw {seen:?}").into());
    }
    let wchan = procfs::wchan(pid)?.unwrap_or_else(|| "(hidden)".into());
    say!("child {pid} has 1 thread, blocked in lock(): state S, wchan {wchan}");
    say!(
        "see it: ps -L -o pid,lwp,stat,wchan:32,comm -p {},{pid}",
        getpid()
    );
    pace.sleep(2.0);

    // The parent's thread unlocks the parent's mutex...
    release.send(())?;
    let parent_lock = LOCK.lock().map_err(|_| "the parent's mutex is poisoned")?;
    drop(parent_lock);
    say!("the second thread unlocked the mutex; the parent can lock it again");
    // ...but the child's copy is other memory, locked by a thread that
    // does not exist in the child: nothing will ever unlock it.
    let still = procfs::state(pid)?;
    if still != Some('S') || phase.load(Ordering::SeqCst) != 1 {
        return Err(format!("the child got past lock() (state {still:?})").into());
    }
    say!("child {pid} is still blocked in lock() (state S): ending it with SIGKILL");
    kill(child, Signal::SIGKILL)?;
    let status = reap(child)?;
    say!("reaped child {pid}: {}", describe(status));
    if !matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)) {
        return Err(format!("expected killed by SIGKILL, got {}", describe(status)).into());
    }
    say!("all checks passed");
    Ok(())
}

/// `waitpid(child)` with a deadline: polled with `WNOHANG`.
fn reap(child: Pid) -> Result<WaitStatus, Box<dyn Error>> {
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::StillAlive if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            WaitStatus::StillAlive => return Err(format!("child {child} survived SIGKILL").into()),
            status => return Ok(status),
        }
    }
}

/// Demonstrate how a lock held by another thread stays locked in a forked child.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}

/// How long the system gets to do what the parent waits for. A safety
/// limit, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
