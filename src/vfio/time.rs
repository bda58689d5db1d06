// SPDX-License-Identifier: GPL-2.0

//! The kernel's clock and killable sleep, for the readiness waits of [`crate::readiness`].

use kernel::time::{
    msecs_to_jiffies,
    Instant,
    Monotonic, //
};

use super::bindings;
use crate::readiness::{
    Clock,
    WaitError, //
};

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

    fn sleep_ms(&mut self, ms: u64) -> Result<(), WaitError> {
        let jiffies = msecs_to_jiffies(u32::try_from(ms).unwrap_or(u32::MAX));
        // SAFETY: Sleeping in process context; the task state is set by the callee.
        let left = unsafe { bindings::schedule_timeout_killable(jiffies as isize) };
        if left != 0 {
            return Err(WaitError::Interrupted);
        }
        Ok(())
    }
}
