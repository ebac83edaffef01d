use std::fmt;
use std::time::{Duration, Instant};

/// A wait gave up after its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out")
    }
}

impl std::error::Error for TimedOut {}

/// `CLOCK_MONOTONIC` now plus `d`, as the absolute `timespec` that
/// `sem_clockwait` and `pthread_mutex_clocklock` take with that clock. The
/// monotonic clock is never stepped, unlike `CLOCK_REALTIME` (the wall
/// clock, which NTP, a VM's time sync or `date -s` may set at any moment).
pub(crate) fn monotonic_deadline(d: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let nanos = now.tv_nsec as u128 + d.subsec_nanos() as u128;
    let secs = (now.tv_sec as u128)
        .saturating_add(d.as_secs() as u128)
        .saturating_add(nanos / 1_000_000_000)
        .min(libc::time_t::MAX as u128);
    libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as _,
    }
}

/// Time left until `deadline`, or `None` once it has passed.
pub(crate) fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}
