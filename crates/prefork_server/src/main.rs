//! Demonstrate how a pre-fork server lets several worker processes accept
//! connections on one TCP port, either through one listening socket they all
//! inherit or through one socket each with `SO_REUSEPORT`, and how it shuts
//! down without dropping a request.
//!
//! The parent binds a socket to 127.0.0.1, port 0 (the kernel picks a free
//! port, which the lesson prints), listens, and forks the workers. Each
//! worker inherits that same listening socket and accepts connections from
//! it, as nginx workers do. (Node's `cluster` module does the same with
//! `SCHED_NONE`. By default, it accepts in the primary and hands the
//! connections to the workers in turn.) The lesson then forks client processes that make a fixed
//! number of connections, one request each. Every request carries a unique
//! id, and every reply repeats the id and adds the PID of the worker that
//! answered. The counts per worker show how the kernel spread the
//! connections. The same load then runs a second time with `SO_REUSEPORT`:
//! each worker opens its own socket, sets the option and binds it to the same
//! port, and for each new connection the kernel picks one of these sockets by
//! hashing the connection's addresses and ports. At the end of each run, one
//! request is still being served when the parent sends SIGTERM to every
//! worker. Each worker stops accepting, the busy one finishes its request
//! first, and each reports its count and exits 0. The lesson then proves that
//! every request was answered exactly once: the workers' counts add up to
//! the number sent and to the replies the clients received, each worker's
//! count equals the number of replies that carry its PID, and no id was
//! answered twice.
//!
//! Key points:
//! - `fork` copies file descriptors, not sockets. The workers all hold the
//!   same listening socket, with one queue of connections waiting to be
//!   accepted. The lesson checks this in `/proc`: `/proc/net/tcp` lists one
//!   listening socket on the port, and every worker's `/proc/<pid>/fd` has a
//!   link to it (`socket:[inode]`). With `SO_REUSEPORT` it finds one
//!   listening socket per worker, all on the same port.
//! - The thundering herd. On modern kernels, a process blocked in `accept`
//!   waits exclusively, so a new connection wakes only one such process. These
//!   workers wait in `poll` instead, because they also watch for SIGTERM, and
//!   `poll` wakes every process waiting on the socket. Most of the woken
//!   workers re-check the socket inside the kernel, find the connection
//!   already taken, and go back to sleep: the herd costs wake-ups. The lesson
//!   counts them per worker (`voluntary_ctxt_switches` in
//!   `/proc/<pid>/status`, "slept N times"): compare the two runs, where
//!   with `SO_REUSEPORT` only the chosen worker is woken. Sometimes a
//!   worker returns from `poll`, calls `accept`, and gets `EAGAIN` because
//!   another worker was faster ("woken for nothing"). `epoll` with
//!   `EPOLLEXCLUSIVE` (Linux 4.5) wakes one or more waiters, not all; nginx uses that,
//!   an accept mutex, or `SO_REUSEPORT`.
//! - The spread. With a shared socket, a connection goes to whichever worker
//!   reaches `accept` first, so the counts are often uneven. `SO_REUSEPORT`
//!   hashes each connection to one socket, which is usually more even, but
//!   the hash does not know which workers are busy. The lesson prints the
//!   counts and does not judge them: their shape depends on the scheduler
//!   and the hash.
//! - `SO_REUSEPORT` must be set on every socket before `bind`, and only
//!   sockets of the same effective user may share the port, so another user
//!   cannot take over the connections. Closing one of these sockets resets the
//!   connections still waiting in its own queue (unless
//!   `net.ipv4.tcp_migrate_req`, Linux 5.14 and later, is 1). With a shared
//!   socket, the other workers still accept those connections.
//! - Graceful shutdown. Each worker blocks SIGTERM and reads it from a
//!   `signalfd` in the same `poll` as the listening socket. There is no
//!   handler, and no race between checking a flag and going to sleep. A
//!   SIGTERM that arrives in the middle of a request waits until the reply has
//!   been sent. The worker then closes its listening socket, so it stops
//!   accepting.
//! - Forking: every worker and client comes from `common::fork::spawn`,
//!   which refuses to fork a multithreaded parent (the child of one may
//!   only make async-signal-safe calls), flushes stdout first (or a
//!   buffered line would be printed twice), and makes the child leave with
//!   `_exit` (no destructors run twice). A child also gets every
//!   descriptor the parent had open, which is how the workers get the
//!   listening socket. It is also why each worker closes the inherited
//!   placeholder, and why the parent closes its copy before forking the
//!   clients. The children die with the parent (`PR_SET_PDEATHSIG`).
//! - Nothing can hang. Every `poll` has a timeout, and every connection has a
//!   connect, read and write timeout (`SO_RCVTIMEO`, `SO_SNDTIMEO`). Only
//!   loopback addresses are used, and the number of requests is fixed.
//!
//! What to observe, during the pause after the workers start (3 s per mode
//! at pace 1): `ss -ltnp 'sport = :<port>'` shows one listening socket with
//! every worker in its `users:` list, then one line per worker on the same
//! port in the `SO_REUSEPORT` run. `ls -l /proc/<worker pid>/fd` shows the
//! `socket:[inode]`. `ps -o pid,ppid,stat,wchan:40,comm --ppid <parent pid>`
//! shows the workers asleep in `poll` (`poll_schedule_timeout.constprop.0` on Linux 6.18).
//! `scripts/prefork_server.sh` runs `ss` and `ps` for you.
//!
//! The pitfall: a blocking listening socket combined with `poll`. When
//! `poll` says a connection is waiting, another worker may already have
//! taken it. With a blocking socket, the workers that lost then block in
//! `accept` and no longer see SIGTERM. The socket must be non-blocking (see
//! `accept(2)`, NOTES). `O_NONBLOCK` belongs to the open file description,
//! which the workers share, so the parent sets it once before forking.
//!
//! Seed example: none; lesson 20 answers the JS cluster example
//! (`16_cluster_module.js`: a primary forks workers that share port 3141 and
//! stops them with SIGTERM). That example uses a fixed port, sleeps instead
//! of waiting for readiness, counts a failed request as completed, and never
//! checks that the in-flight requests were answered.
//!
//! Run with:
//! ```text
//! cargo run -p prefork_server
//! cargo run -p prefork_server -- --workers 8 --connections 2000 --clients 8 --pace 0
//! ```
//!
//! Try it:
//! - Make the listening socket blocking (`set_nonblocking(false)` in
//!   `open_port`) and run with `--workers 8`. The workers that lose the race
//!   now hang in `accept`. Watch `wchan` in `ps`, and see the shutdown run
//!   into its timeout.
//! - Replace `poll` with a blocking `accept` (after setting `SO_RCVTIMEO` on
//!   the listening socket, so it still times out) and compare the "slept"
//!   counts: now only one waiter is woken for each connection.
//! - Make worker 1 sleep 10 ms in every request. With a shared socket, the
//!   other workers take over most of the load. With `SO_REUSEPORT`, worker 1
//!   still gets its share of the connections and the run takes longer,
//!   because the hash does not look at load.
//!
//! See also: `process_pool` (the workers take tasks from a queue instead of
//! connections from a socket), `signals` (handlers, masks and `signalfd`),
//! `supervisor` (restarting workers that die), `manager` (one server
//! process and a Unix socket).

use std::error::Error;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn};
use common::opts::{Args, Opt, Pace, Spec};
use common::shm::{Shared, SharedSlice};
use common::{describe, procfs, say, warn, Child};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    bind, getsockname, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag,
    SockType, SockaddrIn,
};

const SPEC: Spec = Spec {
    name: "prefork_server",
    about: "Demonstrate how pre-forked workers share one TCP port (one inherited socket, or SO_REUSEPORT) and shut down without dropping a request.",
    options: &[
        Opt::int("workers", "worker processes accepting on the port", 4, 1, 16),
        Opt::int(
            "connections",
            "connections the clients make in each of the two runs",
            400,
            1,
            5000,
        ),
        Opt::int("clients", "client processes making them, side by side", 4, 1, 16),
    ],
};

/// The longest anyone waits for a peer that should be there: a connect, a
/// read or a write on a connection, the workers to be ready, a worker to exit
/// after SIGTERM. This is a safety floor and is not scaled by the pace.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest the clients together may take for their whole load.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// The pause, in seconds at pace 1, after the workers are ready and before
/// the load starts: time to look at them with `ss`.
const PAUSE: f64 = 3.0;

/// A request or a reply is one short line. Reads stop after this many bytes,
/// so a peer cannot make the other side read forever.
const MAX_LINE: u64 = 64;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// One listening socket, opened by the parent and inherited by every worker.
    Shared,
    /// One listening socket per worker, each with `SO_REUSEPORT`, on the same port.
    ReusePort,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Shared => "shared socket",
            Mode::ReusePort => "SO_REUSEPORT",
        }
    }
}

/// What the options ask for.
struct Load {
    workers: usize,
    clients: usize,
    connections: usize,
    pace: Pace,
}

/// One run's shared notice board, in memory that is shared after `fork`.
#[derive(Default)]
struct Board {
    /// Workers that are listening and watching for SIGTERM.
    ready: AtomicU32,
    /// The PID of the worker holding the in-flight request, once it holds it.
    busy: AtomicI32,
}

/// One worker's numbers, one slot per worker in shared memory.
#[derive(Default)]
struct Tally {
    /// Replies this worker sent (counted by the worker).
    served: AtomicU64,
    /// Times `poll` woke this worker for a connection another worker took.
    woken_for_nothing: AtomicU64,
    /// Replies that carried this worker's PID (counted by the clients).
    seen_by_clients: AtomicU64,
    /// How often this worker went to sleep (voluntary context switches).
    sleeps: AtomicU64,
}

fn main() {
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let load = Load {
        workers: args.usize("workers"),
        clients: args.usize("clients"),
        connections: args.usize("connections"),
        pace: args.pace(),
    };
    say!(
        "{} workers; {} client processes make {} connections in each run, one request each; only 127.0.0.1",
        load.workers,
        load.clients,
        load.connections
    );
    let shared = one_run(Mode::Shared, &load)?;
    let reuse = one_run(Mode::ReusePort, &load)?;
    say!("the same load both times (printed, not judged):");
    for (mode, run) in [(Mode::Shared, &shared), (Mode::ReusePort, &reuse)] {
        let words: Vec<String> = run.counts.iter().map(u64::to_string).collect();
        let requests: u64 = run.counts.iter().sum();
        say!(
            "  {:<13}: requests per worker {}  (fewest {}, most {}); the workers slept {:.1} times per request",
            mode.name(),
            words.join(" "),
            run.counts.iter().min().unwrap_or(&0),
            run.counts.iter().max().unwrap_or(&0),
            run.sleeps as f64 / requests.max(1) as f64
        );
    }
    say!("all checks passed");
    Ok(())
}

/// What one run measured: the requests each worker answered, and how often
/// the workers went to sleep in all.
struct Measured {
    counts: Vec<u64>,
    sleeps: u64,
}

/// One run: open the port, fork the workers, check in /proc how they share
/// it, send the load, shut down with one request in flight, and check that
/// every request was answered exactly once.
fn one_run(mode: Mode, load: &Load) -> Result<Measured, Box<dyn Error>> {
    let name = mode.name();
    say!("---- {name} ----");
    // Ids 0..connections are the load; the last id is the request that is
    // in flight when the shutdown begins.
    let requests = load.connections + 1;
    let slow_id = load.connections;
    let board = Shared::new(Board::default())?;
    let tallies = SharedSlice::new(load.workers, |_| Tally::default())?;
    // How often each id was answered (by the workers) and received (by the clients).
    let answered = SharedSlice::new(requests, |_| AtomicU32::new(0))?;
    let received = SharedSlice::new(requests, |_| AtomicU32::new(0))?;
    // The workers wait for connections during the pause and the whole load.
    let idle_limit = LOAD_TIMEOUT + PEER_TIMEOUT + load.pace.secs(PAUSE);

    // The parent's socket: in shared mode, the listening socket itself; with
    // SO_REUSEPORT, a placeholder that is bound but not listening. It holds
    // the port until every worker has bound its own socket to it.
    let (first, port) = open_port(mode)?;
    match mode {
        Mode::Shared => say!(
            "listening on 127.0.0.1:{port}; forking {} workers that all accept on this one socket",
            load.workers
        ),
        Mode::ReusePort => say!(
            "port 127.0.0.1:{port} reserved; forking {} workers, each binding a socket of its own to it",
            load.workers
        ),
    }
    let first_fd = first.as_raw_fd();
    let mut workers: Vec<Child> = Vec::with_capacity(load.workers);
    for n in 1..=load.workers {
        let (board, tally, answered) = (&board, &tallies[n - 1], &answered[..]);
        workers.push(spawn(&format!("worker {n}"), || {
            // SAFETY: `first_fd` is this process's inherited copy of the
            // parent's socket. The `OwnedFd` that owns it in the parent's
            // memory is never dropped here (a forked child leaves with
            // `_exit`), so this is its only owner in this process.
            let inherited = unsafe { OwnedFd::from_raw_fd(first_fd) };
            let listener = match mode {
                Mode::Shared => inherited,
                Mode::ReusePort => {
                    // Close the inherited placeholder: if we kept it, it would
                    // hold the port bound after the parent lets go.
                    drop(inherited);
                    reuseport_listener(port)?
                }
            };
            worker(listener, board, tally, answered, idle_limit)
        })?);
    }
    wait_until("every worker to be ready", &mut workers, || {
        Ok(board.ready.load(SeqCst) as usize == load.workers)
    })?;
    // The workers have their sockets. The parent closes its own, so the
    // clients it forks next do not inherit it, and the port closes when the
    // last worker stops.
    drop(first);
    let pids: Vec<i32> = workers.iter().map(Child::raw).collect();
    check_sharing(mode, port, &pids)?;
    say!(
        "see for yourself: ss -ltnp 'sport = :{port}' (pausing {:.1} s)",
        load.pace.secs(PAUSE).as_secs_f64()
    );
    load.pace.sleep(PAUSE);

    // The load: each client takes every `clients`-th id.
    let mut clients = Vec::with_capacity(load.clients);
    for c in 0..load.clients {
        let (pids, tallies, received) = (&pids[..], &tallies[..], &received[..]);
        clients.push(spawn(&format!("client {}", c + 1), || {
            client(c, load, port, pids, tallies, received)
        })?);
    }
    let deadline = Instant::now() + LOAD_TIMEOUT;
    for (c, child) in clients.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        match child.wait_timeout(left)? {
            Some(s) if exit_code(s) == Some(0) => {}
            Some(s) => return Err(format!("client {}: {}", c + 1, describe(s)).into()),
            None => {
                return Err(format!("client {} still running after {LOAD_TIMEOUT:?}", c + 1).into())
            }
        }
    }

    // Graceful shutdown, with one request in flight. The worker that gets
    // it holds it until the shutdown has begun, so it is in flight every
    // time, not only when the timing happens to be right.
    let mut late = spawn("late client", || {
        let pid = ask(port, "SLOW", slow_id, 2 * PEER_TIMEOUT)?;
        record(slow_id, pid, &pids, &tallies, &received)?;
        say!("request {slow_id} was answered by worker {pid} after the shutdown began");
        Ok::<(), String>(())
    })?;
    wait_until("the slow request to reach a worker", &mut workers, || {
        if let Some(s) = late.try_wait()? {
            return Err(format!("late client: {}", describe(s)).into());
        }
        Ok(board.busy.load(SeqCst) != 0)
    })?;
    say!(
        "request {slow_id} is in flight in worker {}: SIGTERM to every worker",
        board.busy.load(SeqCst)
    );
    for w in &workers {
        w.signal(Signal::SIGTERM)?;
    }
    for (n, w) in workers.iter_mut().enumerate() {
        match w.wait_timeout(PEER_TIMEOUT)? {
            Some(s) if exit_code(s) == Some(0) => {}
            Some(s) => {
                return Err(format!("worker {} (pid {}): {}", n + 1, w.raw(), describe(s)).into())
            }
            None => {
                return Err(format!(
                    "worker {} (pid {}) still running {PEER_TIMEOUT:?} after SIGTERM",
                    n + 1,
                    w.raw()
                )
                .into())
            }
        }
    }
    match late.wait_timeout(PEER_TIMEOUT)? {
        Some(s) if exit_code(s) == Some(0) => {}
        Some(s) => return Err(format!("late client: {}", describe(s)).into()),
        None => return Err(format!("late client still running after {PEER_TIMEOUT:?}").into()),
    }
    say!("every worker exited with 0 after SIGTERM");

    // Exactly once: add up what the workers counted and what the clients got.
    let counts: Vec<u64> = tallies.iter().map(|t| t.served.load(SeqCst)).collect();
    let most = counts.iter().copied().max().unwrap_or(0).max(1);
    for (n, t) in tallies.iter().enumerate() {
        let served = t.served.load(SeqCst);
        let bar = "#".repeat((served * 30).div_ceil(most) as usize);
        say!(
            "{name}: worker {} (pid {}) answered {served:>4} {bar:<30}  slept {} times, woken for nothing {}",
            n + 1,
            pids[n],
            t.sleeps.load(SeqCst),
            t.woken_for_nothing.load(SeqCst)
        );
        let seen = t.seen_by_clients.load(SeqCst);
        if seen != served {
            return Err(format!(
                "worker {} counted {served} replies, but the clients got {seen} with its PID",
                n + 1
            )
            .into());
        }
    }
    let by_workers: u64 = counts.iter().sum();
    let by_clients: u64 = received.iter().map(|r| u64::from(r.load(SeqCst))).sum();
    let not_once: Vec<String> = (0..requests)
        .filter(|&id| answered[id].load(SeqCst) != 1 || received[id].load(SeqCst) != 1)
        .map(|id| {
            format!(
                "id {id} answered {} times, received {} times",
                answered[id].load(SeqCst),
                received[id].load(SeqCst)
            )
        })
        .collect();
    if by_workers != requests as u64 || by_clients != requests as u64 || !not_once.is_empty() {
        return Err(format!(
            "{name}: {requests} requests sent, the workers counted {by_workers}, the clients received {by_clients}; {}",
            not_once.into_iter().take(5).collect::<Vec<_>>().join("; ")
        )
        .into());
    }
    say!(
        "{name}: {requests} requests sent, {by_clients} replies received, the workers counted {by_workers}: every id answered exactly once"
    );
    let sleeps = tallies.iter().map(|t| t.sleeps.load(SeqCst)).sum();
    Ok(Measured { counts, sleeps })
}

/// Open the parent's socket on 127.0.0.1 with port 0, and return it with the
/// port the kernel chose.
fn open_port(mode: Mode) -> Result<(OwnedFd, u16), Box<dyn Error>> {
    let fd = tcp_socket(mode == Mode::ReusePort)?;
    bind_loopback(&fd, 0)?;
    if mode == Mode::Shared {
        listen(&fd, Backlog::new(128)?).map_err(|e| format!("listen: {e}"))?;
    }
    let port = getsockname::<SockaddrIn>(fd.as_raw_fd())
        .map_err(|e| format!("getsockname: {e}"))?
        .port();
    if mode == Mode::Shared {
        // See the pitfall in the header: `poll` may report a connection that
        // another worker takes first. O_NONBLOCK is part of the open file
        // description, which every worker shares, so setting it once here is
        // enough.
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        return Ok((listener.into(), port));
    }
    Ok((fd, port))
}

/// A TCP socket, with `SO_REUSEPORT` if asked. The option only has an effect
/// if it is set before `bind`.
fn tcp_socket(reuse_port: bool) -> Result<OwnedFd, Box<dyn Error>> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)
            .map_err(|e| format!("setsockopt(SO_REUSEPORT): {e}"))?;
    }
    Ok(fd)
}

fn bind_loopback(fd: &OwnedFd, port: u16) -> Result<(), Box<dyn Error>> {
    let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    bind(fd.as_raw_fd(), &addr).map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
    Ok(())
}

/// A worker's own listening socket in `SO_REUSEPORT` mode: same port, own
/// queue. The kernel adds it to the port's group of sockets at `listen`.
fn reuseport_listener(port: u16) -> Result<OwnedFd, Box<dyn Error>> {
    let fd = tcp_socket(true)?;
    bind_loopback(&fd, port)?;
    listen(&fd, Backlog::new(128)?).map_err(|e| format!("listen: {e}"))?;
    // Nobody else accepts from this socket, but a worker never blocks in
    // `accept`: it waits in `poll`, where it also sees SIGTERM.
    let listener = TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(listener.into())
}

// ---------------------------------------------------------------------------
// The worker.
// ---------------------------------------------------------------------------

/// A worker's whole life: accept and answer until SIGTERM, then stop
/// accepting and report.
fn worker(
    listener: OwnedFd,
    board: &Board,
    me: &Tally,
    answered: &[AtomicU32],
    idle_limit: Duration,
) -> Result<(), Box<dyn Error>> {
    let listener = TcpListener::from(listener);
    // SIGTERM becomes a readable descriptor rather than an interruption:
    // block it (so it stays pending), then read it from a signalfd.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    term.thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let sigterm = SignalFd::with_flags(&term, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    board.ready.fetch_add(1, SeqCst);

    let from = loop {
        let [term_ready, conn_ready] = poll_both(sigterm.as_fd(), listener.as_fd(), idle_limit)?;
        // SIGTERM first: once it has come, accept nothing new.
        if term_ready {
            let info = sigterm
                .read_signal()
                .map_err(|e| format!("read(signalfd): {e}"))?
                .ok_or("signalfd: readable but empty")?;
            break info.ssi_pid;
        }
        if conn_ready {
            match listener.accept() {
                Ok((stream, _)) => {
                    // One bad client must not stop the server; a lost reply
                    // shows up in the parent's count.
                    if let Err(e) = serve(stream, sigterm.as_fd(), board, me, answered) {
                        warn!("request dropped: {e}");
                    }
                }
                // Another worker took this connection: the herd at work.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    me.woken_for_nothing.fetch_add(1, SeqCst);
                }
                // The client gave up before we accepted.
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                Err(e) => return Err(format!("accept: {e}").into()),
            }
        }
    };
    // Stop accepting. In shared mode this closes only our copy; the socket
    // lives on in the workers that still have it.
    drop(listener);
    me.sleeps.store(voluntary_switches()?, SeqCst);
    say!(
        "SIGTERM from {from}: closed my listening socket; answered {} requests (accept found nothing {} times); exit 0",
        me.served.load(SeqCst),
        me.woken_for_nothing.load(SeqCst)
    );
    Ok(())
}

/// Wait in `poll` until SIGTERM is pending or a connection is waiting, for
/// at most `limit`. Returns which of the two is ready.
fn poll_both(
    sigterm: BorrowedFd<'_>,
    listener: BorrowedFd<'_>,
    limit: Duration,
) -> Result<[bool; 2], Box<dyn Error>> {
    loop {
        let mut fds = [
            PollFd::new(sigterm, PollFlags::POLLIN),
            PollFd::new(listener, PollFlags::POLLIN),
        ];
        match poll(
            &mut fds,
            PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => {
                return Err(format!(
                    "poll: no connection and no SIGTERM for {limit:?} (is the parent stuck?)"
                )
                .into())
            }
            Ok(_) => return Ok(fds.map(|f| f.any().unwrap_or(false))),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}").into()),
        }
    }
}

/// Whether `fd` becomes readable within `limit`.
fn readable_within(fd: BorrowedFd<'_>, limit: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::other(format!("poll: {e}"))),
        }
    }
}

/// Answer one request: read `GET <id>` or `SLOW <id>`, reply `<id> <pid>`.
fn serve(
    stream: TcpStream,
    sigterm: BorrowedFd<'_>,
    board: &Board,
    me: &Tally,
    answered: &[AtomicU32],
) -> io::Result<()> {
    set_timeouts(&stream, PEER_TIMEOUT)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .take(MAX_LINE)
        .read_line(&mut line)
        .map_err(|e| named("read", e))?;
    let (verb, id) = line
        .trim_end()
        .split_once(' ')
        .and_then(|(v, id)| Some((v, id.parse::<usize>().ok()?)))
        .filter(|&(v, id)| matches!(v, "GET" | "SLOW") && id < answered.len())
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, format!("bad request {line:?}")))?;
    let pid = std::process::id();
    if verb == "SLOW" {
        board.busy.store(pid as i32, SeqCst);
        say!("request {id} is a slow one: it stays in flight until the shutdown begins");
        // Only look: the SIGTERM stays pending for the main loop to read.
        if !readable_within(sigterm, PEER_TIMEOUT)? {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                format!("no SIGTERM within {PEER_TIMEOUT:?}"),
            ));
        }
        say!("SIGTERM is pending, but request {id} is in flight: answering it before I stop");
    }
    (&stream)
        .write_all(format!("{id} {pid}\n").as_bytes())
        .map_err(|e| named("write", e))?;
    answered[id].fetch_add(1, SeqCst);
    me.served.fetch_add(1, SeqCst);
    Ok(())
}

// ---------------------------------------------------------------------------
// The clients.
// ---------------------------------------------------------------------------

/// Client `c` sends the ids `c`, `c + clients`, ... one connection each, and
/// checks every reply.
fn client(
    c: usize,
    load: &Load,
    port: u16,
    pids: &[i32],
    tallies: &[Tally],
    received: &[AtomicU32],
) -> Result<(), String> {
    let mut sent = 0;
    for id in (c..load.connections).step_by(load.clients) {
        let pid = ask(port, "GET", id, PEER_TIMEOUT)?;
        record(id, pid, pids, tallies, received)?;
        sent += 1;
    }
    say!("{sent} requests sent, {sent} replies received, each with its own id and a worker's PID");
    Ok(())
}

/// One connection, one request: send `<verb> <id>`, and return the PID in
/// the reply after checking that the reply carries our id.
fn ask(port: u16, verb: &str, id: usize, timeout: Duration) -> Result<i32, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("request {id}: {}", named("connect", e)))?;
    set_timeouts(&stream, timeout).map_err(|e| format!("request {id}: {e}"))?;
    (&stream)
        .write_all(format!("{verb} {id}\n").as_bytes())
        .map_err(|e| format!("request {id}: {}", named("write", e)))?;
    // The worker closes the connection after its reply: read to the end.
    let mut reply = String::new();
    (&stream)
        .take(MAX_LINE)
        .read_to_string(&mut reply)
        .map_err(|e| format!("request {id}: {}", named("read", e)))?;
    let (rid, pid) = reply
        .trim_end()
        .split_once(' ')
        .and_then(|(r, p)| Some((r.parse::<usize>().ok()?, p.parse::<i32>().ok()?)))
        .ok_or_else(|| format!("request {id}: unreadable reply {reply:?}"))?;
    if rid != id {
        return Err(format!("request {id}: the reply carries id {rid}"));
    }
    Ok(pid)
}

/// Count a reply for request `id` from `pid`, which must be one of ours.
fn record(
    id: usize,
    pid: i32,
    pids: &[i32],
    tallies: &[Tally],
    received: &[AtomicU32],
) -> Result<(), String> {
    let w = pids
        .iter()
        .position(|&p| p == pid)
        .ok_or_else(|| format!("request {id}: answered by PID {pid}, not one of our workers"))?;
    tallies[w].seen_by_clients.fetch_add(1, SeqCst);
    received[id].fetch_add(1, SeqCst);
    Ok(())
}

fn set_timeouts(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| named("setsockopt(SO_RCVTIMEO)", e))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| named("setsockopt(SO_SNDTIMEO)", e))
}

/// Name the call in an I/O error, and say what a timeout means.
fn named(call: &str, e: io::Error) -> io::Error {
    match e.kind() {
        // SO_RCVTIMEO and SO_SNDTIMEO expire as EAGAIN.
        ErrorKind::WouldBlock | ErrorKind::TimedOut => io::Error::new(
            ErrorKind::TimedOut,
            format!("{call}: timed out (is the peer stuck?)"),
        ),
        kind => io::Error::new(kind, format!("{call}: {e}")),
    }
}

// ---------------------------------------------------------------------------
// Waiting, and looking in /proc.
// ---------------------------------------------------------------------------

/// Poll `done` every millisecond for at most [`PEER_TIMEOUT`], failing at
/// once if a worker ends in the meantime (or `done` fails).
fn wait_until(
    what: &str,
    workers: &mut [Child],
    mut done: impl FnMut() -> Result<bool, Box<dyn Error>>,
) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + PEER_TIMEOUT;
    while !done()? {
        for (n, w) in workers.iter_mut().enumerate() {
            if let Some(s) = w.try_wait()? {
                return Err(format!(
                    "worker {} ended while waiting for {what}: {}",
                    n + 1,
                    describe(s)
                )
                .into());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("waited {PEER_TIMEOUT:?} for {what}").into());
        }
        sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Check with the kernel's own tables how the workers share the port: one
/// listening socket held by every worker, or one socket per worker.
fn check_sharing(mode: Mode, port: u16, pids: &[i32]) -> Result<(), Box<dyn Error>> {
    let listening = listening_sockets(port)?;
    let held: Vec<Vec<u64>> = pids
        .iter()
        .map(|&pid| {
            sockets_of(pid).map(|s| s.into_iter().filter(|i| listening.contains(i)).collect())
        })
        .collect::<io::Result<_>>()?;
    let mine = sockets_of(std::process::id() as i32)?;
    if mine.iter().any(|i| listening.contains(i)) {
        return Err("the parent still holds a listening socket".into());
    }
    match mode {
        Mode::Shared => {
            let one_for_all = listening.len() == 1 && held.iter().all(|h| h == &listening);
            if !one_for_all {
                return Err(format!(
                    "expected 1 socket listening on port {port}, held by every worker; \
                     /proc/net/tcp lists {listening:?}, the workers hold {held:?}"
                )
                .into());
            }
            say!(
                "/proc/net/tcp lists 1 socket listening on port {port}, and all {} workers hold it (socket:[{}])",
                pids.len(),
                listening[0]
            );
        }
        Mode::ReusePort => {
            let mut own: Vec<u64> = held.iter().filter(|h| h.len() == 1).map(|h| h[0]).collect();
            own.sort_unstable();
            own.dedup();
            if listening.len() != pids.len() || own.len() != pids.len() {
                return Err(format!(
                    "expected {} sockets listening on port {port}, one in each worker; \
                     /proc/net/tcp lists {listening:?}, the workers hold {held:?}",
                    pids.len()
                )
                .into());
            }
            say!(
                "/proc/net/tcp lists {} sockets listening on port {port}, one in each worker ({})",
                listening.len(),
                own.iter()
                    .map(|i| format!("socket:[{i}]"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    Ok(())
}

/// The inodes of the TCP sockets listening on 127.0.0.1:`port`, from
/// `/proc/net/tcp` (addresses in hex, `0100007F` being 127.0.0.1; state
/// `0A` is LISTEN; the inode is the tenth column).
fn listening_sockets(port: u16) -> io::Result<Vec<u64>> {
    let table = std::fs::read_to_string("/proc/net/tcp")
        .map_err(|e| io::Error::new(e.kind(), format!("/proc/net/tcp: {e}")))?;
    let local = format!("0100007F:{port:04X}");
    let mut found: Vec<u64> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A"))
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// The inodes of the sockets among `pid`'s open descriptors: each
/// `/proc/<pid>/fd/N` is a link such as `socket:[123456]`.
fn sockets_of(pid: i32) -> io::Result<Vec<u64>> {
    let dir = format!("/proc/{pid}/fd");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| io::Error::new(e.kind(), format!("{dir}: {e}")))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        // A descriptor may close while we look: skip what we cannot read.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
            {
                found.push(inode);
            }
        }
    }
    Ok(found)
}

/// How often this process went to sleep: `voluntary_ctxt_switches` in
/// `/proc/<pid>/status`.
fn voluntary_switches() -> io::Result<u64> {
    let pid = std::process::id() as i32;
    let value = procfs::status_field(pid, "voluntary_ctxt_switches")?;
    value.parse().map_err(|e| {
        io::Error::other(format!(
            "/proc/{pid}/status: voluntary_ctxt_switches {value:?}: {e}"
        ))
    })
}
