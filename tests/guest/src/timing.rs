// SPDX-License-Identifier: GPL-2.0

//! Both bounds of a timing the drivers promise (a readiness budget, a device's readiness delay),
//! checked and reported as a bucket, not as a time: the bucket is the same in every boot when the
//! check passes, so `scripts/tapsum` can compare it between the builds.
//!
//! The guest measures with `CLOCK_MONOTONIC` ([`crate::mm::now`]), the clock whose jiffies the
//! drivers' waits count; the GPU model's delays run on the host's clock, which a TCG guest's
//! clock follows. A lower bound therefore needs only [`CALIBRATION`], for the tick granularity of
//! jiffies, not a factor. Upper bounds carry the slack of a TCG guest on a loaded host, chosen
//! per wait by its test.

use std::time::Duration;

use crate::tap;
use crate::tap::Failure;
use crate::tap::Outcome;

/// What a lower bound may undershoot by: one jiffy at HZ=100 (10 ms) and the same again for the
/// rounding of `msecs_to_jiffies()` and of the drivers' millisecond clocks, with a margin.
pub const CALIBRATION: Duration = Duration::from_millis(50);

/// The range a measured time must lie in.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// The shortest time that keeps the promise (before [`CALIBRATION`] is taken off).
    pub lower: Duration,
    /// The longest.
    pub upper: Duration,
}

impl Bounds {
    /// From `lower` to `upper`.
    pub const fn new(lower: Duration, upper: Duration) -> Self {
        Self { lower, upper }
    }

    /// Whether `took` lies within the bounds.
    pub fn contains(&self, took: Duration) -> bool {
        took + CALIBRATION >= self.lower && took <= self.upper
    }

    /// The bucket a time falls in: `"LO..HI"` within the bounds, else below or above them.
    pub fn bucket(&self, took: Duration) -> String {
        if took + CALIBRATION < self.lower {
            format!("below {:?}", self.lower)
        } else if took > self.upper {
            format!("above {:?}", self.upper)
        } else {
            format!("{:?}..{:?}", self.lower, self.upper)
        }
    }

    /// Observes the bucket of `took` under `key` and fails unless it lies within the bounds;
    /// `what` names the wait in the message.
    pub fn check(&self, key: &str, what: &str, took: Duration) -> Outcome {
        let bucket = self.bucket(took);
        tap::observe(key, &bucket);
        tap::diag(format!("{what}: {took:.2?} ({bucket})"));
        if self.contains(took) {
            Ok(())
        } else {
            Err(Failure::Fail(format!(
                "{what} took {took:.2?}, outside {:?}..{:?}",
                self.lower, self.upper
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_name_the_bounds_or_the_side_missed() {
        let b = Bounds::new(Duration::from_secs(30), Duration::from_secs(45));
        assert_eq!(b.bucket(Duration::from_millis(30_700)), "30s..45s");
        // The calibration margin below the lower bound, and no more.
        assert!(b.contains(Duration::from_millis(29_960)));
        assert_eq!(b.bucket(Duration::from_millis(29_900)), "below 30s");
        assert!(!b.contains(Duration::from_millis(29_900)));
        assert_eq!(b.bucket(Duration::from_millis(45_001)), "above 45s");
        assert!(b.contains(Duration::from_secs(45)));
    }
}
