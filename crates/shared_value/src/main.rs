//! Demonstrate how processes share one integer in shared memory: under a
//! process-shared lock, with atomic operations, and through a named segment
//! that a process started by `exec` finds by its name.
//!
//! Part 1: the parent maps one `i64` inside a process-shared mutex and forks
//! an incrementer and a decrementer. Each changes the value N times, taking
//! the lock every time. The final value is exactly the start value.
//!
//! Part 2: the same with no lock at all, with an atomic `fetch_add` and
//! `fetch_sub`. Again exact.
//!
//! Part 3: why shared memory has names. A forked child inherits the parent's
//! mappings; a process started with `std::process::Command` does not, because
//! `exec` replaces its whole address space. It can reach the memory through
//! a name in the file system, `/dev/shm/shared_value-<pid>-<random>`, as
//! here (an inherited or passed descriptor, from `memfd_create` or
//! `shm_open`, would share the memory too).
//! The parent creates the segment, starts this same program again with the
//! name in its environment (a `common::program::Program`, which dies with the
//! lesson), waits until the child says (with a flag in the segment) that it
//! has mapped it, and removes the name at once. Both go on using the memory:
//! the parent writes a work order, the child carries it out, and the parent
//! sees the child's change.
//!
//! Key points:
//! - `value += 1` on shared memory is three steps: load the value into a
//!   register, add 1, store it back. Two processes can both load 5 and both
//!   store 6: one update is lost (`shared_array` counts such losses).
//! - A lock makes the three steps one critical section. An atomic
//!   `fetch_add` makes them one indivisible instruction (`lock xadd` on
//!   x86-64). Atomics suffice for one number; when several values must change
//!   together, take a lock (see `shared_array`).
//! - In Rust the locked value lives *inside* the mutex, and the guard is the
//!   only way to it, so the lock cannot be forgotten. Shared memory is only
//!   ever reached through `&T`, so an unsynchronised `+= 1` on a plain `i64`
//!   does not even compile.
//! - A name is only needed to meet. Remove it as soon as everyone has opened
//!   it: the memory lives on while any process maps it, and a crash can no
//!   longer leave the name behind in `/dev/shm`.
//!
//! What to observe, in another terminal while the lesson pauses (3 s at pace
//! 1, before each part lets its workers go): `grep rw-s /proc/<pid>/maps` for
//! the parent and each child. The anonymous mapping of parts 1 and 2 shows as
//! `/dev/zero (deleted)`, with the same inode number in parent and children:
//! one object, mapped twice. The named segment of part 3 shows as
//! `/dev/shm/shared_value-<pid>-<random> (deleted)` in both processes once
//! the name is removed, while `ls /dev/shm` no longer lists it.
//! `scripts/shared_memory.sh` does this for you.
//!
//! The pitfall: the seed's C++ uses the fixed names `/shared_memory` and
//! `/shared_semaphore`, mode 0666, without `O_EXCL`, never checks `shm_open`,
//! and removes the names only at the very end. A Ctrl-C leaves them in
//! `/dev/shm`, and a second copy of the program silently shares the first
//! one's value. Here each name is unique to the run, created exclusively with
//! mode 0600, and gone within milliseconds.
//!
//! Seed example: 07, shared value (C++ `shm_open` + a named semaphore, Python
//! `multiprocessing.Value` + `Lock`).
//!
//! Run with:
//! ```text
//! cargo run -p shared_value
//! cargo run -p shared_value -- --iterations 1000000 --start 7 --pace 0
//! ```
//!
//! Try it:
//! - In part 2, replace `fetch_add(1)` with a `load` followed by a `store` of
//!   the value plus one (and the same for `fetch_sub`). The final value is
//!   no longer the start value: lost updates.
//! - Move `seg.unlink()` in part 3 to the end of the lesson and press Ctrl-C
//!   during the pause: `ls /dev/shm` keeps the name (the signals are held
//!   back only until the unlink).
//! - Run the lesson with `strace -f -e trace=openat,mmap,unlink` to see the
//!   `shm_open` (an `openat` in `/dev/shm`) and the `unlink` behind them.
//!
//! See also: `shared_array` (lost updates counted, a lock around several
//! values), `process_lock`, `process_semaphore`.

use std::error::Error;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn, Child};
use common::opts::{Args, Opt, Pace, Spec};
use common::program::Program;
use common::shm::NamedShared;
use common::signals::Hold;
use common::{describe, names, say, warn, Mutex, Semaphore, Shared};

const SPEC: Spec = Spec {
    name: "shared_value",
    about: "Demonstrate how processes share one integer: under a lock, with atomics, and by name.",
    options: &[
        Opt::int(
            "iterations",
            "increments (or decrements) each worker makes",
            100_000,
            1,
            1_000_000,
        ),
        Opt::int("start", "the value to start from", 1000, 0, 1_000_000_000),
    ],
};

/// How long the lesson pauses, at pace 1, for you to look at the mappings.
const PAUSE_SECS: f64 = 3.0;

/// Safety limits for waits on another process (fixed floors, not scaled by
/// the pace, generous because the machine may be loaded).
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment of the process started with `Command` in part 3.
const CHILD_ENV: &str = "LESSON_CHILD";
const NAME_ENV: &str = "LESSON_SHM_NAME";

fn main() {
    let args = Args::parse(&SPEC);
    // Part 3 starts this same binary again; the environment tells it which
    // part to play. (Python's `spawn` start method does the same with a
    // hidden `--multiprocessing-fork` argument.)
    let result = match std::env::var(CHILD_ENV).as_deref() {
        Ok("named") => named_child(&args),
        _ => run(&args),
    };
    if let Err(e) = result {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let n = args.int("iterations");
    let start = args.int("start") as i64;
    let pace = args.pace();
    say!("process-shared lock back end: {}", common::BACKEND);
    with_a_lock(n, start, pace)?;
    with_atomics(n, start, pace)?;
    by_name(n, start, pace)?;
    say!("all checks passed");
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 1: one value, two workers, one process-shared lock.

fn with_a_lock(n: u64, start: i64, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 1: an incrementer and a decrementer change one i64 under a process-shared lock");
    // The i64 lives inside the mutex, in an anonymous MAP_SHARED mapping:
    // after fork, parent and children see the very same page, not copies.
    let value = Mutex::shared(start)?;
    // The workers wait at this gate until the parent opens it, after a pause
    // for you to look at them; then they race each other.
    let gate = Semaphore::shared(0)?;
    let gate_timeout = SYSTEM_TIMEOUT + pace.secs(PAUSE_SECS);

    // `spawn` forks. That is sound here because the lesson has one thread
    // (the helper checks: a child of a multithreaded process could deadlock
    // on a lock another thread held). Stdout is flushed before the fork, and
    // the child leaves with `_exit`, so it never runs the parent's
    // destructors (it must not destroy the mutex the parent still uses).
    let worker = |step: i64| {
        let (value, gate) = (&value, &gate);
        move || -> Result<(), Box<dyn Error>> {
            pass(gate, gate_timeout)?;
            for _ in 0..n {
                let mut v = value.lock_within(LOCK_TIMEOUT)?; // the lock makes load, add, store one step
                *v += step;
            } // the guard unlocks here, every iteration
            say!("done: {n} changes of {step:+}");
            Ok(())
        }
    };
    let mut inc = spawn("incrementer", worker(1))?;
    let mut dec = spawn("decrementer", worker(-1))?;

    pause_to_watch(pace, &[inc.raw(), dec.raw()]);
    gate.post()?;
    gate.post()?;
    reap(&mut inc)?;
    reap(&mut dec)?;

    let last = *value.lock_within(LOCK_TIMEOUT)?;
    if last != start {
        return Err(format!("under the lock: final value {last}, expected {start}").into());
    }
    say!("under the lock: final value {last} == start value {start} after {n} increments and {n} decrements");
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 2: the same without a lock, with atomic read-modify-write.

fn with_atomics(n: u64, start: i64, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 2: the same with no lock: atomic fetch_add and fetch_sub");
    let value = Shared::new(AtomicI64::new(start))?;
    let gate = Semaphore::shared(0)?;
    let gate_timeout = SYSTEM_TIMEOUT + pace.secs(PAUSE_SECS);

    let worker = |step: i64| {
        let (value, gate) = (&value, &gate);
        move || -> Result<(), Box<dyn Error>> {
            pass(gate, gate_timeout)?;
            for _ in 0..n {
                // Load, add and store as one indivisible step. `Relaxed` is
                // enough: nothing else is ordered by this counter, and the
                // parent reads it after `waitpid`, which makes every write of
                // the ended child visible.
                if step > 0 {
                    value.fetch_add(1, Ordering::Relaxed);
                } else {
                    value.fetch_sub(1, Ordering::Relaxed);
                }
            }
            say!("done: {n} atomic changes of {step:+}");
            Ok(())
        }
    };
    let mut inc = spawn("incrementer", worker(1))?;
    let mut dec = spawn("decrementer", worker(-1))?;

    pause_to_watch(pace, &[inc.raw(), dec.raw()]);
    gate.post()?;
    gate.post()?;
    reap(&mut inc)?;
    reap(&mut dec)?;

    let last = value.load(Ordering::Relaxed);
    if last != start {
        return Err(format!("with atomics: final value {last}, expected {start}").into());
    }
    say!("with atomics: final value {last} == start value {start} after {n} fetch_add and {n} fetch_sub");
    say!("why: `v += 1` is three steps (load, add, store); two processes can both load 5 and both store 6");
    say!(
        "fetch_add does all three as one indivisible step; a lock does it for any number of steps"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 3: a named segment, found by a process that did not fork from us.

/// The segment's layout, known to both processes (they run the same binary).
#[repr(C)]
struct Meeting {
    value: AtomicI64,
    /// The child's PID, stored by the child once it has mapped the segment.
    attached: AtomicI32,
    /// How many increments the parent asks for (0: no order yet). Written
    /// after the name is gone: the memory still carries messages.
    order: AtomicU64,
    /// The PID of the process that carried the order out.
    done_by: AtomicI32,
}

fn by_name(n: u64, start: i64, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!(
        "part 3: a process started with Command (fork + exec) inherits no mapping: it needs a name"
    );
    let name = names::unique("shared_value")?;
    let path = Path::new("/dev/shm").join(name.trim_start_matches('/'));

    // From shm_open to shm_unlink the name exists in /dev/shm. A Ctrl-C or a
    // SIGTERM in that window would end us before we remove it, so those
    // signals are held back (blocked) until the unlink, then delivered. A
    // SIGKILL cannot be held back: keep the window short.
    let held = Hold::new()?;
    // shm_open(O_CREAT | O_EXCL, 0600), ftruncate, mmap(MAP_SHARED).
    let mut seg = NamedShared::create(
        &name,
        Meeting {
            value: AtomicI64::new(start),
            attached: AtomicI32::new(0),
            order: AtomicU64::new(0),
            done_by: AtomicI32::new(0),
        },
    )?;
    // Check what shm_open made, not only what we asked for.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&path)
            .map_err(|e| format!("stat {}: {e}", path.display()))?
            .permissions(),
    ) & 0o7777;
    if mode != 0o600 {
        return Err(format!("{} has mode {mode:04o}, not 0600", path.display()).into());
    }
    say!(
        "created {} (exclusive; mode {mode:04o}, says stat)",
        path.display()
    );

    // Unlike a forked child, a program started with Command is not killed
    // when we die, and it inherits our signal mask (the mask survives fork
    // and exec): started now, while SIGINT and SIGTERM are held back, it
    // would hold them back for good. `Program::start` fixes both before the
    // exec: PR_SET_PDEATHSIG(SIGKILL) and an empty mask.
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Program::start(
        "child",
        Command::new(exe)
            .env(CHILD_ENV, "named")
            .env(NAME_ENV, &name)
            .env("LESSON_PACE", pace.0.to_string()),
    )?;
    let child_pid = child.pid();

    // Wait for the condition itself: the child's flag in the segment.
    let attached = wait_for(&mut child, SYSTEM_TIMEOUT, || {
        seg.attached.load(Ordering::Acquire) != 0
    })?;
    if !attached {
        return Err(format!("child {child_pid} did not attach within {SYSTEM_TIMEOUT:?}").into());
    }
    let who = seg.attached.load(Ordering::Acquire);
    if who != child_pid {
        return Err(format!("the attach flag names {who}, not the child {child_pid}").into());
    }

    // Everyone who needs the name has opened it: remove it now.
    seg.unlink()?;
    drop(held);
    if path.exists() {
        return Err(format!("{} still exists after shm_unlink", path.display()).into());
    }
    let mapped = own_mapping(&name)?;
    if !mapped.ends_with("(deleted)") {
        return Err(format!("/proc/self/maps should mark the segment deleted: {mapped}").into());
    }
    say!(
        "child {child_pid} attached; removed the name: {} no longer exists",
        path.display()
    );
    say!("but the memory is still mapped here: {mapped}");

    pause_to_watch(pace, &[child_pid]);
    // The work order travels through the memory, not the (gone) name.
    seg.order.store(n, Ordering::Release);
    child.expect_success(CHILD_TIMEOUT)?;

    // The child has ended and been reaped, so every write it made is visible.
    let value = seg.value.load(Ordering::Relaxed);
    let done_by = seg.done_by.load(Ordering::Relaxed);
    if value != start + n as i64 || done_by != child_pid {
        return Err(format!(
            "expected {} written by {child_pid}, found {value} written by {done_by}",
            start + n as i64
        )
        .into());
    }
    say!("the child's change is seen here: value {value} == {start} + {n}, written by process {done_by}");

    let prefix = names::run_prefix("shared_value");
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .map_err(|e| format!("read_dir /dev/shm: {e}"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with(&prefix))
        .collect();
    if !left.is_empty() {
        return Err(format!("left in /dev/shm: {left:?}").into());
    }
    say!("nothing named {prefix}* is left in /dev/shm");
    Ok(())
}

/// The part 3 child: a fresh process (this binary, exec'd) that knows the
/// segment only by the name in its environment.
fn named_child(args: &Args) -> Result<(), Box<dyn Error>> {
    common::out::set_role("child");
    // We die with the parent and let SIGINT and SIGTERM through: the
    // parent's `Program::start` saw to both before our exec.
    let name = env(NAME_ENV)?;
    // SAFETY: the segment was created by our parent, which is this same
    // program, holding a `Meeting`.
    let seg = unsafe { NamedShared::<Meeting>::open(&name) }?;
    say!(
        "opened {name} by its name; the value in it is {}",
        seg.value.load(Ordering::Relaxed)
    );
    seg.attached
        .store(std::process::id() as i32, Ordering::Release);

    // Wait for the parent's order; it comes after the name is gone.
    let deadline = Instant::now() + SYSTEM_TIMEOUT + args.pace().secs(PAUSE_SECS);
    let n = loop {
        match seg.order.load(Ordering::Acquire) {
            0 if Instant::now() > deadline => return Err("no order from the parent".into()),
            0 => sleep(Duration::from_millis(1)),
            n => break n,
        }
    };
    let path = Path::new("/dev/shm").join(name.trim_start_matches('/'));
    if path.exists() {
        return Err(format!("{} should be gone by now", path.display()).into());
    }
    for _ in 0..n {
        seg.value.fetch_add(1, Ordering::Relaxed);
    }
    seg.done_by
        .store(std::process::id() as i32, Ordering::Relaxed);
    say!(
        "the name is gone, the memory is not: added {n}, the value is now {}",
        seg.value.load(Ordering::Relaxed)
    );
    // A normal exit: this process was exec'd, it shares no destructors with
    // the parent. Dropping `seg` unmaps it; only the creator unlinks.
    Ok(())
}

fn env(key: &str) -> Result<String, Box<dyn Error>> {
    std::env::var(key).map_err(|e| format!("{key}: {e}").into())
}

/// The line of `/proc/self/maps` that maps the segment `name`, its columns
/// separated by single spaces.
fn own_mapping(name: &str) -> Result<String, Box<dyn Error>> {
    let maps =
        std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    let line = maps
        .lines()
        .find(|l| l.contains(name))
        .ok_or_else(|| format!("{name} is not in /proc/self/maps"))?;
    Ok(line.split_whitespace().collect::<Vec<_>>().join(" "))
}

// ---------------------------------------------------------------------------
// Small helpers.

/// Wait at the gate, at most `timeout` (a parent that died never opens it).
fn pass(gate: &Semaphore, timeout: Duration) -> Result<(), Box<dyn Error>> {
    if gate.wait_timeout(timeout)? {
        Ok(())
    } else {
        Err(format!("the gate stayed shut for {timeout:?}").into())
    }
}

/// Reap a forked worker, which must exit 0. On timeout the `Child` handle
/// kills and reaps it when dropped.
fn reap(child: &mut Child) -> Result<(), Box<dyn Error>> {
    match child.wait_timeout(CHILD_TIMEOUT)? {
        Some(s) if exit_code(s) == Some(0) => Ok(()),
        Some(s) => Err(format!("worker {}: {}", child.raw(), describe(s)).into()),
        None => Err(format!(
            "worker {} still running after {CHILD_TIMEOUT:?}",
            child.raw()
        )
        .into()),
    }
}

/// Give a human time to look at the mappings (nothing at pace 0).
fn pause_to_watch(pace: Pace, children: &[i32]) {
    let mut pids = vec![std::process::id() as i32];
    pids.extend_from_slice(children);
    let files: Vec<String> = pids.iter().map(|p| format!("/proc/{p}/maps")).collect();
    say!(
        "pausing {:.1} s; look: grep rw-s {}",
        pace.secs(PAUSE_SECS).as_secs_f64(),
        files.join(" ")
    );
    pace.sleep(PAUSE_SECS);
}

/// Poll `done` every millisecond for at most `timeout`; fails at once if the
/// program ends first (it will never set the flag then).
fn wait_for(
    child: &mut Program,
    timeout: Duration,
    done: impl Fn() -> bool,
) -> Result<bool, Box<dyn Error>> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if let Some(status) = child.try_wait()? {
            return Err(format!("{} ended early: {status}", child.name()).into());
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        sleep(Duration::from_millis(1));
    }
    Ok(true)
}
