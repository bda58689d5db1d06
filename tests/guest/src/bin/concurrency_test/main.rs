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
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::page_size;
use nvgrace_guest_tests::mm::ChildEnd;
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
use nvgrace_guest_tests::GPU_BDF;

mod threads;
mod unbind;

use threads::*;
use unbind::unbind_while_faulting;

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
