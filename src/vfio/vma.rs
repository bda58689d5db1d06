// SPDX-License-Identifier: GPL-2.0

//! VMAs of the device fd and their fault handling: the `vm_operations_struct` of the emulated
//! BARs, with trampolines into a [`FaultHandler`].
//!
//! `kernel::mm::virt::VmaNew` cannot set what a PFN-mapped BAR needs (VM_PFNMAP, the page
//! protection, `vm_ops` and private data), so this module wraps `vm_area_struct` itself.
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h)

use core::marker::PhantomData;

use kernel::{
    ffi::{
        c_int,
        c_uint,
        c_ulong, //
    },
    page::PAGE_SHIFT,
    prelude::*,
    types::Opaque, //
};

use super::{
    bindings,
    core_device::{
        CoreDevice,
        MemoryReadGuard, //
    },
    gpu_memory::GpuMemory, //
};

/// The result of a fault handler, a `vm_fault_t` (its values are `enum vm_fault_reason`,
/// include/linux/mm_types.h; 0 or `VM_FAULT_NOPAGE` when the fault was handled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct VmFaultResult(bindings::vm_fault_t);

impl VmFaultResult {
    /// Deliver SIGBUS to the faulting task.
    pub(crate) const SIGBUS: Self = Self(bindings::vm_fault_reason_VM_FAULT_SIGBUS);
    /// The huge mapping cannot be made; the core retries with a smaller order.
    pub(crate) const FALLBACK: Self = Self(bindings::vm_fault_reason_VM_FAULT_FALLBACK);
    /// The page is poisoned: the MM sends SIGBUS `BUS_MCEERR_AR` at the faulting address, with
    /// `si_addr_lsb` = `PAGE_SHIFT` (arch fault handlers, e.g. arm64 `do_page_fault()`).
    pub(crate) const HWPOISON: Self = Self(bindings::vm_fault_reason_VM_FAULT_HWPOISON);

    /// The `vm_fault_t` value.
    fn into_raw(self) -> bindings::vm_fault_t {
        self.0
    }
}

/// VMA flags (include/linux/mm.h), as `vm_flags_set()` takes them.
pub(crate) mod vm_flags {
    use super::bindings;
    /// Memory-mapped I/O or similar: no core dumps of it, no `get_user_pages()`.
    pub(crate) const IO: u64 = bindings::NVGRACE_CONST_VM_IO as u64;
    /// Pages are raw PFNs without `struct page`.
    pub(crate) const PFNMAP: u64 = bindings::NVGRACE_CONST_VM_PFNMAP as u64;
    /// `mremap()` may not grow the mapping.
    pub(crate) const DONTEXPAND: u64 = bindings::NVGRACE_CONST_VM_DONTEXPAND as u64;
    /// Not included in core dumps.
    pub(crate) const DONTDUMP: u64 = bindings::NVGRACE_CONST_VM_DONTDUMP as u64;
    /// The hypervisor may map it with any uncached attribute (NORMAL_NC on arm64 KVM stage 2);
    /// 0 on architectures without the notion.
    pub(crate) const ALLOW_ANY_UNCACHED: u64 = bindings::NVGRACE_CONST_VM_ALLOW_ANY_UNCACHED as u64;
}

/// A VMA of the device fd.
///
/// # Invariants
///
/// Wraps a valid `vm_area_struct` that the caller's context (the mmap or fault path, or the
/// memory-failure walk under the mapping's lock) keeps alive and stable for the borrow.
#[repr(transparent)]
pub(crate) struct Vma(Opaque<bindings::vm_area_struct>);

impl Vma {
    /// # Safety
    ///
    /// `vma` must be valid for `'a` and not be changed concurrently except through this wrapper
    /// (true in `mmap`, in fault handlers and in `pfn_to_vma_pgoff`).
    pub(crate) unsafe fn from_raw<'a>(vma: *mut bindings::vm_area_struct) -> &'a Self {
        // SAFETY: By the safety requirements; `Vma` is transparent.
        unsafe { &*vma.cast::<Self>() }
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::vm_area_struct {
        self.0.get()
    }

    /// The first user address of the mapping.
    pub(crate) fn start(&self) -> u64 {
        // SAFETY: The VMA is valid (type invariant).
        unsafe { (*self.as_raw()).__bindgen_anon_1.__bindgen_anon_1.vm_start as u64 }
    }

    /// The end (exclusive) of the mapping.
    pub(crate) fn end(&self) -> u64 {
        // SAFETY: The VMA is valid (type invariant).
        unsafe { (*self.as_raw()).__bindgen_anon_1.__bindgen_anon_1.vm_end as u64 }
    }

    /// The file offset of the mapping, in pages.
    pub(crate) fn pgoff(&self) -> u64 {
        // SAFETY: The VMA is valid (type invariant).
        unsafe { (*self.as_raw()).vm_pgoff as u64 }
    }

    /// Whether the mapping is copy-on-write (`vma_is_cow_mapping()`: `VM_MAYWRITE` without
    /// `VM_SHARED`, i.e. `MAP_PRIVATE`), into which `vmf_insert_pfn()` refuses to insert a PFN
    /// (a `BUG_ON()` in mm/memory.c). `MAP_SHARED` of a file opened read-only is not: mmap
    /// clears both `VM_SHARED` and `VM_MAYWRITE` there, and the mapping stays read-only.
    pub(crate) fn is_cow(&self) -> bool {
        // SAFETY: The VMA is valid (type invariant).
        unsafe { bindings::nvgrace_helper_vma_is_cow_mapping(self.as_raw()) }
    }

    /// Adds `flags` ([`vm_flags`]) to the VMA; only while setting it up in `mmap`.
    pub(crate) fn set_flags(&self, flags: u64) {
        // SAFETY: The VMA is valid and being set up (mmap holds the mmap lock for writing).
        unsafe { bindings::nvgrace_helper_vm_flags_set(self.as_raw(), flags as usize) }
    }

    /// Makes the mapping write-combining (`pgprot_writecombine()`: Normal-NC on arm64).
    pub(crate) fn set_writecombine(&self) {
        // SAFETY: As in `set_flags`.
        unsafe { bindings::nvgrace_helper_vma_set_writecombine(self.as_raw()) }
    }

    /// Routes the VMA's faults to `ops` with `vdev` as context; only in `mmap`. The device
    /// outlives the VMA: the VMA holds a reference to the device file.
    pub(crate) fn set_ops<T>(&self, ops: &'static VmOps<T>, vdev: &CoreDevice<T>) {
        // SAFETY: As in `set_flags`.
        unsafe {
            (*self.as_raw()).vm_ops = &ops.ops;
            (*self.as_raw()).vm_private_data = vdev.as_raw().cast();
        }
    }

    /// The device of a VMA set up with [`Vma::set_ops`] and `ops`, or `None` for any other VMA
    /// of the device fd (for example a BAR0 mapping made by vfio-pci-core).
    pub(crate) fn device<T>(&self, ops: &'static VmOps<T>) -> Option<&CoreDevice<T>> {
        // SAFETY: The VMA is valid (type invariant).
        let vm_ops = unsafe { (*self.as_raw()).vm_ops };
        // SAFETY: As above.
        let private = unsafe { (*self.as_raw()).vm_private_data };
        if !core::ptr::eq(vm_ops, &ops.ops) {
            return None;
        }
        // SAFETY: Only `set_ops` installs `ops`, with a device of `T` as private data, which the
        // VMA keeps alive.
        Some(unsafe { CoreDevice::from_vdev(private.cast()) })
    }
}

/// A page fault on a VMA set up with [`Vma::set_ops`].
///
/// # Invariants
///
/// Wraps the `vm_fault` of a fault in progress.
#[repr(transparent)]
pub(crate) struct Fault(Opaque<bindings::vm_fault>);

impl Fault {
    pub(crate) fn as_raw(&self) -> *mut bindings::vm_fault {
        self.0.get()
    }

    /// The faulting user address.
    pub(crate) fn address(&self) -> u64 {
        // SAFETY: The fault is in progress (type invariant).
        unsafe { (*self.as_raw()).__bindgen_anon_1.address as u64 }
    }

    /// The faulting VMA.
    pub(crate) fn vma(&self) -> &Vma {
        // SAFETY: The fault path holds the VMA (mmap or VMA lock) for the fault's duration.
        unsafe { Vma::from_raw((*self.as_raw()).__bindgen_anon_1.vma) }
    }

    /// Whether a mapping of `order` (pages: 0, PMD or PUD order) at `addr` for `pfn` fits the VMA
    /// and the PFN alignment: `is_aligned_for_order()` of include/linux/vfio_pci_core.h, which is
    /// `static inline` there, written out here rather than called through a C helper on every
    /// fault. Any order-0 fault fits; a huge one must lie inside the VMA with `pfn` aligned to
    /// `1 << order` pages.
    #[inline]
    pub(crate) fn aligned_for_order(&self, addr: u64, pfn: u64, order: u32) -> bool {
        if order == 0 {
            return true;
        }
        let vma = self.vma();
        // `order` is a PMD or PUD order, far below 64 - PAGE_SHIFT; an order that would
        // overflow does not fit.
        let Some(len) = 1u64.checked_shl(PAGE_SHIFT as u32 + order) else {
            return false;
        };
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        addr >= vma.start() && end <= vma.end() && pfn & ((len >> PAGE_SHIFT) - 1) == 0
    }
}

impl Fault {
    /// Inserts the `1 << order` pages at `pfn` at the faulting address with
    /// `vfio_pci_vmf_insert_pfn()`, under `memory_lock` (`guard`), which checks again that the
    /// device's memory is enabled. Returns its result, or `SIGBUS` when the pages are not all
    /// inside `mem`.
    #[inline]
    pub(crate) fn insert_pfn<T>(
        &self,
        guard: &MemoryReadGuard<'_, T>,
        mem: &GpuMemory,
        pfn: u64,
        order: u32,
    ) -> VmFaultResult {
        if order >= u64::BITS || !mem.contains_pages(pfn, 1 << order, PAGE_SHIFT) {
            return VmFaultResult::SIGBUS;
        }
        // SAFETY: `memory_lock` is held (`guard`), as vfio-pci-core requires; the fault is in
        // progress (type invariant); the pages are GPU memory (the type invariant of `mem`),
        // which user space may map.
        VmFaultResult(unsafe {
            bindings::vfio_pci_vmf_insert_pfn(guard.as_raw(), self.as_raw(), pfn as usize, order)
        })
    }

    /// Logs the result `ret` of a fault of `order` at `pfn` with `dev_dbg_ratelimited()`, in
    /// upstream's words (dynamic debug enables it). Without `CONFIG_DYNAMIC_DEBUG` that macro
    /// compiles to nothing in the helper (the module defines neither `DEBUG` nor
    /// `DYNAMIC_DEBUG_MODULE`), so the helper is not called at all, as upstream's fault handler
    /// then has no call either.
    #[inline]
    pub(crate) fn debug_result<T>(
        &self,
        vdev: &CoreDevice<T>,
        order: u32,
        pfn: u64,
        ret: VmFaultResult,
    ) {
        if !cfg!(CONFIG_DYNAMIC_DEBUG) {
            return;
        }
        // SAFETY: The PCI device is valid; the helper only formats the values.
        unsafe {
            bindings::nvgrace_helper_fault_dbg(
                &raw mut (*vdev.pdev_raw()).dev,
                order,
                pfn as c_ulong,
                ret.into_raw(),
            )
        }
    }
}

/// What a driver does on faults and memory-failure lookups in its VMAs.
pub(crate) trait FaultHandler: Sized + Send + Sync + 'static {
    /// The driver's table (built with [`vm_ops`]); identifies its VMAs.
    fn vm_ops() -> &'static VmOps<Self>;

    /// A fault of `order` (0 for a page, else the PMD or PUD order).
    fn huge_fault(vdev: &CoreDevice<Self>, fault: &Fault, order: u32) -> VmFaultResult;

    /// The file page offset at which `vma` maps `pfn`, for memory-failure to find the address
    /// to signal; `EFAULT` when the VMA does not map it.
    fn pfn_to_pgoff(vdev: &CoreDevice<Self>, vma: &Vma, pfn: u64) -> Result<u64>;
}

/// A `vm_operations_struct` for the VMAs of a driver `T`.
///
/// # Invariants
///
/// The table is never written after [`vm_ops`] made it; it holds only the function pointers of
/// the trampolines for `T`.
#[repr(transparent)]
pub(crate) struct VmOps<T> {
    ops: bindings::vm_operations_struct,
    _t: PhantomData<T>,
}

// SAFETY: The table is immutable and holds only function pointers.
unsafe impl<T> Sync for VmOps<T> {}

/// # Safety
///
/// Only the MM may call this, for a fault on a VMA set up by [`Vma::set_ops`].
unsafe extern "C" fn fault<T: FaultHandler>(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: The MM calls this with a fault in progress on a VMA set up by `Vma::set_ops`.
    unsafe { huge_fault::<T>(vmf, 0) }
}

/// # Safety
///
/// Only the MM may call this, for a fault on a VMA set up by [`Vma::set_ops`].
unsafe extern "C" fn huge_fault<T: FaultHandler>(
    vmf: *mut bindings::vm_fault,
    order: c_uint,
) -> bindings::vm_fault_t {
    // SAFETY: As in `fault`.
    let fault = unsafe { &*vmf.cast::<Fault>() };
    match fault.vma().device(T::vm_ops()) {
        Some(vdev) => T::huge_fault(vdev, fault, order),
        None => VmFaultResult::SIGBUS,
    }
    .into_raw()
}

/// The `pfn_to_vma_pgoff` callback of a driver's PFN ranges: upstream's
/// `nvgrace_gpu_pfn_to_vma_pgoff()` contract: `ENOENT` for VMAs that are not ours.
///
/// # Safety
///
/// Only memory-failure may call this, for a VMA of the device fd's mapping, under its lock.
pub(crate) unsafe extern "C" fn pfn_to_vma_pgoff<T: FaultHandler>(
    vma: *mut bindings::vm_area_struct,
    pfn: c_ulong,
    pgoff: *mut c_ulong,
) -> c_int {
    // SAFETY: By the safety requirements.
    let vma = unsafe { Vma::from_raw(vma) };
    let Some(vdev) = vma.device(T::vm_ops()) else {
        return ENOENT.to_errno();
    };
    match T::pfn_to_pgoff(vdev, vma, pfn as u64) {
        Ok(off) => {
            // SAFETY: `pgoff` is the caller's output slot.
            unsafe { *pgoff = off as c_ulong };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// The table for `T`: `.fault` and, where the architecture maps huge PFNs, `.huge_fault`.
pub(crate) const fn vm_ops<T: FaultHandler>() -> VmOps<T> {
    VmOps {
        ops: bindings::vm_operations_struct {
            fault: Some(fault::<T>),
            #[cfg(CONFIG_ARCH_SUPPORTS_HUGE_PFNMAP)]
            huge_fault: Some(huge_fault::<T>),
            ..pin_init::zeroed()
        },
        _t: PhantomData,
    }
}
