//! Demonstrate the pitfall of a robust lock: a locker told that the owner
//! died must mark the lock consistent, or it becomes unusable for good.
//!
//! Through `common::Mutex`, whichever back end it was built with. Twice, a
//! child locks and exits without unlocking. The parent's next lock comes
//! back as `Locked::OwnerDied`: the POSIX back end hears it from the kernel
//! (`EOWNERDEAD`), the futex back end finds the recorded owner dead in
//! `/proc`. The first time the parent calls `mark_consistent`
//! (`pthread_mutex_consistent`) and the lock works as before. The second
//! time it unlocks without it, and every later lock fails with
//! `ENOTRECOVERABLE`. The program checks each outcome.
//!
//! What to observe: "owner died" twice (a 1 s pause between them at pace 1),
//! then "State not recoverable".
//!
//! ```text
//! cargo run -p process_lock --example process_lock_unrepaired
//! cargo run -p process_lock --example process_lock_unrepaired --features common/futex-default
//! ```

use std::error::Error;
use std::time::Duration;

use clap::Parser;
use common::fork::{exit_code, spawn};
use common::{describe, say, warn, Locked, Mutex, Shared};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res {
    say!("lock back end: {}", common::BACKEND);
    // A process-shared robust mutex in a MAP_SHARED mapping (common makes
    // it: pthread_mutex_init with PTHREAD_PROCESS_SHARED and
    // PTHREAD_MUTEX_ROBUST, or a futex word that records its owner).
    let lock = Mutex::shared(0u32)?;

    for repair in [true, false] {
        die_holding(&lock)?;
        match lock.lock_timeout(SYSTEM_TIMEOUT)? {
            Some(Locked::OwnerDied(mut guard)) if repair => {
                say!("locked, and told the owner died; repairing, then mark_consistent");
                *guard += 1; // the "repair": here, count it
                guard.mark_consistent()?;
            }
            Some(Locked::OwnerDied(guard)) => {
                say!("locked, and told the owner died; unlocking WITHOUT mark_consistent");
                drop(guard);
            }
            Some(Locked::Acquired(_)) => return Err("the owner's death went unnoticed".into()),
            None => return Err(format!("no lock, no news within {SYSTEM_TIMEOUT:?}").into()),
        }
        if repair {
            match lock.lock_timeout(SYSTEM_TIMEOUT)? {
                Some(Locked::Acquired(g)) => say!("the lock works as before: {} repair", *g),
                _ => return Err("the repaired lock did not lock as usual".into()),
            }
            args.pace.sleep(1.0); // a moment to read, before the pitfall
        }
    }

    // Every lock from now on fails, in this process and in any other.
    match lock.lock_timeout(SYSTEM_TIMEOUT) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTRECOVERABLE) => {
            say!("the next lock: {e} (ENOTRECOVERABLE): unusable for good")
        }
        Err(e) => return Err(format!("expected ENOTRECOVERABLE, got {e}").into()),
        Ok(_) => return Err("the unrepaired lock can still be locked".into()),
    }
    say!("all checks passed");
    Ok(())
}

/// Fork a child that locks and leaves (with `_exit`) without unlocking.
fn die_holding(lock: &Shared<Mutex<u32>>) -> Res {
    // common::fork::spawn flushes stdout, forks, sets PR_SET_PDEATHSIG, runs
    // the closure and leaves with _exit; a dropped `Child` is killed and reaped.
    let mut child = spawn("holder", || -> Res {
        let guard = lock.lock_within(SYSTEM_TIMEOUT)?;
        say!("locked; exiting without unlocking");
        std::mem::forget(guard); // no unlock: the process ends holding it
        Ok(())
    })?;
    match child.wait_timeout(SYSTEM_TIMEOUT)? {
        Some(s) if exit_code(s) == Some(0) => Ok(()),
        Some(s) => Err(format!("holder: {}", describe(s)).into()),
        None => Err(format!("holder still runs after {SYSTEM_TIMEOUT:?}").into()),
    }
}

type Res = Result<(), Box<dyn Error>>;

/// Demonstrate how a robust lock left unrepaired becomes unusable.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}

/// How long a wait may take before the lesson calls it stuck (not paced).
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
