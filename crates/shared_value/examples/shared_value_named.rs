//! Demonstrate how a process that did not fork from us reaches our shared
//! memory: through a name in /dev/shm, removed as soon as it has attached.
//!
//! A forked child inherits our mappings; a program started with `Command`
//! (fork + exec) does not: `exec` replaces its address space. It can meet us
//! through a name, as here (an inherited or passed descriptor, from
//! `memfd_create` or `shm_open`, shares the memory too). The parent makes
//! `/dev/shm/shared_value_named-<pid>-<random>` (`shm_open` O_CREAT|O_EXCL,
//! 0600, checked with `stat`), starts this program with the name, waits for
//! the child's PID in the memory, and `shm_unlink`s the name at once. The
//! memory still carries the parent's work order and the child's change.
//!
//! What to observe in the pause (3 s at pace 1): `ls /dev/shm` no longer
//! lists the name; `grep rw-s /proc/<pid>/maps` of both shows it `(deleted)`.
//!
//! ```text
//! cargo run -p shared_value --example shared_value_named
//! strace -f -e trace=openat,mmap,unlink target/debug/examples/shared_value_named
//! ```

use std::error::Error;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use clap::Parser;
use common::program::Program;
use common::signals::Hold;
use common::{names, say, warn};
use nix::fcntl::OFlag;
use nix::sys::mman::{mmap, shm_open, shm_unlink, MapFlags, ProtFlags};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::ftruncate;

/// The memory's layout, known to both processes (they run the same program).
#[repr(C)]
struct Meeting {
    value: AtomicI64,
    attached: AtomicI32, // the child's PID, once it has mapped the memory
    order: AtomicU64,    // increments the parent asks for (0: none yet)
    done_by: AtomicI32,  // the PID of the process that carried them out
}

fn main() {
    let args = Args::parse();
    // The child is this same program, told by `--attach` which name to open.
    let result = match &args.attach {
        Some(name) => child(name, &args),
        None => run(&args),
    };
    if let Err(e) = result {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Res {
    let (n, start) = (args.iterations, args.start);
    say!("a process started with Command (fork + exec) inherits no mapping: it needs a name");
    let name = names::unique("shared_value_named")?;
    let path = format!("/dev/shm{name}");
    // Until shm_unlink the name exists: SIGINT and SIGTERM are held back (blocked)
    // until then, and delivered after. SIGKILL cannot be: keep it short.
    let held = Hold::new()?;
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR;
    let fd = shm_open(name.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR)
        .map_err(|e| format!("shm_open({name}, O_CREAT | O_EXCL): {e}"))?;
    let mut named = Unlink(Some(&name)); // an error from here on removes it
    ftruncate(&fd, size_of::<Meeting>() as i64).map_err(|e| format!("ftruncate: {e}"))?;
    let seg = map(fd)?; // the mapping alone keeps the object alive now
    seg.value.store(start, Relaxed);
    // Check what shm_open made, not only what we asked for.
    let meta = std::fs::metadata(&path).map_err(|e| format!("stat {path}: {e}"))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o600 {
        return Err(format!("{path} has mode {mode:04o}, not 0600").into());
    }
    say!("created {path} (exclusive; mode {mode:04o}, says stat)");

    // A program started with Command is not killed when we die, and inherits
    // our signal mask (it survives exec): it would hold SIGINT back for good.
    // Program::start fixes both before the exec: PR_SET_PDEATHSIG, no mask.
    let mut cmd = Command::new(std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?);
    cmd.args(["--attach", &name, "--pace", &args.pace.factor().to_string()]);
    let mut child = Program::start("child", &mut cmd)?;
    let child_pid = child.pid();

    // Wait for the condition itself: the child's PID in the memory.
    let deadline = Instant::now() + SYSTEM_TIMEOUT;
    while seg.attached.load(Acquire) != child_pid {
        if child.try_wait()?.is_some() || Instant::now() > deadline {
            let e = format!("child {child_pid} ended or took {SYSTEM_TIMEOUT:?}, not attached");
            return Err(e.into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }

    // Everyone who needs the name has opened it: remove it now.
    named.0 = None;
    shm_unlink(name.as_str()).map_err(|e| format!("shm_unlink({name}): {e}"))?;
    drop(held);
    if Path::new(&path).exists() {
        return Err(format!("{path} still exists after shm_unlink").into());
    }
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let line = maps.lines().find(|l| l.contains(&name)).unwrap_or_default();
    let mapped = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if !mapped.ends_with("(deleted)") {
        return Err(format!("/proc/self/maps should mark the memory deleted: {mapped}").into());
    }
    say!("child {child_pid} attached; removed the name: {path} no longer exists");
    say!("but the memory is still mapped here: {mapped}");

    let (me, secs) = (std::process::id(), args.pace.secs(PAUSE_SECS).as_secs_f64());
    say!("pausing {secs:.1} s; look: grep rw-s /proc/{me}/maps /proc/{child_pid}/maps");
    args.pace.sleep(PAUSE_SECS);
    // The work order travels through the memory, not the (gone) name.
    seg.order.store(n, Release);
    child.expect_success(CHILD_TIMEOUT)?;

    // The child has ended and been reaped: every write it made is visible.
    let (value, done_by) = (seg.value.load(Relaxed), seg.done_by.load(Relaxed));
    if value != start + n as i64 || done_by != child_pid {
        let e = format!("found {value} written by {done_by}, not {start} + {n} by {child_pid}");
        return Err(e.into());
    }
    say!("the child's change is seen here: value {value} == {start} + {n}, written by process {done_by}");
    say!("all checks passed");
    Ok(())
}

/// The child: a fresh program (this one, exec'd) that knows the memory only
/// by the name it was given. It dies with the parent and lets SIGINT and
/// SIGTERM through: the parent's `Program::start` saw to both.
fn child(name: &str, args: &Args) -> Res {
    common::out::set_role("child");
    let fd = shm_open(name, OFlag::O_RDWR, Mode::empty())
        .map_err(|e| format!("shm_open({name}): {e}"))?;
    let size = fstat(&fd).map_err(|e| format!("fstat: {e}"))?.st_size as usize;
    if size < size_of::<Meeting>() {
        return Err(format!("{name} has {size} bytes, too few for a Meeting").into());
    }
    let seg = map(fd)?;
    let value = seg.value.load(Relaxed);
    say!("opened {name} by its name; the value in it is {value}");
    seg.attached.store(std::process::id() as i32, Release);

    // Wait for the parent's order; it comes after the name is gone.
    let deadline = Instant::now() + SYSTEM_TIMEOUT + args.pace.secs(PAUSE_SECS);
    let n = loop {
        match seg.order.load(Acquire) {
            0 if Instant::now() > deadline => return Err("no order from the parent".into()),
            0 => std::thread::sleep(Duration::from_millis(1)),
            n => break n,
        }
    };
    for _ in 0..n {
        seg.value.fetch_add(1, Relaxed);
    }
    seg.done_by.store(std::process::id() as i32, Relaxed);
    let now = seg.value.load(Relaxed);
    say!("the name is gone, the memory is not: added {n}, the value is now {now}");
    Ok(())
}

/// `mmap(MAP_SHARED)` the object `fd` and see it as a `Meeting`; `fd` is
/// closed on return. Never unmapped: it lasts as long as the process.
fn map(fd: OwnedFd) -> Result<&'static Meeting, Box<dyn Error>> {
    let (len, prot) = (
        size_of::<Meeting>(),
        ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
    );
    let len = NonZeroUsize::new(len).ok_or("a Meeting has no size")?;
    // SAFETY: a new mapping of `len` bytes of an object that has them
    // (ftruncate, or fstat in the child); it aliases no Rust object.
    let ptr = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, &fd, 0) }
        .map_err(|e| format!("mmap: {e}"))?;
    // SAFETY: page aligned; zero bytes (as ftruncate fills) are a valid
    // Meeting of atomics; never unmapped, so `'static` holds.
    Ok(unsafe { ptr.cast::<Meeting>().as_ref() })
}

/// Removes the name when dropped unless taken out: an error leaves nothing.
struct Unlink<'a>(Option<&'a str>);
impl Drop for Unlink<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.0.take() {
            let _ = shm_unlink(name);
        }
    }
}

type Res = Result<(), Box<dyn Error>>;

/// Demonstrate how a process started with Command meets our shared memory by name.
#[derive(Parser)]
struct Args {
    /// Increments the child makes (1-1000000)
    #[arg(long, value_name = "N", default_value_t = 100_000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    iterations: u64,
    /// The value to start from (0-1000000000)
    #[arg(long, value_name = "N", default_value_t = 1000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
    start: i64,
    /// (For the child the parent starts: the name to open.)
    #[arg(long, hide = true)]
    attach: Option<String>,
    #[command(flatten)]
    pace: common::Pace,
}

/// The pause to look (at pace 1); limits for waits on the child (unscaled).
const PAUSE_SECS: f64 = 3.0;
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
