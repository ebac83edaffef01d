//! Shared set-up for the lessons: only what several lessons would otherwise
//! repeat, never a lesson's own point.
//!
//! - [`shm`]: a typed anonymous shared mapping for parent and children, and
//!   named shared memory (through the `shared_memory` crate) for processes
//!   that are not related by `fork`.
//! - [`posix`] and [`futex`]: process-shared semaphores and mutexes, two back
//!   ends that are both always compiled. The names [`Semaphore`] and [`Mutex`]
//!   point to one of them: POSIX by default, the futex back end with the cargo
//!   feature `futex-default`.
//! - [`fork`]: run a closure in a child that always leaves with `_exit`, and a
//!   handle to wait for it (also with a timeout), poll it and signal it.
//! - [`program`]: a program started with `std::process::Command` that dies
//!   with the lesson (`PR_SET_PDEATHSIG`), starts with an empty signal mask,
//!   and is killed and reaped if dropped while it runs.
//! - [`signals`]: hold SIGINT, SIGTERM and SIGHUP back while a named object
//!   exists, until it is unlinked.
//! - [`procfs`]: a process's state letter, parent, start time and name, a
//!   line of its `status` (`SigBlk`...), and where it sleeps (`wchan`).
//! - [`args`]: the pace factor (`--pace` / `LESSON_PACE`) every lesson flattens
//!   into its clap options, and a range-checked parser for decimal options.
//! - [`opts`]: the hand-written option parser the lessons used before clap
//!   (goes away once no lesson uses it).
//! - [`out`]: every line names the process that prints it: `[parent 4242] ...`.
//! - [`names`]: unique, private names for named kernel objects.
//!
//! Copying a lesson out: copy this folder beside it (see the README).

#![cfg(target_os = "linux")]

pub mod args;
pub mod fork;
pub mod futex;
pub mod names;
pub mod opts;
pub mod out;
pub mod posix;
pub mod procfs;
pub mod program;
pub mod shm;
pub mod signals;

mod timeouts;

pub use args::Pace;
pub use fork::{describe, Child};
pub use shm::Shared;
pub use timeouts::TimedOut;

/// The outcome of taking a lock that can survive the death of its holder.
///
/// A process that dies holding the lock leaves the protected data in an
/// unknown state. The next process to lock is told so: it still gets the
/// guard, repairs the data and then calls `mark_consistent` on the guard.
/// If it drops the guard without doing so, the lock becomes unusable for
/// everyone (the `ENOTRECOVERABLE` rule of robust pthread mutexes).
#[derive(Debug)]
pub enum Locked<G> {
    /// The lock was free or released normally.
    Acquired(G),
    /// The previous holder died while holding the lock.
    OwnerDied(G),
}

impl<G> Locked<G> {
    /// The guard, whatever the previous holder did. Use it only where
    /// repairing the data is not needed (for example, the data is a plain
    /// counter that a dead holder cannot leave half-written).
    pub fn into_guard(self) -> G {
        match self {
            Locked::Acquired(g) | Locked::OwnerDied(g) => g,
        }
    }

    /// Whether the previous holder died while holding the lock.
    pub fn owner_died(&self) -> bool {
        matches!(self, Locked::OwnerDied(_))
    }
}

/// The name of the back end behind [`Semaphore`] and [`Mutex`].
#[cfg(not(feature = "futex-default"))]
pub const BACKEND: &str = "posix";
/// The name of the back end behind [`Semaphore`] and [`Mutex`].
#[cfg(feature = "futex-default")]
pub const BACKEND: &str = "futex";

#[cfg(not(feature = "futex-default"))]
pub use posix::{Mutex, MutexGuard, Semaphore};

#[cfg(feature = "futex-default")]
pub use futex::{Mutex, MutexGuard, Semaphore};
