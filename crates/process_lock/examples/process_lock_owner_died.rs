//! Demonstrate how a robust mutex shared between processes survives the
//! death of its holder: the next locker gets `EOWNERDEAD`, repairs the data
//! and calls `pthread_mutex_consistent`.
//!
//! A holder locks the mutex, takes 30 out of account a, and is killed with
//! SIGKILL before it credits b. A rescuer, asleep in the lock call all that
//! time, gets `EOWNERDEAD` instead of waiting forever, finds a + b = 70,
//! finishes the transfer from the journal, marks the mutex consistent and
//! unlocks. The parent then locks as usual (0, not `EOWNERDEAD`) and checks
//! a + b = 100 after one repair. The pthread calls are written out here.
//!
//! What to observe while both wait (3 s at pace 1): `ps -o
//! pid,stat,wchan:20,comm --ppid <parent pid>` shows the holder asleep in
//! `hrtimer_nanosleep` with the lock, the rescuer in `futex_do_wait` (Linux 6.18).
//!
//! ```text
//! cargo run -p process_lock --example process_lock_owner_died
//! cargo run -p process_lock --example process_lock_owner_died -- --pace 2
//! ```

use std::cell::UnsafeCell;
use std::error::Error;
use std::io;
use std::time::Duration;

use clap::Parser;
use common::fork::{exit_code, spawn};
use common::{describe, procfs, say, warn, Semaphore, Shared};
use libc::{c_int, clockid_t, pthread_mutex_t, timespec, EOWNERDEAD, ETIMEDOUT};
use nix::sys::signal::Signal;
use nix::sys::time::TimeSpec;
use nix::sys::wait::WaitStatus;
use nix::time::{clock_gettime, ClockId};

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

/// The robust mutex and the accounts it protects, in one shared mapping.
struct Bank {
    mutex: UnsafeCell<pthread_mutex_t>,
    acc: UnsafeCell<Accounts>,
}
// SAFETY: `acc` is touched only while holding `mutex`, a process-shared mutex.
unsafe impl Sync for Bank {}

/// A transfer is two stores; in between, a + b is short of `TOTAL`.
#[derive(Default)]
struct Accounts {
    a: i64,
    b: i64,
    in_flight: i64, // a one-line journal: the amount of the transfer under way
    repairs: u32,
}
const TOTAL: i64 = 100;
const AMOUNT: i64 = 30;

fn run(args: &Args) -> Res {
    // SAFETY: `init` builds the mutex at its final address, and the accounts.
    let bank = unsafe { Shared::new_in_place(|p: *mut Bank| init(p)) }?;
    let holding = Semaphore::shared(0)?;
    let window = args.pace.secs(3.0); // both asleep, for a human to look at
    say!("a robust, process-shared pthread mutex guards a = {TOTAL}, b = 0");

    // common::fork::spawn flushes stdout, forks, sets PR_SET_PDEATHSIG, runs
    // the closure and leaves with _exit; a dropped `Child` is killed and reaped.
    let mut holder = spawn("holder", || -> Res {
        check("pthread_mutex_clocklock", lock(&bank, SYSTEM_TIMEOUT)?)?;
        // SAFETY: we hold the mutex.
        let acc = unsafe { &mut *bank.acc.get() };
        acc.in_flight = AMOUNT;
        acc.a -= AMOUNT;
        let (a, b) = (acc.a, acc.b);
        say!("locked; took {AMOUNT} out of a (a = {a}, b = {b}), about to credit b");
        holding.post()?;
        // Stuck here, holding the lock, until killed (by the parent, or by
        // PR_SET_PDEATHSIG when the parent dies).
        std::thread::sleep(SYSTEM_TIMEOUT * 2 + window);
        Err("the holder was never killed".into())
    })?;
    if !holding.wait_timeout(SYSTEM_TIMEOUT)? {
        return Err("the holder never took the lock".into());
    }

    let mut rescuer = spawn("rescuer", || -> Res {
        say!("waiting for the lock");
        match lock(&bank, SYSTEM_TIMEOUT + window)? {
            EOWNERDEAD => {}
            0 => return Err("locked as if nothing had happened".into()),
            ETIMEDOUT => return Err("no news of the dead owner: lock timed out".into()),
            rc => return Ok(check("pthread_mutex_clocklock", rc)?),
        }
        // SAFETY: EOWNERDEAD means we hold the mutex.
        let acc = unsafe { &mut *bank.acc.get() };
        let (a, b, due) = (acc.a, acc.b, acc.in_flight);
        let sum = a + b;
        say!("EOWNERDEAD: locked, and told the owner died: a = {a}, b = {b}, a + b = {sum} (should be {TOTAL}), {due} in flight");
        // Repair from the journal: the money left a but never reached b.
        if sum + due != TOTAL {
            return Err("the journal does not explain the accounts".into());
        }
        acc.b += due;
        acc.in_flight = 0;
        acc.repairs += 1;
        // SAFETY: we hold the mutex, as pthread_mutex_consistent requires.
        let rc = unsafe { libc::pthread_mutex_consistent(bank.mutex.get()) };
        check("pthread_mutex_consistent", rc)?;
        let (a, b) = (acc.a, acc.b);
        say!(
            "repaired: a = {a}, b = {b}, a + b = {}; called pthread_mutex_consistent",
            a + b
        );
        // SAFETY: we hold the mutex.
        let rc = unsafe { libc::pthread_mutex_unlock(bank.mutex.get()) };
        Ok(check("pthread_mutex_unlock", rc)?)
    })?;

    // Wait until the rescuer sleeps, blocked on the lock (state S).
    let asleep = |s: Option<&procfs::Stat>| s.is_some_and(|s| s.state == 'S');
    if procfs::wait_for(rescuer.raw(), SYSTEM_TIMEOUT, asleep)?.is_err() {
        return Err("the rescuer never went to sleep waiting for the lock".into());
    }
    let (r, me) = (rescuer.raw(), std::process::id());
    say!("rescuer {r} is asleep, waiting; see: ps -o pid,stat,wchan:20,comm --ppid {me}");
    std::thread::sleep(window);
    holder.signal(Signal::SIGKILL)?;
    match holder.wait_timeout(SYSTEM_TIMEOUT)? {
        Some(s @ WaitStatus::Signaled(_, Signal::SIGKILL, _)) => {
            say!(
                "holder {} {}, with the lock held",
                holder.raw(),
                describe(s)
            )
        }
        Some(s) => return Err(format!("holder: {}", describe(s)).into()),
        None => return Err("the holder survived SIGKILL".into()),
    }
    match rescuer.wait_timeout(SYSTEM_TIMEOUT + window)? {
        Some(s) if exit_code(s) == Some(0) => {}
        Some(s) => return Err(format!("rescuer: {}", describe(s)).into()),
        None => return Err("the rescuer did not finish".into()),
    }

    // The lock works as before (0, not EOWNERDEAD), and the data is whole.
    check("pthread_mutex_clocklock", lock(&bank, SYSTEM_TIMEOUT)?)?;
    // SAFETY: we hold the mutex.
    let acc = unsafe { &*bank.acc.get() };
    let (a, b, repairs) = (acc.a, acc.b, acc.repairs);
    // SAFETY: we hold it; then nobody is left to use it, and we destroy it.
    unsafe {
        libc::pthread_mutex_unlock(bank.mutex.get());
        libc::pthread_mutex_destroy(bank.mutex.get());
    }
    let sum = a + b;
    say!("the lock works again: a = {a}, b = {b}, a + b = {sum}, {repairs} repair");
    if sum != TOTAL || repairs != 1 {
        return Err("the accounts were not repaired".into());
    }
    say!("all checks passed");
    Ok(())
}

/// Build the robust, process-shared mutex at `p`, and the accounts.
fn init(p: *mut Bank) -> io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    let a = attr.as_mut_ptr();
    // SAFETY: `a` points at attribute storage, `p` into the fresh mapping.
    unsafe {
        check("pthread_mutexattr_init", libc::pthread_mutexattr_init(a))?;
        // Usable by every process that maps it, not only by this one's threads.
        let shared = libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED);
        // Robust: when the holder dies, the next lock returns EOWNERDEAD.
        let robust = libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST);
        let mutex = UnsafeCell::raw_get(&raw const (*p).mutex);
        let made = check("pthread_mutexattr_setpshared", shared)
            .and(check("pthread_mutexattr_setrobust", robust))
            .and_then(|_| check("pthread_mutex_init", libc::pthread_mutex_init(mutex, a)));
        libc::pthread_mutexattr_destroy(a);
        made?;
        let accounts = UnsafeCell::raw_get(&raw const (*p).acc);
        accounts.write(Accounts::default());
        (*accounts).a = TOTAL;
    }
    Ok(())
}

extern "C" {
    // glibc 2.30 and later; the libc crate does not declare it for Linux.
    fn pthread_mutex_clocklock(m: *mut pthread_mutex_t, c: clockid_t, t: *const timespec) -> c_int;
}

/// Lock, waiting at most `timeout` on CLOCK_MONOTONIC: 0, EOWNERDEAD, ETIMEDOUT...
fn lock(bank: &Bank, timeout: Duration) -> io::Result<c_int> {
    let deadline = clock_gettime(ClockId::CLOCK_MONOTONIC)? + TimeSpec::from(timeout);
    let clock = libc::CLOCK_MONOTONIC;
    // SAFETY: the mutex was built by `init` and never moves.
    Ok(unsafe { pthread_mutex_clocklock(bank.mutex.get(), clock, deadline.as_ref()) })
}

/// A pthread call's return code as a Result naming the call.
fn check(call: &str, rc: c_int) -> io::Result<()> {
    let e = || io::Error::other(format!("{call}: {}", io::Error::from_raw_os_error(rc)));
    (rc == 0).then_some(()).ok_or_else(e)
}

type Res = Result<(), Box<dyn Error>>;

/// Demonstrate how a robust process-shared mutex survives its holder's death.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}

/// How long a wait may take before the lesson calls it stuck (not paced).
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
