// SPDX-License-Identifier: GPL-2.0

//! The driver's kernel-free modules, compiled for the host from the module's own sources, so the
//! tests exercise exactly the code the kernel runs. Some items are used only by the kernel glue.

#![allow(dead_code)]

#[path = "../../../src/layout.rs"]
pub mod layout;

#[path = "../../../src/config_emu.rs"]
pub mod config_emu;

#[path = "../../../src/readiness.rs"]
pub mod readiness;

#[path = "../../../src/device/poison/table.rs"]
pub mod poison_table;

/// The rig's hardware constants (tests/hw.rs), checked against the driver's in `hw_tests`.
#[path = "../../hw.rs"]
pub mod hw;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hw_tests;

#[cfg(test)]
mod readiness_tests;

#[cfg(test)]
mod poison_tests;

#[cfg(test)]
mod bar_regs_tests;
