// SPDX-License-Identifier: GPL-2.0

//! Poisoned pages of GPU memory stay poisoned (deliberate difference 6 of
//! tests/guest/src/differences.rs; upstream 7.3 keeps no such state).
//!
//! GPU memory has no `struct page`, so nothing in the MM remembers that memory-failure reported
//! one of its pages: after the mappings were zapped (a reset, munmap, close), the next fault
//! would map the bad memory again, and a `pread`/`pwrite` would read it through the kernel's
//! own mapping, consuming the poison in kernel context. The driver records each PFN it hears
//! of, for as long as it is bound to the device (probe to remove; the memory stays bad across
//! open, close and reset), and then
//! - answers a fault on a recorded page with `VM_FAULT_HWPOISON` (the MM sends SIGBUS
//!   `BUS_MCEERR_AR` at the faulting address with `si_addr_lsb` = `PAGE_SHIFT`), and a huge
//!   fault whose range holds one with `VM_FAULT_FALLBACK`, so that the good pages around it
//!   still map, with smaller entries;
//! - fails a `read`/`write` whose memory part touches a recorded page with `EIO`, before any
//!   byte is copied;
//! - lists the recorded pages in debugfs, `nvgrace_gpu_vfio_pci/<PCI device>/poisoned_pages`:
//!   one line per page, `usemem` or `resmem` and the byte offset in the region. debugfs rather
//!   than sysfs: this is a diagnostic for the operator, not an ABI we commit to, and the kernel
//!   crate has a safe abstraction for it; the kernel log has one line per recorded page too.
//!
//! What the driver is told: in 7.3 the only call a PFN-map driver gets from memory-failure is
//! `pfn_to_vma_pgoff()` (mm/memory-failure.c `collect_procs_pfn()`), once for each VMA of the
//! device fd's mapping that belongs to the process that reported the error (`current`, e.g. a
//! vCPU thread consuming the poison) or to a process that asked for early kill
//! (`PR_MCE_KILL_EARLY`, which QEMU sets). So a failure reported while no such process maps
//! anything of the device, or while the device is closed (nothing registered), is not
//! recorded, and the next fault maps the page again, as upstream's always does. A hook that
//! memory-failure calls for every PFN of a registered range, mapped or not (a `failure`
//! callback in `struct pfn_address_space`), would close that gap; it is worth proposing
//! upstream.

use core::{
    fmt,
    sync::atomic::{
        AtomicUsize,
        Ordering, //
    }, //
};

use kernel::{
    new_spinlock,
    prelude::*,
    sync::SpinLock, //
};

use super::Which;
use crate::layout::MemRegion;

mod table;

use table::PoisonTable;
pub(super) use table::{
    Recorded,
    CAPACITY, //
};

/// The page frames of one region: `(first_pfn, nr_pages)`.
type PfnSpan = (u64, u64);

/// The poisoned pages of one GPU function's usemem and resmem.
///
/// # Invariants
///
/// `count` is the number of PFNs in `table`, updated under its lock; every recorded PFN lies in
/// `usemem` or `resmem`.
#[pin_data]
pub(super) struct PoisonRecord {
    /// How many PFNs are recorded: faults and accesses skip the lock while it is 0.
    count: AtomicUsize,
    #[pin]
    table: SpinLock<PoisonTable>,
    usemem: Option<PfnSpan>,
    resmem: Option<PfnSpan>,
    /// Pages are `1 << page_shift` bytes.
    page_shift: usize,
}

impl PoisonRecord {
    /// An empty record for the regions `usemem` and `resmem` (`None`: absent).
    pub(super) fn new(
        usemem: Option<&MemRegion>,
        resmem: Option<&MemRegion>,
        page_shift: usize,
    ) -> impl PinInit<Self> + use<> {
        let span = |r: &MemRegion| (r.first_pfn(page_shift), r.nr_pages(page_shift));
        let (usemem, resmem) = (usemem.map(span), resmem.map(span));
        pin_init!(Self {
            count: AtomicUsize::new(0),
            table <- new_spinlock!(PoisonTable::new(), "nvgrace_gpu_poison"),
            usemem,
            resmem,
            page_shift,
        })
    }

    /// The region and page index of `pfn`, if it is GPU memory of this function.
    fn locate(&self, pfn: u64) -> Option<(Which, u64)> {
        let inside = |s: Option<PfnSpan>| {
            s.and_then(|(first, n)| (pfn >= first && pfn - first < n).then(|| pfn - first))
        };
        inside(self.usemem)
            .map(|p| (Which::Usemem, p))
            .or_else(|| inside(self.resmem).map(|p| (Which::Resmem, p)))
    }

    /// Records that memory-failure reported `pfn`. Callable in atomic context (takes a
    /// spinlock, never sleeps or allocates). Returns what was done and where the page lies
    /// (region and byte offset); `None` for a PFN outside both regions, which is not recorded.
    pub(super) fn record(&self, pfn: u64) -> Option<(Recorded, Which, u64)> {
        let (which, page) = self.locate(pfn)?;
        let mut table = self.table.lock();
        let r = table.record(pfn);
        // INVARIANT: Updated under the lock.
        self.count.store(table.recorded().len(), Ordering::Release);
        Some((r, which, page << self.page_shift))
    }

    /// Whether any of the `nr_pages` pages from `first_pfn` is recorded. Inlined into every
    /// fault and access: with nothing recorded it is one load.
    #[inline]
    pub(super) fn any_in(&self, first_pfn: u64, nr_pages: u64) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.any_in_locked(first_pfn, nr_pages)
    }

    /// The lookup of [`PoisonRecord::any_in`] once something is recorded, out of line.
    #[cold]
    #[inline(never)]
    fn any_in_locked(&self, first_pfn: u64, nr_pages: u64) -> bool {
        self.table.lock().any_in(first_pfn, nr_pages)
    }

    /// Whether any page of the bytes `[offset, offset + len)` of region `which` is recorded.
    #[inline]
    pub(super) fn any_in_bytes(&self, which: Which, offset: u64, len: u64) -> bool {
        // Nothing recorded, the common case: one load, before any page arithmetic.
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let span = match which {
            Which::Usemem => self.usemem,
            Which::Resmem => self.resmem,
        };
        let Some((first, _)) = span else {
            return false;
        };
        if len == 0 {
            return false;
        }
        let first_page = offset >> self.page_shift;
        let last_page = (offset + (len - 1)) >> self.page_shift;
        // The count was tested above.
        self.any_in_locked(first + first_page, last_page - first_page + 1)
    }

    /// The debugfs listing: `usemem 0x...` / `resmem 0x...` (byte offset in the region) per
    /// recorded page, oldest first, then how many reports were not recorded if the table
    /// filled up.
    pub(super) fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.table.lock().clone();
        for &pfn in table.recorded() {
            if let Some((which, page)) = self.locate(pfn) {
                writeln!(f, "{} {:#x}", which.name(), page << self.page_shift)?;
            }
        }
        if table.dropped() > 0 {
            writeln!(
                f,
                "not recorded: {} (the record holds {CAPACITY} pages)",
                table.dropped()
            )?;
        }
        Ok(())
    }
}
