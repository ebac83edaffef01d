//! Demonstrate what `fork` copies and what it shares of the open files: the
//! child gets a copy of the parent's file descriptor table, and each copied
//! descriptor points to the same open file description, whose file offset
//! and status flags (`O_APPEND`...) both processes then share.
//!
//! The parent opens a file and writes one line. The child writes its line
//! through its copy of the descriptor, turns on `O_APPEND` and closes its
//! copy. The parent then checks: its offset moved past the child's line (a
//! shared offset: the lines follow each other, none overwrites another);
//! its descriptor shows `O_APPEND`, which only the child set (shared flags);
//! its descriptor still works after the child closed its own (a copied
//! table). The file lives in a private directory that is removed at once,
//! so nothing is left behind; the open descriptors keep it alive.
//!
//! What to observe while the child pauses (2 s at pace 1): `cat
//! /proc/<child pid>/fdinfo/<fd>` and the parent's show the same `pos`;
//! `ls -l /proc/<child pid>/fd` shows the file, "(deleted)".
//!
//! ```text
//! cargo run -p basic_process --example basic_process_open_files
//! ```

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use clap::Parser;
use common::names::PrivateDir;
use common::{describe, say, warn};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getpid, getppid, lseek, ForkResult, Whence};

const PARENT_LINE: &[u8] = b"parent: written before fork\n";
const CHILD_LINE: &[u8] = b"child: written through my copy of the descriptor\n";
const LAST_LINE: &[u8] = b"parent: written after the child closed its copy\n";

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        warn!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let mut file = {
        let dir = PrivateDir::new("basic_process_open_files")?;
        let path = dir.path().join("shared.txt");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        file
    }; // the directory and the file's name are gone; the descriptor keeps it
    let fd = file.as_raw_fd();
    file.write_all(PARENT_LINE)?;
    say!(
        "opened a file as descriptor {fd}, wrote {} bytes: offset {}",
        PARENT_LINE.len(),
        offset(&file)?
    );

    let me = getpid();
    io::stdout().flush()?;
    // SAFETY: single-threaded; the child writes, sleeps and leaves with `_exit`.
    let child = match unsafe { fork() }? {
        ForkResult::Child => {
            common::out::set_role("child");
            let code = match child_work(file, me, args.pace) {
                Ok(()) => 0,
                Err(e) => {
                    warn!("error: {e}");
                    1
                }
            };
            // SAFETY: `_exit` ends the process at once; nothing runs after it.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    say!("forked child {child}; see it: cat /proc/{child}/fdinfo/{fd} /proc/{me}/fdinfo/{fd}");
    // A blocking wait: this child only writes, pauses and exits.
    let status = waitpid(child, None)?;
    say!("child {child} {}", describe(status));
    if status != WaitStatus::Exited(child, 0) {
        return Err(format!(
            "expected the child to exit with 0, got {}",
            describe(status)
        )
        .into());
    }

    // The offset is the description's, so the child's write moved it here.
    let at = offset(&file)?;
    let expected = (PARENT_LINE.len() + CHILD_LINE.len()) as i64;
    if at != expected {
        return Err(
            format!("my offset is {at}, expected {expected}: the offset was not shared").into(),
        );
    }
    say!("my offset is now {at}: the child's write moved it, the offset is shared");
    // So are the status flags: only the child turned on O_APPEND.
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_APPEND) {
        return Err("my descriptor has no O_APPEND: the flags were not shared".into());
    }
    say!("my descriptor has O_APPEND, which only the child set: the flags are shared");
    // The child closed its descriptor; ours is a separate entry in our table.
    file.write_all(LAST_LINE)
        .map_err(|e| format!("write after the child closed its copy: {e}"))?;
    say!("descriptor {fd} still works after the child closed its copy: the table was copied");

    let mut all = vec![0u8; 4096];
    let n = file.read_at(&mut all, 0)?;
    let want = [PARENT_LINE, CHILD_LINE, LAST_LINE].concat();
    if all[..n] != want[..] {
        return Err(format!("the file holds {:?}", String::from_utf8_lossy(&all[..n])).into());
    }
    for line in String::from_utf8_lossy(&want).lines() {
        say!("  the file: {line}");
    }
    say!("three lines one after the other, none overwritten; all checks passed");
    Ok(())
}

/// The child's part: write through the inherited descriptor, set O_APPEND
/// on it, pause, close it.
fn child_work(
    mut file: File,
    parent: nix::unistd::Pid,
    pace: common::Pace,
) -> Result<(), Box<dyn Error>> {
    // This child pauses: die with the parent, and close the race where it died first.
    set_pdeathsig(Signal::SIGKILL)?;
    if getppid() != parent {
        return Err(format!("my parent {parent} is gone").into());
    }
    let fd = file.as_raw_fd();
    say!(
        "my descriptor {fd} is at offset {}, where the parent left it",
        offset(&file)?
    );
    file.write_all(CHILD_LINE)?;
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
    fcntl(&file, FcntlArg::F_SETFL(flags | OFlag::O_APPEND))?;
    say!(
        "wrote {} bytes: offset {}; turned on O_APPEND",
        CHILD_LINE.len(),
        offset(&file)?
    );
    pace.sleep(2.0);
    drop(file); // close(2) on the child's copy only
    say!("closed my descriptor {fd}");
    Ok(())
}

/// The descriptor's file offset: `lseek(fd, 0, SEEK_CUR)`.
fn offset(file: impl AsFd) -> nix::Result<i64> {
    lseek(file, 0, Whence::SeekCur)
}

/// Demonstrate what fork copies (the descriptor table) and shares (offsets, flags).
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pace: common::Pace,
}
