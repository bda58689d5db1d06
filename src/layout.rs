// SPDX-License-Identifier: GPL-2.0

//! How the GPU memory aperture splits into the usemem and resmem regions, and the BAR sizes that
//! present them. Kernel-free: the host's `cargo test` runs it (tests/unit).
//!
//! Reference: `nvgrace_gpu_init_nvdev_struct()` of drivers/vfio/pci/nvgrace-gpu/main.c.
//!
//! ```text
//!   memphys                                                  memphys + memlength
//!   |------------------ usemem ------------------|--------- resmem ---------|
//!   (rounded down to MEMBLK_SIZE)                 (the rest, >= RESMEM_SIZE)
//! ```
//!
//! With the MIG hardware bug (Grace Hopper) the VM's GPU driver needs an uncached region, so the
//! last [`RESMEM_SIZE`] bytes, plus whatever the MEMBLK_SIZE rounding of usemem leaves over, are
//! carved out as resmem. Without the bug (Grace Blackwell) all memory is usemem.

/// The memory block size the VM's GPU driver adds usemem to its kernel in: a fixed ABI value
/// between the GPU firmware and VFIO (upstream `MEMBLK_SIZE`, 512 MiB).
pub(crate) const MEMBLK_SIZE: u64 = 512 << 20;

/// The size of the uncached carve-out on parts with the MIG hardware bug (1 GiB, upstream).
pub(crate) const RESMEM_SIZE: u64 = 1 << 30;

/// One memory region presented as an emulated 64-bit BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemRegion {
    /// Host physical address of the region's first byte.
    pub(crate) memphys: u64,
    /// Bytes of real memory in the region (what can be mapped and accessed).
    pub(crate) memlength: u64,
    /// The size the BAR reports: `memlength` rounded up to a power of two, in bytes.
    pub(crate) bar_size: u64,
}

impl MemRegion {
    /// The first page frame number of the region, for `page_shift`-bit pages.
    pub(crate) fn first_pfn(&self, page_shift: usize) -> u64 {
        self.memphys >> page_shift
    }

    /// The number of pages of real memory in the region, for `page_shift`-bit pages.
    pub(crate) fn nr_pages(&self, page_shift: usize) -> u64 {
        self.memlength >> page_shift
    }
}

/// The regions of one GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Cacheable memory for the VM's workloads, presented as BAR4/5.
    pub(crate) usemem: MemRegion,
    /// The uncached carve-out, presented as BAR2/3; `None` on parts without the MIG bug.
    pub(crate) resmem: Option<MemRegion>,
}

/// Why a memory description cannot be presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayoutError {
    /// An address or size computation overflows (`-EOVERFLOW`), including memory smaller than
    /// the carve-out on parts with the MIG bug.
    Overflow,
    /// usemem rounds down to 0 bytes (`-EINVAL`).
    NoUsemem,
}

/// Rounds up to a power of two (upstream `roundup_pow_of_two()`); `None` above 2^63.
fn bar_size(len: u64) -> Option<u64> {
    len.checked_next_power_of_two()
}

impl Layout {
    /// Splits the aperture `[memphys, memphys + memlength)` (bytes) as upstream does.
    ///
    /// The usemem BAR size is computed from usemem before its rounding down to [`MEMBLK_SIZE`],
    /// as upstream does, so it can be larger than needed (1.7 GiB of memory: usemem 512 MiB in a
    /// 1 GiB BAR, resmem 1.2 GiB in a 2 GiB BAR).
    ///
    /// `memlength` must be non-zero (a zero size means the C2C link is down, which probe rejects
    /// before this). Sizes whose BAR would exceed 2^63 bytes are refused with
    /// [`LayoutError::Overflow`], where upstream's `roundup_pow_of_two()` is undefined.
    pub(crate) fn new(memphys: u64, memlength: u64, mig_hw_bug: bool) -> Result<Self, LayoutError> {
        let carve_out = if mig_hw_bug { RESMEM_SIZE } else { 0 };
        let unrounded = memlength
            .checked_sub(carve_out)
            .ok_or(LayoutError::Overflow)?;
        let usemem_bar = bar_size(unrounded).ok_or(LayoutError::Overflow)?;
        if !mig_hw_bug {
            return Ok(Layout {
                usemem: MemRegion {
                    memphys,
                    memlength: unrounded,
                    bar_size: usemem_bar,
                },
                resmem: None,
            });
        }
        let use_len = unrounded - unrounded % MEMBLK_SIZE;
        if use_len == 0 {
            return Err(LayoutError::NoUsemem);
        }
        let res_phys = memphys.checked_add(use_len).ok_or(LayoutError::Overflow)?;
        let res_len = memlength - use_len;
        Ok(Layout {
            usemem: MemRegion {
                memphys,
                memlength: use_len,
                bar_size: usemem_bar,
            },
            resmem: Some(MemRegion {
                memphys: res_phys,
                memlength: res_len,
                bar_size: bar_size(res_len).ok_or(LayoutError::Overflow)?,
            }),
        })
    }
}
