// SPDX-License-Identifier: GPL-2.0

//! Registration of a PFN range with memory-failure, so that a poisoned page of the GPU memory
//! (which has no `struct page`) is reported with SIGBUS to the processes that map it.
//!
//! C header: [`include/linux/memory-failure.h`](srctree/include/linux/memory-failure.h)

use core::sync::atomic::{
    AtomicBool,
    Ordering, //
};

use kernel::{
    error::to_result,
    prelude::*,
    types::Opaque, //
};

use super::{
    bindings,
    core_device::CoreDevice,
    vma::{
        pfn_to_vma_pgoff,
        FaultHandler, //
    }, //
};

/// A `struct pfn_address_space`: one PFN range and the device-fd mapping whose VMAs map it.
///
/// # Invariants
///
/// `space` is registered with memory-failure exactly when `registered` is set.
#[pin_data(PinnedDrop)]
pub(crate) struct PfnRange {
    #[pin]
    space: Opaque<bindings::pfn_address_space>,
    registered: AtomicBool,
}

// SAFETY: The C structure is only touched under memory-failure's own lock once registered, and by
// `register`/`unregister`, which the driver calls from open and close (serialised by vfio).
unsafe impl Send for PfnRange {}
// SAFETY: See `Send`.
unsafe impl Sync for PfnRange {}

impl PfnRange {
    /// An unregistered range.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self { space <- Opaque::zeroed(), registered: AtomicBool::new(false) })
    }

    /// Registers the pages `[first_pfn, first_pfn + nr_pages)` for the VMAs of `vdev`'s device
    /// fd that `T`'s fault handler manages. Only from open, paired with
    /// [`PfnRange::unregister`] in close.
    ///
    /// Returns `EBUSY` if the range overlaps a registered one, `EOPNOTSUPP` without
    /// CONFIG_MEMORY_FAILURE, `EINVAL` for an empty range.
    pub(crate) fn register<T: FaultHandler>(
        &self,
        vdev: &CoreDevice<T>,
        first_pfn: u64,
        nr_pages: u64,
    ) -> Result {
        if nr_pages == 0 || self.registered.load(Ordering::Relaxed) {
            return Err(EINVAL);
        }
        let space = self.space.get();
        // SAFETY: The range is not registered, so nothing else reads `space`; the device's inode
        // lives as long as the device.
        unsafe {
            (*space).node.start = first_pfn as usize;
            (*space).node.last = (first_pfn + nr_pages - 1) as usize;
            (*space).mapping = (*(*vdev.as_vdev()).inode).i_mapping;
            (*space).pfn_to_vma_pgoff = Some(pfn_to_vma_pgoff::<T>);
            to_result(bindings::register_pfn_address_space(space))?;
        }
        // INVARIANT: Registration succeeded.
        self.registered.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Unregisters the range if it is registered.
    pub(crate) fn unregister(&self) {
        if self.registered.swap(false, Ordering::Relaxed) {
            // SAFETY: Registered (type invariant).
            unsafe { bindings::unregister_pfn_address_space(self.space.get()) };
        }
    }
}

#[pinned_drop]
impl PinnedDrop for PfnRange {
    fn drop(self: Pin<&mut Self>) {
        self.unregister();
    }
}
