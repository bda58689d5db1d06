// SPDX-License-Identifier: GPL-2.0

//! What each operation of the fuzzer should return: the model of the driver, vfio-pci-core and
//! the rig's GPU.

use std::collections::HashMap;
use std::io;

use super::*;
use crate::differences::Build;
use crate::mm;
use crate::Region;

// ---------------------------------------------------------------------------------------------
// The model.

/// What a region index of the device fd is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// usemem or resmem, emulated by the driver.
    Emulated(Region),
    /// BAR0, passed through by vfio-pci-core.
    Bar0,
    /// The model's RAM BAR2, passed through when the driver does not emulate region 2.
    PhysBar2,
    /// Config space.
    Config,
    /// No such region for reads and writes (absent BARs, ROM, VGA, index >= 9): EINVAL.
    None,
}

/// The regions of the rig's GPU.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub usemem: Region,
    pub resmem: Option<Region>,
    /// The driver build whose rules apply where the builds differ (differences.rs).
    pub build: Build,
}

/// The other driver build: the model under its rules says whether a result may differ between
/// the builds.
pub fn other_build(build: Build) -> Build {
    match build {
        Build::Rust => Build::Upstream,
        Build::Upstream => Build::Rust,
    }
}

impl Layout {
    /// The same regions under the other build's rules.
    pub fn other_build(&self) -> Layout {
        Layout {
            build: other_build(self.build),
            ..*self
        }
    }

    /// Difference 3 ([`crate::differences::resmem_stops_at_memlength`] for this layout's build).
    pub fn resmem_stops_at_memlength(&self) -> bool {
        self.build == Build::Upstream
    }

    /// Difference 4 ([`crate::differences::private_mmap_refused`] for this layout's build).
    pub fn private_mmap_refused(&self) -> bool {
        self.build == Build::Rust
    }

    /// Difference 1: upstream emulates only the first BAR register a config write overlaps.
    pub fn emulates_first_bar_register_only(&self) -> bool {
        self.build == Build::Upstream
    }

    pub fn kind(&self, index: u64) -> Kind {
        match (index, self.resmem) {
            (4, _) => Kind::Emulated(self.usemem),
            (2, Some(r)) => Kind::Emulated(r),
            (2, None) => Kind::PhysBar2,
            (0, _) => Kind::Bar0,
            (7, _) => Kind::Config,
            _ => Kind::None,
        }
    }

    /// The size of a region for offsets drawn near its end.
    pub fn size(&self, index: u64) -> u64 {
        match self.kind(index) {
            Kind::Emulated(r) => r.bar_size,
            Kind::Bar0 => BAR0_SIZE,
            Kind::PhysBar2 => PHYS_BAR2_SIZE,
            Kind::Config => CONFIG_SIZE,
            Kind::None => 0,
        }
    }
}

/// The value of BAR0 byte `off` in the model: the two status registers read 0xff (the model is
/// always ready during the fuzz), everything else 0; writes are ignored.
pub fn bar0_byte(off: u64) -> u8 {
    const STATUS: [u64; 2] = [
        crate::model::C2C_LINK_STATUS,
        crate::model::HBM_TRAINING_STATUS,
    ];
    if STATUS.contains(&off) {
        0xff
    } else {
        0
    }
}

/// The device state results depend on.
#[derive(Clone, Copy, Debug)]
pub struct State {
    /// Memory Space Enable as the user last set it (vfio-pci-core's virtual Command register).
    pub mem_enabled: bool,
    /// A reset happened and no access has done the readiness check since.
    pub reset_pending: bool,
    /// `VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY` succeeded and no exit followed: faults SIGBUS.
    pub low_power: bool,
}

/// One [`SHADOW_PAGE`] of the shadow: its bytes and a bitmap of the known ones.
pub type ShadowPage = (
    Box<[u8; SHADOW_PAGE as usize]>,
    Box<[u64; SHADOW_PAGE as usize / 64]>,
);

/// What is known of GPU memory contents: bytes written or read back, per [`SHADOW_PAGE`] bytes,
/// keyed by region index and their number.
#[derive(Default)]
pub struct Shadow {
    pub pages: HashMap<(u64, u64), ShadowPage>,
}

impl Shadow {
    pub fn get(&self, index: u64, off: u64) -> Option<u8> {
        let (data, known) = self.pages.get(&(index, off / SHADOW_PAGE))?;
        let i = (off % SHADOW_PAGE) as usize;
        (known[i / 64] >> (i % 64) & 1 == 1).then_some(data[i])
    }

    pub fn set(&mut self, index: u64, off: u64, bytes: &[u8]) {
        for (k, &b) in bytes.iter().enumerate() {
            let o = off + k as u64;
            let (data, known) = self
                .pages
                .entry((index, o / SHADOW_PAGE))
                .or_insert_with(|| {
                    (
                        Box::new([0; SHADOW_PAGE as usize]),
                        Box::new([0; SHADOW_PAGE as usize / 64]),
                    )
                });
            let i = (o % SHADOW_PAGE) as usize;
            data[i] = b;
            known[i / 64] |= 1 << (i % 64);
        }
    }

    pub fn forget(&mut self, index: u64, off: u64, len: u64) {
        let first = off / SHADOW_PAGE;
        let last = (off + len.max(1) - 1) / SHADOW_PAGE;
        for p in first..=last {
            self.pages.remove(&(index, p));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Expected results.

/// An expected result: a byte count or an errno.
pub type Want = Result<usize, i32>;

pub fn show(r: &Want) -> String {
    match r {
        Ok(n) => format!("{n:#x}"),
        Err(e) => format!("errno {e} ({})", io::Error::from_raw_os_error(*e)),
    }
}

/// What a readiness check after a reset does (upstream `nvgrace_gpu_check_device_ready()`):
/// EIO while Memory Space Enable is off (the check stays pending), else the wait (the model is
/// ready at once) and the check is done.
pub fn readiness(state: &mut State) -> Result<(), i32> {
    if state.reset_pending {
        if !state.mem_enabled {
            return Err(libc::EIO);
        }
        state.reset_pending = false;
    }
    Ok(())
}

/// The common checks of `vfs_read()`/`vfs_write()` (`rw_verify_area()`): a negative position,
/// or one whose end overflows, is EINVAL. Then the region index and offset.
pub fn split(pos: i64, count: usize) -> Result<(u64, u64), i32> {
    if pos < 0 || pos.checked_add(count as i64).is_none() {
        return Err(libc::EINVAL);
    }
    let pos = pos as u64;
    Ok((pos >> SHIFT, pos & (REGION_SPAN - 1)))
}

/// Whether a resmem access that crosses the end of memory returns only its memory part
/// (difference 3, upstream).
pub fn short_resmem(layout: &Layout, index: u64, mem_count: usize, count: usize) -> bool {
    index == 2 && layout.resmem_stops_at_memlength() && mem_count > 0 && mem_count < count
}

/// pread: the expected count (with the state change it causes) and, per returned byte, the
/// expected value where known.
pub fn expect_read(
    layout: &Layout,
    state: &mut State,
    shadow: &Shadow,
    pos: i64,
    count: usize,
    bad: bool,
) -> (Want, Vec<Option<u8>>) {
    let (index, off) = match split(pos, count) {
        Ok(x) => x,
        Err(e) => return (Err(e), Vec::new()),
    };
    match layout.kind(index) {
        Kind::Emulated(r) => {
            // nvgrace_gpu_read_mem()
            if off >= r.bar_size {
                return (Err(libc::EINVAL), Vec::new());
            }
            let c = (count as u64).min(r.bar_size - off) as usize;
            let mc = if off >= r.memlength {
                0
            } else {
                (c as u64).min(r.memlength - off) as usize
            };
            if let Err(e) = readiness(state) {
                return (Err(e), Vec::new());
            }
            if bad && c > 0 {
                return (Err(libc::EFAULT), Vec::new());
            }
            let n = if short_resmem(layout, index, mc, c) {
                mc
            } else {
                c
            };
            let bytes = (0..n)
                .map(|i| {
                    if i < mc {
                        shadow.get(index, off + i as u64)
                    } else {
                        Some(0xff)
                    }
                })
                .collect();
            (Ok(n), bytes)
        }
        // vfio_pci_core_read(): no bytes, nothing to do, whatever the region.
        Kind::Bar0 | Kind::PhysBar2 | Kind::Config | Kind::None if count == 0 => {
            (Ok(0), Vec::new())
        }
        Kind::Bar0 | Kind::PhysBar2 => {
            // vfio_pci_bar_rw(), vfio_pci_core_do_io_rw()
            let size = layout.size(index);
            if off >= size {
                return (Err(libc::EINVAL), Vec::new());
            }
            let c = (count as u64).min(size - off) as usize;
            if c == 0 {
                return (Ok(0), Vec::new());
            }
            if !state.mem_enabled {
                return (Err(libc::EIO), Vec::new());
            }
            if bad {
                return (Err(libc::EFAULT), Vec::new());
            }
            let bar0 = layout.kind(index) == Kind::Bar0;
            let bytes = (0..c)
                .map(|i| bar0.then(|| bar0_byte(off + i as u64)))
                .collect();
            (Ok(c), bytes)
        }
        Kind::Config => {
            // vfio_pci_config_rw(): no bytes, nothing to do; past the end, EFAULT.
            if count == 0 {
                return (Ok(0), Vec::new());
            }
            if off + count as u64 > CONFIG_SIZE || bad {
                return (Err(libc::EFAULT), Vec::new());
            }
            (Ok(count), vec![None; count])
        }
        Kind::None => (Err(libc::EINVAL), Vec::new()),
    }
}

/// What a pwrite leaves in GPU memory.
#[derive(Clone, Copy, Debug)]
pub enum Lands {
    /// The first `len` bytes of the data, at `off` of region `index`.
    Data { index: u64, off: u64, len: usize },
    /// `len` zero bytes at `off` of region `index`: a usemem write from a buffer the kernel
    /// cannot read fails with EFAULT, but `copy_from_user()` straight into the memory mapping
    /// (upstream `nvgrace_gpu_map_and_write()`, and ours) zero-fills what it could not copy.
    Zeros { index: u64, off: u64, len: usize },
}

/// pwrite: the expected count, the state change, and what lands in GPU memory.
pub fn expect_write(
    layout: &Layout,
    state: &mut State,
    pos: i64,
    count: usize,
    bad: bool,
) -> (Want, Option<Lands>) {
    let (index, off) = match split(pos, count) {
        Ok(x) => x,
        Err(e) => return (Err(e), None),
    };
    match layout.kind(index) {
        Kind::Emulated(r) => {
            // nvgrace_gpu_write_mem()
            if off >= r.bar_size {
                return (Err(libc::EINVAL), None);
            }
            let c = (count as u64).min(r.bar_size - off) as usize;
            if off >= r.memlength {
                return (Ok(c), None);
            }
            let mc = (c as u64).min(r.memlength - off) as usize;
            if let Err(e) = readiness(state) {
                return (Err(e), None);
            }
            if bad && mc > 0 {
                let zeros = (index == 4).then_some(Lands::Zeros {
                    index,
                    off,
                    len: mc,
                });
                return (Err(libc::EFAULT), zeros);
            }
            let n = if short_resmem(layout, index, mc, c) {
                mc
            } else {
                c
            };
            (
                Ok(n),
                Some(Lands::Data {
                    index,
                    off,
                    len: mc,
                }),
            )
        }
        // vfio_pci_core_write(): no bytes, nothing to do, whatever the region.
        Kind::Bar0 | Kind::PhysBar2 | Kind::None if count == 0 => (Ok(0), None),
        Kind::Bar0 | Kind::PhysBar2 => {
            let size = layout.size(index);
            if off >= size {
                return (Err(libc::EINVAL), None);
            }
            let c = (count as u64).min(size - off) as usize;
            if c == 0 {
                return (Ok(0), None);
            }
            // vfio_pci_iordwr*(): a write copies from the user before the memory-enable test.
            if bad {
                return (Err(libc::EFAULT), None);
            }
            if !state.mem_enabled {
                return (Err(libc::EIO), None);
            }
            (Ok(c), None)
        }
        Kind::Config => (expect_config_write(layout, off, count, bad), None),
        Kind::None => (Err(libc::EINVAL), None),
    }
}

/// The overlap of `[off, off + count)` with an 8-byte emulated BAR register at `reg`.
pub fn overlap(off: u64, count: usize, reg: u64) -> u64 {
    let (s, e) = (off.max(reg), (off + count as u64).min(reg + 8));
    e.saturating_sub(s)
}

/// A config-space write (upstream `nvgrace_gpu_write_config_emu()`): a write that overlaps an
/// emulated BAR register only writes that register and returns the overlap; upstream looks at
/// the first of BAR2/3 (only when there is resmem) and BAR4/5 it overlaps, and without resmem
/// one overlapping BAR2/3 is not emulated at all, the Rust driver emulates every one it overlaps
/// (difference 1). Anything else goes to vfio-pci-core (`vfio_pci_config_rw()`).
pub fn expect_config_write(layout: &Layout, off: u64, count: usize, bad: bool) -> Want {
    let res = overlap(off, count, RESMEM_BAR_REG);
    let use_ = overlap(off, count, USEMEM_BAR_REG);
    let upstream = layout.emulates_first_bar_register_only();
    let emulated = match (layout.resmem.is_some(), upstream) {
        (true, true) if res > 0 => res,
        (false, true) if res > 0 => 0,
        (true, false) => res + use_,
        _ => use_,
    };
    if emulated > 0 {
        return if bad {
            Err(libc::EFAULT)
        } else {
            Ok(emulated as usize)
        };
    }
    if count == 0 {
        return Ok(0);
    }
    if off + count as u64 > CONFIG_SIZE || bad {
        return Err(libc::EFAULT);
    }
    Ok(count)
}

/// mmap: the result of `mmap(NULL, len, prot, flags, fd, off)` (arch/x86 and arch/arm64
/// `sys_mmap`, which both refuse an offset that is not a page multiple, `ksys_mmap_pgoff()`,
/// `do_mmap()`, then the driver's or vfio-pci-core's mmap).
pub fn expect_mmap(layout: &Layout, off: i64, len: u64, flags: i32) -> Result<(), i32> {
    let off = off as u64;
    if !off.is_multiple_of(page_bytes()) || flags & libc::MAP_HUGETLB != 0 || len == 0 {
        return Err(libc::EINVAL);
    }
    let Some(alen) = len.checked_next_multiple_of(page_bytes()) else {
        return Err(libc::ENOMEM);
    };
    let pgoff = off / page_bytes();
    if pgoff.checked_add(alen / page_bytes()).is_none() {
        return Err(libc::EOVERFLOW);
    }
    if alen > user_space() {
        return Err(libc::ENOMEM);
    }
    // file_mmap_ok(): a character device may map up to ULONG_MAX.
    if pgoff > (u64::MAX - alen) / page_bytes() {
        return Err(libc::EOVERFLOW);
    }
    let shared = match flags & 0xf {
        libc::MAP_SHARED => true,
        libc::MAP_SHARED_VALIDATE => {
            if flags & !LEGACY_MAP_MASK != 0 {
                return Err(libc::EOPNOTSUPP);
            }
            true
        }
        libc::MAP_PRIVATE => false,
        _ => return Err(libc::EINVAL),
    };
    if flags & libc::MAP_GROWSDOWN != 0 {
        return Err(libc::EINVAL);
    }
    let index = pgoff >> (SHIFT - mm::page_shift());
    let start = (pgoff & ((1 << (SHIFT - mm::page_shift())) - 1)) * page_bytes();
    match layout.kind(index) {
        // nvgrace_gpu_mmap(): only the memory; private mappings only upstream (difference 4).
        Kind::Emulated(r) => {
            if start + alen > r.memlength {
                return Err(libc::EINVAL);
            }
            if !shared && layout.private_mmap_refused() {
                return Err(libc::EINVAL);
            }
            Ok(())
        }
        // vfio_pci_core_mmap(): shared mappings of mmap-able BARs, within the BAR.
        Kind::Bar0 | Kind::PhysBar2 => {
            if !shared || start + alen > layout.size(index) {
                return Err(libc::EINVAL);
            }
            Ok(())
        }
        Kind::Config | Kind::None => Err(libc::EINVAL),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `gh200-1.75g` geometry of the x86_64 rig (1.75 GiB at 0x2000_0000, src/layout.rs):
    /// resmem shorter than its BAR, usemem too.
    pub(crate) fn layout(build: Build) -> Layout {
        Layout {
            usemem: Region {
                memphys: 0x2000_0000 + 0x4000_0000,
                memlength: 0x3000_0000,
                bar_size: 0x4000_0000,
            },
            resmem: Some(Region {
                memphys: 0x2000_0000,
                memlength: 0x4000_0000 - 0x10_0000,
                bar_size: 0x4000_0000,
            }),
            build,
        }
    }

    fn ready() -> State {
        State {
            mem_enabled: true,
            reset_pending: false,
            low_power: false,
        }
    }

    fn at(index: u64, off: u64) -> i64 {
        ((index << SHIFT) + off) as i64
    }

    #[test]
    fn split_refuses_negative_and_overflowing_positions() {
        assert_eq!(split(-1, 1), Err(libc::EINVAL));
        assert_eq!(split(i64::MAX, 2), Err(libc::EINVAL));
        assert_eq!(split(at(4, 5), 1), Ok((4, 5)));
    }

    #[test]
    fn readiness_waits_for_memory_enable() {
        let mut s = State {
            mem_enabled: false,
            reset_pending: true,
            low_power: false,
        };
        assert_eq!(readiness(&mut s), Err(libc::EIO));
        assert!(
            s.reset_pending,
            "the check stays pending while memory is disabled"
        );
        s.mem_enabled = true;
        assert_eq!(readiness(&mut s), Ok(()));
        assert!(!s.reset_pending);
    }

    #[test]
    fn a_resmem_read_across_memlength_differs_by_build() {
        // Difference 3: upstream stops at memlength; the Rust driver returns the BAR part as
        // 0xff bytes.
        let shadow = Shadow::default();
        let r = layout(Build::Rust).resmem.unwrap();
        let pos = at(2, r.memlength - 4);
        let (up, up_bytes) = expect_read(
            &layout(Build::Upstream),
            &mut ready(),
            &shadow,
            pos,
            8,
            false,
        );
        let (rust, rust_bytes) =
            expect_read(&layout(Build::Rust), &mut ready(), &shadow, pos, 8, false);
        assert_eq!(up, Ok(4));
        assert_eq!(rust, Ok(8));
        assert_eq!(up_bytes, vec![None; 4]);
        assert_eq!(&rust_bytes[4..], &[Some(0xff); 4]);
    }

    #[test]
    fn reads_follow_the_region_rules() {
        let l = layout(Build::Rust);
        let shadow = Shadow::default();
        let read = |pos, count, bad| expect_read(&l, &mut ready(), &shadow, pos, count, bad).0;
        assert_eq!(read(at(4, l.usemem.bar_size), 1, false), Err(libc::EINVAL));
        assert_eq!(read(at(4, 0), 16, true), Err(libc::EFAULT));
        assert_eq!(read(at(0, BAR0_SIZE - 2), 8, false), Ok(2));
        assert_eq!(read(at(7, CONFIG_SIZE - 2), 4, false), Err(libc::EFAULT));
        assert_eq!(read(at(9, 0), 4, false), Err(libc::EINVAL));
        assert_eq!(read(at(9, 0), 0, false), Ok(0));
        let mut off = ready();
        off.mem_enabled = false;
        assert_eq!(
            expect_read(&l, &mut off, &shadow, at(0, 0), 4, false).0,
            Err(libc::EIO)
        );
    }

    #[test]
    fn a_read_expects_what_the_shadow_knows() {
        let l = layout(Build::Upstream);
        let mut shadow = Shadow::default();
        shadow.set(4, 0x1000, &[1, 2, 3]);
        let (n, bytes) = expect_read(&l, &mut ready(), &shadow, at(4, 0x0fff), 5, false);
        assert_eq!(n, Ok(5));
        assert_eq!(bytes, vec![None, Some(1), Some(2), Some(3), None]);
        shadow.forget(4, 0x1001, 1);
        assert_eq!(
            shadow.get(4, 0x1000),
            None,
            "forgetting drops the whole shadow page"
        );
    }

    #[test]
    fn a_write_from_a_bad_buffer_zero_fills_usemem_only() {
        let l = layout(Build::Rust);
        let (want, lands) = expect_write(&l, &mut ready(), at(4, 0x100), 16, true);
        assert_eq!(want, Err(libc::EFAULT));
        assert!(matches!(
            lands,
            Some(Lands::Zeros {
                index: 4,
                off: 0x100,
                len: 16
            })
        ));
        let (want, lands) = expect_write(&l, &mut ready(), at(2, 0x100), 16, true);
        assert_eq!(want, Err(libc::EFAULT));
        assert!(lands.is_none());
    }

    #[test]
    fn a_config_write_over_both_bar_registers_differs_by_build() {
        // Difference 1: upstream emulates the first emulated BAR register a write overlaps.
        let both = (
            RESMEM_BAR_REG,
            (USEMEM_BAR_REG + 8 - RESMEM_BAR_REG) as usize,
        );
        assert_eq!(
            expect_config_write(&layout(Build::Upstream), both.0, both.1, false),
            Ok(8)
        );
        assert_eq!(
            expect_config_write(&layout(Build::Rust), both.0, both.1, false),
            Ok(16)
        );
        assert_eq!(
            expect_config_write(&layout(Build::Rust), 0x4, 2, false),
            Ok(2)
        );
        assert_eq!(
            expect_config_write(&layout(Build::Rust), CONFIG_SIZE - 1, 2, false),
            Err(libc::EFAULT)
        );
    }

    #[test]
    fn mmap_rules() {
        let page = page_bytes();
        let shared = libc::MAP_SHARED;
        let rust = layout(Build::Rust);
        let up = layout(Build::Upstream);
        let usemem = (4u64 << SHIFT) as i64;
        assert_eq!(expect_mmap(&rust, usemem, page, shared), Ok(()));
        assert_eq!(
            expect_mmap(&rust, usemem + 1, page, shared),
            Err(libc::EINVAL)
        );
        assert_eq!(expect_mmap(&rust, usemem, 0, shared), Err(libc::EINVAL));
        assert_eq!(
            expect_mmap(&rust, usemem, rust.usemem.memlength + page, shared),
            Err(libc::EINVAL),
            "only the memory part maps"
        );
        // Difference 4: MAP_PRIVATE of an emulated BAR.
        assert_eq!(
            expect_mmap(&rust, usemem, page, libc::MAP_PRIVATE),
            Err(libc::EINVAL)
        );
        assert_eq!(expect_mmap(&up, usemem, page, libc::MAP_PRIVATE), Ok(()));
        assert_eq!(
            expect_mmap(&rust, (7u64 << SHIFT) as i64, page, shared),
            Err(libc::EINVAL)
        );
    }

    #[test]
    fn the_layout_rules_are_those_of_differences_rs() {
        // differences.rs reads the build from RIG_DRIVER; no other test reads it.
        for (driver, build) in [("rust", Build::Rust), ("upstream", Build::Upstream)] {
            std::env::set_var("RIG_DRIVER", driver);
            assert_eq!(crate::differences::build(), Some(build));
            let l = layout(build);
            assert_eq!(
                l.resmem_stops_at_memlength(),
                crate::differences::resmem_stops_at_memlength()
            );
            assert_eq!(
                l.private_mmap_refused(),
                crate::differences::private_mmap_refused()
            );
            assert_eq!(l.other_build().build, other_build(build));
            assert_ne!(l.other_build().build, build);
        }
        std::env::remove_var("RIG_DRIVER");
    }
}
