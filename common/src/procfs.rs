//! Reading a process's state from `/proc/<pid>/stat`, `/proc/<pid>/status`
//! and `/proc/<pid>/wchan` (see `proc(5)`).

use std::io;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The fields of `/proc/<pid>/stat` the lessons look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// The command name (at most 15 bytes), without its parentheses.
    pub comm: String,
    /// `R` running, `S` sleeping, `D` disk sleep, `T` stopped, `t` traced,
    /// `Z` zombie, `X` dead, `I` idle.
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// When the process started, in clock ticks since boot. With the PID,
    /// it names a process for good: a reused PID has another start time.
    pub start_time: u64,
    pub num_threads: u64,
}

/// Parse a `stat` line. The name sits between the first `(` and the last
/// `)` and may itself hold spaces and parentheses.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    let comm = line[open + 1..close].to_string();
    // Fields after the name, numbered from 3 (state) as in proc(5).
    let rest: Vec<&str> = line[close + 1..].split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    Some(Stat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        session: field(6)?.parse().ok()?,
        num_threads: field(20)?.parse().ok()?,
        start_time: field(22)?.parse().ok()?,
    })
}

/// Read `/proc/<pid>/stat`. `Ok(None)` if there is no such process.
pub fn stat(pid: i32) -> io::Result<Option<Stat>> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => parse_stat(&s)
            .map(Some)
            .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: cannot parse"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // ESRCH: the process went away between open and read.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("/proc/{pid}/stat: {e}"))),
    }
}

/// The state letter of `pid`, or `None` if it no longer exists.
pub fn state(pid: i32) -> io::Result<Option<char>> {
    Ok(stat(pid)?.map(|s| s.state))
}

/// The parent PID of `pid`.
pub fn ppid(pid: i32) -> io::Result<Option<i32>> {
    Ok(stat(pid)?.map(|s| s.ppid))
}

/// The command name of `pid` (`/proc/<pid>/comm`).
pub fn name(pid: i32) -> io::Result<Option<String>> {
    Ok(stat(pid)?.map(|s| s.comm))
}

/// The value of the line `field:` of `/proc/<pid>/status`, trimmed:
/// `status_field(pid, "SigBlk")` gives `"0000000000004000"` (a hexadecimal
/// mask in which bit n-1 stands for signal n). An error if there is no such
/// process or no such line.
pub fn status_field(pid: i32, field: &str) -> io::Result<String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| io::Error::other(format!("{path}: no {field} line")))
}

/// Where in the kernel `pid` sleeps: the function named in
/// `/proc/<pid>/wchan`. These are kernel-internal function names that change
/// between versions: on Linux 6.18 a blocked pipe or FIFO read or write shows
/// `anon_pipe_read` / `anon_pipe_write` (older kernels: `pipe_read` /
/// `pipe_write`), a FIFO open waiting for its other end `wait_for_partner`,
/// `poll` `poll_schedule_timeout.constprop.0` (33 characters: widen `ps -o
/// wchan:40`), and every futex-based wait (`sem_wait`, a robust mutex,
/// FUTEX_WAIT) `futex_do_wait` (older kernels: `futex_wait_queue`). `None`
/// if it is not asleep, if the kernel hides the name (the file then reads
/// `0`), or if there is no such process.
pub fn wchan(pid: i32) -> io::Result<Option<String>> {
    match std::fs::read_to_string(format!("/proc/{pid}/wchan")) {
        Ok(w) => Ok(Some(w.trim().to_string()).filter(|w| !w.is_empty() && w != "0")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("/proc/{pid}/wchan: {e}"))),
    }
}

/// Whether the process that was `pid`, started at `start_time` (if known),
/// has ended: gone from `/proc`, a zombie (dead, waiting to be reaped), or
/// the PID now belongs to another process with another start time.
pub fn is_dead(pid: i32, start_time: Option<u64>) -> bool {
    match stat(pid) {
        Ok(None) => true,
        Ok(Some(s)) => {
            matches!(s.state, 'Z' | 'X') || start_time.is_some_and(|t| t != s.start_time)
        }
        Err(_) => false,
    }
}

/// Poll `/proc/<pid>/stat` every millisecond until `want` holds for it
/// (`None` meaning the process is gone), for at most `timeout`. Returns the
/// last state seen if it never held.
pub fn wait_for(
    pid: i32,
    timeout: Duration,
    want: impl Fn(Option<&Stat>) -> bool,
) -> io::Result<Result<Option<Stat>, Option<Stat>>> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = stat(pid)?;
        if want(s.as_ref()) {
            return Ok(Ok(s));
        }
        if Instant::now() >= deadline {
            return Ok(Err(s));
        }
        sleep(Duration::from_millis(1));
    }
}

/// Every PID in `/proc` whose `stat` satisfies `pick`.
pub fn processes(pick: impl Fn(&Stat) -> bool) -> io::Result<Vec<Stat>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let name = entry?.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(Some(s)) = stat(pid) {
            if pick(&s) {
                found.push(s);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parens() {
        let line = "4242 (a (b) c) Z 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "a (b) c");
        assert_eq!(s.state, 'Z');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgrp, 4242);
        assert_eq!(s.num_threads, 1);
        assert_eq!(s.start_time, 12345);
    }

    #[test]
    fn reads_itself() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("read").expect("exists");
        assert_eq!(s.pid, me);
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert!(matches!(s.state, 'R' | 'S'));
        assert!(!is_dead(me, Some(s.start_time)));
        assert!(
            is_dead(me, Some(s.start_time + 1)),
            "another start time means another process"
        );
    }

    #[test]
    fn reads_its_own_status_lines() {
        let me = std::process::id() as i32;
        let name = status_field(me, "Name").expect("Name");
        assert_eq!(Some(name), super::name(me).expect("read stat"));
        let pid = status_field(me, "Pid").expect("Pid");
        assert_eq!(pid, me.to_string(), "the value is trimmed");
        let blocked = status_field(me, "SigBlk").expect("SigBlk");
        assert!(u64::from_str_radix(&blocked, 16).is_ok(), "{blocked}");
        // A prefix of a field is not the field.
        assert!(status_field(me, "Sig").is_err());
        assert!(status_field(me, "NoSuchField").is_err());
    }

    #[test]
    fn wchan_of_a_missing_process_is_none() {
        // PID_MAX_LIMIT is 2^22: no process has a larger PID.
        assert_eq!(wchan((1 << 22) + 1).expect("read"), None);
    }
}
