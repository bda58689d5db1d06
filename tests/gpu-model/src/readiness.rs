// SPDX-License-Identifier: GPL-2.0
//! The readiness state machine.
//!
//! A real Grace Hopper/Blackwell GPU is not usable right after power-on or a
//! reset: firmware first brings up the C2C link and trains the HBM, and the
//! nvgrace-gpu-vfio-pci driver polls status registers in BAR0 (or, on CXL
//! devices, Memory_Info_Valid and then Memory_Active in the CXL DVSEC) until
//! they say so. The model reduces this to one deadline: the device is ready
//! (BAR0 status ready, Memory_Active set) once the clock passes `ready_at`, or
//! never when there is no deadline. On CXL devices Memory_Info_Valid can have
//! a deadline of its own ([`Readiness::info_valid`]), so that the two phases
//! of the drivers' CXL wait (Memory_Info_Valid within 1 s, then Memory_Active
//! within the announced timeout, CXL r4.0 8.1.3.8.2) can each be exercised.
//!
//! For fault injection, readiness can also flap ([`Flap`]): once ready, the
//! device alternates between ready and not ready periods, as a GPU whose link
//! keeps retraining would. The drivers only look at readiness after a reset,
//! so flapping shows in their waits, not in memory accesses.
//!
//! Time comes from a [`Clock`] so that tests can use a fake one.

use std::time::{Duration, Instant};

use crate::control::Delay;

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

/// Readiness that flaps: once the device is ready, it stays ready for
/// `ready`, then not ready for `not_ready`, then ready again, and so on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flap {
    /// Length of each ready period.
    pub ready: Duration,
    /// Length of each not-ready period.
    pub not_ready: Duration,
}

impl Flap {
    /// The pattern for periods of `ready_ms` and `not_ready_ms`
    /// milliseconds; `None` (no flapping) unless both are non-zero.
    pub fn from_ms(ready_ms: u64, not_ready_ms: u64) -> Option<Flap> {
        (ready_ms > 0 && not_ready_ms > 0).then(|| Flap {
            ready: Duration::from_millis(ready_ms),
            not_ready: Duration::from_millis(not_ready_ms),
        })
    }

    /// Whether the pattern is in a ready period `since` after it started
    /// (which it does with a ready period).
    fn ready_after(&self, since: Duration) -> bool {
        let period = (self.ready + self.not_ready).as_nanos();
        since.as_nanos() % period < self.ready.as_nanos()
    }
}

/// When the device becomes ready, and what has been announced.
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
    /// The flapping pattern in force and the instant it was switched on.
    flap: Option<(Flap, Instant)>,
    /// The readiness [`Readiness::observe`] last reported (a restart counts
    /// as not ready without being reported).
    observed_ready: bool,
    /// The last power-on or restart, from which a separate Memory_Info_Valid
    /// delay counts.
    restarted_at: Instant,
}

impl Readiness {
    /// Powers on at `now`, becoming ready after `delay` (`None` = never).
    pub fn new(now: Instant, delay: Option<Duration>) -> Readiness {
        let at = delay.map(|d| now + d);
        Readiness {
            ready_at: at,
            power_on_at: at,
            flap: None,
            observed_ready: false,
            restarted_at: now,
        }
    }

    /// Switches flapping on (a new pattern starts at `now`, or when the
    /// device becomes ready if that is later, with a ready period) or off.
    /// Setting the pattern already in force changes nothing.
    pub fn set_flap(&mut self, now: Instant, flap: Option<Flap>) {
        if self.flap.map(|(f, _)| f) != flap {
            self.flap = flap.map(|f| (f, now));
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
        self.observed_ready = false;
        self.restarted_at = now;
    }

    /// Whether Memory_Info_Valid is set at `now`. With `delay` `None` it
    /// follows readiness (set and cleared with Memory_Active, flapping with
    /// it); otherwise it is set `delay` after the last power-on or restart
    /// (never with [`Delay::Never`]) and stays set until the next restart,
    /// whatever Memory_Active does. The power-on deadline is no floor here:
    /// Memory_Info_Valid only says that the range registers are valid.
    pub fn info_valid(&self, now: Instant, delay: Option<Delay>) -> bool {
        match delay {
            None => self.is_ready(now),
            Some(Delay::Never) => false,
            Some(Delay::Ms(ms)) => now >= self.restarted_at + Duration::from_millis(ms),
        }
    }

    /// Whether the device is ready at `now`.
    pub fn is_ready(&self, now: Instant) -> bool {
        let Some(at) = self.ready_at else {
            return false;
        };
        if now < at {
            return false;
        }
        match self.flap {
            None => true,
            Some((flap, since)) => flap.ready_after(now - at.max(since)),
        }
    }

    /// The readiness at `now` if it changed since the last call (or since
    /// the last restart, which counts as not ready): `Some(true)` once the
    /// device became ready, `Some(false)` once a flap made it not ready.
    /// Used to log the `ready` and `not-ready cause=flap` events.
    pub fn observe(&mut self, now: Instant) -> Option<bool> {
        let ready = self.is_ready(now);
        if ready == self.observed_ready {
            return None;
        }
        self.observed_ready = ready;
        Some(ready)
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
        assert_eq!(r.observe(clock.now()), None);
        clock.advance_ms(99);
        assert!(!r.is_ready(clock.now()));
        clock.advance_ms(1);
        assert!(r.is_ready(clock.now()));
        assert_eq!(r.observe(clock.now()), Some(true));
        assert_eq!(r.observe(clock.now()), None);
        clock.advance_ms(10_000);
        assert!(r.is_ready(clock.now()));
        assert_eq!(r.observe(clock.now()), None);
    }

    #[test]
    fn restart_drops_readiness_and_never_means_never() {
        let clock = FakeClock::new();
        let mut r = Readiness::new(clock.now(), Some(Duration::ZERO));
        assert_eq!(r.observe(clock.now()), Some(true));
        r.restart(clock.now(), Some(Duration::from_millis(50)));
        assert!(!r.is_ready(clock.now()));
        assert_eq!(r.observe(clock.now()), None, "a restart is not a flap");
        clock.advance_ms(50);
        assert_eq!(
            r.observe(clock.now()),
            Some(true),
            "announced again after restart"
        );
        r.restart(clock.now(), None);
        clock.advance_ms(1_000_000);
        assert!(!r.is_ready(clock.now()));
        assert_eq!(r.observe(clock.now()), None);
        // A zero delay restart is ready at once but still announced.
        r.restart(clock.now(), Some(Duration::ZERO));
        assert!(r.is_ready(clock.now()));
        assert_eq!(r.observe(clock.now()), Some(true));
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
        assert_eq!(r.observe(clock.now()), Some(true));
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

    #[test]
    fn flapping_alternates_once_ready_and_stops_when_switched_off() {
        assert_eq!(Flap::from_ms(0, 10), None);
        assert_eq!(Flap::from_ms(10, 0), None);
        let flap = Flap::from_ms(30, 20);
        let clock = FakeClock::new();
        let mut r = Readiness::new(clock.now(), Some(Duration::from_millis(100)));
        r.set_flap(clock.now(), flap);
        clock.advance_ms(99);
        assert!(
            !r.is_ready(clock.now()),
            "flapping does not make it ready early"
        );
        // Ready at 100 ms: ready until 130, not ready until 150, ready until
        // 180, not ready until 200, ...; sampled at 109, 119, ... 219.
        let mut seen = Vec::new();
        for _ in 0..12 {
            clock.advance_ms(10);
            seen.push(r.observe(clock.now()));
        }
        assert_eq!(
            seen,
            [
                Some(true), // 109
                None,
                None,
                Some(false), // 139
                None,
                Some(true), // 159
                None,
                None,
                Some(false), // 189
                None,
                Some(true), // 209
                None
            ]
        );
        // Setting the same pattern again keeps the phase.
        let before = r.is_ready(clock.now());
        r.set_flap(clock.now(), flap);
        assert_eq!(r.is_ready(clock.now()), before);
        // Off: ready for good.
        r.set_flap(clock.now(), None);
        for _ in 0..10 {
            clock.advance_ms(7);
            assert!(r.is_ready(clock.now()));
        }
        // Switched on while ready: starts with a full ready period.
        r.set_flap(clock.now(), flap);
        clock.advance_ms(29);
        assert!(r.is_ready(clock.now()));
        clock.advance_ms(1);
        assert!(!r.is_ready(clock.now()));
        // A restart with never: flapping never makes it ready.
        r.restart(clock.now(), None);
        clock.advance_ms(1_000);
        assert!(!r.is_ready(clock.now()));
    }

    #[test]
    fn memory_info_valid_has_its_own_delay() {
        let clock = FakeClock::new();
        let mut r = Readiness::new(clock.now(), Some(Duration::from_millis(2_500)));
        // Without a delay of its own it follows readiness.
        assert!(!r.info_valid(clock.now(), None));
        let valid = Some(Delay::Ms(300));
        assert!(!r.info_valid(clock.now(), valid));
        clock.advance_ms(299);
        assert!(!r.info_valid(clock.now(), valid));
        clock.advance_ms(1);
        assert!(r.info_valid(clock.now(), valid), "valid 300 ms after power-on");
        assert!(!r.is_ready(clock.now()), "Memory_Active still pending");
        assert!(!r.info_valid(clock.now(), Some(Delay::Never)));
        clock.advance_ms(2_200);
        assert!(r.is_ready(clock.now()));
        assert!(r.info_valid(clock.now(), None));
        // A restart clears it and restarts its countdown, independently of
        // Memory_Active's (here ready before Memory_Info_Valid).
        r.restart(clock.now(), Some(Duration::ZERO));
        assert!(r.is_ready(clock.now()));
        assert!(!r.info_valid(clock.now(), Some(Delay::Ms(1_500))));
        clock.advance_ms(1_499);
        assert!(!r.info_valid(clock.now(), Some(Delay::Ms(1_500))));
        clock.advance_ms(1);
        assert!(r.info_valid(clock.now(), Some(Delay::Ms(1_500))));
        // It does not flap with readiness.
        r.set_flap(clock.now(), Flap::from_ms(10, 10));
        clock.advance_ms(15);
        assert!(!r.is_ready(clock.now()));
        assert!(r.info_valid(clock.now(), Some(Delay::Ms(0))));
        assert!(!r.info_valid(clock.now(), None), "follows the flap without a delay");
    }
}
