// SPDX-License-Identifier: GPL-2.0

//! When the GPU is ready after boot and after a reset, and how long to wait for it.
//! Kernel-free: the waits take the clock and the register reads as arguments, so the host's
//! `cargo test` runs them with a fake clock (tests/unit).
//!
//! Reference: `nvgrace_gpu_wait_device_ready_legacy()`, `nvgrace_gpu_wait_device_ready_cxl()`
//! and `cxl_mem_active_timeout_ms()` of drivers/vfio/pci/nvgrace-gpu/main.c.
//!
//! One deliberate difference: upstream sleeps a full second between polls, so a device that is
//! ready a few milliseconds after the first failed poll still costs a second. Here the interval
//! starts at [`MIN_POLL_INTERVAL_MS`] and grows with the time already waited ([`poll_interval_ms`])
//! up to the same second, within the same budgets; the waits stay interruptible by fatal signals.

/// The value both BAR0 status registers read when ready (upstream `STATUS_READY`; the registers
/// are `crate::regs::NV_C2C_LINK_STATUS` and `NV_HBM_TRAINING_STATUS`).
pub(crate) const STATUS_READY: u32 = 0xFF;
/// How long the legacy (BAR0) path waits, in ms (upstream `POLL_TIMEOUT_MS`).
pub(crate) const LEGACY_TIMEOUT_MS: u64 = 30_000;
/// The longest interval between polls, in ms (upstream `POLL_QUANTUM_MS`, its only interval).
pub(crate) const MAX_POLL_INTERVAL_MS: u64 = 1_000;
/// The shortest interval between polls, in ms. The goal for the time between a device's
/// readiness and the driver noticing it is max(5 ms, 1 % of the delay)
/// (Documentation/performance.md); on the rig a poll's sleep, its BAR0 reads and the first
/// access cost ~3.5 ms of that on their own, so the schedule may add at most ~1.5 ms at short
/// delays: with 2 ms the rig missed the goal at 400 ms.
pub(crate) const MIN_POLL_INTERVAL_MS: u64 = 1;
/// The interval grows by 1/`POLL_INTERVAL_DIVISOR` of the time waited: a device ready after D ms
/// is noticed at most max(1 ms, D/256) late by the schedule, 0.4 % of D, leaving the rest of
/// the 1 % goal to the sleep's own latency (with 1/128 the rig missed it at 1.3 s).
pub(crate) const POLL_INTERVAL_DIVISOR: u64 = 256;
/// CXL: Memory_Info_Valid must be set within 1 s of reset (CXL r4.0 8.1.3.8.2), in ms.
pub(crate) const CXL_MEM_INFO_VALID_TIMEOUT_MS: u64 = 1_000;

/// What the CXL Device DVSEC's Range 1 Size Low register reports about the device's memory
/// (CXL r4.0 8.1.3.8.2), decoded by `crate::regs::CXL_RANGE1_SIZE_LOW`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CxlMemStatus {
    /// Memory_Info_Valid: the size and the other fields are valid.
    pub(crate) info_valid: bool,
    /// Memory_Active: the memory is ready for use.
    pub(crate) active: bool,
    /// Memory_Active_Timeout, the 3-bit field: the time the device announces for Memory_Active.
    pub(crate) active_timeout: u32,
}

/// Why a wait ended without the device being ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitError {
    /// The budget ran out (`-ETIME`).
    TimedOut,
    /// A fatal signal interrupted the sleep (`-EINTR`).
    Interrupted,
    /// Config space reads all-ones: the device is gone (`-ENODEV`).
    Gone,
}

/// What the waits need from the kernel: a millisecond clock and an interruptible sleep.
pub(crate) trait Clock {
    /// Monotonic time in ms.
    fn now_ms(&mut self) -> u64;
    /// Sleeps `ms`; `Err` when a fatal signal interrupted the sleep.
    fn sleep_ms(&mut self, ms: u64) -> Result<(), WaitError>;
}

/// The interval before the next poll, in ms, after waiting `waited_ms`: 1/256 of the time
/// waited ([`POLL_INTERVAL_DIVISOR`]), at least [`MIN_POLL_INTERVAL_MS`], at most
/// [`MAX_POLL_INTERVAL_MS`]. The delay added to a device's own readiness time D is thus at most
/// max(1 ms, ~D/256), and the polls are bounded: 512 in the first 512 ms (the interval is 1 ms
/// until D/256 reaches 2), then ~256 per factor e of time waited: 1025 for a device ready after
/// 3 s, 1625 for the whole 30 s BAR0 budget (each poll one or two BAR0 reads, a microsecond or
/// two each on real hardware; upstream makes 30).
pub(crate) fn poll_interval_ms(waited_ms: u64) -> u64 {
    (waited_ms / POLL_INTERVAL_DIVISOR).clamp(MIN_POLL_INTERVAL_MS, MAX_POLL_INTERVAL_MS)
}

/// Whether a BAR0 status register with the value `status` says its part of the GPU is ready;
/// the GPU is ready when both say so (the C2C link first: upstream reads the HBM training
/// status only then).
pub(crate) fn status_ready(status: u32) -> bool {
    status == STATUS_READY
}

/// Polls `ready` until it returns true, for at most [`LEGACY_TIMEOUT_MS`].
pub(crate) fn wait_legacy(
    clock: &mut impl Clock,
    mut ready: impl FnMut() -> bool,
) -> Result<(), WaitError> {
    let start = clock.now_ms();
    loop {
        if ready() {
            return Ok(());
        }
        let waited = clock.now_ms().saturating_sub(start);
        if waited > LEGACY_TIMEOUT_MS {
            return Err(WaitError::TimedOut);
        }
        clock.sleep_ms(poll_interval_ms(waited))?;
    }
}

/// The Memory_Active timeout a Memory_Active_Timeout field announces, in ms: 1 s << (2 *
/// field), 000b = 1 s ... 100b = 256 s; reserved encodings (101b-111b) count as 256 s.
pub(crate) fn cxl_mem_active_timeout_ms(field: u32) -> u64 {
    1_000 << (2 * field.min(4))
}

/// The readiness a CXL memory status reports: `Ok(true)` ready (valid and active), `Ok(false)`
/// not yet, `Err(Gone)` when the register read all-ones (`None`).
pub(crate) fn cxl_ready(status: Option<CxlMemStatus>) -> Result<bool, WaitError> {
    let status = status.ok_or(WaitError::Gone)?;
    Ok(status.info_valid && status.active)
}

/// Polls the CXL memory status (`read`; `None` when the register reads all-ones) until the
/// memory is valid and active: Memory_Info_Valid within [`CXL_MEM_INFO_VALID_TIMEOUT_MS`], then
/// Memory_Active within the timeout the register announces.
pub(crate) fn wait_cxl(
    clock: &mut impl Clock,
    mut read: impl FnMut() -> Option<CxlMemStatus>,
) -> Result<(), WaitError> {
    let start = clock.now_ms();
    let mut deadline = start + CXL_MEM_INFO_VALID_TIMEOUT_MS;
    let mut active_phase = false;
    loop {
        let status = read();
        if cxl_ready(status)? {
            return Ok(());
        }
        let now = clock.now_ms();
        if let Some(s) = status.filter(|s| !active_phase && s.info_valid) {
            deadline = now + cxl_mem_active_timeout_ms(s.active_timeout);
            active_phase = true;
        }
        if now > deadline {
            return Err(WaitError::TimedOut);
        }
        clock.sleep_ms(poll_interval_ms(now - start))?;
    }
}
