// SPDX-License-Identifier: GPL-2.0

//! The GPU memory the firmware describes, as the only physical ranges the driver may map into
//! the kernel ([`super::kmap::KernelMap`]), insert into user mappings
//! ([`super::vma::Fault::insert_pfn`]) or export
//! ([`super::ops::DmabufRequest::fill_with_provider_of_bar`]).
//!
//! A [`GpuMemory`] is made from the firmware's description of the device being probed, and the
//! driver can only narrow it ([`GpuMemory::sub_range`]); safe code cannot name any other
//! physical range.
//!
//! C header: [`include/linux/property.h`](srctree/include/linux/property.h)

use kernel::{
    device,
    pci,
    prelude::*, //
};

/// The ACPI `_DSD` (or device-tree) properties that describe the GPU memory.
const MEM_BASE_PROPERTY: &CStr = c"nvidia,gpu-mem-base-pa";
const MEM_SIZE_PROPERTY: &CStr = c"nvidia,gpu-mem-size";

/// A range of GPU memory: `len` bytes at physical address `phys`.
///
/// # Invariants
///
/// `len > 0`, `phys + len` does not overflow, and the range lies inside the memory that the
/// firmware's `nvidia,gpu-mem-base-pa`/`nvidia,gpu-mem-size` properties of a GPU function
/// bound to this driver describe: memory of that GPU, not RAM the kernel manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GpuMemory {
    phys: u64,
    len: u64,
}

impl GpuMemory {
    /// The GPU memory of `pdev` from its firmware properties: `Ok(None)` when they are absent
    /// or the size is 0 (what firmware reports when the C2C link is down); `EOVERFLOW` (with a
    /// `dev_err`) when the range runs past the end of the 64-bit physical address space.
    pub(crate) fn from_firmware(pdev: &pci::Device<device::Core<'_>>) -> Result<Option<Self>> {
        let read = || {
            let fwnode = pdev.as_ref().fwnode()?;
            let phys = fwnode.property_read::<u64>(MEM_BASE_PROPERTY).optional()?;
            let len = fwnode.property_read::<u64>(MEM_SIZE_PROPERTY).optional()?;
            (len != 0).then_some((phys, len))
        };
        let Some((phys, len)) = read() else {
            return Ok(None);
        };
        if phys.checked_add(len).is_none() {
            dev_err!(
                pdev.as_ref(),
                "GPU memory of {len:#x} bytes at {phys:#x} runs past the physical address space\n"
            );
            return Err(EOVERFLOW);
        }
        // INVARIANT: Non-empty, no overflow, and the firmware's own description.
        Ok(Some(GpuMemory { phys, len }))
    }

    /// The part `[phys, phys + len)` of this range; `None` if it is empty or not inside it.
    pub(crate) fn sub_range(&self, phys: u64, len: u64) -> Option<Self> {
        let end = phys.checked_add(len)?;
        // INVARIANT: Inside `self`, hence inside the firmware's description.
        (len != 0 && phys >= self.phys && end <= self.phys + self.len)
            .then_some(GpuMemory { phys, len })
    }

    /// The physical address of the first byte.
    pub(crate) fn phys(&self) -> u64 {
        self.phys
    }

    /// The length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether the pages `[pfn, pfn + nr_pages)` (of `1 << page_shift` bytes) lie inside.
    /// Inlined: every fault checks its PFNs with it.
    #[inline]
    pub(crate) fn contains_pages(&self, pfn: u64, nr_pages: u64, page_shift: usize) -> bool {
        let first = self.phys.div_ceil(1 << page_shift);
        let end = (self.phys + self.len) >> page_shift;
        pfn >= first && pfn.checked_add(nr_pages).is_some_and(|e| e <= end)
    }
}
