//! Demonstrate how a pool of worker processes is started once and reused for
//! many tasks, how each result comes back tagged with its task id, and how
//! the pool survives a worker that panics, aborts, is killed or hangs.
//!
//! The parent forks N workers (default 3) and keeps them. Each worker has
//! two pipes: tasks go down one as fixed-size binary frames (task id, op,
//! argument: 24 bytes) and results come up the other (task id, result: 16
//! bytes). Several tasks wait in each worker's pipe (`--inflight`), so a
//! worker never sits idle waiting for a round trip. The parent stays
//! single-threaded: one `poll` loop over the result pipes, with a timeout.
//! The lesson runs one batch of tasks twice, collecting the results in
//! submission order (`map`) and as they finish (`as_completed`), and shows
//! that the same few PIDs served them all. Then four tasks fail on purpose,
//! each alone, and the pool replaces their workers. Then it measures the
//! speedup of a CPU-bound task with 1 worker and with N, and the cost of a
//! trivial task through the pool next to forking a process per task. It
//! ends with `close` (queued tasks finish, workers read EOF and exit 0) and
//! `terminate` (SIGKILL now), and checks that no worker and no zombie is left.
//!
//! Key points:
//! - A pool pays for `fork` once per worker, not once per task. A result is
//!   any 64-bit value, not an 8-bit exit status.
//! - Every result carries its task id, so the order is the receiver's
//!   choice: `map` puts results back in submission order, `as_completed`
//!   hands each one over as it arrives.
//! - Queue work ahead, but boundedly: what is in flight always fits in the
//!   pipe, so the parent's writes never block. Unbounded, parent and worker
//!   could each block writing to a full pipe the other is not reading.
//! - EOF is how each side learns the other is gone, and a pipe reads EOF
//!   only once every write end is closed, in every process. The parent
//!   closes the worker's ends right after `fork`, so a dead worker shows as
//!   EOF on its result pipe. Each worker closes every descriptor it
//!   inherited but its own two (the fork also gave it the write end of its
//!   own task pipe, and of the other workers'), so closing the task pipes
//!   makes every worker read EOF and leave.
//! - A word of shared memory per worker says which task it is running, so
//!   after a death the pool knows which task failed; the others queued on
//!   that worker without a result are resubmitted. (So a task may run
//!   twice: fine for pure tasks like these, a design question for tasks
//!   with side effects.) A worker that stops answering is found by a
//!   timeout, killed and replaced: the pool never hangs.
//! - Forking a replacement mid-run is safe because the parent has a single
//!   thread (no result-handler or feeder thread, as Python's pools have):
//!   the child of a multithreaded process may only make async-signal-safe
//!   calls, and `common::fork::Fork::run` refuses to fork one. Children
//!   leave with `_exit` (no destructor runs twice), and stdout is flushed
//!   before each fork (the helper does it).
//!
//! What to observe, in another terminal during the pause at the start:
//! `pstree -p <parent pid>` shows the workers as children of the lesson;
//! `ps -o pid,ppid,stat,comm --ppid <parent pid>` shows them in state `S`,
//! asleep in `read` on their task pipes; `ls -l /proc/<worker pid>/fd`
//! shows that a worker holds only stdin, stdout, stderr and its own two
//! pipe ends. `scripts/process_pool.sh` shows the tree for you.
//!
//! The pitfall: the C++ seed forks a fresh process per task and returns the
//! result through the exit status, so 1000 * 1000 comes back as 64 (the low
//! 8 bits). Python's pools are real pools, but a worker that dies breaks
//! them: `multiprocessing.Pool.map` then waits forever for the lost task,
//! and `ProcessPoolExecutor` fails every pending future with
//! `BrokenProcessPool`.
//!
//! Seed example: 04, process pool (C++ `fork` per task with the result in
//! the exit code; Python `multiprocessing.Pool(4).map(square, ...)`).
//!
//! Run with:
//! ```text
//! cargo run -p process_pool
//! cargo run -p process_pool -- --workers 2 --tasks 20 --inflight 1
//! CARGO_TARGET_DIR=/tmp/target-process_pool cargo run --release -p process_pool -- --bench
//! ```
//!
//! Try it:
//! - Run with `--inflight 1` and compare the overhead line: with one task
//!   in flight, every task waits for a full round trip.
//! - During the pause, `kill -9` one worker. Predict the output: when the
//!   pool next has work it sees EOF, finds the worker died between tasks,
//!   resubmits what it had queued and starts a replacement; no task fails,
//!   but the lesson's reuse check names the new PID and exits 1.
//! - Catch the panic in the worker (`std::panic::catch_unwind` around
//!   `run_op`) and send back a failure frame instead of dying. What must the
//!   result frame carry now, and which faults still kill a worker?
//! - Remove the call to `close_other_fds`: `close` now fails after 10 s
//!   with "still runs after EOF". Which processes hold which write ends?
//!
//! See also: `pipe_communication` (pipes and EOF), `queue_communication`,
//! `zombie` (reaping), `performance` (the cost of each mechanism).

use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::fmt;
use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn};
use common::opts::{Args, Opt, Spec};
use common::shm::SharedSlice;
use common::{describe, procfs, say, warn, Child};
use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{fcntl_setfl, OFlags};
use rustix::io::Errno;
use rustix::pipe::{fcntl_getpipe_size, pipe_with, PipeFlags};

const SPEC: Spec = Spec {
    name: "process_pool",
    about: "Demonstrate how a pool of worker processes is started once, reused and kept alive.",
    options: &[
        Opt::int("workers", "worker processes in the pool", 3, 1, 64),
        Opt::int(
            "tasks",
            "tasks in the map and as_completed demos",
            10,
            1,
            1000,
        ),
        Opt::int("inflight", "tasks queued ahead on each worker", 4, 1, 64),
        Opt::float(
            "stuck-after",
            "seconds a busy worker may stay silent before it counts as stuck",
            3.0,
            1.0,
            600.0,
        ),
        Opt::flag(
            "bench",
            "print only benchmark figures, as name<TAB>value<TAB>unit lines",
        ),
        Opt::int(
            "bench-tasks",
            "trivial tasks per --bench throughput figure",
            10_000,
            100,
            1_000_000,
        ),
    ],
};

/// How long a worker gets to end after EOF on its task pipe or a SIGKILL,
/// and to reach a state the lesson waits for. A safety floor for a loaded
/// machine, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause for a human to look at the pool (scaled by the pace).
const LOOK_SECS: f64 = 3.0;

/// About how long one CPU-bound task takes (measured on this machine).
const CPU_TASK: Duration = Duration::from_millis(20);

/// Trivial tasks timed through the pool, and processes forked one per task,
/// for the overhead comparison.
const OVERHEAD_TASKS: u64 = 2000;
const FORK_TASKS: u64 = 100;

/// A worker answers at least this often while it works through a batch
/// (give or take the few ms of its coarse clock).
const ANSWER_EVERY: Duration = Duration::from_millis(2);

/// Tasks in flight per worker in the `--bench` "one task per message" run:
/// as many as the pipes hold (`set_in_flight` caps it), as Python's pool,
/// which queues every task at once.
const BENCH_IN_FLIGHT: usize = usize::MAX;

type Res<T> = Result<T, Box<dyn Error>>;

fn main() {
    let args = Args::parse(&SPEC);
    // Before the first fork: Ctrl-C and SIGTERM are read from a descriptor
    // in the pool's poll loop instead of interrupting it (see below).
    let result = block_stop_signals().and_then(|signals| {
        // A stop signal sent to the whole process group also reaches the
        // workers, and may be why `run` failed (a worker died of SIGTERM):
        // a pending signal wins over the error it caused.
        run(&args, &signals).map_err(|e| take_signal(&signals).err().unwrap_or(e))
    });
    if let Err(e) = result {
        if let Some(Interrupted(sig)) = e.downcast_ref::<Interrupted>() {
            // `run` has returned, so every pool was dropped, and dropping a
            // worker's `Child` kills and reaps it. Check that from /proc.
            match no_children_left() {
                Ok(()) => warn!(
                    "interrupted by {sig}: the pool was terminated; no worker and no zombie left"
                ),
                Err(e) => warn!("error: interrupted by {sig}, and {e}"),
            }
            std::process::exit(128 + *sig as i32);
        }
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args, signals: &SignalFd) -> Res<()> {
    if args.flag("bench") {
        return bench(args.usize("bench-tasks"), signals);
    }
    let pace = args.pace();
    let config = Config {
        label: "pool",
        workers: args.usize("workers"),
        in_flight: args.usize("inflight"),
        stuck_after: Duration::from_secs_f64(args.float("stuck-after")),
        verbose: true,
    };
    let me = std::process::id() as i32;

    // 1. Start the workers once.
    let mut pool = Pool::start(&config, signals)?;
    let pids = pool.pids();
    say!(
        "pool: {} workers started once, pids {}; up to {} tasks queued ahead on each",
        config.workers,
        list(&pids),
        pool.max_in_flight
    );
    workers_are_idle_children(&pids, me)?;
    say!(
        "see it from outside: pstree -p {me}, or ps -o pid,ppid,stat,comm --ppid {me} (pausing {:.1} s)",
        pace.secs(LOOK_SECS).as_secs_f64()
    );
    pause(signals, pace.secs(LOOK_SECS))?;

    // 2. The same tasks, collected in two orders, by the same processes.
    map_and_as_completed(&mut pool, args.usize("tasks"), &pids)?;

    // 3. Tasks that kill their worker, and one that hangs.
    faults(&mut pool)?;

    // 4. What a pool is for: CPU-bound work on several cores.
    let cpu_n = cpu_speedup(&mut pool, &config, signals)?;

    // 5. And why pools exist: the cost of a process per task.
    overhead(&mut pool, signals)?;

    // 6. Two ways to end a pool.
    close_demo(pool)?;
    terminate_demo(&config, signals, cpu_n * 10)?;

    no_children_left()?;
    say!("no child process left: no worker, no zombie");
    // A stop request that came while nothing was waiting for it still counts.
    take_signal(signals)?;
    say!("all checks passed");
    Ok(())
}

// ---------------------------------------------------------------------------
// The demos, in the order `run` calls them.

/// The inputs of the map / as_completed demo: `sum_to(n)` with `n`
/// decreasing, so later tasks tend to finish first.
fn demo_tasks(count: usize) -> Vec<(Op, u64)> {
    let count = count as u64;
    let biggest = (20_000_000 / count).min(2_000_000);
    (0..count)
        .map(|i| (Op::SumTo, 1 + biggest * (count - i) / count))
        .collect()
}

fn map_and_as_completed(pool: &mut Pool, count: usize, pids: &[i32]) -> Res<()> {
    let tasks = demo_tasks(count);
    say!("map: {count} tasks sum_to(n), biggest first; results come back in submission order");
    let in_order = pool.map(&tasks)?;
    for ev in &in_order {
        say!(
            "map: task {} {} = {} by worker {} pid {}",
            ev.id,
            ev.op.show(ev.arg),
            ev.value()?,
            ev.worker,
            ev.pid
        );
    }
    check_results("map", &in_order, &tasks)?;

    say!("as_completed: the same {count} tasks again; results as they finish");
    let finished = pool.as_completed(&tasks, |ev| {
        if let Outcome::Done(v) = ev.outcome {
            say!(
                "as_completed: task {} {} = {v} by worker {} pid {}",
                ev.id,
                ev.op.show(ev.arg),
                ev.worker,
                ev.pid
            );
        }
    })?;
    let moved = finished.windows(2).filter(|w| w[0].id > w[1].id).count();
    let mut by_id: Vec<Event> = finished;
    by_id.sort_by_key(|e| e.id);
    check_results("as_completed", &by_id, &tasks)?;
    say!("as_completed: {moved} times a later task finished before an earlier one (map hid that by waiting)");

    // The proof that the pool reuses its processes: count who served what.
    let mut served: BTreeMap<i32, usize> = BTreeMap::new();
    for ev in in_order.iter().chain(&by_id) {
        *served.entry(ev.pid).or_default() += 1;
    }
    if let Some(stranger) = served.keys().find(|p| !pids.contains(p)) {
        return Err(
            format!("reuse: task served by pid {stranger}, which is not a pool worker").into(),
        );
    }
    // Both runs start with every worker idle and the least busy worker gets
    // the next task, so each worker that got a task in the first run got
    // one in the second too: at least two tasks per process.
    if let Some((pid, n)) = served.iter().find(|(_, n)| **n < 2) {
        return Err(format!("reuse: pid {pid} served only {n} task(s)").into());
    }
    let total = in_order.len() + by_id.len();
    let shares: Vec<String> = served
        .iter()
        .map(|(p, n)| format!("pid {p} served {n}"))
        .collect();
    say!(
        "reuse: {total} tasks served by {} processes, each reused: {}",
        served.len(),
        shares.join(", ")
    );
    Ok(())
}

/// Every task has a result and it is the right one.
fn check_results(what: &str, events: &[Event], tasks: &[(Op, u64)]) -> Res<()> {
    if events.len() != tasks.len() {
        return Err(format!("{what}: {} results for {} tasks", events.len(), tasks.len()).into());
    }
    for (k, (ev, &(op, arg))) in events.iter().zip(tasks).enumerate() {
        let want = op
            .expected(arg)
            .ok_or("check_results: a fault has no expected value")?;
        if k > 0 && ev.id != events[k - 1].id + 1 {
            return Err(format!("{what}: task {} follows task {}", ev.id, events[k - 1].id).into());
        }
        if ev.op != op || ev.arg != arg || ev.value()? != want {
            return Err(format!(
                "{what}: task {} {} gave {:?}, expected {want}",
                ev.id,
                op.show(arg),
                ev.outcome
            )
            .into());
        }
    }
    Ok(())
}

/// What a fault must look like once its worker is gone: the decoded wait
/// status, and whether the pool had to kill a silent worker.
fn expected_failure(op: Op) -> Option<(&'static str, bool)> {
    match op {
        Op::Panic => Some(("exited with 101", false)), // common::fork's code for a panic
        Op::Abort => Some(("killed by SIGABRT", false)),
        Op::KillSelf => Some(("killed by SIGKILL", false)),
        Op::Hang => Some(("killed by SIGKILL", true)),
        Op::Square | Op::SumTo => None,
    }
}

fn faults(pool: &mut Pool) -> Res<()> {
    let mut tasks = vec![
        (Op::Panic, 0),
        (Op::Abort, 0),
        (Op::KillSelf, 2_000_000),
        (Op::Hang, 0),
    ];
    // Enough ordinary tasks that the first faulty worker has one queued
    // behind its fault (the first fill goes round the workers).
    tasks.extend((0..2 * pool.size() as u64).map(|i| (Op::Square, 2000 + i)));
    say!(
        "faults: {} tasks; 4 of them fail on purpose: a panic, an abort, a SIGKILL halfway, a hang (found after {:.1} s of silence)",
        tasks.len(),
        pool.config.stuck_after.as_secs_f64()
    );
    let (replaced, resubmitted) = (pool.replaced, pool.resubmitted);
    let events = pool.as_completed(&tasks, |ev| match &ev.outcome {
        Outcome::Done(v) => say!(
            "faults: task {} {} = {v} by worker {} pid {}",
            ev.id,
            ev.op.show(ev.arg),
            ev.worker,
            ev.pid
        ),
        Outcome::Failed(f) => say!(
            "faults: task {} ({}) failed: {}{}",
            ev.id,
            ev.op.show(ev.arg),
            if f.stuck.is_some() {
                "stopped answering, killed by the pool: "
            } else {
                ""
            },
            f.how
        ),
    })?;

    let mut failed = 0;
    for ev in &events {
        match (&ev.outcome, expected_failure(ev.op)) {
            (Outcome::Failed(f), Some((want, by_pool))) => {
                if !f.how.starts_with(want) || f.stuck.is_some() != by_pool {
                    return Err(format!(
                        "faults: task {} ({}) failed with {f:?}, expected {want:?}",
                        ev.id,
                        ev.op.show(ev.arg)
                    )
                    .into());
                }
                failed += 1;
            }
            (Outcome::Done(v), None) if Some(*v) == ev.op.expected(ev.arg) => {}
            (outcome, _) => {
                return Err(format!(
                    "faults: task {} ({}) ended as {outcome:?}",
                    ev.id,
                    ev.op.show(ev.arg)
                )
                .into())
            }
        }
    }
    let replaced = pool.replaced - replaced;
    let resubmitted = pool.resubmitted - resubmitted;
    if events.len() != tasks.len() || failed != 4 || replaced != 4 {
        return Err(format!("faults: {} results for {} tasks, {failed} failures, {replaced} replacements; expected 4 and 4", events.len(), tasks.len()).into());
    }
    if pool.max_in_flight >= 2 && resubmitted == 0 {
        return Err(
            "faults: no queued task was resubmitted, yet the first faulty worker had one queued"
                .into(),
        );
    }
    say!(
        "faults: the 4 failures were reported alone, each with its cause; {replaced} workers replaced, {resubmitted} queued tasks resubmitted, the other {} tasks done and correct",
        tasks.len() - 4
    );
    Ok(())
}

/// Time the same CPU-bound tasks with a 1-worker pool and with `pool`.
/// Returns the `n` of one task, for later demos.
fn cpu_speedup(pool: &mut Pool, config: &Config, signals: &SignalFd) -> Res<u64> {
    let n = calibrate(CPU_TASK);
    let count = (4 * config.workers).clamp(8, 40);
    let tasks = vec![(Op::SumTo, n); count];
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    say!(
        "cpu: {count} tasks sum_to({n}), about {} ms each here; first with a pool of 1 worker, then with the {} workers",
        CPU_TASK.as_millis(),
        config.workers
    );
    let solo_config = Config {
        label: "pool of 1",
        workers: 1,
        in_flight: 1,
        ..*config
    };
    let mut solo = Pool::start(&solo_config, signals)?;
    let (one, t1) = timed(|| solo.map(&tasks))?;
    let (_, exits) = solo.close()?;
    // Long tasks need no queue ahead; one in flight balances the load best.
    pool.set_in_flight(1);
    let (many, tn) = timed(|| pool.map(&tasks))?;
    pool.set_in_flight(config.in_flight);
    check_results("cpu, 1 worker", &one, &tasks)?;
    check_results("cpu, all workers", &many, &tasks)?;
    if exits.iter().any(|e| exit_code(e.status) != Some(0)) {
        return Err(format!("cpu: the 1-worker pool did not close cleanly: {exits:?}").into());
    }
    let ideal = config.workers.min(cores);
    say!(
        "cpu: 1 worker {:.3} s, {} workers {:.3} s: speedup {:.2}x; ideal here {ideal}x (min of {} workers and {cores} cores; other load on the machine lowers it)",
        t1.as_secs_f64(),
        config.workers,
        tn.as_secs_f64(),
        t1.as_secs_f64() / tn.as_secs_f64(),
        config.workers
    );
    Ok(n)
}

fn overhead(pool: &mut Pool, signals: &SignalFd) -> Res<()> {
    let tasks: Vec<(Op, u64)> = (0..OVERHEAD_TASKS)
        .map(|i| (Op::Square, 1000 + i))
        .collect();
    let queued = pool.max_in_flight;
    let (results, t_queued) = timed(|| pool.map(&tasks))?;
    check_results("overhead", &results, &tasks)?;
    pool.set_in_flight(1);
    let (results, t_one) = timed(|| pool.map(&tasks))?;
    pool.set_in_flight(queued);
    check_results("overhead, 1 in flight", &results, &tasks)?;

    // The C++ seed's way: a fresh process per task, the result in the exit
    // status. The parent blocks SIGINT and SIGTERM (see below), so check
    // for them between forks.
    let start = Instant::now();
    let mut codes = Vec::with_capacity(FORK_TASKS as usize);
    for i in 0..FORK_TASKS {
        take_signal(signals)?;
        let x = 1000 + i;
        let mut child = spawn("task", move || (x * x) as i32)?;
        let status = child
            .wait_timeout(SYSTEM_TIMEOUT)?
            .ok_or_else(|| format!("task process {} did not exit", child.raw()))?;
        if exit_code(status) != Some(((x * x) & 0xff) as i32) {
            return Err(
                format!("fork per task: {x} * {x} came back as {}", describe(status)).into(),
            );
        }
        codes.push(exit_code(status).unwrap_or(-1));
    }
    let t_fork = start.elapsed();
    let per = |t: Duration, n: u64| t.as_secs_f64() * 1e6 / n as f64;
    let (pool_us, one_us, fork_us) = (
        per(t_queued, OVERHEAD_TASKS),
        per(t_one, OVERHEAD_TASKS),
        per(t_fork, FORK_TASKS),
    );
    say!(
        "overhead per trivial task: {pool_us:.1} us through the pool ({queued} queued per worker), {one_us:.1} us with 1 in flight (a round trip per task), {fork_us:.1} us forking a process per task: the pool is {:.0}x cheaper",
        fork_us / pool_us
    );
    say!(
        "overhead: fork per task returned {} for 1000 * 1000 (an exit status keeps only the low 8 bits); the pool returned {}",
        codes[0],
        results[0].value()?
    );
    Ok(())
}

fn close_demo(mut pool: Pool) -> Res<()> {
    let tasks: Vec<(Op, u64)> = (0..2 * pool.size() as u64)
        .map(|i| (Op::SumTo, 100_000 + i))
        .collect();
    let first = pool.submit_all(&tasks);
    say!("close: {} tasks queued, then close(): no new work, the queued tasks still run, then each worker reads EOF and exits", tasks.len());
    let (mut done, exits) = pool.close()?;
    done.sort_by_key(|e| e.id);
    check_results("close", &done, &tasks)?;
    if done.first().map(|e| e.id) != Some(first) {
        return Err("close: the results are not those of the queued tasks".into());
    }
    for &Exit {
        number,
        pid,
        status,
    } in &exits
    {
        if exit_code(status) != Some(0) {
            return Err(format!("close: worker {number} (pid {pid}) {}", describe(status)).into());
        }
        if procfs::stat(pid)?.is_some() {
            return Err(format!("close: worker {number} (pid {pid}) is still in /proc").into());
        }
    }
    say!(
        "close: the {} queued tasks finished; {} workers exited with 0 and were reaped (gone from /proc)",
        done.len(),
        exits.len()
    );
    Ok(())
}

fn terminate_demo(config: &Config, signals: &SignalFd, long: u64) -> Res<()> {
    let config = Config {
        label: "pool to terminate",
        ..*config
    };
    let mut pool = Pool::start(&config, signals)?;
    let tasks = vec![(Op::SumTo, long); 3 * config.workers];
    pool.submit_all(&tasks);
    pool.wait_until_all_busy()?;
    say!(
        "terminate: a new pool, pids {}; every worker is in the middle of a task; terminate() sends SIGKILL to all at once",
        list(&pool.pids())
    );
    let (exits, dropped) = pool.terminate()?;
    for &Exit {
        number,
        pid,
        status,
    } in &exits
    {
        if status != WaitStatus::Signaled(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL, false) {
            return Err(format!(
                "terminate: worker {number} (pid {pid}) {}",
                describe(status)
            )
            .into());
        }
        if procfs::stat(pid)?.is_some() {
            return Err(format!("terminate: worker {number} (pid {pid}) is still in /proc").into());
        }
    }
    say!(
        "terminate: {} workers killed by SIGKILL and reaped (gone from /proc); {dropped} unfinished tasks dropped",
        exits.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Tasks, and the frames that carry them.

/// What a worker does with a task's argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum Op {
    /// `x * x`: the trivial task.
    Square = 1,
    /// `0 + 1 + ... + (x - 1)`: the CPU-bound task.
    SumTo = 2,
    /// Faults, each of which ends the worker in its own way.
    Panic = 3,
    Abort = 4,
    KillSelf = 5,
    Hang = 6,
}

impl Op {
    fn from_word(w: u64) -> Option<Op> {
        Some(match w {
            1 => Op::Square,
            2 => Op::SumTo,
            3 => Op::Panic,
            4 => Op::Abort,
            5 => Op::KillSelf,
            6 => Op::Hang,
            _ => return None,
        })
    }

    /// The right answer, computed in the parent (none for a fault).
    fn expected(self, x: u64) -> Option<u64> {
        match self {
            Op::Square => Some(x.wrapping_mul(x)),
            Op::SumTo => Some((x as u128 * (x as u128).saturating_sub(1) / 2) as u64),
            _ => None,
        }
    }

    fn show(self, x: u64) -> String {
        match self {
            Op::Square => format!("{x} * {x}"),
            Op::SumTo => format!("sum_to({x})"),
            Op::Panic => "panic".into(),
            Op::Abort => "abort".into(),
            Op::KillSelf => "SIGKILL halfway".into(),
            Op::Hang => "hang".into(),
        }
    }
}

/// 0 + 1 + ... + (n - 1), one addition at a time: a fixed computation that
/// keeps a core busy. `black_box` stops the compiler from turning the loop
/// into n(n-1)/2.
fn sum_to(n: u64) -> u64 {
    let mut s = 0u64;
    for i in 0..n {
        s = s.wrapping_add(black_box(i));
    }
    s
}

/// One task: 24 bytes down the task pipe.
#[derive(Debug, Clone, Copy)]
struct Task {
    id: u64,
    op: Op,
    arg: u64,
}

/// Frames are three (task) or two (result) native-endian 64-bit words: both
/// ends are the same program on the same machine, so no serialisation
/// format is needed. A pipe is a byte stream: a read may end in the middle
/// of a frame, so both sides keep the leftover bytes for the next read.
const TASK_FRAME: usize = 24;
const RESULT_FRAME: usize = 16;

impl Task {
    fn encode(&self, out: &mut Vec<u8>) {
        for w in [self.id, self.op as u64, self.arg] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
    }
}

fn word(frame: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&frame[8 * i..8 * i + 8]);
    u64::from_ne_bytes(b)
}

// ---------------------------------------------------------------------------
// The worker process.

/// A worker's life: read task frames until EOF, run each, write the result
/// frames back. `running` is this worker's word of shared memory: the id+1
/// of the task it is running, 0 between tasks.
fn worker_main(
    tasks: BorrowedFd,
    results: BorrowedFd,
    running: &AtomicU64,
    verbose: bool,
) -> Result<(), String> {
    // Ctrl-C signals the whole foreground process group, workers included.
    // The parent decides how the pool ends, so a worker ignores SIGINT. The
    // parent's blocked signals were inherited: unblock them, so a plain
    // `kill <worker pid>` (SIGTERM) still ends a worker.
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { signal(Signal::SIGINT, SigHandler::SigIgn) }
        .map_err(|e| format!("signal(SIGINT): {e}"))?;
    stop_signals()
        .thread_unblock()
        .map_err(|e| format!("sigprocmask(SIG_UNBLOCK): {e}"))?;
    // After fork a worker holds a copy of every descriptor of the parent:
    // the write end of its own task pipe, and the other workers' pipe ends.
    // Kept open, they would stop every task pipe from ever reading EOF.
    close_other_fds(&[tasks.as_raw_fd(), results.as_raw_fd()])?;
    // A panic message in one line that names this process.
    std::panic::set_hook(Box::new(|info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("?");
        warn!("panicked: {msg}");
    }));

    let mut buf = vec![0u8; (64 * 1024 / TASK_FRAME) * TASK_FRAME];
    let mut have = 0;
    let mut out = Vec::with_capacity(buf.len() / TASK_FRAME * RESULT_FRAME);
    let mut served = 0u64;
    loop {
        // Block until the parent sends tasks; take all that are there.
        let n = match rustix::io::read(tasks, &mut buf[have..]) {
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(format!("read(task pipe): {e}")),
        };
        if n == 0 {
            // EOF: the parent closed the pipe (Pool::close). Leave cleanly.
            if verbose {
                say!("task pipe closed (EOF) after {served} tasks: leaving");
            }
            return if have == 0 {
                Ok(())
            } else {
                Err("EOF in the middle of a task frame".into())
            };
        }
        have += n;
        let whole = have - have % TASK_FRAME;
        let mut answered = coarse_clock();
        for frame in buf[..whole].chunks_exact(TASK_FRAME) {
            let (id, arg) = (word(frame, 0), word(frame, 2));
            let op =
                Op::from_word(word(frame, 1)).ok_or_else(|| format!("task {id}: unknown op"))?;
            // Relaxed is enough: the parent reads this word to see whether
            // the worker is busy, and to learn what it was running only
            // after reaping it (waitpid orders all the worker did before).
            running.store(id + 1, Ordering::Relaxed);
            let value = run_op(id, op, arg);
            out.extend_from_slice(&id.to_ne_bytes());
            out.extend_from_slice(&value.to_ne_bytes());
            served += 1;
            // Trivial tasks are answered with one write per batch; long ones
            // one by one, as each ends: as_completed sees them as they
            // finish, and a busy worker is never silent for long.
            let now = coarse_clock();
            if now.saturating_sub(answered) >= ANSWER_EVERY {
                send(results, &mut out)?;
                answered = now;
            }
        }
        running.store(0, Ordering::Relaxed);
        buf.copy_within(whole..have, 0);
        have -= whole;
        send(results, &mut out)?;
    }
}

/// `CLOCK_MONOTONIC_COARSE`: a clock the kernel updates once per tick (a
/// few ms), read from memory at the cost of a few instructions: cheap enough
/// to look at after every trivial task.
fn coarse_clock() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Write the result frames gathered in `out` (EPIPE: the parent is gone).
fn send(results: BorrowedFd, out: &mut Vec<u8>) -> Result<(), String> {
    write_all(results, out).map_err(|e| format!("write(result pipe): {e}"))?;
    out.clear();
    Ok(())
}

/// Run one task in the worker.
fn run_op(id: u64, op: Op, x: u64) -> u64 {
    match op {
        Op::Square => x.wrapping_mul(x),
        Op::SumTo => sum_to(x),
        Op::Panic => panic!("task {id} panics on purpose"),
        Op::Abort => {
            say!("task {id}: calling abort()");
            // No core file left behind by a demo: a non-dumpable process
            // dumps no core (whatever core_pattern says).
            let _ = nix::sys::prctl::set_dumpable(false);
            std::process::abort()
        }
        Op::KillSelf => {
            black_box(sum_to(x / 2));
            say!("task {id}: halfway through sum_to({x}), killed by SIGKILL (as the OOM killer would)");
            let _ = nix::sys::signal::raise(Signal::SIGKILL);
            unreachable!("SIGKILL cannot be caught")
        }
        Op::Hang => {
            say!("task {id}: waiting forever, like a worker stuck on a lock or a dead peer");
            loop {
                nix::unistd::pause();
            }
        }
    }
}

/// Close every descriptor from 3 up except `keep`.
fn close_other_fds(keep: &[RawFd]) -> Result<(), String> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd >= 3)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    let mut first = 3u32;
    // Close each gap between the descriptors kept, and all above the last.
    for next_kept in keep.into_iter().chain([u32::MAX]) {
        // SAFETY: closes descriptors this process no longer uses; the
        // `OwnedFd`s among them are never dropped (the child leaves with
        // `_exit`), so none is closed twice.
        if next_kept > first && unsafe { libc::close_range(first, next_kept - 1, 0) } != 0 {
            return Err(format!("close_range: {}", std::io::Error::last_os_error()));
        }
        first = first.max(next_kept.saturating_add(1));
    }
    Ok(())
}

fn write_all(fd: BorrowedFd, mut bytes: &[u8]) -> rustix::io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The pool, in the parent.

#[derive(Debug, Clone, Copy)]
struct Config {
    /// How the pool names itself in the output.
    label: &'static str,
    workers: usize,
    /// Tasks queued ahead on each worker.
    in_flight: usize,
    /// How long a busy worker may stay silent before it is killed.
    stuck_after: Duration,
    /// Print deaths and replacements (not in `--bench`).
    verbose: bool,
}

/// The parent's handle on one worker.
struct Worker {
    /// 1.. : the worker's name in the output, kept by its replacement.
    number: usize,
    child: Child,
    /// Write end of the task pipe, read end of the result pipe (non-blocking).
    tasks: OwnedFd,
    results: OwnedFd,
    /// How many frames both pipes surely hold (see `frames_that_fit`).
    pipe_frames: usize,
    /// Bytes of a result frame not complete yet.
    partial: Vec<u8>,
    /// Tasks sent and not answered, in the order sent (= the order run).
    in_flight: VecDeque<Task>,
    /// Since when a busy worker has been silent.
    busy_since: Instant,
}

impl Worker {
    fn start(number: usize, running: &AtomicU64, verbose: bool) -> Res<Worker> {
        let (task_r, task_w) = pipe_with(PipeFlags::CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let (result_r, result_w) =
            pipe_with(PipeFlags::CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let pipe_frames = frames_that_fit(fcntl_getpipe_size(&task_w)?, TASK_FRAME).min(
            frames_that_fit(fcntl_getpipe_size(&result_w)?, RESULT_FRAME),
        );
        running.store(0, Ordering::SeqCst);
        let child = spawn(&format!("worker {number}"), || {
            worker_main(task_r.as_fd(), result_w.as_fd(), running, verbose)
        })?;
        // The parent closes the worker's ends at once. While it held the
        // write end of the result pipe, it would never see EOF there when
        // the worker dies.
        drop(task_r);
        drop(result_w);
        fcntl_setfl(&result_r, OFlags::NONBLOCK).map_err(|e| format!("fcntl(O_NONBLOCK): {e}"))?;
        Ok(Worker {
            number,
            child,
            tasks: task_w,
            results: result_r,
            pipe_frames,
            partial: Vec::with_capacity(RESULT_FRAME),
            in_flight: VecDeque::new(),
            busy_since: Instant::now(),
        })
    }
}

/// How a worker ended: its number, PID and wait status.
#[derive(Debug, Clone, Copy)]
struct Exit {
    number: usize,
    pid: i32,
    status: WaitStatus,
}

/// How many frames of `frame` bytes a pipe of `capacity` bytes takes for
/// sure before a write blocks. The kernel keeps a pipe's data in pages (16
/// by default) and adds a small write to the last page only if it fits
/// whole, so a page holds page/frame frames (170 of 24 bytes, not 170.67);
/// and the first page may be partly read already: count one page less.
fn frames_that_fit(capacity: usize, frame: usize) -> usize {
    let page = rustix::param::page_size();
    (capacity / page).saturating_sub(1) * (page / frame)
}

/// What became of a task.
#[derive(Debug)]
enum Outcome {
    Done(u64),
    Failed(Box<Failure>),
}

/// The worker died while running the task: its wait status in words, and
/// how long it had been silent if the pool killed it for that.
#[derive(Debug)]
struct Failure {
    how: String,
    stuck: Option<Duration>,
}

/// A finished task, tagged with its id and the worker that ran it.
#[derive(Debug)]
struct Event {
    id: u64,
    op: Op,
    arg: u64,
    worker: u32,
    pid: i32,
    outcome: Outcome,
}

impl Event {
    fn value(&self) -> Res<u64> {
        match &self.outcome {
            Outcome::Done(v) => Ok(*v),
            Outcome::Failed(f) => Err(format!("task {} failed: {}", self.id, f.how).into()),
        }
    }
}

struct Pool<'s> {
    config: Config,
    workers: Vec<Worker>,
    /// One word per worker, shared with it: the task it runs (id+1), or 0.
    running: SharedSlice<AtomicU64>,
    /// Submitted, not yet sent to a worker.
    queue: VecDeque<Task>,
    /// Finished, not yet handed to the caller.
    events: VecDeque<Event>,
    /// Tasks queued ahead on a worker, and sent per write.
    max_in_flight: usize,
    chunk: usize,
    next_id: u64,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    signals: &'s SignalFd,
    replaced: usize,
    resubmitted: usize,
}

impl<'s> Pool<'s> {
    /// Fork the workers. If one fork fails, the ones already started are
    /// dropped, which kills and reaps them.
    fn start(config: &Config, signals: &'s SignalFd) -> Res<Pool<'s>> {
        let running = SharedSlice::new(config.workers, |_| AtomicU64::new(0))?;
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            workers.push(Worker::start(i + 1, &running[i], config.verbose)?);
        }
        let mut pool = Pool {
            config: *config,
            workers,
            running,
            queue: VecDeque::new(),
            events: VecDeque::new(),
            max_in_flight: 1,
            chunk: 1,
            next_id: 0,
            read_buf: vec![0; 64 * 1024],
            write_buf: Vec::new(),
            signals,
            replaced: 0,
            resubmitted: 0,
        };
        pool.set_in_flight(config.in_flight);
        Ok(pool)
    }

    fn size(&self) -> usize {
        self.workers.len()
    }

    fn pids(&self) -> Vec<i32> {
        self.workers.iter().map(|w| w.child.raw()).collect()
    }

    /// The most frames every worker's pipes surely hold (at least 1: one
    /// frame always fits in an empty pipe).
    fn pipe_frames(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.pipe_frames)
            .min()
            .unwrap_or(1)
            .max(1)
    }

    /// Queue up to `n` tasks ahead on each worker, sent one per write. At
    /// most what the pipes hold: then no write of the parent ever blocks.
    fn set_in_flight(&mut self, n: usize) {
        self.max_in_flight = n.clamp(1, self.pipe_frames());
        self.chunk = 1;
    }

    /// Send tasks in chunks of `n` per write, two chunks ahead per worker
    /// (what `multiprocessing.Pool.map`'s chunksize does).
    fn set_chunk(&mut self, n: usize) {
        self.chunk = n.clamp(1, (self.pipe_frames() / 2).max(1));
        self.max_in_flight = 2 * self.chunk;
    }

    fn submit(&mut self, op: Op, arg: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Task { id, op, arg });
        id
    }

    /// Queue every task; returns the first task's id (the others follow).
    fn submit_all(&mut self, tasks: &[(Op, u64)]) -> u64 {
        let first = self.next_id;
        for &(op, arg) in tasks {
            self.submit(op, arg);
        }
        first
    }

    /// Tasks queued or running.
    fn has_work(&self) -> bool {
        !self.queue.is_empty() || self.workers.iter().any(|w| !w.in_flight.is_empty())
    }

    fn is_idle(&self) -> bool {
        !self.has_work() && self.events.is_empty()
    }

    /// Run `tasks`; the results in submission order (Python's `Pool.map`).
    fn map(&mut self, tasks: &[(Op, u64)]) -> Res<Vec<Event>> {
        if !self.is_idle() {
            return Err("map: the pool is busy".into());
        }
        let first = self.submit_all(tasks);
        let mut all = Vec::with_capacity(tasks.len());
        loop {
            all.extend(self.events.drain(..));
            if !self.make_progress()? {
                break;
            }
        }
        if all.len() != tasks.len() {
            return Err(format!("map: {} results for {} tasks", all.len(), tasks.len()).into());
        }
        // Each result carries its task's id, which says where it belongs:
        // swap it there (each swap puts one result in its final place).
        for i in 0..all.len() {
            loop {
                let k = all[i].id.wrapping_sub(first) as usize;
                if k == i {
                    break;
                }
                if k >= all.len() || all[k].id == all[i].id {
                    return Err(
                        format!("map: a stray or repeated result for task {}", all[i].id).into(),
                    );
                }
                all.swap(i, k);
            }
        }
        Ok(all)
    }

    /// Run `tasks`, calling `each` with every result as soon as it arrives
    /// (Python's `concurrent.futures.as_completed`). Returns them in that
    /// order.
    fn as_completed(
        &mut self,
        tasks: &[(Op, u64)],
        mut each: impl FnMut(&Event),
    ) -> Res<Vec<Event>> {
        if !self.is_idle() {
            return Err("as_completed: the pool is busy".into());
        }
        self.submit_all(tasks);
        let mut all = Vec::with_capacity(tasks.len());
        while let Some(ev) = self.next_event()? {
            each(&ev);
            all.push(ev);
        }
        Ok(all)
    }

    /// The next finished task, or `None` once nothing is queued or running.
    fn next_event(&mut self) -> Res<Option<Event>> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Ok(Some(ev));
            }
            if !self.make_progress()? {
                return Ok(None);
            }
        }
    }

    /// One turn of the pool: send queued tasks, then wait for news from
    /// the workers. False when there was nothing left to do.
    fn make_progress(&mut self) -> Res<bool> {
        if !self.has_work() {
            return Ok(false);
        }
        self.dispatch()?;
        self.wait_for_workers()?;
        Ok(true)
    }

    /// Hand queued tasks to the least busy workers that have room.
    fn dispatch(&mut self) -> Res<()> {
        while !self.queue.is_empty() {
            let take = self.chunk.min(self.queue.len());
            let Some(w) = self
                .workers
                .iter_mut()
                .filter(|w| w.in_flight.len() + take <= self.max_in_flight)
                .min_by_key(|w| w.in_flight.len())
            else {
                return Ok(()); // every worker has enough queued
            };
            if w.in_flight.is_empty() {
                w.busy_since = Instant::now();
            }
            self.write_buf.clear();
            for t in self.queue.drain(..take) {
                t.encode(&mut self.write_buf);
                w.in_flight.push_back(t);
            }
            match write_all(w.tasks.as_fd(), &self.write_buf) {
                Ok(()) => {}
                // The worker is dead. Its tasks stay in flight; they go back
                // to the queue when its result pipe reports EOF.
                Err(Errno::PIPE) => {}
                Err(e) => {
                    return Err(format!("write(task pipe of worker {}): {e}", w.number).into())
                }
            }
        }
        Ok(())
    }

    /// Sleep in `poll` until a result pipe has data or EOF, a stop signal
    /// arrives, or a busy worker has been silent too long; handle what came.
    fn wait_for_workers(&mut self) -> Res<()> {
        let stuck_after = self.config.stuck_after;
        let now = Instant::now();
        let wake = self
            .workers
            .iter()
            .filter(|w| !w.in_flight.is_empty())
            .map(|w| (w.busy_since + stuck_after).saturating_duration_since(now))
            .min()
            .unwrap_or(stuck_after);
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = self
                .workers
                .iter()
                .map(|w| PollFd::new(&w.results, PollFlags::IN))
                .collect();
            fds.push(PollFd::new(self.signals, PollFlags::IN));
            match poll(&mut fds, Some(&timespec(wake))) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(format!("poll: {e}").into()),
            }
            fds.iter().map(|f| !f.revents().is_empty()).collect()
        };
        if ready[self.workers.len()] {
            take_signal(self.signals)?;
        }
        for (i, &has_news) in ready.iter().enumerate().take(self.workers.len()) {
            // Data, EOF or both: read what is there; EOF means the worker is gone.
            if has_news && !self.read_results(i)? {
                self.replace(i, None)?;
            }
        }
        let now = Instant::now();
        for i in 0..self.workers.len() {
            let w = &self.workers[i];
            let silent = now.duration_since(w.busy_since);
            if !w.in_flight.is_empty() && silent >= stuck_after {
                w.child.signal(Signal::SIGKILL)?;
                self.replace(i, Some(silent))?;
            }
        }
        Ok(())
    }

    /// Read every result frame waiting in worker `i`'s pipe. Returns false
    /// at EOF: every write end is closed, so the worker is gone.
    fn read_results(&mut self, i: usize) -> Res<bool> {
        let w = &mut self.workers[i];
        loop {
            let kept = w.partial.len();
            self.read_buf[..kept].copy_from_slice(&w.partial);
            let room = self.read_buf.len() - kept;
            let n = match rustix::io::read(&w.results, &mut self.read_buf[kept..]) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(Errno::AGAIN) => return Ok(true),
                Err(Errno::INTR) => continue,
                Err(e) => {
                    return Err(format!("read(result pipe of worker {}): {e}", w.number).into())
                }
            };
            let have = kept + n;
            let whole = have - have % RESULT_FRAME;
            for frame in self.read_buf[..whole].chunks_exact(RESULT_FRAME) {
                let (id, value) = (word(frame, 0), word(frame, 1));
                // A worker runs its tasks in the order it got them, so a
                // result answers the oldest task in flight.
                match w.in_flight.pop_front() {
                    Some(t) if t.id == id => self.events.push_back(Event {
                        id,
                        op: t.op,
                        arg: t.arg,
                        worker: w.number as u32,
                        pid: w.child.raw(),
                        outcome: Outcome::Done(value),
                    }),
                    other => {
                        return Err(format!(
                            "worker {} answered task {id}, expected {:?}",
                            w.number,
                            other.map(|t| t.id)
                        )
                        .into())
                    }
                }
            }
            w.partial.clear();
            w.partial.extend_from_slice(&self.read_buf[whole..have]);
            w.busy_since = Instant::now();
            if n < room {
                return Ok(true); // a short read emptied the pipe
            }
        }
    }

    /// Worker `i` is gone (or was just sent SIGKILL): reap it, fail the task
    /// it was running, resubmit the others it had not answered, and start a
    /// new worker in its place.
    fn replace(&mut self, i: usize, stuck: Option<Duration>) -> Res<()> {
        let child = &mut self.workers[i].child;
        let status = match child.wait_timeout(SYSTEM_TIMEOUT)? {
            Some(s) => s,
            None => {
                // EOF although it runs: it closed its pipe itself. Kill it.
                child.signal(Signal::SIGKILL)?;
                child.wait()?
            }
        };
        // Results it wrote before it died are still in the pipe.
        self.read_results(i)?;
        let running = self.running[i].swap(0, Ordering::SeqCst);
        let w = &mut self.workers[i];
        let (number, pid) = (w.number, w.child.raw());
        let (failed, requeue): (Vec<Task>, Vec<Task>) =
            w.in_flight.drain(..).partition(|t| t.id + 1 == running);
        let how = describe(status);
        if self.config.verbose {
            let why = match stuck {
                Some(d) => format!(
                    "silent for {:.1} s with work to do, so the pool killed it: {how}",
                    d.as_secs_f64()
                ),
                None => how.clone(),
            };
            let doing = match failed.first() {
                Some(t) => format!("it was running task {}", t.id),
                None => "it was between tasks".into(),
            };
            say!(
                "{}: worker {number} (pid {pid}) died: {why}; {doing}",
                self.config.label
            );
            if !requeue.is_empty() {
                let ids: Vec<u64> = requeue.iter().map(|t| t.id).collect();
                say!(
                    "{}: tasks {} were queued on it without a result: resubmitted",
                    self.config.label,
                    list(&ids)
                );
            }
        }
        for t in failed {
            self.events.push_back(Event {
                id: t.id,
                op: t.op,
                arg: t.arg,
                worker: number as u32,
                pid,
                outcome: Outcome::Failed(Box::new(Failure {
                    how: how.clone(),
                    stuck,
                })),
            });
        }
        self.resubmitted += requeue.len();
        for t in requeue.into_iter().rev() {
            self.queue.push_front(t);
        }
        let new = Worker::start(number, &self.running[i], self.config.verbose)?;
        if self.config.verbose {
            say!(
                "{}: started worker {number} (pid {}) in its place",
                self.config.label,
                new.child.raw()
            );
        }
        // The old handle goes: already reaped, its pipes are closed now.
        self.workers[i] = new;
        self.replaced += 1;
        Ok(())
    }

    /// Send the queued tasks out and wait until every worker is running one
    /// (its shared word is set), for the terminate demo.
    fn wait_until_all_busy(&mut self) -> Res<()> {
        self.dispatch()?;
        let deadline = Instant::now() + SYSTEM_TIMEOUT;
        while self.running.iter().any(|r| r.load(Ordering::SeqCst) == 0) {
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: not every worker started a task within {SYSTEM_TIMEOUT:?}",
                    self.config.label
                )
                .into());
            }
            pause(self.signals, Duration::from_millis(1))?;
        }
        Ok(())
    }

    /// Python's `close()` + `join()`: no new tasks; the queued ones still
    /// run; then every task pipe is closed, each worker reads EOF and exits.
    /// Returns the results and how each worker ended.
    fn close(mut self) -> Res<(Vec<Event>, Vec<Exit>)> {
        let mut done = Vec::new();
        while let Some(ev) = self.next_event()? {
            done.push(ev);
        }
        let mut leaving = Vec::new();
        for w in std::mem::take(&mut self.workers) {
            drop(w.tasks); // EOF for this worker
            leaving.push((w.number, w.child));
        }
        let mut exits = Vec::new();
        for (number, mut child) in leaving {
            // If it does not leave in time, dropping `child` kills and reaps it.
            let status = child.wait_timeout(SYSTEM_TIMEOUT)?.ok_or_else(|| {
                format!("worker {number} (pid {}) still runs after EOF", child.raw())
            })?;
            exits.push(Exit {
                number,
                pid: child.raw(),
                status,
            });
        }
        Ok((done, exits))
    }

    /// Python's `terminate()`: stop now. SIGKILL rather than SIGTERM: it
    /// cannot be caught or ignored, so "now" holds for a stuck worker too.
    /// Returns how each worker ended and how many tasks were dropped
    /// unfinished.
    fn terminate(mut self) -> Res<(Vec<Exit>, usize)> {
        let dropped = self.queue.len()
            + self
                .workers
                .iter()
                .map(|w| w.in_flight.len())
                .sum::<usize>();
        for w in &self.workers {
            w.child.signal(Signal::SIGKILL)?;
        }
        let mut exits = Vec::new();
        for w in &mut self.workers {
            let status = w
                .child
                .wait_timeout(SYSTEM_TIMEOUT)?
                .ok_or_else(|| format!("worker {} survived SIGKILL", w.number))?;
            exits.push(Exit {
                number: w.number,
                pid: w.child.raw(),
                status,
            });
        }
        Ok((exits, dropped))
    }
}

// Dropping a pool without `close` or `terminate` (an error, Ctrl-C) drops
// each worker's `Child`, which kills and reaps it: nothing is left behind.

// ---------------------------------------------------------------------------
// Stop signals.

/// A stop request (Ctrl-C or SIGTERM), carried up to `main`.
#[derive(Debug)]
struct Interrupted(Signal);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interrupted by {}", self.0)
    }
}

impl Error for Interrupted {}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Block SIGINT and SIGTERM and read them from a descriptor instead
/// (`signalfd`), which the pool polls beside its pipes. No handler runs in
/// the middle of the pool's bookkeeping, and no signal slips in between a
/// check and the `poll` that would sleep through it.
fn block_stop_signals() -> Res<SignalFd> {
    let set = stop_signals();
    set.thread_block()
        .map_err(|e| format!("sigprocmask(SIG_BLOCK): {e}"))?;
    Ok(
        SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd: {e}"))?,
    )
}

/// `Err(Interrupted)` if a stop signal is pending.
fn take_signal(signals: &SignalFd) -> Res<()> {
    match signals.read_signal() {
        Ok(None) => Ok(()),
        Ok(Some(info)) => Err(Box::new(Interrupted(
            Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGINT),
        ))),
        Err(e) => Err(format!("read(signalfd): {e}").into()),
    }
}

/// Sleep for `d`, unless a stop signal comes first.
fn pause(signals: &SignalFd, d: Duration) -> Res<()> {
    let deadline = Instant::now() + d;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(signals, PollFlags::IN)];
        match poll(&mut fds, Some(&timespec(left))) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(format!("poll: {e}").into()),
        }
        take_signal(signals)?;
        if left.is_zero() {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------
// Checks on the running system, and small helpers.

/// Every worker is a child of this process, asleep (state S) in `read` on
/// its empty task pipe.
fn workers_are_idle_children(pids: &[i32], me: i32) -> Res<()> {
    for &pid in pids {
        let seen = procfs::wait_for(pid, SYSTEM_TIMEOUT, |s| s.is_some_and(|s| s.state == 'S'))?;
        match seen {
            Ok(Some(s)) if s.ppid == me => {}
            Ok(s) | Err(s) => {
                return Err(format!(
                    "worker pid {pid}: expected a sleeping child of {me}, /proc says {s:?}"
                )
                .into())
            }
        }
    }
    say!("/proc: the {} workers are children of pid {me}, asleep (state S) in read() on their task pipes", pids.len());
    Ok(())
}

/// No child of this process is left, running or zombie.
fn no_children_left() -> Res<()> {
    let me = std::process::id() as i32;
    let left = procfs::processes(|s| s.ppid == me)?;
    if left.is_empty() {
        return Ok(());
    }
    let who: Vec<String> = left
        .iter()
        .map(|s| format!("{} (state {})", s.pid, s.state))
        .collect();
    Err(format!("children left behind: {}", who.join(", ")).into())
}

/// The `n` for which `sum_to(n)` takes about `target` on this machine now.
fn calibrate(target: Duration) -> u64 {
    let mut n = 100_000u64;
    loop {
        let start = Instant::now();
        black_box(sum_to(black_box(n)));
        let took = start.elapsed();
        if took >= Duration::from_millis(5) || n >= 1 << 34 {
            return ((n as f64 * target.as_secs_f64() / took.as_secs_f64().max(1e-9)) as u64)
                .max(1000);
        }
        n *= 4;
    }
}

fn timed<T>(f: impl FnOnce() -> Res<T>) -> Res<(T, Duration)> {
    let start = Instant::now();
    let v = f()?;
    Ok((v, start.elapsed()))
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: d.subsec_nanos() as _,
    }
}

fn list<T: ToString>(ids: &[T]) -> String {
    let shown: Vec<String> = ids.iter().take(12).map(|i| i.to_string()).collect();
    if ids.len() > 12 {
        format!("{}, ... ({} in all)", shown.join(", "), ids.len())
    } else {
        shown.join(", ")
    }
}

// ---------------------------------------------------------------------------
// --bench: figures to compare with Python's pools (mp_bench.py pool, cpu).

/// Tasks per second through `pool.map(tasks)`, every result checked:
/// the average over at least 10 maps and 0.2 s, so that one preemption on
/// a busy machine does not decide the figure.
fn map_rate(pool: &mut Pool, tasks: &[(Op, u64)]) -> Res<f64> {
    let (mut maps, mut took) = (0, Duration::ZERO);
    while maps < 10 || took < Duration::from_millis(200) {
        let (got, t) = timed(|| pool.map(tasks))?;
        check_results("bench", &got, tasks)?;
        (maps, took) = (maps + 1, took + t);
    }
    Ok((maps * tasks.len()) as f64 / took.as_secs_f64())
}

fn bench(n: usize, signals: &SignalFd) -> Res<()> {
    let emit = |name: &str, value: f64, unit: &str| {
        let digits = if value >= 1000.0 { 0 } else { 3 };
        println!("{name}\t{value:.digits$}\t{unit}");
    };
    let squares: Vec<(Op, u64)> = (0..n as u64).map(|x| (Op::Square, x)).collect();
    let config = Config {
        label: "bench pool",
        workers: 2,
        in_flight: BENCH_IN_FLIGHT,
        stuck_after: SYSTEM_TIMEOUT,
        verbose: false,
    };
    let mut pool = Pool::start(&config, signals)?;
    pool.map(&squares[..2])?; // both workers up; start-up is not timed

    // One task per message (Python: Pool(2).map(square, xs, chunksize=1)).
    emit("rs.pool2_tasks", map_rate(&mut pool, &squares)?, "tasks/s");

    // Chunks of len / (4 * workers), rounded up: Python's default chunksize.
    pool.set_chunk(n.div_ceil(4 * config.workers));
    emit(
        "rs.pool2_map_chunked",
        map_rate(&mut pool, &squares)?,
        "tasks/s",
    );

    // CPU-bound tasks of about 20 ms, 1 worker against 2 (in flight 1).
    let count = (n / 250).clamp(4, 40);
    let tasks = vec![(Op::SumTo, calibrate(CPU_TASK)); count];
    let mut solo = Pool::start(
        &Config {
            workers: 1,
            ..config
        },
        signals,
    )?;
    solo.set_in_flight(1);
    pool.set_in_flight(1);
    let (one, t1) = timed(|| solo.map(&tasks))?;
    let (two, t2) = timed(|| pool.map(&tasks))?;
    check_results("bench, cpu 1", &one, &tasks)?;
    check_results("bench, cpu 2", &two, &tasks)?;
    emit(
        "rs.cpu_speedup_2_vs_1_workers",
        t1.as_secs_f64() / t2.as_secs_f64(),
        "x",
    );
    solo.terminate()?;
    pool.terminate()?;
    take_signal(signals)
}
