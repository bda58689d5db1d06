// SPDX-License-Identifier: GPL-2.0

//! `mmap` of the emulated BARs and their faults (upstream `nvgrace_gpu_mmap()`,
//! `nvgrace_gpu_vfio_pci_huge_fault()`), and the PFN-to-offset lookup of memory-failure
//! (upstream `nvgrace_gpu_pfn_to_vma_pgoff()`).
//!
//! The mapping is PFN-based and filled on fault, with PMD or PUD entries where the address and
//! the PFN are aligned for them, so that a reset can zap it and the next fault can wait for the
//! GPU to be ready.

use core::sync::atomic::Ordering;

use kernel::{
    page::PAGE_SHIFT,
    prelude::*, //
};

use super::{
    poison::{
        self,
        Recorded, //
    },
    NvGraceGpu,
    Which, //
};
use crate::vfio::{
    core_device::CoreDevice,
    gpu_memory::GpuMemory,
    ops::split_pgoff,
    vma::{
        self,
        vm_flags,
        Fault,
        FaultHandler,
        VmFaultResult,
        VmOps,
        Vma, //
    }, //
};

/// The VMA operations of the emulated BARs; also what identifies our VMAs.
static MMAP_OPS: VmOps<NvGraceGpu> = vma::vm_ops::<NvGraceGpu>();

/// The VFIO region index a VMA maps.
fn vma_index(vma: &Vma) -> u64 {
    split_pgoff(vma.pgoff()).0
}

/// The VMA's first page, counted from the start of its region.
fn vma_pgoff_in_region(vma: &Vma) -> u64 {
    split_pgoff(vma.pgoff()).1
}

/// `mmap` of the device fd.
pub(super) fn mmap(vdev: &CoreDevice<NvGraceGpu>, vma: &Vma) -> Result {
    let Some((which, region)) = vdev.data().region(vma_index(vma)) else {
        return vdev.core_mmap(vma);
    };
    // The faults insert PFNs, which a private (copy-on-write) mapping cannot take: refuse it.
    // Deliberate difference 4: upstream accepts it, and the first fault hits the BUG_ON() in
    // vmf_insert_pfn_prot(). A shared mapping of a read-only fd is served, as upstream does.
    if vma.is_cow() {
        return Err(EINVAL);
    }
    let req_len = vma.end().checked_sub(vma.start()).ok_or(EOVERFLOW)?;
    let end = (vma_pgoff_in_region(vma) << PAGE_SHIFT)
        .checked_add(req_len)
        .ok_or(EOVERFLOW)?;
    if end > region.memlength {
        return Err(EINVAL);
    }
    vma.set_flags(vm_flags::IO | vm_flags::PFNMAP | vm_flags::DONTEXPAND | vm_flags::DONTDUMP);
    if which == Which::Resmem {
        // resmem needs Normal-NC: write-combining here, and VM_ALLOW_ANY_UNCACHED tells KVM it
        // may map it Normal-NC at stage 2 too (uncontained failures on such accesses are not a
        // concern for this device).
        vma.set_flags(vm_flags::ALLOW_ANY_UNCACHED);
        vma.set_writecombine();
    }
    vma.set_ops(&MMAP_OPS, vdev);
    Ok(())
}

impl FaultHandler for NvGraceGpu {
    fn vm_ops() -> &'static VmOps<Self> {
        &MMAP_OPS
    }

    // Inlined into the fault callback (vfio/vma.rs): one call less on every fault.
    #[inline]
    fn huge_fault(vdev: &CoreDevice<Self>, fault: &Fault, order: u32) -> VmFaultResult {
        let vma = fault.vma();
        let Some((which, region)) = vdev.data().region(vma_index(vma)) else {
            return VmFaultResult::SIGBUS;
        };
        let Ok(mem) = vdev.data().memory(which) else {
            return VmFaultResult::SIGBUS;
        };
        let addr = fault.address() & !((1u64 << (PAGE_SHIFT + order as usize)) - 1);
        let page_in_vma = (addr.wrapping_sub(vma.start())) >> PAGE_SHIFT;
        let pfn = (region.memphys >> PAGE_SHIFT) + vma_pgoff_in_region(vma) + page_in_vma;
        if !fault.aligned_for_order(addr, pfn, order) {
            fault.debug_result(vdev, order, pfn, VmFaultResult::FALLBACK);
            return VmFaultResult::FALLBACK;
        }
        // A poisoned page (poison.rs) is never mapped again; a huge entry over one falls
        // back, so that the good pages around it still map with smaller entries.
        if vdev.data().poison().any_in(pfn, 1u64 << order) {
            let ret = if order == 0 {
                VmFaultResult::HWPOISON
            } else {
                VmFaultResult::FALLBACK
            };
            fault.debug_result(vdev, order, pfn, ret);
            return ret;
        }
        Self::fault_aligned(vdev, fault, mem, pfn, order)
    }

    fn pfn_to_pgoff(vdev: &CoreDevice<Self>, vma: &Vma, pfn: u64) -> Result<u64> {
        // memory-failure asks once per VMA of the device fd and process: the first call for
        // a PFN records it (poison.rs), whichever region this VMA maps.
        record_poison(vdev, pfn);
        let (_, region) = vdev.data().region(vma_index(vma)).ok_or(EINVAL)?;
        let first = region.first_pfn(PAGE_SHIFT);
        if pfn < first || pfn >= first + region.nr_pages(PAGE_SHIFT) {
            return Err(EFAULT);
        }
        let in_region = pfn - first;
        let vma_first = vma_pgoff_in_region(vma);
        // The page lies before this VMA's window of the region.
        if in_region < vma_first {
            return Err(EFAULT);
        }
        Ok(vma.pgoff() + (in_region - vma_first))
    }
}

/// Records a PFN that memory-failure reported, and says so in the kernel log the first time.
/// Runs under the mapping's `i_mmap` lock and RCU: no sleeping, no allocation.
fn record_poison(vdev: &CoreDevice<NvGraceGpu>, pfn: u64) {
    let dev = vdev.pdev().as_ref();
    match vdev.data().poison().record(pfn) {
        Some((Recorded::Added, which, offset)) => dev_warn!(
            dev,
            "memory failure at {} offset {offset:#x} (PFN {pfn:#x}): the page is not mapped again and reads and writes of it fail until the device is removed\n",
            which.name()
        ),
        Some((Recorded::Full, which, offset)) => dev_err!(
            dev,
            "memory failure at {} offset {offset:#x} (PFN {pfn:#x}) not recorded: the record of {} poisoned pages is full\n",
            which.name(),
            poison::CAPACITY
        ),
        Some((Recorded::Known, _, _)) | None => {}
    }
}

impl NvGraceGpu {
    /// The part of a fault whose address and PFN are aligned for `order`: waits for readiness
    /// and inserts the PFN. As upstream, the result of the insertion
    /// (and a fallback) is logged with `dev_dbg_ratelimited()`, early failures are not.
    #[inline]
    fn fault_aligned(
        vdev: &CoreDevice<Self>,
        fault: &Fault,
        mem: &GpuMemory,
        pfn: u64,
        order: u32,
    ) -> VmFaultResult {
        loop {
            // The CXL wait may take minutes, so it runs outside memory_lock. Before it, fail
            // early, under memory_lock, rather than wait for readiness of a device that user
            // space put in low power; the check under the lock below catches any later change.
            // Only then: without a wait pending that check is the same one, and taking
            // memory_lock a second time on every fault cost ~100 instructions per fault under
            // QEMU's -icount (Documentation/performance.md).
            let me = vdev.data();
            if me.cxl_dvsec.is_some() && me.reset_done.load(Ordering::Acquire) {
                if vdev.memory_read_lock().pm_runtime_engaged() {
                    return VmFaultResult::SIGBUS;
                }
                if NvGraceGpu::wait_cxl_if_reset(vdev).is_err() {
                    return VmFaultResult::SIGBUS;
                }
            }
            let guard = vdev.memory_read_lock();
            if guard.pm_runtime_engaged() {
                return VmFaultResult::SIGBUS;
            }
            match NvGraceGpu::check_ready(vdev, &guard) {
                Ok(()) => {
                    let ret = fault.insert_pfn(&guard, mem, pfn, order);
                    drop(guard);
                    fault.debug_result(vdev, order, pfn, ret);
                    return ret;
                }
                // A reset raced with the wait: wait again rather than fail.
                Err(e) if e == EAGAIN => continue,
                Err(_) => return VmFaultResult::SIGBUS,
            }
        }
    }
}
