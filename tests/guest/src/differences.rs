// SPDX-License-Identifier: GPL-2.0

//! The deliberate differences between the Rust driver and upstream, in one place. Every other
//! behaviour must be the same for both builds; these have their own assertions, per build.
//!
//! 1. **Config accesses over more than one emulated BAR register.** Upstream's
//!    `nvgrace_gpu_read_config_emu()`/`_write_config_emu()` look for the first of BAR2/3 and
//!    BAR4/5 that the access overlaps and emulate only that one: the rest of the window reads
//!    vfio-pci-core's value of the physical register (and writes of it are dropped). When the
//!    device has no resmem, an access that also touches BAR2/3 does not emulate BAR4/5 at all.
//!    The Rust driver emulates every emulated register the access overlaps.
//!    Tests: `config_test` (`multi_bar_read`, `multi_bar_write`, `no_resmem_straddle`).
//! 2. **Readiness polling.** Upstream sleeps 1 s between readiness polls after a reset, so the
//!    first access after a reset costs up to a second more than the device needs. The Rust
//!    driver polls at an interval that starts at 1 ms and grows to 1 s, with the same budget.
//!    Test: `readiness_poll_test`.

/// Which build of the driver the rig bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// This project's Rust driver.
    Rust,
    /// The upstream C driver.
    Upstream,
}

/// The build under test (`RIG_DRIVER`), `None` when no driver is bound.
pub fn build() -> Option<Build> {
    match crate::rig_driver().as_str() {
        "rust" => Some(Build::Rust),
        "upstream" => Some(Build::Upstream),
        _ => None,
    }
}
