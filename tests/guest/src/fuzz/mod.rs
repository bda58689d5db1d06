// SPDX-License-Identifier: GPL-2.0

//! A seeded fuzzer of the device fd, as a hostile VMM would use it: reads and writes of random
//! regions at offsets around the region boundaries (`index << 40`, the BAR size, memlength, and
//! the end of the file offset range), mmaps with random offsets, lengths, protections and flags
//! followed by touches, VFIO ioctls with random `argsz` and payloads, config-space writes
//! anywhere, Memory Space Enable toggles, resets and reopens, all interleaved.
//!
//! Every result is checked against a model: the region layout from src/layout.rs (through
//! [`expected_regions`]), the rig's GPU (tests/gpu-model: BAR0 16 MiB, zero except the ready
//! status registers, 4 KiB of config space) and the rules the upstream driver and vfio-pci-core
//! follow (drivers/vfio/pci/nvgrace-gpu/main.c, vfio_pci_core.c, vfio_pci_rdwr.c,
//! vfio_pci_config.c, mm/mmap.c; cited where used). The model tracks what a result depends on:
//! Memory Space Enable, a readiness check pending after a reset, low-power entry, and the bytes
//! of GPU memory written or read so far. The deliberate differences
//! (tests/guest/src/differences.rs) are expected per build; the random choices depend only on
//! the seed, never on results, so both builds see the same operations.
//!
//! The operations run in batches; after each batch the kernel log is checked for new splats
//! (WARN, BUG, lockdep, KASAN, ...). Results are reported per kind of operation, with the seed,
//! the bounds and the first failures (iteration numbers) in the TAP diagnostics.
//!
//! ```text
//! fuzz_test [--seed N] [--iterations N] [--seconds N] [--batch N] [--long] [--trace]
//! ```
//!
//! The run stops after `--iterations` operations or `--seconds`, whichever comes first; `--long`
//! raises both bounds for soak runs (`make check` runs the defaults). A failure at iteration `i`
//! is reproduced by the same seed with `--iterations i+1` (operation `i` depends only on the
//! seed and `i`; the state it meets depends on the operations before it).
//!
//! The library's part of fuzz_test: [`gen`] draws the operations (they depend only on the seed
//! and their number), [`model`] says what each should return, [`exec`] runs them on the device
//! and compares. The generator and the model are unit-tested on the host (`cargo test --lib`).

pub mod exec;
pub mod gen;
pub mod model;

use crate::mm;
use crate::vfio::VFIO_PCI_OFFSET_SHIFT;

/// The model's BAR0: 16 MiB of registers (tests/gpu-model README).
pub const BAR0_SIZE: u64 = crate::hw::BAR0_SIZE;
/// The model's physical BAR2/3: 32 MiB of RAM, region 2 when the driver does not emulate it.
pub const PHYS_BAR2_SIZE: u64 = 32 << 20;
/// PCI Express configuration space (`pdev->cfg_size`).
pub const CONFIG_SIZE: u64 = 4096;
/// Each region index owns 2^40 bytes of the file.
pub const SHIFT: u32 = VFIO_PCI_OFFSET_SHIFT;
pub const REGION_SPAN: u64 = 1 << SHIFT;
/// `VFIO_PCI_NUM_REGIONS` (no device-specific regions here) and `VFIO_PCI_NUM_IRQS`.
pub const NUM_REGIONS: u64 = 9;
pub const NUM_IRQS: u32 = 5;
/// Largest read or write buffer.
pub const MAX_BUF: usize = 256 << 10;
/// Reads larger than this do not teach the shadow (bounds its memory).
pub const LEARN_MAX: usize = 64 << 10;
/// Config space and BAR0 accesses are one vfio-user message per dword: keep them short.
pub const SLOW_MAX: usize = 64;
/// Where the PCIe capability sits in the model's config space (tests/gpu-model README); Device
/// Control is at +8, its Initiate FLR bit is bit 15 (PCIe r6.0 7.5.3.4).
pub const PCIE_CAP: u64 = 0x40;
pub const DEVCTL_HI: u64 = PCIE_CAP + 9;
/// The emulated BAR registers (upstream: resmem owns BAR2/3 at 0x18, usemem BAR4/5 at 0x20).
pub const RESMEM_BAR_REG: u64 = crate::hw::RESMEM_BAR_OFFSET;
pub const USEMEM_BAR_REG: u64 = crate::hw::USEMEM_BAR_OFFSET;
/// The user address space an `mmap(NULL, ...)` allocates from, bytes (`DEFAULT_MAP_WINDOW`):
/// x86_64 with 4-level paging, 2^47; arm64, 2^48 (`VA_BITS_MIN`, also with 52-bit VAs). Lengths
/// between this and the 5-level or 52-bit limit are never drawn (they stop at 2^41), so the
/// result depends on neither the paging mode nor the page size.
pub fn user_space() -> u64 {
    match std::env::consts::ARCH {
        "aarch64" => 1 << 48,
        _ => 1 << 47,
    }
}

/// The base page size, bytes (4 KiB on x86_64, 4 or 64 KiB on the rig's arm64 kernels).
pub fn page_bytes() -> u64 {
    mm::page_size() as u64
}

/// The bytes one entry of the shadow of GPU memory holds: a bookkeeping unit, not the page size.
pub const SHADOW_PAGE: u64 = 4096;

/// VFIO ioctl numbers not in `vfio::ioctl` (include/uapi/linux/vfio.h, `VFIO_BASE + n`).
pub const VFIO_TYPE: u64 = b';' as u64;
pub const fn vfio_io(nr: u64) -> libc::c_ulong {
    ((VFIO_TYPE << 8) | (100 + nr)) as libc::c_ulong
}
pub const GET_IRQ_INFO: libc::c_ulong = vfio_io(9);
pub const SET_IRQS: libc::c_ulong = vfio_io(10);
pub const GET_PCI_HOT_RESET_INFO: libc::c_ulong = vfio_io(12);

/// `VFIO_DEVICE_FEATURE_*` (include/uapi/linux/vfio.h).
pub const FEATURE_MASK: u32 = 0xffff;
pub const FEATURE_GET: u32 = 1 << 16;
pub const FEATURE_SET: u32 = 1 << 17;
pub const FEATURE_PROBE: u32 = 1 << 18;
pub const FEATURE_LOW_POWER_ENTRY: u32 = 3;
pub const FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP: u32 = 4;
pub const FEATURE_LOW_POWER_EXIT: u32 = 5;
pub const FEATURE_DMA_BUF: u32 = 11;

/// `LEGACY_MAP_MASK` of mm/mmap.c: the flags `MAP_SHARED` silently accepts.
pub const LEGACY_MAP_MASK: i32 = libc::MAP_SHARED
    | libc::MAP_PRIVATE
    | libc::MAP_FIXED
    | libc::MAP_ANONYMOUS
    | libc::MAP_DENYWRITE
    | libc::MAP_EXECUTABLE
    | 0x4000000 // MAP_UNINITIALIZED
    | libc::MAP_GROWSDOWN
    | libc::MAP_LOCKED
    | libc::MAP_NORESERVE
    | libc::MAP_POPULATE
    | libc::MAP_NONBLOCK
    | libc::MAP_STACK
    | libc::MAP_HUGETLB;
