// SPDX-License-Identifier: GPL-2.0

//! Concurrent config accesses to one emulated 64-bit BAR register (BAR2/3 and BAR4/5): writers of
//! its low and high dwords and of the whole register race readers from other threads. Every
//! value read must be one that was written as a whole, and no writer's bytes may be lost to a
//! concurrent write of the other half (what the driver's register lock is for). Upstream stores
//! a write a byte at a time where the user copy does (difference 7 of
//! tests/guest/src/differences.rs): there each byte of a read must be one that a write stored in
//! that byte, and the reads that were not whole are counted.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Instant;

use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::differences::bar_reads_whole;
use nvgrace_guest_tests::expected_regions;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::tap::diag;
use nvgrace_guest_tests::tap::observe;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::GPU_BDF;

/// `PCI_BASE_ADDRESS_2` and `PCI_BASE_ADDRESS_4`.
const BAR2: u64 = 0x18;
const BAR4: u64 = 0x20;
/// 64-bit, prefetchable memory BAR.
const FLAGS: u64 = 0xC;
/// Writes per writer thread: under TCG with two vCPUs 4000 rounds took 0.1-0.2 s, so each test
/// takes about a second (a few on a busy host).
const ROUNDS: u32 = 20_000;

/// What the register reads back after `written` was stored in it.
fn read_back(bar_size: u64, written: u64) -> u64 {
    (written & !(bar_size - 1)) | FLAGS
}

/// Whether every byte of `v` is the same byte of one of `values`: what a read can return while
/// those values are stored a byte at a time.
fn bytes_of(v: u64, values: &[u64]) -> bool {
    (0..8).all(|b| {
        let mask = 0xffu64 << (8 * b);
        values.iter().any(|w| v & mask == w & mask)
    })
}

/// What a reader's check makes of one value: whole, or (upstream only) made of the bytes of
/// values that were written.
enum Seen {
    Whole,
    Mixed,
}

/// Runs `writers` to completion while two reader threads check every 8-byte read of the register
/// at `bar` with `check` (an error message for a value that no write could have left there),
/// which also gets the reader's previous value (0 before its first read).
fn race(
    dev: &Device,
    bar: u64,
    writers: Vec<Box<dyn FnOnce() -> Outcome + Send + '_>>,
    check: &(dyn Fn(u64, u64) -> Result<Seen, String> + Sync),
) -> Outcome {
    let done = AtomicBool::new(false);
    let reads = AtomicU32::new(0);
    let mixed = AtomicU32::new(0);
    let t0 = Instant::now();
    thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| -> Outcome {
                    let mut prev = 0;
                    while !done.load(Ordering::Relaxed) {
                        let v = dev.config_read64(bar)?;
                        if let Seen::Mixed = check(v, prev).map_err(Failure::Fail)? {
                            mixed.fetch_add(1, Ordering::Relaxed);
                        }
                        prev = v;
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        let results: Vec<Outcome> = writers
            .into_iter()
            .map(|f| s.spawn(f))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(Failure::Fail("writer panicked".into())))
            })
            .collect();
        done.store(true, Ordering::Relaxed);
        for r in readers {
            r.join()
                .unwrap_or_else(|_| Err(Failure::Fail("reader panicked".into())))?;
        }
        results.into_iter().collect::<Outcome>()
    })?;
    let reads = reads.load(Ordering::Relaxed);
    let mixed = mixed.load(Ordering::Relaxed);
    diag(format!(
        "{reads} reads of {bar:#x} in {:.1} s, {mixed} of them not whole",
        t0.elapsed().as_secs_f64()
    ));
    if reads == 0 {
        fail!("the readers never read while the writers ran");
    }
    Ok(())
}

/// A reader's verdict on `v` when `whole` says whether it is a value that was written: whole,
/// or, with a driver that may store a write a byte at a time (difference 7), mixed when
/// `mixed_ok` says its bytes could come from such writes; an error otherwise.
fn verdict(
    v: u64,
    whole: bool,
    mixed_ok: bool,
    what: impl FnOnce() -> String,
) -> Result<Seen, String> {
    if whole {
        Ok(Seen::Whole)
    } else if !bar_reads_whole() && mixed_ok {
        Ok(Seen::Mixed)
    } else {
        Err(format!("read {v:#x}: {}", what()))
    }
}

/// A writer of the dword at `bar + off` that stores `value(i)` for each round and reads its own
/// dword back: no one else writes it, so a different value means a write of the other half
/// carried an old copy of this one.
fn dword_writer<'a>(
    dev: &'a Device,
    bar: u64,
    off: u64,
    bar_size: u64,
    value: impl Fn(u32) -> u32 + Send + 'a,
) -> Box<dyn FnOnce() -> Outcome + Send + 'a> {
    Box::new(move || {
        for i in 0..ROUNDS {
            let v = value(i);
            dev.config_write(bar + off, v.to_le_bytes())?;
            let expect = (read_back(bar_size, u64::from(v) << (8 * off)) >> (8 * off)) as u32;
            let got = dev.config_read32(bar + off)?;
            if got != expect {
                fail!("round {i}: dword {off} of {bar:#x} read {got:#x} after writing {v:#x}, expected {expect:#x}");
            }
        }
        Ok(())
    })
}

/// The low dword alternates between 0 and all-ones, the high dword counts up (in units of its
/// lowest bit above the BAR size, so that every count reads back): every read holds one of the
/// low values and a count no lower than the last one seen (upstream: low bytes of those values,
/// and a count no wider than the last one).
fn dword_writers(dev: &Device, bar: u64, bar_size: u64) -> Outcome {
    let shift = bar_size.trailing_zeros().saturating_sub(32);
    dev.config_write(bar, 0u64.to_le_bytes())?;
    let lows = [
        read_back(bar_size, 0) as u32,
        read_back(bar_size, 0xffff_ffff) as u32,
    ];
    let writers = vec![
        dword_writer(dev, bar, 0, bar_size, |i| {
            if i % 2 == 0 {
                0xffff_ffff
            } else {
                0
            }
        }),
        dword_writer(dev, bar, 4, bar_size, move |i| (i + 1) << shift),
    ];
    // A mix of counts has no byte above the highest byte of the last count.
    let last = ROUNDS << shift;
    let count_bytes = (32 - last.leading_zeros()).div_ceil(8);
    let count_ceiling = u32::MAX >> (32 - 8 * count_bytes);
    race(dev, bar, writers, &|v, prev| {
        let (lo, hi) = (v as u32, (v >> 32) as u32);
        let lo_ok = verdict(
            v,
            lows.contains(&lo),
            bytes_of(lo.into(), &lows.map(u64::from)),
            || format!("low dword {lo:#x} was never written"),
        )?;
        // One reader's reads are in order: the count it sees never goes back.
        let hi_ok = verdict(v, hi >= (prev >> 32) as u32, hi <= count_ceiling, || {
            format!("the high dword went back from {prev:#x}")
        })?;
        Ok(match (lo_ok, hi_ok) {
            (Seen::Whole, Seen::Whole) => Seen::Whole,
            _ => Seen::Mixed,
        })
    })?;
    // The last writes of both halves are what the register holds.
    let end = dev.config_read64(bar)?;
    let expect = read_back(bar_size, u64::from(ROUNDS << shift) << 32);
    check_eq!(end, expect, "{bar:#x} after the writers");
    observe("end", format!("{end:#x}"));
    Ok(())
}

/// Two writers storing the whole register (one 8-byte write), one all-ones (sizing), one zero:
/// every read is the sizing value or the cleared one, never half of each (upstream: each byte
/// is one of theirs).
fn whole_writers(dev: &Device, bar: u64, bar_size: u64) -> Outcome {
    dev.config_write(bar, 0u64.to_le_bytes())?;
    let valid = [read_back(bar_size, 0), read_back(bar_size, u64::MAX)];
    let writer = |val: u64| -> Box<dyn FnOnce() -> Outcome + Send + '_> {
        Box::new(move || {
            for _ in 0..ROUNDS {
                dev.config_write(bar, val.to_le_bytes())?;
            }
            Ok(())
        })
    };
    race(dev, bar, vec![writer(0), writer(u64::MAX)], &|v, _| {
        verdict(v, valid.contains(&v), bytes_of(v, &valid), || {
            format!("neither {:#x} nor {:#x}", valid[0], valid[1])
        })
    })?;
    let end = dev.config_read64(bar)?;
    if !valid.contains(&end) {
        fail!("{bar:#x} ended as {end:#x}");
    }
    dev.config_write(bar, 0u64.to_le_bytes())?;
    Ok(())
}

fn main() {
    let Some((usemem, resmem)) = expected_regions() else {
        Harness::skip_all("bar_race", "no _DSD memory: the BARs are not emulated");
    };
    let dev = match Device::open_iommufd(GPU_BDF) {
        Ok(d) => d,
        Err(e) => {
            println!("Bail out! cannot open {GPU_BDF}: {e}");
            std::process::exit(1);
        }
    };
    let resmem_bar = || {
        resmem
            .map(|r| r.bar_size)
            .ok_or_else(|| Failure::Skip("no resmem: BAR2/3 is not emulated".into()))
    };
    let tests = vec![
        test("bar4_dword_writers_race_readers", |_: &mut ()| {
            dword_writers(&dev, BAR4, usemem.bar_size)
        }),
        test("bar2_dword_writers_race_readers", |_: &mut ()| {
            dword_writers(&dev, BAR2, resmem_bar()?)
        }),
        test("bar4_whole_writers_race_readers", |_: &mut ()| {
            whole_writers(&dev, BAR4, usemem.bar_size)
        }),
        test("bar2_whole_writers_race_readers", |_: &mut ()| {
            whole_writers(&dev, BAR2, resmem_bar()?)
        }),
    ];
    Harness::run_table(&mut (), tests)
}
