// SPDX-License-Identifier: GPL-2.0

//! Concurrency: user space racing itself on one device, as a VMM with many vCPU threads (or a
//! hostile one) can. Threads fault usemem and resmem mappings, pread and pwrite the regions,
//! reset the device, write the emulated BAR registers and close and reopen the device at once;
//! the device is opened and closed by several threads; memory failures are injected while the
//! poisoned pages are being faulted; reads and writes use a mapping of the device itself as
//! their buffer while it is reset; the device is unbound while mapped and being faulted.
//!
//! Every operation must succeed with the data it would have alone (each thread owns its pages
//! and checks what it reads against what it wrote), nothing may deadlock, and the kernel log must
//! show no splat (on the debug kernel: lockdep, KASAN, DEBUG_VM and atomic-sleep reports). The
//! kernel's hung-task detector is set to report a task blocked for more than
//! [`HUNG_TASK_TIMEOUT_S`] while this program runs, so a deadlock shows as a report in the log.
//!
//! Every scenario runs in a forked worker process for a bounded time ([`RACE`] of racing, or
//! `CONCURRENCY_SECS` seconds) and a bounded number of iterations; the program waits for the
//! worker at most [`WORKER_GRACE`] longer and reports a worker that did not finish as a failure,
//! with the state, wait channel and kernel stack of each of its threads. Processes fork only
//! while single-threaded (threads are scoped and joined before any fork), as `mm::fork_child`
//! requires. The access pattern comes from a seed printed at the start (`CONCURRENCY_SEED`
//! repeats it; thread timing is not repeatable).
//!
//! The unbind scenario rebinds the device at its end, so programs after this one in a boot
//! still find it bound.

use std::fs;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::differences;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::hw;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::page_size;
use nvgrace_guest_tests::mm::ChildEnd;
use nvgrace_guest_tests::mm::Mapping;
use nvgrace_guest_tests::mm::BUS_MCEERR_AR;
use nvgrace_guest_tests::model;
use nvgrace_guest_tests::rng::Rng;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::vfio::ioctl;
use nvgrace_guest_tests::vfio::ioctl_val;
use nvgrace_guest_tests::vfio::Context;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::workers::finish_worker;
use nvgrace_guest_tests::workers::flag;
use nvgrace_guest_tests::workers::spawn_worker;
use nvgrace_guest_tests::workers::Board;
use nvgrace_guest_tests::workers::SharedBoard;
use nvgrace_guest_tests::workers::Until;
use nvgrace_guest_tests::DRIVER_NAME;
use nvgrace_guest_tests::GPU_BDF;

/// The hung-task detector's timeout while this program runs (`kernel.hung_task_timeout_secs`;
/// the kernel's default is 120 s): short enough that a deadlock is reported within a scenario's
/// deadline, long enough that no wait of the driver or of vfio-pci-core in this program reaches
/// it (the FLR of a reset sleeps 100 ms; the GPU model is ready at once after it).
const HUNG_TASK_TIMEOUT_S: u64 = 10;
const HUNG_TASK_TIMEOUT: &str = "/proc/sys/kernel/hung_task_timeout_secs";
/// How long each scenario races, unless `CONCURRENCY_SECS` says otherwise.
const RACE: Duration = Duration::from_secs(6);
/// How long a worker may take beyond its racing time (set-up, the last operations, exit) before
/// it counts as stuck: generous for TCG and the debug kernel.
const WORKER_GRACE: Duration = Duration::from_secs(60);
/// Where this program's data lies in each region: above what the programs before it in a boot
/// use (the first few MiB).
const WINDOW_BASE: u64 = 64 << 20;
/// One thread's part of a region.
const SLICE: u64 = 4 << 20;
/// Slices used: the window spans `WINDOW_BASE + SLICES * SLICE` bytes of each region.
const SLICES: u64 = 8;
/// The bytes at the start of its slice that a pread/pwrite thread uses: small enough that its
/// initial fill (resmem is written 8 bytes at a time) leaves most of the racing time to it.
const RW_LEN: usize = 256 << 10;
/// A faulting thread replaces its mapping (and with a device fd of its own, that fd) every this
/// many accesses, so that it keeps faulting when no reset zaps its mapping.
const REOPEN_EVERY: u64 = 64;
/// Iteration caps, so that a fast machine still ends: per thread and loop.
const MAX_ITERATIONS: u64 = 1 << 24;
/// Memory failures injected at most in the memory-failure scenario (one fresh page each).
const INJECTIONS: u64 = 48;
const HARD_OFFLINE: &str = "/sys/devices/system/memory/hard_offline_page";

/// How long each scenario races.
fn race() -> Duration {
    std::env::var("CONCURRENCY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(RACE, Duration::from_secs)
}

/// The longest a worker may run.
fn worker_deadline() -> Duration {
    race() + WORKER_GRACE
}

/// Runs `f` in a worker and waits for it.
fn in_worker(f: impl FnOnce(&Board) -> Outcome) -> Outcome {
    let board = SharedBoard::new()?;
    let child = spawn_worker(&board, f)?;
    finish_worker(
        child,
        &board,
        worker_deadline(),
        Duration::from_secs(HUNG_TASK_TIMEOUT_S),
    )
}

/// Whether a racing loop should end: time, stop flag or iteration cap.
fn done(until: Until, board: &Board, i: u64) -> bool {
    i >= MAX_ITERATIONS || until.passed() || board.is_set(flag::STOP)
}

/// The device's IOMMU group and container, with which any number of device fds can be had
/// (`VFIO_GROUP_GET_DEVICE_FD`); the group path allows several opens of one device, the cdev path
/// one.
struct Group {
    group: File,
    _container: File,
}

impl Group {
    /// Opens the group and reads the regions through a first device fd, which is closed again.
    fn open() -> io::Result<(Group, GpuMem, Option<GpuMem>)> {
        let dev = Device::open_group(GPU_BDF)?;
        let (usemem, resmem) = dev.gpu_mem()?;
        let Device { fd, context } = dev;
        drop(fd);
        match context {
            Context::Group { container, group } => Ok((
                Group {
                    group,
                    _container: container,
                },
                usemem,
                resmem,
            )),
            Context::Iommufd(_) => Err(io::Error::other("open_group gave an iommufd context")),
        }
    }

    /// A new device fd.
    fn device_fd(&self) -> io::Result<File> {
        let name = std::ffi::CString::new(GPU_BDF).map_err(io::Error::other)?;
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD takes a NUL-terminated device name.
        let r = unsafe {
            libc::ioctl(
                self.group.as_raw_fd(),
                ioctl::VFIO_GROUP_GET_DEVICE_FD,
                name.as_ptr(),
            )
        };
        if r < 0 {
            return Err(io::Error::new(
                io::Error::last_os_error().kind(),
                format!("VFIO_GROUP_GET_DEVICE_FD: {}", io::Error::last_os_error()),
            ));
        }
        // SAFETY: `r` is a new fd that nothing else owns.
        Ok(unsafe { File::from_raw_fd(r) })
    }
}

/// The GPU memory regions, if the rig's geometry has room for this program's window.
fn require_window(usemem: &GpuMem) -> Outcome {
    let need = WINDOW_BASE + SLICES * SLICE;
    if usemem.memlength < need {
        return Err(Failure::Skip(format!(
            "usemem has {:#x} bytes, the test needs {need:#x}",
            usemem.memlength
        )));
    }
    Ok(())
}

fn resmem_fits(resmem: &Option<GpuMem>) -> Option<GpuMem> {
    resmem.filter(|r| r.memlength >= WINDOW_BASE + SLICES * SLICE)
}

/// The virtual alignment of a `huge` slice mapping, bytes: the PMD size where a PMD fits in a
/// slice (2 MiB with 4 KiB pages), else the slice size (a 512 MiB PMD of 64 KiB pages does not
/// fit: such a thread faults pages, at a slice-aligned address).
fn huge_align() -> usize {
    let pmd = mm::pmd_size();
    if pmd <= SLICE as usize {
        pmd
    } else {
        SLICE as usize
    }
}

/// A mapping of slice `slice` of region `m`: at a PMD-aligned address when `huge` (PMD faults
/// where the driver makes them and a PMD fits in the slice, see [`huge_align`]), else one page
/// into the slice at any address (page faults).
fn map_slice(fd: &File, m: &GpuMem, slice: u64, huge: bool) -> io::Result<Mapping> {
    let off = WINDOW_BASE + slice * SLICE;
    if huge {
        mm::mmap_shared_aligned(fd, m.at(off), SLICE as usize, huge_align())
    } else {
        mm::mmap_shared(
            fd,
            m.at(off + page_size() as u64),
            SLICE as usize - page_size(),
        )
    }
}

/// What a faulting thread remembers of its pages: the value it last wrote to the first and last
/// word of each.
struct PageValues(Vec<Option<u64>>);

impl PageValues {
    fn new(pages: usize) -> Self {
        PageValues(vec![None; pages])
    }

    /// Visits page `p` of `map`: checks the value last written there, writes `v`.
    fn visit(&mut self, map: &Mapping, p: usize, v: u64, what: &str) -> Result<(), String> {
        let first = p * page_size();
        let last = first + page_size() - 8;
        if let Some(want) = self.0[p] {
            let (a, b) = (map.read_u64(first), map.read_u64(last));
            if a != want || b != !want {
                return Err(format!(
                    "{what}: page {p} reads {a:#x}/{b:#x}, last written {want:#x}/{:#x}",
                    !want
                ));
            }
        }
        map.write_u64(first, v);
        map.write_u64(last, !v);
        self.0[p] = Some(v);
        Ok(())
    }
}

/// Where a faulting thread gets its mapping from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// A device fd of its own from the group, closed and replaced with its mapping every
    /// [`REOPEN_EVERY`] accesses.
    Group(&'a Group),
    /// A device fd shared with other threads; the mapping is replaced every [`REOPEN_EVERY`]
    /// accesses.
    Fd(&'a File),
}

/// What a faulting thread maps and how long it runs.
#[derive(Clone, Copy)]
struct FaultJob<'a> {
    source: Source<'a>,
    m: &'a GpuMem,
    slice: u64,
    /// PMD-aligned mapping (else one page into the slice), see [`map_slice`].
    huge: bool,
    until: Until,
    board: &'a Board,
    /// The board counter of the visits.
    counter: usize,
}

/// Faults random pages of a mapping of the job's slice until the end, checking each against
/// what the thread last wrote. Every [`REOPEN_EVERY`] accesses the thread replaces its mapping,
/// with a group source also its device fd (the data must survive).
fn fault_thread(job: FaultJob<'_>, mut rng: Rng) -> Result<String, String> {
    let FaultJob {
        source,
        m,
        slice,
        huge,
        until,
        board,
        counter,
    } = job;
    let what = format!("{} slice {slice}", m.name());
    let err = |e: io::Error| format!("{what}: {e}");
    let open = || -> Result<(Option<File>, Mapping), String> {
        match source {
            Source::Group(g) => {
                let f = g.device_fd().map_err(err)?;
                let map = map_slice(&f, m, slice, huge).map_err(err)?;
                Ok((Some(f), map))
            }
            Source::Fd(f) => Ok((None, map_slice(f, m, slice, huge).map_err(err)?)),
        }
    };
    let (mut own_fd, mut map) = open()?;
    let mut values = PageValues::new(map.len() / page_size());
    let (mut i, mut reopens) = (0u64, 0u64);
    while !done(until, board, i) {
        let p = rng.below(values.0.len() as u64) as usize;
        values.visit(&map, p, rng.bits(), &what)?;
        board.bump(counter);
        i += 1;
        if i % REOPEN_EVERY == 0 {
            drop(map);
            drop(own_fd.take());
            (own_fd, map) = open()?;
            reopens += 1;
        }
    }
    // Everything written is still there.
    for p in 0..values.0.len() {
        if values.0[p].is_some() {
            let v = rng.bits();
            values.visit(&map, p, v, &what)?;
        }
    }
    Ok(format!(
        "{what} ({}): {i} accesses, {reopens} new mappings",
        if huge {
            format!("{} KiB-aligned", huge_align() >> 10)
        } else {
            "page-offset".into()
        }
    ))
}

/// pread/pwrite of random sizes at random offsets of `slice` of `m`, checked against a copy of
/// what the thread wrote there. Counts operations in counter `c`.
fn rw_thread(
    fd: &File,
    m: &GpuMem,
    slice: u64,
    mut rng: Rng,
    until: Until,
    board: &Board,
    c: usize,
) -> Result<String, String> {
    let what = format!("{} slice {slice} pread/pwrite", m.name());
    let base = m.at(WINDOW_BASE + slice * SLICE);
    let len = RW_LEN;
    let mut shadow = mm::pattern(rng.bits(), 0, len);
    for off in (0..len).step_by(1 << 16) {
        let n = fd
            .write_at(&shadow[off..off + (1 << 16)], base + off as u64)
            .map_err(|e| format!("{what}: initial pwrite at {off:#x}: {e}"))?;
        if n != 1 << 16 {
            return Err(format!("{what}: initial pwrite at {off:#x}: {n} bytes"));
        }
    }
    let sizes = [1usize, 2, 4, 8, 64, 4096, 1 << 16];
    let (mut reads, mut writes) = (0u64, 0u64);
    let mut i = 0;
    while !done(until, board, i) {
        let size = match rng.below(8) {
            7 => 1 + rng.below(8192) as usize,
            k => sizes[k as usize],
        };
        let off = rng.below((len - size) as u64 + 1) as usize;
        if rng.below(2) == 0 {
            let data = mm::pattern(rng.bits(), 0, size);
            let n = fd
                .write_at(&data, base + off as u64)
                .map_err(|e| format!("{what}: pwrite of {size} at {off:#x}: {e}"))?;
            if n != size {
                return Err(format!("{what}: pwrite of {size} at {off:#x}: {n} bytes"));
            }
            shadow[off..off + size].copy_from_slice(&data);
            writes += 1;
        } else {
            let mut buf = vec![0u8; size];
            let n = fd
                .read_at(&mut buf, base + off as u64)
                .map_err(|e| format!("{what}: pread of {size} at {off:#x}: {e}"))?;
            if n != size {
                return Err(format!("{what}: pread of {size} at {off:#x}: {n} bytes"));
            }
            if let Some(d) = mm::first_difference(&buf, &shadow[off..off + size]) {
                return Err(format!(
                    "{what}: pread of {size} at {off:#x}: byte {d} is {:#x}, written {:#x}",
                    buf[d],
                    shadow[off + d]
                ));
            }
            reads += 1;
        }
        board.bump(c);
        i += 1;
    }
    Ok(format!("{what}: {reads} reads, {writes} writes"))
}

/// VFIO_DEVICE_RESET in a loop with short random pauses. EAGAIN (the PCI device lock is held
/// by another reset or a probe) is counted, not an error.
fn reset_thread(
    fd: &File,
    mut rng: Rng,
    until: Until,
    board: &Board,
    c: usize,
) -> Result<String, String> {
    let (mut ok, mut busy, mut i) = (0u64, 0u64, 0u64);
    while !done(until, board, i) {
        match ioctl_val(fd, ioctl::VFIO_DEVICE_RESET, 0) {
            Ok(_) => ok += 1,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => busy += 1,
            Err(e) => return Err(format!("VFIO_DEVICE_RESET #{i}: {e}")),
        }
        board.bump(c);
        i += 1;
        std::thread::sleep(Duration::from_millis(rng.below(50)));
    }
    Ok(format!("resets: {ok} done, {busy} EAGAIN"))
}

/// Config space: the vendor ID read (it must always read NVIDIA's), the emulated BAR2..5
/// registers sized (all-ones written, read back) and restored, while resets reset them.
fn config_thread(fd: &File, until: Until, board: &Board, c: usize) -> Result<String, String> {
    let cfg = (7u64) << nvgrace_guest_tests::vfio::VFIO_PCI_OFFSET_SHIFT;
    let rw = |off: u64, data: Option<[u8; 4]>| -> Result<[u8; 4], String> {
        let mut b = data.unwrap_or([0; 4]);
        let n = match data {
            Some(d) => fd.write_at(&d, cfg + off),
            None => fd.read_at(&mut b, cfg + off),
        }
        .map_err(|e| format!("config {off:#x}: {e}"))?;
        if n != 4 {
            return Err(format!("config {off:#x}: {n} of 4 bytes"));
        }
        Ok(b)
    };
    let mut i = 0;
    while !done(until, board, i) {
        let id = rw(0, None)?;
        if u16::from_le_bytes([id[0], id[1]]) != hw::NVIDIA_VENDOR_ID {
            return Err(format!("vendor ID read {id:x?}"));
        }
        let (res, use_) = (hw::RESMEM_BAR_OFFSET, hw::USEMEM_BAR_OFFSET);
        for bar in [res, res + 4, use_, use_ + 4] {
            let old = rw(bar, None)?;
            rw(bar, Some([0xff; 4]))?;
            rw(bar, None)?;
            rw(bar, Some(old))?;
        }
        board.bump(c);
        i += 1;
    }
    Ok(format!("config: {i} rounds"))
}

/// Collects the results of scoped threads: their reports as diagnostics, the first error.
fn join_all(results: Vec<std::thread::Result<Result<String, String>>>) -> Outcome {
    let mut first = None;
    for r in results {
        match r {
            Ok(Ok(s)) => println!("#   {s}"),
            Ok(Err(e)) => {
                println!("#   error: {e}");
                first.get_or_insert(e);
            }
            Err(_) => {
                first.get_or_insert("a thread panicked".into());
            }
        }
    }
    match first {
        Some(e) => Err(Failure::Fail(e)),
        None => Ok(()),
    }
}

/// Scenario 1: faulting (PMD and page entries, usemem and resmem), pread/pwrite, resets,
/// BAR-register writes, and closes and reopens of the device fd, all at once on one device
/// opened through its group (several fds).
fn fault_rw_reset_close(board: &Board, rng: &Rng) -> Outcome {
    let (group, usemem, resmem) = Group::open()?;
    require_window(&usemem)?;
    let resmem = resmem_fits(&resmem);
    let shared = group.device_fd()?;
    let until = Until::after(race());
    let job = FaultJob {
        source: Source::Group(&group),
        m: &usemem,
        slice: 0,
        huge: true,
        until,
        board,
        counter: 0,
    };
    let results = std::thread::scope(|s| {
        let mut hs = Vec::new();
        let (b, sh, u) = (board, &shared, &usemem);
        hs.push(s.spawn(move || fault_thread(job, rng.fork(1))));
        let j = FaultJob {
            slice: 1,
            huge: false,
            ..job
        };
        hs.push(s.spawn(move || fault_thread(j, rng.fork(2))));
        if let Some(r) = resmem.as_ref() {
            let j = FaultJob { m: r, ..job };
            hs.push(s.spawn(move || fault_thread(j, rng.fork(3))));
            hs.push(s.spawn(move || rw_thread(sh, r, 2, rng.fork(4), until, b, 1)));
        }
        hs.push(s.spawn(move || rw_thread(sh, u, 2, rng.fork(5), until, b, 1)));
        hs.push(s.spawn(move || reset_thread(sh, rng.fork(6), until, b, 2)));
        hs.push(s.spawn(move || config_thread(sh, until, b, 3)));
        hs.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    println!(
        "# fault_rw_reset_close: {} accesses through mappings, {} reads/writes, {} resets, {} config rounds",
        board.count(0),
        board.count(1),
        board.count(2),
        board.count(3)
    );
    join_all(results)?;
    check!(board.count(2) > 0, "no reset was made");
    Ok(())
}

/// Scenario 2: three threads open the device, map and touch it, read and write it, sometimes
/// reset it, and close it again, with no fd held in between, so that the first open and the
/// last close (the driver's open_device and close_device) race with each other and with the
/// other threads' accesses.
fn open_close_races(board: &Board, rng: &Rng) -> Outcome {
    let (group, usemem, _) = Group::open()?;
    require_window(&usemem)?;
    let until = Until::after(race());
    let cycle = |slice: u64, mut rng: Rng| -> Result<String, String> {
        let what = format!("open/close thread {slice}");
        let err = |e: io::Error| format!("{what}: {e}");
        let off = WINDOW_BASE + slice * SLICE;
        let mut expect: Option<u64> = None;
        let mut i = 0;
        while !done(until, board, i) {
            let fd = group.device_fd().map_err(err)?;
            let map = mm::mmap_shared(&fd, usemem.at(off), 2 * page_size()).map_err(err)?;
            if let Some(want) = expect {
                let (a, mut b) = (map.read_u64(0), [0u8; 8]);
                let n = fd
                    .read_at(&mut b, usemem.at(off + page_size() as u64))
                    .map_err(err)?;
                if a != want || n != 8 || u64::from_le_bytes(b) != !want {
                    return Err(format!(
                        "{what}: cycle {i}: read {a:#x} (mapping) / {:#x} ({n} bytes, pread), last written {want:#x} / {:#x}",
                        u64::from_le_bytes(b),
                        !want
                    ));
                }
            }
            let v = rng.bits();
            map.write_u64(0, v);
            let n = fd
                .write_at(&(!v).to_le_bytes(), usemem.at(off + page_size() as u64))
                .map_err(err)?;
            if n != 8 {
                return Err(format!("{what}: pwrite: {n} bytes"));
            }
            expect = Some(v);
            if rng.below(4) == 0 {
                match ioctl_val(&fd, ioctl::VFIO_DEVICE_RESET, 0) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                    Err(e) => return Err(format!("{what}: VFIO_DEVICE_RESET: {e}")),
                }
            }
            drop(map);
            drop(fd);
            board.bump(0);
            i += 1;
        }
        Ok(format!("{what}: {i} open/close cycles"))
    };
    let results = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3u64)
            .map(|k| {
                let r = rng.fork(10 + k);
                let c = &cycle;
                s.spawn(move || c(k, r))
            })
            .collect();
        hs.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    println!("# open_close_races: {} open/close cycles", board.count(0));
    join_all(results)?;
    check!(board.count(0) > 0, "no open/close cycle completed");
    Ok(())
}

/// Scenario 3: the device is unbound while a process has it mapped and is faulting and reading
/// it. The unbind waits while the process uses the device, and the process's accesses keep
/// working meanwhile; once the process drops its mappings and fd (and is still alive), the
/// unbind completes. The device is bound again at the end.
fn unbind_while_faulting(rng: &Rng) -> Outcome {
    if nvgrace_guest_tests::expected_regions().is_none() {
        return Err(Failure::Skip("no GPU memory described".into()));
    }
    let board = SharedBoard::new()?;
    let wrng = &rng.fork(20);
    let worker = spawn_worker(&board, |b| {
        let dev = Device::open_iommufd(GPU_BDF)?;
        let (usemem, resmem) = dev.gpu_mem()?;
        require_window(&usemem)?;
        let resmem = resmem_fits(&resmem);
        // The threads run until the supervisor says stop, bounded by the worker's deadline.
        let until = Until::after(worker_deadline());
        let job = FaultJob {
            source: Source::Fd(&dev.fd),
            m: &usemem,
            slice: 4,
            huge: true,
            until,
            board: b,
            counter: 0,
        };
        let results = std::thread::scope(|s| {
            let mut hs = Vec::new();
            let (fd, u) = (&dev.fd, &usemem);
            hs.push(s.spawn(move || fault_thread(job, wrng.fork(1))));
            let j = FaultJob {
                slice: 5,
                huge: false,
                ..job
            };
            hs.push(s.spawn(move || fault_thread(j, wrng.fork(2))));
            if let Some(r) = resmem.as_ref() {
                let j = FaultJob {
                    m: r,
                    huge: false,
                    ..job
                };
                hs.push(s.spawn(move || fault_thread(j, wrng.fork(3))));
            }
            // Not slices 6 and 7: memory_failure_while_faulting poisoned pages there, which the
            // Rust driver refuses from then on (difference 6).
            hs.push(s.spawn(move || rw_thread(fd, u, 2, wrng.fork(4), until, b, 1)));
            b.set(flag::READY);
            hs.into_iter().map(|h| h.join()).collect::<Vec<_>>()
        });
        drop(dev);
        b.set(flag::RELEASED);
        let r = join_all(results);
        // Stay alive until told to exit: the unbind must complete while this process lives.
        let exit_by = Until::after(WORKER_GRACE);
        while !b.is_set(flag::EXIT) && !exit_by.passed() {
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    })?;
    let outcome = unbind_steps(&board);
    board.set(flag::STOP);
    board.set(flag::EXIT);
    let worker_outcome = finish_worker(
        worker,
        &board,
        worker_deadline(),
        Duration::from_secs(HUNG_TASK_TIMEOUT_S),
    );
    println!(
        "# unbind_while_faulting: {} accesses through mappings, {} reads/writes",
        board.count(0),
        board.count(1)
    );
    // Bound again whatever failed, for the programs after this one.
    let rebound = if sys::bound_driver(GPU_BDF).is_none() {
        rebind()
    } else {
        Ok(())
    };
    outcome?;
    worker_outcome?;
    rebound?;
    check_device_works()
}

/// The supervisor's side of [`unbind_while_faulting`].
fn unbind_steps(board: &Board) -> Outcome {
    let started = Until::after(worker_deadline());
    while !(board.is_set(flag::READY) && board.count(0) > 100 && board.count(1) > 10) {
        if started.passed() || board.outcome().is_some() {
            fail!(
                "the worker did not start faulting ({} accesses through mappings, {} reads/writes): {:?}",
                board.count(0),
                board.count(1),
                board.outcome().map(|r| r.err())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut unbinder = mm::fork_child(|| match sys::unbind(GPU_BDF) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(1),
    })?;
    // Whatever happens below, the worker lets go of the device before the unbinder is dropped
    // (which waits for it): declared after it, dropped before it.
    let _release = SetOnDrop(board, &[flag::STOP, flag::EXIT]);
    let (f0, r0) = (board.count(0), board.count(1));
    let waiting = race().min(Duration::from_secs(3));
    check_eq!(
        unbinder.wait_timeout(waiting)?,
        ChildEnd::TimedOut,
        "unbind while the device is open, mapped and faulted"
    );
    let (f1, r1) = (board.count(0), board.count(1));
    println!(
        "# unbind_while_faulting: while the unbind waited {waiting:?}: {} accesses through mappings, {} reads/writes",
        f1 - f0,
        r1 - r0
    );
    check!(
        f1 > f0 && r1 > r0,
        "faults ({f0} -> {f1}) and reads/writes ({r0} -> {r1}) stopped while the unbind waited"
    );
    board.set(flag::STOP);
    let released = Until::after(WORKER_GRACE);
    while !board.is_set(flag::RELEASED) {
        if released.passed() {
            fail!("the worker did not drop its mappings within {WORKER_GRACE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = unbinder.wait_timeout(Duration::from_secs(30))?;
    check_eq!(
        end,
        ChildEnd::Exited(0),
        "unbind once the mappings and the fd are gone, the process still alive ({end})"
    );
    check_eq!(
        sys::bound_driver(GPU_BDF),
        None::<String>,
        "driver after unbind"
    );
    Ok(())
}

/// Sets flags of a board when dropped.
struct SetOnDrop<'a>(&'a Board, &'static [usize]);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        for f in self.1 {
            self.0.set(*f);
        }
    }
}

/// Binds the GPU again (its driver_override still names the driver).
fn rebind() -> Outcome {
    sys::write_attr("/sys/bus/pci/drivers_probe", GPU_BDF)?;
    check_eq!(
        sys::bound_driver(GPU_BDF),
        Some(DRIVER_NAME.to_string()),
        "driver after rebinding"
    );
    Ok(())
}

/// The device opens and its memory reads.
fn check_device_works() -> Outcome {
    let dev = Device::open_iommufd(GPU_BDF)?;
    let (usemem, _) = dev.gpu_mem()?;
    let mut b = [0u8; 8];
    dev.mem_read_exact(&usemem, WINDOW_BASE, &mut b)?;
    Ok(())
}

/// Scenario 4: memory failures injected into pages that another process is faulting (and
/// resetting the device under). The faulting process did not ask for early kill and maps the
/// pages, so memory-failure leaves it alone: its accesses through entries mapped before keep
/// working; after a reset, upstream maps a poisoned page again and the Rust driver answers
/// SIGBUS (difference 6). The injecting process maps them too: it gets one BUS_MCEERR_AR at
/// its address of each poisoned page.
fn memory_failure_while_faulting(board: &Board, rng: &Rng) -> Outcome {
    if !std::path::Path::new(HARD_OFFLINE).exists() {
        return Err(Failure::Skip(format!(
            "no {HARD_OFFLINE} (CONFIG_MEMORY_FAILURE, CONFIG_MEMORY_HOTPLUG)"
        )));
    }
    let dev = Device::open_iommufd(GPU_BDF)?;
    let (usemem, _) = dev.gpu_mem()?;
    require_window(&usemem)?;
    // Poisoned pages lie in slices 6 (faulted through a PMD-aligned mapping) and 7 (through
    // a page-offset one).
    let slices = [6u64, 7];
    let until = Until::after(race());
    let frng = &rng.fork(30);
    // The faulting process: default SIGBUS action, so any SIGBUS ends it.
    let mut faulter = mm::fork_child(|| {
        let job = FaultJob {
            source: Source::Fd(&dev.fd),
            m: &usemem,
            slice: slices[0],
            huge: true,
            until,
            board,
            counter: 0,
        };
        let results = std::thread::scope(|s| {
            let j = FaultJob {
                slice: slices[1],
                huge: false,
                counter: 1,
                ..job
            };
            let fd = &dev.fd;
            let hs = vec![
                s.spawn(move || fault_thread(job, frng.fork(1))),
                s.spawn(move || fault_thread(j, frng.fork(2))),
                s.spawn(move || reset_thread(fd, frng.fork(3), until, board, 2)),
            ];
            hs.into_iter().map(|h| h.join()).collect::<Vec<_>>()
        });
        match join_all(results) {
            Ok(()) => 0,
            Err(_) => 1,
        }
    })?;
    // The injecting process, in this one: it maps the slice, records SIGBUS and poisons pages.
    // One mapping over both slices: memory-failure SIGKILLs a process that maps the region
    // through another VMA that ends before the poisoned page (memory_failure_test,
    // mapping_ends_before_page; upstream's behaviour).
    mm::install_sigbus_recorder()?;
    let first = WINDOW_BASE + slices[0] * SLICE + page_size() as u64;
    let map = mm::mmap_shared(&dev.fd, usemem.at(first), 2 * SLICE as usize - page_size())?;
    let mut injected = 0u64;
    let mut result: Outcome = Ok(());
    // Fresh pages, alternating between the slices, spread over each (64 pages a slice with
    // 64 KiB pages, 1024 with 4 KiB); never the slice's last page, past the mapping's end in
    // the second.
    let slice_pages = SLICE / page_size() as u64;
    let stride = (slice_pages - 2) / INJECTIONS.div_ceil(2);
    check!(
        stride >= 1,
        "{slice_pages} pages a slice leave no fresh page for each of {INJECTIONS} injections"
    );
    while injected < INJECTIONS && !until.passed() {
        let page = (injected % 2) * slice_pages + 1 + (injected / 2) * stride;
        let pa = usemem.pa(first + page * page_size() as u64);
        let w = fs::OpenOptions::new()
            .write(true)
            .open(HARD_OFFLINE)
            .and_then(|mut f| io::Write::write(&mut f, format!("{pa:#x}").as_bytes()));
        if let Err(e) = w {
            result = Err(Failure::Fail(format!(
                "write of {pa:#x} to {HARD_OFFLINE}: {e}"
            )));
            break;
        }
        injected += 1;
        let got = mm::sigbus_record();
        let want_addr = map.addr() + page as usize * page_size();
        if got.count as u64 != injected || got.code != BUS_MCEERR_AR || got.addr != want_addr {
            result = Err(Failure::Fail(format!(
                "injection {injected} at {pa:#x}: {} SIGBUS so far, the last si_code {} at {:#x}; expected {injected}, BUS_MCEERR_AR at {want_addr:#x}",
                got.count, got.code, got.addr
            )));
            break;
        }
        std::thread::sleep(Duration::from_millis(rng.fork(injected).below(100)));
    }
    // SAFETY: Restores the default SIGBUS action in this single-threaded process.
    unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
    let end = faulter.wait_timeout(race() + WORKER_GRACE)?;
    println!(
        "# memory_failure_while_faulting: {injected} pages poisoned; the faulting process: {} + {} accesses through mappings, {} resets; {end}",
        board.count(0),
        board.count(1),
        board.count(2)
    );
    result?;
    // With the Rust driver a poisoned page is never mapped again (difference 6): a fault on
    // one after a reset zapped it gets SIGBUS, which ends the faulting process. Upstream maps
    // it again, so the process runs to the end.
    let sigbus_allowed =
        differences::poisoned_pages_stay_poisoned() && end == ChildEnd::Signaled(libc::SIGBUS);
    check!(
        end == ChildEnd::Exited(0) || sigbus_allowed,
        "the faulting process ({end})"
    );
    check!(injected > 0, "no memory failure injected");
    Ok(())
}

/// Scenario 5: pread and pwrite whose user buffer is a mapping of the same device's memory,
/// not yet faulted in, while another thread resets the device: the copy to or from the user
/// buffer faults on the device's own mapping in the middle of the driver's access, and a reset
/// waits for both (difference 5 of tests/guest/src/differences.rs: upstream deadlocks here).
fn user_buffer_in_device_mapping(board: &Board, rng: &Rng) -> Outcome {
    let dev = Device::open_iommufd(GPU_BDF)?;
    let (usemem, resmem) = dev.gpu_mem()?;
    require_window(&usemem)?;
    let resmem = resmem_fits(&resmem);
    let until = Until::after(race());
    let copier = |m: GpuMem, counter: usize, mut rng: Rng| -> Result<String, String> {
        let what = format!("{} pread/pwrite into a mapping of usemem", m.name());
        let err = |e: io::Error| format!("{what}: {e}");
        let len = SLICE as usize / 4;
        let mut i = 0;
        while !done(until, board, i) {
            // A new mapping each time: nothing of it is faulted in yet.
            let buf = map_slice(&dev.fd, &usemem, 3, rng.below(2) == 0).map_err(err)?;
            let size = page_size() * (1 + rng.below((len / page_size()) as u64) as usize);
            let off = m.at(WINDOW_BASE + 2 * SLICE);
            let write = rng.below(2) == 0;
            // SAFETY: `buf` is a live mapping of at least `size` bytes, readable and writable.
            let n = unsafe {
                if write {
                    libc::pwrite(
                        dev.fd.as_raw_fd(),
                        buf.addr() as *const libc::c_void,
                        size,
                        off as i64,
                    )
                } else {
                    libc::pread(
                        dev.fd.as_raw_fd(),
                        buf.addr() as *mut libc::c_void,
                        size,
                        off as i64,
                    )
                }
            };
            if n != size as isize {
                return Err(format!(
                    "{what}: {} of {size} bytes: {n} ({})",
                    if write { "pwrite" } else { "pread" },
                    io::Error::last_os_error()
                ));
            }
            board.bump(counter);
            i += 1;
        }
        Ok(format!("{what}: {i} copies"))
    };
    let results = std::thread::scope(|s| {
        let c = &copier;
        let fd = &dev.fd;
        let mut hs = vec![
            s.spawn(move || c(usemem, 0, rng.fork(40))),
            s.spawn(move || reset_thread(fd, rng.fork(41), until, board, 2)),
        ];
        if let Some(r) = resmem {
            hs.push(s.spawn(move || c(r, 1, rng.fork(42))));
        }
        hs.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    println!(
        "# user_buffer_in_device_mapping: {} usemem and {} resmem copies, {} resets",
        board.count(0),
        board.count(1),
        board.count(2)
    );
    join_all(results)
}

/// The hung-task detector is on; its timeout is set short for this program (the old value is
/// returned, to be restored).
fn hung_task_detector() -> Result<String, Failure> {
    let old = sys::read_attr(HUNG_TASK_TIMEOUT).map_err(|e| {
        Failure::Fail(format!(
            "the hung-task detector is off (CONFIG_DETECT_HUNG_TASK): {e}"
        ))
    })?;
    sys::write_attr(HUNG_TASK_TIMEOUT, &HUNG_TASK_TIMEOUT_S.to_string())?;
    check_eq!(
        sys::read_attr(HUNG_TASK_TIMEOUT)?,
        HUNG_TASK_TIMEOUT_S.to_string(),
        "{HUNG_TASK_TIMEOUT}"
    );
    Ok(old)
}

fn seed() -> u64 {
    std::env::var("CONCURRENCY_SEED")
        .ok()
        .and_then(|s| s.strip_prefix("0x").map(str::to_string).or(Some(s)))
        .and_then(|s| u64::from_str_radix(&s, 16).ok())
        .unwrap_or_else(|| mm::now().as_nanos() as u64 ^ u64::from(std::process::id()))
}

/// What the tests share: the generator and the hung-task timeout to restore at the end.
struct Run {
    rng: Rng,
    old_timeout: Option<String>,
}

fn main() {
    let seed = seed();
    tap::diag(format!(
        "driver build: {}, GPU model: {}, seed {seed:#x} (CONCURRENCY_SEED), {:?} per scenario",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu(),
        race()
    ));
    // The GPU is ready at once after a reset, whatever a program before this one set.
    if model::available() {
        let _ = model::reset_control();
    }
    let tests = vec![
        test("hung_task_detector_on", |r: &mut Run| {
            r.old_timeout = Some(hung_task_detector()?);
            Ok(())
        }),
        test("fault_rw_reset_close", |r: &mut Run| {
            in_worker(|b| fault_rw_reset_close(b, &r.rng))
        }),
        test("open_close_races", |r: &mut Run| {
            in_worker(|b| open_close_races(b, &r.rng))
        }),
        test("memory_failure_while_faulting", |r: &mut Run| {
            in_worker(|b| memory_failure_while_faulting(b, &r.rng))
        }),
        test("user_buffer_in_device_mapping", |r: &mut Run| {
            if differences::copies_under_memory_lock() {
                return Err(Failure::Skip(
                    "difference 5: not run against this build, where it deadlocks and wedges the guest (tests/guest/src/differences.rs)".into(),
                ));
            }
            in_worker(|b| user_buffer_in_device_mapping(b, &r.rng))
        }),
        test("unbind_while_faulting", |r: &mut Run| {
            unbind_while_faulting(&r.rng)
        }),
        test("no_kernel_splat", |r: &mut Run| {
            let outcome = sys::no_kernel_splat();
            if let Some(old) = r.old_timeout.take() {
                let _ = sys::write_attr(HUNG_TASK_TIMEOUT, &old);
            }
            outcome
        }),
    ];
    let mut run = Run {
        rng: Rng::new(seed),
        old_timeout: None,
    };
    Harness::run_table(&mut run, tests)
}
