//! Both back ends pass the same tests: real contention between processes,
//! timeouts, and a holder that dies holding the lock.
//!
//! These tests fork inside the multithreaded test harness, so they follow
//! nix's rules: one global lock serialises every test that forks, and the
//! children only touch shared memory (atomics, the primitives under test)
//! and leave with `_exit` (through `Fork::run_unchecked`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use common::fork::Fork;
use common::{describe, Locked, Shared};

static FORK_LOCK: StdMutex<()> = StdMutex::new(());

fn forking() -> std::sync::MutexGuard<'static, ()> {
    FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fork a child that runs `f` and exits with its code.
fn child(f: impl FnOnce() -> i32) -> common::Child {
    // SAFETY: the children in this file only use atomics and the
    // primitives under test in shared memory, then `_exit`.
    unsafe { Fork::new("test child").run_unchecked(f) }.expect("fork")
}

fn exited_ok(mut c: common::Child) {
    let s = c
        .wait_timeout(Duration::from_secs(30))
        .expect("wait")
        .expect("child finished");
    assert_eq!(describe(s), "exited with 0");
}

macro_rules! backend_tests {
    ($module:ident, $backend:path) => {
        mod $module {
            use super::*;
            use $backend as b;

            /// A child takes the lock and exits without releasing it.
            fn die_holding(m: &b::Mutex<u64>) {
                let mut c = child(|| {
                    let Ok(l) = m.lock() else { return 3 };
                    std::mem::forget(l); // die holding it
                    0
                });
                assert_eq!(describe(c.wait().unwrap()), "exited with 0");
            }

            #[test]
            fn semaphore_counts_and_times_out() {
                let sem = b::Semaphore::shared(2).unwrap();
                assert!(sem.try_wait().unwrap());
                assert!(sem.wait_timeout(Duration::from_millis(10)).unwrap());
                assert!(!sem.try_wait().unwrap());
                let t = Instant::now();
                assert!(
                    !sem.wait_timeout(Duration::from_millis(50)).unwrap(),
                    "no permit left"
                );
                assert!(t.elapsed() >= Duration::from_millis(50));
                sem.post().unwrap();
                assert_eq!(sem.value(), 1);
                sem.wait().unwrap();
            }

            #[test]
            fn semaphore_wakes_a_waiter_in_another_process() {
                let _g = forking();
                let ping = b::Semaphore::shared(0).unwrap();
                let pong = b::Semaphore::shared(0).unwrap();
                const ROUNDS: u32 = 2000;
                let c = child(|| {
                    for _ in 0..ROUNDS {
                        if !ping.wait_timeout(Duration::from_secs(10)).unwrap_or(false) {
                            return 3;
                        }
                        if pong.post().is_err() {
                            return 4;
                        }
                    }
                    0
                });
                for _ in 0..ROUNDS {
                    ping.post().unwrap();
                    assert!(
                        pong.wait_timeout(Duration::from_secs(10)).unwrap(),
                        "child answered"
                    );
                }
                exited_ok(c);
            }

            #[test]
            fn semaphore_bounds_concurrent_holders() {
                let _g = forking();
                let sem = b::Semaphore::shared(2).unwrap();
                let inside = Shared::new(AtomicU64::new(0)).unwrap();
                let most = Shared::new(AtomicU64::new(0)).unwrap();
                let kids: Vec<_> = (0..4)
                    .map(|_| {
                        child(|| {
                            for _ in 0..300 {
                                if sem.wait().is_err() {
                                    return 3;
                                }
                                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                                most.fetch_max(now, Ordering::SeqCst);
                                std::hint::spin_loop();
                                inside.fetch_sub(1, Ordering::SeqCst);
                                let _ = sem.post();
                            }
                            0
                        })
                    })
                    .collect();
                kids.into_iter().for_each(exited_ok);
                assert!(
                    most.load(Ordering::SeqCst) <= 2,
                    "at most 2 holders at once"
                );
                assert_eq!(sem.value(), 2);
            }

            #[test]
            fn mutex_keeps_a_contended_count_exact() {
                let _g = forking();
                let counter = b::Mutex::shared(0u64).unwrap();
                const N: u64 = 20_000;
                let kids: Vec<_> = (0..2)
                    .map(|_| {
                        child(|| {
                            for _ in 0..N {
                                match counter.lock() {
                                    Ok(l) => {
                                        let mut g = l.into_guard();
                                        // Read, then write: loses updates without the lock.
                                        let v = *g;
                                        std::hint::spin_loop();
                                        *g = v + 1;
                                    }
                                    Err(_) => return 3,
                                }
                            }
                            0
                        })
                    })
                    .collect();
                kids.into_iter().for_each(exited_ok);
                assert_eq!(*counter.lock().unwrap().into_guard(), 2 * N);
            }

            #[test]
            fn mutex_lock_times_out_while_another_process_holds_it() {
                let _g = forking();
                let m = b::Mutex::shared(0u64).unwrap();
                let step = Shared::new(AtomicU64::new(0)).unwrap();
                let c = child(|| {
                    let Ok(l) = m.lock() else { return 3 };
                    let g = l.into_guard();
                    step.store(1, Ordering::SeqCst);
                    while step.load(Ordering::SeqCst) != 2 {
                        std::hint::spin_loop();
                    }
                    drop(g);
                    0
                });
                while step.load(Ordering::SeqCst) != 1 {
                    std::thread::yield_now();
                }
                assert!(m.try_lock().unwrap().is_none(), "held by the child");
                let t = Instant::now();
                assert!(m
                    .lock_timeout(Duration::from_millis(100))
                    .unwrap()
                    .is_none());
                assert!(t.elapsed() >= Duration::from_millis(100));
                let e = m
                    .lock_within(Duration::from_millis(20))
                    .err()
                    .expect("still held");
                assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
                step.store(2, Ordering::SeqCst);
                exited_ok(c);
                assert!(m.lock_timeout(Duration::from_secs(5)).unwrap().is_some());
            }

            #[test]
            fn a_dead_holder_is_reported_and_the_data_repaired() {
                let _g = forking();
                let m = b::Mutex::shared(7u64).unwrap();
                die_holding(&m);
                match m.lock_timeout(Duration::from_secs(10)).unwrap() {
                    Some(Locked::OwnerDied(mut g)) => {
                        *g = 8;
                        g.mark_consistent().unwrap();
                    }
                    Some(Locked::Acquired(_)) => panic!("the owner's death went unnoticed"),
                    None => panic!("timed out instead of noticing the dead owner"),
                }
                let l = m.lock().unwrap();
                assert!(!l.owner_died(), "repaired: a normal lock again");
                assert_eq!(*l.into_guard(), 8);
            }

            #[test]
            fn a_dead_holder_noticed_by_a_waiter_already_asleep() {
                let _g = forking();
                let m = b::Mutex::shared(0u64).unwrap();
                let step = Shared::new(AtomicU64::new(0)).unwrap();
                let mut holder = child(|| {
                    let Ok(l) = m.lock() else { return 3 };
                    step.store(1, Ordering::SeqCst);
                    while step.load(Ordering::SeqCst) != 2 {
                        std::hint::spin_loop();
                    }
                    std::mem::forget(l);
                    0
                });
                while step.load(Ordering::SeqCst) != 1 {
                    std::thread::yield_now();
                }
                let waiter = child(|| match m.lock_timeout(Duration::from_secs(10)) {
                    Ok(Some(Locked::OwnerDied(mut g))) => {
                        let _ = g.mark_consistent();
                        0
                    }
                    Ok(Some(Locked::Acquired(_))) => 4,
                    Ok(None) => 5,
                    Err(_) => 6,
                });
                std::thread::sleep(Duration::from_millis(20));
                step.store(2, Ordering::SeqCst);
                holder.wait().unwrap();
                exited_ok(waiter);
            }

            #[test]
            fn lock_within_refuses_a_dead_holder() {
                let _g = forking();
                let m = b::Mutex::shared(0u64).unwrap();
                die_holding(&m);
                let e = m
                    .lock_within(Duration::from_secs(10))
                    .err()
                    .expect("an error, not the guard");
                assert!(e.to_string().contains("died"), "{e}");
            }

            #[test]
            fn unrepaired_after_owner_died_is_not_recoverable() {
                let _g = forking();
                let m = b::Mutex::shared(0u64).unwrap();
                die_holding(&m);
                let l = m
                    .lock_timeout(Duration::from_secs(10))
                    .unwrap()
                    .expect("not a timeout");
                assert!(l.owner_died());
                drop(l); // released without mark_consistent
                let e = m.lock().err().expect("unusable now");
                assert_eq!(e.raw_os_error(), Some(libc::ENOTRECOVERABLE), "{e}");
            }
        }
    };
}

backend_tests!(posix, common::posix);
backend_tests!(futex, common::futex);

#[test]
fn default_backend_matches_the_feature() {
    let want = if cfg!(feature = "futex-default") {
        "futex"
    } else {
        "posix"
    };
    assert_eq!(common::BACKEND, want);
}

#[test]
fn fork_helper_decodes_statuses_and_times_out() {
    let _g = forking();
    let mut c = child(|| 42);
    let s = c
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("ended");
    assert_eq!(describe(s), "exited with 42");
    assert_eq!(common::fork::exit_code(s), Some(42));

    let stop = Shared::new(AtomicU64::new(0)).unwrap();
    let mut c = child(|| {
        while stop.load(Ordering::SeqCst) == 0 {
            std::hint::spin_loop();
        }
        0
    });
    assert!(
        c.wait_timeout(Duration::from_millis(50)).unwrap().is_none(),
        "still running"
    );
    c.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    let s = c
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("killed");
    assert_eq!(describe(s), "killed by SIGKILL");
}

#[test]
fn dropping_an_unreaped_child_kills_and_reaps_it() {
    let _g = forking();
    let c = child(|| loop {
        std::hint::spin_loop();
    });
    let pid = c.raw();
    drop(c);
    assert_eq!(
        common::procfs::stat(pid).unwrap(),
        None,
        "neither running nor a zombie"
    );
}

#[test]
fn named_segment_is_private_and_unlinked_once() {
    use std::os::unix::fs::PermissionsExt;
    let name = common::names::unique("common-test").unwrap();
    let mut seg = common::shm::NamedShared::create(&name, AtomicU64::new(5)).unwrap();
    let path = format!("/dev/shm{name}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // SAFETY: the segment holds the AtomicU64 written above.
    let other = unsafe { common::shm::NamedShared::<AtomicU64>::open(&name) }.unwrap();
    other.store(6, Ordering::SeqCst);
    assert_eq!(seg.load(Ordering::SeqCst), 6, "one memory, two mappings");
    assert!(
        common::shm::NamedShared::<AtomicU64>::create(&name, AtomicU64::new(0)).is_err(),
        "O_EXCL"
    );
    seg.unlink().unwrap();
    assert!(!std::path::Path::new(&path).exists());
    drop(seg);
    drop(other);
}
