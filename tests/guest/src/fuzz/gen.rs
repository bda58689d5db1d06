// SPDX-License-Identifier: GPL-2.0

//! The fuzzer's operations and their generation from the seed.

use rand::rngs::ChaCha8Rng;
use rand::RngExt;

use super::model::*;
use super::*;
use crate::gpumem::PCI_COMMAND;
use crate::gpumem::PCI_COMMAND_MEMORY;
use crate::mm;

// ---------------------------------------------------------------------------------------------
// Operations and their generation.

/// One touch of a mapping: a read or write of `width` bytes at `off` in the mapping.
#[derive(Clone, Copy, Debug)]
pub struct Touch {
    pub off: u64,
    pub width: usize,
    /// The value to write; `None` for a read.
    pub write: Option<u64>,
}

#[derive(Clone, Debug)]
pub enum IoctlOp {
    GetInfo {
        argsz: u32,
        bad: bool,
    },
    RegionInfo {
        argsz: u32,
        index: u32,
        cap_offset: u32,
        bad: bool,
    },
    IrqInfo {
        argsz: u32,
        index: u32,
        bad: bool,
    },
    Ioeventfd {
        payload: [u64; 4],
    },
    Unknown {
        cmd: libc::c_ulong,
    },
    Feature {
        words: Vec<u64>,
        bad: bool,
    },
    SetIrqs {
        words: Vec<u64>,
    },
    HotResetInfo {
        argsz: u32,
    },
}

#[derive(Clone, Debug)]
pub enum Op {
    Read {
        pos: i64,
        count: usize,
        bad: bool,
    },
    Write {
        pos: i64,
        data: Vec<u8>,
        bad: bool,
    },
    Mmap {
        off: i64,
        len: u64,
        prot: i32,
        flags: i32,
        touches: Vec<Touch>,
    },
    Ioctl(IoctlOp),
    ConfigWrite {
        off: u64,
        data: Vec<u8>,
    },
    MemoryEnable(bool),
    Reset,
    Reopen,
}

impl Op {
    pub fn describe(&self) -> String {
        match self {
            Op::Read { pos, count, bad } => {
                format!("pread({count:#x} bytes at {pos:#x}{})", bad_str(*bad))
            }
            Op::Write { pos, data, bad } => {
                format!(
                    "pwrite({:#x} bytes at {pos:#x}{})",
                    data.len(),
                    bad_str(*bad)
                )
            }
            Op::Mmap {
                off,
                len,
                prot,
                flags,
                touches,
            } => format!(
                "mmap(len {len:#x}, prot {prot:#x}, flags {flags:#x}, offset {off:#x}), {} touches",
                touches.len()
            ),
            Op::Ioctl(i) => format!("ioctl {i:x?}"),
            Op::ConfigWrite { off, data } => format!("config write {data:02x?} at {off:#x}"),
            Op::MemoryEnable(on) => format!("Memory Space Enable {on}"),
            Op::Reset => "VFIO_DEVICE_RESET".into(),
            Op::Reopen => "close and reopen".into(),
        }
    }
}

pub fn bad_str(bad: bool) -> &'static str {
    if bad {
        ", unmapped buffer"
    } else {
        ""
    }
}

/// Per-operation generator: operation `i` of seed `s` comes from its own ChaCha8 stream, so it
/// does not depend on how many numbers earlier operations drew.
pub fn op_rng(seed: u64, i: u64) -> ChaCha8Rng {
    crate::rng::stream(seed, i)
}

/// A region index: mostly the emulated ones, then BAR0 and config, then every other kind.
pub fn gen_index(rng: &mut ChaCha8Rng) -> u64 {
    match rng.random_range(0..100) {
        0..30 => 4,
        30..55 => 2,
        55..65 => 0,
        65..75 => 7,
        75..92 => rng.random_range(0..16),
        _ => rng.random_range(0..(1u64 << 23)),
    }
}

/// An offset in a region of `size` bytes with `memlength` bytes of memory: near 0, the memory's
/// end, the BAR's end, the region's end (2^40), or anywhere.
pub fn gen_offset(rng: &mut ChaCha8Rng, size: u64, memlength: u64) -> u64 {
    let small = |rng: &mut ChaCha8Rng| -> i64 {
        match rng.random_range(0..4) {
            0 => rng.random_range(-8..8),
            1 => rng.random_range(-4096..4096),
            2 => rng.random_range(-64..64) * page_bytes() as i64,
            _ => rng.random_range(-(1 << 20)..(1 << 20)),
        }
    };
    let anchor = match rng.random_range(0..10) {
        0..2 => 0,
        2..4 => memlength,
        4..6 => size,
        6 => REGION_SPAN,
        _ => {
            return if size > 0 && rng.random_bool(0.8) {
                rng.random_range(0..size)
            } else {
                rng.random_range(0..REGION_SPAN)
            }
        }
    };
    anchor
        .saturating_add_signed(small(rng))
        .min(REGION_SPAN + (1 << 20))
}

/// A file position: `index << 40` plus an offset, or one near the end of the signed 64-bit
/// offset range (negative positions, positions whose end overflows).
pub fn gen_pos(rng: &mut ChaCha8Rng, layout: &Layout) -> i64 {
    if rng.random_range(0..100) < 5 {
        return match rng.random_range(0..4) {
            0 => i64::MAX - rng.random_range(0..64),
            1 => -rng.random_range(1..(1 << 20)),
            2 => i64::MIN + rng.random_range(0..64),
            _ => ((rng.random_range(1u64..(1 << 23))) << SHIFT) as i64 - rng.random_range(0..64),
        };
    }
    let index = gen_index(rng);
    let (size, memlength) = match layout.kind(index) {
        Kind::Emulated(r) => (r.bar_size, r.memlength),
        _ => (layout.size(index), layout.size(index)),
    };
    ((index << SHIFT) as i64).wrapping_add(gen_offset(rng, size, memlength) as i64)
}

/// A transfer size; short for the regions whose accesses are messages to the model.
pub fn gen_count(rng: &mut ChaCha8Rng, layout: &Layout, pos: i64) -> usize {
    let c = match rng.random_range(0..100) {
        0..6 => 0,
        6..45 => [1, 2, 4, 8][rng.random_range(0..4)],
        45..65 => rng.random_range(1..64),
        65..88 => rng.random_range(1..8192),
        88..98 => rng.random_range(1..(64 << 10)),
        _ => rng.random_range(1..MAX_BUF),
    };
    let slow = pos >= 0 && matches!(layout.kind(pos as u64 >> SHIFT), Kind::Bar0 | Kind::Config);
    if slow {
        c.min(SLOW_MAX)
    } else {
        c
    }
}

pub fn gen_mmap(rng: &mut ChaCha8Rng, layout: &Layout) -> Op {
    // Half of the mappings are plausible ones (a page-aligned window of the memory of usemem,
    // resmem or BAR0), so that touches happen; the rest are anything.
    let plausible = rng.random_bool(0.5);
    let index = if plausible {
        [4, 4, 2, 0][rng.random_range(0..4)]
    } else {
        gen_index(rng)
    };
    let (size, memlength) = match layout.kind(index) {
        Kind::Emulated(r) => (r.bar_size, r.memlength),
        _ => (layout.size(index), layout.size(index)),
    };
    let mut in_region = if plausible && memlength >= page_bytes() {
        rng.random_range(0..memlength / page_bytes()) * page_bytes()
    } else {
        gen_offset(rng, size, memlength)
    };
    if rng.random_range(0..100) < 95 {
        in_region &= !(page_bytes() - 1);
    }
    let mut off = ((index << SHIFT) as i64).wrapping_add(in_region as i64);
    if rng.random_range(0..100) < 3 {
        off = -((rng.random_range(1..64) * page_bytes()) as i64);
    }
    let pages = |rng: &mut ChaCha8Rng| match rng.random_range(0..4) {
        0 => rng.random_range(1..4),
        1 => rng.random_range(1..1024),
        2 => mm::pmd_size() as u64 / page_bytes() * rng.random_range(1..5),
        _ => rng.random_range(1..(1 << 19)),
    };
    let len = match rng.random_range(0..100) {
        _ if plausible => {
            let left = memlength.saturating_sub(in_region) / page_bytes();
            rng.random_range(1..=left.clamp(1, 1024)) * page_bytes()
        }
        0..3 => 0,
        3..6 => (1u64 << 58) + rng.random_range(0..(1 << 20)),
        6..12 => rng.random_range(1..3 * page_bytes()),
        12..25 => memlength
            .saturating_sub(in_region)
            .saturating_add_signed(rng.random_range(-2..3) * page_bytes() as i64),
        _ => pages(rng) * page_bytes(),
    }
    .min(1 << 41)
    .max(if rng.random_bool(0.97) { 1 } else { 0 });
    let prot = [
        libc::PROT_READ | libc::PROT_WRITE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::PROT_READ,
        libc::PROT_WRITE,
        libc::PROT_NONE,
    ][rng.random_range(0..5)];
    let mut flags = match rng.random_range(0..100) {
        _ if plausible => libc::MAP_SHARED,
        0..55 => libc::MAP_SHARED,
        55..80 => libc::MAP_SHARED_VALIDATE,
        80..95 => libc::MAP_PRIVATE,
        _ => [0, 0x4, 0xc][rng.random_range(0..3)],
    };
    let len = if flags == libc::MAP_PRIVATE {
        // A private writable mapping is charged to the commit limit before the driver sees it
        // (mm/vma.c, accountable_mapping()): stay far below the guest's RAM so the result is
        // the driver's.
        len.min(64 << 20)
    } else {
        len
    };
    if flags != libc::MAP_PRIVATE {
        // Never populate a private mapping of an emulated BAR: upstream would fault it in, and
        // its fault handler hits a BUG_ON() there (deliberate difference 4); the touches below
        // likewise leave private mappings alone.
        for (f, p) in [
            (libc::MAP_POPULATE, 5),
            (libc::MAP_LOCKED, 5),
            (libc::MAP_NORESERVE, 5),
        ] {
            if rng.random_range(0..100) < p {
                flags |= f;
            }
        }
    }
    for (f, p) in [
        (libc::MAP_HUGETLB, 2),
        (libc::MAP_GROWSDOWN, 2),
        (libc::MAP_SYNC, 3),
    ] {
        if rng.random_range(0..100) < p {
            flags |= f;
        }
    }
    let mapped = len.div_ceil(page_bytes()) * page_bytes();
    let touches = (0..rng.random_range(usize::from(plausible)..6))
        .map(|_| {
            let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
            let page = match rng.random_range(0..4) {
                0 => 0,
                1 => mapped.saturating_sub(page_bytes()) / page_bytes(),
                _ => rng.random_range(0..(mapped / page_bytes()).max(1)),
            };
            let off = page * page_bytes()
                + rng.random_range(0..page_bytes() / width as u64) * width as u64;
            let write = rng.random_bool(0.5).then(|| rng.random::<u64>());
            Touch { off, width, write }
        })
        .collect();
    Op::Mmap {
        off,
        len,
        prot,
        flags,
        touches,
    }
}

/// An `argsz`: 0, around the structure's minimum and full size, or anything.
pub fn gen_argsz(rng: &mut ChaCha8Rng, min: u32, full: u32) -> u32 {
    match rng.random_range(0..10) {
        0 => 0,
        1 => min - 1,
        2 => min,
        3..6 => full,
        6..8 => full + rng.random_range(0..64),
        8 => rng.random_range(0..256),
        _ => rng.random(),
    }
}

pub fn gen_ioctl(rng: &mut ChaCha8Rng) -> IoctlOp {
    let bad = rng.random_range(0..100) < 4;
    match rng.random_range(0..100) {
        0..12 => IoctlOp::GetInfo {
            argsz: gen_argsz(rng, 16, 24),
            bad,
        },
        12..42 => IoctlOp::RegionInfo {
            argsz: gen_argsz(rng, 32, 64),
            index: if rng.random_bool(0.9) {
                rng.random_range(0..12)
            } else {
                rng.random()
            },
            cap_offset: rng.random(),
            bad,
        },
        42..52 => IoctlOp::IrqInfo {
            argsz: gen_argsz(rng, 16, 16),
            index: if rng.random_bool(0.9) {
                rng.random_range(0..7)
            } else {
                rng.random()
            },
            bad,
        },
        52..57 => IoctlOp::Ioeventfd {
            payload: rng.random(),
        },
        57..62 => {
            let nr = [0, 1, 2, 3, 4, 5, 6, 14, 15, 21, 22, 30, 63][rng.random_range(0..13)];
            IoctlOp::Unknown { cmd: vfio_io(nr) }
        }
        62..85 => {
            let feature = match rng.random_range(0..10) {
                0..4 => FEATURE_DMA_BUF,
                4 => FEATURE_LOW_POWER_ENTRY,
                5 => FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP,
                6 => FEATURE_LOW_POWER_EXIT,
                _ => rng.random_range(0..16),
            };
            let mut dir =
                [FEATURE_GET, FEATURE_SET, FEATURE_PROBE | FEATURE_GET][rng.random_range(0..3)];
            if rng.random_range(0..10) == 0 {
                dir = rng.random::<u32>() & !FEATURE_MASK;
            }
            // vfio_device_feature, then (for DMA_BUF) region index, open flags, flags,
            // nr_ranges and the ranges.
            let nr_ranges: u32 = match rng.random_range(0..10) {
                0 => 0,
                1..8 => rng.random_range(1..4),
                8 => rng.random_range(4..64),
                _ => rng.random(),
            };
            let index: u32 = if rng.random_bool(0.9) {
                [4, 2, 0, 1, 6][rng.random_range(0..5)]
            } else {
                rng.random()
            };
            let open_flags: u32 = [libc::O_CLOEXEC as u32, libc::O_RDWR as u32, 0, rng.random()]
                [rng.random_range(0..4)];
            let mut words = vec![
                0,
                u64::from(index) | u64::from(open_flags) << 32,
                u64::from(u32::from(rng.random_range(0..10) == 0)) | u64::from(nr_ranges) << 32,
            ];
            for _ in 0..4 {
                let off = match rng.random_range(0..4) {
                    0 => 0,
                    1 => rng.random_range(0..1024u64) * page_bytes(),
                    2 => rng.random_range(0..(1u64 << 31)),
                    _ => rng.random(),
                };
                let len = match rng.random_range(0..4) {
                    0 => page_bytes(),
                    1 => rng.random_range(0..1024u64) * page_bytes(),
                    2 => rng.random_range(0..(1u64 << 31)),
                    _ => rng.random(),
                };
                words.push(off);
                words.push(len);
            }
            let argsz = gen_argsz(rng, 8, 24 + 16 * nr_ranges.min(4));
            words[0] = u64::from(argsz) | u64::from(feature | dir) << 32;
            IoctlOp::Feature { words, bad }
        }
        85..95 => {
            // vfio_irq_set: argsz, flags, index, start, count, then data (eventfds or bools).
            let argsz = gen_argsz(rng, 20, 24);
            let flags: u32 = if rng.random_bool(0.8) {
                [1u32, 2, 4][rng.random_range(0..3)] | [8u32, 16, 32][rng.random_range(0..3)]
            } else {
                rng.random()
            };
            let index: u32 = rng.random_range(0..7);
            let start: u32 = if rng.random_bool(0.8) {
                0
            } else {
                rng.random()
            };
            let count: u32 = if rng.random_bool(0.8) {
                rng.random_range(0..3)
            } else {
                rng.random()
            };
            let fd = [-1i32, 0, 1, 2, 1000][rng.random_range(0..5)];
            let words = vec![
                u64::from(argsz) | u64::from(flags) << 32,
                u64::from(index) | u64::from(start) << 32,
                u64::from(count) | u64::from(fd as u32) << 32,
                u64::from(fd as u32) | u64::from(fd as u32) << 32,
            ];
            IoctlOp::SetIrqs { words }
        }
        _ => IoctlOp::HotResetInfo {
            argsz: gen_argsz(rng, 12, 16),
        },
    }
}

pub fn gen_config_write(rng: &mut ChaCha8Rng) -> Op {
    let off = match rng.random_range(0..100) {
        0..45 => rng.random_range(0..0x40),
        45..60 => RESMEM_BAR_REG + rng.random_range(0..16) - 4,
        60..85 => PCIE_CAP + rng.random_range(0..0x40),
        _ => rng.random_range(0..CONFIG_SIZE + 16),
    };
    let len = match rng.random_range(0..10) {
        0 => 0,
        1..8 => [1, 2, 4][rng.random_range(0..3)],
        _ => rng.random_range(1..17),
    };
    let mut data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    // Mostly leave Memory Space Enable set: clearing it is its own operation.
    if off <= PCI_COMMAND && PCI_COMMAND < off + len as u64 && rng.random_bool(0.8) {
        data[(PCI_COMMAND - off) as usize] |= PCI_COMMAND_MEMORY as u8;
    }
    Op::ConfigWrite { off, data }
}

/// Operation `i` of `seed`.
pub fn gen_op(seed: u64, i: u64, layout: &Layout) -> Op {
    let mut rng = op_rng(seed, i);
    match rng.random_range(0..1000) {
        0..280 => {
            let pos = gen_pos(&mut rng, layout);
            let count = gen_count(&mut rng, layout, pos);
            let bad = rng.random_range(0..100) < 4;
            Op::Read { pos, count, bad }
        }
        280..560 => {
            let pos = gen_pos(&mut rng, layout);
            let count = gen_count(&mut rng, layout, pos);
            let bad = rng.random_range(0..100) < 4;
            let mut data = vec![0u8; count];
            rng.fill(&mut data[..]);
            Op::Write { pos, data, bad }
        }
        560..720 => gen_mmap(&mut rng, layout),
        720..870 => Op::Ioctl(gen_ioctl(&mut rng)),
        870..950 => gen_config_write(&mut rng),
        950..980 => Op::MemoryEnable(rng.random_bool(0.6)),
        980..997 => Op::Reset,
        _ => Op::Reopen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::differences::Build;
    use crate::fuzz::model::tests::layout;

    #[test]
    fn an_operation_depends_only_on_the_seed_and_its_number() {
        let l = layout(Build::Rust);
        let once = format!("{:?}", gen_op(7, 1234, &l));
        // Other operations drawn before it change nothing.
        for i in 0..50 {
            gen_op(7, i, &l);
        }
        assert_eq!(format!("{:?}", gen_op(7, 1234, &l)), once);
        assert_ne!(
            format!("{:?}", gen_op(8, 1234, &l)),
            once,
            "another seed, another operation"
        );
        // Nor does the build: both builds must see the same operations.
        assert_eq!(
            format!("{:?}", gen_op(7, 1234, &layout(Build::Upstream))),
            once
        );
    }

    #[test]
    fn every_kind_of_operation_is_drawn_in_its_share() {
        let l = layout(Build::Rust);
        let mut kinds = HashMap::new();
        let n = 4000;
        for i in 0..n {
            let k = match gen_op(1, i, &l) {
                Op::Read { .. } => "read",
                Op::Write { .. } => "write",
                Op::Mmap { .. } => "mmap",
                Op::Ioctl(_) => "ioctl",
                Op::ConfigWrite { .. } => "config",
                Op::MemoryEnable(_) => "memory enable",
                Op::Reset => "reset",
                Op::Reopen => "reopen",
            };
            *kinds.entry(k).or_insert(0u64) += 1;
        }
        // gen_op's shares, per thousand: read 280, write 280, mmap 160, ioctl 150, config 80,
        // memory enable 30, reset 17, reopen 3; each seen within a factor of two.
        for (k, per_mille) in [
            ("read", 280),
            ("write", 280),
            ("mmap", 160),
            ("ioctl", 150),
            ("config", 80),
            ("memory enable", 30),
            ("reset", 17),
            ("reopen", 3),
        ] {
            let got = kinds.get(k).copied().unwrap_or(0);
            let want = n * per_mille / 1000;
            assert!(
                got * 2 >= want && got <= want * 2,
                "{k}: {got} of {n}, expected about {want}"
            );
        }
    }

    #[test]
    fn transfers_stay_within_the_buffers() {
        let l = layout(Build::Upstream);
        for i in 0..3000 {
            match gen_op(3, i, &l) {
                Op::Read { pos, count, .. } => {
                    assert!(count < MAX_BUF);
                    if pos >= 0 && matches!(l.kind(pos as u64 >> SHIFT), Kind::Bar0 | Kind::Config)
                    {
                        assert!(count <= SLOW_MAX, "op {i}: {count} bytes of a slow region");
                    }
                }
                Op::Write { data, .. } => assert!(data.len() < MAX_BUF),
                Op::Mmap { len, touches, .. } => {
                    for t in touches {
                        assert!(
                            t.off + t.width as u64 <= len.max(1).next_multiple_of(page_bytes())
                        );
                        assert!([1, 2, 4, 8].contains(&t.width), "op {i}: width {}", t.width);
                    }
                }
                _ => {}
            }
        }
    }
}
