//! The POSIX back end: a counting semaphore on `sem_t` and a robust mutex on
//! `pthread_mutex_t`, both marked process-shared and living inside a shared
//! mapping, so every process that inherited the mapping uses the same object.
//!
//! Both are built in place (`sem_init` and `pthread_mutex_init` must run at
//! the object's final address, and the object must never move afterwards),
//! which is why they are made with `shared(...)` and handed out inside a
//! [`Shared`] mapping rather than by value.
//!
//! Every timed wait measures its timeout on `CLOCK_MONOTONIC`, which is
//! never stepped: `sem_timedwait` and `pthread_mutex_timedlock` would take
//! a `CLOCK_REALTIME` deadline, and a step of the wall clock (NTP, a VM's
//! time sync at start-up, `date -s`) would cut such a wait short or make it
//! far too long.

use std::cell::UnsafeCell;
use std::io;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::shm::Shared;
use crate::timeouts::monotonic_deadline;
use crate::Locked;

// The timed waits that take their clock (glibc 2.30 and later, POSIX.1-2024).
// The libc crate does not declare them for Linux, so they are declared here.
extern "C" {
    fn sem_clockwait(
        sem: *mut libc::sem_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

fn check(call: &str, rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::from_raw_os_error(rc);
        Err(io::Error::new(e.kind(), format!("{call}: {e}")))
    }
}

fn last_error(call: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{call}: {e}"))
}

/// A counting semaphore shared between processes: `sem_init(sem, 1, value)`.
pub struct Semaphore {
    sem: UnsafeCell<libc::sem_t>,
}

// SAFETY: sem_t is made for concurrent use; with pshared=1, across processes too.
unsafe impl Sync for Semaphore {}
// SAFETY: the semaphore is only used in place, inside its mapping.
unsafe impl Send for Semaphore {}

impl Semaphore {
    /// A semaphore with `value` permits in a fresh shared mapping.
    pub fn shared(value: u32) -> io::Result<Shared<Semaphore>> {
        // SAFETY: sem_init builds a valid sem_t at its final address, or we fail.
        unsafe {
            Shared::new_in_place(|p: *mut Semaphore| {
                let sem = UnsafeCell::raw_get(&raw const (*p).sem);
                if libc::sem_init(sem, 1, value) == 0 {
                    Ok(())
                } else {
                    Err(last_error("sem_init"))
                }
            })
        }
    }

    /// Take a permit, sleeping until one is free.
    pub fn wait(&self) -> io::Result<()> {
        loop {
            // SAFETY: the sem_t was initialised by `shared` and never moves.
            if unsafe { libc::sem_wait(self.sem.get()) } == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(last_error("sem_wait"));
            }
        }
    }

    /// Take a permit if one is free now; `false` if none is.
    pub fn try_wait(&self) -> io::Result<bool> {
        // SAFETY: as in `wait`.
        if unsafe { libc::sem_trywait(self.sem.get()) } == 0 {
            return Ok(true);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(false),
            _ => Err(last_error("sem_trywait")),
        }
    }

    /// Take a permit, waiting at most `timeout`; `false` if it timed out.
    ///
    /// `sem_clockwait` with an absolute `CLOCK_MONOTONIC` deadline, not
    /// `sem_timedwait`, whose `CLOCK_REALTIME` deadline a step of the wall
    /// clock moves. An absolute deadline also makes a retry after a signal
    /// (`EINTR`) wait only for what is left.
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = monotonic_deadline(timeout);
        loop {
            // SAFETY: as in `wait`; `deadline` is a valid timespec.
            let rc = unsafe { sem_clockwait(self.sem.get(), libc::CLOCK_MONOTONIC, &deadline) };
            if rc == 0 {
                return Ok(true);
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ETIMEDOUT) => return Ok(false),
                _ => return Err(last_error("sem_clockwait")),
            }
        }
    }

    /// Give a permit back, waking one waiter if there is one.
    pub fn post(&self) -> io::Result<()> {
        // SAFETY: as in `wait`.
        if unsafe { libc::sem_post(self.sem.get()) } == 0 {
            Ok(())
        } else {
            Err(last_error("sem_post"))
        }
    }

    /// The number of free permits right now (a snapshot).
    pub fn value(&self) -> u32 {
        let mut v: libc::c_int = 0;
        // SAFETY: as in `wait`; `v` is a valid out-pointer.
        unsafe { libc::sem_getvalue(self.sem.get(), &mut v) };
        v.max(0) as u32
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        // SAFETY: dropped once, by the mapping's creator, when no one waits.
        unsafe { libc::sem_destroy(self.sem.get()) };
    }
}

/// A mutex shared between processes, protecting a `T`: a pthread mutex with
/// `PTHREAD_PROCESS_SHARED` and `PTHREAD_MUTEX_ROBUST`.
///
/// Robust means glibc keeps, in each thread's own memory, a list of the
/// robust mutexes the thread holds, and tells the kernel only where its head
/// is (`set_robust_list`). When the thread dies, the kernel walks that list
/// and marks each mutex as owner-dead, so the next `pthread_mutex_lock`
/// returns `EOWNERDEAD` instead of blocking forever (robust_list(2)).
#[repr(C)]
pub struct Mutex<T> {
    raw: UnsafeCell<libc::pthread_mutex_t>,
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only through a guard, which holds the lock.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Mutex<T> {}

/// Access to the data of a locked [`Mutex`]; unlocks when dropped.
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T: Send> Mutex<T> {
    /// A mutex holding `value`, in a fresh shared mapping.
    pub fn shared(value: T) -> io::Result<Shared<Mutex<T>>> {
        // SAFETY: the attribute and mutex are initialised at their final
        // addresses by the pthread calls; `data` is written before use.
        unsafe {
            Shared::new_in_place(|p: *mut Mutex<T>| {
                let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
                check(
                    "pthread_mutexattr_init",
                    libc::pthread_mutexattr_init(attr.as_mut_ptr()),
                )?;
                let a = attr.as_mut_ptr();
                let r = check(
                    "pthread_mutexattr_setpshared",
                    libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED),
                )
                .and_then(|_| {
                    check(
                        "pthread_mutexattr_setrobust",
                        libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST),
                    )
                })
                .and_then(|_| {
                    let raw = UnsafeCell::raw_get(&raw const (*p).raw);
                    check("pthread_mutex_init", libc::pthread_mutex_init(raw, a))
                });
                libc::pthread_mutexattr_destroy(a);
                r?;
                UnsafeCell::raw_get(&raw const (*p).data).write(value);
                Ok(())
            })
        }
    }

    fn outcome(
        &self,
        rc: libc::c_int,
        call: &str,
    ) -> io::Result<Option<Locked<MutexGuard<'_, T>>>> {
        match rc {
            0 => Ok(Some(Locked::Acquired(MutexGuard { mutex: self }))),
            libc::EOWNERDEAD => Ok(Some(Locked::OwnerDied(MutexGuard { mutex: self }))),
            libc::EBUSY | libc::ETIMEDOUT => Ok(None),
            // Kept bare, so callers can match on `raw_os_error()`.
            libc::ENOTRECOVERABLE => Err(io::Error::from_raw_os_error(rc)),
            rc => check(call, rc).map(|_| None),
        }
    }

    /// Lock, sleeping until the mutex is free. `OwnerDied` if the previous
    /// holder died holding it (`EOWNERDEAD`).
    pub fn lock(&self) -> io::Result<Locked<MutexGuard<'_, T>>> {
        // SAFETY: the mutex was initialised by `shared` and never moves.
        let rc = unsafe { libc::pthread_mutex_lock(self.raw.get()) };
        self.outcome(rc, "pthread_mutex_lock")?
            .ok_or_else(|| io::Error::other("pthread_mutex_lock: unexpected timeout"))
    }

    /// Lock if the mutex is free now; `None` if it is held.
    pub fn try_lock(&self) -> io::Result<Option<Locked<MutexGuard<'_, T>>>> {
        // SAFETY: as in `lock`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.raw.get()) };
        self.outcome(rc, "pthread_mutex_trylock")
    }

    /// Lock, waiting at most `timeout`; `None` if it timed out.
    ///
    /// `pthread_mutex_clocklock` with a `CLOCK_MONOTONIC` deadline, not
    /// `pthread_mutex_timedlock`, whose `CLOCK_REALTIME` deadline a step of
    /// the wall clock moves.
    pub fn lock_timeout(&self, timeout: Duration) -> io::Result<Option<Locked<MutexGuard<'_, T>>>> {
        let deadline = monotonic_deadline(timeout);
        // SAFETY: as in `lock`; `deadline` is a valid timespec.
        let rc =
            unsafe { pthread_mutex_clocklock(self.raw.get(), libc::CLOCK_MONOTONIC, &deadline) };
        self.outcome(rc, "pthread_mutex_clocklock")
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
    /// again (`pthread_mutex_consistent`). Without this, unlocking makes the
    /// mutex unusable for everyone (`ENOTRECOVERABLE`).
    pub fn mark_consistent(&mut self) -> io::Result<()> {
        // SAFETY: we hold the lock, as `pthread_mutex_consistent` requires.
        check("pthread_mutex_consistent", unsafe {
            libc::pthread_mutex_consistent(self.mutex.raw.get())
        })
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other process touches the data.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard holds the lock it releases.
        unsafe { libc::pthread_mutex_unlock(self.mutex.raw.get()) };
    }
}

impl<T> Drop for Mutex<T> {
    fn drop(&mut self) {
        // SAFETY: dropped once, by the creator, when no one holds it.
        unsafe { libc::pthread_mutex_destroy(self.raw.get()) };
    }
}
