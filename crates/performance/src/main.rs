//! Demonstrate what multiprocessing costs on this machine: creating
//! processes, moving bytes between them, handing a message back and forth,
//! and sharing a counter, each measured and printed with a plain conclusion.
//!
//! The seed notes end with advice: creating processes costs more than
//! threads, IPC has overhead, shared memory beats copying for large data,
//! reuse processes. None of the examples they grew from measures any of it.
//! This lesson turns each claim into a number on your own machine:
//!
//! - creating: a thread spawned and joined; `fork` + `_exit` + `waitpid`,
//!   bare and through `common::fork::spawn`;
//!   `std::process::Command` running `/bin/true` (fork or `posix_spawn`,
//!   then `exec`, then `waitpid`): microseconds each;
//! - moving bytes: a pipe with 64 KiB writes (every byte copied into the
//!   kernel and out again), and the same bytes through a shared mapping
//!   handed over with a semaphore (copied in and out of the mapping, twice
//!   like the pipe, but with no system call per chunk): GB/s;
//! - a round trip of an 8-byte message between two processes, over a pair
//!   of pipes, a pair of POSIX message queues, and a pair of semaphores of
//!   each back end of `common`: microseconds;
//! - a counter two processes increment together, under the mutex of each
//!   back end and with an atomic `fetch_add`: increments per second. Every
//!   count is checked exact, or the lesson fails.
//!
//! Key points:
//! - A round trip between processes is a sleep and a wake-up on each side:
//!   tens of microseconds on this machine when the other side sleeps (the
//!   README's figures), whatever carries the 8 bytes; only a wait that spins
//!   instead of sleeping gets below a microsecond. Batch work (send
//!   many items per message) to pay it less often.
//! - A contended lock moves a cache line between cores on every
//!   acquisition; an atomic does too, but without ever sleeping.
//! - Creating a process costs tens of microseconds or more; a pool that
//!   reuses its workers pays it once (see `process_pool`).
//!
//! What to observe: run it twice and compare; run something heavy at the
//! same time and watch the contended figures swing: they depend on the
//! scheduler as much as on the code. `perf stat -e context-switches` on a
//! run shows the sleeps behind the round trips.
//!
//! The pitfall: a debug build measures the compiler's unoptimised code, not
//! the mechanism. Use `--release` for figures worth quoting (the lesson warns
//! when it is not), and never trust one run of a contended figure.
//!
//! Seed: the notes' "Performance Considerations and Best Practices" (no
//! example of its own); lesson 15 here. `scripts/bench.sh` puts these
//! figures beside the same operations written in C and in Python.
//!
//! Run with:
//! ```text
//! cargo run --release -p performance
//! cargo run --release -p performance -- --tsv     # name<TAB>value<TAB>unit
//! cargo run -p performance -- --quick             # small counts, for tests
//! ```
//!
//! Try it:
//! - Pin the lesson to one CPU (`taskset -c 0 cargo run --release -p
//!   performance`) and compare the round trips and the contended counter.
//! - Change the pipe's 64 KiB writes to 4 KiB and watch the throughput.
//!
//! See also: `process_pool` (reusing processes), `shared_array` (shared
//! memory), `pipe_communication`, `queue_communication`.

use std::error::Error;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::fork::spawn;
use common::opts::{Args, Opt, Spec};
use common::shm::Shared;
use common::{describe, fork::exit_code, futex, posix, say, warn, Child};
use nix::mqueue::{mq_open, mq_send, mq_unlink, MQ_OFlag, MqAttr};
use nix::sys::stat::Mode;

const SPEC: Spec = Spec {
    name: "performance",
    about: "Measure what creating processes, moving bytes and synchronising cost on this machine.",
    options: &[
        Opt::flag(
            "quick",
            "small counts: checks the mechanics in a second, figures not worth quoting",
        ),
        Opt::flag(
            "tsv",
            "print only name<TAB>value<TAB>unit lines, for scripts/bench.sh",
        ),
    ],
};

/// A wait that only a dead or stuck peer could make this long.
const STALL: Duration = Duration::from_secs(30);

/// How many of each operation to time.
struct Counts {
    spawns: u64,
    commands: u64,
    pipe_bytes: u64,
    round_trips: u64,
    increments: u64,
}

const FULL: Counts = Counts {
    spawns: 2000,
    commands: 500,
    pipe_bytes: 1 << 30,
    round_trips: 100_000,
    increments: 2_000_000,
};

const QUICK: Counts = Counts {
    spawns: 20,
    commands: 5,
    pipe_bytes: 4 << 20,
    round_trips: 500,
    increments: 20_000,
};

const CHUNK: usize = 64 * 1024;

/// Prints figures as a table for a reader, or as TSV for scripts.
struct Report {
    tsv: bool,
    pace: common::opts::Pace,
}

impl Report {
    fn section(&self, title: &str) {
        if !self.tsv {
            say!("== {title}");
        }
    }

    fn figure(&self, name: &str, what: &str, value: f64, unit: &str) {
        if self.tsv {
            // Ignore a closed stdout (`| head`) rather than panic.
            let _ = writeln!(std::io::stdout(), "rs.{name}\t{value:.6}\t{unit}");
        } else {
            say!("{what:<44} {value:>12.3} {unit}");
        }
    }

    /// Print a section's conclusion, then give the reader a moment (scaled
    /// by the pace; outside any measurement).
    fn conclude(&self, text: &str) {
        if !self.tsv {
            say!("-> {text}");
            self.pace.sleep(1.0);
        }
    }
}

fn main() {
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let counts = if args.flag("quick") { QUICK } else { FULL };
    let report = Report {
        tsv: args.flag("tsv"),
        pace: args.pace(),
    };
    if !report.tsv {
        say!(
            "measuring on {} CPUs; the default back end is {}",
            cores(),
            common::BACKEND
        );
        if cfg!(debug_assertions) {
            say!("this is a debug build: run with --release for figures worth quoting");
        }
    }

    report.section("creating");
    // The bare mechanism, as C measures it: the child only calls _exit.
    single_threaded()?;
    let fork = per_op_us(counts.spawns, fork_exit_wait)?;
    report.figure("fork_exit_wait", "fork + _exit + waitpid", fork, "us/proc");
    // What the lessons pay through common's helper: the thread check in
    // /proc, PR_SET_PDEATHSIG in the child, a pidfd to wait with a timeout.
    let helper = per_op_us(counts.spawns, || {
        let mut child = spawn("child", || 0)?;
        expect_clean_exit(&mut child)
    })?;
    report.figure(
        "fork_helper_exit_wait",
        "the same through common::fork::spawn",
        helper,
        "us/proc",
    );
    let thread = per_op_us(counts.spawns, || {
        std::thread::spawn(|| std::hint::black_box(1))
            .join()
            .map(drop)
            .map_err(|_| "thread panicked".into())
    })?;
    report.figure(
        "thread_spawn_join",
        "thread spawned and joined",
        thread,
        "us",
    );
    let command = per_op_us(counts.commands, || {
        let status = std::process::Command::new("/bin/true").status()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("/bin/true: {status}").into())
        }
    })?;
    report.figure(
        "command_spawn_wait",
        "Command running /bin/true, waited",
        command,
        "us/proc",
    );
    report.conclude(&format!(
        "a process costs about {:.0}x a thread to create; running a program about {:.0}x: reuse processes",
        fork / thread,
        command / thread
    ));

    report.section("moving bytes");
    let pipe = pipe_throughput(counts.pipe_bytes)?;
    report.figure("pipe_64k_throughput", "pipe, 64 KiB writes", pipe, "GB/s");
    let shm = shm_handoff_throughput(counts.pipe_bytes)?;
    report.figure(
        "shm_handoff_throughput",
        "shared mapping, handed over by semaphore",
        shm,
        "GB/s",
    );
    report.conclude(if shm > pipe {
        "both copy each byte twice here (in and out); shared memory saves the system calls: share large data"
    } else {
        "on this run the pipe kept up with shared memory: the hand-offs, not the copies, cost the most here"
    });

    report.section("a round trip of 8 bytes between two processes");
    let rt = counts.round_trips;
    let pipes = pingpong_pipe(rt)?;
    report.figure("pingpong_pipe", "two pipes", pipes, "us/roundtrip");
    let mq = pingpong_mq(rt)?;
    report.figure(
        "pingpong_posix_mq",
        "two POSIX message queues",
        mq,
        "us/roundtrip",
    );
    let sem = pingpong_sem(
        rt,
        posix::Semaphore::shared(0)?,
        posix::Semaphore::shared(0)?,
    )?;
    report.figure(
        "pingpong_sem_pshared",
        "two sem_t (posix back end)",
        sem,
        "us/roundtrip",
    );
    let fx = pingpong_sem(
        rt,
        futex::Semaphore::shared(0)?,
        futex::Semaphore::shared(0)?,
    )?;
    report.figure(
        "pingpong_futex_shared",
        "two futex semaphores (futex back end)",
        fx,
        "us/roundtrip",
    );
    report.conclude(
        "every round trip is two sleeps and two wake-ups: send many items per message, not one",
    );

    report.section("a counter two processes increment together");
    let n = counts.increments;
    let m_posix = contended(
        n,
        &*posix::Mutex::shared(0u64)?,
        |m| {
            *m.lock()?.into_guard() += 1;
            Ok(())
        },
        |m| Ok(*m.lock()?.into_guard()),
    )?;
    report.figure(
        "lock_mutex_posix",
        "robust pthread mutex (posix back end)",
        m_posix,
        "incr/s",
    );
    let m_futex = contended(
        n,
        &*futex::Mutex::shared(0u64)?,
        |m| {
            *m.lock()?.into_guard() += 1;
            Ok(())
        },
        |m| Ok(*m.lock()?.into_guard()),
    )?;
    report.figure(
        "lock_mutex_futex",
        "futex mutex (futex back end)",
        m_futex,
        "incr/s",
    );
    let atomic = contended(
        n,
        &*Shared::new(AtomicU64::new(0))?,
        |a| {
            a.fetch_add(1, Ordering::Relaxed);
            Ok(())
        },
        |a| Ok(a.load(Ordering::SeqCst)),
    )?;
    report.figure(
        "lock_atomic_fetch_add",
        "atomic fetch_add, no lock",
        atomic,
        "incr/s",
    );
    report.conclude(&format!(
        "all counts exact; an atomic did {:.0}x the increments of the faster lock: keep critical sections rare and short",
        atomic / m_posix.max(m_futex)
    ));
    if !report.tsv {
        say!("all checks passed");
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Time `n` runs of `op`, in microseconds per run.
fn per_op_us(
    n: u64,
    mut op: impl FnMut() -> Result<(), Box<dyn Error>>,
) -> Result<f64, Box<dyn Error>> {
    let t = Instant::now();
    for _ in 0..n {
        op()?;
    }
    Ok(t.elapsed().as_secs_f64() / n as f64 * 1e6)
}

/// Refuse to go on in a multithreaded process: the bare `fork` below is
/// sound only with one thread (see `common::fork`).
fn single_threaded() -> Result<(), Box<dyn Error>> {
    match common::procfs::stat(std::process::id() as i32)? {
        Some(s) if s.num_threads == 1 => Ok(()),
        other => Err(format!("expected one thread, /proc says {other:?}").into()),
    }
}

/// One bare `fork`: the child leaves at once with `_exit(0)`, the parent
/// reaps it and checks the status.
fn fork_exit_wait() -> Result<(), Box<dyn Error>> {
    // SAFETY: `single_threaded` checked that no other thread exists, and the
    // child only calls `_exit`, which is async-signal-safe anyway.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => common::fork::child_exit(0),
        nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None)? {
            nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
            other => Err(format!("child {child}: {}", describe(other)).into()),
        },
    }
}

/// Wait (with a stall limit) for a child that should exit 0.
fn expect_clean_exit(child: &mut Child) -> Result<(), Box<dyn Error>> {
    match child.wait_timeout(STALL)? {
        Some(s) if exit_code(s) == Some(0) => Ok(()),
        Some(s) => Err(format!("child {} {}", child.raw(), describe(s)).into()),
        None => Err(format!("child {} stalled", child.raw()).into()),
    }
}

/// Parent writes `total` bytes in 64 KiB writes; the child reads them all
/// and exits 0 only if the count is right.
fn pipe_throughput(total: u64) -> Result<f64, Box<dyn Error>> {
    let (reader, writer) = std::io::pipe()?;
    let write_end = writer.as_raw_fd();
    let t = Instant::now();
    // `move`: the read end goes into the child's closure, which the parent
    // drops unrun, closing its copy of the read end as `spawn` returns.
    let mut child = spawn("reader", move || {
        // The child's copy of the write end: close it, or read() never
        // sees end-of-file (a writer would still exist: ourselves).
        let _ = nix::unistd::close(write_end);
        let mut reader = reader;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return 1,
            }
        }
        i32::from(got != total)
    })?;
    let mut writer = writer;
    let chunk = vec![b'x'; CHUNK];
    let mut sent = 0u64;
    while sent < total {
        writer.write_all(&chunk)?;
        sent += CHUNK as u64;
    }
    drop(writer);
    expect_clean_exit(&mut child).map_err(|e| format!("pipe reader: {e}"))?;
    Ok(total as f64 / t.elapsed().as_secs_f64() / 1e9)
}

/// Two 64 KiB slots in shared memory: the parent fills a free slot and
/// posts `full`; the child copies it out and posts `empty`. Each chunk's
/// first byte carries its number, which the child checks.
fn shm_handoff_throughput(total: u64) -> Result<f64, Box<dyn Error>> {
    const SLOTS: usize = 2;
    let slots =
        common::shm::SharedSlice::new(SLOTS * CHUNK, |_| AtomicU64::new(0).into_inner() as u8)?;
    let empty = common::Semaphore::shared(SLOTS as u32)?;
    let full = common::Semaphore::shared(0)?;
    let chunks = total / CHUNK as u64;
    let base = slots.as_ptr() as usize;
    let t = Instant::now();
    let mut child = spawn("reader", || {
        let mut local = vec![0u8; CHUNK];
        for i in 0..chunks {
            if !full.wait_timeout(STALL).unwrap_or(false) {
                return 2;
            }
            let slot = (i as usize % SLOTS) * CHUNK;
            // SAFETY: the semaphores give this slot to us alone until we post
            // `empty`; the mapping outlives the child.
            let src = unsafe { std::slice::from_raw_parts((base + slot) as *const u8, CHUNK) };
            local.copy_from_slice(src);
            let _ = empty.post();
            if local[0] != i as u8 {
                return 3;
            }
        }
        0
    })?;
    let mut chunk = vec![b'x'; CHUNK];
    for i in 0..chunks {
        chunk[0] = i as u8;
        if !empty.wait_timeout(STALL)? {
            return Err("shared-memory reader stalled".into());
        }
        let slot = (i as usize % SLOTS) * CHUNK;
        // SAFETY: the semaphores give this slot to us alone until we post `full`.
        let dst = unsafe { std::slice::from_raw_parts_mut((base + slot) as *mut u8, CHUNK) };
        dst.copy_from_slice(&chunk);
        full.post()?;
    }
    expect_clean_exit(&mut child).map_err(|e| format!("shared-memory reader: {e}"))?;
    Ok((chunks * CHUNK as u64) as f64 / t.elapsed().as_secs_f64() / 1e9)
}

/// The parent sends i, the child answers i + 1, the parent checks it.
fn pingpong_pipe(n: u64) -> Result<f64, Box<dyn Error>> {
    let (from_parent, to_child) = std::io::pipe()?;
    let (from_child, to_parent) = std::io::pipe()?;
    let parent_ends = [to_child.as_raw_fd(), from_child.as_raw_fd()];
    // The child's ends move into the closure (and so leave the parent).
    let mut child = spawn("echo", move || {
        for fd in parent_ends {
            let _ = nix::unistd::close(fd);
        }
        let (mut rx, mut tx) = (from_parent, to_parent);
        let mut buf = [0u8; 8];
        while rx.read_exact(&mut buf).is_ok() {
            let v = u64::from_ne_bytes(buf) + 1;
            if tx.write_all(&v.to_ne_bytes()).is_err() {
                return 1;
            }
        }
        0
    })?;
    let (mut tx, mut rx) = (to_child, from_child);
    let mut buf = [0u8; 8];
    let t = Instant::now();
    for i in 0..n {
        tx.write_all(&i.to_ne_bytes())?;
        rx.read_exact(&mut buf)?;
        if u64::from_ne_bytes(buf) != i + 1 {
            return Err(format!("pipe ping-pong: wrong answer at {i}").into());
        }
    }
    let us = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    drop(tx); // the child sees end-of-file and exits
    expect_clean_exit(&mut child)?;
    Ok(us)
}

/// `mq_timedreceive` takes only a CLOCK_REALTIME deadline, which a step of
/// the wall clock moves: wait in slices of at most 100 ms until STALL has
/// really passed on CLOCK_MONOTONIC, so a step costs at most one slice.
fn timed_receive(q: &nix::mqueue::MqdT, buf: &mut [u8]) -> Result<usize, Box<dyn Error>> {
    let end = Instant::now() + STALL;
    let mut prio = 0;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let realtime = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)?;
        let slice = nix::sys::time::TimeSpec::from(left.min(Duration::from_millis(100)));
        match nix::mqueue::mq_timedreceive(q, buf, &mut prio, &(realtime + slice)) {
            Err(nix::errno::Errno::ETIMEDOUT | nix::errno::Errno::EINTR) if !left.is_zero() => {}
            r => return Ok(r?),
        }
    }
}

fn pingpong_mq(n: u64) -> Result<f64, Box<dyn Error>> {
    let attr = MqAttr::new(0, 1, 8, 0);
    let flags = MQ_OFlag::O_RDWR | MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL;
    let mode = Mode::S_IRUSR | Mode::S_IWUSR;
    let (ping_name, pong_name) = (
        common::names::unique("performance")?,
        common::names::unique("performance")?,
    );
    let ping = mq_open(ping_name.as_str(), flags, mode, Some(&attr))
        .map_err(|e| format!("mq_open: {e}"))?;
    let pong = mq_open(pong_name.as_str(), flags, mode, Some(&attr));
    // Unlinked at once: the open descriptors stay valid and the child
    // inherits them, so nothing is left in /dev/mqueue whatever happens.
    mq_unlink(ping_name.as_str())?;
    let pong = pong.map_err(|e| format!("mq_open: {e}"))?;
    mq_unlink(pong_name.as_str())?;
    let mut child = spawn("echo", || {
        let mut buf = [0u8; 8];
        for _ in 0..n {
            if !matches!(timed_receive(&ping, &mut buf), Ok(8)) {
                return 1;
            }
            let v = u64::from_ne_bytes(buf) + 1;
            if mq_send(&pong, &v.to_ne_bytes(), 0).is_err() {
                return 1;
            }
        }
        0
    })?;
    let mut buf = [0u8; 8];
    let t = Instant::now();
    for i in 0..n {
        mq_send(&ping, &i.to_ne_bytes(), 0)?;
        if timed_receive(&pong, &mut buf)? != 8 || u64::from_ne_bytes(buf) != i + 1 {
            return Err(format!("message-queue ping-pong: wrong answer at {i}").into());
        }
    }
    let us = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    expect_clean_exit(&mut child)?;
    Ok(us)
}

/// The two semaphore back ends share this shape: a slot in shared memory,
/// `ping` to hand it to the child, `pong` to hand it back.
trait HandOff: Sync {
    fn post(&self) -> std::io::Result<()>;
    fn wait_timeout(&self, d: Duration) -> std::io::Result<bool>;
}

impl HandOff for posix::Semaphore {
    fn post(&self) -> std::io::Result<()> {
        posix::Semaphore::post(self)
    }
    fn wait_timeout(&self, d: Duration) -> std::io::Result<bool> {
        posix::Semaphore::wait_timeout(self, d)
    }
}

impl HandOff for futex::Semaphore {
    fn post(&self) -> std::io::Result<()> {
        futex::Semaphore::post(self)
    }
    fn wait_timeout(&self, d: Duration) -> std::io::Result<bool> {
        futex::Semaphore::wait_timeout(self, d)
    }
}

fn pingpong_sem<S: HandOff>(
    n: u64,
    ping: Shared<S>,
    pong: Shared<S>,
) -> Result<f64, Box<dyn Error>> {
    let slot = Shared::new(AtomicU64::new(0))?;
    let mut child = spawn("echo", || {
        for _ in 0..n {
            if !ping.wait_timeout(STALL).unwrap_or(false) {
                return 1;
            }
            slot.fetch_add(1, Ordering::Relaxed);
            if pong.post().is_err() {
                return 1;
            }
        }
        0
    })?;
    let t = Instant::now();
    for i in 0..n {
        slot.store(i, Ordering::Relaxed);
        ping.post()?;
        if !pong.wait_timeout(STALL)? || slot.load(Ordering::Relaxed) != i + 1 {
            return Err(format!("semaphore ping-pong: no or wrong answer at {i}").into());
        }
    }
    let us = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    expect_clean_exit(&mut child)?;
    Ok(us)
}

/// Two children add 1 to a shared counter `n` times each, starting together;
/// the count must come out exactly 2n. Returns increments per second.
fn contended<T: Sync>(
    n: u64,
    counter: &T,
    increment: impl Fn(&T) -> Result<(), Box<dyn Error>>,
    read: impl Fn(&T) -> Result<u64, Box<dyn Error>>,
) -> Result<f64, Box<dyn Error>> {
    let go = common::Semaphore::shared(0)?;
    let mut kids = Vec::new();
    for w in 0..2 {
        kids.push(spawn(
            &format!("worker {w}"),
            || -> Result<(), Box<dyn Error>> {
                if !go.wait_timeout(STALL)? {
                    return Err("never started".into());
                }
                for _ in 0..n {
                    increment(counter)?;
                }
                Ok(())
            },
        )?);
    }
    let t = Instant::now();
    go.post()?;
    go.post()?;
    for k in &mut kids {
        expect_clean_exit(k)?;
    }
    let rate = 2.0 * n as f64 / t.elapsed().as_secs_f64();
    let got = read(counter)?;
    if got != 2 * n {
        return Err(format!("lost updates: counted {got}, expected {}", 2 * n).into());
    }
    Ok(rate)
}
