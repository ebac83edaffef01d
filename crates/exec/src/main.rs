//! Demonstrate how a Rust program runs other programs with
//! `std::process::Command`: pipes to and from the child without deadlock,
//! exit statuses decoded, a timeout that kills a runaway child, the child's
//! environment and working directory, and why user input never goes
//! through `sh -c`.
//!
//! Part 1 runs small programs (`true`, `false`, `sh -c 'exit 3'`, a shell
//! that kills itself, a missing program) and decodes what each exit status
//! says. Part 2 runs this same binary as a child that reads a request on
//! its stdin, then writes 1 MiB to stdout and 1 MiB to stderr, a chunk to
//! each in turn. Reading stdout to its end before touching stderr
//! deadlocks: the lesson shows the child asleep in `write` with its stderr
//! pipe full while stdout has nothing more to give, and kills it. Then it
//! reads both pipes as data arrives, with `poll`, and checks the byte counts
//! and checksums of both streams. Part 3 gives `sleep 600` a deadline,
//! waits on a pidfd with `poll`, and kills it when the time is up. Part 4
//! starts a child with an empty environment plus one variable, in a private
//! directory, and compares with what a child inherits by default. Part 5
//! passes the file name `x; echo INJECTED` to programs: as an argument it
//! stays one argument; pasted into a `sh -c` command line, the shell runs
//! the second command (only `echo`, with an empty environment, in a private
//! directory).
//!
//! Key points:
//! - `Command` runs a program directly, with an argument vector: no shell
//!   parses the arguments, so spaces, `;` and `$` in them mean nothing.
//! - A pipe holds 64 KiB by default. A child that fills one pipe while the
//!   parent waits on the other blocks forever. Read both at once: `poll`
//!   over both (as here, and as `Command::output()` does inside), or a
//!   thread per pipe. `output()` has no timeout, so this lesson writes the
//!   loop out and adds one.
//! - Close the child's stdin when the input is done: a child that reads to
//!   end of file waits for that.
//! - An exit status is either an exit code (`code()`) or the signal that
//!   killed the process (`signal()`); a shell reports the latter as 128+n.
//!   A program that cannot be started is an error from `spawn`, not a status.
//! - A `Command` child outlives its parent unless asked otherwise.
//!   `pre_exec` runs a closure in the child between `fork` and `exec`; ours
//!   calls `prctl(PR_SET_PDEATHSIG, SIGKILL)`, so a SIGKILLed lesson leaves
//!   no runaway behind. Only async-signal-safe calls are allowed there, and
//!   `prctl` and `getppid` are plain system calls. (The signal fires when
//!   the *thread* that spawned the child ends, so spawn from a thread that
//!   lives as long as the child should.)
//!
//! What to observe, in another terminal: during part 3,
//! `ps -o pid,ppid,stat,comm --ppid <lesson pid>` shows `sleep` in state S
//! until the deadline; `cat /proc/<sleep pid>/status | grep PPid`. Kill the
//! lesson with `kill -9 <lesson pid>` and the `sleep` goes with it.
//!
//! The pitfall: `Command::new("sh").arg("-c").arg(format!("cat {name}"))`.
//! The shell parses the name as code: `;`, `$( )`, backquotes and `&&` run
//! whatever follows. Pass data as arguments (`Command::new("cat").arg(name)`),
//! or, if a shell is really needed, as a positional parameter:
//! `sh -c 'cat -- "$1"' sh "$name"`.
//!
//! Seed: none among the fourteen; lesson 18 here, answering the JS example
//! `15_run_commands.js` (`exec`, `execFile`, timeouts, shell injection).
//! That example warns about injection in a comment; this one shows it
//! happen, harmlessly, and proves the fix.
//!
//! Run with:
//! ```text
//! cargo run -p exec
//! cargo run -p exec -- --kib 4096 --timeout 5
//! ```
//!
//! Try it:
//! - In `communicate`, read stdout to its end before stderr
//!   (`read_to_end`), and watch the lesson hang in `ps` (state S) until
//!   you kill it.
//! - Drop `dies_with_me` from `spawn_piped`, run the lesson, and during
//!   part 3 `kill -9` it: the `sleep 600` stays, adopted by init or by
//!   the nearest subreaper (a `systemd --user`, a container's init).
//! - Change the user's file name to `x$(echo INJECTED)` or `` x`id` ``.
//!
//! See also: `pipe_communication` (pipes between forked processes),
//! `signals` (SIGCHLD, kill), `basic_process` (a fresh copy of a program).

use std::collections::BTreeSet;
use std::error::Error;
use std::ffi::c_int;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::names::PrivateDir;
use common::opts::{Args, Opt, Pace, Spec};
use common::{describe, out, procfs, say, warn};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::{getppid, Pid};

const SPEC: Spec = Spec {
    name: "exec",
    about: "Demonstrate how to run other programs safely: pipes without deadlock, exit statuses, timeouts, environment, and no shell for user input.",
    options: &[
        Opt::int(
            "kib",
            "KiB the child writes to each of stdout and stderr",
            1024,
            256,
            16384,
        ),
        Opt::float(
            "timeout",
            "seconds the runaway child may run before it is killed",
            2.0,
            0.0,
            60.0,
        ),
    ],
};

/// The environment variable that makes a run of this binary a child of the
/// lesson, and which one. (Python's spawn start method does the same with a
/// hidden command-line flag.)
const CHILD_ENV: &str = "LESSON_CHILD";

/// The child writes in chunks of this size, PIPE_BUF: a write of at most
/// PIPE_BUF bytes to a pipe is atomic, all or nothing.
const CHUNK: usize = 4096;

/// The seeds of the two streams the child writes.
const SEED_OUT: u64 = 0x5eed_0001;
const SEED_ERR: u64 = 0x5eed_0002;

/// How long a pause for a human lasts at pace 1.
const PAUSE_SECS: f64 = 1.0;

/// How long a child that should finish quickly may take. A safety floor,
/// not scaled by the pace.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);

/// The file name a user typed.
const USER_INPUT: &str = "x; echo INJECTED";

fn main() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("talker") => child_main("talker", talker),
        Ok("show-env") => child_main("show-env", show_env),
        Ok(other) => {
            warn!("error: {CHILD_ENV}={other:?} is not a child mode of this lesson");
            std::process::exit(2);
        }
        Err(_) => {}
    }
    let args = Args::parse(&SPEC);
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let pace = args.pace();
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    exit_statuses()?;
    pipes_without_deadlock(&exe, args.usize("kib") * 1024)?;
    a_deadline(pace.secs(args.float("timeout")))?;
    environment_and_directory(&exe, pace)?;
    no_shell_for_user_input(pace)?;
    say!("all checks passed");
    Ok(())
}

// ---------------------------------------------------------------------------
// Starting a child, and talking to it.
// ---------------------------------------------------------------------------

/// Make the child die with us: SIGKILL when the lesson ends, however it ends.
fn dies_with_me(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs in the child between fork and exec, where (the
    // parent may have threads) only async-signal-safe calls are allowed. It
    // makes two system calls, prctl and getppid, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            set_pdeathsig(Signal::SIGKILL)?;
            // We may have died before the prctl: then nobody will kill it.
            if getppid().as_raw() != parent {
                return Err(io::Error::from(Errno::ESRCH));
            }
            Ok(())
        })
    }
}

/// Start `cmd` with all three standard streams piped to us.
fn spawn_piped(cmd: &mut Command) -> Result<Child, Box<dyn Error>> {
    dies_with_me(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn()
        .map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()).into())
}

/// What a finished child left us.
struct Ran {
    status: ExitStatus,
    out: Vec<u8>,
    err: Vec<u8>,
    /// It ran past its deadline and was killed.
    timed_out: bool,
}

/// A status in words, with the same wording as the `fork` lessons.
fn status_words(pid: u32, status: ExitStatus) -> String {
    match WaitStatus::from_raw(Pid::from_raw(pid as i32), status.into_raw()) {
        Ok(s) => describe(s),
        Err(_) => format!("{status}"),
    }
}

/// Feed `input` to the child's stdin (then close it), collect its stdout and
/// stderr, and wait for it to end, all at once, in one `poll` loop. Past
/// `limit` the child is killed. This is `Command::output()` plus stdin and a
/// deadline.
fn communicate(child: &mut Child, input: &[u8], limit: Duration) -> Result<Ran, Box<dyn Error>> {
    let pid = child.id();
    // A pidfd becomes readable when the child ends: it can sit in the same
    // poll as the pipes. (Safe to open by PID: an unreaped child's PID
    // cannot be reused.)
    let pidfd: OwnedFd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid as i32).ok_or("child PID is not positive")?,
        rustix::process::PidfdFlags::empty(),
    )
    .map_err(|e| format!("pidfd_open: {e}"))?;
    // Dropping a pipe end closes it. An empty input closes stdin at once.
    let mut stdin = child.stdin.take().filter(|_| !input.is_empty());
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut written = 0;
    let mut exited = false;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + limit;

    #[derive(Clone, Copy)]
    enum Fd {
        In,
        Out,
        Err,
        Exit,
    }
    while stdin.is_some() || stdout.is_some() || stderr.is_some() || !exited {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Too late: SIGKILL, then reap it (or it stays a zombie).
            child.kill().map_err(|e| format!("kill: {e}"))?;
            let status = child.wait().map_err(|e| format!("waitpid: {e}"))?;
            return Ok(Ran {
                status,
                out,
                err,
                timed_out: true,
            });
        }
        let mut fds = Vec::new();
        let mut which = Vec::new();
        if let Some(p) = &stdin {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLOUT));
            which.push(Fd::In);
        }
        if let Some(p) = &stdout {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            which.push(Fd::Out);
        }
        if let Some(p) = &stderr {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            which.push(Fd::Err);
        }
        if !exited {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
            which.push(Fd::Exit);
        }
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}").into()),
        }
        let ready: Vec<Fd> = fds
            .iter()
            .zip(&which)
            .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, w)| *w)
            .collect();
        drop(fds);
        for fd in ready {
            match fd {
                Fd::In => {
                    // POLLOUT on a pipe means room for PIPE_BUF bytes: a
                    // write of at most that much does not block.
                    let end = (written + CHUNK).min(input.len());
                    if let Some(p) = stdin.as_mut() {
                        match p.write(&input[written..end]) {
                            Ok(n) => written += n,
                            // The child closed its stdin: it wants no more.
                            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                                written = input.len()
                            }
                            Err(e) => return Err(format!("write(child stdin): {e}").into()),
                        }
                    }
                    if written == input.len() {
                        stdin = None; // close: the child sees end of file
                    }
                }
                Fd::Out => {
                    if read_some(&mut stdout, &mut out, &mut buf)? == 0 {
                        stdout = None;
                    }
                }
                Fd::Err => {
                    if read_some(&mut stderr, &mut err, &mut buf)? == 0 {
                        stderr = None;
                    }
                }
                Fd::Exit => exited = true,
            }
        }
    }
    // It has ended: this reaps it at once.
    let status = child.wait().map_err(|e| format!("waitpid: {e}"))?;
    Ok(Ran {
        status,
        out,
        err,
        timed_out: false,
    })
}

/// One `read` from a pipe that poll said is ready; 0 at end of file.
fn read_some(
    pipe: &mut Option<impl Read>,
    into: &mut Vec<u8>,
    buf: &mut [u8],
) -> Result<usize, String> {
    let Some(p) = pipe.as_mut() else { return Ok(0) };
    loop {
        match p.read(buf) {
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read(child pipe): {e}")),
        }
    }
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Part 1: what an exit status says.
// ---------------------------------------------------------------------------

fn sh(script: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script);
    cmd
}

fn exit_statuses() -> Result<(), Box<dyn Error>> {
    say!("part 1: run a program, decode its exit status");
    let cases: [(&str, Command, &str); 5] = [
        ("true", Command::new("true"), "exited with 0"),
        ("false", Command::new("false"), "exited with 1"),
        ("sh -c 'exit 3'", sh("exit 3"), "exited with 3"),
        (
            "sh -c 'kill -TERM $$'",
            sh("kill -TERM $$"),
            "killed by SIGTERM",
        ),
        (
            "sh -c exec-lesson-no-such-program",
            sh("exec-lesson-no-such-program"),
            "exited with 127",
        ),
    ];
    for (shown, mut cmd, expected) in cases {
        let mut child = spawn_piped(&mut cmd)?;
        let pid = child.id();
        let ran = communicate(&mut child, b"", SYSTEM_TIMEOUT)?;
        let words = status_words(pid, ran.status);
        say!(
            "{shown}: {words} (code() = {:?}, signal() = {:?})",
            ran.status.code(),
            ran.status.signal()
        );
        if let Some(line) = lines(&ran.err).first() {
            say!("  and on its stderr: {line:?}");
        }
        if words != expected || ran.timed_out {
            return Err(format!("{shown}: expected {expected}, got {words}").into());
        }
    }
    // No shell in between: a missing program is an error from spawn, and no
    // process ever ran, so there is no status at all.
    match Command::new("exec-lesson-no-such-program").spawn() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            say!("Command::new(\"exec-lesson-no-such-program\").spawn(): error: {e}: nothing ran, no status")
        }
        Err(e) => return Err(format!("spawn of a missing program: unexpected error {e}").into()),
        Ok(mut c) => {
            let _ = c.kill();
            let _ = c.wait();
            return Err("a missing program started".into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 2: a child that writes a lot to both stdout and stderr.
// ---------------------------------------------------------------------------

/// A reproducible stream of bytes (xorshift64), so both sides can compute
/// the same checksum.
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for part in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            part.copy_from_slice(&self.0.to_le_bytes()[..part.len()]);
        }
    }
}

/// FNV-1a, 64 bits: a checksum of a byte string.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn expected_stream(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Stream(seed).fill(&mut v);
    v
}

fn talker_command(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, "talker");
    cmd
}

fn request(bytes: usize) -> String {
    format!("{bytes} {SEED_OUT} {SEED_ERR}\n")
}

/// The bytes waiting in a pipe (FIONREAD).
fn queued(fd: BorrowedFd<'_>) -> Result<usize, String> {
    let mut n: c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(format!("ioctl(FIONREAD): {}", io::Error::last_os_error()));
    }
    Ok(n as usize)
}

/// How many bytes a pipe holds (F_GETPIPE_SZ), 64 KiB unless changed.
fn pipe_capacity(fd: BorrowedFd<'_>) -> Result<usize, String> {
    // SAFETY: F_GETPIPE_SZ takes no argument and only reads the pipe.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if n < 0 {
        return Err(format!(
            "fcntl(F_GETPIPE_SZ): {}",
            io::Error::last_os_error()
        ));
    }
    Ok(n as usize)
}

fn pipes_without_deadlock(exe: &Path, bytes: usize) -> Result<(), Box<dyn Error>> {
    say!(
        "part 2: a child writes {} KiB to stdout and {} KiB to stderr, a {CHUNK}-byte chunk to each in turn",
        bytes / 1024,
        bytes / 1024
    );
    let req = request(bytes);

    // The trap: read stdout to its end, then stderr.
    let mut child = spawn_piped(&mut talker_command(exe))?;
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let stderr = child.stderr.take().ok_or("no stderr pipe")?;
    {
        // A short request fits in the empty pipe: this write cannot block.
        let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
        stdin
            .write_all(req.as_bytes())
            .map_err(|e| format!("write(child stdin): {e}"))?;
    } // closed: end of file for the child
    let cap = pipe_capacity(stderr.as_fd())?;
    if cap >= bytes {
        return Err(
            format!("the pipes hold {cap} bytes, as much as the data: use a larger --kib").into(),
        );
    }
    // Before each stderr chunk the child writes a stdout chunk. Once the
    // stderr pipe is full (cap bytes) the child has written one more stdout
    // chunk and then blocks: stdout gives exactly this much and no more.
    let stuck_at = cap + CHUNK;
    let mut got = 0;
    let mut sink = stdout;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    while got < stuck_at {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(sink.as_fd(), PollFlags::POLLIN)];
        if poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        )? == 0
        {
            return Err(format!("stdout stopped after {got} bytes, expected {stuck_at}").into());
        }
        match sink.read(&mut buf) {
            Ok(0) => {
                return Err(
                    format!("stdout ended after {got} bytes: the child did not block").into(),
                )
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read(child stdout): {e}").into()),
        }
    }
    if procfs::wait_for(pid as i32, SYSTEM_TIMEOUT, |s| {
        s.is_some_and(|s| s.state == 'S')
    })?
    .is_err()
    {
        return Err(format!("child {pid} is not asleep").into());
    }
    let (in_err, in_out) = (queued(stderr.as_fd())?, queued(sink.as_fd())?);
    // Where it sleeps is only a detail of the message: if the kernel hides it
    // (or the read fails), the line just leaves it out.
    let wchan = match procfs::wchan(pid as i32) {
        Ok(Some(w)) => format!(", wchan {w}"),
        Ok(None) | Err(_) => String::new(),
    };
    say!(
        "reading stdout only: it gave {got} bytes, then nothing ({in_out} waiting); the child {pid} is asleep (state S{wchan}) in write() to stderr, whose pipe is full ({in_err} of {cap} bytes)"
    );
    if in_err != cap || in_out != 0 {
        return Err("the child is not stuck the way the lesson says".into());
    }
    say!("the parent waits for stdout's end, the child for room in stderr: a deadlock; killing it");
    child.kill().map_err(|e| format!("kill: {e}"))?;
    let status = child.wait().map_err(|e| format!("waitpid: {e}"))?;
    say!("child {pid} {}", status_words(pid, status));
    drop((sink, stderr));

    // The fix: read both pipes as data arrives.
    say!("the fix: poll both pipes and read whichever has data");
    let mut child = spawn_piped(&mut talker_command(exe))?;
    let pid = child.id();
    let ran = communicate(&mut child, req.as_bytes(), SYSTEM_TIMEOUT)?;
    say!("child {pid} {}", status_words(pid, ran.status));
    if !ran.status.success() || ran.timed_out {
        return Err(format!(
            "the talker failed: {}",
            String::from_utf8_lossy(&ran.err[ran.err.len().saturating_sub(200)..])
        )
        .into());
    }
    for (name, got, seed) in [
        ("stdout", &ran.out, SEED_OUT),
        ("stderr", &ran.err, SEED_ERR),
    ] {
        let (sum, want) = (checksum(got), checksum(&expected_stream(seed, bytes)));
        say!(
            "{name}: {} bytes, checksum {sum:016x} (expected {bytes} bytes, {want:016x})",
            got.len()
        );
        if got.len() != bytes || sum != want {
            return Err(format!("{name} does not hold what the child wrote").into());
        }
    }
    Ok(())
}

/// The child of part 2: read a request on stdin until end of file, then
/// write the two streams. Raw `write` calls on fds 1 and 2: no buffering.
fn talker() -> Result<i32, Box<dyn Error>> {
    let mut req = String::new();
    io::stdin()
        .read_to_string(&mut req)
        .map_err(|e| format!("read(stdin): {e}"))?;
    let n: Vec<u64> = req
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [bytes, seed_out, seed_err] = n[..] else {
        return Err(format!("bad request {req:?}").into());
    };
    let (mut a, mut b) = (Stream(seed_out), Stream(seed_err));
    let mut chunk = [0u8; CHUNK];
    for _ in 0..bytes as usize / CHUNK {
        a.fill(&mut chunk);
        write_all(io::stdout().as_fd(), &chunk)?;
        b.fill(&mut chunk);
        write_all(io::stderr().as_fd(), &chunk)?;
    }
    Ok(0)
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

/// Run a child mode of this binary and exit with what it returns.
fn child_main(role: &str, body: fn() -> Result<i32, Box<dyn Error>>) -> ! {
    out::set_role(role);
    let code = body().unwrap_or_else(|e| {
        warn!("error: {e}");
        1
    });
    std::process::exit(code)
}

// ---------------------------------------------------------------------------
// Part 3: a deadline for a runaway child.
// ---------------------------------------------------------------------------

fn a_deadline(limit: Duration) -> Result<(), Box<dyn Error>> {
    say!("part 3: a runaway child gets a deadline");
    let mut child = spawn_piped(Command::new("sleep").arg("600"))?;
    let pid = child.id();
    say!(
        "started child {pid}: sleep 600; it gets {:.1} s. See it: ps -o pid,ppid,stat,comm --ppid {}",
        limit.as_secs_f64(),
        std::process::id()
    );
    let ran = communicate(&mut child, b"", limit)?;
    let words = status_words(pid, ran.status);
    say!(
        "{}: child {pid} {words}",
        if ran.timed_out {
            "deadline passed, killed"
        } else {
            "ended in time"
        }
    );
    if !ran.timed_out || ran.status.signal() != Some(libc::SIGKILL) {
        return Err(format!("expected the runaway killed by SIGKILL, got {words}").into());
    }
    if procfs::state(pid as i32)?.is_some() {
        return Err(format!("child {pid} is still in /proc after being reaped").into());
    }
    say!("child {pid} is gone from /proc: killed and reaped");
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 4: the child's environment and working directory.
// ---------------------------------------------------------------------------

/// The child of part 4: print its working directory and its environment.
fn show_env() -> Result<i32, Box<dyn Error>> {
    let mut text = String::new();
    let cwd = std::env::current_dir().map_err(|e| format!("getcwd: {e}"))?;
    text.push_str(&format!("cwd {}\n", cwd.display()));
    for (k, v) in std::env::vars_os() {
        text.push_str(&format!(
            "env {}={}\n",
            k.to_string_lossy(),
            v.to_string_lossy()
        ));
    }
    io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| format!("write(stdout): {e}"))?;
    Ok(0)
}

/// What a `show-env` child reported: its directory and its variables.
fn seen_by(ran: &Ran) -> Result<(PathBuf, BTreeSet<String>), Box<dyn Error>> {
    if !ran.status.success() || ran.timed_out {
        return Err(format!("show-env failed: {}", String::from_utf8_lossy(&ran.err)).into());
    }
    let mut cwd = None;
    let mut vars = BTreeSet::new();
    for line in lines(&ran.out) {
        if let Some(d) = line.strip_prefix("cwd ") {
            cwd = Some(PathBuf::from(d));
        } else if let Some(v) = line.strip_prefix("env ") {
            vars.insert(v.to_string());
        }
    }
    Ok((cwd.ok_or("show-env printed no directory")?, vars))
}

fn environment_and_directory(exe: &Path, pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 4: the child's environment and working directory");
    // A pause for a human before the private directory exists, none while
    // it does: it is removed as soon as the children are done.
    pace.sleep(PAUSE_SECS);
    let dir = PrivateDir::new("exec")?;
    let dir_path = dir
        .path()
        .canonicalize()
        .map_err(|e| format!("realpath: {e}"))?;
    let run_child = |cmd: &mut Command| -> Result<Ran, Box<dyn Error>> {
        let mut child = spawn_piped(cmd)?;
        communicate(&mut child, b"", SYSTEM_TIMEOUT)
    };
    let cleared = run_child(
        Command::new(exe)
            .env_clear()
            .env(CHILD_ENV, "show-env")
            .env("GREETING", "hello from the parent")
            .current_dir(&dir_path),
    )?;
    let inherited = run_child(Command::new(exe).env(CHILD_ENV, "show-env"))?;
    drop(dir);

    let (cwd, vars) = seen_by(&cleared)?;
    let want: BTreeSet<String> = [
        format!("{CHILD_ENV}=show-env"),
        "GREETING=hello from the parent".to_string(),
    ]
    .into();
    say!(
        "env_clear + env: the child sees exactly {:?}; current_dir: its directory is {}",
        vars,
        cwd.display()
    );
    if vars != want || cwd != dir_path {
        return Err("the child's environment or directory is not what we gave it".into());
    }
    let (cwd, vars) = seen_by(&inherited)?;
    let mut ours: BTreeSet<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    let n = ours.len();
    ours.insert(format!("{CHILD_ENV}=show-env"));
    let here = std::env::current_dir().map_err(|e| format!("getcwd: {e}"))?;
    say!(
        "by default: the child inherits all {n} of our variables (plus {CHILD_ENV}) and our directory, {}",
        cwd.display()
    );
    if vars != ours || cwd != here {
        return Err("the child did not inherit our environment and directory".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 5: user input never goes through a shell.
// ---------------------------------------------------------------------------

fn no_shell_for_user_input(pace: Pace) -> Result<(), Box<dyn Error>> {
    say!("part 5: a user gives the file name {USER_INPUT:?}");
    pace.sleep(PAUSE_SECS);
    // Only `printf` and `echo` run, in a private directory that is removed
    // at once, the shells with an empty environment: nothing here can harm.
    let dir = PrivateDir::new("exec")?;
    let run_child = |cmd: &mut Command| -> Result<Vec<String>, Box<dyn Error>> {
        let mut child = spawn_piped(cmd.current_dir(dir.path()))?;
        let ran = communicate(&mut child, b"", SYSTEM_TIMEOUT)?;
        if !ran.status.success() || ran.timed_out {
            let err = String::from_utf8_lossy(&ran.err).into_owned();
            return Err(format!("{:?} failed: {err}", cmd.get_program()).into());
        }
        Ok(lines(&ran.out))
    };
    // 1. An argument: printf receives the name as one argv entry, untouched.
    let as_argument = run_child(Command::new("printf").args(["[%s]\n", USER_INPUT]))?;
    // 2. Pasted into a shell command line: the shell parses it as code.
    let command_line = format!("echo processing {USER_INPUT}");
    let pasted = run_child(
        Command::new("/bin/sh")
            .env_clear()
            .args(["-c", &command_line]),
    )?;
    // 3. When a shell is needed: a fixed script, the name as "$1". The
    //    shell expands "$1" after parsing, so it stays one word.
    let script = "printf '[%s]\\n' \"$1\"";
    let positional = run_child(
        Command::new("/bin/sh")
            .env_clear()
            .args(["-c", script, "sh", USER_INPUT]),
    )?;
    drop(dir);

    let one_piece = [format!("[{USER_INPUT}]")];
    say!("Command::new(\"printf\").args([\"[%s]\\n\", name]): printf printed {as_argument:?}: one argument, as typed");
    say!("sh -c {command_line:?}: the shell printed {pasted:?}");
    say!("sh -c `{script}` sh name: the shell printed {positional:?}: one word");
    if as_argument != one_piece || positional != one_piece {
        return Err("the name did not arrive as one piece".into());
    }
    if pasted != ["processing x", "INJECTED"] {
        return Err("the injection did not show as expected".into());
    }
    say!("pasted into the command line, the `;` ended the echo and the shell ran `echo INJECTED`, a command chosen by the user; with `rm -rf ~` in the name it would have run that");
    Ok(())
}
