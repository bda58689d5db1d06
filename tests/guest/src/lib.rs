// SPDX-License-Identifier: GPL-2.0

//! Support for the tests that run inside the rig's guest: a kselftest-style TAP harness, access to
//! the GPU through VFIO (iommufd cdev and legacy group/container), and sysfs and kernel-log checks.
//!
//! The tests are static binaries on `vfio-bindings` and `libc`; see tests/README.md for why.

pub mod acpi;
pub mod differences;
pub mod fuzz;
pub mod gpumem;
#[path = "../../hw.rs"]
pub mod hw;
pub mod kmemleak;
#[allow(dead_code)]
#[path = "../../../src/layout.rs"]
mod layout;
pub mod mm;
pub mod model;
pub mod pgattr;
pub mod rng;
pub mod sys;
pub mod tap;
pub mod timing;
pub mod vfio;
pub mod workers;

/// The GPU function under test, as the rig places it (root bus, slot 5: q35 on x86_64, `virt` on
/// arm64).
pub const GPU_BDF: &str = "0000:00:05.0";

/// The driver name both builds of nvgrace-gpu-vfio-pci register.
pub const DRIVER_NAME: &str = "nvgrace_gpu_vfio_pci";

/// The variant of the GPU model the rig started (`RIG_GPU`: gh200, gb200, gb300 or cxl).
pub fn rig_gpu() -> String {
    std::env::var("RIG_GPU").unwrap_or_else(|_| "gh200".into())
}

/// The driver build the rig bound (`RIG_DRIVER`: rust, upstream or none).
pub fn rig_driver() -> String {
    std::env::var("RIG_DRIVER").unwrap_or_else(|_| "none".into())
}

/// The PCI device ID the model presents for a variant (tests/gpu-model).
pub fn model_device_id(variant: &str) -> Option<u16> {
    match variant {
        "gh200" => Some(hw::GH200_DEVICE_ID),
        "gb200" => Some(hw::GB200_DEVICE_ID),
        "gb300" | "cxl" => Some(hw::GB300_DEVICE_ID),
        _ => None,
    }
}

/// The x86_64 rig's aperture base, in bytes: the default of [`aperture_base`].
pub const DEFAULT_APERTURE_BASE: u64 = 0x2000_0000;

/// The physical address, in bytes, of the GPU memory aperture the rig puts in the `_DSD`
/// (`nvidia,gpu-mem-base-pa`): `RIG_APERTURE_BASE` (decimal, from scripts/vm-run through the
/// guest's init), else [`DEFAULT_APERTURE_BASE`]. On arm64 it lies above 4 GiB.
pub fn aperture_base() -> u64 {
    std::env::var("RIG_APERTURE_BASE")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_APERTURE_BASE)
}

/// One emulated region as the driver should present it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Host physical address of its first byte.
    pub memphys: u64,
    /// Bytes of memory behind it.
    pub memlength: u64,
    /// The BAR size, a power of two.
    pub bar_size: u64,
}

/// The errno probe must fail with for the rig's memory description, from the driver's own
/// layout code (src/layout.rs, upstream `nvgrace_gpu_init_nvdev_struct()`): `EOVERFLOW` when
/// an address or size computation overflows (memory smaller than the 1 GiB resmem carve-out of
/// a GH200, or usemem ending past 2^64), `EINVAL` when usemem rounds down to 0 bytes; `None`
/// when probe succeeds or there is no memory to lay out.
pub fn expected_probe_errno() -> Option<i32> {
    if std::env::var("RIG_DSD").ok().as_deref() == Some("0") {
        return None;
    }
    let size: u64 = std::env::var("RIG_MEM_SIZE").ok()?.parse().ok()?;
    if size == 0 {
        return None;
    }
    match layout::Layout::new(aperture_base(), size, rig_gpu() == "gh200") {
        Ok(_) => None,
        Err(layout::LayoutError::Overflow) => Some(libc::EOVERFLOW),
        Err(layout::LayoutError::NoUsemem) => Some(libc::EINVAL),
    }
}

/// The regions the driver should present for the rig's GPU, computed with the driver's own
/// layout code (src/layout.rs): `(usemem, resmem)`. `None` when there is no `_DSD` memory or the
/// layout is invalid (probe fails then).
pub fn expected_regions() -> Option<(Region, Option<Region>)> {
    if std::env::var("RIG_DSD").ok().as_deref() == Some("0") {
        return None;
    }
    let size: u64 = std::env::var("RIG_MEM_SIZE").ok()?.parse().ok()?;
    if size == 0 {
        return None;
    }
    let bug = rig_gpu() == "gh200";
    let l = layout::Layout::new(aperture_base(), size, bug).ok()?;
    let conv = |r: layout::MemRegion| Region {
        memphys: r.memphys,
        memlength: r.memlength,
        bar_size: r.bar_size,
    };
    Some((conv(l.usemem), l.resmem.map(conv)))
}
