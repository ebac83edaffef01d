//! Demonstrate why `fork` in a multithreaded process is dangerous: the child
//! is a copy with only the thread that called `fork`, so a `Mutex` another
//! thread held at that moment is locked in the child, and no thread there
//! will ever unlock it. POSIX therefore allows such a child only
//! async-signal-safe calls until it calls `exec` or `_exit`.
//!
//! A second thread locks a `Mutex` and holds it. `common::fork::spawn`
//! refuses to fork (it checks the thread count first). The program then
//! forks by hand; the parent lets its thread unlock, and checks that its own
//! mutex is free again. The child has one thread (`/proc/<child>/stat`), and
//! tries the lock without waiting (`try_lock`, an atomic operation, safe
//! here): it is locked, so a `lock()` would wait forever. The child makes
//! only async-signal-safe calls (`getppid`, `close`, `read`, `_exit`) and
//! the plain system call `prctl`; it prints nothing (printing takes
//! stdout's lock, which another thread might hold too) and reports through
//! its exit status.
//!
//! What to observe while the child waits (2 s at pace 1):
//! `grep Threads /proc/<parent pid>/status /proc/<child pid>/status`.
//!
//! ```text
//! cargo run -p basic_process --example basic_process_threads
//! ```

use std::error::Error;
use std::io::{self, Read, Write};
use std::sync::{mpsc, Mutex};
use std::thread;

use clap::Parser;
use common::{describe, procfs, say, warn};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};

static TABLE: Mutex<u32> = Mutex::new(0);

/// The child's exit codes.
const FOUND_LOCKED: i32 = 3;
const FOUND_FREE: i32 = 4;

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    // A second thread takes the lock and holds it until told to let go.
    let (locked_tx, locked) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let mut guard = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        *guard += 1;
        let _ = locked_tx.send(());
        let _ = release_rx.recv();
    });
    locked.recv()?;
    let me = getpid();
    let threads = procfs::stat(me.as_raw())?.map_or(0, |s| s.num_threads);
    say!("a second thread holds the mutex; this process has {threads} threads");

    // The helper checks the thread count and refuses.
    match common::fork::spawn("child", || 0) {
        Err(e) => say!("common::fork::spawn refuses: {e}"),
        Ok(_) => return Err("common::fork::spawn forked a multithreaded process".into()),
    }

    let (mut go, start) = io::pipe()?;
    io::stdout().flush()?;
    // SAFETY: the process has two threads, so the child makes only
    // async-signal-safe calls (getppid, close, read, _exit), the plain
    // system call prctl and an atomic compare-and-swap (try_lock); it
    // allocates nothing, prints nothing and leaves with `_exit`.
    let child = match unsafe { fork() }? {
        ForkResult::Child => {
            if set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != me {
                // SAFETY: `_exit` ends the process at once.
                unsafe { libc::_exit(1) }
            }
            drop(start); // close(2) our copy of the write end, or EOF never comes
            let _ = go.read(&mut [0u8; 1]); // wait until the parent has looked
            let code = match TABLE.try_lock() {
                Err(_) => FOUND_LOCKED,
                Ok(_) => FOUND_FREE,
            };
            // SAFETY: as above; the guard, if any, is not dropped.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(go);
    let result = watch(child, start, (release, holder), args.pace);
    if result.is_err() {
        // Do not leave the child behind on an error path.
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
    }
    result
}

fn watch(
    child: Pid,
    start: io::PipeWriter,
    (release, holder): (mpsc::Sender<()>, thread::JoinHandle<()>),
    pace: common::Pace,
) -> Result<(), Box<dyn Error>> {
    let me = getpid();
    say!("forked child {child}; see it: grep Threads /proc/{me}/status /proc/{child}/status");
    let threads = procfs::stat(child.as_raw())?.map_or(0, |s| s.num_threads);
    if threads != 1 {
        return Err(format!("the child has {threads} threads, expected 1").into());
    }
    say!("the child has {threads} thread: the holder of the lock was not copied");
    pace.sleep(2.0);

    // In the parent the holder lets go, and the mutex is free again.
    drop(release);
    holder.join().map_err(|_| "the holder thread panicked")?;
    match TABLE.try_lock() {
        Ok(guard) => say!(
            "in the parent the thread has unlocked: the mutex is free (value {})",
            *guard
        ),
        Err(_) => return Err("the parent's mutex is still locked after its holder ended".into()),
    }
    drop(start); // end of file: the child tries its copy of the lock now
    let status = waitpid(child, None)?;
    say!("child {child} {}", describe(status));
    if status != WaitStatus::Exited(child, FOUND_LOCKED) {
        return Err(format!(
            "expected the child to find its mutex locked (exit {FOUND_LOCKED}), got {}",
            describe(status)
        )
        .into());
    }
    say!("in the child the mutex is still locked, and no thread there will unlock it: lock() would wait forever");
    say!("all checks passed");
    Ok(())
}

/// Demonstrate why a child of a multithreaded process may find locks held forever.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}
