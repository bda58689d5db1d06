// SPDX-License-Identifier: GPL-2.0

//! The rig's hardware constants (tests/hw.rs, which the GPU model, the guest tests and the
//! benchmark use) are the driver's: its kernel-free constants compared directly, and the ones it
//! declares with the kernel's `register!` and ID-table macros (which do not build on the host)
//! read from its sources.

use crate::config_emu;
use crate::hw;
use crate::readiness;

const REGS: &str = include_str!("../../../src/regs.rs");
const MAIN: &str = include_str!("../../../src/nvgrace_gpu_main.rs");

/// The number after `after` in `text` (hex with `0x`, else decimal), up to a non-digit.
fn number_after(text: &str, after: &str) -> u64 {
    let at = text
        .find(after)
        .unwrap_or_else(|| panic!("no `{after}` in the driver's source"));
    let rest = text[at + after.len()..].trim_start();
    let (digits, radix) = match rest.strip_prefix("0x") {
        Some(hex) => (hex, 16),
        None => (rest, 10),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_hexdigit() && c != '_')
        .unwrap_or(digits.len());
    u64::from_str_radix(&digits[..end].replace('_', ""), radix)
        .unwrap_or_else(|e| panic!("`{after}` is not followed by a number: {e}"))
}

#[test]
fn the_emulated_bar_registers_are_the_drivers() {
    assert_eq!(config_emu::RESMEM_BAR_OFFSET, hw::RESMEM_BAR_OFFSET);
    assert_eq!(config_emu::USEMEM_BAR_OFFSET, hw::USEMEM_BAR_OFFSET);
}

#[test]
fn the_bar0_status_registers_are_the_drivers() {
    assert_eq!(readiness::STATUS_READY, hw::BAR0_STATUS_READY);
    assert_eq!(
        number_after(REGS, "NV_C2C_LINK_STATUS(u32) @"),
        hw::BAR0_C2C_LINK_STATUS
    );
    assert_eq!(
        number_after(REGS, "NV_HBM_TRAINING_STATUS(u32) @"),
        hw::BAR0_HBM_TRAINING_STATUS
    );
}

#[test]
fn the_dvsecs_are_the_drivers() {
    assert_eq!(
        number_after(REGS, "GPU_CAP_DVSEC_ID: u16 ="),
        u64::from(hw::GPU_CAP_DVSEC_ID)
    );
    assert_eq!(
        number_after(REGS, "NV_GPU_CAP_DVSEC_BITMAP(u16) @"),
        hw::GPU_CAP_DVSEC_BITMAP
    );
    assert_eq!(
        number_after(REGS, "CXL_DEVICE_DVSEC_ID: u16 ="),
        u64::from(hw::CXL_DEVICE_DVSEC_ID)
    );
}

#[test]
fn the_device_ids_are_in_the_drivers_table() {
    for id in [
        hw::GH200_DEVICE_ID,
        hw::GB200_DEVICE_ID,
        hw::GB300_DEVICE_ID,
    ] {
        let entry =
            format!("VfioDeviceId::new(pci::Vendor::NVIDIA, {id:#06X})").replace("0X", "0x");
        assert!(
            MAIN.contains(&entry),
            "{entry} is not in src/nvgrace_gpu_main.rs's table"
        );
    }
}

#[test]
fn number_after_reads_hex_and_decimal() {
    assert_eq!(number_after("X @ 0x20_0bc {", "X @"), 0x200bc);
    assert_eq!(number_after("Y: u16 = 3;", "Y: u16 ="), 3);
}
