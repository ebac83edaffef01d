//! Holding back the signals that end a lesson, for the few milliseconds a
//! named object exists before it can be unlinked.
//!
//! A lesson that creates a name (`/dev/shm/...`, a FIFO in `/tmp`) must
//! remove it before it ends. Ctrl-C (SIGINT), `kill` (SIGTERM) or a closed
//! terminal (SIGHUP) in the window between creating and unlinking would end
//! it with the name still there. Blocking those signals does not lose them:
//! the kernel keeps one that arrives pending, and delivers it as soon as the
//! mask is restored, with the name already gone. SIGKILL cannot be blocked,
//! so the window must stay short.
//!
//! The signal mask survives `fork` and `exec`: a program started while
//! signals are held would hold them for good. [`crate::program::Program`]
//! clears the mask of what it starts.

use std::io;

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};

/// SIGINT, SIGTERM and SIGHUP blocked while this lives; one that arrived
/// meanwhile is delivered when it is dropped (and ends the lesson then).
///
/// Create it before the object it protects, so that it is dropped after
/// the clean-up, on an error path too. It sets the mask of the calling
/// thread, which in a single-threaded lesson is the process's mask.
#[must_use = "the signals are held back only while the Hold lives"]
#[derive(Debug)]
pub struct Hold {
    old: SigSet,
}

impl Hold {
    /// The signals a `Hold` blocks.
    pub const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

    /// Block [`Hold::SIGNALS`] (`sigprocmask(SIG_BLOCK)`), remembering the
    /// mask as it was.
    pub fn new() -> io::Result<Hold> {
        let mut set = SigSet::empty();
        for s in Hold::SIGNALS {
            set.add(s);
        }
        let mut old = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
            .map_err(|e| io::Error::other(format!("sigprocmask(SIG_BLOCK): {e}")))?;
        Ok(Hold { old })
    }
}

impl Drop for Hold {
    /// Restore the old mask (`sigprocmask(SIG_SETMASK)`); a held signal that
    /// is pending is delivered before this returns.
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test harness runs each test in a thread of its own, and the mask
    // is per thread: these tests change only their own thread's mask.

    #[test]
    fn blocks_while_it_lives_and_restores_the_old_mask() {
        let blocked = |mask: &SigSet| Hold::SIGNALS.map(|s| mask.contains(s));
        let before = SigSet::thread_get_mask().expect("get the mask");
        {
            let _held = Hold::new().expect("hold");
            let during = SigSet::thread_get_mask().expect("get the mask");
            assert_eq!(blocked(&during), [true; 3], "blocked while held");
            assert_eq!(
                during.contains(Signal::SIGUSR1),
                before.contains(Signal::SIGUSR1),
                "nothing else changes"
            );
        }
        let after = SigSet::thread_get_mask().expect("get the mask");
        assert_eq!(blocked(&after), blocked(&before), "the old mask is back");
    }

    #[test]
    fn nested_holds_restore_in_turn() {
        let before = SigSet::thread_get_mask().expect("get the mask");
        let outer = Hold::new().expect("outer");
        let inner = Hold::new().expect("inner");
        drop(inner);
        let mask = SigSet::thread_get_mask().expect("get the mask");
        assert!(
            mask.contains(Signal::SIGTERM),
            "the outer hold still holds after the inner one is dropped"
        );
        drop(outer);
        let mask = SigSet::thread_get_mask().expect("get the mask");
        assert_eq!(
            mask.contains(Signal::SIGTERM),
            before.contains(Signal::SIGTERM)
        );
    }
}
