// SPDX-License-Identifier: GPL-2.0

//! The table of poisoned page frames of one GPU function. Kernel-free: the host's `cargo test`
//! runs it (tests/unit); [`super::PoisonRecord`] puts it under a spinlock.
//!
//! The table is filled from memory-failure's PFN-to-offset callback, which runs under the
//! mapping's `i_mmap` lock and RCU: it must not sleep or allocate, hence a fixed array.

/// Pages the table holds per GPU function. A GPU whose memory fails in more places than this
/// should be retired rather than given to a VM; NVIDIA's HBM row remapping, for comparison,
/// retires at most a few dozen rows per bank before the GPU needs service. 2 KiB of PFNs.
pub(crate) const CAPACITY: usize = 256;

/// What [`PoisonTable::record`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// The PFN is new and now in the table.
    Added,
    /// The PFN was already in the table (memory-failure calls once per VMA and process).
    Known,
    /// The table is full: the PFN was not recorded (and is counted in [`PoisonTable::dropped`]).
    Full,
}

/// Up to [`CAPACITY`] distinct page frame numbers, in the order they were first recorded.
///
/// # Invariants
///
/// `len <= CAPACITY`; `pfns[..len]` are distinct.
#[derive(Clone, Debug)]
pub(crate) struct PoisonTable {
    len: usize,
    pfns: [u64; CAPACITY],
    dropped: u64,
}

impl Default for PoisonTable {
    fn default() -> Self {
        Self::new()
    }
}

impl PoisonTable {
    /// An empty table.
    pub(crate) const fn new() -> Self {
        // INVARIANT: Empty.
        Self {
            len: 0,
            pfns: [0; CAPACITY],
            dropped: 0,
        }
    }

    /// Records `pfn`; see [`Recorded`]. Runs in at most [`CAPACITY`] comparisons.
    pub(crate) fn record(&mut self, pfn: u64) -> Recorded {
        if self.recorded().contains(&pfn) {
            return Recorded::Known;
        }
        if self.len == CAPACITY {
            self.dropped = self.dropped.saturating_add(1);
            return Recorded::Full;
        }
        // INVARIANT: `pfn` is not in the table and there is room.
        self.pfns[self.len] = pfn;
        self.len += 1;
        Recorded::Added
    }

    /// Whether any of the `nr_pages` page frames from `first_pfn` is recorded.
    pub(crate) fn any_in(&self, first_pfn: u64, nr_pages: u64) -> bool {
        self.recorded()
            .iter()
            .any(|&p| p >= first_pfn && p - first_pfn < nr_pages)
    }

    /// The recorded page frames, oldest first.
    pub(crate) fn recorded(&self) -> &[u64] {
        &self.pfns[..self.len]
    }

    /// How many reports of new page frames came when the table was full (not recorded; a PFN
    /// reported again counts again).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}
