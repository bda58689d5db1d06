// SPDX-License-Identifier: GPL-2.0

//! The hardware constants of the GPUs the driver supports, as the rig's crates use them: the
//! driver's host tests (tests/unit, which also check them against the driver's own declarations),
//! the GPU model (tests/gpu-model), the guest tests (tests/guest) and the benchmark (bench/).
//! One file, included by each with `#[path]`: the crates share no dependency, and a crate for a
//! page of constants is not worth one. Offsets are in bytes; the sources are upstream's
//! drivers/vfio/pci/nvgrace-gpu/main.c (Linux 7.3), include/uapi/linux/pci_regs.h, the PCIe Base
//! Specification r6.0 and CXL r4.0.
//!
//! Not every crate uses every constant.
#![allow(dead_code)]

/// PCI vendor ID of NVIDIA (`PCI_VENDOR_ID_NVIDIA`, include/linux/pci_ids.h).
pub const NVIDIA_VENDOR_ID: u16 = 0x10de;
/// PCI vendor ID of the CXL consortium, in a CXL DVSEC's header (`PCI_VENDOR_ID_CXL`, CXL r4.0
/// 8.1.3).
pub const CXL_VENDOR_ID: u16 = 0x1e98;

/// Device ID of the GH200 (upstream's `nvgrace_gpu_vfio_pci_table`, "GH200 120GB").
pub const GH200_DEVICE_ID: u16 = 0x2342;
/// Device ID of the GB200 (upstream's table, "GB200 SKU").
pub const GB200_DEVICE_ID: u16 = 0x2941;
/// Device ID of the GB300 (upstream's table, "GB300 SKU"), a CXL device: its readiness is the CXL
/// Device DVSEC's, not BAR0's.
pub const GB300_DEVICE_ID: u16 = 0x31c2;

/// The Command register in config space (`PCI_COMMAND`), and its Memory Space Enable bit
/// (`PCI_COMMAND_MEMORY`).
pub const PCI_COMMAND: u64 = 0x04;
pub const PCI_COMMAND_MEMORY: u16 = 0x2;
/// The first Base Address Register (`PCI_BASE_ADDRESS_0`); BAR n is at `+ 4 * n`.
pub const PCI_BASE_ADDRESS_0: u64 = 0x10;
/// The 64-bit BAR2/3 pair, resmem's when the driver emulates it (upstream
/// `nvgrace_gpu_write_config_emu()`: `PCI_BASE_ADDRESS_2`).
pub const RESMEM_BAR_OFFSET: u64 = 0x18;
/// The 64-bit BAR4/5 pair, usemem's (`PCI_BASE_ADDRESS_4`).
pub const USEMEM_BAR_OFFSET: u64 = 0x20;

/// BAR0's size on the rig's GPU model: 16 MiB of registers (tests/gpu-model/README.md).
pub const BAR0_SIZE: u64 = 16 << 20;
/// BAR0 status register of the CPU-GPU chip-to-chip link (upstream `C2C_LINK_BAR0_OFFSET`).
pub const BAR0_C2C_LINK_STATUS: u64 = 0x1498;
/// BAR0 status register of HBM training (upstream `HBM_TRAINING_BAR0_OFFSET`).
pub const BAR0_HBM_TRAINING_STATUS: u64 = 0x200bc;
/// The value of both status registers once the device is ready (upstream `STATUS_READY`).
pub const BAR0_STATUS_READY: u32 = 0xff;

/// Extended capability ID of a Designated Vendor-Specific Extended Capability (`PCI_EXT_CAP_ID_DVSEC`,
/// PCIe r6.0 7.9.6).
pub const EXT_CAP_ID_DVSEC: u16 = 0x0023;
/// DVSEC ID of NVIDIA's GPU capability DVSEC, vendor [`NVIDIA_VENDOR_ID`] (upstream
/// `GPU_CAP_DVSEC_REGISTER`).
pub const GPU_CAP_DVSEC_ID: u16 = 3;
/// Offset in that DVSEC of its 16-bit capability bitmap (upstream `DVSEC_BITMAP_OFFSET`).
pub const GPU_CAP_DVSEC_BITMAP: u64 = 0xa;
/// DVSEC ID of the CXL Device DVSEC, vendor [`CXL_VENDOR_ID`] (`PCI_DVSEC_CXL_DEVICE`, CXL r4.0
/// 8.1.3).
pub const CXL_DEVICE_DVSEC_ID: u16 = 0;
