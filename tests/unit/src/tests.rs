// SPDX-License-Identifier: GPL-2.0

//! Property tests of the kernel-free modules against direct models of upstream's arithmetic
//! (drivers/vfio/pci/nvgrace-gpu/main.c), plus the examples the design notes name.

use proptest::prelude::*;

use crate::config_emu::may_touch_emulated;
use crate::config_emu::overlap;
use crate::config_emu::EmuBar;
use crate::config_emu::EmuBars;
use crate::config_emu::BAR_FLAGS;
use crate::config_emu::RESMEM_BAR_OFFSET;
use crate::config_emu::USEMEM_BAR_OFFSET;
use crate::layout::Layout;
use crate::layout::LayoutError;
use crate::layout::MemRegion;
use crate::layout::MEMBLK_SIZE;
use crate::layout::RESMEM_SIZE;

const GIB: u64 = 1 << 30;

/// What the driver does with the patches: lay them over the bytes vfio-pci-core read.
fn overlay_read(bars: &EmuBars, pos: u64, buf: &mut [u8]) {
    if let Some(w) = bars.read_window(pos, buf.len()) {
        let bytes = bars.image(w).to_le_bytes();
        let data = w.data(&bytes);
        buf[w.buf_offset()..w.buf_offset() + data.len()].copy_from_slice(data);
    }
}

const MIB: u64 = 1 << 20;

/// Upstream's `roundup_pow_of_two()` on 64-bit: `1 << fls64(n - 1)`.
fn model_roundup(n: u64) -> u64 {
    1u64 << (64 - (n - 1).leading_zeros())
}

/// `nvgrace_gpu_init_nvdev_struct()` transcribed with u128 arithmetic so that nothing wraps.
fn model_layout(memphys: u64, memlength: u64, bug: bool) -> Result<Layout, LayoutError> {
    let (p, l) = (memphys as u128, memlength as u128);
    let resmem_size = if bug { RESMEM_SIZE as u128 } else { 0 };
    if l < resmem_size {
        return Err(LayoutError::Overflow);
    }
    let use_unrounded = l - resmem_size;
    if use_unrounded > 1 << 63 {
        return Err(LayoutError::Overflow);
    }
    let use_bar = if use_unrounded == 0 {
        1
    } else {
        model_roundup(use_unrounded as u64)
    };
    if !bug {
        return Ok(Layout {
            usemem: MemRegion {
                memphys,
                memlength,
                bar_size: use_bar,
            },
            resmem: None,
        });
    }
    let use_len = use_unrounded / MEMBLK_SIZE as u128 * MEMBLK_SIZE as u128;
    if use_len == 0 {
        return Err(LayoutError::NoUsemem);
    }
    let res_phys = p + use_len;
    if res_phys > u64::MAX as u128 {
        return Err(LayoutError::Overflow);
    }
    let res_len = l - use_len;
    Ok(Layout {
        usemem: MemRegion {
            memphys,
            memlength: use_len as u64,
            bar_size: use_bar,
        },
        resmem: Some(MemRegion {
            memphys: res_phys as u64,
            memlength: res_len as u64,
            bar_size: model_roundup(res_len as u64),
        }),
    })
}

#[test]
fn gh200_rig_geometry() {
    // The rig's default: 1.5 GiB at 512 MiB, MIG bug present.
    let l = Layout::new(0x2000_0000, 0x6000_0000, true).unwrap();
    assert_eq!(
        l.usemem,
        MemRegion {
            memphys: 0x2000_0000,
            memlength: 512 * MIB,
            bar_size: 512 * MIB
        }
    );
    assert_eq!(
        l.resmem,
        Some(MemRegion {
            memphys: 0x4000_0000,
            memlength: GIB,
            bar_size: GIB
        })
    );
}

#[test]
fn non_power_of_two_split() {
    // 1.7 GiB: usemem BAR from the unrounded 0.7 GiB (1 GiB), resmem 1.2 GiB in a 2 GiB BAR.
    let len = 17 * GIB / 10;
    let l = Layout::new(0, len, true).unwrap();
    assert_eq!(l.usemem.memlength, 512 * MIB);
    assert_eq!(l.usemem.bar_size, GIB);
    let r = l.resmem.unwrap();
    assert_eq!(r.memlength, len - 512 * MIB);
    assert_eq!(r.bar_size, 2 * GIB);
}

#[test]
fn usemem_rounding_to_zero_is_einval() {
    assert_eq!(
        Layout::new(0, GIB + 511 * MIB, true),
        Err(LayoutError::NoUsemem)
    );
    assert_eq!(Layout::new(0, GIB, true), Err(LayoutError::NoUsemem));
    assert_eq!(Layout::new(0, GIB - 1, true), Err(LayoutError::Overflow));
}

#[test]
fn no_mig_bug_is_all_usemem() {
    let l = Layout::new(0x2000_0000, 0x6000_0000, false).unwrap();
    assert_eq!(l.resmem, None);
    assert_eq!(
        l.usemem,
        MemRegion {
            memphys: 0x2000_0000,
            memlength: 0x6000_0000,
            bar_size: 2 * GIB
        }
    );
}

proptest! {
    #[test]
    fn layout_matches_upstream(memphys in any::<u64>(), memlength in 1..=u64::MAX, bug in any::<bool>()) {
        prop_assert_eq!(Layout::new(memphys, memlength, bug), model_layout(memphys, memlength, bug));
    }

    #[test]
    fn layout_matches_upstream_near_boundaries(
        k in 0u64..64, d in -2i64..=2, bug in any::<bool>(), memphys in any::<u64>()
    ) {
        let memlength = (k * MEMBLK_SIZE).wrapping_add_signed(d).max(1);
        prop_assert_eq!(Layout::new(memphys, memlength, bug), model_layout(memphys, memlength, bug));
    }
}

/// A direct model of the emulated config registers: a byte map of 0x00..0x30 where the emulated
/// BAR bytes read their register and everything else reads `phys`.
fn model_read(bars: &EmuBars, pos: u64, phys: &[u8]) -> Vec<u8> {
    let mut out = phys.to_vec();
    let regs = [
        (RESMEM_BAR_OFFSET, bars.resmem),
        (USEMEM_BAR_OFFSET, Some(bars.usemem)),
    ];
    for (i, b) in out.iter_mut().enumerate() {
        let addr = pos + i as u64;
        for (reg, bar) in regs {
            if let Some(bar) = bar {
                if (reg..reg + 8).contains(&addr) {
                    *b = bar.read_value().to_le_bytes()[(addr - reg) as usize];
                }
            }
        }
    }
    out
}

#[test]
fn bar_read_back_and_sizing() {
    let mut bars = EmuBars {
        resmem: Some(EmuBar::new(GIB)),
        usemem: EmuBar::new(512 * MIB),
    };
    let mut buf = [0u8; 8];
    overlay_read(&bars, USEMEM_BAR_OFFSET, &mut buf);
    assert_eq!(u64::from_le_bytes(buf), BAR_FLAGS);
    // Sizing: all-ones in both halves reads back the size mask.
    assert_eq!(bars.write(USEMEM_BAR_OFFSET, &[0xff; 8]), Some(8));
    overlay_read(&bars, USEMEM_BAR_OFFSET, &mut buf);
    assert_eq!(u64::from_le_bytes(buf), !(512 * MIB - 1) | BAR_FLAGS);
    bars.reset();
    overlay_read(&bars, USEMEM_BAR_OFFSET, &mut buf);
    assert_eq!(u64::from_le_bytes(buf), BAR_FLAGS);
}

#[test]
fn access_over_both_bars_emulates_both() {
    let mut bars = EmuBars {
        resmem: Some(EmuBar::new(GIB)),
        usemem: EmuBar::new(512 * MIB),
    };
    let mut buf = [0u8; 16];
    assert_eq!(bars.write(RESMEM_BAR_OFFSET, &[0xff; 16]), Some(16));
    overlay_read(&bars, RESMEM_BAR_OFFSET, &mut buf);
    assert_eq!(
        u64::from_le_bytes(buf[..8].try_into().unwrap()),
        !(GIB - 1) | BAR_FLAGS
    );
    assert_eq!(
        u64::from_le_bytes(buf[8..].try_into().unwrap()),
        !(512 * MIB - 1) | BAR_FLAGS
    );
}

#[test]
fn without_resmem_bar2_passes_through() {
    let mut bars = EmuBars {
        resmem: None,
        usemem: EmuBar::new(2 * GIB),
    };
    assert_eq!(bars.write_span(RESMEM_BAR_OFFSET, 8), None);
    assert_eq!(bars.write(RESMEM_BAR_OFFSET, &[0xff; 8]), None);
    assert_eq!(bars.write_span(USEMEM_BAR_OFFSET - 1, 2), Some((1, 2)));
}

proptest! {
    #[test]
    fn overlay_matches_byte_model(
        pos in 0u64..0x30, count in 1usize..0x30, val in any::<u64>(),
        with_resmem in any::<bool>(), phys in proptest::collection::vec(any::<u8>(), 0x30)
    ) {
        let bars = EmuBars {
            resmem: with_resmem.then(|| EmuBar { bar_size: GIB, bar_val: val.rotate_left(7) }),
            usemem: EmuBar { bar_size: 512 * MIB, bar_val: val },
        };
        let phys = &phys[..count];
        let mut buf = phys.to_vec();
        overlay_read(&bars, pos, &mut buf);
        prop_assert_eq!(buf, model_read(&bars, pos, phys));
    }

    #[test]
    fn write_stores_exactly_the_emulated_bytes(
        pos in 0u64..0x30, data in proptest::collection::vec(any::<u8>(), 1..0x30), with_resmem in any::<bool>()
    ) {
        let fresh = EmuBars {
            resmem: with_resmem.then(|| EmuBar::new(GIB)),
            usemem: EmuBar::new(512 * MIB),
        };
        let mut bars = fresh;
        let consumed = bars.write(pos, &data);
        let mut expect = fresh;
        let mut n = 0;
        for (i, b) in data.iter().enumerate() {
            let addr = pos + i as u64;
            let mut hit = |reg: u64, bar: &mut EmuBar| {
                if (reg..reg + 8).contains(&addr) {
                    let mut v = bar.bar_val.to_le_bytes();
                    v[(addr - reg) as usize] = *b;
                    bar.bar_val = u64::from_le_bytes(v);
                    n += 1;
                }
            };
            if let Some(r) = expect.resmem.as_mut() { hit(RESMEM_BAR_OFFSET, r); }
            hit(USEMEM_BAR_OFFSET, &mut expect.usemem);
        }
        prop_assert_eq!(bars, expect);
        prop_assert_eq!(consumed, (n > 0).then_some(n));
        // Writing only the span the driver copies from user space has the same effect.
        if let Some((s, e)) = fresh.write_span(pos, data.len()) {
            let mut again = fresh;
            prop_assert_eq!(again.write(pos + s as u64, &data[s..e]), consumed);
            prop_assert_eq!(again, expect);
        } else {
            prop_assert_eq!(n, 0);
        }
    }

    /// The driver skips the emulated registers (and their lock) for accesses that
    /// `may_touch_emulated()` rules out: those must be exactly the accesses no emulated register
    /// affects, with or without resmem.
    #[test]
    fn may_touch_emulated_rules_out_only_plain_accesses(
        pos in 0u64..0x40, count in 1usize..0x40, with_resmem in any::<bool>()
    ) {
        let bars = EmuBars {
            resmem: with_resmem.then(|| EmuBar::new(GIB)),
            usemem: EmuBar::new(512 * MIB),
        };
        let touches = (0..count as u64).any(|i| (RESMEM_BAR_OFFSET..USEMEM_BAR_OFFSET + 8).contains(&(pos + i)));
        prop_assert_eq!(may_touch_emulated(pos, count), touches);
        if !touches {
            prop_assert_eq!(bars.read_window(pos, count), None);
            prop_assert_eq!(bars.write_span(pos, count), None);
        }
    }

    #[test]
    fn overlap_is_the_intersection(pos in 0u64..0x40, count in 0usize..0x40, reg in 0u64..0x38) {
        let got = overlap(pos, count, reg);
        let start = pos.max(reg);
        let end = (pos + count as u64).min(reg + 8);
        if start < end {
            let o = got.unwrap();
            prop_assert_eq!(o.buf_offset as u64, start - pos);
            prop_assert_eq!(o.reg_offset as u64, start - reg);
            prop_assert_eq!(o.len as u64, end - start);
        } else {
            prop_assert!(got.is_none());
        }
    }
}

#[test]
fn region_pfns() {
    let l = Layout::new(0x2000_0000, 0x6000_0000, true).unwrap();
    assert_eq!(
        (l.usemem.first_pfn(12), l.usemem.nr_pages(12)),
        (0x20000, 0x20000)
    );
    let r = l.resmem.unwrap();
    assert_eq!((r.first_pfn(12), r.nr_pages(12)), (0x40000, 0x40000));
    // 64 KiB pages (arm64 option).
    assert_eq!((r.first_pfn(16), r.nr_pages(16)), (0x4000, 0x4000));
}
