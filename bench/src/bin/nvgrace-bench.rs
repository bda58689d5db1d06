// SPDX-License-Identifier: GPL-2.0

//! The guest side of `make bench`: measures one driver build in the rig's guest and prints one
//! `@@bench` JSON line per metric (every repetition's sample) on the console, for `bench-report`
//! on the host to set against the other build. Not a test: it asserts nothing about speed, and
//! it exits non-zero only when a metric could not be measured at all.
//!
//! ```text
//! nvgrace-bench [--reps N] [--warmup N] SUITE...
//! ```
//!
//! Suites, each meant for one boot of `scripts/vm-run` with the GPU bound to a driver build:
//!
//! - `usemem` (`--gpu gb200 --mem-size 0x80000000`: 2 GiB of usemem, which holds a 1 GiB-aligned
//!   GiB): fault-in of usemem mappings 1 GiB-aligned, 2 MiB-aligned and unaligned; pread/pwrite
//!   bandwidth of usemem; latency of an emulated BAR config read, a plain config read, a region
//!   info query and a BAR0 read; reset-to-first-access latency at readiness delays of 0, 150 and
//!   500 ms; open/close; unbind/bind (probe). And the ceiling: the same page touches on anonymous
//!   memory, the same copies on a tmpfs file and as memcpy.
//! - `resmem` (`--gpu gh200`, the rig's default geometry: 1 GiB of resmem at a 1 GiB-aligned
//!   address): pread/pwrite bandwidth of resmem and fault-in of a 1 GiB-aligned resmem mapping.
//!
//! No rig geometry holds both a 1 GiB-aligned GiB of usemem and a resmem region: with the
//! carve-out of a GH200 (1 GiB of resmem after usemem), usemem would have to reach 2 GiB past
//! the aperture's start at 512 MiB, and the aperture must stay in the 2 GiB of guest RAM above
//! the kernel's 512 MiB, below 4 GiB (scripts/vm-run, scripts/mkssdt).

use std::error::Error;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
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
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::PAGE;
use nvgrace_guest_tests::mm::SZ_1G;
use nvgrace_guest_tests::mm::SZ_2M;
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
/// Calls per latency sample for accesses the kernel answers alone (config space, region info).
const FAST_OPS: usize = 2000;
/// Calls per latency sample for BAR0 reads, each a round trip to the GPU model (vfio-user).
const BAR0_OPS: usize = 200;
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
const PCI_BASE_ADDRESS_4: u64 = 0x20;
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

/// The run: its settings and whether anything failed.
struct Bench {
    suite: String,
    reps: usize,
    warmup: usize,
    errors: usize,
}

impl Bench {
    /// Runs `f` `warmup` times unmeasured, then `reps` times; the results of the latter, or
    /// `None` after reporting the first error (as a failure of `metric`).
    fn run<T>(&mut self, metric: &str, mut f: impl FnMut() -> R<T>) -> Option<Vec<T>> {
        for _ in 0..self.warmup {
            if let Err(e) = f() {
                self.error(metric, &*e);
                return None;
            }
        }
        let mut out = Vec::with_capacity(self.reps);
        for _ in 0..self.reps {
            match f() {
                Ok(v) => out.push(v),
                Err(e) => {
                    self.error(metric, &*e);
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Measures a metric whose repetitions each give one sample.
    fn measure(&mut self, m: Metric, mut f: impl FnMut() -> R<f64>) {
        if let Some(samples) = self.run(&m.name, &mut f) {
            self.emit(m, samples, Vec::new());
        }
    }

    /// Measures a metric whose repetitions each give a sample and details.
    fn measure_with(&mut self, m: Metric, mut f: impl FnMut() -> R<(f64, Value)>) {
        if let Some(out) = self.run(&m.name, &mut f) {
            let (samples, per_rep) = out.into_iter().unzip();
            self.emit(m, samples, per_rep);
        }
    }

    fn emit(&self, m: Metric, samples: Vec<f64>, per_rep: Vec<Value>) {
        let s = nvgrace_bench::summary(&samples);
        if let Some(s) = s {
            println!(
                "# {:<34} {:>10.4} {:>10.4} {:>10.4} {}",
                m.name, s.min, s.median, s.max, m.unit
            );
        }
        let r = Record {
            suite: self.suite.clone(),
            metric: m.name,
            group: m.group.into(),
            unit: m.unit.into(),
            better: m.better,
            what: m.what,
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

/// Stores one 64-bit word at the start of every 4 KiB page of `[addr, addr + len)`, in order.
///
/// # Safety
///
/// `[addr, addr + len)` must be a writable mapping that nothing else uses as Rust data.
unsafe fn touch(addr: usize, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: Inside the mapping, by the function's requirements; 8-byte aligned.
        unsafe { std::ptr::write_volatile((addr + off) as *mut u64, off as u64) };
        off += PAGE;
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

/// Touches every page of an already faulted mapping: GiB/s (no faults: the touch alone).
///
/// # Safety
///
/// As for [`touch`].
unsafe fn touch_rate(addr: usize, len: usize) -> R<(f64, Value)> {
    let f0 = mm::minor_faults();
    let t0 = mm::now();
    // SAFETY: By the function's requirements.
    unsafe { touch(addr, len) };
    let took = mm::now() - t0;
    Ok((
        len as f64 / GIB / secs(took),
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

/// The fault-in runs on `m`: for each `(name, offset, length, VA alignment, what)`, a fresh
/// shared mapping of `length` bytes at `offset` in the region whose first address is aligned
/// to the given alignment, every page touched.
fn fault_runs(b: &mut Bench, dev: &Device, m: &GpuMem, runs: &[(&str, u64, usize, usize, &str)]) {
    for &(name, off, len, align, what) in runs {
        if off + len as u64 > m.memlength {
            b.error(
                name,
                &*Box::<dyn Error>::from(format!(
                    "{} has {:#x} bytes, the run needs {:#x} at {off:#x}",
                    m.name(),
                    m.memlength,
                    len
                )),
            );
            continue;
        }
        b.measure_with(rate(name, "fault-in", what), || {
            let map = mm::mmap_shared_aligned(&dev.fd, m.at(off), len, align)?;
            // SAFETY: A shared writable mapping of GPU memory that only this loop uses.
            unsafe { fault_in(map.addr(), map.len()) }
        });
    }
}

/// The first offset in `m` at a 1 GiB-aligned physical address.
fn first_1g_offset(m: &GpuMem) -> u64 {
    m.phys.next_multiple_of(SZ_1G as u64) - m.phys
}

fn suite_usemem(b: &mut Bench) -> R<()> {
    let dev = Device::open_iommufd(GPU_BDF)?;
    let (usemem, _) = dev.gpu_mem()?;
    let g = first_1g_offset(&usemem);
    let pmd_off = g + SZ_2M as u64;
    let pte_off = pmd_off + PAGE as u64;
    fault_runs(
        b,
        &dev,
        &usemem,
        &[
            (
                "fault_usemem_1g_aligned",
                g,
                SZ_1G,
                SZ_1G,
                "touch every 4 KiB page of a fresh 1 GiB usemem mapping whose VA and PA are 1 GiB-aligned (PUD faults)",
            ),
            (
                "fault_usemem_2m_aligned",
                pmd_off,
                SZ_1G,
                SZ_2M,
                "touch every 4 KiB page of a fresh 1 GiB usemem mapping whose VA and PA are 2 MiB-aligned, not 1 GiB (PMD faults)",
            ),
            (
                "fault_usemem_unaligned",
                pte_off,
                PTE_FAULT_LEN,
                SZ_2M,
                "touch every 4 KiB page of a fresh 128 MiB usemem mapping whose PA is only page-aligned (PTE faults)",
            ),
        ],
    );
    if g + SZ_1G as u64 <= usemem.memlength {
        b.measure_with(
            rate(
                "touch_usemem_mapped",
                "fault-in",
                "touch every 4 KiB page of the 1 GiB-aligned usemem mapping again, all faulted in (no faults)",
            ),
            || {
                let map = mm::mmap_shared_aligned(&dev.fd, usemem.at(g), SZ_1G, SZ_1G)?;
                // SAFETY: A shared writable mapping of GPU memory that only this code uses.
                unsafe {
                    touch(map.addr(), map.len());
                    touch_rate(map.addr(), map.len())
                }
            },
        );
    }

    // The ceiling: the same touches on anonymous memory.
    for (name, thp, what) in [
        (
            "ceiling_fault_anon_thp",
            true,
            "touch every page of a fresh 128 MiB anonymous mapping, 2 MiB-aligned, MADV_HUGEPAGE (THP faults, each zeroes 2 MiB)",
        ),
        (
            "ceiling_fault_anon_4k",
            false,
            "touch every page of a fresh 128 MiB anonymous mapping, MADV_NOHUGEPAGE (4 KiB faults, each zeroes a page)",
        ),
    ] {
        b.measure_with(rate(name, "ceiling", what), || {
            let a = Anon::new(ANON_LEN, SZ_2M, thp)?;
            // SAFETY: A private anonymous mapping that only this code uses.
            unsafe { fault_in(a.addr, a.len) }
        });
    }
    b.measure_with(
        rate(
            "ceiling_touch_populated",
            "ceiling",
            "touch every page of a 128 MiB anonymous mapping already faulted in (no faults)",
        ),
        || {
            let a = Anon::new(ANON_LEN, SZ_2M, true)?;
            // SAFETY: A private anonymous mapping that only this code uses.
            unsafe {
                touch(a.addr, a.len);
                touch_rate(a.addr, a.len)
            }
        },
    );

    // Read/write bandwidth of usemem, and the same copies on a tmpfs file and in memory.
    let mut bufmap = Anon::new(MIB, PAGE, false)?;
    let buf = bufmap.slice();
    buf.fill(0x5a);
    for (size, tag) in RW_SIZES {
        for (write, op) in [(false, "pread"), (true, "pwrite")] {
            b.measure(
                rate(
                    format!("rw_usemem_{op}_{tag}"),
                    "read/write",
                    format!("{op} of 64 MiB of usemem in {tag} pieces"),
                ),
                || {
                    rw_rate(
                        &dev.fd,
                        usemem.at(0),
                        USEMEM_RW_WINDOW,
                        &mut buf[..size],
                        write,
                    )
                },
            );
        }
    }
    let tmpfs_path = "/tmp/nvgrace-bench.ceiling";
    let tmpfs = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmpfs_path)?;
    let _ = std::fs::remove_file(tmpfs_path);
    for pos in (0..USEMEM_RW_WINDOW).step_by(MIB) {
        tmpfs.write_all_at(buf, pos as u64)?;
    }
    let mut window = Anon::new(USEMEM_RW_WINDOW, SZ_2M, true)?;
    window.slice().fill(0xa5);
    for (size, tag) in RW_SIZES {
        for (write, op) in [(false, "pread"), (true, "pwrite")] {
            b.measure(
                rate(
                    format!("ceiling_tmpfs_{op}_{tag}"),
                    "ceiling",
                    format!("{op} of a 64 MiB tmpfs file (page cache) in {tag} pieces"),
                ),
                || rw_rate(&tmpfs, 0, USEMEM_RW_WINDOW, &mut buf[..size], write),
            );
        }
        for (into_buf, dir) in [(true, "in"), (false, "out")] {
            b.measure(
                rate(
                    format!("ceiling_memcpy_{dir}_{tag}"),
                    "ceiling",
                    format!(
                        "memcpy of 64 MiB of anonymous memory {} a {tag} buffer",
                        if into_buf { "into" } else { "from" }
                    ),
                ),
                || Ok(copy_rate(window.slice(), &mut buf[..size], into_buf)),
            );
        }
    }
    drop(tmpfs);
    drop(window);

    // Latencies.
    let mut w4 = [0u8; 4];
    b.measure(
        time(
            "lat_config_read_bar4",
            "latency",
            "us",
            "4-byte pread of the emulated BAR4 register in config space",
        ),
        || {
            per_op_us(FAST_OPS, || {
                let n = dev.config_pread(PCI_BASE_ADDRESS_4, &mut w4)?;
                if n != 4 {
                    return Err(format!("config read: {n} bytes").into());
                }
                Ok(())
            })
        },
    );
    b.measure(
        time(
            "lat_config_read_vendor",
            "latency",
            "us",
            "4-byte pread of the Vendor/Device ID in config space (vfio-pci-core's virtual config, not emulated by the driver)",
        ),
        || {
            per_op_us(FAST_OPS, || {
                let n = dev.config_pread(PCI_VENDOR_ID, &mut w4)?;
                if n != 4 {
                    return Err(format!("config read: {n} bytes").into());
                }
                Ok(())
            })
        },
    );
    b.measure(
        time(
            "lat_region_info_usemem",
            "latency",
            "us",
            "VFIO_DEVICE_GET_REGION_INFO of BAR4 with its sparse-mmap capability",
        ),
        || {
            per_op_us(FAST_OPS, || {
                dev.region_info_raw(vfio::region::BAR4, 256)?;
                Ok(())
            })
        },
    );
    let bar0 = dev.region_info(vfio::region::BAR0)?.offset;
    b.measure(
        time(
            "lat_bar0_read",
            "latency",
            "us",
            "4-byte pread of BAR0 at offset 0 (a round trip to the GPU model)",
        ),
        || per_op_us(BAR0_OPS, || read_exact_at(&dev.fd, &mut w4, bar0)),
    );

    // Reset to first access, per readiness delay.
    if model::available() {
        reset_runs(b, &dev, &usemem);
    } else {
        b.error(
            "ready",
            &*Box::<dyn Error>::from(
                "no model state share at /mnt/model: cannot set the readiness delay",
            ),
        );
    }
    drop(dev);

    b.measure(
        time(
            "lat_open",
            "open/close",
            "ms",
            "open of the device cdev bound to iommufd and attached to an IOAS (open_device, with vfio-pci-core's FLR)",
        ),
        || {
            let t0 = mm::now();
            let d = Device::open_iommufd(GPU_BDF)?;
            let took = mm::now() - t0;
            drop(d);
            Ok(ms(took))
        },
    );
    b.measure(
        time(
            "lat_close",
            "open/close",
            "ms",
            "close of the device fd and its iommufd (close_device, with vfio-pci-core's FLR)",
        ),
        || {
            let d = Device::open_iommufd(GPU_BDF)?;
            let t0 = mm::now();
            drop(d);
            Ok(ms(mm::now() - t0))
        },
    );
    bind_runs(b);
    Ok(())
}

/// Reset to first access: per readiness delay, `VFIO_DEVICE_RESET` then a pread of usemem.
/// The model becomes ready `delay` ms after the FLR; the FLR itself takes ~100 ms
/// (`pcie_flr()`'s fixed wait), so the least any driver can take is about
/// max(delay, FLR). The overhead is what a driver adds to that: total - max(delay, reset ioctl).
fn reset_runs(b: &mut Bench, dev: &Device, usemem: &GpuMem) {
    let mut flr_all = Vec::new();
    let mut w8 = [0u8; 8];
    let at = usemem.at(0);
    for delay in READY_DELAYS_MS {
        if let Err(e) = model::set_control(&[("ready_delay_ms", &delay.to_string())]) {
            b.error(&format!("ready_overhead_{delay}ms"), &e);
            continue;
        }
        let name = format!("ready_reset_to_read_{delay}ms");
        let out = b.run(&name, || {
            // Nothing pending: the previous reset's first access is done.
            read_exact_at(&dev.fd, &mut w8, at)?;
            let mark = model::log_mark()?;
            let t0 = mm::now();
            dev.reset()?;
            let t1 = mm::now();
            read_exact_at(&dev.fd, &mut w8, at)?;
            let t2 = mm::now();
            let p = model::readiness_polls(&model::log_since(mark)?);
            Ok((ms(t2 - t0), ms(t1 - t0), p.not_ready_reads + p.ready_reads))
        });
        let Some(out) = out else { continue };
        let per_rep: Vec<Value> = out
            .iter()
            .map(|&(_, flr, polls)| json!({ "reset_ioctl_ms": flr, "polls": polls }))
            .collect();
        b.emit(
            time(
                name,
                "readiness",
                "ms",
                format!(
                    "VFIO_DEVICE_RESET, then a 8-byte pread of usemem, the model ready {delay} ms after the FLR"
                ),
            ),
            out.iter().map(|o| o.0).collect(),
            per_rep.clone(),
        );
        b.emit(
            time(
                format!("ready_overhead_{delay}ms"),
                "readiness",
                "ms",
                format!(
                    "reset to first read minus max({delay} ms, the reset ioctl's own duration): the wait the driver adds"
                ),
            ),
            out.iter()
                .map(|&(total, flr, _)| total - flr.max(delay as f64))
                .collect(),
            per_rep,
        );
        flr_all.extend(out.iter().map(|o| o.1));
    }
    if let Err(e) = model::reset_control() {
        b.error("ready", &e);
    }
    if !flr_all.is_empty() {
        b.emit(
            time(
                "reset_ioctl",
                "readiness",
                "ms",
                "VFIO_DEVICE_RESET alone (the FLR: pcie_flr() waits 100 ms), all delays",
            ),
            flr_all,
            Vec::new(),
        );
    }
}

/// Unbind and bind (probe) through sysfs, the driver loaded and `driver_override` set.
fn bind_runs(b: &mut Bench) {
    let out = b.run("lat_bind", || {
        let t0 = mm::now();
        sys::unbind(GPU_BDF)?;
        let t1 = mm::now();
        sys::write_attr("/sys/bus/pci/drivers_probe", GPU_BDF)?;
        let t2 = mm::now();
        let bound = sys::bound_driver(GPU_BDF);
        if bound.as_deref() != Some(DRIVER_NAME) {
            return Err(format!("after drivers_probe the GPU is bound to {bound:?}").into());
        }
        Ok((ms(t1 - t0), ms(t2 - t1)))
    });
    let Some(out) = out else { return };
    b.emit(
        time(
            "lat_bind",
            "probe",
            "ms",
            "write of the GPU's address to /sys/bus/pci/drivers_probe: probe, with its readiness check and vfio registration",
        ),
        out.iter().map(|o| o.1).collect(),
        Vec::new(),
    );
    b.emit(
        time(
            "lat_unbind",
            "probe",
            "ms",
            "write of the GPU's address to the driver's unbind: remove and vfio unregistration",
        ),
        out.iter().map(|o| o.0).collect(),
        Vec::new(),
    );
}

fn suite_resmem(b: &mut Bench) -> R<()> {
    let dev = Device::open_iommufd(GPU_BDF)?;
    let (_, resmem) = dev.gpu_mem()?;
    let resmem = resmem.ok_or("this geometry has no resmem (run the resmem suite on a gh200)")?;
    let mut bufmap = Anon::new(MIB, PAGE, false)?;
    let buf = bufmap.slice();
    buf.fill(0x3c);
    for (size, tag) in RW_SIZES {
        for (write, op) in [(false, "pread"), (true, "pwrite")] {
            b.measure(
                rate(
                    format!("rw_resmem_{op}_{tag}"),
                    "read/write",
                    format!("{op} of 16 MiB of resmem in {tag} pieces"),
                ),
                || {
                    rw_rate(
                        &dev.fd,
                        resmem.at(0),
                        RESMEM_RW_WINDOW,
                        &mut buf[..size],
                        write,
                    )
                },
            );
        }
    }
    let g = first_1g_offset(&resmem);
    fault_runs(
        b,
        &dev,
        &resmem,
        &[(
            "fault_resmem_1g_aligned",
            g,
            SZ_1G,
            SZ_1G,
            "touch every 4 KiB page of a fresh 1 GiB resmem mapping (write-combining) whose VA and PA are 1 GiB-aligned (PUD faults)",
        )],
    );
    Ok(())
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
    eprintln!("usage: nvgrace-bench [--reps N] [--warmup N] usemem|resmem...");
    std::process::exit(2);
}

fn main() {
    let mut reps = 5;
    let mut warmup = 1;
    let mut suites = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--reps" => reps = num(),
            "--warmup" => warmup = num(),
            "usemem" | "resmem" => suites.push(a),
            _ => usage(),
        }
    }
    if suites.is_empty() || reps == 0 {
        usage();
    }
    // The first clock read maps the vDSO's data page with a fault: take it before any fault
    // count.
    let _ = (mm::now(), mm::minor_faults());
    let thp_default = read_trim(THP_ENABLED);
    if let Err(e) = sys::write_attr(THP_ENABLED, "madvise") {
        eprintln!("nvgrace-bench: cannot set THP to madvise: {e}");
    }
    let mut failed = false;
    for suite in suites {
        let mut e = env(&suite, reps, warmup);
        e.guest.insert(
            "thp_boot_default".into(),
            thp_default.clone().map_or(Value::Null, Value::String),
        );
        println!(
            "{ENV_TAG}{}",
            serde_json::to_string(&e).expect("the environment serialises")
        );
        let mut b = Bench {
            suite: suite.clone(),
            reps,
            warmup,
            errors: 0,
        };
        let r = match suite.as_str() {
            "usemem" => suite_usemem(&mut b),
            _ => suite_resmem(&mut b),
        };
        if let Err(e) = r {
            b.error(&suite, &*e);
        }
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
