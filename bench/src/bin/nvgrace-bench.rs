// SPDX-License-Identifier: GPL-2.0

//! The guest side of `make bench`: measures driver builds in the rig's guest and prints one
//! `@@bench` JSON line per metric and driver (every repetition's sample) on the console, for
//! `bench-report` on the host to set the Rust driver against upstream. Not a test: it asserts
//! nothing about speed, and it exits non-zero only when a metric could not be measured.
//!
//! ```text
//! nvgrace-bench [--reps N] [--warmup N] [--switch DRIVER,DRIVER [--passes N]] SUITE...
//! ```
//!
//! Without `--switch` it measures the build `scripts/vm-run --driver` bound. With `--switch`
//! (vm-run `--driver none`) it binds the builds itself, one after the other, group of metrics
//! by group of metrics, in `--passes` passes (default: one per repetition) whose order
//! alternates (A B, B A, ...): both builds are then measured seconds apart in the same boot, so
//! a busy host slows both alike. Every binding of a build warms up again before it measures.
//!
//! Suites, each for one geometry of the rig:
//!
//! - `usemem` (`--gpu gb200 --mem-size 0x80000000`: 2 GiB of usemem, which holds a 1 GiB-aligned
//!   GiB): fault-in of usemem mappings 1 GiB-aligned, 2 MiB-aligned and unaligned; pread/pwrite
//!   bandwidth of usemem; latency of an emulated BAR config read, a plain config read, a region
//!   info query and a BAR0 read; reset-to-first-access latency at readiness delays of 0, 150 and
//!   500 ms; open/close; unbind/bind (probe). And the ceiling: the same page touches on anonymous
//!   memory, the same copies on a tmpfs file and as memcpy, measured in each build's turn (they
//!   do not involve the driver, so they show how much the host's load moves the figures).
//! - `resmem` (`--gpu gh200`, the rig's default geometry: 1 GiB of resmem at a 1 GiB-aligned
//!   address): pread/pwrite bandwidth of resmem and fault-in of a 1 GiB-aligned resmem mapping.
//!
//! The sizes follow the guest kernel's pages (`mm::page_size()`, `mm::pmd_size()`): with 4 KiB
//! pages a PMD maps 2 MiB and a PUD 1 GiB; on arm64 with 64 KiB pages a PMD maps 512 MiB, and
//! arm64 has no PUD-level PFN maps at any page size (`mm::pud_pfnmap()`), so the PUD runs are
//! left out there and the metric names carry the sizes (`fault_usemem_512m_aligned`).
//!
//! No rig geometry holds both a 1 GiB-aligned GiB of usemem and a resmem region: with the
//! carve-out of a GH200 (1 GiB of resmem after usemem), usemem would have to reach 2 GiB past
//! the aperture's start at 512 MiB, and the aperture must stay in the 2 GiB of guest RAM above
//! the kernel's 512 MiB, below 4 GiB (scripts/vm-run, scripts/mkssdt).

use std::collections::BTreeMap;
use std::error::Error;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use nvgrace_bench::ptdump;
use nvgrace_bench::BenchError;
use nvgrace_bench::Better;
use nvgrace_bench::Env;
use nvgrace_bench::Record;
use nvgrace_bench::ENV_TAG;
use nvgrace_bench::ERROR_TAG;
use nvgrace_bench::RECORD_TAG;
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::hw;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::page_size;
use nvgrace_guest_tests::model;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::vfio;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::DRIVER_NAME;
use nvgrace_guest_tests::GPU_BDF;
use serde_json::json;
use serde_json::Map;
use serde_json::Value;

type R<T> = Result<T, Box<dyn Error>>;

const GIB: f64 = (1u64 << 30) as f64;
const MIB: usize = 1 << 20;

/// Bytes touched by the unaligned (4 KiB-fault) fault-in runs, device and anonymous: one fault
/// per page makes them the slow ones, so they cover less than the huge-page runs (GiB/s
/// normalises the size away).
const PTE_FAULT_LEN: usize = 128 * MIB;
/// Bytes of anonymous memory the ceiling's page touches cover: a quarter of the guest kernel's
/// 512 MiB (`mem=512M`, scripts/vm-run).
const ANON_LEN: usize = 128 * MIB;
/// Bytes each read/write bandwidth repetition moves, usemem and the ceiling's copies.
const USEMEM_RW_WINDOW: usize = 64 * MIB;
/// Bytes each resmem read/write repetition moves: resmem goes through vfio-pci-core's MMIO copy
/// (8 bytes per access), far slower than usemem's plain copy.
const RESMEM_RW_WINDOW: usize = 16 * MIB;
/// The buffer sizes of the read/write runs (the issue's 4 KiB, 64 KiB and 1 MiB).
const RW_SIZES: [(usize, &str); 3] = [(4 << 10, "4k"), (64 << 10, "64k"), (1 << 20, "1m")];
/// Calls per latency sample for accesses the kernel answers alone (config space, region info):
/// tens of ms per sample, so that one preemption of the guest by a busy host moves it little.
const FAST_OPS: usize = 20_000;
/// Calls per latency sample for BAR0 reads, each a round trip to the GPU model (vfio-user).
const BAR0_OPS: usize = 1_000;
/// Bytes touched per sample of the touch-only runs, in passes over the mapping: the touch of an
/// already faulted 128 MiB takes ~2 ms under TCG, too short to measure on a busy host.
const TOUCH_BYTES: usize = 1 << 30;
/// Bytes mapped by the huge-page fault-in runs.
const HUGE_FAULT_LEN: usize = 1 << 30;
/// The model's readiness delays after an FLR, ms (the issue's 0, 150 and 500 ms).
const READY_DELAYS_MS: [u64; 3] = [0, 150, 500];
/// The guest's THP mode. It boots as `never`: the kernel turns THP off on machines with less than
/// 512 MiB of RAM (mm/huge_memory.c `hugepage_init()`), and the guest kernel has `mem=512M`
/// minus its reservations. The bench sets `madvise` so that the ceiling's `MADV_HUGEPAGE`
/// mapping gets THPs. The drivers' PUD and PMD faults do not
/// depend on it: "Huge PFN mappings are uncompactable so the policy doesn't apply"
/// (mm/huge_memory.c `vma_file_bypass_thp_tuneables()`).
const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
/// Config-space offset of the BAR4 register, which both drivers emulate (usemem's BAR).
const PCI_BASE_ADDRESS_4: u64 = hw::USEMEM_BAR_OFFSET;
/// Config-space offset of the Vendor ID, which vfio-pci-core answers from its virtual config.
const PCI_VENDOR_ID: u64 = 0x00;

/// What one metric is, for its record.
struct Metric {
    name: String,
    group: &'static str,
    unit: &'static str,
    better: Better,
    what: String,
}

fn rate(name: impl Into<String>, group: &'static str, what: impl Into<String>) -> Metric {
    Metric {
        name: name.into(),
        group,
        unit: "GiB/s",
        better: Better::Higher,
        what: what.into(),
    }
}

fn time(
    name: impl Into<String>,
    group: &'static str,
    unit: &'static str,
    what: impl Into<String>,
) -> Metric {
    Metric {
        name: name.into(),
        group,
        unit,
        better: Better::Lower,
        what: what.into(),
    }
}

/// The device opened through the bound build, with its GPU memory regions.
struct Open {
    dev: Device,
    usemem: GpuMem,
    resmem: Option<GpuMem>,
}

impl Open {
    fn new() -> R<Open> {
        let dev = Device::open_iommufd(GPU_BDF)?;
        let (usemem, resmem) = dev.gpu_mem()?;
        Ok(Open {
            dev,
            usemem,
            resmem,
        })
    }
}

/// What a group of metrics needs while it runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// The device open ([`Open`]).
    Device,
    /// The device closed (open/close and unbind/bind measure it themselves).
    Closed,
}

/// Buffers and files the metrics share, made once.
struct Scratch {
    /// The user buffer of the read/write runs, 1 MiB, page-aligned, faulted in.
    buf: Anon,
    /// The memcpy ceiling's source and destination, [`USEMEM_RW_WINDOW`] bytes, faulted in.
    window: Anon,
    /// The tmpfs ceiling's file, [`USEMEM_RW_WINDOW`] bytes, unlinked.
    tmpfs: File,
}

impl Scratch {
    fn new() -> R<Scratch> {
        let mut buf = Anon::new(MIB, page_size(), false)?;
        buf.slice().fill(0x5a);
        let mut window = Anon::new(USEMEM_RW_WINDOW, mm::pmd_size(), true)?;
        window.slice().fill(0xa5);
        let path = "/tmp/nvgrace-bench.ceiling";
        let tmpfs = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        std::fs::remove_file(path)?;
        for pos in (0..USEMEM_RW_WINDOW).step_by(MIB) {
            tmpfs.write_all_at(buf.slice(), pos as u64)?;
        }
        Ok(Scratch { buf, window, tmpfs })
    }
}

/// One repetition of a metric: a sample and its details (or `Value::Null`).
type Step<'a> = Box<dyn FnMut(&mut Scratch, Option<&Open>) -> R<(f64, Value)> + 'a>;

/// Per driver build: the samples and details of a metric.
type ByDriver = BTreeMap<String, (Vec<f64>, Vec<Value>)>;

/// The open device a step needs.
fn need(o: Option<&Open>) -> R<&Open> {
    o.ok_or_else(|| "the device is not open".into())
}

/// The run: its settings, the bound build and the open device, and whether anything failed.
struct Bench {
    suite: String,
    reps: usize,
    warmup: usize,
    passes: usize,
    /// The builds to measure, in the first pass's order.
    drivers: Vec<String>,
    /// Whether this program binds the builds (`--switch`) or vm-run bound the only one.
    switch: bool,
    bound: Option<String>,
    open: Option<Open>,
    errors: usize,
}

impl Bench {
    /// Binds `driver` (when switching) and opens or closes the device as `needs` says.
    fn ensure(&mut self, driver: &str, needs: Needs) -> R<Option<&Open>> {
        if self.bound.as_deref() != Some(driver) {
            self.open = None;
            if self.switch {
                // rig-unbind: unbind, clear driver_override, rmmod; rig-bind: insmod, bind
                // through driver_override (scripts/guest/rig-bind).
                let _ = Command::new("rig-unbind").status();
                self.bound = None;
                let s = Command::new("rig-bind").arg(driver).status()?;
                if !s.success() {
                    return Err(format!("rig-bind {driver}: {s}").into());
                }
            }
            self.bound = Some(driver.to_string());
        }
        match needs {
            Needs::Closed => {
                self.open = None;
                Ok(None)
            }
            Needs::Device => {
                if self.open.is_none() {
                    self.open = Some(Open::new()?);
                }
                Ok(self.open.as_ref())
            }
        }
    }

    /// Repetitions of pass `pass`: `reps` spread over the passes.
    fn reps_in_pass(&self, pass: usize) -> usize {
        self.reps / self.passes + usize::from(pass < self.reps % self.passes)
    }

    /// Measures a group of metrics: in each pass, for each build in the pass's order, binds it,
    /// then for each metric runs its step `warmup` times unmeasured and its share of `reps`
    /// measured. Returns each metric with its samples per build; a metric whose step failed is
    /// reported and left out.
    fn group(
        &mut self,
        needs: Needs,
        scratch: &mut Scratch,
        steps: Vec<(Metric, Step<'_>)>,
    ) -> Vec<(Metric, ByDriver)> {
        let mut steps: Vec<(Metric, Step<'_>, ByDriver, bool)> = steps
            .into_iter()
            .map(|(m, s)| (m, s, ByDriver::new(), false))
            .collect();
        for pass in 0..self.passes {
            let mut order = self.drivers.clone();
            if pass % 2 == 1 {
                order.reverse();
            }
            let n = self.reps_in_pass(pass);
            if n == 0 {
                continue;
            }
            for driver in order {
                let (warmup, switch) = (self.warmup, self.switch);
                let open = match self.ensure(&driver, needs) {
                    Ok(o) => o,
                    Err(e) => {
                        let what = if switch { "binding" } else { "opening" };
                        let e: Box<dyn Error> = format!("{what} {driver}: {e}").into();
                        self.error(&format!("{}_group", steps[0].0.name), &*e);
                        return Vec::new();
                    }
                };
                let mut failed = Vec::new();
                for (m, step, by, dead) in steps.iter_mut() {
                    if *dead {
                        continue;
                    }
                    let samples = by.entry(driver.clone()).or_default();
                    let r = (|| -> R<()> {
                        for _ in 0..warmup {
                            step(scratch, open)?;
                        }
                        for _ in 0..n {
                            let (v, x) = step(scratch, open)?;
                            samples.0.push(v);
                            if !x.is_null() {
                                samples.1.push(x);
                            }
                        }
                        Ok(())
                    })();
                    if let Err(e) = r {
                        *dead = true;
                        failed.push((m.name.clone(), format!("{driver}: {e}")));
                    }
                }
                for (name, e) in failed {
                    let e: Box<dyn Error> = e.into();
                    self.error(&name, &*e);
                }
            }
        }
        steps
            .into_iter()
            .filter(|s| !s.3)
            .map(|(m, _, by, _)| (m, by))
            .collect()
    }

    /// Measures a group and prints its records.
    fn run(&mut self, needs: Needs, scratch: &mut Scratch, steps: Vec<(Metric, Step<'_>)>) {
        for (m, by) in self.group(needs, scratch, steps) {
            self.emit_all(&m, by);
        }
    }

    fn emit_all(&self, m: &Metric, by: ByDriver) {
        for (driver, (samples, per_rep)) in by {
            self.emit(m, &driver, samples, per_rep);
        }
    }

    fn emit(&self, m: &Metric, driver: &str, samples: Vec<f64>, per_rep: Vec<Value>) {
        if let Some(s) = nvgrace_bench::summary(&samples) {
            println!(
                "# {:<30} {:<8} {:>10.4} {:>10.4} {:>10.4} {}",
                m.name, driver, s.min, s.median, s.max, m.unit
            );
        }
        let r = Record {
            suite: self.suite.clone(),
            driver: Some(driver.to_string()),
            metric: m.name.clone(),
            group: m.group.into(),
            unit: m.unit.into(),
            better: m.better,
            what: m.what.clone(),
            samples,
            per_rep,
        };
        println!(
            "{RECORD_TAG}{}",
            serde_json::to_string(&r).expect("records serialise")
        );
    }

    fn error(&mut self, metric: &str, e: &dyn Error) {
        self.errors += 1;
        let r = BenchError {
            suite: self.suite.clone(),
            metric: metric.into(),
            error: e.to_string(),
        };
        println!(
            "{ERROR_TAG}{}",
            serde_json::to_string(&r).expect("errors serialise")
        );
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Stores one 64-bit word at the start of every page of `[addr, addr + len)`, in order.
///
/// # Safety
///
/// `[addr, addr + len)` must be a writable mapping that nothing else uses as Rust data.
unsafe fn touch(addr: usize, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: Inside the mapping, by the function's requirements; 8-byte aligned.
        unsafe { std::ptr::write_volatile((addr + off) as *mut u64, off as u64) };
        off += page_size();
    }
}

/// The page-table entries mapping `[addr, addr + len)` now, or `None` without the dump.
fn entries(addr: usize, len: usize) -> Option<ptdump::Entries> {
    let dump = std::fs::read_to_string(ptdump::CURRENT).ok()?;
    Some(ptdump::count(&dump, addr as u64, (addr + len) as u64))
}

/// Touches every page of the fresh mapping `[addr, addr + len)`: GiB/s, and the faults taken
/// (`ru_minflt`, one per handled fault whatever its order) with the entries they installed.
///
/// # Safety
///
/// As for [`touch`].
unsafe fn fault_in(addr: usize, len: usize) -> R<(f64, Value)> {
    let f0 = mm::minor_faults();
    let t0 = mm::now();
    // SAFETY: By the function's requirements.
    unsafe { touch(addr, len) };
    let took = mm::now() - t0;
    let faults = mm::minor_faults() - f0;
    let e = entries(addr, len);
    Ok((
        len as f64 / GIB / secs(took),
        json!({
            "faults": faults,
            "pud": e.map(|e| e.pud),
            "pmd": e.map(|e| e.pmd),
            "pte": e.map(|e| e.pte),
        }),
    ))
}

/// Touches every page of an already faulted mapping, in passes that add up to at least
/// [`TOUCH_BYTES`]: GiB/s (no faults: the touch alone).
///
/// # Safety
///
/// As for [`touch`].
unsafe fn touch_rate(addr: usize, len: usize) -> R<(f64, Value)> {
    let passes = TOUCH_BYTES.div_ceil(len);
    let f0 = mm::minor_faults();
    let t0 = mm::now();
    for _ in 0..passes {
        // SAFETY: By the function's requirements.
        unsafe { touch(addr, len) };
    }
    let took = mm::now() - t0;
    Ok((
        (passes * len) as f64 / GIB / secs(took),
        json!({ "faults": mm::minor_faults() - f0 }),
    ))
}

/// A private anonymous mapping at a chosen alignment, unmapped on drop.
struct Anon {
    addr: usize,
    len: usize,
}

impl Anon {
    /// `len` bytes at an `align`-aligned address, with THP asked for (`MADV_HUGEPAGE`) or
    /// refused (`MADV_NOHUGEPAGE`).
    fn new(len: usize, align: usize, thp: bool) -> R<Anon> {
        let total = len + align;
        // SAFETY: A new anonymous mapping at an address the kernel chooses.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "anonymous mmap of {total:#x} bytes: {}",
                io::Error::last_os_error()
            )
            .into());
        }
        let start = p as usize;
        let addr = start.next_multiple_of(align);
        // SAFETY: Both ranges lie in the mapping just made and outside `[addr, addr + len)`.
        unsafe {
            if addr > start {
                libc::munmap(start as *mut libc::c_void, addr - start);
            }
            if start + total > addr + len {
                libc::munmap(
                    (addr + len) as *mut libc::c_void,
                    start + total - addr - len,
                );
            }
        }
        let a = Anon { addr, len };
        let advice = if thp {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: Advice on a mapping this object owns.
        if unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) } < 0 {
            return Err(format!("madvise({advice}): {}", io::Error::last_os_error()).into());
        }
        Ok(a)
    }

    fn slice(&mut self) -> &mut [u8] {
        // SAFETY: The mapping is this object's, readable and writable, `len` bytes; the borrow
        // of `self` keeps it alive and unaliased.
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: The range is the mapping this object owns.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// Moves `window` bytes with one pread (or pwrite) of `buf.len()` bytes after another at
/// `base`, `base + buf.len()`, ...: GiB/s.
fn rw_rate(fd: &File, base: u64, window: usize, buf: &mut [u8], write: bool) -> R<f64> {
    let chunk = buf.len();
    let t0 = mm::now();
    let mut pos = 0;
    while pos < window {
        let at = base + pos as u64;
        let n = if write {
            fd.write_at(buf, at)?
        } else {
            fd.read_at(buf, at)?
        };
        if n != chunk {
            return Err(format!(
                "{} at {at:#x}: {n} of {chunk} bytes",
                if write { "pwrite" } else { "pread" }
            )
            .into());
        }
        pos += chunk;
    }
    Ok(window as f64 / GIB / secs(mm::now() - t0))
}

/// Copies `window` in `buf.len()`-byte pieces into `buf` (or from it) with memcpy: GiB/s.
fn copy_rate(window: &mut [u8], buf: &mut [u8], into_buf: bool) -> f64 {
    let t0 = mm::now();
    for piece in window.chunks_mut(buf.len()) {
        if into_buf {
            buf.copy_from_slice(piece);
        } else {
            piece.copy_from_slice(buf);
        }
        std::hint::black_box(&mut *buf);
        std::hint::black_box(&mut *piece);
    }
    window.len() as f64 / GIB / secs(mm::now() - t0)
}

/// Runs `op` `n` times: µs per call.
fn per_op_us(n: usize, mut op: impl FnMut() -> R<()>) -> R<f64> {
    let t0 = mm::now();
    for _ in 0..n {
        op()?;
    }
    Ok(secs(mm::now() - t0) * 1e6 / n as f64)
}

fn read_exact_at(fd: &File, buf: &mut [u8], at: u64) -> R<()> {
    let n = fd.read_at(buf, at)?;
    if n != buf.len() {
        return Err(format!("pread at {at:#x}: {n} of {} bytes", buf.len()).into());
    }
    Ok(())
}

/// A fault-in run: a fresh shared mapping of `len` bytes at offset `off` of the region (usemem
/// or resmem), its first address aligned to `align`, every page touched.
fn fault_step<'a>(
    resmem: bool,
    off: impl Fn(&GpuMem) -> u64 + 'a,
    len: usize,
    align: usize,
) -> Step<'a> {
    Box::new(move |_, o| {
        let o = need(o)?;
        let m = if resmem {
            o.resmem.ok_or("this geometry has no resmem")?
        } else {
            o.usemem
        };
        let off = off(&m);
        if off + len as u64 > m.memlength {
            return Err(format!(
                "{} has {:#x} bytes, the run needs {len:#x} at {off:#x}",
                m.name(),
                m.memlength
            )
            .into());
        }
        let map = mm::mmap_shared_aligned(&o.dev.fd, m.at(off), len, align)?;
        // SAFETY: A shared writable mapping of GPU memory that only this code uses.
        unsafe { fault_in(map.addr(), map.len()) }
    })
}

/// The first offset in `m` at an `align`-aligned physical address (a power of two, bytes).
fn first_aligned_offset(m: &GpuMem, align: usize) -> u64 {
    m.phys.next_multiple_of(align as u64) - m.phys
}

/// A size as the metric names spell it: `4k`, `2m`, `512m`, `1g`.
fn size_tag(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{}g", b >> 30),
        b if b >= 1 << 20 => format!("{}m", b >> 20),
        b => format!("{}k", b >> 10),
    }
}

/// A size for the metric descriptions: `4 KiB`, `2 MiB`, `1 GiB`.
fn size_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b >> 10),
    }
}

/// A step that only gives a sample.
fn plain<'a>(mut f: impl FnMut(&mut Scratch, Option<&Open>) -> R<f64> + 'a) -> Step<'a> {
    Box::new(move |s, o| Ok((f(s, o)?, Value::Null)))
}

/// The ceiling's page touches on anonymous memory: fault-in with THP and with base pages, and
/// the touch of memory already faulted in. The THP run is left out where a PMD does not fit in
/// [`ANON_LEN`] (512 MiB with 64 KiB pages).
fn ceiling_touch_steps<'a>() -> Vec<(Metric, Step<'a>)> {
    let (page, pmd) = (page_size(), mm::pmd_size());
    let mut v: Vec<(Metric, Step<'a>)> = Vec::new();
    let mut runs = Vec::new();
    if pmd <= ANON_LEN {
        runs.push((
            "ceiling_fault_anon_thp".to_string(),
            true,
            format!(
                "touch every page of a fresh 128 MiB anonymous mapping, {}-aligned, MADV_HUGEPAGE (THP faults, each zeroes {})",
                size_name(pmd),
                size_name(pmd)
            ),
        ));
    }
    runs.push((
        format!("ceiling_fault_anon_{}", size_tag(page)),
        false,
        format!(
            "touch every page of a fresh 128 MiB anonymous mapping, MADV_NOHUGEPAGE ({} faults, each zeroes a page)",
            size_name(page)
        ),
    ));
    for (name, thp, what) in runs {
        v.push((
            rate(name, "ceiling", what),
            Box::new(move |_, _| {
                let a = Anon::new(ANON_LEN, pmd, thp)?;
                // SAFETY: A private anonymous mapping that only this code uses.
                unsafe { fault_in(a.addr, a.len) }
            }),
        ));
    }
    v.push((
        rate(
            "ceiling_touch_populated",
            "ceiling",
            "touch every page of a 128 MiB anonymous mapping already faulted in (no faults), 8 times",
        ),
        Box::new(move |_, _| {
            let a = Anon::new(ANON_LEN, pmd, true)?;
            // SAFETY: A private anonymous mapping that only this code uses.
            unsafe {
                touch(a.addr, a.len);
                touch_rate(a.addr, a.len)
            }
        }),
    ));
    v
}

/// pread/pwrite bandwidth of a GPU memory region in each buffer size.
fn rw_steps<'a>(resmem: bool) -> Vec<(Metric, Step<'a>)> {
    let (region, window) = if resmem {
        ("resmem", RESMEM_RW_WINDOW)
    } else {
        ("usemem", USEMEM_RW_WINDOW)
    };
    let mut v: Vec<(Metric, Step<'a>)> = Vec::new();
    for (size, tag) in RW_SIZES {
        for (write, op) in [(false, "pread"), (true, "pwrite")] {
            v.push((
                rate(
                    format!("rw_{region}_{op}_{tag}"),
                    "read/write",
                    format!("{op} of {} MiB of {region} in {tag} pieces", window / MIB),
                ),
                plain(move |s, o| {
                    let o = need(o)?;
                    let m = if resmem {
                        o.resmem.ok_or("this geometry has no resmem")?
                    } else {
                        o.usemem
                    };
                    rw_rate(
                        &o.dev.fd,
                        m.at(0),
                        window,
                        &mut s.buf.slice()[..size],
                        write,
                    )
                }),
            ));
        }
    }
    v
}

/// The ceiling's copies: the same preads/pwrites on a tmpfs file, and memcpy.
fn ceiling_copy_steps<'a>() -> Vec<(Metric, Step<'a>)> {
    let mut v: Vec<(Metric, Step<'a>)> = Vec::new();
    for (size, tag) in RW_SIZES {
        for (write, op) in [(false, "pread"), (true, "pwrite")] {
            v.push((
                rate(
                    format!("ceiling_tmpfs_{op}_{tag}"),
                    "ceiling",
                    format!("{op} of a 64 MiB tmpfs file (page cache) in {tag} pieces"),
                ),
                plain(move |s, _| {
                    rw_rate(
                        &s.tmpfs,
                        0,
                        USEMEM_RW_WINDOW,
                        &mut s.buf.slice()[..size],
                        write,
                    )
                }),
            ));
        }
        for (into_buf, dir) in [(true, "in"), (false, "out")] {
            v.push((
                rate(
                    format!("ceiling_memcpy_{dir}_{tag}"),
                    "ceiling",
                    format!(
                        "memcpy of 64 MiB of anonymous memory {} a {tag} buffer",
                        if into_buf { "into" } else { "from" }
                    ),
                ),
                plain(move |s, _| {
                    Ok(copy_rate(
                        s.window.slice(),
                        &mut s.buf.slice()[..size],
                        into_buf,
                    ))
                }),
            ));
        }
    }
    v
}

/// Latencies of config reads, region info and BAR0 reads.
fn latency_steps<'a>() -> Vec<(Metric, Step<'a>)> {
    let config = |offset: u64| {
        plain(move |_, o| {
            let o = need(o)?;
            let mut w = [0u8; 4];
            per_op_us(FAST_OPS, || {
                let n = o.dev.config_pread(offset, &mut w)?;
                if n != 4 {
                    return Err(format!("config read: {n} bytes").into());
                }
                Ok(())
            })
        })
    };
    vec![
        (
            time(
                "lat_config_read_bar4",
                "latency",
                "us",
                "4-byte pread of the emulated BAR4 register in config space",
            ),
            config(PCI_BASE_ADDRESS_4),
        ),
        (
            time(
                "lat_config_read_vendor",
                "latency",
                "us",
                "4-byte pread of the Vendor/Device ID in config space (vfio-pci-core's virtual config, not emulated by the driver)",
            ),
            config(PCI_VENDOR_ID),
        ),
        (
            time(
                "lat_region_info_usemem",
                "latency",
                "us",
                "VFIO_DEVICE_GET_REGION_INFO of BAR4 with its sparse-mmap capability",
            ),
            plain(|_, o| {
                let o = need(o)?;
                per_op_us(FAST_OPS, || {
                    o.dev.region_info_raw(vfio::region::BAR4, 256)?;
                    Ok(())
                })
            }),
        ),
        (
            time(
                "lat_bar0_read",
                "latency",
                "us",
                "4-byte pread of BAR0 at offset 0 (a round trip to the GPU model)",
            ),
            plain(|_, o| {
                let o = need(o)?;
                let bar0 = o.dev.region_info(vfio::region::BAR0)?.offset;
                let mut w = [0u8; 4];
                per_op_us(BAR0_OPS, || read_exact_at(&o.dev.fd, &mut w, bar0))
            }),
        ),
    ]
}

/// Reset to first access, per readiness delay: `VFIO_DEVICE_RESET` then a pread of usemem.
/// The model becomes ready `delay` ms after the FLR; the FLR itself takes ~100 ms
/// (`pcie_flr()`'s fixed wait), so the least any driver can take is about max(delay, FLR).
/// The overhead is what a driver adds to that: total - max(delay, reset ioctl).
fn reset_runs(b: &mut Bench, scratch: &mut Scratch) {
    if !model::available() {
        let e: Box<dyn Error> =
            "no model state share at /mnt/model: cannot set the readiness delay".into();
        b.error("ready", &*e);
        return;
    }
    let steps: Vec<(Metric, Step<'_>)> = READY_DELAYS_MS
        .iter()
        .map(|&delay| -> (Metric, Step<'_>) {
            (
                time(
                    format!("ready_reset_to_read_{delay}ms"),
                    "readiness",
                    "ms",
                    format!(
                        "VFIO_DEVICE_RESET, then an 8-byte pread of usemem, the model ready {delay} ms after the FLR"
                    ),
                ),
                Box::new(move |_, o| {
                    let o = need(o)?;
                    let at = o.usemem.at(0);
                    let mut w = [0u8; 8];
                    model::set_control(&[("ready_delay_ms", &delay.to_string())])?;
                    // Nothing pending: the previous reset's first access is done.
                    read_exact_at(&o.dev.fd, &mut w, at)?;
                    let mark = model::log_mark()?;
                    let t0 = mm::now();
                    o.dev.reset()?;
                    let t1 = mm::now();
                    read_exact_at(&o.dev.fd, &mut w, at)?;
                    let t2 = mm::now();
                    let p = model::readiness_polls(&model::log_since(mark)?);
                    Ok((
                        ms(t2 - t0),
                        json!({
                            "reset_ioctl_ms": ms(t1 - t0),
                            "overhead_ms": ms(t2 - t0) - ms(t1 - t0).max(delay as f64),
                            "polls": p.not_ready_reads + p.ready_reads,
                        }),
                    ))
                }),
            )
        })
        .collect();
    let out = b.group(Needs::Device, scratch, steps);
    if let Err(e) = model::reset_control() {
        b.error("ready", &e);
    }
    let field = |per_rep: &[Value], k: &str| -> Vec<f64> {
        per_rep
            .iter()
            .filter_map(|v| v.get(k).and_then(Value::as_f64))
            .collect()
    };
    let mut flr = ByDriver::new();
    for ((m, by), delay) in out.into_iter().zip(READY_DELAYS_MS) {
        let overhead = time(
            format!("ready_overhead_{delay}ms"),
            "readiness",
            "ms",
            format!(
                "reset to first read minus max({delay} ms, the reset ioctl's own duration): the wait the driver adds"
            ),
        );
        for (driver, (samples, per_rep)) in by {
            b.emit(&m, &driver, samples, per_rep.clone());
            b.emit(
                &overhead,
                &driver,
                field(&per_rep, "overhead_ms"),
                per_rep.clone(),
            );
            flr.entry(driver)
                .or_default()
                .0
                .extend(field(&per_rep, "reset_ioctl_ms"));
        }
    }
    b.emit_all(
        &time(
            "reset_ioctl",
            "readiness",
            "ms",
            "VFIO_DEVICE_RESET alone (the FLR: pcie_flr() waits 100 ms), all delays",
        ),
        flr,
    );
}

/// Open/close of the device and unbind/bind (probe) through sysfs, the driver loaded and
/// `driver_override` set.
fn closed_steps<'a>() -> Vec<(Metric, Step<'a>)> {
    vec![
        (
            time(
                "lat_open",
                "open/close",
                "ms",
                "open of the device cdev bound to iommufd and attached to an IOAS (open_device, with vfio-pci-core's FLR)",
            ),
            plain(|_, _| {
                let t0 = mm::now();
                let d = Device::open_iommufd(GPU_BDF)?;
                let took = mm::now() - t0;
                drop(d);
                Ok(ms(took))
            }),
        ),
        (
            time(
                "lat_close",
                "open/close",
                "ms",
                "close of the device fd and its iommufd (close_device, with vfio-pci-core's FLR)",
            ),
            plain(|_, _| {
                let d = Device::open_iommufd(GPU_BDF)?;
                let t0 = mm::now();
                drop(d);
                Ok(ms(mm::now() - t0))
            }),
        ),
        (
            time(
                "lat_bind",
                "probe",
                "ms",
                "write of the GPU's address to /sys/bus/pci/drivers_probe after an unbind: probe, with its readiness check and vfio registration",
            ),
            Box::new(|_, _| {
                let t0 = mm::now();
                sys::unbind(GPU_BDF)?;
                let t1 = mm::now();
                sys::write_attr("/sys/bus/pci/drivers_probe", GPU_BDF)?;
                let t2 = mm::now();
                let bound = sys::bound_driver(GPU_BDF);
                if bound.as_deref() != Some(DRIVER_NAME) {
                    return Err(format!("after drivers_probe the GPU is bound to {bound:?}").into());
                }
                Ok((ms(t2 - t1), json!({ "unbind_ms": ms(t1 - t0) })))
            }),
        ),
    ]
}

/// The largest entry a PFN map gets on this kernel: the PUD where there are PUD-level PFN maps
/// (x86_64: 1 GiB), else the PMD (arm64: 2 MiB with 4 KiB pages, 512 MiB with 64 KiB).
fn top_entry() -> usize {
    mm::pud_pfnmap().unwrap_or_else(|_| mm::pmd_size())
}

fn suite_usemem(b: &mut Bench, scratch: &mut Scratch) {
    let (page, pmd, top) = (page_size(), mm::pmd_size(), top_entry());
    // PMD runs start one PMD past the first `top`-aligned address: PMD- but not PUD-aligned
    // where there are PUDs.
    let pmd_off = move |m: &GpuMem| first_aligned_offset(m, top) + pmd as u64;
    let mut faults: Vec<(Metric, Step<'_>)> = Vec::new();
    match mm::pud_pfnmap() {
        Ok(pud) => faults.push((
            rate(
                format!("fault_usemem_{}_aligned", size_tag(pud)),
                "fault-in",
                format!(
                    "touch every {} page of a fresh {} usemem mapping whose VA and PA are {}-aligned (PUD faults)",
                    size_name(page),
                    size_name(HUGE_FAULT_LEN),
                    size_name(pud)
                ),
            ),
            fault_step(
                false,
                move |m| first_aligned_offset(m, pud),
                HUGE_FAULT_LEN,
                pud,
            ),
        )),
        Err(why) => println!("# no PUD fault-in runs: {why}"),
    }
    faults.extend([
        (
            rate(
                format!("fault_usemem_{}_aligned", size_tag(pmd)),
                "fault-in",
                format!(
                    "touch every {} page of a fresh {} usemem mapping whose VA and PA are {}-aligned{} (PMD faults)",
                    size_name(page),
                    size_name(HUGE_FAULT_LEN),
                    size_name(pmd),
                    if top > pmd {
                        format!(", not {}", size_name(top))
                    } else {
                        String::new()
                    }
                ),
            ),
            fault_step(false, pmd_off, HUGE_FAULT_LEN, pmd),
        ),
        (
            rate(
                "fault_usemem_unaligned",
                "fault-in",
                format!(
                    "touch every {} page of a fresh 128 MiB usemem mapping whose PA is only page-aligned (PTE faults)",
                    size_name(page)
                ),
            ),
            fault_step(
                false,
                move |m| pmd_off(m) + page as u64,
                PTE_FAULT_LEN,
                pmd,
            ),
        ),
        (
            rate(
                "touch_usemem_mapped",
                "fault-in",
                format!(
                    "touch every {} page of the {}-aligned usemem mapping again, all faulted in (no faults)",
                    size_name(page),
                    size_name(top)
                ),
            ),
            Box::new(move |_, o| {
                let o = need(o)?;
                let g = first_aligned_offset(&o.usemem, top);
                let map =
                    mm::mmap_shared_aligned(&o.dev.fd, o.usemem.at(g), HUGE_FAULT_LEN, top)?;
                // SAFETY: A shared writable mapping of GPU memory that only this code uses.
                unsafe {
                    touch(map.addr(), map.len());
                    touch_rate(map.addr(), map.len())
                }
            }),
        ),
    ]);
    faults.extend(ceiling_touch_steps());
    b.run(Needs::Device, scratch, faults);
    b.run(Needs::Device, scratch, rw_steps(false));
    b.run(Needs::Device, scratch, ceiling_copy_steps());
    b.run(Needs::Device, scratch, latency_steps());
    reset_runs(b, scratch);
    for (m, by) in b.group(Needs::Closed, scratch, closed_steps()) {
        if m.name == "lat_bind" {
            // Its details hold the unbind times.
            let unbind = by
                .iter()
                .map(|(d, (_, per_rep))| {
                    let t = per_rep
                        .iter()
                        .filter_map(|v| v.get("unbind_ms").and_then(Value::as_f64))
                        .collect();
                    (d.clone(), (t, Vec::new()))
                })
                .collect();
            b.emit_all(
                &time(
                    "lat_unbind",
                    "probe",
                    "ms",
                    "write of the GPU's address to the driver's unbind: remove and vfio unregistration",
                ),
                unbind,
            );
        }
        b.emit_all(&m, by);
    }
}

fn suite_resmem(b: &mut Bench, scratch: &mut Scratch) {
    let mut steps = rw_steps(true);
    let top = top_entry();
    steps.push((
        rate(
            format!("fault_resmem_{}_aligned", size_tag(top)),
            "fault-in",
            format!(
                "touch every {} page of a fresh {} resmem mapping (write-combining) whose VA and PA are {}-aligned ({} faults)",
                size_name(page_size()),
                size_name(HUGE_FAULT_LEN),
                size_name(top),
                if mm::pud_pfnmap().is_ok() { "PUD" } else { "PMD" }
            ),
        ),
        fault_step(
            true,
            move |m| first_aligned_offset(m, top),
            HUGE_FAULT_LEN,
            top,
        ),
    ));
    b.run(Needs::Device, scratch, steps);
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// What the guest is, for the report.
fn env(suite: &str, reps: usize, warmup: usize) -> Env {
    let mut g = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        g.insert(k.into(), v.map_or(Value::Null, Value::String));
    };
    put("kernel", read_trim("/proc/sys/kernel/osrelease"));
    put("kernel_version", read_trim("/proc/sys/kernel/version"));
    put("cmdline", read_trim("/proc/cmdline"));
    put(
        "clocksource",
        read_trim("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
    );
    put("thp", read_trim(THP_ENABLED));
    put(
        "module_srcversion",
        read_trim("/sys/module/nvgrace_gpu_vfio_pci/srcversion"),
    );
    let cpuinfo = read_trim("/proc/cpuinfo").unwrap_or_default();
    put(
        "cpus",
        Some(
            cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count()
                .to_string(),
        ),
    );
    put(
        "cpu_model",
        cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string()),
    );
    put(
        "mem_total",
        read_trim("/proc/meminfo").and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .map(|l| l["MemTotal:".len()..].trim().to_string())
        }),
    );
    put(
        "ptdump",
        Some(std::path::Path::new(ptdump::CURRENT).exists().to_string()),
    );
    Env {
        suite: suite.into(),
        driver: nvgrace_guest_tests::rig_driver(),
        gpu: nvgrace_guest_tests::rig_gpu(),
        mem_size: std::env::var("RIG_MEM_SIZE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        reps,
        warmup,
        guest: g,
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: nvgrace-bench [--reps N] [--warmup N] [--switch DRIVER,DRIVER [--passes N]] usemem|resmem..."
    );
    std::process::exit(2);
}

fn main() {
    let mut reps = 5;
    let mut warmup = 1;
    let mut passes = None;
    let mut switch = None;
    let mut suites = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--reps" => reps = value().parse().unwrap_or_else(|_| usage()),
            "--warmup" => warmup = value().parse().unwrap_or_else(|_| usage()),
            "--passes" => passes = Some(value().parse().unwrap_or_else(|_| usage())),
            "--switch" => {
                switch = Some(
                    value()
                        .split(',')
                        .map(str::to_string)
                        .collect::<Vec<String>>(),
                )
            }
            "usemem" | "resmem" => suites.push(a),
            _ => usage(),
        }
    }
    if suites.is_empty() || reps == 0 || passes == Some(0) {
        usage();
    }
    let drivers = match &switch {
        Some(d) if !d.is_empty() && d.iter().all(|x| x == "rust" || x == "upstream") => d.clone(),
        Some(_) => usage(),
        None => vec![nvgrace_guest_tests::rig_driver()],
    };
    // Interleaved, one repetition per pass by default; one pass when there is nothing to
    // interleave.
    let passes: usize = if switch.is_some() {
        passes.unwrap_or(reps).min(reps)
    } else {
        1
    };

    // The first clock read maps the vDSO's data page with a fault: take it before any fault
    // count.
    let _ = (mm::now(), mm::minor_faults());
    let thp_default = read_trim(THP_ENABLED);
    if let Err(e) = sys::write_attr(THP_ENABLED, "madvise") {
        eprintln!("nvgrace-bench: cannot set THP to madvise: {e}");
    }
    let mut scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nvgrace-bench: buffers: {e}");
            std::process::exit(1);
        }
    };
    let mut failed = false;
    for suite in suites {
        let mut e = env(&suite, reps, warmup);
        e.guest.insert(
            "thp_boot_default".into(),
            thp_default.clone().map_or(Value::Null, Value::String),
        );
        e.guest.insert("passes".into(), json!(passes));
        e.guest.insert("drivers".into(), json!(drivers));
        println!(
            "{ENV_TAG}{}",
            serde_json::to_string(&e).expect("the environment serialises")
        );
        let mut b = Bench {
            suite: suite.clone(),
            reps,
            warmup,
            passes,
            drivers: drivers.clone(),
            switch: switch.is_some(),
            bound: None,
            open: None,
            errors: 0,
        };
        match suite.as_str() {
            "usemem" => suite_usemem(&mut b, &mut scratch),
            _ => suite_resmem(&mut b, &mut scratch),
        }
        b.open = None;
        match sys::splats() {
            Ok(s) if !s.is_empty() => b.error(
                "kernel_log",
                &*Box::<dyn Error>::from(format!("kernel splat:\n{}", s.join("\n"))),
            ),
            Err(e) => b.error("kernel_log", &e),
            Ok(_) => {}
        }
        failed |= b.errors > 0;
    }
    std::process::exit(i32::from(failed));
}
