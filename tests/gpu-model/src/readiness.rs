// SPDX-License-Identifier: GPL-2.0
//! The readiness state machine.
//!
//! A real Grace Hopper/Blackwell GPU is not usable right after power-on or a
//! reset: firmware first brings up the C2C link and trains the HBM, and the
//! nvgrace-gpu-vfio-pci driver polls status registers in BAR0 (or, on CXL
//! devices, Memory_Active in the CXL DVSEC) until they say so. The model
//! reduces this to one deadline: the device is ready once the clock passes
//! `ready_at`, or never when there is no deadline.
//!
//! Time comes from a [`Clock`] so that tests can use a fake one.

use std::time::{Duration, Instant};

/// A source of monotonic time.
pub trait Clock {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock ([`Instant::now`]).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// When the device becomes ready, and whether that has been announced.
///
/// The power-on deadline is a floor for every later deadline: a reset
/// during the power-on sequence does not make the device ready sooner. This
/// matters because QEMU resets the device as soon as it connects, usually
/// long before a power-on delay meant for the guest's boot has run out; and
/// a power-on delay of never means never ready, whatever resets follow.
#[derive(Debug)]
pub struct Readiness {
    /// `None`: the device never becomes ready (until the next restart).
    ready_at: Option<Instant>,
    /// The power-on deadline; `None` = never.
    power_on_at: Option<Instant>,
    /// Whether [`Readiness::take_ready_transition`] already reported the
    /// current readiness period.
    announced: bool,
}

impl Readiness {
    /// Powers on at `now`, becoming ready after `delay` (`None` = never).
    pub fn new(now: Instant, delay: Option<Duration>) -> Readiness {
        let at = delay.map(|d| now + d);
        Readiness {
            ready_at: at,
            power_on_at: at,
            announced: false,
        }
    }

    /// Drops readiness at `now` and restarts the countdown with `delay`
    /// (`None` = never ready again until the next restart). The device
    /// becomes ready at the later of `now + delay` and the power-on deadline.
    pub fn restart(&mut self, now: Instant, delay: Option<Duration>) {
        self.ready_at = match (delay, self.power_on_at) {
            (Some(d), Some(power_on)) => Some((now + d).max(power_on)),
            _ => None,
        };
        self.announced = false;
    }

    /// Whether the device is ready at `now`.
    pub fn is_ready(&self, now: Instant) -> bool {
        self.ready_at.is_some_and(|at| now >= at)
    }

    /// Returns true once per restart: the first time it is called at or after
    /// the instant the device became ready. Used to log the `ready` event.
    pub fn take_ready_transition(&mut self, now: Instant) -> bool {
        if self.announced || !self.is_ready(now) {
            return false;
        }
        self.announced = true;
        true
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A clock that only moves when told to; clones share the same time.
    #[derive(Clone)]
    pub struct FakeClock(Rc<Cell<Instant>>);

    impl FakeClock {
        pub fn new() -> FakeClock {
            FakeClock(Rc::new(Cell::new(Instant::now())))
        }

        pub fn advance_ms(&self, ms: u64) {
            self.0.set(self.0.get() + Duration::from_millis(ms));
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.0.get()
        }
    }

    #[test]
    fn becomes_ready_after_delay_and_announces_once() {
        let clock = FakeClock::new();
        let mut r = Readiness::new(clock.now(), Some(Duration::from_millis(100)));
        assert!(!r.is_ready(clock.now()));
        assert!(!r.take_ready_transition(clock.now()));
        clock.advance_ms(99);
        assert!(!r.is_ready(clock.now()));
        clock.advance_ms(1);
        assert!(r.is_ready(clock.now()));
        assert!(r.take_ready_transition(clock.now()));
        assert!(!r.take_ready_transition(clock.now()));
        clock.advance_ms(10_000);
        assert!(r.is_ready(clock.now()));
        assert!(!r.take_ready_transition(clock.now()));
    }

    #[test]
    fn restart_drops_readiness_and_never_means_never() {
        let clock = FakeClock::new();
        let mut r = Readiness::new(clock.now(), Some(Duration::ZERO));
        assert!(r.take_ready_transition(clock.now()));
        r.restart(clock.now(), Some(Duration::from_millis(50)));
        assert!(!r.is_ready(clock.now()));
        clock.advance_ms(50);
        assert!(
            r.take_ready_transition(clock.now()),
            "announced again after restart"
        );
        r.restart(clock.now(), None);
        clock.advance_ms(1_000_000);
        assert!(!r.is_ready(clock.now()));
        assert!(!r.take_ready_transition(clock.now()));
        // A zero delay restart is ready at once but still announced.
        r.restart(clock.now(), Some(Duration::ZERO));
        assert!(r.is_ready(clock.now()));
        assert!(r.take_ready_transition(clock.now()));
    }

    #[test]
    fn resets_do_not_cut_the_power_on_delay_short() {
        let clock = FakeClock::new();
        let mut r = Readiness::new(clock.now(), Some(Duration::from_millis(1000)));
        clock.advance_ms(100);
        r.restart(clock.now(), Some(Duration::from_millis(10)));
        clock.advance_ms(10);
        assert!(!r.is_ready(clock.now()), "power-on deadline still pending");
        clock.advance_ms(890);
        assert!(r.take_ready_transition(clock.now()));
        // Past the power-on deadline, the reset delay alone counts.
        r.restart(clock.now(), Some(Duration::from_millis(10)));
        clock.advance_ms(10);
        assert!(r.is_ready(clock.now()));
        // Power-on never: no reset makes the device ready.
        let mut r = Readiness::new(clock.now(), None);
        r.restart(clock.now(), Some(Duration::ZERO));
        clock.advance_ms(1_000_000);
        assert!(!r.is_ready(clock.now()));
    }
}
