// SPDX-License-Identifier: GPL-2.0

//! What one repetition of each metric does: touches, copies, calls, and their step builders.

use std::error::Error;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use nvgrace_bench::flr;
use nvgrace_bench::ptdump;
use nvgrace_guest_tests::gpumem::GpuMem;
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
use serde_json::Value;


use crate::runner::*;


pub(crate) const GIB: f64 = (1u64 << 30) as f64;
pub(crate) const MIB: usize = 1 << 20;

/// Bytes touched by the unaligned (4 KiB-fault) fault-in runs, device and anonymous: one fault
/// per page makes them the slow ones, so they cover less than the huge-page runs (GiB/s
/// normalises the size away).
pub(crate) const PTE_FAULT_LEN: usize = 128 * MIB;
/// Bytes of anonymous memory the ceiling's page touches cover: a quarter of the guest kernel's
/// 512 MiB (`mem=512M`, scripts/vm-run).
pub(crate) const ANON_LEN: usize = 128 * MIB;
/// Bytes each read/write bandwidth repetition moves, usemem and the ceiling's copies.
pub(crate) const USEMEM_RW_WINDOW: usize = 64 * MIB;
/// Bytes each resmem read/write repetition moves: resmem goes through vfio-pci-core's MMIO copy
/// (8 bytes per access), far slower than usemem's plain copy.
pub(crate) const RESMEM_RW_WINDOW: usize = 16 * MIB;
/// The buffer sizes of the read/write runs (the 4 KiB, 64 KiB and 1 MiB).
pub(crate) const RW_SIZES: [(usize, &str); 3] = [(4 << 10, "4k"), (64 << 10, "64k"), (1 << 20, "1m")];
/// Calls per latency sample for accesses the kernel answers alone (config space, region info):
/// tens of ms per sample, so that one preemption of the guest by a busy host moves it little.
pub(crate) const FAST_OPS: usize = 20_000;
/// Calls per latency sample for BAR0 reads, each a round trip to the GPU model (vfio-user).
pub(crate) const BAR0_OPS: usize = 1_000;
/// Bytes touched per sample of the touch-only runs, in passes over the mapping: the touch of an
/// already faulted 128 MiB takes ~2 ms under TCG, too short to measure on a busy host.
pub(crate) const TOUCH_BYTES: usize = 1 << 30;
/// Bytes mapped by the huge-page fault-in runs.
pub(crate) const HUGE_FAULT_LEN: usize = 1 << 30;
/// The model's readiness delays after an FLR, ms (the 0, 150 and 500 ms).
pub(crate) const READY_DELAYS_MS: [u64; 3] = [0, 150, 500];
/// The guest's THP mode. It boots as `never`: the kernel turns THP off on machines with less than
/// 512 MiB of RAM (mm/huge_memory.c `hugepage_init()`), and the guest kernel has `mem=512M`
/// minus its reservations. The bench sets `madvise` so that the ceiling's `MADV_HUGEPAGE`
/// mapping gets THPs. The drivers' PUD and PMD faults do not
/// depend on it: "Huge PFN mappings are uncompactable so the policy doesn't apply"
/// (mm/huge_memory.c `vma_file_bypass_thp_tuneables()`).
pub(crate) const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
/// Config-space offset of the BAR4 register, which both drivers emulate (usemem's BAR).
pub(crate) const PCI_BASE_ADDRESS_4: u64 = hw::USEMEM_BAR_OFFSET;
/// Config-space offset of the Vendor ID, which vfio-pci-core answers from its virtual config.
pub(crate) const PCI_VENDOR_ID: u64 = 0x00;


pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Stores one 64-bit word at the start of every page of `[addr, addr + len)`, in order.
///
/// # Safety
///
/// `[addr, addr + len)` must be a writable mapping that nothing else uses as Rust data.
pub(crate) unsafe fn touch(addr: usize, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: Inside the mapping, by the function's requirements; 8-byte aligned.
        unsafe { std::ptr::write_volatile((addr + off) as *mut u64, off as u64) };
        off += page_size();
    }
}

/// The page-table entries mapping `[addr, addr + len)` now, or `None` without the dump.
pub(crate) fn entries(addr: usize, len: usize) -> Option<ptdump::Entries> {
    let dump = std::fs::read_to_string(ptdump::CURRENT).ok()?;
    Some(ptdump::count(&dump, addr as u64, (addr + len) as u64))
}

/// Touches every page of the fresh mapping `[addr, addr + len)`: GiB/s, and the faults taken
/// (`ru_minflt`, one per handled fault whatever its order) with the entries they installed.
///
/// # Safety
///
/// As for [`touch`].
pub(crate) unsafe fn fault_in(addr: usize, len: usize) -> R<(f64, Value)> {
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
pub(crate) unsafe fn touch_rate(addr: usize, len: usize) -> R<(f64, Value)> {
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
pub(crate) struct Anon {
    pub(crate) addr: usize,
    pub(crate) len: usize,
}

impl Anon {
    /// `len` bytes at an `align`-aligned address, with THP asked for (`MADV_HUGEPAGE`) or
    /// refused (`MADV_NOHUGEPAGE`).
    pub(crate) fn new(len: usize, align: usize, thp: bool) -> R<Anon> {
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

    pub(crate) fn slice(&mut self) -> &mut [u8] {
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
pub(crate) fn rw_rate(fd: &File, base: u64, window: usize, buf: &mut [u8], write: bool) -> R<f64> {
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
pub(crate) fn copy_rate(window: &mut [u8], buf: &mut [u8], into_buf: bool) -> f64 {
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
pub(crate) fn per_op_us(n: usize, mut op: impl FnMut() -> R<()>) -> R<f64> {
    let t0 = mm::now();
    for _ in 0..n {
        op()?;
    }
    Ok(secs(mm::now() - t0) * 1e6 / n as f64)
}

pub(crate) fn read_exact_at(fd: &File, buf: &mut [u8], at: u64) -> R<()> {
    let n = fd.read_at(buf, at)?;
    if n != buf.len() {
        return Err(format!("pread at {at:#x}: {n} of {} bytes", buf.len()).into());
    }
    Ok(())
}

/// A fault-in run: a fresh shared mapping of `len` bytes at offset `off` of the region (usemem
/// or resmem), its first address aligned to `align`, every page touched.
pub(crate) fn fault_step<'a>(
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
pub(crate) fn first_aligned_offset(m: &GpuMem, align: usize) -> u64 {
    m.phys.next_multiple_of(align as u64) - m.phys
}

/// A size as the metric names spell it: `4k`, `2m`, `512m`, `1g`.
pub(crate) fn size_tag(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{}g", b >> 30),
        b if b >= 1 << 20 => format!("{}m", b >> 20),
        b => format!("{}k", b >> 10),
    }
}

/// A size for the metric descriptions: `4 KiB`, `2 MiB`, `1 GiB`.
pub(crate) fn size_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b >> 10),
    }
}

/// A step that only gives a sample.
pub(crate) fn plain<'a>(mut f: impl FnMut(&mut Scratch, Option<&Open>) -> R<f64> + 'a) -> Step<'a> {
    Box::new(move |s, o| Ok((f(s, o)?, Value::Null)))
}

/// The ceiling's page touches on anonymous memory: fault-in with THP and with base pages, and
/// the touch of memory already faulted in. The THP run is left out where a PMD does not fit in
/// [`ANON_LEN`] (512 MiB with 64 KiB pages).
pub(crate) fn ceiling_touch_steps<'a>() -> Vec<(Metric, Step<'a>)> {
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
pub(crate) fn rw_steps<'a>(resmem: bool) -> Vec<(Metric, Step<'a>)> {
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
pub(crate) fn ceiling_copy_steps<'a>() -> Vec<(Metric, Step<'a>)> {
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
pub(crate) fn latency_steps<'a>() -> Vec<(Metric, Step<'a>)> {
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
/// The overhead is what a driver adds to that, counted two ways: from the ioctl's start,
/// total - max(delay, reset ioctl), and from readiness itself, first access - max(FLR + delay,
/// end of the ioctl) (`nvgrace_bench::flr`).
pub(crate) fn reset_runs(b: &mut Bench, scratch: &mut Scratch) {
    reset_runs_at(b, scratch, &READY_DELAYS_MS, "ready", "readiness");
}

/// The readiness delays of the sweep (`readiness` suite), ms: 0 to 3 s, every 50 ms from 0.8 to
/// 1.3 s, where upstream's one-second poll lands just before or after readiness.
pub(crate) fn sweep_delays_ms() -> Vec<u64> {
    let mut v: Vec<u64> = (0..800).step_by(200).collect();
    v.extend((800..=1300).step_by(50));
    v.extend([1500, 1750, 2000, 2500, 3000]);
    v
}

/// [`reset_runs`] at `delays` (ms), the metrics named `<prefix>_reset_to_read_<D>ms`,
/// `<prefix>_overhead_<D>ms` (from the ioctl's start), `<prefix>_overhead_flr_<D>ms` (from the
/// FLR), `<prefix>_reset_ioctl` and `<prefix>_flr_after_ioctl` (`reset_ioctl` alone for the
/// prefix `ready`), in `group`. The model must log its times (`scripts/vm-run
/// --model-log-times`): without them every step fails.
pub(crate) fn reset_runs_at(
    b: &mut Bench,
    scratch: &mut Scratch,
    delays: &[u64],
    prefix: &'static str,
    group: &'static str,
) {
    if !model::available() {
        let e: Box<dyn Error> =
            "no model state share at /mnt/model: cannot set the readiness delay".into();
        b.error(prefix, &*e);
        return;
    }
    let steps: Vec<(Metric, Step<'_>)> = delays
        .iter()
        .map(|&delay| -> (Metric, Step<'_>) {
            (
                time(
                    format!("{prefix}_reset_to_read_{delay}ms"),
                    group,
                    "ms",
                    format!(
                        "VFIO_DEVICE_RESET, then an 8-byte pread of usemem, the model ready {delay} ms after the FLR"
                    ),
                ),
                Box::new(move |_, o| {
                    let o = need(o)?;
                    let at = o.usemem.at(0);
                    let bar0 = o.dev.region_info(vfio::region::BAR0)?.offset;
                    let (mut w, mut mark_word) = ([0u8; 8], [0u8; 4]);
                    model::set_control(&[("ready_delay_ms", &delay.to_string())])?;
                    // Nothing pending: the previous reset's first access is done.
                    read_exact_at(&o.dev.fd, &mut w, at)?;
                    let mark = model::log_mark()?;
                    // The start mark: the model logs this read with its own time.
                    let ts0 = mm::now();
                    read_exact_at(&o.dev.fd, &mut mark_word, bar0 + flr::MARK_OFFSET)?;
                    let t0 = mm::now();
                    o.dev.reset()?;
                    let t1 = mm::now();
                    read_exact_at(&o.dev.fd, &mut w, at)?;
                    let t2 = mm::now();
                    let log = model::timed_log_since(mark)?;
                    let f = flr::flr_figures(
                        &flr::ResetTimes {
                            mark: ts0,
                            ioctl_start: t0,
                            ioctl_end: t1,
                            first_access: t2,
                        },
                        flr::flr_after_mark(&log)?,
                        delay,
                    );
                    let lines: Vec<String> = log.into_iter().map(|(l, _)| l).collect();
                    // The drivers poll the C2C status in BAR0, or on the CXL model its DVSEC.
                    let polls = if model::readiness_via_bar0() {
                        let p = model::readiness_polls(&lines);
                        p.not_ready_reads + p.ready_reads
                    } else {
                        model::cxl_status_reads(&lines).len()
                    };
                    Ok((
                        ms(t2 - t0),
                        json!({
                            "reset_ioctl_ms": ms(t1 - t0),
                            "overhead_ms": ms(t2 - t0) - ms(t1 - t0).max(delay as f64),
                            "flr_after_ioctl_ms": f.flr_after_ioctl_ms,
                            // The mark's round trip: more than the FLR is placed early by.
                            "mark_read_ms": ms(t0 - ts0),
                            "overhead_flr_ms": f.overhead_ms,
                            "polls": polls,
                        }),
                    ))
                }),
            )
        })
        .collect();
    let out = b.group(Needs::Device, scratch, steps);
    if let Err(e) = model::reset_control() {
        b.error(prefix, &e);
    }
    let field = |per_rep: &[Value], k: &str| -> Vec<f64> {
        per_rep
            .iter()
            .filter_map(|v| v.get(k).and_then(Value::as_f64))
            .collect()
    };
    let (mut ioctl, mut flr_at) = (ByDriver::new(), ByDriver::new());
    for ((m, by), &delay) in out.into_iter().zip(delays) {
        let overhead = time(
            format!("{prefix}_overhead_{delay}ms"),
            group,
            "ms",
            format!(
                "reset to first read minus max({delay} ms, the reset ioctl's own duration): the wait the driver adds, counted from the ioctl's start"
            ),
        );
        let overhead_flr = time(
            format!("{prefix}_overhead_flr_{delay}ms"),
            group,
            "ms",
            format!(
                "end of the first read minus max(FLR + {delay} ms, end of the reset ioctl): the wait the driver adds to readiness (the FLR placed from the model's log, early by one BAR0 read's travel: never understated)"
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
            b.emit(
                &overhead_flr,
                &driver,
                field(&per_rep, "overhead_flr_ms"),
                per_rep.clone(),
            );
            ioctl
                .entry(driver.clone())
                .or_default()
                .0
                .extend(field(&per_rep, "reset_ioctl_ms"));
            flr_at
                .entry(driver)
                .or_default()
                .0
                .extend(field(&per_rep, "flr_after_ioctl_ms"));
        }
    }
    b.emit_all(
        &time(
            if prefix == "ready" {
                "reset_ioctl".to_string()
            } else {
                format!("{prefix}_reset_ioctl")
            },
            group,
            "ms",
            "VFIO_DEVICE_RESET alone (the FLR: pcie_flr() waits 100 ms), all delays",
        ),
        ioctl,
    );
    b.emit_all(
        &time(
            format!("{prefix}_flr_after_ioctl"),
            group,
            "ms",
            "from the start of VFIO_DEVICE_RESET to the FLR (vfio-pci-core saving the config state first; the same for both drivers), all delays",
        ),
        flr_at,
    );
}

/// Open/close of the device and unbind/bind (probe) through sysfs, the driver loaded and
/// `driver_override` set.
pub(crate) fn closed_steps<'a>() -> Vec<(Metric, Step<'a>)> {
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

