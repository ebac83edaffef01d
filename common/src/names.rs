//! Unique, private names for named kernel objects (`/dev/shm`, `/dev/mqueue`)
//! and private directories for socket and FIFO files.
//!
//! A fixed name (`/example_shm`, as the seed's C++ uses) collides with a
//! second copy of the lesson and can be pre-created by another user. Our
//! names are `/<topic>-<lesson pid>-<random>`, created with `O_EXCL` (fail
//! rather than open someone else's object) and mode 0600. The PID is the
//! lesson's main process, remembered when its options are parsed (the
//! `--pace` parser of [`crate::args::Pace`] calls [`remember_lesson_pid`]),
//! so every object of one run, whoever creates it, shares one prefix that
//! tests can look for.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static LESSON_PID: OnceLock<u32> = OnceLock::new();

/// Remember this process as the lesson's main process (idempotent).
pub fn remember_lesson_pid() {
    LESSON_PID.get_or_init(std::process::id);
}

fn lesson_pid() -> u32 {
    *LESSON_PID.get_or_init(std::process::id)
}

fn random_hex() -> io::Result<String> {
    let mut bytes = [0u8; 6];
    // SAFETY: `bytes` is a valid buffer of the given length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The prefix every named object of this run starts with: `<topic>-<pid>-`.
pub fn run_prefix(topic: &str) -> String {
    format!("{topic}-{}-", lesson_pid())
}

/// A fresh object name such as `/shared_value-4242-9f3a1c02be11`.
pub fn unique(topic: &str) -> io::Result<String> {
    Ok(format!("/{}{}", run_prefix(topic), random_hex()?))
}

/// A directory of mode 0700 in the temporary directory, removed with all
/// its contents when dropped by the process that made it. `bind` takes no
/// mode (a socket file's mode follows the umask) and `mkfifo` races with a
/// planted symlink in a shared `/tmp`, so sockets and FIFOs go in here.
pub struct PrivateDir {
    path: PathBuf,
    creator: u32,
}

impl PrivateDir {
    /// Make `<tmp>/<topic>-<pid>-<random>` with mode 0700; fails if it exists.
    pub fn new(topic: &str) -> io::Result<Self> {
        let path = std::env::temp_dir().join(format!("{}{}", run_prefix(topic), random_hex()?));
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))?;
        Ok(PrivateDir {
            path,
            creator: std::process::id(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if std::process::id() == self.creator {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
