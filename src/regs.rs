// SPDX-License-Identifier: GPL-2.0

//! The GPU registers the driver reads, each declared once with [`register!`] (as
//! drivers/gpu/nova-core/regs.rs does): the two BAR0 status registers of the legacy readiness
//! path, and the fields of the two DVSECs in config space. [`crate::readiness`] decides on the
//! plain values read from them, so that the host tests it.
//!
//! Reference: drivers/vfio/pci/nvgrace-gpu/main.c (`C2C_LINK_BAR0_OFFSET`,
//! `HBM_TRAINING_BAR0_OFFSET`, `DVSEC_BITMAP_OFFSET`), include/uapi/linux/pci_regs.h
//! (`PCI_DVSEC_CXL_RANGE_SIZE_LOW`), CXL r4.0 8.1.3.8.2.

use core::marker::PhantomData;

use kernel::io::{
    register,
    register::Register,
    IoLoc,
    Region, //
};

use crate::readiness::CxlMemStatus;

// BAR0: the legacy readiness path (upstream `nvgrace_gpu_wait_device_ready_legacy()`), each
// register decided on by `crate::readiness::status_ready()`.
register! {
    /// Status of the CPU-GPU chip-to-chip (C2C) coherent link (upstream
    /// `C2C_LINK_BAR0_OFFSET`): [`crate::readiness::STATUS_READY`] once the link is up.
    pub(crate) NV_C2C_LINK_STATUS(u32) @ 0x1498 {
        31:0 status;
    }

    /// Status of HBM training (upstream `HBM_TRAINING_BAR0_OFFSET`):
    /// [`crate::readiness::STATUS_READY`] once training is done.
    pub(crate) NV_HBM_TRAINING_STATUS(u32) @ 0x200bc {
        31:0 status;
    }
}

// DVSEC registers: their offsets are from the start of their DVSEC in config space, read with
// [`InDvsec`].
register! {
    /// NVIDIA's GPU capability DVSEC (DVSEC ID [`GPU_CAP_DVSEC_ID`]): the capability bitmap
    /// (upstream `DVSEC_BITMAP_OFFSET`).
    pub(crate) NV_GPU_CAP_DVSEC_BITMAP(u16) @ 0xa {
        /// MIG works with cached resmem: the part has the hardware fix (upstream
        /// `MIG_SUPPORTED_WITH_CACHED_RESMEM`).
        0:0 mig_supported_with_cached_resmem => bool;
    }

    /// The CXL Device DVSEC's Range 1 Size Low register (`PCI_DVSEC_CXL_RANGE_SIZE_LOW(0)`,
    /// CXL r4.0 8.1.3.8.2).
    pub(crate) CXL_RANGE1_SIZE_LOW(u32) @ 0x1c {
        /// Memory_Active_Timeout: 1 s << (2 * field) (`PCI_DVSEC_CXL_MEM_ACTIVE_TIMEOUT`).
        15:13 mem_active_timeout;
        /// Memory_Active (`PCI_DVSEC_CXL_MEM_ACTIVE`).
        1:1 mem_active => bool;
        /// Memory_Info_Valid (`PCI_DVSEC_CXL_MEM_INFO_VALID`).
        0:0 mem_info_valid => bool;
    }
}

/// The DVSEC ID of NVIDIA's GPU capability DVSEC, vendor [`kernel::pci::Vendor::NVIDIA`] (upstream
/// `GPU_CAP_DVSEC_REGISTER`).
pub(crate) const GPU_CAP_DVSEC_ID: u16 = 3;

/// The DVSEC ID of the CXL Device DVSEC, vendor [`kernel::pci::Vendor::CXL`] (`PCI_DVSEC_CXL_DEVICE`,
/// CXL r4.0 8.1.3).
pub(crate) const CXL_DEVICE_DVSEC_ID: u16 = 0;

impl CXL_RANGE1_SIZE_LOW {
    /// The memory status the register reports; `None` when it reads all-ones, which is how
    /// config space reads of a device that is gone return.
    pub(crate) fn status(self) -> Option<CxlMemStatus> {
        if self.into_raw() == !0 {
            return None;
        }
        Some(CxlMemStatus {
            info_valid: self.mem_info_valid(),
            active: self.mem_active(),
            active_timeout: self.mem_active_timeout().get(),
        })
    }
}

/// The location in config space of register `R` of a DVSEC: `R::OFFSET` bytes after the start
/// of the DVSEC, whose config-space offset is only known at run time (a [`register!`] base is a
/// constant).
pub(crate) struct InDvsec<R>(u16, PhantomData<R>);

impl<R> InDvsec<R> {
    /// Register `R` of the DVSEC at config-space offset `dvsec` (`pci_find_dvsec_capability()`).
    pub(crate) fn at(dvsec: u16) -> Self {
        Self(dvsec, PhantomData)
    }
}

impl<R: Register, const SIZE: usize> IoLoc<Region<SIZE>, R> for InDvsec<R> {
    type IoType = R::Storage;

    fn offset(self) -> usize {
        usize::from(self.0) + R::OFFSET
    }
}
