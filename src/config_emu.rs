// SPDX-License-Identifier: GPL-2.0

//! Emulation of the two 64-bit BARs that present the GPU memory, over any config-space access
//! window. Kernel-free: the host's `cargo test` runs it (tests/unit).
//!
//! Reference: `nvgrace_gpu_read_config_emu()` / `nvgrace_gpu_write_config_emu()` of
//! drivers/vfio/pci/nvgrace-gpu/main.c. resmem owns `PCI_BASE_ADDRESS_2`/`_3` (0x18..0x20),
//! usemem `PCI_BASE_ADDRESS_4`/`_5` (0x20..0x28); each is one 8-byte little-endian register.
//!
//! One deliberate difference: an access that overlaps both emulated BARs emulates both (upstream
//! emulates only BAR2/3 and lets BAR4/5 read back vfio-pci-core's value of the physical BAR).
//!
//! [`EmuBarRegs`] shares the registers between concurrent config accesses: reads take no lock
//! (a sequence count), writes are serialised by the caller's lock, held through [`BarWriter`].
//! The functions on the read path are always inlined: each out-of-line call was a measurable
//! part of an emulated config read (Documentation/performance.md).

use core::sync::atomic::{
    fence,
    AtomicU32,
    AtomicU64,
    Ordering, //
};

/// Config-space offset of BAR2, the low half of the resmem BAR (`PCI_BASE_ADDRESS_2`).
pub(crate) const RESMEM_BAR_OFFSET: u64 = 0x18;
/// Config-space offset of BAR4, the low half of the usemem BAR (`PCI_BASE_ADDRESS_4`).
pub(crate) const USEMEM_BAR_OFFSET: u64 = 0x20;
/// Bytes of one emulated 64-bit BAR register pair.
pub(crate) const BAR_BYTES: u64 = 8;

/// The low bits every emulated BAR reads back: 64-bit memory BAR (`PCI_BASE_ADDRESS_MEM_TYPE_64`,
/// 0x4) that is prefetchable (`PCI_BASE_ADDRESS_MEM_PREFETCH`, 0x8). PCI Local Bus spec r3.0,
/// 6.2.5.1.
pub(crate) const BAR_FLAGS: u64 = 0x4 | 0x8;

/// One emulated BAR register pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EmuBar {
    /// The BAR size in bytes, a power of two.
    pub(crate) bar_size: u64,
    /// The last value written (both halves), before masking.
    pub(crate) bar_val: u64,
}

impl EmuBar {
    /// A BAR of `bar_size` bytes (a power of two) with a zero register, as after open and reset.
    pub(crate) const fn new(bar_size: u64) -> Self {
        EmuBar {
            bar_size,
            bar_val: 0,
        }
    }

    /// The value the register pair reads back: the written address bits above the size, and the
    /// flags (`nvgrace_gpu_get_read_value()`). Writing all-ones therefore reads back the size mask,
    /// which is how software sizes a BAR.
    #[inline(always)]
    pub(crate) fn read_value(&self) -> u64 {
        (self.bar_val & !(self.bar_size.wrapping_sub(1))) | BAR_FLAGS
    }
}

/// Where an access window meets one emulated register: the bytes `[buf_offset, buf_offset + len)`
/// of the access are the bytes `[reg_offset, reg_offset + len)` of the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Overlap {
    /// Offset into the access buffer.
    pub(crate) buf_offset: usize,
    /// Offset into the 8-byte register.
    pub(crate) reg_offset: usize,
    /// Bytes in common.
    pub(crate) len: usize,
}

/// The intersection of the access `[pos, pos + count)` with the register at `reg`
/// (`vfio_pci_core_range_intersect_range()`), if any.
pub(crate) fn overlap(pos: u64, count: usize, reg: u64) -> Option<Overlap> {
    intersect(pos, count, reg, BAR_BYTES)
}

/// The intersection of the access `[pos, pos + count)` with the `len` config-space bytes at
/// `base`, if any; `reg_offset` is then the offset from `base`.
#[inline(always)]
fn intersect(pos: u64, count: usize, base: u64, len: u64) -> Option<Overlap> {
    let end = pos.checked_add(count as u64)?;
    let start = pos.max(base);
    let stop = end.min(base + len);
    if start >= stop {
        return None;
    }
    Some(Overlap {
        buf_offset: (start - pos) as usize,
        reg_offset: (start - base) as usize,
        len: (stop - start) as usize,
    })
}

/// Whether the access `[pos, pos + count)` touches a register that may be emulated (BAR2/3 or
/// BAR4/5, whatever the device has). When it does not, the emulated values play no part, so the
/// driver need not look at them (nor take their lock): upstream likewise checks the
/// intersections first.
pub(crate) fn may_touch_emulated(pos: u64, count: usize) -> bool {
    overlap(pos, count, RESMEM_BAR_OFFSET).is_some()
        || overlap(pos, count, USEMEM_BAR_OFFSET).is_some()
}

/// Where a read meets the emulated registers: the bytes `[buf_offset, buf_offset + len)` of the
/// read are the bytes `[from, from + len)` of the registers laid end to end from the first
/// emulated one.
///
/// # Invariants
///
/// `from + len <= 16` (two 8-byte registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReadWindow {
    buf_offset: usize,
    from: usize,
    len: usize,
}

impl ReadWindow {
    /// Offset into the read buffer of the window's first byte.
    #[inline(always)]
    pub(crate) fn buf_offset(&self) -> usize {
        self.buf_offset
    }

    /// The window's bytes out of `bytes`, the little-endian bytes of an image of it
    /// ([`EmuBars::image`], [`EmuBarRegs::try_image`]): what to place at
    /// [`ReadWindow::buf_offset`] in the read buffer.
    #[inline(always)]
    pub(crate) fn data<'a>(&self, bytes: &'a [u8; 16]) -> &'a [u8] {
        // `len` is at most 16 (type invariant); the `min` spares a panic path.
        &bytes[..self.len.min(bytes.len())]
    }
}

/// The emulated BARs of one device, in config-space order: resmem (BAR2/3, absent on parts
/// without the MIG bug, where BAR2/3 pass through to vfio-pci-core) then usemem (BAR4/5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EmuBars {
    /// The resmem BAR, if the device has resmem.
    pub(crate) resmem: Option<EmuBar>,
    /// The usemem BAR.
    pub(crate) usemem: EmuBar,
}

impl EmuBars {
    fn each_mut(&mut self) -> impl Iterator<Item = (u64, &mut EmuBar)> {
        self.resmem
            .as_mut()
            .map(|b| (RESMEM_BAR_OFFSET, b))
            .into_iter()
            .chain(core::iter::once((USEMEM_BAR_OFFSET, &mut self.usemem)))
    }

    fn each(&self) -> impl Iterator<Item = (u64, EmuBar)> {
        self.resmem
            .map(|b| (RESMEM_BAR_OFFSET, b))
            .into_iter()
            .chain(core::iter::once((USEMEM_BAR_OFFSET, self.usemem)))
    }

    /// Zeroes both registers (on open and on `VFIO_DEVICE_RESET`).
    pub(crate) fn reset(&mut self) {
        self.each_mut().for_each(|(_, b)| b.bar_val = 0);
    }

    /// Where a read of `count` bytes at config offset `pos` meets the emulated registers, if it
    /// does: one window, as the emulated registers are adjacent (BAR2..5, or BAR4/5 alone). It
    /// depends only on which BARs are emulated, so a read that misses them loads nothing.
    #[inline(always)]
    pub(crate) fn read_window(&self, pos: u64, count: usize) -> Option<ReadWindow> {
        let (base, len) = match self.resmem {
            Some(_) => (RESMEM_BAR_OFFSET, 2 * BAR_BYTES),
            None => (USEMEM_BAR_OFFSET, BAR_BYTES),
        };
        let o = intersect(pos, count, base, len)?;
        Some(ReadWindow {
            buf_offset: o.buf_offset,
            from: o.reg_offset,
            len: o.len,
        })
    }

    /// The bytes of the registers in `window` (from [`EmuBars::read_window`] of a value with the
    /// same BARs), to lay over what vfio-pci-core read, as a little-endian integer for
    /// [`ReadWindow::data`]: the registers as one integer, BAR2/3 in the low half when present,
    /// shifted to `window`'s start (no byte copies: each was an out-of-line call). One copy to
    /// user space per read, as upstream.
    #[inline(always)]
    pub(crate) fn image(&self, window: ReadWindow) -> u128 {
        let usemem = u128::from(self.usemem.read_value());
        let image = match self.resmem {
            Some(r) => (usemem << 64) | u128::from(r.read_value()),
            None => usemem,
        };
        // `from` is below 16 (`ReadWindow`): the shift is below 128.
        image
            .checked_shr(8u32.wrapping_mul(window.from as u32))
            .unwrap_or(0)
    }

    /// The part `[start, end)` of a `count`-byte write at `pos` that lands in emulated registers,
    /// or `None`. Only these bytes of the user buffer need to be read for [`EmuBars::write`].
    pub(crate) fn write_span(&self, pos: u64, count: usize) -> Option<(usize, usize)> {
        self.each()
            .filter_map(|(reg, _)| overlap(pos, count, reg))
            .fold(None, |acc: Option<(usize, usize)>, o| {
                let (s, e) = (o.buf_offset, o.buf_offset + o.len);
                Some(acc.map_or((s, e), |(a, b)| (a.min(s), b.max(e))))
            })
    }

    /// Stores the parts of the write `buf` at config offset `pos` that land in emulated registers.
    ///
    /// Returns the bytes consumed, which is what the write returns, or `None` when the access
    /// touches no emulated register (it then goes to vfio-pci-core whole). As upstream, bytes of
    /// the window outside the emulated registers are not written and not counted.
    pub(crate) fn write(&mut self, pos: u64, buf: &[u8]) -> Option<usize> {
        let mut consumed = None;
        for (reg, bar) in self.each_mut() {
            if let Some(o) = overlap(pos, buf.len(), reg) {
                let mut val = bar.bar_val.to_le_bytes();
                val[o.reg_offset..o.reg_offset + o.len]
                    .copy_from_slice(&buf[o.buf_offset..o.buf_offset + o.len]);
                bar.bar_val = u64::from_le_bytes(val);
                *consumed.get_or_insert(0) += o.len;
            }
        }
        consumed
    }
}

/// Proof that the caller may store to one [`EmuBarRegs`]: the one value [`EmuBarRegs::new`]
/// returns, which the caller keeps behind the lock that serialises the register writes (the
/// driver's `bars_writer` spinlock).
#[derive(Debug)]
pub(crate) struct BarWriter(());

/// Times [`EmuBarRegs::try_load`] retries while writers keep changing the registers, before the
/// caller reads under the writer lock instead. Small: a store holds the registers for a few
/// instructions, so one retry is almost always enough.
pub(crate) const LOAD_ATTEMPTS: usize = 4;

/// The emulated BARs of one device, shared by concurrent config accesses.
///
/// What the mutex around [`EmuBars`] guaranteed, and this keeps: the emulated part of every
/// config access is atomic with respect to the emulated part of every other one. A read sees
/// both registers as they were between two whole accesses (never one half of a concurrent
/// 4-byte write to the other dword of the same BAR, nor a 16-byte write that reached one BAR but
/// not yet the other); a write's read-modify-write of the bytes it covers loses no concurrent
/// write to the other bytes of the register; and the order is consistent with real time (an
/// access that starts after another returned sees its effect). Neither the mutex nor this makes
/// the vfio-pci-core part of a read (the bytes outside the emulated registers) atomic with the
/// emulated part, nor covers copying the user's bytes, which happens before a write is applied.
///
/// How: a sequence count (the kernel's `seqcount_t` scheme, written with the atomics of `core`
/// so that the host tests run it). A store makes `seq` odd, stores the registers and makes it
/// even again; a load reads `seq`, the registers, then `seq` again, and keeps the values only if
/// `seq` was even and unchanged. Stores are serialised by the caller ([`BarWriter`]).
///
/// # Invariants
///
/// - `seq` is odd exactly while a [`EmuBarRegs::update`] or [`EmuBarRegs::reset`] is storing.
/// - With `seq` even, `resmem` and `usemem` hold the `bar_val` of the [`EmuBars`] the last
///   store completed; `resmem` stays 0 when `resmem_size` is `None`.
/// - `resmem_size` and `usemem_size` (bytes, powers of two) never change after [`Self::new`].
#[derive(Debug)]
pub(crate) struct EmuBarRegs {
    seq: AtomicU32,
    resmem_size: Option<u64>,
    usemem_size: u64,
    resmem: AtomicU64,
    usemem: AtomicU64,
}

impl EmuBarRegs {
    /// Registers holding `bars`, and the one [`BarWriter`] that may store to them.
    pub(crate) const fn new(bars: EmuBars) -> (Self, BarWriter) {
        let resmem_size = match bars.resmem {
            Some(b) => Some(b.bar_size),
            None => None,
        };
        let resmem_val = match bars.resmem {
            Some(b) => b.bar_val,
            None => 0,
        };
        // INVARIANT: `seq` starts even and the registers hold `bars`.
        let regs = EmuBarRegs {
            seq: AtomicU32::new(0),
            resmem_size,
            usemem_size: bars.usemem.bar_size,
            resmem: AtomicU64::new(resmem_val),
            usemem: AtomicU64::new(bars.usemem.bar_val),
        };
        (regs, BarWriter(()))
    }

    #[inline(always)]
    fn assemble(&self, resmem: u64, usemem: u64) -> EmuBars {
        EmuBars {
            resmem: self.resmem_size.map(|bar_size| EmuBar {
                bar_size,
                bar_val: resmem,
            }),
            usemem: EmuBar {
                bar_size: self.usemem_size,
                bar_val: usemem,
            },
        }
    }

    /// Which BARs are emulated, with zero registers: enough for [`EmuBars::write_span`], which
    /// depends only on that.
    #[inline(always)]
    pub(crate) fn shape(&self) -> EmuBars {
        self.assemble(0, 0)
    }

    /// Both registers as of one instant between stores, without a lock; `None` if stores kept
    /// overlapping the attempts ([`LOAD_ATTEMPTS`]): read with [`Self::load_exclusive`] then.
    #[inline(always)]
    pub(crate) fn try_load(&self) -> Option<EmuBars> {
        for _ in 0..LOAD_ATTEMPTS {
            // Acquire: the register loads below see at least the stores before the even `seq`
            // read here.
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let resmem = self.resmem.load(Ordering::Relaxed);
                let usemem = self.usemem.load(Ordering::Relaxed);
                // Orders the register loads before the second load of `seq`: if either saw a
                // store that followed the writer's release fence, `seq` has moved on.
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return Some(self.assemble(resmem, usemem));
                }
            }
            core::hint::spin_loop();
        }
        None
    }

    /// [`EmuBars::image`] of `window` (from [`EmuBars::read_window`] of [`Self::shape`]) as of
    /// one instant between stores, without a lock; `None` as [`Self::try_load`]. A window that
    /// lies in one register takes one atomic load of it, which a store never leaves half done,
    /// and that register's value alone; only a window across both registers needs
    /// [`Self::try_load`]'s sequence count.
    #[inline(always)]
    pub(crate) fn try_image(&self, window: ReadWindow) -> Option<u128> {
        let reg_bytes = BAR_BYTES as usize;
        // The register the window lies in, its size, and where in it the window starts.
        let (reg, bar_size, from) = match self.resmem_size {
            // usemem alone: every window lies in it.
            None => (&self.usemem, self.usemem_size, window.from),
            Some(size) if window.from + window.len <= reg_bytes => {
                (&self.resmem, size, window.from)
            }
            Some(_) if window.from >= reg_bytes => {
                (&self.usemem, self.usemem_size, window.from - reg_bytes)
            }
            Some(_) => return self.try_load().map(|bars| bars.image(window)),
        };
        // Acquire, as the sequence count's loads: the value is one that a store completed.
        let bar_val = reg.load(Ordering::Acquire);
        let value = EmuBar { bar_size, bar_val }.read_value();
        // `from` is below 8 here: the shift is below 64.
        Some(u128::from(
            value
                .checked_shr(8u32.wrapping_mul(from as u32))
                .unwrap_or(0),
        ))
    }

    /// Both registers, read by the holder of the writer lock (no store can be in progress).
    pub(crate) fn load_exclusive(&self, _writer: &BarWriter) -> EmuBars {
        self.assemble(
            self.resmem.load(Ordering::Relaxed),
            self.usemem.load(Ordering::Relaxed),
        )
    }

    fn store(&self, _writer: &mut BarWriter, bars: &EmuBars) {
        let seq = self.seq.load(Ordering::Relaxed);
        // INVARIANT: odd while storing; the holder of the one `BarWriter` is the only store.
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd `seq` before the register stores, for loads that see one of them.
        fence(Ordering::Release);
        if let (Some(_), Some(r)) = (self.resmem_size, bars.resmem) {
            self.resmem.store(r.bar_val, Ordering::Relaxed);
        }
        self.usemem.store(bars.usemem.bar_val, Ordering::Relaxed);
        // INVARIANT: even again, published after the registers.
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Applies `f` to the registers as one access: `f` sees the current values and what it
    /// leaves is stored, with no load seeing part of it.
    pub(crate) fn update<R>(&self, writer: &mut BarWriter, f: impl FnOnce(&mut EmuBars) -> R) -> R {
        let mut bars = self.load_exclusive(writer);
        let ret = f(&mut bars);
        self.store(writer, &bars);
        ret
    }

    /// Zeroes both registers (on open and on `VFIO_DEVICE_RESET`).
    pub(crate) fn reset(&self, writer: &mut BarWriter) {
        self.update(writer, EmuBars::reset);
    }
}
