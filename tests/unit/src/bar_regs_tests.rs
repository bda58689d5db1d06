// SPDX-License-Identifier: GPL-2.0

//! Tests of [`EmuBarRegs`], the emulated BAR registers shared by concurrent config accesses: the
//! values match a plain [`EmuBars`] driven by the same writes, and concurrent writers of parts
//! of the registers neither tear a reader's view nor lose each other's bytes.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::thread;

use proptest::prelude::*;

use crate::config_emu::BarWriter;
use crate::config_emu::EmuBar;
use crate::config_emu::EmuBarRegs;
use crate::config_emu::EmuBars;
use crate::config_emu::RESMEM_BAR_OFFSET;
use crate::config_emu::USEMEM_BAR_OFFSET;

const GIB: u64 = 1 << 30;

fn gh200_bars() -> EmuBars {
    EmuBars {
        resmem: Some(EmuBar::new(GIB)),
        usemem: EmuBar::new(512 * GIB),
    }
}

/// What a config write does: the write applied to the registers as one access.
fn write(regs: &EmuBarRegs, w: &Mutex<BarWriter>, pos: u64, data: &[u8]) -> Option<usize> {
    regs.update(&mut w.lock().unwrap(), |b| b.write(pos, data))
}

/// What a config read does: a lock-free load, or a load under the writer lock.
fn load(regs: &EmuBarRegs, w: &Mutex<BarWriter>) -> EmuBars {
    regs.try_load()
        .unwrap_or_else(|| regs.load_exclusive(&w.lock().unwrap()))
}

proptest! {
    /// Any sequence of writes and resets leaves the shared registers equal to a plain
    /// `EmuBars` given the same sequence, with or without resmem.
    #[test]
    fn shared_registers_match_plain_ones(
        ops in proptest::collection::vec(
            (0u64..0x30, proptest::collection::vec(any::<u8>(), 1..0x18), any::<bool>()), 1..20),
        with_resmem in any::<bool>()
    ) {
        let mut plain = EmuBars {
            resmem: with_resmem.then(|| EmuBar::new(GIB)),
            usemem: EmuBar::new(512 * GIB),
        };
        let (regs, w) = EmuBarRegs::new(plain);
        let w = Mutex::new(w);
        prop_assert_eq!(regs.shape(), plain);
        for (pos, data, reset) in ops {
            if reset {
                plain.reset();
                regs.reset(&mut w.lock().unwrap());
            } else {
                prop_assert_eq!(write(&regs, &w, pos, &data), plain.write(pos, &data));
            }
            prop_assert_eq!(regs.try_load(), Some(plain));
            prop_assert_eq!(regs.load_exclusive(&w.lock().unwrap()), plain);
        }
    }
}

/// Runs two reader threads calling `check` on every `load` of `regs` while `writers` run to
/// completion. The writers start once both readers have loaded once: on a busy machine (the
/// tests run in parallel) they could otherwise finish before a reader is scheduled. How many
/// loads overlap a write is then the scheduler's; each reader keeps loading until the writers
/// are done.
fn race(
    regs: &EmuBarRegs,
    load: &(dyn Fn() -> EmuBars + Sync),
    writers: Vec<Box<dyn FnOnce() + Send + '_>>,
    check: &(dyn Fn(EmuBars, &mut EmuBars) + Sync),
) {
    const READERS: usize = 2;
    let done = AtomicBool::new(false);
    let started = AtomicUsize::new(0);
    thread::scope(|s| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                s.spawn(|| {
                    let mut prev = regs.shape();
                    check(load(), &mut prev);
                    started.fetch_add(1, Ordering::Relaxed);
                    while !done.load(Ordering::Relaxed) {
                        check(load(), &mut prev);
                    }
                })
            })
            .collect();
        while started.load(Ordering::Relaxed) < READERS {
            thread::yield_now();
        }
        let writers: Vec<_> = writers.into_iter().map(|f| s.spawn(f)).collect();
        for t in writers {
            t.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        for t in readers {
            t.join().unwrap();
        }
    });
}

const ROUNDS: u32 = 100_000;

/// One writer of BAR4's low dword and one of its high dword, each writing an increasing count:
/// a read-modify-write that lost the other half's update would make that half go back, which
/// the readers (each half never decreases) and the final value catch.
#[test]
fn dword_writers_lose_nothing() {
    let (regs, w) = EmuBarRegs::new(gh200_bars());
    let w = Mutex::new(w);
    let half = |off: u64| {
        let (regs, w) = (&regs, &w);
        Box::new(move || {
            for i in 1..=ROUNDS {
                assert_eq!(
                    write(regs, w, USEMEM_BAR_OFFSET + off, &i.to_le_bytes()),
                    Some(4)
                );
            }
        }) as Box<dyn FnOnce() + Send + '_>
    };
    race(
        &regs,
        &|| load(&regs, &w),
        vec![half(0), half(4)],
        &|now, prev| {
            let (lo, hi) = (now.usemem.bar_val as u32, (now.usemem.bar_val >> 32) as u32);
            let (plo, phi) = (
                prev.usemem.bar_val as u32,
                (prev.usemem.bar_val >> 32) as u32,
            );
            assert!(
                lo >= plo && hi >= phi,
                "BAR4/5 went back: {now:x?} after {prev:x?}"
            );
            *prev = now;
        },
    );
    let end = load(&regs, &w).usemem.bar_val;
    assert_eq!(end, u64::from(ROUNDS) << 32 | u64::from(ROUNDS));
}

/// A whole-register writer of BAR4/5 (both halves the same) and a 16-byte writer of BAR2..5
/// (all four dwords the same, tagged by bit 31).
fn mixed_writers<'a>(
    regs: &'a EmuBarRegs,
    w: &'a Mutex<BarWriter>,
) -> Vec<Box<dyn FnOnce() + Send + 'a>> {
    let whole = Box::new(move || {
        for i in 1..=ROUNDS {
            let v = u64::from(i) << 32 | u64::from(i);
            assert_eq!(write(regs, w, USEMEM_BAR_OFFSET, &v.to_le_bytes()), Some(8));
        }
    }) as Box<dyn FnOnce() + Send + 'a>;
    let both = Box::new(move || {
        for i in 1..=ROUNDS {
            let mut data = [0u8; 16];
            for d in data.chunks_mut(4) {
                d.copy_from_slice(&(i | 1 << 31).to_le_bytes());
            }
            assert_eq!(write(regs, w, RESMEM_BAR_OFFSET, &data), Some(16));
        }
    }) as Box<dyn FnOnce() + Send + 'a>;
    vec![whole, both]
}

/// [`mixed_writers`] racing readers of both registers: no read may mix two writes.
#[test]
fn readers_never_see_a_mix_of_writes() {
    let (regs, w) = EmuBarRegs::new(gh200_bars());
    let w = Mutex::new(w);
    race(
        &regs,
        &|| load(&regs, &w),
        mixed_writers(&regs, &w),
        &|now, _| {
            let u = now.usemem.bar_val;
            let m = now.resmem.unwrap().bar_val;
            assert_eq!(u >> 32, u & 0xffff_ffff, "BAR4/5 torn: {u:#x}");
            assert_eq!(m >> 32, m & 0xffff_ffff, "BAR2/3 torn: {m:#x}");
            // BAR2/3 is written only by the 16-byte writer: when BAR4/5 holds one of its values it
            // holds the same one (the read saw that write whole).
            if u & 1 << 31 != 0 {
                assert_eq!(u, m, "a 16-byte write seen in part: {now:x?}");
            }
        },
    );
}

/// [`mixed_writers`] racing readers of the BAR4/5 window alone (`try_image`: one atomic load,
/// no sequence count): each read is a whole value one of the writes stored. The BARs are 16
/// bytes here, so that a read value keeps all but the low 4 bits of the written one (the
/// flags): the two halves of a whole value are equal above those bits.
#[test]
fn window_readers_see_whole_values() {
    let (regs, w) = EmuBarRegs::new(EmuBars {
        resmem: Some(EmuBar::new(16)),
        usemem: EmuBar::new(16),
    });
    let w = Mutex::new(w);
    let window = regs.shape().read_window(USEMEM_BAR_OFFSET, 8).unwrap();
    let load = || {
        let image = regs
            .try_image(window)
            .unwrap_or_else(|| regs.load_exclusive(&w.lock().unwrap()).image(window));
        let mut v = [0u8; 8];
        v.copy_from_slice(window.data(&image.to_le_bytes()));
        // As the register's value, for `race`'s check.
        let mut bars = regs.shape();
        bars.usemem.bar_val = u64::from_le_bytes(v);
        bars
    };
    race(&regs, &load, mixed_writers(&regs, &w), &|now, _| {
        let v = now.usemem.bar_val;
        assert_eq!(v >> 36, (v & 0xffff_ffff) >> 4, "BAR4/5 torn: {v:#x}");
    });
}

proptest! {
    /// A read's window patched from its register alone (`try_image`) gets the bytes that the
    /// patch of both registers loaded together has, whatever the writes left in them, with or
    /// without resmem.
    #[test]
    fn window_load_patches_as_the_full_load(
        writes in proptest::collection::vec(
            (0u64..0x30, proptest::collection::vec(any::<u8>(), 1..0x18)), 0..6),
        pos in 0u64..0x30,
        count in 1usize..0x18,
        with_resmem in any::<bool>()
    ) {
        let (regs, w) = EmuBarRegs::new(EmuBars {
            resmem: with_resmem.then(|| EmuBar::new(GIB)),
            usemem: EmuBar::new(512 * GIB),
        });
        let w = Mutex::new(w);
        for (p, data) in writes {
            write(&regs, &w, p, &data);
        }
        if let Some(window) = regs.shape().read_window(pos, count) {
            let full = regs.try_load().unwrap().image(window).to_le_bytes();
            let alone = regs.try_image(window).unwrap().to_le_bytes();
            prop_assert_eq!(window.data(&alone), window.data(&full));
        }
    }
}
