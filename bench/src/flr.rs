// SPDX-License-Identifier: GPL-2.0

//! Where the FLR falls on the guest's clock, and the overhead a driver adds to readiness counted
//! from it.
//!
//! The GPU model starts its readiness delay D at the FLR (its `reset cause=flr` line: Device
//! Control bit 15 written), which vfio-pci-core issues some ms after `VFIO_DEVICE_RESET` began
//! (it saves the config state first, each access a round trip to the model). So the device is
//! ready at t_FLR + D, and the overhead a driver adds is t2 - max(t_FLR + D, t1): t1 the end of
//! the reset ioctl, t2 the end of the first access after it.
//!
//! The model logs its times (`gpu-model --log-times`: ` t=<ns>` on every line, its own monotonic
//! clock) but not on the guest's clock. So the reset step reads BAR0 at [`MARK_OFFSET`] first,
//! at guest time ts0, and the model logs that read at its time S; with F the model's time of the
//! FLR, t_FLR = ts0 + (F - S). The model logs the mark after the read travelled to it, so this
//! places the FLR early by that travel time, less than the mark's round trip (t0 - ts0, up to
//! 10 ms in a sweep when the host preempted the guest): it overstates the driver's overhead,
//! never understates it (the overhead stays >= 0, as both clocks run at the same rate under
//! TCG). And the FLR cannot come before the ioctl that issues it: t_FLR = max(ts0 + (F - S),
//! t0), still never later than the FLR.

use std::time::Duration;

/// BAR0 offset of the start mark: a register no readiness poll reads (they read the C2C link
/// and HBM training status, at 0x1498 and 0x200bc), so the mark's line is the step's own.
pub const MARK_OFFSET: u64 = 0;

/// The model's access-log line of the start mark, up to its value.
const MARK_LINE: &str = "bar0-read off=0x0000 len=4 ";

/// The model's access-log line of an FLR.
const FLR_LINE: &str = "reset cause=flr";

/// The model's time from the start mark to the first FLR after it (F - S), from the access-log
/// lines since just before the mark, each without its time and with it (the guest library's
/// `model::timed_log_since`). An error when either line is missing or has no time (a model
/// started without `--log-times`).
pub fn flr_after_mark(lines: &[(String, Option<u64>)]) -> Result<Duration, String> {
    let no_time = "has no time: the GPU model must run with --log-times \
                   (scripts/vm-run --model-log-times, as scripts/bench starts it)";
    let mark = lines
        .iter()
        .position(|(l, _)| l.starts_with(MARK_LINE))
        .ok_or("the model logged no start-mark read of BAR0 at offset 0")?;
    let s = lines[mark]
        .1
        .ok_or_else(|| format!("the start mark's line {no_time}"))?;
    let (_, f) = lines[mark..]
        .iter()
        .find(|(l, _)| l == FLR_LINE)
        .ok_or("the model logged no FLR after the start mark")?;
    let f = f.ok_or_else(|| format!("the FLR's line {no_time}"))?;
    let ns = f
        .checked_sub(s)
        .ok_or_else(|| format!("the FLR (t={f}) is logged before the start mark (t={s})"))?;
    Ok(Duration::from_nanos(ns))
}

/// The guest's clock (CLOCK_MONOTONIC) at each point of one reset step.
#[derive(Clone, Copy, Debug)]
pub struct ResetTimes {
    /// ts0: before the start-mark read of BAR0.
    pub mark: Duration,
    /// t0: before `VFIO_DEVICE_RESET`.
    pub ioctl_start: Duration,
    /// t1: after it.
    pub ioctl_end: Duration,
    /// t2: after the first access (a pread of usemem).
    pub first_access: Duration,
}

/// What one reset step tells from the FLR.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlrFigures {
    /// t_FLR - t0, ms: how long vfio-pci-core took to issue the FLR (not the driver's).
    pub flr_after_ioctl_ms: f64,
    /// t2 - max(t_FLR + delay, t1), ms: the wait the driver adds to readiness.
    pub overhead_ms: f64,
}

/// Signed `a - b` in ms.
fn ms_between(a: Duration, b: Duration) -> f64 {
    (a.as_secs_f64() - b.as_secs_f64()) * 1e3
}

/// The figures of a reset step whose times are `t`, the model ready `delay_ms` after its FLR,
/// which it logged `flr_after_mark` after the start mark ([`flr_after_mark`]).
pub fn flr_figures(t: &ResetTimes, flr_after_mark: Duration, delay_ms: u64) -> FlrFigures {
    // The ioctl issues the FLR: a mark that travelled long cannot place it earlier than that.
    let flr = (t.mark + flr_after_mark).max(t.ioctl_start);
    let ready = flr + Duration::from_millis(delay_ms);
    FlrFigures {
        flr_after_ioctl_ms: ms_between(flr, t.ioctl_start),
        overhead_ms: ms_between(t.first_access, ready.max(t.ioctl_end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, t: Option<u64>) -> (String, Option<u64>) {
        (text.to_string(), t)
    }

    /// A reset step's log as the model writes it with --log-times: the control change the mark's
    /// read applies, the mark, vfio-pci-core's config saves, the FLR, the driver's polls.
    fn step_log(mark_ns: u64, flr_ns: u64) -> Vec<(String, Option<u64>)> {
        vec![
            line(
                "control ready_delay_ms=400 never_ready=0 power_on_delay_ms=0 cxl_timeout=0 \
                 flap_ready_ms=0 flap_not_ready_ms=0 bar0_all_ones=0",
                Some(mark_ns - 20_000),
            ),
            line("bar0-read off=0x0000 len=4 val=0x00000000", Some(mark_ns)),
            line(
                "cfg-read off=0x004 len=2 val=0x0006",
                Some(mark_ns + 900_000),
            ),
            line("cfg-read off=0x048 len=2 val=0x2810", Some(flr_ns - 40_000)),
            line("cfg-write off=0x048 len=2 val=0xa810", Some(flr_ns - 1_000)),
            line("reset cause=flr", Some(flr_ns)),
            line(
                "bar0-read off=0x1498 len=4 val=0x00000000",
                Some(flr_ns + 101_000_000),
            ),
            line("reset cause=flr", Some(flr_ns + 200_000_000)),
        ]
    }

    #[test]
    fn flr_is_placed_from_the_start_mark() {
        let log = step_log(5_000_000_000, 5_003_500_000);
        assert_eq!(flr_after_mark(&log), Ok(Duration::from_micros(3500)));
        // Lines before the mark (the previous step's) do not count.
        let mut earlier = vec![line("reset cause=flr", Some(4_000_000_000))];
        earlier.extend(log);
        assert_eq!(flr_after_mark(&earlier), Ok(Duration::from_micros(3500)));
    }

    #[test]
    fn a_log_without_times_or_lines_is_an_error() {
        let untimed: Vec<_> = step_log(1_000_000, 4_500_000)
            .into_iter()
            .map(|(l, _)| (l, None))
            .collect();
        let e = flr_after_mark(&untimed).unwrap_err();
        assert!(e.contains("--log-times"), "{e}");
        let mut flr_untimed = step_log(1_000_000, 4_500_000);
        flr_untimed[5].1 = None;
        assert!(flr_after_mark(&flr_untimed)
            .unwrap_err()
            .contains("--log-times"));
        let no_mark: Vec<_> = step_log(1_000_000, 4_500_000)
            .into_iter()
            .filter(|(l, _)| !l.starts_with("bar0-read off=0x0000"))
            .collect();
        assert!(flr_after_mark(&no_mark).unwrap_err().contains("start-mark"));
        let no_flr: Vec<_> = step_log(1_000_000, 4_500_000)
            .into_iter()
            .filter(|(l, _)| l != "reset cause=flr")
            .collect();
        assert!(flr_after_mark(&no_flr).unwrap_err().contains("no FLR"));
        let backwards = step_log(1_000_000, 4_500_000)
            .into_iter()
            .map(|(l, t)| {
                if l == "reset cause=flr" {
                    (l, Some(5))
                } else {
                    (l, t)
                }
            })
            .collect::<Vec<_>>();
        assert!(flr_after_mark(&backwards).unwrap_err().contains("before"));
    }

    fn times(mark: f64, start: f64, end: f64, access: f64) -> ResetTimes {
        let d = |ms: f64| Duration::from_secs_f64(ms / 1e3);
        ResetTimes {
            mark: d(mark),
            ioctl_start: d(start),
            ioctl_end: d(end),
            first_access: d(access),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn overhead_counts_from_the_flr_plus_the_delay_or_the_ioctl_end() {
        // (guest times: mark, ioctl start, ioctl end, first access (ms); FLR after the mark in
        // the model's time (µs); delay (ms); t_FLR - t0 and the overhead expected (ms))
        let cases = [
            // FLR 3.5 ms after the mark, ready at 1403.5 ms, first access done at 1404.5 ms.
            ((1000.0, 1000.1, 1110.0, 1404.5), 3500, 400, 3.4, 1.0),
            // The mark took 10.5 ms to come back (the guest preempted after the model logged it,
            // or the request slow to reach it): the FLR, 4 ms after it in the model's time,
            // would fall 6.5 ms before the ioctl began; it is placed at its start, ready at
            // 1410.5 ms at the earliest.
            ((1000.0, 1010.5, 1120.0, 1412.0), 4000, 400, 0.0, 1.5),
            // Delay 0 and 50 ms: the FLR's own 100 ms wait ends the ioctl after readiness.
            ((1000.0, 1000.1, 1110.0, 1111.25), 3500, 0, 3.4, 1.25),
            ((1000.0, 1000.1, 1110.0, 1111.25), 3500, 50, 3.4, 1.25),
        ];
        for ((mark, start, end, access), flr_us, delay, after, overhead) in cases {
            let f = flr_figures(
                &times(mark, start, end, access),
                Duration::from_micros(flr_us),
                delay,
            );
            assert!(close(f.flr_after_ioctl_ms, after), "{delay} ms: {f:?}");
            assert!(close(f.overhead_ms, overhead), "{delay} ms: {f:?}");
        }
        // The old reference, max(delay, ioctl) from t0, charges the driver with the 3.4 ms of
        // the first case.
        let old = 1404.5 - 1000.1 - (1110.0f64 - 1000.1).max(400.0);
        assert!(close(old - 1.0, 3.4), "{old}");
    }
}
