//! Demonstrate how a manager server process owns a list and a map that other
//! processes use through a proxy, one request and reply at a time over a Unix
//! domain socket: Python's `multiprocessing.Manager()` built by hand.
//!
//! The parent binds a listening socket in a fresh private directory and forks
//! the manager server, which owns a `Vec<Item>` and a `BTreeMap<String, i32>`.
//! No other process can touch them. The parent forks five clients; each one
//! connects, and its `ManagerProxy` turns `append`, `insert`, `len`... into a
//! request frame and waits for the reply frame. Once every client has
//! connected, the server stops listening and removes the socket file and its
//! directory. At the end the parent reads the list and the map
//! back, checks that every client's item is there exactly once and that the
//! map holds each client's PID, sends `Shutdown`, and checks that the server
//! exited with 0 and that a request to the stopped server fails at once.
//!
//! Key points:
//! - One owner, many proxies. The server applies each request under its own
//!   lock, so `append` is atomic without any lock in the clients. Each call is
//!   a round trip through the kernel (two context switches at least).
//! - Compared with shared memory (`shared_value`, `shared_array`): shared
//!   memory holds fixed-size plain data that every process reads and writes
//!   in place, fast, under a process-shared lock. A manager holds any data
//!   structure (a growing `Vec`, a map keyed by strings) and needs no lock in
//!   the clients. The price is a system call round trip per operation, which
//!   makes it slower by orders of magnitude.
//! - Compared with the coordinator-plus-file-lock pattern (children append
//!   lines to a shared file under `flock`, a coordinator reads it at the
//!   end; the seed's C++ does this without the lock): there every process
//!   does its own I/O on the shared data and must take the lock, the file
//!   outlives a crash, and the reader parses text. Here the data has one
//!   owner, nobody needs a lock, and the data goes away with the server.
//! - The protocol: each message is a frame, a 4-byte little-endian length
//!   followed by the message serialised with postcard (through serde). A
//!   stream socket has no message boundaries; the length prefix adds them.
//!   A frame longer than `MAX_FRAME` is refused, so a bad length cannot make
//!   the server allocate gigabytes.
//! - The server is a forked child that starts one thread per connection.
//!   That is safe: the parent was single-threaded when it forked
//!   (`common::fork` checks this), so the server starts with one thread and
//!   may do anything, including starting threads. Only a process that already
//!   has threads must not fork, and the server never forks. The parent starts
//!   no threads, so it can go on forking clients.
//! - Nothing can hang: `accept` waits in `poll` with a timeout, and every
//!   read on either side has one (`SO_RCVTIMEO`). A peer that dies closes its
//!   socket, and the other side reads end of file at once (or gets
//!   ECONNRESET, if the dead peer left data it had not read). A stuck peer runs
//!   into a timeout.
//! - `bind` takes no mode: the socket file's mode comes from the umask, and
//!   whoever can write to it can connect. So it lives in a directory of mode
//!   0700. Connected sockets do not need the file, so the server removes it
//!   as soon as every client is in, before any process prints a line: a
//!   crash at any moment after the first line of output leaves nothing.
//!   (Linux's abstract socket names need no file at all, but they have no
//!   permissions either: anyone in the network namespace can connect.)
//!
//! What to observe, while the clients keep their connections open (2 s at
//! pace 1): `ps -L -o pid,lwp,stat,comm -p <server pid>` shows the server's
//! threads, one `conn N` per connection; `ss -xp | grep manager` shows the
//! connections; `ps -o pid,ppid,stat,comm --ppid <parent pid>` shows the
//! server and the clients; `ls -d /tmp/manager-*` finds nothing: the socket
//! file is already gone.
//!
//! The pitfall: a connection must not be shared by two processes. A proxy
//! created before a `fork` is inherited by the child as the same socket; if
//! both use it, their request frames interleave and each may read the
//! other's reply. Python's proxies reconnect in every new process for this
//! reason. Here each client connects after the fork, and the parent opens
//! its own connection only after forking the clients.
//!
//! Seed example: 09, manager (Python `multiprocessing.Manager().list()` that
//! five processes append to; the C++ version appends lines to a fixed-name
//! file `shared_data.txt` without a lock and never removes it).
//!
//! Run with:
//! ```text
//! cargo run -p manager
//! cargo run -p manager -- --clients 12 --pace 0
//! cargo run --release -p manager -- --bench    # one TSV line: appends per second
//! ```
//!
//! Try it:
//! - While the clients hold their connections, `kill -STOP <server pid>`:
//!   the parent's next request fails after 20 s (`REPLY_TIMEOUT`) instead of
//!   hanging. `kill -9` the server instead: the request fails at once.
//! - Add `Request::Extend(Vec<Item>)` and compare `--bench` with one request
//!   per item: batching is how a manager is made fast.
//! - Open the parent's proxy before forking the clients and let a client use
//!   the inherited connection. Watch the replies reach the wrong process.
//!
//! See also: `shared_value` and `shared_array` (the same sharing through
//! shared memory), `process_lock` (a lock around a shared file),
//! `pipe_communication` (framed messages over a pipe).

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use parking_lot::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::fork::{exit_code, spawn};
use common::names::PrivateDir;
use common::opts::{Args, Opt, Spec};
use common::{describe, procfs, say, warn, Child};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const SPEC: Spec = Spec {
    name: "manager",
    about: "Demonstrate how a manager server process owns a list and a map that client processes use through a proxy over a Unix socket.",
    options: &[
        Opt::int("clients", "client processes (--bench always uses 2)", 5, 1, 32),
        Opt::flag(
            "bench",
            "measure appends per second from 2 clients; print one TSV line",
        ),
        Opt::int("appends", "appends in all, with --bench", 20_000, 2, 200_000),
    ],
};

/// The longest anyone waits for a peer that should be there: the next
/// connection, every client to be in, the server to exit. A safety floor,
/// not scaled by the pace.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a proxy waits for a reply. `WaitAllConnected` may take up to
/// `PEER_TIMEOUT` on the server's side, so twice that.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// Seconds (scaled by the pace) each client keeps its connection open after
/// its work, for a human to look at the server.
const WATCH_SECS: f64 = 2.0;

/// How long the benchmark's clients may take for all their appends.
const BENCH_LIMIT: Duration = Duration::from_secs(60);

/// The largest frame accepted. A garbage length must not make a process
/// allocate gigabytes.
const MAX_FRAME: usize = 16 << 20;

fn main() {
    let args = Args::parse(&SPEC);
    let result = if args.flag("bench") {
        bench(args.int("appends") as u32)
    } else {
        run(&args)
    };
    if let Err(e) = result {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// The protocol: what a proxy may ask, and what the server answers.
// ---------------------------------------------------------------------------

/// One element of the shared list: which client appended it, and its number
/// among that client's appends.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    client: u32,
    seq: u32,
}

#[derive(Serialize, Deserialize, Debug)]
enum Request {
    /// Who are you? The server answers with its PID.
    Hello,
    /// Answer once every expected connection is in: a starting line.
    WaitAllConnected,
    Append(Item),
    Insert(String, i32),
    Len,
    GetList,
    GetMap,
    /// Answer, then exit.
    Shutdown,
}

#[derive(Serialize, Deserialize, Debug)]
enum Reply {
    Hello {
        server_pid: i32,
    },
    AllConnected(u32),
    Done,
    Len(u64),
    List(Vec<Item>),
    Map(BTreeMap<String, i32>),
    /// The request could not be served, and why.
    Error(String),
}

/// Send one frame: the message's length as 4 little-endian bytes, then the
/// message. Both go out in one `write`.
///
/// Writing to a socket whose peer has gone fails with `EPIPE` rather than
/// killing us with SIGPIPE: Rust programs start with SIGPIPE ignored, and a
/// forked child inherits that.
fn send_frame<T: Serialize>(mut socket: &UnixStream, message: &T) -> io::Result<()> {
    // Serialise after 4 placeholder bytes, then fill in the length.
    let mut frame = postcard::to_extend(message, vec![0u8; 4])
        .map_err(|e| io::Error::other(format!("postcard: {e}")))?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "write: a frame of {len} bytes is more than the {MAX_FRAME} allowed"
        )));
    }
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    socket.write_all(&frame).map_err(|e| named("write", e))
}

/// Receive one frame. `None` means the peer closed its end between two
/// frames: a clean end. The `BufReader` usually gets the length and the
/// message in one `read`.
fn recv_frame<T: DeserializeOwned>(socket: &mut BufReader<UnixStream>) -> io::Result<Option<T>> {
    if socket.fill_buf().map_err(|e| named("read", e))?.is_empty() {
        return Ok(None);
    }
    let mut len = [0u8; 4];
    socket.read_exact(&mut len).map_err(|e| named("read", e))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("read: a frame of {len} bytes announced, more than the {MAX_FRAME} allowed"),
        ));
    }
    let mut message = vec![0u8; len];
    socket
        .read_exact(&mut message)
        .map_err(|e| named("read", e))?;
    postcard::from_bytes(&message)
        .map(Some)
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("postcard: {e}")))
}

/// Name the call in an I/O error, and say what a timeout means.
fn named(call: &str, e: io::Error) -> io::Error {
    match e.kind() {
        // SO_RCVTIMEO and SO_SNDTIMEO expire as EAGAIN.
        ErrorKind::WouldBlock | ErrorKind::TimedOut => io::Error::new(
            ErrorKind::TimedOut,
            format!("{call}: timed out (is the peer stuck?)"),
        ),
        ErrorKind::UnexpectedEof => io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("{call}: the peer closed the connection in the middle of a frame"),
        ),
        kind => io::Error::new(kind, format!("{call}: {e}")),
    }
}

// ---------------------------------------------------------------------------
// The client side: a proxy that looks like the shared objects.
// ---------------------------------------------------------------------------

/// A connection to the manager server, with one method per operation. Each
/// call sends one request and waits for its reply, as Python's proxies do.
struct ManagerProxy {
    socket: BufReader<UnixStream>,
}

impl ManagerProxy {
    /// Connect to the server's socket; each process needs a connection of
    /// its own (see the pitfall above).
    fn connect(path: &Path) -> io::Result<ManagerProxy> {
        let socket = UnixStream::connect(path)
            .map_err(|e| io::Error::new(e.kind(), format!("connect {}: {e}", path.display())))?;
        // A server that stops answering makes an error, not a hang.
        socket
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| named("setsockopt(SO_RCVTIMEO)", e))?;
        socket
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| named("setsockopt(SO_SNDTIMEO)", e))?;
        Ok(ManagerProxy {
            socket: BufReader::new(socket),
        })
    }

    /// Send `request` and wait for the reply; `op` names the call in errors.
    fn call(&mut self, op: &str, request: &Request) -> io::Result<Reply> {
        let failed = |e: io::Error| io::Error::new(e.kind(), format!("{op}: {e}"));
        send_frame(self.socket.get_ref(), request).map_err(failed)?;
        match recv_frame(&mut self.socket).map_err(failed)? {
            Some(Reply::Error(why)) => {
                Err(io::Error::other(format!("{op}: the server says: {why}")))
            }
            Some(reply) => Ok(reply),
            None => Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("{op}: read: the server closed the connection"),
            )),
        }
    }

    fn hello(&mut self) -> io::Result<i32> {
        match self.call("hello", &Request::Hello)? {
            Reply::Hello { server_pid } => Ok(server_pid),
            other => Err(unexpected("hello", other)),
        }
    }

    fn wait_all_connected(&mut self) -> io::Result<u32> {
        match self.call("wait_all_connected", &Request::WaitAllConnected)? {
            Reply::AllConnected(n) => Ok(n),
            other => Err(unexpected("wait_all_connected", other)),
        }
    }

    fn append(&mut self, item: Item) -> io::Result<()> {
        match self.call("append", &Request::Append(item))? {
            Reply::Done => Ok(()),
            other => Err(unexpected("append", other)),
        }
    }

    fn insert(&mut self, key: &str, value: i32) -> io::Result<()> {
        match self.call("insert", &Request::Insert(key.to_string(), value))? {
            Reply::Done => Ok(()),
            other => Err(unexpected("insert", other)),
        }
    }

    fn len(&mut self) -> io::Result<u64> {
        match self.call("len", &Request::Len)? {
            Reply::Len(n) => Ok(n),
            other => Err(unexpected("len", other)),
        }
    }

    fn get_list(&mut self) -> io::Result<Vec<Item>> {
        match self.call("get_list", &Request::GetList)? {
            Reply::List(list) => Ok(list),
            other => Err(unexpected("get_list", other)),
        }
    }

    fn get_map(&mut self) -> io::Result<BTreeMap<String, i32>> {
        match self.call("get_map", &Request::GetMap)? {
            Reply::Map(map) => Ok(map),
            other => Err(unexpected("get_map", other)),
        }
    }

    fn shutdown(&mut self) -> io::Result<()> {
        match self.call("shutdown", &Request::Shutdown)? {
            Reply::Done => Ok(()),
            other => Err(unexpected("shutdown", other)),
        }
    }
}

fn unexpected(op: &str, reply: Reply) -> io::Error {
    io::Error::new(
        ErrorKind::InvalidData,
        format!("{op}: unexpected reply {reply:?}"),
    )
}

// ---------------------------------------------------------------------------
// The server: owns the data, one thread per connection.
// ---------------------------------------------------------------------------

/// What the server owns. Only the server's threads touch it, under the lock:
/// a `parking_lot::Mutex`, the right tool between threads of one process
/// (no poisoning to handle, a small fast lock). It could not serve between
/// processes: its sleepers wait in a parking table in this process's own
/// memory, which another process never sees (see `common::futex`).
#[derive(Default)]
struct State {
    list: Vec<Item>,
    map: BTreeMap<String, i32>,
    all_connected: bool,
    requests: u64,
}

struct Manager {
    state: Mutex<State>,
    /// Signalled when every expected connection is in.
    all_in: Condvar,
    expected: u32,
}

impl Manager {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Apply one request to the data and make the reply.
    fn apply(&self, request: Request) -> Reply {
        let mut state = self.lock();
        state.requests += 1;
        match request {
            Request::Hello => Reply::Hello {
                server_pid: std::process::id() as i32,
            },
            Request::WaitAllConnected => {
                // Sleeps without the lock until the accept loop says so.
                self.all_in
                    .wait_while_for(&mut state, |s| !s.all_connected, PEER_TIMEOUT);
                if state.all_connected {
                    Reply::AllConnected(self.expected)
                } else {
                    Reply::Error(format!(
                        "not all {} connections came within {PEER_TIMEOUT:?}",
                        self.expected
                    ))
                }
            }
            Request::Append(item) => {
                state.list.push(item);
                Reply::Done
            }
            Request::Insert(key, value) => {
                state.map.insert(key, value);
                Reply::Done
            }
            Request::Len => Reply::Len(state.list.len() as u64),
            Request::GetList => Reply::List(state.list.clone()),
            Request::GetMap => Reply::Map(state.map.clone()),
            Request::Shutdown => Reply::Done,
        }
    }
}

/// Serve one connection until the client closes it (`Ok(false)`) or asks
/// for a shutdown (`Ok(true)`).
fn handle(manager: &Manager, socket: UnixStream) -> io::Result<bool> {
    let mut socket = BufReader::new(socket);
    while let Some(request) = recv_frame::<Request>(&mut socket)? {
        let shutdown = matches!(request, Request::Shutdown);
        let reply = manager.apply(request);
        send_frame(socket.get_ref(), &reply)?;
        if shutdown {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `accept`, giving up after `timeout`: a client that never comes must not
/// hang the server. `poll` says when a connection is waiting.
fn accept_within(listener: &UnixListener, timeout: Duration) -> io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("accept: no client came within {timeout:?}"),
                ))
            }
            Ok(_) => {
                return listener
                    .accept()
                    .map(|(s, _)| s)
                    .map_err(|e| named("accept", e))
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::other(format!("poll: {e}"))),
        }
    }
}

/// The manager server's whole life: accept the expected connections, one
/// thread each, then stop listening and remove the socket file `path` and
/// its directory; serve until a `Shutdown` request. `idle` bounds the wait
/// for a connection's next request.
fn serve(
    listener: UnixListener,
    path: &Path,
    expected: u32,
    idle: Duration,
    verbose: bool,
) -> Result<(), Box<dyn Error>> {
    let manager = Arc::new(Manager {
        state: Mutex::default(),
        all_in: Condvar::new(),
        expected,
    });
    // Each connection's thread reports here how its connection ended.
    let (ended_tx, ended) = mpsc::channel::<io::Result<bool>>();
    for n in 1..=expected {
        let socket = accept_within(&listener, PEER_TIMEOUT)
            .map_err(|e| format!("{e} ({} of {expected} connected)", n - 1))?;
        socket
            .set_read_timeout(Some(idle))
            .map_err(|e| named("setsockopt(SO_RCVTIMEO)", e))?;
        socket
            .set_write_timeout(Some(PEER_TIMEOUT))
            .map_err(|e| named("setsockopt(SO_SNDTIMEO)", e))?;
        let (manager, ended_tx) = (Arc::clone(&manager), ended_tx.clone());
        thread::Builder::new()
            .name(format!("conn {n}"))
            .spawn(move || {
                let _ = ended_tx.send(handle(&manager, socket));
            })
            .map_err(|e| format!("pthread_create: {e}"))?;
    }
    drop(ended_tx);
    // Every expected client is in: stop listening, and remove the socket
    // file and its directory (connected sockets do not need them). The
    // server does it because it is the first to know. Nobody has printed a
    // line yet and nobody will before this point, so a crash at any moment
    // after the first line of output leaves nothing behind.
    drop(listener);
    std::fs::remove_file(path).map_err(|e| format!("unlink {}: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::remove_dir(dir).map_err(|e| format!("rmdir {}: {e}", dir.display()))?;
    }
    if verbose {
        // Counted before anyone is let go, so no connection has ended yet.
        let threads = procfs::stat(std::process::id() as i32)?.map_or(0, |s| s.num_threads);
        say!("accepted {expected} connections; stopped listening and removed the socket file and its directory");
        say!("serving {expected} connections with {threads} threads (this one and one per connection)");
    }
    manager.lock().all_connected = true;
    manager.all_in.notify_all();

    let mut failed = 0;
    loop {
        match ended.recv() {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => {} // a client finished and closed its end
            Ok(Err(e)) => {
                warn!("a connection failed: {e}");
                failed += 1;
            }
            Err(mpsc::RecvError) => {
                return Err("every connection closed without a Shutdown request".into())
            }
        }
    }
    let state = manager.lock();
    if verbose {
        say!(
            "Shutdown: served {} requests; the list holds {} items, the map {} keys; exiting",
            state.requests,
            state.list.len(),
            state.map.len()
        );
    }
    if failed > 0 {
        return Err(format!("{failed} connection(s) failed").into());
    }
    // Returning ends the process (with `_exit`): the threads go with it.
    Ok(())
}

/// Bind the listening socket in a fresh private directory, then fork the
/// server. Binding first means a client can connect as soon as it starts:
/// the kernel queues the connection until the server accepts it. (Python's
/// `Manager.start()` instead waits for the server to send back its address.)
/// The server removes the directory once everyone is in; the parent keeps
/// the `PrivateDir` only to remove it on an error path before that.
fn start_server(
    expected: u32,
    idle: Duration,
    verbose: bool,
) -> Result<(PrivateDir, PathBuf, Child), Box<dyn Error>> {
    let dir = PrivateDir::new("manager")?;
    // Check what mkdir made: the socket's privacy rests on this mode alone.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path())
            .map_err(|e| format!("stat {}: {e}", dir.path().display()))?
            .permissions(),
    ) & 0o7777;
    if mode != 0o700 {
        return Err(format!("{} has mode {mode:04o}, not 0700", dir.path().display()).into());
    }
    let path = dir.path().join("manager.sock");
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    // The closure owns the listener. In the parent, `spawn` drops the unused
    // closure, which closes the parent's copy: only the server accepts.
    let server = spawn("server", || serve(listener, &path, expected, idle, verbose))?;
    Ok((dir, path, server))
}

// ---------------------------------------------------------------------------
// The lesson: five clients, then the checks.
// ---------------------------------------------------------------------------

fn client_key(i: u32) -> String {
    format!("client {i}")
}

/// One client process: connect, append an item, insert its PID, look at the
/// list's length, then keep the connection open for a human for `window`.
fn client(i: u32, path: &Path, window: Duration) -> Result<(), Box<dyn Error>> {
    let pid = std::process::id() as i32;
    let mut proxy = ManagerProxy::connect(path)?;
    let server_pid = proxy.hello()?;
    // Start together, so the server really serves every client at once.
    proxy.wait_all_connected()?;
    proxy.append(Item { client: i, seq: 0 })?;
    proxy.insert(&client_key(i), pid)?;
    let len = proxy.len()?;
    say!(
        "connected to the manager server (pid {server_pid}); appended my item, inserted {:?} -> {pid}; the list now holds {len} item(s)",
        client_key(i)
    );
    thread::sleep(window);
    Ok(())
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let clients = args.int("clients") as u32;
    let window = args.pace().secs(WATCH_SECS);
    // The parent's connection idles while the clients work and linger.
    let idle = REPLY_TIMEOUT + window;

    // No process prints a line until every client is connected and the
    // socket file is gone (see `serve`).
    let (dir, path, mut server) = start_server(clients + 1, idle, true)?;
    let mut children = Vec::new();
    for i in 0..clients {
        children.push(spawn(&format!("client {i}"), || client(i, &path, window))?);
    }
    // Our own proxy, opened after the forks so that no client inherits it.
    let mut proxy = ManagerProxy::connect(&path)?;
    let server_pid = proxy.hello()?;
    if server_pid != server.raw() {
        return Err(format!(
            "the server says its pid is {server_pid}, but we forked {}",
            server.raw()
        )
        .into());
    }
    let connected = proxy.wait_all_connected()?;
    say!(
        "manager server: pid {} (mine is {}); all {connected} connections (mine and {clients} clients') came in through {} (in a directory of mode 0700)",
        server.raw(),
        std::process::id(),
        path.display()
    );
    // Everyone is connected, and the server has removed the socket file and
    // its directory. See that they are gone.
    if path.exists() || dir.path().exists() {
        return Err(format!("{} is still there", dir.path().display()).into());
    }
    drop(dir); // nothing left for it to clean up
    say!("the socket file and its directory are already gone: connections need no file");
    if !window.is_zero() {
        say!(
            "the clients hold their connections for {:.1} s: ps -L -o pid,lwp,stat,comm -p {}",
            window.as_secs_f64(),
            server.raw()
        );
    }

    for (i, child) in children.iter_mut().enumerate() {
        let pid = child.raw();
        let status = child
            .wait_timeout(idle)?
            .ok_or_else(|| format!("client {i} (pid {pid}) still running after {idle:?}"))?;
        if exit_code(status) != Some(0) {
            return Err(format!("client {i} (pid {pid}) {}", describe(status)).into());
        }
    }
    say!("all {clients} clients exited with 0");

    // Read everything back through the proxy, and check it.
    let list = proxy.get_list()?;
    let map = proxy.get_map()?;
    let order: Vec<u32> = list.iter().map(|item| item.client).collect();
    say!("final list, as client numbers in the order the server got them: {order:?}");
    say!("final map: {map:?}");
    for (i, child) in children.iter().enumerate() {
        let i = i as u32;
        let copies = list.iter().filter(|item| item.client == i).count();
        if copies != 1 {
            return Err(
                format!("client {i}'s item is in the list {copies} times, not once").into(),
            );
        }
        let pid = map.get(&client_key(i)).copied();
        if pid != Some(child.raw()) {
            return Err(format!(
                "the map has {pid:?} for {:?}, not its pid {}",
                client_key(i),
                child.raw()
            )
            .into());
        }
    }
    if list.len() != clients as usize || map.len() != clients as usize {
        return Err(format!(
            "expected {clients} items and {clients} keys, found {} and {}",
            list.len(),
            map.len()
        )
        .into());
    }
    say!(
        "every client's item is in the list exactly once ({} items), and the map holds each client's pid",
        list.len()
    );

    // Stop the server the polite way, and see it go.
    proxy.shutdown()?;
    let status = server
        .wait_timeout(PEER_TIMEOUT)?
        .ok_or("the server did not exit after the Shutdown request")?;
    if exit_code(status) != Some(0) {
        return Err(format!("the server {}", describe(status)).into());
    }
    say!(
        "server {} {} after the Shutdown request",
        server.raw(),
        describe(status)
    );
    // A proxy whose server has gone gets an error at once, not a hang.
    match proxy.len() {
        Ok(n) => return Err(format!("the server is gone, yet len() answered {n}").into()),
        Err(e) => say!("a request to the stopped server fails at once: {e}"),
    }
    say!("all checks passed");
    Ok(())
}

// ---------------------------------------------------------------------------
// The benchmark: two clients, one append per round trip.
// ---------------------------------------------------------------------------

/// Two clients append `total` items in all, each append waiting for its
/// reply, as Python's `Manager().list().append` does. Prints one TSV line
/// and nothing else on stdout: this mode is for machines.
fn bench(total: u32) -> Result<(), Box<dyn Error>> {
    const CLIENTS: u32 = 2;
    let share = |i: u32| total / CLIENTS + u32::from(i < total % CLIENTS);
    let (dir, path, mut server) = start_server(CLIENTS + 1, REPLY_TIMEOUT + BENCH_LIMIT, false)?;
    let mut children = Vec::new();
    for i in 0..CLIENTS {
        children.push(spawn(&format!("client {i}"), || {
            let mut proxy = ManagerProxy::connect(&path)?;
            proxy.wait_all_connected()?;
            for seq in 0..share(i) {
                proxy.append(Item { client: i, seq })?;
            }
            io::Result::Ok(())
        })?);
    }
    let mut proxy = ManagerProxy::connect(&path)?;
    proxy.wait_all_connected()?;
    let start = Instant::now();
    drop(dir); // the server has removed it
    for child in &mut children {
        let status = child
            .wait_timeout(BENCH_LIMIT)?
            .ok_or_else(|| format!("client {} still running after {BENCH_LIMIT:?}", child.raw()))?;
        if exit_code(status) != Some(0) {
            return Err(format!("client {} {}", child.raw(), describe(status)).into());
        }
    }
    let elapsed = start.elapsed();

    // The count must be exact: every append exactly once.
    let len = proxy.len()?;
    if len != u64::from(total) {
        return Err(format!("the list holds {len} items, expected {total}").into());
    }
    let mut list = proxy.get_list()?;
    list.sort();
    let all: Vec<Item> = (0..CLIENTS)
        .flat_map(|client| (0..share(client)).map(move |seq| Item { client, seq }))
        .collect();
    if list != all {
        return Err("the list is not every client's appends exactly once".into());
    }
    println!(
        "rs.manager_list_append_2proc\t{:.0}\tops/s",
        f64::from(total) / elapsed.as_secs_f64()
    );

    proxy.shutdown()?;
    let status = server
        .wait_timeout(PEER_TIMEOUT)?
        .ok_or("the server did not exit after the Shutdown request")?;
    if exit_code(status) != Some(0) {
        return Err(format!("the server {}", describe(status)).into());
    }
    Ok(())
}
