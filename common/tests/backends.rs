//! Both back ends pass the same tests: real contention between processes,
//! timeouts, and a holder that dies holding the lock.
//!
//! These tests fork inside the multithreaded test harness, so they follow
//! nix's rules: one global lock serialises every test that forks, and the
//! children only touch shared memory (atomics, the primitives under test)
//! and leave with `_exit` (through `Fork::run_unchecked`). The strace
//! checks start a process (this test binary again) under the same lock.

use std::process::Command;
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

/// Set in the environment of this binary when it runs again under strace:
/// the traced test then prints where its objects live.
const TRACED: &str = "BACKENDS_UNDER_STRACE";
/// Where such a line begins: `traced object <address> <size>`.
const OBJECT: &str = "traced object";

fn have_strace() -> bool {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "strace is required under CI"
        );
        eprintln!("SKIPPED: strace is not installed");
    }
    ok
}

/// Print where `object` lives, if this process runs under strace.
fn show_object<T>(object: &T) {
    if std::env::var_os(TRACED).is_some() {
        println!(
            "{OBJECT} {:p} {}",
            object as *const T,
            std::mem::size_of::<T>()
        );
    }
}

/// Run the test `test` of this binary alone under `strace -f -e
/// trace=futex`: the futex calls it made, and the address ranges of the
/// objects it showed. `None` if strace is not installed.
fn futex_trace(test: &str) -> Option<(String, Vec<(u64, u64)>)> {
    if !have_strace() {
        return None;
    }
    let log = std::env::temp_dir().join(format!(
        "backends-strace-{}-{}",
        std::process::id(),
        test.replace("::", "-")
    ));
    let out = {
        let _g = forking();
        Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=futex", "-o"])
            .arg(&log)
            .arg(std::env::current_exe().expect("current_exe"))
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(TRACED, "1")
            .output()
            .expect("strace")
    };
    let trace = std::fs::read_to_string(&log).expect("strace log");
    let _ = std::fs::remove_file(&log);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} under strace: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = stdout
        .lines()
        .filter_map(|l| {
            // libtest may have begun the line with the test's name.
            let mut w = l.split_once(OBJECT)?.1.split_whitespace();
            let start = u64::from_str_radix(w.next()?.trim_start_matches("0x"), 16).ok()?;
            let size: u64 = w.next()?.parse().ok()?;
            Some((start, start + size))
        })
        .collect();
    Some((trace, objects))
}

/// The futex waits in `trace` on an address inside one of `objects`, and
/// those among them whose timeout is measured on `CLOCK_REALTIME` (the
/// wall clock, which can be stepped), as strace shows it:
/// `futex(0x7f.., FUTEX_WAIT_BITSET|FUTEX_CLOCK_REALTIME, 0, {tv_sec=..}, ..)`.
fn waits_and_realtime_waits(trace: &str, objects: &[(u64, u64)]) -> (usize, Vec<String>) {
    let mut waits = 0;
    let mut realtime = Vec::new();
    for line in trace.lines() {
        let Some(args) = line.split_once("futex(").map(|(_, a)| a) else {
            continue;
        };
        let Some(addr) = args
            .split(',')
            .next()
            .and_then(|a| u64::from_str_radix(a.trim().trim_start_matches("0x"), 16).ok())
        else {
            continue;
        };
        if !objects.iter().any(|&(lo, hi)| (lo..hi).contains(&addr)) || !args.contains("FUTEX_WAIT")
        {
            continue;
        }
        waits += 1;
        if args.contains("FUTEX_CLOCK_REALTIME") {
            realtime.push(line.to_string());
        }
    }
    (waits, realtime)
}

#[test]
fn the_clock_check_can_fail() {
    let trace = "7 futex(0x1000, FUTEX_WAIT_BITSET|FUTEX_CLOCK_REALTIME, 0, {tv_sec=1, tv_nsec=0}, FUTEX_BITSET_MATCH_ANY) = -1 ETIMEDOUT\n\
                 7 futex(0x1008, FUTEX_WAIT_BITSET, 0, {tv_sec=1, tv_nsec=0}, FUTEX_BITSET_MATCH_ANY <unfinished ...>\n\
                 8 <... futex resumed>) = -1 ETIMEDOUT\n\
                 7 futex(0x2000, FUTEX_WAIT, 0, {tv_sec=0, tv_nsec=1000}) = -1 ETIMEDOUT\n\
                 7 futex(0x3000, FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME, 0, NULL, FUTEX_BITSET_MATCH_ANY) = 0\n\
                 7 futex(0x1000, FUTEX_WAKE, 1) = 0\n";
    let (waits, realtime) = waits_and_realtime_waits(trace, &[(0x1000, 0x1010), (0x2000, 0x2004)]);
    assert_eq!(waits, 3, "0x3000 is no object of ours, a wake no wait");
    assert_eq!(realtime.len(), 1, "{realtime:?}");
    assert!(realtime[0].contains("0x1000"));
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

            /// Timed waits that really sleep in the kernel: on a semaphore
            /// with no permit, and on a mutex another thread holds. Alone,
            /// a loop checked against `Instant`;
            /// `timed_waits_measure_on_the_monotonic_clock` runs it again
            /// under strace.
            #[test]
            fn timed_waits_sleep_their_full_timeout() {
                const SHORT: Duration = Duration::from_millis(20);
                let sem = b::Semaphore::shared(0).unwrap();
                let m = b::Mutex::shared(0u64).unwrap();
                show_object(&*sem);
                show_object(&*m);
                for _ in 0..5 {
                    let t = Instant::now();
                    assert!(!sem.wait_timeout(SHORT).unwrap(), "no permit");
                    assert!(t.elapsed() >= SHORT);
                }
                std::thread::scope(|s| {
                    let (held, is_held) = std::sync::mpsc::channel();
                    // Dropped when this closure ends, even by a panic: the
                    // holder then lets go, and the scope can end.
                    let (release, released) = std::sync::mpsc::channel::<()>();
                    let m = &m;
                    s.spawn(move || {
                        let g = m.lock().unwrap().into_guard();
                        held.send(()).unwrap();
                        let _ = released.recv();
                        drop(g);
                    });
                    is_held.recv().unwrap();
                    for _ in 0..5 {
                        let t = Instant::now();
                        assert!(m.lock_timeout(SHORT).unwrap().is_none(), "held");
                        assert!(t.elapsed() >= SHORT);
                    }
                    drop(release);
                });
                assert!(m.lock_timeout(Duration::from_secs(10)).unwrap().is_some());
            }

            /// The proof that a timed wait cannot be cut short or
            /// stretched by a step of the wall clock: under strace, every
            /// futex wait on the semaphore and on the mutex has its timeout
            /// on `CLOCK_MONOTONIC` (no `FUTEX_CLOCK_REALTIME`).
            #[test]
            fn timed_waits_measure_on_the_monotonic_clock() {
                let test = concat!(
                    stringify!($module),
                    "::timed_waits_sleep_their_full_timeout"
                );
                let Some((trace, objects)) = futex_trace(test) else {
                    return;
                };
                assert_eq!(objects.len(), 2, "both objects shown");
                let (waits, realtime) = waits_and_realtime_waits(&trace, &objects);
                assert!(
                    waits >= 10,
                    "only {waits} futex waits on the objects:\n{trace}"
                );
                assert!(
                    realtime.is_empty(),
                    "waits measured on the wall clock:\n{}",
                    realtime.join("\n")
                );
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
                let waiter = child(|| {
                    // From here on, the waiter's only sleep is in the lock.
                    step.store(3, Ordering::SeqCst);
                    match m.lock_timeout(Duration::from_secs(60)) {
                        Ok(Some(Locked::OwnerDied(mut g))) => {
                            let _ = g.mark_consistent();
                            0
                        }
                        Ok(Some(Locked::Acquired(_))) => 4,
                        Ok(None) => 5,
                        Err(_) => 6,
                    }
                });
                while step.load(Ordering::SeqCst) != 3 {
                    std::thread::yield_now();
                }
                // Asleep in the lock: /proc says `S` (sleeping).
                let asleep = common::procfs::wait_for(waiter.raw(), Duration::from_secs(30), |s| {
                    s.is_some_and(|s| s.state == 'S')
                })
                .unwrap();
                assert!(asleep.is_ok(), "the waiter never slept: {asleep:?}");
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
