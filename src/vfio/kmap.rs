// SPDX-License-Identifier: GPL-2.0

//! Kernel mappings of GPU memory, for the `read`/`write` path: usemem is cacheable system memory
//! (`memremap(MEMREMAP_WB)`), resmem is mapped write-combining (`ioremap_wc()`: Normal-NC on
//! arm64), as upstream's `nvgrace_gpu_map_device_mem()` does.
//!
//! [`LazyKernelMap`] holds one such mapping from the first `read`/`write` that needs it until
//! the device is closed, and hands it out without a lock in between.
//!
//! C header: [`include/linux/io.h`](srctree/include/linux/io.h)

use core::{
    cell::UnsafeCell,
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{
        AtomicBool,
        Ordering, //
    }, //
};

use kernel::{
    ffi::c_void,
    new_mutex,
    prelude::*,
    sync::Mutex,
    uaccess::UserPtr, //
};

use super::{
    bindings,
    core_device::CoreDevice,
    gpu_memory::GpuMemory,
    uaccess::NoPageFaults, //
};

/// How a region is mapped into the kernel: the type parameter of [`KernelMap`], so that which
/// copy a mapping takes is settled when the driver is compiled ([`WriteBack`],
/// [`WriteCombine`]).
pub(crate) trait Caching: Send + Sync + 'static {
    /// Whether the mapping is write-back cacheable (else write-combining).
    const WRITE_BACK: bool;
}

/// Write-back cacheable (usemem): `memremap(MEMREMAP_WB)`.
pub(crate) enum WriteBack {}

impl Caching for WriteBack {
    const WRITE_BACK: bool = true;
}

/// Write-combining, uncached (resmem): `ioremap_wc()`.
pub(crate) enum WriteCombine {}

impl Caching for WriteCombine {
    const WRITE_BACK: bool = false;
}

/// A kernel mapping of a range of GPU memory, cached as `C` says.
///
/// # Invariants
///
/// `addr` maps the `len` bytes of a [`GpuMemory`] with `C`'s caching, from `memremap()` for
/// write-back or `ioremap_wc()` for write-combining, until drop.
pub(crate) struct KernelMap<C: Caching> {
    addr: NonNull<c_void>,
    len: usize,
    _caching: PhantomData<C>,
}

// SAFETY: The mapping is plain kernel virtual memory, usable from any thread.
unsafe impl<C: Caching> Send for KernelMap<C> {}
// SAFETY: Accesses go through copy routines that tolerate concurrent access (the memory is also
// mapped to user space, which the driver cannot stop from writing it).
unsafe impl<C: Caching> Sync for KernelMap<C> {}

impl<C: Caching> KernelMap<C> {
    /// Maps the GPU memory `mem`. Returns `EOVERFLOW` when it does not fit the address space
    /// and `ENOMEM` when the mapping fails.
    pub(crate) fn new(mem: &GpuMemory) -> Result<Self> {
        let phys = mem.phys();
        let len = usize::try_from(mem.len()).map_err(|_| EOVERFLOW)?;
        // SAFETY: `mem` is GPU memory (its type invariant), not RAM the kernel manages, so a
        // second mapping of it with `C`'s caching aliases nothing the kernel relies on; failure
        // returns NULL.
        let addr = unsafe {
            if C::WRITE_BACK {
                bindings::memremap(phys, len, bindings::MEMREMAP_WB as usize)
            } else {
                bindings::nvgrace_helper_ioremap_wc(phys, len)
            }
        };
        // INVARIANT: A non-NULL `addr` maps the memory with `C`'s caching.
        Ok(KernelMap {
            addr: NonNull::new(addr).ok_or(ENOMEM)?,
            len,
            _caching: PhantomData,
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
        if C::WRITE_BACK {
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
        } else {
            let _no_faults = NoPageFaults::new();
            // SAFETY: The mapping covers `offset + count` bytes of MMIO-capable memory.
            let r = unsafe { vdev.do_io_rw(self.addr.as_ptr(), buf, offset, count, false) };
            match r {
                Err(e) if e == EFAULT => Ok(0),
                r => r.map(|_| count),
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
        if C::WRITE_BACK {
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
        } else {
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

impl KernelMap<WriteBack> {
    /// Zeroes `count` bytes at `offset`: what `copy_from_user()` leaves in the part of a
    /// destination it could not copy, which upstream's usemem `write` returns with `EFAULT`.
    /// `EINVAL` outside the mapping.
    pub(crate) fn zero(&self, offset: u64, count: usize) -> Result {
        let off = self.check(offset, count)?;
        // SAFETY: `off + count` lies inside the mapping (checked), which is plain cacheable
        // memory; concurrent user-space accesses of it are tolerated (see `Sync`).
        unsafe { core::ptr::write_bytes(self.addr.as_ptr().byte_add(off).cast::<u8>(), 0, count) };
        Ok(())
    }
}

impl<C: Caching> Drop for KernelMap<C> {
    fn drop(&mut self) {
        // SAFETY: `addr` came from the matching mapping call (type invariant).
        unsafe {
            if C::WRITE_BACK {
                bindings::memunmap(self.addr.as_ptr())
            } else {
                bindings::iounmap(self.addr.as_ptr())
            }
        }
    }
}

/// The kernel mapping of one region for `read`/`write`: made by the first access that needs it,
/// dropped when the device is closed (upstream's `memaddr`/`ioaddr`, made on first use under
/// `remap_lock` by `nvgrace_gpu_map_device_mem()` and unmapped by `nvgrace_gpu_close_device()`).
/// In between, [`LazyKernelMap::get`] takes no lock: one acquire load. Upstream takes
/// `remap_lock` on every access to test whether the mapping exists.
///
/// A kernel type would not do: `SetOnce` cannot be emptied again at close, and a `Mutex`
/// costs a lock and an unlock per access (and serialised concurrent copies when it was held
/// across them).
///
/// # Invariants
///
/// - `map` is written only with `lock` held and `mapped` false.
/// - While `mapped` is true, `map` is `Some`.
#[pin_data]
pub(crate) struct LazyKernelMap<C: Caching> {
    /// Serialises making and dropping the mapping.
    #[pin]
    lock: Mutex<()>,
    /// Whether `map` holds the mapping (stored with `Release` once it is written).
    mapped: AtomicBool,
    map: UnsafeCell<Option<KernelMap<C>>>,
}

// SAFETY: `map` is written only under `lock` while `mapped` is false (type invariant), and
// read only after an acquire load of `mapped` saw true (which the release store after the
// write pairs with), or under `lock`; `unmap`'s callers guarantee that no reader runs.
unsafe impl<C: Caching> Sync for LazyKernelMap<C> {}

impl<C: Caching> LazyKernelMap<C> {
    /// An empty slot.
    pub(crate) fn new() -> impl PinInit<Self> {
        // INVARIANT: `mapped` is false.
        pin_init!(Self {
            lock <- new_mutex!(()),
            mapped: AtomicBool::new(false),
            map: UnsafeCell::new(None),
        })
    }

    /// The mapping, if it has been made.
    #[inline(always)]
    pub(crate) fn get(&self) -> Option<&KernelMap<C>> {
        if self.mapped.load(Ordering::Acquire) {
            // SAFETY: `mapped` is true, so `map` is `Some` (type invariant) and is not written
            // until `unmap`, which runs only when no reader does (its safety requirement).
            Some(unsafe { (*self.map.get()).as_ref().unwrap_unchecked() })
        } else {
            None
        }
    }

    /// The mapping, made with `make` if there is none yet (`make`'s error otherwise).
    pub(crate) fn get_or_map(
        &self,
        make: impl FnOnce() -> Result<KernelMap<C>>,
    ) -> Result<&KernelMap<C>> {
        let _guard = self.lock.lock();
        if !self.mapped.load(Ordering::Relaxed) {
            let map = make()?;
            // SAFETY: `lock` is held and `mapped` is false: nobody else reads or writes `map`.
            unsafe { *self.map.get() = Some(map) };
            // INVARIANT: `map` is `Some`; the release pairs with `get`'s acquire load.
            self.mapped.store(true, Ordering::Release);
        }
        // SAFETY: `lock` is held, so no write of `map` runs.
        unsafe { &*self.map.get() }.as_ref().ok_or(ENOMEM)
    }

    /// Drops the mapping, if any (upstream `nvgrace_gpu_close_device()`).
    ///
    /// # Safety
    ///
    /// No reference that [`LazyKernelMap::get`] returned may be in use, and no `get` may run,
    /// until this returns: call it only where no `read`/`write` of the device can run, as in
    /// `close_device` (VFIO calls it once the last file of the device is released).
    pub(crate) unsafe fn unmap(&self) {
        let _guard = self.lock.lock();
        // INVARIANT: `mapped` is false before `map` is written.
        self.mapped.store(false, Ordering::Relaxed);
        // SAFETY: `lock` is held, `mapped` is false, and no reader runs (the caller's guarantee).
        unsafe { *self.map.get() = None };
    }
}
