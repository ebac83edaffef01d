//! Demonstrate how producer and consumer processes pass messages through a
//! bounded POSIX message queue: a full queue holds the producers back
//! (backpressure), every wait has a timeout, higher priorities come out
//! first, and one sentinel per consumer shuts the consumers down.
//!
//! First a short demo on a queue of its own: four messages sent with
//! priorities 1, 9, 5 and 5 come out as 9, 5, 5, 1 (equal priorities in the
//! order they were sent). Then the main run. The parent creates a queue that
//! holds `--capacity` messages (3 by default) and unlinks its name at once:
//! the children inherit the open descriptor through `fork`, so nobody needs
//! the name again and not even a SIGKILL can leave it in `/dev/mqueue`. It
//! forks the consumers, which wait at a gate, and the producers, which send
//! `--items` numbered items each (`p2#3` is producer 2's third item). Soon a
//! send finds the queue full: that producer says "queue full, waiting",
//! opens the consumers' gate (the first time) and blocks in a timed send
//! until a consumer makes room. When every producer has exited, the parent
//! sends one sentinel per consumer. Each consumer writes down what it got in
//! shared memory, and the parent checks that every item arrived exactly once
//! and that each consumer got each producer's items in the order sent.
//!
//! Key points:
//! - A message queue is a kernel object with a fixed length (`mq_maxmsg`)
//!   and a fixed largest message (`mq_msgsize`). A message goes in and comes
//!   out whole, by one process, with no lock of our own: nothing to frame,
//!   nothing torn, no item taken twice (compare a pipe, a byte stream).
//! - Backpressure is the bound at work: a full queue makes the sender wait,
//!   so fast producers cannot run ahead of slow consumers and pile up memory.
//!   The length is capped by `/proc/sys/fs/mqueue/msg_max` (10 by default);
//!   only a process with CAP_SYS_RESOURCE may go past it.
//! - Every wait has a deadline: `mq_timedsend` and `mq_timedreceive` give up
//!   with ETIMEDOUT, so a dead peer makes an error, not a hang. They take a
//!   wall-clock deadline, so the lesson waits in 100 ms slices and measures
//!   the real timeout on CLOCK_MONOTONIC.
//! - Priorities reorder the queue: the highest waiting message comes out
//!   first, and within a priority, first in, first out.
//! - The gate exists only for the lesson: it makes the first full queue
//!   certain, on a fast machine too, instead of a matter of luck.
//!
//! What to observe, in another terminal while it runs (`--pace 5` slows it):
//! `ls /dev/mqueue` is empty, yet `ls -l /proc/<parent pid>/fd` shows the
//! queue as `/queue_communication-<pid>-<random> (deleted)`: a queue lives
//! as long as a descriptor is open, like an unlinked file. `cat` that
//! `/proc/<parent pid>/fd/<n>` and the kernel says `QSIZE:36`: the bytes
//! waiting (three 12-byte messages). `ps -o pid,ppid,stat,wchan:24,comm
//! --ppid <parent pid>` shows a producer asleep (`S`) in `wq_sleep`, the
//! queue's wait, while the queue is full. Lines of different processes
//! interleave: a consumer's "got p1#4" may come before the producer's "sent
//! p1#4", which prints only once its send has returned.
//!
//! The pitfall: stopping the consumers. Each consumer stops at the first
//! sentinel it receives, so N consumers need N sentinels: with one, the
//! others wait forever (or, here, until their timeout). And the sentinels go
//! last: sent while a producer still runs, or at a higher priority than the
//! items, a sentinel overtakes items still in the queue, and they are lost.
//!
//! Seed example: 05, queue communication. The C++ opens the fixed name
//! `/my_message_queue` with mode 0666 and no `O_EXCL`, and unlinks it only
//! at the very end, so a crash leaves it behind; its consumer opens the
//! queue after `fork` and may run before the producer created it (ENOENT);
//! and it receives into a 4-byte buffer from a queue whose messages may be
//! 8192 bytes, which fails at once with EMSGSIZE, which the loop takes for
//! the end: the consumer handles nothing and says nothing. The Python uses
//! an unbounded `multiprocessing.Queue` (no backpressure) with one consumer
//! and one `None` sentinel. Neither checks what arrived.
//!
//! Run with:
//! ```text
//! cargo run -p queue_communication
//! cargo run -p queue_communication -- --capacity 1 --producers 3 --consumers 2
//! ```
//!
//! Try it:
//! - `--capacity 1`: every send after the first waits for a consumer.
//!   `--capacity 11` is refused before anything starts: more than msg_max.
//! - Set `STOP_PRIORITY` to 1 and run at pace 1: the sentinels overtake the
//!   items still queued, and the lesson names the items it lost.
//! - While it runs at `--pace 5`, `kill -9` one producer: the parent reports
//!   how it died and exits 1, and `ls /dev/mqueue` stays empty.
//!
//! See also: `pipe_communication` (a byte stream between two processes),
//! `process_semaphore` (the counting a bounded queue does for you).

use std::error::Error;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn};
use common::names;
use common::opts::{Args, Opt, Pace, Spec};
use common::shm::{Shared, SharedSlice};
use common::{describe, say, warn, Semaphore};
use nix::errno::Errno;
use nix::mqueue::{
    mq_attr_member_t, mq_close, mq_getattr, mq_open, mq_timedreceive, mq_unlink, MQ_OFlag, MqAttr,
    MqdT,
};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};

const SPEC: Spec = Spec {
    name: "queue_communication",
    about: "Demonstrate how processes pass messages through a bounded POSIX message queue.",
    options: &[
        Opt::int("producers", "producer processes", 2, 1, 8),
        Opt::int("consumers", "consumer processes", 2, 1, 8),
        Opt::int("items", "items each producer sends", 5, 1, 500),
        Opt::int(
            "capacity",
            "messages the queue holds; at most /proc/sys/fs/mqueue/msg_max, usually 10",
            3,
            1,
            HARD_MSGMAX,
        ),
    ],
};

/// The kernel's own ceiling on a queue's length (`HARD_MSGMAX`), which even
/// CAP_SYS_RESOURCE cannot pass. The limit that applies to us is
/// `msg_max`, read at run time.
const HARD_MSGMAX: u64 = 65536;
const MSG_MAX_PATH: &str = "/proc/sys/fs/mqueue/msg_max";

/// Items and sentinels share one priority, so the sentinels, sent last,
/// come out last. Make it 1 to see sentinels overtake items (Try it).
const ITEM_PRIORITY: u32 = 0;
const STOP_PRIORITY: u32 = 0;

/// Pauses for a human watching, scaled by the pace: consumers are slower
/// than producers, so the queue fills again and again.
const PRODUCE_SECS: f64 = 0.2;
const CONSUME_SECS: f64 = 1.0;

/// How long the system gets for what a wait waits for, on a loaded machine.
/// A safety floor, not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse(&SPEC);
    let (capacity, msg_max) = capacity_within_msg_max(&args);
    if let Err(e) = run(&args, capacity, msg_max) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

/// `--capacity`, checked against the limit of this machine. A range in
/// `Spec` is fixed when the program is built; `msg_max` is known only now.
/// Like any bad option: one line and exit 2, before anything starts.
/// Returns the capacity and the limit.
fn capacity_within_msg_max(args: &Args) -> (usize, usize) {
    let capacity = args.usize("capacity");
    let msg_max = match read_msg_max() {
        Ok(m) => m,
        Err(e) => {
            warn!("error: {e}");
            std::process::exit(1);
        }
    };
    if capacity > msg_max {
        eprintln!(
            "{}: --capacity: {capacity} is more than {MSG_MAX_PATH} allows ({msg_max}) (see --help)",
            SPEC.name
        );
        std::process::exit(2);
    }
    (capacity, msg_max)
}

fn read_msg_max() -> io::Result<usize> {
    let text = std::fs::read_to_string(MSG_MAX_PATH)
        .map_err(|e| io::Error::new(e.kind(), format!("read {MSG_MAX_PATH}: {e}")))?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::other(format!("{MSG_MAX_PATH}: not a number: {text:?}")))
}

/// What the run is made of, from the options.
struct Plan {
    producers: u32,
    consumers: u32,
    items: u32,
    capacity: usize,
    pace: Pace,
    /// The longest any single wait may take before it counts as a dead or
    /// stuck peer: the floor plus every pause the pace adds.
    limit: Duration,
}

impl Plan {
    fn total(&self) -> usize {
        self.producers as usize * self.items as usize
    }
}

fn run(args: &Args, capacity: usize, msg_max: usize) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    let mut plan = Plan {
        producers: args.int("producers") as u32,
        consumers: args.int("consumers") as u32,
        items: args.int("items") as u32,
        capacity,
        pace,
        limit: SYSTEM_TIMEOUT,
    };
    plan.limit += pace.secs(plan.total() as f64 * (PRODUCE_SECS + CONSUME_SECS));
    say!(
        "{} producers x {} items, {} consumers, a queue of {} (msg_max here: {}); gate semaphore: {} back end",
        plan.producers,
        plan.items,
        plan.consumers,
        plan.capacity,
        msg_max,
        common::BACKEND
    );

    show_priorities(msg_max)?;

    // The queue: created exclusively, private to this user, and unlinked
    // at once. Every child gets the descriptor by `fork`, so from here on
    // the name is not needed, and a crash cannot leave it behind.
    let name = names::unique("queue_communication")?;
    let queue = Queue::create(&name, plan.capacity)?;
    mq_unlink(name.as_str()).map_err(|e| sys("mq_unlink", e))?;
    let attr = queue.attr()?;
    // Check what was made, not what was asked for: private means 0600.
    let mode = queue.mode()?;
    if mode != 0o600 {
        return Err(format!("{name} was created with mode {mode:04o}, not 0600").into());
    }
    say!(
        "created {name} (mq_maxmsg {}, mq_msgsize {}, mode {mode:04o}, says fstat) and unlinked it before forking anyone",
        attr.maxmsg(),
        attr.msgsize()
    );
    if attr.maxmsg() != plan.capacity as mq_attr_member_t {
        return Err(format!(
            "asked for {} messages, got {}",
            plan.capacity,
            attr.maxmsg()
        )
        .into());
    }
    match mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None) {
        Err(Errno::ENOENT) => {
            say!("the name is gone (mq_open: ENOENT); our open descriptor keeps the queue alive")
        }
        Err(e) => return Err(sys("mq_open", e).into()),
        Ok(other) => {
            let _ = mq_close(other);
            return Err(format!("{name} still opens after mq_unlink").into());
        }
    }
    say!(
        "see it yourself: ls -l /proc/{}/fd; ps -o pid,ppid,stat,wchan:24,comm --ppid {}",
        std::process::id(),
        std::process::id()
    );

    // Shared memory for what is not a message: the gate the consumers wait
    // at, a few counters, and where each consumer writes what it received.
    let gate = Semaphore::shared(0)?;
    let board = Shared::new(Board {
        gate_open: AtomicBool::new(false),
        full: AtomicU32::new(0),
        deepest: AtomicUsize::new(0),
    })?;
    let log = Log::new(plan.consumers as usize, plan.total())?;

    // `spawn` flushes stdout before it forks, and each child leaves with
    // `_exit`: no destructor runs twice (none closes our queue or unmaps
    // our memory), and nothing buffered is printed twice.
    let mut consumers = Vec::new();
    for c in 1..=plan.consumers {
        let child = spawn(&format!("consumer {c}"), || {
            consume(c, &plan, &queue, &gate, &log)
        })?;
        consumers.push((c, child));
    }
    let mut producers = Vec::new();
    for p in 1..=plan.producers {
        let child = spawn(&format!("producer {p}"), || {
            produce(p, &plan, &queue, &gate, &board)
        })?;
        producers.push((p, child));
    }

    // Sentinels only after the last producer has exited: sent earlier, a
    // sentinel would stop a consumer while items are still coming. (An
    // error return drops the `Child` handles, which kills and reaps them.)
    for (p, child) in &mut producers {
        must_succeed(&format!("producer {p}"), child, plan.limit)?;
    }
    if open_gate(&board, &gate, plan.consumers)? {
        say!(
            "the queue never filled ({} items fit in {}): opening the consumers' gate",
            plan.total(),
            plan.capacity
        );
    }
    for _ in 0..plan.consumers {
        // The queue may be full: the parent waits for room like a producer.
        if !queue.send_timeout(&Message::Stop.encode(), STOP_PRIORITY, plan.limit)? {
            return Err(format!("mq_timedsend: no room for a sentinel in {:?}", plan.limit).into());
        }
    }
    say!(
        "all producers done: sent {} sentinels, one per consumer, behind the items",
        plan.consumers
    );
    for (c, child) in &mut consumers {
        must_succeed(&format!("consumer {c}"), child, plan.limit)?;
    }

    // The proof, from what the consumers wrote down.
    let got: Vec<Vec<(u32, u32)>> = (0..plan.consumers as usize).map(|c| log.read(c)).collect();
    for (c, items) in got.iter().enumerate() {
        say!("consumer {} received {} item(s)", c + 1, items.len());
    }
    check_deliveries(plan.producers, plan.items, &got)?;
    say!(
        "exactly once: {} items produced ({} producers x {}), {} received, 0 lost, 0 twice",
        plan.total(),
        plan.producers,
        plan.items,
        got.iter().map(Vec::len).sum::<usize>()
    );
    say!("in order: every consumer got each producer's items in the order they were sent");

    let full = board.full.load(Ordering::SeqCst);
    let deepest = board.deepest.load(Ordering::SeqCst);
    if deepest > plan.capacity {
        return Err(format!(
            "the queue held {deepest} messages, capacity {}",
            plan.capacity
        )
        .into());
    }
    if plan.total() > plan.capacity && full == 0 {
        return Err("more items than room, yet no send ever found the queue full".into());
    }
    say!(
        "backpressure: a send found the queue full {full} times and waited; \
         it never held more than {} (deepest seen {deepest})",
        plan.capacity
    );

    // Nothing may be left in the queue, and a receive on an empty queue
    // ends at its deadline: the guard every consumer's receive has.
    let left = queue.attr()?.curmsgs();
    if left != 0 {
        return Err(format!("{left} messages are still in the queue").into());
    }
    let wait = Duration::from_millis(200);
    let started = Instant::now();
    match queue.receive_timeout(wait)? {
        None => say!(
            "the queue is empty: a receive gave up after {:.2} s with ETIMEDOUT instead of hanging",
            started.elapsed().as_secs_f64()
        ),
        Some((m, _)) => return Err(format!("found {m:?} in a queue said to be empty").into()),
    }
    say!("all checks passed");
    Ok(())
}

/// Wait for a child (at most `limit`) and require exit status 0.
fn must_succeed(
    who: &str,
    child: &mut common::Child,
    limit: Duration,
) -> Result<(), Box<dyn Error>> {
    match child.wait_timeout(limit)? {
        Some(status) if exit_code(status) == Some(0) => Ok(()),
        Some(status) => Err(format!("{who} {}", describe(status)).into()),
        None => Err(format!("{who} still running after {limit:?}").into()),
    }
}

/// Four messages with mixed priorities into a queue of their own; they come
/// out highest priority first, and first in, first out within a priority.
fn show_priorities(msg_max: usize) -> Result<(), Box<dyn Error>> {
    const SENT: [(&str, u32); 4] = [
        ("routine", 1),
        ("urgent", 9),
        ("normal", 5),
        ("normal, sent later", 5),
    ];
    // A machine may allow fewer than four messages per queue.
    let n = SENT.len().min(msg_max);
    let name = names::unique("queue_communication")?;
    let queue = Queue::create(&name, n)?;
    // Only this process uses it: unlink the name right away.
    mq_unlink(name.as_str()).map_err(|e| sys("mq_unlink", e))?;
    for (i, (label, priority)) in SENT[..n].iter().enumerate() {
        let msg = Message::Item {
            producer: 0,
            seq: i as u32,
        };
        if !queue.try_send(&msg.encode(), *priority)? {
            return Err("priority demo: the queue is full".into());
        }
        say!("priorities: sent {label:?} with priority {priority}");
    }
    let mut order = Vec::new();
    for _ in 0..n {
        match queue.receive_timeout(SYSTEM_TIMEOUT)? {
            Some((Message::Item { seq, .. }, priority)) if (seq as usize) < n => {
                say!(
                    "priorities: received {:?} (priority {priority})",
                    SENT[seq as usize].0
                );
                order.push(seq as usize);
            }
            other => return Err(format!("priority demo: unexpected {other:?}").into()),
        }
    }
    // What the queue promises: a stable sort by priority, highest first.
    let mut expected: Vec<usize> = (0..n).collect();
    expected.sort_by_key(|&i| std::cmp::Reverse(SENT[i].1));
    if order != expected {
        return Err(format!("priority demo: came out as {order:?}, expected {expected:?}").into());
    }
    say!("priorities: highest first, and in the order sent within a priority");
    Ok(())
}

fn produce(
    me: u32,
    plan: &Plan,
    queue: &Queue,
    gate: &Semaphore,
    board: &Board,
) -> Result<(), Box<dyn Error>> {
    for seq in 1..=plan.items {
        let msg = Message::Item { producer: me, seq }.encode();
        // First a send that does not wait (its deadline has passed
        // already), so that we know, and can say, when the queue is full.
        let waited = !queue.try_send(&msg, ITEM_PRIORITY)?;
        if waited {
            board.full.fetch_add(1, Ordering::SeqCst);
            say!("queue full, waiting to send p{me}#{seq}");
            if open_gate(board, gate, plan.consumers)? {
                say!("the queue filled up for the first time: opened the consumers' gate");
            }
            if !queue.send_timeout(&msg, ITEM_PRIORITY, plan.limit)? {
                return Err(format!(
                    "mq_timedsend: still full after {:?}: are the consumers alive?",
                    plan.limit
                )
                .into());
            }
        }
        // A snapshot: consumers may take messages at any moment.
        let depth = queue.attr()?.curmsgs() as usize;
        board.deepest.fetch_max(depth, Ordering::SeqCst);
        say!(
            "sent p{me}#{seq}{} (queue holds {depth} of {})",
            if waited { " after waiting" } else { "" },
            plan.capacity
        );
        plan.pace.sleep(PRODUCE_SECS);
    }
    Ok(())
}

fn consume(
    me: u32,
    plan: &Plan,
    queue: &Queue,
    gate: &Semaphore,
    log: &Log,
) -> Result<(), Box<dyn Error>> {
    if !gate.wait_timeout(plan.limit)? {
        return Err(format!("the gate stayed closed for {:?}", plan.limit).into());
    }
    let mut n = 0;
    loop {
        match queue.receive_timeout(plan.limit)? {
            None => {
                return Err(format!(
                    "mq_timedreceive: nothing for {:?}: a producer died, or a sentinel is missing",
                    plan.limit
                )
                .into())
            }
            Some((Message::Stop, _)) => {
                say!("got a sentinel after {n} item(s): stopping");
                return Ok(());
            }
            Some((Message::Item { producer, seq }, _)) => {
                log.record(me as usize - 1, n, producer, seq)?;
                n += 1;
                say!("got p{producer}#{seq}");
                plan.pace.sleep(CONSUME_SECS);
            }
        }
    }
}

/// Let the consumers start: the first caller posts one permit per consumer,
/// later callers do nothing. Returns whether this call opened it.
fn open_gate(board: &Board, gate: &Semaphore, consumers: u32) -> io::Result<bool> {
    if board.gate_open.swap(true, Ordering::SeqCst) {
        return Ok(false);
    }
    for _ in 0..consumers {
        gate.post()?;
    }
    Ok(true)
}

/// Counters every process updates, in a shared mapping.
struct Board {
    gate_open: AtomicBool,
    /// Sends that found the queue full.
    full: AtomicU32,
    /// The most messages seen in the queue right after a send.
    deepest: AtomicUsize,
}

/// What each consumer received, in order: `total` slots per consumer (one
/// consumer might get every item) and a count, in shared memory.
struct Log {
    slots: SharedSlice<AtomicU64>,
    counts: SharedSlice<AtomicUsize>,
    total: usize,
}

impl Log {
    fn new(consumers: usize, total: usize) -> io::Result<Log> {
        Ok(Log {
            slots: SharedSlice::new(consumers * total, |_| AtomicU64::new(0))?,
            counts: SharedSlice::new(consumers, |_| AtomicUsize::new(0))?,
            total,
        })
    }

    /// Consumer `c` (from 0) writes its `n`-th item (from 0).
    fn record(&self, c: usize, n: usize, producer: u32, seq: u32) -> io::Result<()> {
        if n >= self.total {
            return Err(io::Error::other(format!(
                "received more than the {} items produced",
                self.total
            )));
        }
        let packed = (u64::from(producer) << 32) | u64::from(seq);
        self.slots[c * self.total + n].store(packed, Ordering::Relaxed);
        // Release: whoever reads the count sees the slots written before it.
        self.counts[c].store(n + 1, Ordering::Release);
        Ok(())
    }

    /// What consumer `c` (from 0) received, in order.
    fn read(&self, c: usize) -> Vec<(u32, u32)> {
        let n = self.counts[c].load(Ordering::Acquire).min(self.total);
        self.slots[c * self.total..c * self.total + n]
            .iter()
            .map(|s| {
                let packed = s.load(Ordering::Relaxed);
                ((packed >> 32) as u32, packed as u32)
            })
            .collect()
    }
}

/// Every item `p#s` (producer 1..=producers, seq 1..=items) must appear
/// exactly once over all consumers, and within each consumer, each
/// producer's items must come in increasing order. (Across consumers there
/// is no order to check: two consumers handle their items at the same time.)
fn check_deliveries(producers: u32, items: u32, got: &[Vec<(u32, u32)>]) -> Result<(), String> {
    let mut seen = vec![vec![0u32; items as usize]; producers as usize];
    let mut problems = Vec::new();
    for (c, list) in got.iter().enumerate() {
        let mut last = vec![0u32; producers as usize];
        for &(p, s) in list {
            if p == 0 || p > producers || s == 0 || s > items {
                problems.push(format!(
                    "consumer {} got p{p}#{s}, which nobody sent",
                    c + 1
                ));
                continue;
            }
            let (pi, si) = (p as usize - 1, s as usize - 1);
            seen[pi][si] += 1;
            if s <= last[pi] {
                problems.push(format!(
                    "consumer {} got p{p}#{s} after p{p}#{}",
                    c + 1,
                    last[pi]
                ));
            }
            last[pi] = last[pi].max(s);
        }
    }
    for (pi, counts) in seen.iter().enumerate() {
        for (si, &n) in counts.iter().enumerate() {
            let item = format!("p{}#{}", pi + 1, si + 1);
            match n {
                1 => {}
                0 => problems.push(format!("{item} was lost")),
                n => problems.push(format!("{item} arrived {n} times")),
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let shown = problems.len().min(5);
    Err(format!(
        "{} problem(s): {}{}",
        problems.len(),
        problems[..shown].join("; "),
        if problems.len() > shown { "; ..." } else { "" }
    ))
}

/// One message on the queue: an item, or the sentinel that stops a
/// consumer. Sent as `MSG_SIZE` bytes: kind, producer, seq, little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    Item { producer: u32, seq: u32 },
    Stop,
}

const MSG_SIZE: usize = 12;
const KIND_ITEM: u32 = 1;
const KIND_STOP: u32 = 2;

impl Message {
    fn encode(self) -> [u8; MSG_SIZE] {
        let (kind, producer, seq) = match self {
            Message::Item { producer, seq } => (KIND_ITEM, producer, seq),
            Message::Stop => (KIND_STOP, 0, 0),
        };
        let mut bytes = [0u8; MSG_SIZE];
        bytes[0..4].copy_from_slice(&kind.to_le_bytes());
        bytes[4..8].copy_from_slice(&producer.to_le_bytes());
        bytes[8..12].copy_from_slice(&seq.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> io::Result<Message> {
        if bytes.len() != MSG_SIZE {
            return Err(io::Error::other(format!(
                "a message of {} bytes",
                bytes.len()
            )));
        }
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        match word(0) {
            KIND_ITEM => Ok(Message::Item {
                producer: word(4),
                seq: word(8),
            }),
            KIND_STOP => Ok(Message::Stop),
            k => Err(io::Error::other(format!("a message of unknown kind {k}"))),
        }
    }
}

/// An open POSIX message queue, closed when dropped (nix's `MqdT` is not).
/// Forked children leave with `_exit` and drop nothing; the kernel closes
/// their copies of the descriptor.
struct Queue {
    mqd: Option<MqdT>,
}

impl Queue {
    /// Create `name` for reading and writing: exclusively (fail rather than
    /// open someone else's queue), mode 0600, holding `capacity` messages.
    fn create(name: &str, capacity: usize) -> io::Result<Queue> {
        let attr = MqAttr::new(
            0,
            capacity as mq_attr_member_t,
            MSG_SIZE as mq_attr_member_t,
            0,
        );
        let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR | MQ_OFlag::O_CLOEXEC;
        let mqd = mq_open(name, flags, Mode::S_IRUSR | Mode::S_IWUSR, Some(&attr))
            .map_err(|e| sys("mq_open", e))?;
        Ok(Queue { mqd: Some(mqd) })
    }

    /// The permission bits of the queue as the kernel has it: a queue
    /// descriptor is a file descriptor on Linux, so `fstat` answers.
    fn mode(&self) -> io::Result<u32> {
        // SAFETY: an all-zero `stat` is a valid out-buffer for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is open while `self` lives; `st` is valid.
        if unsafe { libc::fstat(self.mqd().as_raw_fd(), &mut st) } != 0 {
            return Err(sys("fstat", Errno::last()));
        }
        Ok(st.st_mode & 0o7777)
    }

    fn mqd(&self) -> &MqdT {
        self.mqd
            .as_ref()
            .expect("the queue stays open until dropped")
    }

    fn attr(&self) -> io::Result<MqAttr> {
        mq_getattr(self.mqd()).map_err(|e| sys("mq_getattr", e))
    }

    /// Send unless the queue is full; `false` if it is. We pass a deadline
    /// that has already passed rather than set O_NONBLOCK: that flag
    /// belongs to the open queue description, which every process here
    /// shares through `fork`, so `mq_setattr` in one producer would make
    /// the consumers' receives non-blocking too.
    fn try_send(&self, msg: &[u8], priority: u32) -> io::Result<bool> {
        self.send_until(msg, priority, &now()?)
    }

    /// Send, waiting at most `timeout` for room; `false` if there was none.
    /// The timeout is measured on `Instant` (CLOCK_MONOTONIC): see `slice_until`.
    fn send_timeout(&self, msg: &[u8], priority: u32, timeout: Duration) -> io::Result<bool> {
        let end = Instant::now() + timeout;
        while let Some(slice) = slice_until(end) {
            if self.send_until(msg, priority, &deadline(slice)?)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    // nix 0.32 wraps `mq_timedreceive` but not `mq_timedsend`: libc's here.
    fn send_until(&self, msg: &[u8], priority: u32, deadline: &TimeSpec) -> io::Result<bool> {
        loop {
            // SAFETY: `msg` is valid for `msg.len()` bytes, the descriptor is
            // open while `self` lives, and `deadline` is a valid timespec.
            let r = unsafe {
                libc::mq_timedsend(
                    self.mqd().as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    priority,
                    deadline.as_ref(),
                )
            };
            if r == 0 {
                return Ok(true);
            }
            match Errno::last() {
                Errno::ETIMEDOUT => return Ok(false),
                // The deadline is absolute: trying again keeps it.
                Errno::EINTR => continue,
                e => return Err(sys("mq_timedsend", e)),
            }
        }
    }

    /// Receive the oldest message of the highest priority, waiting at most
    /// `timeout`; `None` if none came.
    fn receive_timeout(&self, timeout: Duration) -> io::Result<Option<(Message, u32)>> {
        // The buffer must hold `mq_msgsize` bytes even when the message is
        // shorter, or the receive fails with EMSGSIZE (the seed's C++ bug).
        let mut buf = [0u8; MSG_SIZE];
        let mut priority = 0;
        let end = Instant::now() + timeout;
        while let Some(slice) = slice_until(end) {
            let deadline = deadline(slice)?;
            match mq_timedreceive(self.mqd(), &mut buf, &mut priority, &deadline) {
                Ok(n) => return Ok(Some((Message::decode(&buf[..n])?, priority))),
                Err(Errno::ETIMEDOUT | Errno::EINTR) => continue,
                Err(e) => return Err(sys("mq_timedreceive", e)),
            }
        }
        Ok(None)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if let Some(mqd) = self.mqd.take() {
            let _ = mq_close(mqd);
        }
    }
}

/// The next wait's length, at most `SLICE`, until the monotonic `end`;
/// `None` once it has passed. The timed calls take only an absolute
/// `CLOCK_REALTIME` time, which a step of the wall clock (NTP, a VM's time
/// sync, `date -s`) moves; waiting in slices and measuring the real timeout
/// on CLOCK_MONOTONIC means such a step costs at most one slice.
fn slice_until(end: Instant) -> Option<Duration> {
    const SLICE: Duration = Duration::from_millis(100);
    let left = end.checked_duration_since(Instant::now())?;
    (!left.is_zero()).then(|| left.min(SLICE))
}

/// CLOCK_REALTIME now, the clock the timed calls take their deadline on.
fn now() -> io::Result<TimeSpec> {
    clock_gettime(ClockId::CLOCK_REALTIME).map_err(|e| sys("clock_gettime", e))
}

fn deadline(timeout: Duration) -> io::Result<TimeSpec> {
    Ok(now()? + TimeSpec::from_duration(timeout))
}

/// An error that names the call that failed: "mq_open: EEXIST: File exists".
fn sys(call: &str, e: Errno) -> io::Error {
    io::Error::other(format!("{call}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_encoding() {
        for m in [
            Message::Item {
                producer: 3,
                seq: 70000,
            },
            Message::Stop,
        ] {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
        assert!(Message::decode(&[0u8; 5]).is_err());
        assert!(Message::decode(&[9u8; MSG_SIZE]).is_err());
    }

    #[test]
    fn the_check_accepts_a_correct_delivery() {
        let got = vec![
            vec![(1, 1), (2, 1), (1, 2)],
            vec![(2, 2), (1, 3)],
            vec![(2, 3)],
        ];
        assert_eq!(check_deliveries(2, 3, &got), Ok(()));
    }

    #[test]
    fn the_check_catches_loss_duplicates_disorder_and_strangers() {
        let lost = check_deliveries(1, 2, &[vec![(1, 1)]]).unwrap_err();
        assert!(lost.contains("p1#2 was lost"), "{lost}");
        let twice = check_deliveries(1, 1, &[vec![(1, 1)], vec![(1, 1)]]).unwrap_err();
        assert!(twice.contains("p1#1 arrived 2 times"), "{twice}");
        let order = check_deliveries(1, 2, &[vec![(1, 2), (1, 1)]]).unwrap_err();
        assert!(order.contains("consumer 1 got p1#1 after p1#2"), "{order}");
        let stranger = check_deliveries(1, 1, &[vec![(1, 1), (5, 1)]]).unwrap_err();
        assert!(stranger.contains("nobody sent"), "{stranger}");
    }
}
