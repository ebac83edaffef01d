//! Output that names its process: every line starts with `[role pid]`, so
//! interleaved lines from several processes can be told apart.
//!
//! Each line goes out in a single `write` and is flushed at once, so lines
//! from different processes do not tear into each other (into a pipe, POSIX
//! promises that for writes of up to `PIPE_BUF`, 4096 bytes on Linux; a
//! longer line may be interleaved with another process's), and nothing waits in
//! a buffer that a `fork` would copy (and print twice) or that `_exit` would
//! throw away.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

static ROLE: Mutex<String> = Mutex::new(String::new());

/// Name this process in its output: `parent`, `child`, `worker 2`...
/// The default is `parent`. [`crate::fork::Fork`] sets the child's role.
pub fn set_role(role: &str) {
    let mut r = ROLE.lock().unwrap_or_else(|e| e.into_inner());
    r.clear();
    r.push_str(role);
}

/// This process's role.
pub fn role() -> String {
    let r = ROLE.lock().unwrap_or_else(|e| e.into_inner());
    if r.is_empty() {
        "parent".to_string()
    } else {
        r.clone()
    }
}

/// `[role pid] ` for this process.
pub fn prefix() -> String {
    format!("[{} {}] ", role(), std::process::id())
}

fn line_to(mut w: impl Write, args: fmt::Arguments<'_>) {
    let mut text = prefix();
    fmt::write(&mut text, args).expect("formatting a String cannot fail");
    text.push('\n');
    // A closed stdout (EPIPE, say `| head`) must not panic a lesson.
    let _ = w.write_all(text.as_bytes());
    let _ = w.flush();
}

/// Print one prefixed line on stdout. Use [`say!`](crate::say).
pub fn line(args: fmt::Arguments<'_>) {
    line_to(io::stdout().lock(), args);
}

/// Print one prefixed line on stderr. Use [`warn!`](crate::warn).
pub fn warn_line(args: fmt::Arguments<'_>) {
    line_to(io::stderr().lock(), args);
}

/// Flush stdout and stderr: before a `fork` (or the child would inherit,
/// and later print, a copy of anything still buffered) and before `_exit`
/// (which does not flush).
pub fn flush() {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
}

/// `say!("{} children", n)` prints `[parent 4242] 3 children`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::out::line(format_args!($($arg)*)) };
}

/// Like [`say!`], on stderr.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::out::warn_line(format_args!($($arg)*)) };
}
