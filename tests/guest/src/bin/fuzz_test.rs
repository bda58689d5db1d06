// SPDX-License-Identifier: GPL-2.0

//! A seeded fuzzer of the device fd, as a hostile VMM would use it: reads and writes of random
//! regions at offsets around the region boundaries (`index << 40`, the BAR size, memlength, and
//! the end of the file offset range), mmaps with random offsets, lengths, protections and flags
//! followed by touches, VFIO ioctls with random `argsz` and payloads, config-space writes
//! anywhere, Memory Space Enable toggles, resets and reopens, all interleaved.
//!
//! Every result is checked against a model: the region layout from src/layout.rs (through
//! [`expected_regions`]), the rig's GPU (tests/gpu-model: BAR0 16 MiB, zero except the ready
//! status registers, 4 KiB of config space) and the rules the upstream driver and vfio-pci-core
//! follow (drivers/vfio/pci/nvgrace-gpu/main.c, vfio_pci_core.c, vfio_pci_rdwr.c,
//! vfio_pci_config.c, mm/mmap.c; cited where used). The model tracks what a result depends on:
//! Memory Space Enable, a readiness check pending after a reset, low-power entry, and the bytes
//! of GPU memory written or read so far. The deliberate differences
//! (tests/guest/src/differences.rs) are expected per build; the random choices depend only on
//! the seed, never on results, so both builds see the same operations.
//!
//! The operations run in batches; after each batch the kernel log is checked for new splats
//! (WARN, BUG, lockdep, KASAN, ...). Results are reported per kind of operation, with the seed,
//! the bounds and the first failures (iteration numbers) in the TAP diagnostics.
//!
//! ```text
//! fuzz_test [--seed N] [--iterations N] [--seconds N] [--batch N] [--long] [--trace]
//! ```
//!
//! The run stops after `--iterations` operations or `--seconds`, whichever comes first; `--long`
//! raises both bounds for soak runs (`make check` runs the defaults). A failure at iteration `i`
//! is reproduced by the same seed with `--iterations i+1` (operation `i` depends only on the
//! seed and `i`; the state it meets depends on the operations before it).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nvgrace_guest_tests::differences;
use nvgrace_guest_tests::expected_regions;
use nvgrace_guest_tests::gpumem::PCI_COMMAND;
use nvgrace_guest_tests::gpumem::PCI_COMMAND_MEMORY;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::ChildEnd;
use nvgrace_guest_tests::model;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::vfio::ioctl;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::vfio::VFIO_PCI_OFFSET_SHIFT;
use nvgrace_guest_tests::Region;
use nvgrace_guest_tests::GPU_BDF;
use rand::rngs::ChaCha8Rng;
use rand::RngExt;
use rand::SeedableRng;

/// The default seed (any value works; a fixed one keeps `make check` reproducible).
const DEFAULT_SEED: u64 = 0x6e76_6772_6163_6501;
/// Default bounds: about 25 s of guest time per driver build under TCG (measured: 5000
/// operations in 37-39 s).
const DEFAULT_ITERATIONS: u64 = 3000;
const DEFAULT_SECONDS: u64 = 45;
/// `--long` bounds: ten minutes fit in vm-run's default 900 s bound on a boot, with the boot's
/// other programs (~110 operations a second under TCG without debug options).
const LONG_ITERATIONS: u64 = 100_000;
const LONG_SECONDS: u64 = 600;
/// Operations between two kernel-log checks.
const DEFAULT_BATCH: u64 = 100;

/// The model's BAR0: 16 MiB of registers (tests/gpu-model README).
const BAR0_SIZE: u64 = 16 << 20;
/// The model's physical BAR2/3: 32 MiB of RAM, region 2 when the driver does not emulate it.
const PHYS_BAR2_SIZE: u64 = 32 << 20;
/// PCI Express configuration space (`pdev->cfg_size`).
const CONFIG_SIZE: u64 = 4096;
/// Each region index owns 2^40 bytes of the file.
const SHIFT: u32 = VFIO_PCI_OFFSET_SHIFT;
const REGION_SPAN: u64 = 1 << SHIFT;
/// `VFIO_PCI_NUM_REGIONS` (no device-specific regions here) and `VFIO_PCI_NUM_IRQS`.
const NUM_REGIONS: u64 = 9;
const NUM_IRQS: u32 = 5;
/// Largest read or write buffer.
const MAX_BUF: usize = 256 << 10;
/// Reads larger than this do not teach the shadow (bounds its memory).
const LEARN_MAX: usize = 64 << 10;
/// Config space and BAR0 accesses are one vfio-user message per dword: keep them short.
const SLOW_MAX: usize = 64;
/// Where the PCIe capability sits in the model's config space (tests/gpu-model README); Device
/// Control is at +8, its Initiate FLR bit is bit 15 (PCIe r6.0 7.5.3.4).
const PCIE_CAP: u64 = 0x40;
const DEVCTL_HI: u64 = PCIE_CAP + 9;
/// The emulated BAR registers (upstream: resmem owns BAR2/3 at 0x18, usemem BAR4/5 at 0x20).
const RESMEM_BAR_REG: u64 = 0x18;
const USEMEM_BAR_REG: u64 = 0x20;
/// The user address space an `mmap(NULL, ...)` allocates from, bytes (`DEFAULT_MAP_WINDOW`):
/// x86_64 with 4-level paging, 2^47; arm64, 2^48 (`VA_BITS_MIN`, also with 52-bit VAs). Lengths
/// between this and the 5-level or 52-bit limit are never drawn (they stop at 2^41), so the
/// result depends on neither the paging mode nor the page size.
fn user_space() -> u64 {
    match std::env::consts::ARCH {
        "aarch64" => 1 << 48,
        _ => 1 << 47,
    }
}

/// The base page size, bytes (4 KiB on x86_64, 4 or 64 KiB on the rig's arm64 kernels).
fn page_bytes() -> u64 {
    mm::page_size() as u64
}

/// The bytes one entry of the shadow of GPU memory holds: a bookkeeping unit, not the page size.
const SHADOW_PAGE: u64 = 4096;

/// VFIO ioctl numbers not in `vfio::ioctl` (include/uapi/linux/vfio.h, `VFIO_BASE + n`).
const VFIO_TYPE: u64 = b';' as u64;
const fn vfio_io(nr: u64) -> libc::c_ulong {
    ((VFIO_TYPE << 8) | (100 + nr)) as libc::c_ulong
}
const GET_IRQ_INFO: libc::c_ulong = vfio_io(9);
const SET_IRQS: libc::c_ulong = vfio_io(10);
const GET_PCI_HOT_RESET_INFO: libc::c_ulong = vfio_io(12);

/// `VFIO_DEVICE_FEATURE_*` (include/uapi/linux/vfio.h).
const FEATURE_MASK: u32 = 0xffff;
const FEATURE_GET: u32 = 1 << 16;
const FEATURE_SET: u32 = 1 << 17;
const FEATURE_PROBE: u32 = 1 << 18;
const FEATURE_LOW_POWER_ENTRY: u32 = 3;
const FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP: u32 = 4;
const FEATURE_LOW_POWER_EXIT: u32 = 5;
const FEATURE_DMA_BUF: u32 = 11;

/// `LEGACY_MAP_MASK` of mm/mmap.c: the flags `MAP_SHARED` silently accepts.
const LEGACY_MAP_MASK: i32 = libc::MAP_SHARED
    | libc::MAP_PRIVATE
    | libc::MAP_FIXED
    | libc::MAP_ANONYMOUS
    | libc::MAP_DENYWRITE
    | libc::MAP_EXECUTABLE
    | 0x4000000 // MAP_UNINITIALIZED
    | libc::MAP_GROWSDOWN
    | libc::MAP_LOCKED
    | libc::MAP_NORESERVE
    | libc::MAP_POPULATE
    | libc::MAP_NONBLOCK
    | libc::MAP_STACK
    | libc::MAP_HUGETLB;

// ---------------------------------------------------------------------------------------------
// The model.

/// What a region index of the device fd is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
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
struct Layout {
    usemem: Region,
    resmem: Option<Region>,
}

impl Layout {
    fn kind(&self, index: u64) -> Kind {
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
    fn size(&self, index: u64) -> u64 {
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
fn bar0_byte(off: u64) -> u8 {
    const STATUS: [u64; 2] = [model::C2C_LINK_STATUS, model::HBM_TRAINING_STATUS];
    if STATUS.contains(&off) {
        0xff
    } else {
        0
    }
}

/// The device state results depend on.
#[derive(Clone, Copy, Debug)]
struct State {
    /// Memory Space Enable as the user last set it (vfio-pci-core's virtual Command register).
    mem_enabled: bool,
    /// A reset happened and no access has done the readiness check since.
    reset_pending: bool,
    /// `VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY` succeeded and no exit followed: faults SIGBUS.
    low_power: bool,
}

/// One [`SHADOW_PAGE`] of the shadow: its bytes and a bitmap of the known ones.
type ShadowPage = (
    Box<[u8; SHADOW_PAGE as usize]>,
    Box<[u64; SHADOW_PAGE as usize / 64]>,
);

/// What is known of GPU memory contents: bytes written or read back, per [`SHADOW_PAGE`] bytes,
/// keyed by region index and their number.
#[derive(Default)]
struct Shadow {
    pages: HashMap<(u64, u64), ShadowPage>,
}

impl Shadow {
    fn get(&self, index: u64, off: u64) -> Option<u8> {
        let (data, known) = self.pages.get(&(index, off / SHADOW_PAGE))?;
        let i = (off % SHADOW_PAGE) as usize;
        (known[i / 64] >> (i % 64) & 1 == 1).then_some(data[i])
    }

    fn set(&mut self, index: u64, off: u64, bytes: &[u8]) {
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

    fn forget(&mut self, index: u64, off: u64, len: u64) {
        let first = off / SHADOW_PAGE;
        let last = (off + len.max(1) - 1) / SHADOW_PAGE;
        for p in first..=last {
            self.pages.remove(&(index, p));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operations and their generation.

/// One touch of a mapping: a read or write of `width` bytes at `off` in the mapping.
#[derive(Clone, Copy, Debug)]
struct Touch {
    off: u64,
    width: usize,
    /// The value to write; `None` for a read.
    write: Option<u64>,
}

#[derive(Clone, Debug)]
enum IoctlOp {
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
enum Op {
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
    fn describe(&self) -> String {
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

fn bad_str(bad: bool) -> &'static str {
    if bad {
        ", unmapped buffer"
    } else {
        ""
    }
}

/// Per-operation generator: operation `i` of seed `s` comes from its own ChaCha8 stream, so it
/// does not depend on how many numbers earlier operations drew.
fn op_rng(seed: u64, i: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(i);
    rng
}

/// A region index: mostly the emulated ones, then BAR0 and config, then every other kind.
fn gen_index(rng: &mut ChaCha8Rng) -> u64 {
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
fn gen_offset(rng: &mut ChaCha8Rng, size: u64, memlength: u64) -> u64 {
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
fn gen_pos(rng: &mut ChaCha8Rng, layout: &Layout) -> i64 {
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
fn gen_count(rng: &mut ChaCha8Rng, layout: &Layout, pos: i64) -> usize {
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

fn gen_mmap(rng: &mut ChaCha8Rng, layout: &Layout) -> Op {
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
fn gen_argsz(rng: &mut ChaCha8Rng, min: u32, full: u32) -> u32 {
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

fn gen_ioctl(rng: &mut ChaCha8Rng) -> IoctlOp {
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

fn gen_config_write(rng: &mut ChaCha8Rng) -> Op {
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
fn gen_op(seed: u64, i: u64, layout: &Layout) -> Op {
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

// ---------------------------------------------------------------------------------------------
// Expected results.

/// An expected result: a byte count or an errno.
type Want = Result<usize, i32>;

fn show(r: &Want) -> String {
    match r {
        Ok(n) => format!("{n:#x}"),
        Err(e) => format!("errno {e} ({})", io::Error::from_raw_os_error(*e)),
    }
}

/// What a readiness check after a reset does (upstream `nvgrace_gpu_check_device_ready()`):
/// EIO while Memory Space Enable is off (the check stays pending), else the wait (the model is
/// ready at once) and the check is done.
fn readiness(state: &mut State) -> Result<(), i32> {
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
fn split(pos: i64, count: usize) -> Result<(u64, u64), i32> {
    if pos < 0 || pos.checked_add(count as i64).is_none() {
        return Err(libc::EINVAL);
    }
    let pos = pos as u64;
    Ok((pos >> SHIFT, pos & (REGION_SPAN - 1)))
}

/// Whether a resmem access that crosses the end of memory returns only its memory part
/// (difference 3, upstream).
fn short_resmem(index: u64, mem_count: usize, count: usize) -> bool {
    index == 2 && differences::resmem_stops_at_memlength() && mem_count > 0 && mem_count < count
}

/// pread: the expected count (with the state change it causes) and, per returned byte, the
/// expected value where known.
fn expect_read(
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
            let n = if short_resmem(index, mc, c) { mc } else { c };
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
enum Lands {
    /// The first `len` bytes of the data, at `off` of region `index`.
    Data { index: u64, off: u64, len: usize },
    /// `len` zero bytes at `off` of region `index`: a usemem write from a buffer the kernel
    /// cannot read fails with EFAULT, but `copy_from_user()` straight into the memory mapping
    /// (upstream `nvgrace_gpu_map_and_write()`, and ours) zero-fills what it could not copy.
    Zeros { index: u64, off: u64, len: usize },
}

/// pwrite: the expected count, the state change, and what lands in GPU memory.
fn expect_write(
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
            let n = if short_resmem(index, mc, c) { mc } else { c };
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
fn overlap(off: u64, count: usize, reg: u64) -> u64 {
    let (s, e) = (off.max(reg), (off + count as u64).min(reg + 8));
    e.saturating_sub(s)
}

/// A config-space write (upstream `nvgrace_gpu_write_config_emu()`): a write that overlaps an
/// emulated BAR register only writes that register and returns the overlap; upstream looks at
/// the first of BAR2/3 (only when there is resmem) and BAR4/5 it overlaps, and without resmem
/// one overlapping BAR2/3 is not emulated at all, the Rust driver emulates every one it overlaps
/// (difference 1). Anything else goes to vfio-pci-core (`vfio_pci_config_rw()`).
fn expect_config_write(layout: &Layout, off: u64, count: usize, bad: bool) -> Want {
    let res = overlap(off, count, RESMEM_BAR_REG);
    let use_ = overlap(off, count, USEMEM_BAR_REG);
    let upstream = differences::build() == Some(differences::Build::Upstream);
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
fn expect_mmap(layout: &Layout, off: i64, len: u64, flags: i32) -> Result<(), i32> {
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
            if !shared && differences::private_mmap_refused() {
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

// ---------------------------------------------------------------------------------------------
// Running operations.

/// The kinds of operations, one TAP test each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cat {
    ReadWrite,
    Mmap,
    Ioctl,
    Config,
    Reset,
}

const CATS: [(Cat, &str); 5] = [
    (Cat::ReadWrite, "read_write"),
    (Cat::Mmap, "mmap_and_touch"),
    (Cat::Ioctl, "ioctls"),
    (Cat::Config, "config_space_writes"),
    (Cat::Reset, "resets_and_reopens"),
];

/// Failure messages kept per kind (the rest are counted).
const KEEP_FAILURES: usize = 8;

/// A page shared with forked children: they report how many touches they completed and the
/// first wrong value they read.
struct Report(mm::Mapping);

impl Report {
    fn new() -> io::Result<Self> {
        // SAFETY: A new anonymous shared mapping; nothing is overwritten.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mm::page_size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `p` is a page-sized mapping this process owns; `Mapping` unmaps it on drop.
        Ok(Report(unsafe {
            mm::Mapping::from_raw(p as usize, mm::page_size())
        }))
    }
}

/// The fuzzer's state: the device, the model and the results so far.
struct Fuzzer {
    dev: Option<Device>,
    layout: Layout,
    state: State,
    shadow: Shadow,
    /// A 2 MiB `PROT_NONE` reservation: a buffer the kernel cannot copy to or from.
    bad: mm::Mapping,
    report: Report,
    failures: HashMap<&'static str, (usize, Vec<String>)>,
    counts: HashMap<&'static str, u64>,
    /// A digest of every result, for comparing runs of the same seed.
    digest: u64,
    /// `--trace`: what went into the digest for the current operation.
    tracing: bool,
    noted: Vec<String>,
}

fn errno_of(r: isize) -> Result<usize, i32> {
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r as usize)
    }
}

fn cat_name(c: Cat) -> &'static str {
    CATS.iter()
        .find(|(k, _)| *k == c)
        .map(|(_, n)| *n)
        .unwrap_or("?")
}

impl Fuzzer {
    fn dev(&self) -> &Device {
        self.dev
            .as_ref()
            .expect("the device is open between operations")
    }

    fn fd(&self) -> i32 {
        self.dev().fd.as_raw_fd()
    }

    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn note(&mut self, v: impl std::hash::Hash + std::fmt::Debug) {
        if self.tracing {
            self.noted.push(format!("{v:?}"));
        }
        use std::hash::Hash;
        use std::hash::Hasher;
        let mut h = std::hash::DefaultHasher::new();
        self.digest.hash(&mut h);
        v.hash(&mut h);
        self.digest = h.finish();
    }

    fn fail(&mut self, cat: Cat, i: u64, op: &Op, msg: String) {
        let e = self.failures.entry(cat_name(cat)).or_default();
        e.0 += 1;
        if e.1.len() < KEEP_FAILURES {
            e.1.push(format!("iteration {i}: {}: {msg}", op.describe()));
        }
    }

    /// Reads Memory Space Enable back from config space (after anything that may change it).
    fn sync_command(&mut self) -> io::Result<()> {
        let cmd = self.dev().config_read16(PCI_COMMAND)?;
        self.state.mem_enabled = cmd & PCI_COMMAND_MEMORY != 0;
        Ok(())
    }

    /// After a result the model did not expect, brings the device and the model back in step:
    /// memory enabled, the readiness check done, low power left.
    fn resync(&mut self) -> io::Result<()> {
        let cmd = self.dev().config_read16(PCI_COMMAND)?;
        self.dev()
            .config_write::<2>(PCI_COMMAND, (cmd | PCI_COMMAND_MEMORY).to_le_bytes())?;
        let mut b = [0u8; 1];
        let _ = self.dev().fd.read_at_raw(&mut b, (4u64 << SHIFT) as i64);
        let _ = self.dev().set_feature(FEATURE_LOW_POWER_EXIT);
        self.state = State {
            mem_enabled: true,
            reset_pending: false,
            low_power: false,
        };
        Ok(())
    }

    fn run(&mut self, i: u64, op: &Op) -> io::Result<()> {
        match op {
            Op::Read { pos, count, bad } => self.read(i, op, *pos, *count, *bad),
            Op::Write { pos, data, bad } => self.write(i, op, *pos, data, *bad),
            Op::Mmap {
                off,
                len,
                prot,
                flags,
                touches,
            } => self.mmap(i, op, *off, *len, *prot, *flags, touches),
            Op::Ioctl(io) => self.ioctl(i, op, io),
            Op::ConfigWrite { off, data } => self.config_write(i, op, *off, data),
            Op::MemoryEnable(on) => {
                self.count("memory enable");
                let cmd = self.dev().config_read16(PCI_COMMAND)?;
                let new = if *on {
                    cmd | PCI_COMMAND_MEMORY
                } else {
                    cmd & !PCI_COMMAND_MEMORY
                };
                self.dev()
                    .config_write::<2>(PCI_COMMAND, new.to_le_bytes())?;
                self.sync_command()?;
                if self.state.mem_enabled != *on {
                    self.fail(
                        Cat::Config,
                        i,
                        op,
                        "Memory Space Enable did not take".into(),
                    );
                }
                Ok(())
            }
            Op::Reset => {
                self.count("reset");
                let r = self.dev().reset();
                self.note(r.as_ref().map_err(|e| e.raw_os_error()).is_ok());
                match r {
                    Ok(()) => self.state.reset_pending = true,
                    Err(e) => self.fail(Cat::Reset, i, op, format!("failed: {e}")),
                }
                Ok(())
            }
            Op::Reopen => {
                self.count("reopen");
                self.dev = None;
                match Device::open_iommufd(GPU_BDF) {
                    Ok(d) => self.dev = Some(d),
                    Err(e) => {
                        // Try once more so the run can go on and report.
                        self.fail(Cat::Reset, i, op, format!("reopen failed: {e}"));
                        self.dev = Some(Device::open_iommufd(GPU_BDF)?);
                    }
                }
                // Opening resets the function (vfio_pci_core_enable()), and closing left low
                // power.
                self.state.reset_pending = true;
                self.state.low_power = false;
                self.sync_command()
            }
        }
    }

    fn buffer(&self, bad: bool, len: usize) -> (*mut u8, Vec<u8>) {
        let mut buf = vec![0xa5u8; len.max(1)];
        let p = if bad {
            self.bad.addr() as *mut u8
        } else {
            buf.as_mut_ptr()
        };
        (p, buf)
    }

    fn read(&mut self, i: u64, op: &Op, pos: i64, count: usize, bad: bool) -> io::Result<()> {
        self.count("pread");
        let before = self.state;
        let (want, bytes) =
            expect_read(&self.layout, &mut self.state, &self.shadow, pos, count, bad);
        let (p, buf) = self.buffer(bad, count);
        // SAFETY: `p` is `count` writable bytes of `buf`, or the PROT_NONE reservation (at least
        // MAX_BUF bytes, which the kernel cannot write: the read fails with EFAULT).
        let got = errno_of(unsafe { libc::pread(self.fd(), p.cast(), count, pos) });
        self.note((0u8, got == want));
        if got != want {
            self.fail(
                Cat::ReadWrite,
                i,
                op,
                format!(
                    "got {}, expected {} (state before {before:?})",
                    show(&got),
                    show(&want)
                ),
            );
            return self.resync();
        }
        let Ok(n) = got else { return Ok(()) };
        let (index, off) = split(pos, count).unwrap_or((0, 0));
        let mut wrong = None;
        for (k, want) in bytes.iter().enumerate().take(n) {
            if let Some(w) = want {
                if buf[k] != *w {
                    wrong = Some((k, buf[k], *w));
                    break;
                }
            }
        }
        if let Some((k, g, w)) = wrong {
            self.fail(
                Cat::ReadWrite,
                i,
                op,
                format!(
                    "byte {k} (region offset {:#x}) is {g:#04x}, expected {w:#04x}",
                    off + k as u64
                ),
            );
            if let Kind::Emulated(_) = self.layout.kind(index) {
                self.shadow.forget(index, off, n as u64);
            }
            return Ok(());
        }
        // Learn what was read from memory, so that later reads and touches are checked too.
        if let Kind::Emulated(r) = self.layout.kind(index) {
            if n <= LEARN_MAX && off < r.memlength {
                let mc = (n as u64).min(r.memlength - off) as usize;
                self.shadow.set(index, off, &buf[..mc]);
            }
        }
        Ok(())
    }

    fn write(&mut self, i: u64, op: &Op, pos: i64, data: &[u8], bad: bool) -> io::Result<()> {
        self.count("pwrite");
        let before = self.state;
        let (want, lands) = expect_write(&self.layout, &mut self.state, pos, data.len(), bad);
        let p = if bad {
            self.bad.addr() as *const u8
        } else {
            data.as_ptr()
        };
        // SAFETY: `p` is `data.len()` readable bytes, or the PROT_NONE reservation, which the
        // kernel cannot read (EFAULT).
        let got = errno_of(unsafe { libc::pwrite(self.fd(), p.cast(), data.len(), pos) });
        self.note((1u8, got == want));
        if got != want {
            self.fail(
                Cat::ReadWrite,
                i,
                op,
                format!(
                    "got {}, expected {} (state before {before:?})",
                    show(&got),
                    show(&want)
                ),
            );
            if let Ok((index, off)) = split(pos, data.len()) {
                if let Kind::Emulated(_) = self.layout.kind(index) {
                    self.shadow.forget(index, off, data.len() as u64);
                }
            }
            return self.resync();
        }
        match lands {
            Some(Lands::Data { index, off, len }) => self.shadow.set(index, off, &data[..len]),
            Some(Lands::Zeros { index, off, len }) => {
                self.shadow.set(index, off, &vec![0; len]);
                self.count("EFAULT write zero-filled usemem");
            }
            None => {}
        }
        if let Ok((7, off)) = split(pos, data.len()) {
            self.after_config_write(off, data)?;
        }
        Ok(())
    }

    /// What a config write may have changed: Memory Space Enable, and an FLR through the PCIe
    /// Device Control register (vfio-pci-core virtualises Initiate FLR and resets the function,
    /// `vfio_exp_config_write()`).
    fn after_config_write(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        if (off..off + data.len() as u64).contains(&DEVCTL_HI)
            && data[(DEVCTL_HI - off) as usize] & 0x80 != 0
        {
            self.state.reset_pending = true;
            self.count("FLR via config space");
        }
        self.sync_command()
    }

    fn config_write(&mut self, i: u64, op: &Op, off: u64, data: &[u8]) -> io::Result<()> {
        self.count("config write");
        let want = expect_config_write(&self.layout, off, data.len(), false);
        let got = errno_of(
            // SAFETY: `data` is `data.len()` readable bytes.
            unsafe {
                libc::pwrite(
                    self.fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    ((7u64 << SHIFT) + off) as i64,
                )
            },
        );
        self.note((2u8, got == want));
        if got != want {
            self.fail(
                Cat::Config,
                i,
                op,
                format!("got {}, expected {}", show(&got), show(&want)),
            );
        }
        if got.is_ok() {
            self.after_config_write(off, data)?;
        }
        Ok(())
    }

    /// The signal one touch of a mapping with protection `prot` is expected to end with
    /// (SIGSEGV: not allowed by `prot`; SIGBUS: the fault fails, vfio_pci_vmf_insert_pfn() and
    /// the driver's fault handler), or `None` when it succeeds. Write permission implies read
    /// permission: on x86 (no write-only pages) and on arm64 (`protection_map[VM_SHARED |
    /// VM_WRITE]` is `PAGE_SHARED`, arch/arm64/mm/mmap.c), and the touches are of shared mappings.
    fn expect_touch(&self, prot: i32, t: &Touch) -> Option<i32> {
        let readable = prot & (libc::PROT_READ | libc::PROT_WRITE) != 0;
        let ok = match t.write {
            Some(_) => prot & libc::PROT_WRITE != 0,
            None => readable,
        };
        if !ok {
            return Some(libc::SIGSEGV);
        }
        if self.state.low_power || !self.state.mem_enabled {
            return Some(libc::SIGBUS);
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn mmap(
        &mut self,
        i: u64,
        op: &Op,
        off: i64,
        len: u64,
        prot: i32,
        flags: i32,
        touches: &[Touch],
    ) -> io::Result<()> {
        self.count("mmap");
        let want = expect_mmap(&self.layout, off, len, flags);
        // SAFETY: A new mapping at an address the kernel chooses; nothing is overwritten.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                prot,
                flags,
                self.fd(),
                off as libc::off_t,
            )
        };
        let got = if p == libc::MAP_FAILED {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(())
        };
        self.note((3u8, got == want));
        if got != want {
            let msg = format!(
                "got {}, expected {}",
                got.map_or_else(|e| show(&Err(e)), |_| "a mapping".into()),
                want.map_or_else(|e| show(&Err(e)), |_| "a mapping".into())
            );
            self.fail(Cat::Mmap, i, op, msg);
        }
        if got.is_err() {
            return Ok(());
        }
        let alen = len.div_ceil(page_bytes()) * page_bytes();
        // SAFETY: The mapping just made, of `alen` bytes; `Mapping` unmaps it on drop.
        let map = unsafe { mm::Mapping::from_raw(p as usize, alen as usize) };
        let shared = flags & 0xf != libc::MAP_PRIVATE;
        if touches.is_empty() || !shared || want.is_err() {
            return Ok(());
        }
        let pos = off as u64;
        let (index, start) = (pos >> SHIFT, pos & (REGION_SPAN - 1));
        // The touches up to the first that is expected to fail.
        let mut plan = Vec::new();
        let mut last_sig = None;
        for t in touches {
            plan.push(*t);
            if let Some(sig) = self.expect_touch(prot, t) {
                last_sig = Some(sig);
                break;
            }
        }
        let kind = self.layout.kind(index);
        let expected: Vec<Option<u64>> = plan
            .iter()
            .map(|t| {
                if t.write.is_some() {
                    return None;
                }
                let at = start + t.off;
                let bytes: Option<Vec<u8>> = (0..t.width as u64)
                    .map(|k| match kind {
                        Kind::Emulated(_) => self.shadow.get(index, at + k),
                        Kind::Bar0 => Some(bar0_byte(at + k)),
                        _ => None,
                    })
                    .collect();
                bytes.map(|b| {
                    let mut v = [0u8; 8];
                    v[..b.len()].copy_from_slice(&b);
                    u64::from_le_bytes(v)
                })
            })
            .collect();
        self.count("touch");
        let report = self.report.0.addr();
        // SAFETY: The report page is ours and mapped.
        unsafe { std::ptr::write_bytes(report as *mut u8, 0, 32) };
        let base = map.addr();
        let mut child = mm::fork_child(|| {
            // One fault, one signal (see mm::touch_in_child).
            // SAFETY: Resets signal dispositions in this single-threaded child.
            unsafe {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            }
            let slot = |k: usize| (report + 8 * k) as *mut u64;
            for (n, t) in plan.iter().enumerate() {
                let a = base + t.off as usize;
                // SAFETY: `a` lies in the mapping the child inherited (touch offsets are drawn
                // inside it); a failing access raises the signal the parent expects.
                let v = unsafe {
                    match (t.width, t.write) {
                        (1, Some(v)) => {
                            std::ptr::write_volatile(a as *mut u8, v as u8);
                            0
                        }
                        (2, Some(v)) => {
                            std::ptr::write_volatile(a as *mut u16, v as u16);
                            0
                        }
                        (4, Some(v)) => {
                            std::ptr::write_volatile(a as *mut u32, v as u32);
                            0
                        }
                        (_, Some(v)) => {
                            std::ptr::write_volatile(a as *mut u64, v);
                            0
                        }
                        (1, None) => u64::from(std::ptr::read_volatile(a as *const u8)),
                        (2, None) => u64::from(std::ptr::read_volatile(a as *const u16)),
                        (4, None) => u64::from(std::ptr::read_volatile(a as *const u32)),
                        _ => std::ptr::read_volatile(a as *const u64),
                    }
                };
                if let Some(w) = expected[n] {
                    if v != w {
                        // SAFETY: The report page is shared with the parent.
                        unsafe {
                            *slot(1) = n as u64 + 1;
                            *slot(2) = v;
                            *slot(3) = w;
                        }
                        return 1;
                    }
                }
                // SAFETY: As above.
                unsafe { *slot(0) = n as u64 + 1 };
            }
            0
        })?;
        let end = child.wait_timeout(Duration::from_secs(60))?;
        // SAFETY: The report page is ours; the child has ended.
        let rep: [u64; 4] = unsafe { std::ptr::read_volatile(report as *const [u64; 4]) };
        let done = rep[0] as usize;
        self.note((4u8, format!("{end}"), done));
        let want_end = match last_sig {
            Some(sig) => ChildEnd::Signaled(sig),
            None => ChildEnd::Exited(0),
        };
        let want_done = if last_sig.is_some() {
            plan.len() - 1
        } else {
            plan.len()
        };
        // Writes that completed landed in memory; a fault that succeeded did the readiness check.
        for t in &plan[..done.min(plan.len())] {
            if let (Some(v), Kind::Emulated(_)) = (t.write, kind) {
                self.shadow
                    .set(index, start + t.off, &v.to_le_bytes()[..t.width]);
            }
        }
        if done > 0 && matches!(kind, Kind::Emulated(_)) {
            self.state.reset_pending = false;
        }
        if end != want_end || done != want_done {
            let mut msg = format!(
                "touches {:?}: child {end} after {done} touches, expected {want_end} after {want_done} (state {:?})",
                plan, self.state
            );
            if rep[1] != 0 {
                let _ = write!(
                    msg,
                    "; touch {} read {:#x}, expected {:#x}",
                    rep[1] - 1,
                    rep[2],
                    rep[3]
                );
            }
            self.fail(Cat::Mmap, i, op, msg);
            if let Kind::Emulated(_) = kind {
                for t in &plan {
                    self.shadow.forget(index, start + t.off, t.width as u64);
                }
            }
            return self.resync();
        }
        Ok(())
    }

    fn ioctl(&mut self, i: u64, op: &Op, io: &IoctlOp) -> io::Result<()> {
        self.count("ioctl");
        let bad_ptr = self.bad.addr() as *mut u64;
        let fd = self.fd();
        let call = |req: libc::c_ulong, arg: *mut u64| -> Result<usize, i32> {
            // SAFETY: `arg` points to the 512-byte buffer below or to the PROT_NONE reservation
            // (the kernel's copies fail with EFAULT). A random `argsz` or count may make the
            // kernel read past the buffer, as a hostile VMM would; what it writes back is at
            // most a fixed part and the capabilities, which fit in the buffer.
            errno_of(unsafe { libc::ioctl(fd, req, arg) } as isize)
        };
        let mut buf = [0u64; 64];
        let (got, want): (Result<usize, i32>, Option<Result<usize, i32>>) = match io {
            IoctlOp::GetInfo { argsz, bad } => {
                buf[0] = u64::from(*argsz);
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(ioctl::VFIO_DEVICE_GET_INFO, p);
                let want = if *bad {
                    Err(libc::EFAULT)
                } else if *argsz < 16 {
                    Err(libc::EINVAL)
                } else {
                    Ok(0)
                };
                if got == Ok(0) && want == Ok(0) {
                    // flags PCI | RESET, 9 regions, 5 IRQ indexes (vfio_pci_ioctl_get_info()).
                    let fields = (
                        buf[0] as u32,
                        (buf[0] >> 32) as u32,
                        buf[1] as u32,
                        (buf[1] >> 32) as u32,
                    );
                    if fields != (*argsz, 0x3, NUM_REGIONS as u32, NUM_IRQS) {
                        self.fail(Cat::Ioctl, i, op, format!("device info {fields:x?}"));
                    }
                }
                (got, Some(want))
            }
            IoctlOp::RegionInfo {
                argsz,
                index,
                cap_offset,
                bad,
            } => {
                buf[0] = u64::from(*argsz) | u64::from(u32::MAX) << 32;
                buf[1] = u64::from(*index) | u64::from(*cap_offset) << 32;
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(ioctl::VFIO_DEVICE_GET_REGION_INFO, p);
                let want = self.expect_region_info(*argsz, *index, *cap_offset, *bad);
                let wanted = want.as_ref().map(|_| ()).map_err(|e| *e);
                if got.map(|_| ()) == wanted {
                    if let Ok(fields) = want {
                        let seen = (
                            buf[0] as u32,
                            (buf[0] >> 32) as u32,
                            (buf[1] >> 32) as u32,
                            buf[2],
                            buf[3],
                        );
                        let mut bad_info = seen != fields.0;
                        if let Some(memlength) = fields.1 {
                            // The sparse-mmap capability after the fixed part.
                            let cap = (
                                buf[4] as u16,
                                (buf[4] >> 16) as u16,
                                (buf[4] >> 32) as u32,
                                buf[5] as u32,
                                buf[6],
                                buf[7],
                            );
                            bad_info |= cap != (1, 1, 0, 1, 0, memlength);
                        }
                        if bad_info {
                            self.fail(
                                Cat::Ioctl,
                                i,
                                op,
                                format!("region info {:x?}, expected {fields:x?}", &buf[..8]),
                            );
                        }
                    }
                }
                (got, Some(wanted.map(|_| 0)))
            }
            IoctlOp::IrqInfo { argsz, index, bad } => {
                buf[0] = u64::from(*argsz);
                buf[1] = u64::from(*index);
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(GET_IRQ_INFO, p);
                let want = if *bad {
                    Err(libc::EFAULT)
                } else if *argsz < 16 || *index >= NUM_IRQS {
                    Err(libc::EINVAL)
                } else {
                    Ok(0)
                };
                (got, Some(want))
            }
            IoctlOp::Ioeventfd { payload } => {
                buf[..4].copy_from_slice(payload);
                // The driver refuses ioeventfds before reading the argument (upstream
                // nvgrace_gpu_ioctl()).
                (
                    call(ioctl::VFIO_DEVICE_IOEVENTFD, buf.as_mut_ptr()),
                    Some(Err(libc::ENOTTY)),
                )
            }
            IoctlOp::Unknown { cmd } => (call(*cmd, buf.as_mut_ptr()), Some(Err(libc::ENOTTY))),
            IoctlOp::Feature { words, bad } => {
                buf[..words.len()].copy_from_slice(words);
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(ioctl::VFIO_DEVICE_FEATURE, p);
                let flags = (words[0] >> 32) as u32;
                if let Ok(n) = got {
                    let feature = flags & FEATURE_MASK;
                    let acting = flags & FEATURE_PROBE == 0;
                    if feature == FEATURE_DMA_BUF && acting && n > 0 {
                        // SAFETY: A new dma-buf fd that nothing else owns.
                        unsafe { libc::close(n as i32) };
                    }
                    if acting
                        && (feature == FEATURE_LOW_POWER_ENTRY
                            || feature == FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP)
                    {
                        self.state.low_power = true;
                    }
                    if acting && feature == FEATURE_LOW_POWER_EXIT {
                        self.state.low_power = false;
                    }
                }
                let want = if *bad { Some(Err(libc::EFAULT)) } else { None };
                (got.map(|n| usize::from(n > 0)), want)
            }
            IoctlOp::SetIrqs { words } => {
                buf[..words.len()].copy_from_slice(words);
                (call(SET_IRQS, buf.as_mut_ptr()), None)
            }
            IoctlOp::HotResetInfo { argsz } => {
                buf[0] = u64::from(*argsz);
                (call(GET_PCI_HOT_RESET_INFO, buf.as_mut_ptr()), None)
            }
        };
        // Exact expectations are noted as met or not, the rest by value: the digest is then the
        // same for both builds of a seed when they behave the same.
        match &want {
            Some(w) => self.note((5u8, got == *w)),
            None => self.note((6u8, &got)),
        }
        if let Some(want) = want {
            if got != want {
                self.fail(
                    Cat::Ioctl,
                    i,
                    op,
                    format!("got {}, expected {}", show(&got), show(&want)),
                );
            }
        }
        Ok(())
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` (vfio_get_region_info(), upstream
    /// nvgrace_gpu_ioctl_get_region_info(), vfio_pci_ioctl_get_region_info()): the fields
    /// `(argsz, flags, cap_offset, size, offset)` and, for the emulated BARs with room for it,
    /// the sparse area's size.
    #[allow(clippy::type_complexity)]
    fn expect_region_info(
        &self,
        argsz: u32,
        index: u32,
        cap_offset: u32,
        bad: bool,
    ) -> Result<((u32, u32, u32, u64, u64), Option<u64>), i32> {
        if bad {
            return Err(libc::EFAULT);
        }
        if argsz < 32 {
            return Err(libc::EINVAL);
        }
        let offset = u64::from(index) << SHIFT;
        const R: u32 = 1;
        const W: u32 = 2;
        const M: u32 = 4;
        const CAPS: u32 = 8;
        match self.layout.kind(u64::from(index)) {
            Kind::Emulated(r) => {
                // One sparse-mmap capability: a 16-byte header and one 16-byte area.
                let needed = 32 + 32;
                if argsz < needed {
                    Ok(((needed, R | W | M | CAPS, 0, r.bar_size, offset), None))
                } else {
                    Ok((
                        (argsz, R | W | M | CAPS, 32, r.bar_size, offset),
                        Some(r.memlength),
                    ))
                }
            }
            Kind::Bar0 => Ok(((argsz, R | W | M, cap_offset, BAR0_SIZE, offset), None)),
            Kind::PhysBar2 => Ok(((argsz, R | W | M, cap_offset, PHYS_BAR2_SIZE, offset), None)),
            Kind::Config => Ok(((argsz, R | W, cap_offset, CONFIG_SIZE, offset), None)),
            // Absent BARs and the absent ROM have size 0 and no flags; VGA and beyond: EINVAL.
            Kind::None if index < 7 => Ok(((argsz, 0, cap_offset, 0, offset), None)),
            Kind::None => Err(libc::EINVAL),
        }
    }
}

/// A pread at a raw (possibly negative) position.
trait ReadAtRaw {
    fn read_at_raw(&self, buf: &mut [u8], pos: i64) -> Result<usize, i32>;
}

impl ReadAtRaw for std::fs::File {
    fn read_at_raw(&self, buf: &mut [u8], pos: i64) -> Result<usize, i32> {
        // SAFETY: `buf` is writable for its length.
        errno_of(unsafe { libc::pread(self.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), pos) })
    }
}

// ---------------------------------------------------------------------------------------------
// The program.

struct Args {
    seed: u64,
    iterations: u64,
    seconds: u64,
    batch: u64,
    /// Print every operation (to reproduce a failure by hand).
    trace: bool,
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seed: DEFAULT_SEED,
        iterations: DEFAULT_ITERATIONS,
        seconds: DEFAULT_SECONDS,
        batch: DEFAULT_BATCH,
        trace: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .and_then(|v| parse_u64(&v))
                .ok_or(format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--seed" => a.seed = value("--seed")?,
            "--iterations" => a.iterations = value("--iterations")?,
            "--seconds" => a.seconds = value("--seconds")?,
            "--batch" => a.batch = value("--batch")?.max(1),
            "--trace" => a.trace = true,
            "--long" => {
                a.iterations = LONG_ITERATIONS;
                a.seconds = LONG_SECONDS;
            }
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    Ok(a)
}

/// A fresh check that the device works after the fuzzing: reset, memory enabled, a write read
/// back through pread and through a mapping.
fn usable_after(f: &mut Fuzzer) -> tap::Outcome {
    f.resync()?;
    f.dev().reset()?;
    let dev = f.dev();
    let at = (4u64 << SHIFT) + 0x2000;
    let v = 0x0123_4567_89ab_cdefu64;
    use std::os::unix::fs::FileExt;
    nvgrace_guest_tests::check_eq!(dev.fd.write_at(&v.to_le_bytes(), at)?, 8usize, "pwrite");
    let mut b = [0u8; 8];
    nvgrace_guest_tests::check_eq!(dev.fd.read_at(&mut b, at)?, 8usize, "pread");
    nvgrace_guest_tests::check_eq!(u64::from_le_bytes(b), v, "value read back");
    let map = mm::mmap_shared(&dev.fd, at & !(page_bytes() - 1), mm::page_size())?;
    let (end, _) = mm::touch_in_child(map.addr(), Duration::from_secs(60))?;
    nvgrace_guest_tests::check_eq!(end, ChildEnd::Exited(0), "a touch of a mapping ({end})");
    nvgrace_guest_tests::check_eq!(
        map.read_u64((at % page_bytes()) as usize),
        v,
        "value through the mapping"
    );
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuzz_test: {e}\nusage: fuzz_test [--seed N] [--iterations N] [--seconds N] [--batch N] [--long] [--trace]");
            std::process::exit(2);
        }
    };
    let mut t = Harness::new(CATS.len() + 3);
    t.diag(format!(
        "fuzz: seed {:#x}, at most {} operations and {} s, kernel log checked every {} operations; driver build {}, GPU {}",
        args.seed,
        args.iterations,
        args.seconds,
        args.batch,
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));
    t.diag(format!(
        "fuzz: reproduce with: fuzz_test --seed {:#x} --iterations N (N: the failing iteration + 1)",
        args.seed
    ));
    let Some((usemem, resmem)) = expected_regions() else {
        println!("1..0 # SKIP no GPU memory described to the driver");
        std::process::exit(4);
    };
    let setup = || -> io::Result<Fuzzer> {
        let dev = Device::open_iommufd(GPU_BDF)?;
        // SAFETY: A new anonymous PROT_NONE reservation; nothing is overwritten.
        let bad = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * MAX_BUF,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if bad == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut f = Fuzzer {
            dev: Some(dev),
            layout: Layout { usemem, resmem },
            state: State {
                mem_enabled: true,
                reset_pending: true,
                low_power: false,
            },
            shadow: Shadow::default(),
            // SAFETY: The reservation just made; `Mapping` unmaps it on drop.
            bad: unsafe { mm::Mapping::from_raw(bad as usize, 2 * MAX_BUF) },
            report: Report::new()?,
            failures: HashMap::new(),
            counts: HashMap::new(),
            digest: 0,
            tracing: args.trace,
            noted: Vec::new(),
        };
        // Leave the model as the command line set it (ready at once after resets), and start
        // from a known state: memory enabled, the readiness check after open done.
        if model::available() {
            model::reset_control()?;
        }
        f.resync()?;
        Ok(f)
    };
    let mut f = match setup() {
        Ok(f) => f,
        Err(e) => {
            println!("Bail out! cannot set up: {e}");
            std::process::exit(1);
        }
    };
    let splats_before = sys::splats().map(|s| s.len()).unwrap_or(0);
    let mut new_splats: Vec<String> = Vec::new();
    let start = mm::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut ran = 0;
    let mut batches = 0;
    let mut error = None;
    while ran < args.iterations && mm::now() < deadline {
        let end = (ran + args.batch).min(args.iterations);
        while ran < end && mm::now() < deadline {
            let i = ran;
            let op = gen_op(args.seed, i, &f.layout);
            if args.trace {
                tap::diag(format!("op {i}: {} (state {:?})", op.describe(), f.state));
            }
            if let Err(e) = f.run(i, &op) {
                error = Some(format!("iteration {i}: {}: {e}", op.describe()));
                break;
            }
            if args.trace {
                let noted = std::mem::take(&mut f.noted).join(" ");
                tap::diag(format!("op {i}: {noted}, digest {:016x}", f.digest));
            }
            ran += 1;
        }
        batches += 1;
        match sys::splats() {
            Ok(s) if s.len() > splats_before + new_splats.len() => {
                let fresh: Vec<String> = s[splats_before + new_splats.len()..].to_vec();
                tap::diag(format!("fuzz: kernel splat after iteration {ran}:"));
                for l in &fresh {
                    tap::diag(format!("  {l}"));
                }
                new_splats.extend(fresh);
            }
            Ok(_) => {}
            // Batches left unchecked would pass for clean ones: stop here.
            Err(e) => {
                new_splats.push(format!("after iteration {ran}: {e}"));
                break;
            }
        }
        if error.is_some() {
            break;
        }
    }
    let took = mm::now() - start;
    let mut counts: Vec<_> = f.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    counts.sort();
    t.diag(format!(
        "fuzz: {ran} operations in {batches} batches, {took:.1?}: {}; results digest {:016x}",
        counts.join(", "),
        f.digest
    ));
    for (cat, name) in CATS {
        t.test(name, || {
            if let (Some(e), Cat::ReadWrite) = (&error, cat) {
                return Err(Failure::Fail(format!("the fuzzer stopped: {e}")));
            }
            match f.failures.get(name) {
                None => Ok(()),
                Some((n, msgs)) => Err(Failure::Fail(format!(
                    "{n} unexpected results (seed {:#x}); the first:\n{}",
                    args.seed,
                    msgs.join("\n")
                ))),
            }
        });
    }
    t.test("no_splat_after_any_batch", || {
        if new_splats.is_empty() {
            Ok(())
        } else {
            Err(Failure::Fail(format!(
                "the kernel log reported (seed {:#x}):\n{}",
                args.seed,
                new_splats.join("\n")
            )))
        }
    });
    t.test("device_usable_after_fuzzing", || usable_after(&mut f));
    drop(f);
    t.test("no_kernel_splat", sys::no_kernel_splat);
    t.finish()
}
