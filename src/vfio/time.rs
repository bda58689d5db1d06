// SPDX-License-Identifier: GPL-2.0

//! The kernel's clock and killable sleep, for the readiness waits of [`crate::readiness`].

use kernel::time::{
    Instant,
    Monotonic, //
};

use super::bindings;
use crate::readiness::{
    Clock,
    WaitError, //
};

/// Nanoseconds per millisecond.
const NSEC_PER_MSEC: u64 = 1_000_000;
/// The hrtimer slack of a sleep, as a fraction 1/`SLACK_DIVISOR` of it: the timer may fire that
/// much later to coalesce with another (`schedule_hrtimeout_range()`), 31 µs of a 2 ms sleep.
const SLACK_DIVISOR: u64 = 64;

/// Milliseconds since the clock was made (monotonic), and sleeps that a fatal signal ends.
pub(crate) struct KernelClock {
    start: Instant<Monotonic>,
}

impl KernelClock {
    /// A clock starting now.
    pub(crate) fn new() -> Self {
        KernelClock {
            start: Instant::now(),
        }
    }
}

impl Clock for KernelClock {
    fn now_ms(&mut self) -> u64 {
        self.start.elapsed().as_millis().max(0) as u64
    }

    /// Sleeps on an hrtimer, not in jiffies: `schedule_timeout_killable()` rounds a 1 ms sleep up
    /// to the next tick (4 ms at HZ=250), which the readiness overhead goal cannot afford. The
    /// task sleeps in `TASK_KILLABLE` (like `schedule_timeout_killable()`): only a fatal signal
    /// wakes it early, and then the wait ends with `Interrupted`. Any other early wake-up only
    /// makes the next poll earlier.
    fn sleep_ms(&mut self, ms: u64) -> Result<(), WaitError> {
        let ns = ms.saturating_mul(NSEC_PER_MSEC);
        let mut expires = i64::try_from(ns).unwrap_or(i64::MAX);
        // SAFETY: Process context (the readiness waits run in ioctls, faults and read/write):
        // the task may sleep; setting its own state before `schedule_hrtimeout_range()` is the
        // protocol that function documents.
        unsafe { bindings::nvgrace_helper_set_current_state_killable() };
        // SAFETY: `expires` is a valid `ktime_t` on the stack for the call's duration; the task
        // state was set just above, and the callee returns with it `TASK_RUNNING`.
        unsafe {
            bindings::schedule_hrtimeout_range(
                &mut expires,
                ns / SLACK_DIVISOR,
                bindings::hrtimer_mode_HRTIMER_MODE_REL,
            )
        };
        // SAFETY: Reads the current task's signal state; always safe in process context.
        if unsafe { bindings::nvgrace_helper_fatal_signal_pending() } {
            return Err(WaitError::Interrupted);
        }
        Ok(())
    }
}
