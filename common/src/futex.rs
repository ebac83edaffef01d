//! The POSIX-semaphore-free back end: a semaphore and a mutex built on a
//! futex word in shared memory, the mutex exposed through `lock_api`, the
//! lock layer that `parking_lot` is built on.
//!
//! Why not simply `parking_lot::Mutex` in shared memory? Its fast path is an
//! atomic byte and would work, but a waiter sleeps in parking_lot's *parking
//! table*, a hash table in the waiting process's own heap. A process that
//! unlocks looks up waiters in *its* table, finds none, and never wakes the
//! waiter in the other process. A futex works across processes because the
//! kernel keys a shared (non-`FUTEX_PRIVATE`) futex by what backs the memory
//! (the mapped file or shared-memory object, or the anonymous shared
//! mapping) and the offset in it, so every process mapping that word waits
//! on, and wakes, the same queue, whatever address it is mapped at.
//!
//! So the raw lock here is ours, and [`RawMutex`] implements
//! `lock_api::RawMutex` and `lock_api::RawMutexTimed`: the same guard and
//! API shape as `parking_lot::Mutex`. All-zero memory is an unlocked mutex
//! and an empty semaphore.
//!
//! A futex has no robust list, so to survive a holder's death the mutex
//! records its owner: the state word holds the owner's PID, and a stamp
//! holds that PID with the process's start time (from `/proc`), so a PID
//! reused by an unrelated process is not mistaken for the owner. A waiter
//! that has slept a while without progress checks the owner; a process that
//! is gone or a zombie is dead, and the waiter takes the lock over, told
//! that the owner died.

use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

use crate::shm::Shared;
use crate::timeouts::remaining;
use crate::Locked;

/// How many times a waiter retries before it sleeps in the kernel. A
/// short spin pays off when the holder runs on the other core and is about
/// to let go; past it, sleeping is cheaper than burning the core.
const SPINS: u32 = 100;

/// Sleep on the futex word `word` while it still holds `expected`, at most
/// `timeout`. Without `FUTEX_PRIVATE`, so the kernel keys the wait by the
/// object behind the mapping and the word's offset in it, not by the
/// address: waiters in other processes that map the same shared memory,
/// at any address, share the queue.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> io::Result<()> {
    let ts = timeout.map(|d| rustix::fs::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        // Woken, the word changed before we slept, a signal, or time is up:
        // in every case the caller looks at the word again.
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::TIMEDOUT) => Ok(()),
        Err(e) => Err(io::Error::other(format!("futex(FUTEX_WAIT): {e}"))),
    }
}

fn futex_wake(word: &AtomicU32, how_many: u32) {
    // Waking can only fail for a bad address, which a reference rules out.
    let _ = futex::wake(word, futex::Flags::empty(), how_many);
}

/// A counting semaphore shared between processes.
#[repr(C)]
pub struct Semaphore {
    count: AtomicU32,
    /// How many processes sleep (or are about to) on `count`, so `post`
    /// makes the wake system call only when someone may need it.
    waiters: AtomicU32,
}

impl Semaphore {
    /// A semaphore with `value` permits, to be placed in shared memory.
    pub const fn new(value: u32) -> Self {
        Semaphore {
            count: AtomicU32::new(value),
            waiters: AtomicU32::new(0),
        }
    }

    /// A semaphore with `value` permits in a fresh shared mapping.
    pub fn shared(value: u32) -> io::Result<Shared<Semaphore>> {
        Shared::new(Semaphore::new(value))
    }

    fn take(&self) -> bool {
        let mut c = self.count.load(Ordering::Relaxed);
        while c > 0 {
            match self
                .count
                .compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
        false
    }

    fn wait_until(&self, deadline: Option<Instant>) -> io::Result<bool> {
        for _ in 0..SPINS {
            if self.take() {
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        loop {
            if self.take() {
                return Ok(true);
            }
            let timeout = match deadline {
                None => None,
                Some(d) => match remaining(d) {
                    Some(left) => Some(left),
                    None => return Ok(false),
                },
            };
            // Announce ourselves, then sleep only if the count is still 0
            // (the kernel checks that atomically). A `post` after our check
            // sees `waiters > 0` and wakes us; one before it makes the
            // kernel refuse to sleep.
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let r = futex_wait(&self.count, 0, timeout);
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            r?;
            // Woken or not, a deadline that has passed is a timeout, as in
            // glibc's `sem_timedwait`: a permit found only afterwards was
            // not handed to us in time, and taking it would hide a lost
            // wake-up (a `post` that wakes nobody) as a slow success.
            if deadline.is_some_and(|d| remaining(d).is_none()) {
                return Ok(false);
            }
        }
    }

    /// Take a permit, sleeping until one is free.
    pub fn wait(&self) -> io::Result<()> {
        self.wait_until(None).map(drop)
    }

    /// Take a permit if one is free now; `false` if none is.
    pub fn try_wait(&self) -> io::Result<bool> {
        Ok(self.take())
    }

    /// Take a permit, waiting at most `timeout`; `false` if it timed out.
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<bool> {
        self.wait_until(Some(Instant::now() + timeout))
    }

    /// Give a permit back, waking one sleeper if there is one.
    pub fn post(&self) -> io::Result<()> {
        self.count.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex_wake(&self.count, 1);
        }
        Ok(())
    }

    /// The number of free permits right now (a snapshot).
    pub fn value(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Set in the state word when someone sleeps on it.
const WAITERS: u32 = 1 << 31;
/// The owner's PID (`pid_max` is at most 2^22 on Linux).
const PID_MASK: u32 = (1 << 30) - 1;
/// Start times are kept to 40 bits in the stamp (about 348 years of 100 Hz ticks).
const START_BITS: u32 = 40;
const START_MASK: u64 = (1 << START_BITS) - 1;

const HEALTHY: u32 = 0;
const INCONSISTENT: u32 = 1;
const NOT_RECOVERABLE: u32 = 2;

/// How long a waiter sleeps before it checks whether the owner still lives.
const OWNER_CHECK: Duration = Duration::from_millis(50);

/// This process's PID and start time, read once per process. `fork` copies
/// the cache, so a child handler registered with `pthread_atfork` clears it
/// (a single store to an atomic: POSIX does not require fork handlers to be
/// async-signal-safe, but this one is, so it is also safe in the child of a
/// multithreaded parent).
static MY_PID: AtomicU32 = AtomicU32::new(0);
static MY_START: AtomicU64 = AtomicU64::new(0);
static AT_FORK: Once = Once::new();

extern "C" fn forget_identity() {
    MY_PID.store(0, Ordering::Relaxed);
}

fn me() -> (u32, u64) {
    let pid = MY_PID.load(Ordering::Relaxed);
    if pid != 0 {
        return (pid, MY_START.load(Ordering::Relaxed));
    }
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(forget_identity)) };
    });
    let pid = std::process::id();
    let start = crate::procfs::stat(pid as i32)
        .ok()
        .flatten()
        .map_or(0, |s| s.start_time & START_MASK);
    MY_START.store(start, Ordering::Relaxed);
    MY_PID.store(pid, Ordering::Relaxed);
    (pid, start)
}

/// The raw futex mutex, for `lock_api::Mutex<RawMutex, T>`.
#[repr(C)]
pub struct RawMutex {
    /// 0 when free, else the owner's PID, with `WAITERS` set when someone sleeps.
    state: AtomicU32,
    /// `HEALTHY`, `INCONSISTENT` (taken over from a dead owner, not yet
    /// repaired) or `NOT_RECOVERABLE` (released without being repaired).
    health: AtomicU32,
    /// The owner's PID << 40 | its start time, written after each acquisition.
    owner_stamp: AtomicU64,
}

/// What one acquisition learned: whether the previous owner had died.
pub struct Acquisition {
    owner_died: bool,
    _not_send: lock_api::GuardNoSend,
}

impl Acquisition {
    fn new(owner_died: bool) -> Self {
        Acquisition {
            owner_died,
            _not_send: lock_api::GuardNoSend::new(),
        }
    }
}

impl RawMutex {
    fn acquired(&self, pid: u32, start: u64, owner_died: bool) -> Acquisition {
        self.owner_stamp
            .store((u64::from(pid) << START_BITS) | start, Ordering::Relaxed);
        if owner_died {
            self.health.store(INCONSISTENT, Ordering::Relaxed);
        }
        Acquisition::new(owner_died)
    }

    /// Whether the process `owner` that holds the lock has ended. The stamp
    /// gives its start time once the owner has written it; until then only
    /// the PID is checked.
    fn owner_is_dead(&self, owner: u32) -> bool {
        let stamp = self.owner_stamp.load(Ordering::Relaxed);
        let started = (stamp >> START_BITS == u64::from(owner)).then_some(stamp & START_MASK);
        match crate::procfs::stat(owner as i32) {
            Ok(None) => true,
            Ok(Some(s)) => {
                matches!(s.state, 'Z' | 'X')
                    || started.is_some_and(|t| t != 0 && t != s.start_time & START_MASK)
            }
            Err(_) => false,
        }
    }

    fn lock_until(&self, deadline: Option<Instant>) -> io::Result<Option<Acquisition>> {
        let (pid, start) = me();
        for _ in 0..SPINS {
            if self
                .state
                .compare_exchange_weak(0, pid, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Some(self.acquired(pid, start, false)));
            }
            std::hint::spin_loop();
        }
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s == 0 {
                // We may not be the only sleeper: keep WAITERS set, so our
                // unlock wakes the next one (a spurious wake at worst).
                if self
                    .state
                    .compare_exchange(0, pid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(Some(self.acquired(pid, start, false)));
                }
                continue;
            }
            let held = s | WAITERS;
            if s & WAITERS == 0
                && self
                    .state
                    .compare_exchange(s, held, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let slice = match deadline {
                None => OWNER_CHECK,
                Some(d) => match remaining(d) {
                    Some(left) => left.min(OWNER_CHECK),
                    None => return Ok(None),
                },
            };
            let slept = Instant::now();
            futex_wait(&self.state, held, Some(slice))?;
            // Still held by the same owner after a full slice: does it live?
            if slept.elapsed() >= slice
                && self.state.load(Ordering::Relaxed) == held
                && self.owner_is_dead(held & PID_MASK)
                && self
                    .state
                    .compare_exchange(held, pid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok(Some(self.acquired(pid, start, true)));
            }
        }
    }
}

// SAFETY: `state` goes from 0 to our PID only by compare-and-swap with
// Acquire ordering, and back to 0 with Release ordering, so one holder at a
// time sees the data, and the holder's writes are visible to the next one.
// Taking over from a dead owner is again one compare-and-swap.
unsafe impl lock_api::RawMutex for RawMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RawMutex {
        state: AtomicU32::new(0),
        health: AtomicU32::new(HEALTHY),
        owner_stamp: AtomicU64::new(0),
    };

    type Guard = Acquisition;

    fn lock(&self) -> Acquisition {
        match self.lock_until(None) {
            Ok(Some(a)) => a,
            // Without a deadline, only a futex error (a bad address) ends the
            // loop, which a reference into live memory rules out.
            Ok(None) | Err(_) => panic!("futex mutex: lock failed"),
        }
    }

    fn try_lock(&self) -> Option<Acquisition> {
        let (pid, start) = me();
        self.state
            .compare_exchange(0, pid, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| self.acquired(pid, start, false))
    }

    unsafe fn unlock(&self, _acquired: Acquisition) {
        // Released after an owner died, without `mark_consistent`: nobody
        // can trust the data any more (as with a robust pthread mutex).
        if self.health.load(Ordering::Relaxed) == INCONSISTENT {
            self.health.store(NOT_RECOVERABLE, Ordering::Relaxed);
        }
        if self.state.swap(0, Ordering::Release) & WAITERS != 0 {
            futex_wake(&self.state, 1);
        }
    }

    fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != 0
    }
}

// SAFETY: as for `RawMutex`; these only add a deadline to `lock`.
unsafe impl lock_api::RawMutexTimed for RawMutex {
    type Duration = Duration;
    type Instant = Instant;

    fn try_lock_for(&self, timeout: Duration) -> Option<Acquisition> {
        self.try_lock_until(Instant::now() + timeout)
    }

    fn try_lock_until(&self, deadline: Instant) -> Option<Acquisition> {
        self.lock_until(Some(deadline)).ok().flatten()
    }
}

/// A mutex shared between processes, protecting a `T`: a
/// `lock_api::Mutex` over the futex [`RawMutex`], with the owner-died
/// outcome of the POSIX back end.
pub struct Mutex<T> {
    inner: lock_api::Mutex<RawMutex, T>,
}

/// Access to the data of a locked [`Mutex`]; unlocks when dropped.
pub struct MutexGuard<'a, T> {
    guard: lock_api::MutexGuard<'a, RawMutex, T>,
    raw: &'a RawMutex,
}

impl<T: Send> Mutex<T> {
    /// An unlocked mutex holding `value`, to be placed in shared memory.
    pub const fn new(value: T) -> Self {
        Mutex {
            inner: lock_api::Mutex::new(value),
        }
    }

    /// A mutex holding `value`, in a fresh shared mapping.
    pub fn shared(value: T) -> io::Result<Shared<Mutex<T>>> {
        Shared::new(Mutex::new(value))
    }

    fn raw(&self) -> &RawMutex {
        // SAFETY: we only lock through it, never unlock what we do not hold.
        unsafe { self.inner.raw() }
    }

    fn guard(&self, acquired: Acquisition) -> io::Result<Locked<MutexGuard<'_, T>>> {
        let owner_died = acquired.owner_died;
        // SAFETY: `acquired` proves we hold the lock.
        let guard = unsafe { self.inner.make_guard_unchecked(acquired) };
        if self.raw().health.load(Ordering::Relaxed) == NOT_RECOVERABLE {
            drop(guard);
            return Err(io::Error::from_raw_os_error(libc::ENOTRECOVERABLE));
        }
        let guard = MutexGuard {
            guard,
            raw: self.raw(),
        };
        Ok(if owner_died {
            Locked::OwnerDied(guard)
        } else {
            Locked::Acquired(guard)
        })
    }

    /// Lock, sleeping until the mutex is free. `OwnerDied` if the previous
    /// holder died holding it.
    pub fn lock(&self) -> io::Result<Locked<MutexGuard<'_, T>>> {
        match self.raw().lock_until(None)? {
            Some(a) => self.guard(a),
            None => Err(io::Error::other("futex mutex: lock ended without the lock")),
        }
    }

    /// Lock if the mutex is free now; `None` if it is held.
    pub fn try_lock(&self) -> io::Result<Option<Locked<MutexGuard<'_, T>>>> {
        lock_api::RawMutex::try_lock(self.raw())
            .map(|a| self.guard(a))
            .transpose()
    }

    /// Lock, waiting at most `timeout`; `None` if it timed out.
    pub fn lock_timeout(&self, timeout: Duration) -> io::Result<Option<Locked<MutexGuard<'_, T>>>> {
        self.raw()
            .lock_until(Some(Instant::now() + timeout))?
            .map(|a| self.guard(a))
            .transpose()
    }

    /// Lock where nobody is expected to die or hold on: a holder that died
    /// holding the lock, or one that keeps it for `timeout`, is an error
    /// (kind `TimedOut` for the latter) rather than a hang. For the lessons
    /// whose point is not recovery; `lock` and `lock_timeout` show both
    /// outcomes.
    pub fn lock_within(&self, timeout: Duration) -> io::Result<MutexGuard<'_, T>> {
        match self.lock_timeout(timeout)? {
            Some(Locked::Acquired(guard)) => Ok(guard),
            Some(Locked::OwnerDied(_)) => Err(io::Error::other(
                "lock: its previous holder died holding it",
            )),
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("lock: still held by another process after {timeout:?}"),
            )),
        }
    }
}

impl<T> MutexGuard<'_, T> {
    /// After `OwnerDied`: the data has been repaired, the mutex is usable
    /// again. Without this, unlocking makes the mutex unusable for everyone.
    pub fn mark_consistent(&mut self) -> io::Result<()> {
        self.raw.health.store(HEALTHY, Ordering::Relaxed);
        Ok(())
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}
