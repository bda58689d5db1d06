// SPDX-License-Identifier: GPL-2.0

//! Kernel mappings of GPU memory, for the `read`/`write` path: usemem is cacheable system memory
//! (`memremap(MEMREMAP_WB)`), resmem is mapped write-combining (`ioremap_wc()`: Normal-NC on
//! arm64), as upstream's `nvgrace_gpu_map_device_mem()` does.
//!
//! C header: [`include/linux/io.h`](srctree/include/linux/io.h)

use core::ptr::NonNull;

use kernel::{
    ffi::c_void,
    prelude::*,
    uaccess::UserPtr, //
};

use super::{
    bindings,
    core_device::CoreDevice,
    gpu_memory::GpuMemory,
    uaccess::NoPageFaults, //
};

/// How a region is mapped into the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Caching {
    /// Write-back cacheable (usemem).
    WriteBack,
    /// Write-combining, uncached (resmem).
    WriteCombine,
}

/// A kernel mapping of a range of GPU memory.
///
/// # Invariants
///
/// `addr` maps the `len` bytes of a [`GpuMemory`] with `caching`, from `memremap()` for write-back or `ioremap_wc()`
/// for write-combining, until drop.
pub(crate) struct KernelMap {
    addr: NonNull<c_void>,
    len: usize,
    caching: Caching,
}

// SAFETY: The mapping is plain kernel virtual memory, usable from any thread.
unsafe impl Send for KernelMap {}
// SAFETY: Accesses go through copy routines that tolerate concurrent access (the memory is also
// mapped to user space, which the driver cannot stop from writing it).
unsafe impl Sync for KernelMap {}

impl KernelMap {
    /// Maps the GPU memory `mem`. Returns `EOVERFLOW` when it does not fit the address space
    /// and `ENOMEM` when the mapping fails.
    pub(crate) fn new(mem: &GpuMemory, caching: Caching) -> Result<Self> {
        let phys = mem.phys();
        let len = usize::try_from(mem.len()).map_err(|_| EOVERFLOW)?;
        // SAFETY: `mem` is GPU memory (its type invariant), not RAM the kernel manages, so a
        // second mapping of it with `caching` aliases nothing the kernel relies on; failure
        // returns NULL.
        let addr = unsafe {
            match caching {
                Caching::WriteBack => bindings::memremap(phys, len, bindings::MEMREMAP_WB as usize),
                Caching::WriteCombine => bindings::nvgrace_helper_ioremap_wc(phys, len),
            }
        };
        // INVARIANT: A non-NULL `addr` maps the memory with `caching`.
        Ok(KernelMap {
            addr: NonNull::new(addr).ok_or(ENOMEM)?,
            len,
            caching,
        })
    }

    #[inline]
    fn check(&self, offset: u64, count: usize) -> Result<usize> {
        let offset = usize::try_from(offset).map_err(|_| EINVAL)?;
        match offset.checked_add(count) {
            Some(end) if end <= self.len => Ok(offset),
            _ => Err(EINVAL),
        }
    }

    /// Copies `count` bytes at `offset` into user memory at `buf` with page faults disabled
    /// (the caller holds `memory_lock`; see [`super::uaccess`]): a plain copy for write-back
    /// memory, vfio-pci-core's MMIO copy (accesses of up to 8 bytes) for write-combining.
    ///
    /// Returns the bytes copied: all of them, or those before the first user page that would
    /// have faulted (none for write-combining, whose copy reports no partial progress); the
    /// caller faults that page in without the lock and copies the rest. `EINVAL` outside the
    /// mapping.
    #[inline(always)]
    pub(crate) fn read_to_user_nofault<T>(
        &self,
        vdev: &CoreDevice<T>,
        offset: u64,
        buf: UserPtr,
        count: usize,
    ) -> Result<usize> {
        let off = self.check(offset, count)?;
        match self.caching {
            Caching::WriteBack => {
                // SAFETY: `off + count` lies inside the mapping (checked); `buf` is a user
                // pointer, which `copy_to_user()` checks; the helper disables page faults
                // around the copy.
                let left = unsafe {
                    bindings::nvgrace_helper_copy_to_user_nofault(
                        buf.as_mut_ptr(),
                        self.addr.as_ptr().byte_add(off),
                        count,
                    )
                };
                Ok(count - left)
            }
            Caching::WriteCombine => {
                let _no_faults = NoPageFaults::new();
                // SAFETY: The mapping covers `offset + count` bytes of MMIO-capable memory.
                let r = unsafe { vdev.do_io_rw(self.addr.as_ptr(), buf, offset, count, false) };
                match r {
                    Err(e) if e == EFAULT => Ok(0),
                    r => r.map(|_| count),
                }
            }
        }
    }

    /// Copies `count` bytes from user memory at `buf` to `offset`, with page faults disabled;
    /// as [`KernelMap::read_to_user_nofault`] (a write-combining copy that stops is redone from
    /// its start: it rewrites the same bytes). A write-back copy that stops leaves the rest of
    /// the destination as it was (`__copy_from_user_inatomic()`; `copy_from_user()` would zero
    /// it, and guests may be reading that memory).
    #[inline(always)]
    pub(crate) fn write_from_user_nofault<T>(
        &self,
        vdev: &CoreDevice<T>,
        offset: u64,
        buf: UserPtr,
        count: usize,
    ) -> Result<usize> {
        let off = self.check(offset, count)?;
        match self.caching {
            Caching::WriteBack => {
                // SAFETY: As in `read_to_user_nofault`; the helper checks `buf` with
                // `access_ok()` and copies with page faults disabled.
                let left = unsafe {
                    bindings::nvgrace_helper_copy_from_user_nofault(
                        self.addr.as_ptr().byte_add(off),
                        buf.as_const_ptr(),
                        count,
                    )
                };
                Ok(count - left)
            }
            Caching::WriteCombine => {
                let _no_faults = NoPageFaults::new();
                // SAFETY: As in `read_to_user_nofault`.
                let r = unsafe { vdev.do_io_rw(self.addr.as_ptr(), buf, offset, count, true) };
                match r {
                    Err(e) if e == EFAULT => Ok(0),
                    r => r.map(|_| count),
                }
            }
        }
    }
}

impl KernelMap {
    /// Zeroes `count` bytes at `offset` of a write-back mapping: what `copy_from_user()` leaves
    /// in the part of a destination it could not copy, which upstream's usemem `write` returns
    /// with `EFAULT`. `EINVAL` outside the mapping or for a write-combining mapping.
    pub(crate) fn zero(&self, offset: u64, count: usize) -> Result {
        let off = self.check(offset, count)?;
        if self.caching != Caching::WriteBack {
            return Err(EINVAL);
        }
        // SAFETY: `off + count` lies inside the mapping (checked), which is plain cacheable
        // memory; concurrent user-space accesses of it are tolerated (see `Sync`).
        unsafe { core::ptr::write_bytes(self.addr.as_ptr().byte_add(off).cast::<u8>(), 0, count) };
        Ok(())
    }
}

impl Drop for KernelMap {
    fn drop(&mut self) {
        // SAFETY: `addr` came from the matching mapping call (type invariant).
        unsafe {
            match self.caching {
                Caching::WriteBack => bindings::memunmap(self.addr.as_ptr()),
                Caching::WriteCombine => bindings::iounmap(self.addr.as_ptr()),
            }
        }
    }
}
