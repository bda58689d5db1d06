// SPDX-License-Identifier: GPL-2.0

//! Poisoned pages after memory failure: whether they are mapped, read and written again
//! (deliberate difference 6 of tests/guest/src/differences.rs). The Rust driver records every
//! PFN that memory-failure's callback reports (src/device/poison.rs) and from then on answers faults
//! on it with SIGBUS `BUS_MCEERR_AR`, huge faults over it with smaller entries and reads and
//! writes of it with EIO, until the device is removed; upstream 7.3 keeps no state, so each
//! new fault maps the page again and reads and writes go through.
//!
//! This process maps the pages it poisons (through `hard_offline_page`, as memory_failure_test
//! does): memory-failure calls the drivers' callback for its VMAs and sends it SIGBUS
//! `BUS_MCEERR_AR`, which a recording handler takes. Every access that may fault on a poisoned
//! page runs in a forked child that reports the SIGBUS it got. Poisoned pages stay poisoned for
//! the rest of the boot: this program runs last in its guest run, on pages no other program of
//! the run touches (memory_failure_test poisons usemem pages below 640 and resmem pages below
//! 100).

use std::io;
use std::io::Write;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::differences::poisoned_pages_stay_poisoned;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::page_size;
use nvgrace_guest_tests::mm::ChildEnd;
use nvgrace_guest_tests::mm::Mapping;
use nvgrace_guest_tests::mm::SigbusRecord;
use nvgrace_guest_tests::mm::BUS_MCEERR_AR;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::DRIVER_NAME;
use nvgrace_guest_tests::GPU_BDF;

const HARD_OFFLINE: &str = "/sys/devices/system/memory/hard_offline_page";
/// How long a touching child may take.
const TOUCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The exit status of a child whose access raised SIGBUS (its handler reports and exits).
const EXIT_SIGBUS: i32 = 77;
/// The usemem window of the mapping tests: 16 pages from this page index, page
/// [`POISONED`] of it poisoned.
const WINDOW: u64 = 700;
const POISONED: usize = 3;
/// The resmem page that is poisoned.
const RESMEM_PAGE: u64 = 200;

/// The shared page in which a touching child's SIGBUS handler leaves the siginfo.
static REPORT: AtomicUsize = AtomicUsize::new(0);

extern "C" fn report_and_exit(_sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let out = REPORT.load(Ordering::SeqCst) as *mut i64;
    // SAFETY: The kernel passes a valid siginfo; `out` is the child's mapping of four i64s
    // shared with the parent; `si_addr_lsb` is a short at mm::SI_ADDR_LSB_OFFSET.
    unsafe {
        *out = (*info).si_code as i64;
        *out.add(1) = (*info).si_addr() as i64;
        *out.add(2) =
            std::ptr::read_unaligned((info as *const u8).add(mm::SI_ADDR_LSB_OFFSET) as *const i16)
                as i64;
        libc::_exit(EXIT_SIGBUS);
    }
}

/// Reads one byte at `addr` in a forked child: `None` if the load succeeded, else the SIGBUS
/// it raised (count 1). Fails if the child ends any other way.
fn touch(addr: usize) -> Result<Option<SigbusRecord>, Failure> {
    // SAFETY: A new anonymous shared mapping of one page.
    let shared = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page_size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if shared == libc::MAP_FAILED {
        return Err(io::Error::last_os_error().into());
    }
    REPORT.store(shared as usize, Ordering::SeqCst);
    let child = mm::fork_child(|| {
        // SAFETY: An all-zero sigaction is a valid start; the handler only stores and exits.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = report_and_exit as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
            // `addr` is in a mapping the child inherited.
            std::ptr::read_volatile(addr as *const u8);
        }
        0
    });
    let result = child
        .and_then(|mut c| c.wait_timeout(TOUCH_TIMEOUT))
        .map_err(Failure::from)
        .and_then(|end| {
            // SAFETY: The child has ended; the page holds what its handler stored, if anything.
            let r = unsafe { std::slice::from_raw_parts(shared as *const i64, 3) };
            match end {
                ChildEnd::Exited(0) => Ok(None),
                ChildEnd::Exited(EXIT_SIGBUS) => Ok(Some(SigbusRecord {
                    count: 1,
                    code: r[0] as i32,
                    addr: r[1] as usize,
                    addr_lsb: r[2] as i32,
                })),
                other => fail!("the child touching {addr:#x}: {other}"),
            }
        });
    // SAFETY: Unmaps the page mapped above.
    unsafe { libc::munmap(shared, page_size()) };
    result
}

/// What a new fault on a poisoned page at `addr` must give: SIGBUS `BUS_MCEERR_AR` there, one
/// page (`si_addr_lsb` = the page shift), from the Rust driver; a mapping from upstream.
fn expect_refault(what: &str, addr: usize) -> Outcome {
    let got = touch(addr)?;
    tap::observe_listed(
        6,
        &format!("refault {what}"),
        match got {
            Some(r) => format!("SIGBUS code {} lsb {}", r.code, r.addr_lsb),
            None => "mapped".into(),
        },
    );
    if poisoned_pages_stay_poisoned() {
        let want = SigbusRecord {
            count: 1,
            code: BUS_MCEERR_AR,
            addr,
            addr_lsb: mm::page_shift() as i32,
        };
        check_eq!(
            got,
            Some(want),
            "{what}: a fault on the poisoned page (difference 6: never mapped again)"
        );
    } else {
        check_eq!(
            got,
            None,
            "{what}: a fault on the poisoned page (upstream maps it again)"
        );
    }
    Ok(())
}

/// Poisons the page at `pa` from this process, which maps it in `map` at `addr`: the write
/// succeeds and this process gets one more SIGBUS `BUS_MCEERR_AR` at `addr`.
fn poison(pa: u64, addr: usize) -> Outcome {
    let before = mm::sigbus_record().count;
    std::fs::OpenOptions::new()
        .write(true)
        .open(HARD_OFFLINE)
        .and_then(|mut f| f.write_all(format!("{pa:#x}").as_bytes()))
        .map_err(|e| Failure::Fail(format!("write of {pa:#x} to {HARD_OFFLINE}: {e}")))?;
    let got = mm::sigbus_record();
    check!(
        got.count == before + 1 && got.code == BUS_MCEERR_AR && got.addr == addr,
        "poisoning {pa:#x}: {} SIGBUS (last si_code {} at {:#x}), expected {} with BUS_MCEERR_AR at {addr:#x}",
        got.count,
        got.code,
        got.addr,
        before + 1
    );
    Ok(())
}

fn page_off(page: u64) -> u64 {
    page * page_size() as u64
}

/// The Rust driver's debugfs listing of the device's poisoned pages.
fn debugfs_listing() -> io::Result<String> {
    std::fs::read_to_string(format!(
        "/sys/kernel/debug/{DRIVER_NAME}/{GPU_BDF}/poisoned_pages"
    ))
}

/// pread and pwrite of `len` bytes at `off` of `m`: EIO from the Rust driver, the full count
/// from upstream.
fn expect_rw(dev: &Device, m: &GpuMem, off: u64, len: usize, poisoned: bool) -> Outcome {
    let mut buf = vec![0u8; len];
    let r = dev.mem_read(m, off, &mut buf).map_err(|e| e.raw_os_error());
    let w = dev.mem_write(m, off, &buf).map_err(|e| e.raw_os_error());
    if poisoned {
        tap::trace_listed(6);
    }
    let want = if poisoned && poisoned_pages_stay_poisoned() {
        Err(Some(libc::EIO))
    } else {
        Ok(len)
    };
    check_eq!(r, want, "pread of {len} bytes at {} {off:#x}", m.name());
    check_eq!(w, want, "pwrite of {len} bytes at {} {off:#x}", m.name());
    Ok(())
}

struct Window {
    map: Mapping,
    pa: u64,
}

impl Window {
    fn map(dev: &Device, m: &GpuMem) -> io::Result<Window> {
        Ok(Window {
            map: mm::mmap_shared(&dev.fd, m.at(page_off(WINDOW)), 16 * page_size())?,
            pa: m.pa(page_off(WINDOW + POISONED as u64)),
        })
    }

    fn poisoned_addr(&self) -> usize {
        self.map.addr() + POISONED * page_size()
    }
}

/// A PMD-aligned mapping of a PMD of usemem with a page in the middle poisoned before anything
/// was faulted: touching the good pages after it costs one fault each from the Rust driver
/// (each PMD fault over the poisoned page falls back to pages) and one fault in all from
/// upstream (one PMD entry).
fn huge_mapping_around_it(dev: &Device, m: &GpuMem) -> Outcome {
    let pmd = mm::pmd_pfnmap().map_err(Failure::Skip)?;
    let pages_in_pmd = (pmd / page_size()) as u64;
    // The second PMD where usemem has one, else the first (one PMD of 64 KiB pages is 512 MiB,
    // the rig's whole usemem); pages from the middle of it, past memory_failure_test's.
    let pmd_off = if m.memlength >= 2 * pmd as u64 {
        pmd as u64
    } else {
        0
    };
    if pmd_off + pmd as u64 > m.memlength {
        return Err(Failure::Skip(format!(
            "usemem ({:#x} bytes) holds no PMD of {pmd:#x} bytes",
            m.memlength
        )));
    }
    let first = pmd_off / page_size() as u64 + pages_in_pmd / 2;
    let n = (pages_in_pmd / 4).min(64) as usize;
    let bad = 5usize;
    let map = mm::mmap_shared_aligned(&dev.fd, m.at(pmd_off), pmd, pmd)?;
    let base = map.addr() + (first - pmd_off / page_size() as u64) as usize * page_size();
    poison(m.pa(page_off(first + bad as u64)), base + bad * page_size())?;
    let before = mm::minor_faults();
    for i in (0..n).filter(|&i| i != bad) {
        map.read_u8((base - map.addr()) + i * page_size());
    }
    let faults = mm::minor_faults() - before;
    tap::observe_listed(6, "faults around the poisoned page", faults);
    let want = if poisoned_pages_stay_poisoned() {
        n as u64 - 1
    } else {
        1
    };
    println!(
        "# huge_mapping_around_it: {} good pages touched with {faults} faults",
        n - 1
    );
    check_eq!(
        faults,
        want,
        "faults to touch {} good pages of a PMD with a poisoned page (PMD of {pmd:#x} bytes)",
        n - 1
    );
    expect_refault("in a PMD-aligned mapping", base + bad * page_size())
}

/// What the tests of the table share: the device (closed before the test of a closed and
/// re-opened device) and the mapping with the poisoned page, from the first test on.
struct Ctx {
    dev: Option<Device>,
    window: Option<Window>,
}

/// A test of the device as opened first.
fn with(
    f: impl FnOnce(&Device, &mut Option<Window>) -> Outcome,
) -> impl FnOnce(&mut Ctx) -> Outcome {
    move |ctx| match &ctx.dev {
        Some(dev) => f(dev, &mut ctx.window),
        None => fail!("the device is closed"),
    }
}

fn main() {
    // Its I/O is the same in every boot: tapsum compares it between the builds.
    nvgrace_guest_tests::tap::trace_io();
    tap::diag(format!(
        "driver build: {}, GPU model: {}",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));
    let need = || -> Outcome {
        if !std::path::Path::new(HARD_OFFLINE).exists() {
            return Err(Failure::Skip(format!(
                "no {HARD_OFFLINE} (CONFIG_MEMORY_FAILURE, CONFIG_MEMORY_HOTPLUG)"
            )));
        }
        Ok(())
    };
    if let Err(e) = mm::install_sigbus_recorder() {
        let why = e.to_string();
        Harness::run_table(
            &mut (),
            vec![test("sigbus_recorder", move |_: &mut ()| fail!("{why}"))],
        );
    }
    let opened = Device::open_iommufd(GPU_BDF).and_then(|d| {
        let (u, r) = d.gpu_mem()?;
        Ok((d, u, r))
    });
    let (dev, usemem, resmem) = match opened {
        Ok(x) => x,
        Err(e) => Harness::open_failed(e),
    };

    let tests = vec![
        test(
            "poison_while_mapped",
            with(|dev, window| {
                need()?;
                let w = Window::map(dev, &usemem)?;
                w.map.read_u8(POISONED * page_size());
                poison(w.pa, w.poisoned_addr())?;
                // Neither driver zaps what is already mapped: the existing entry still reads.
                check_eq!(
                    touch(w.poisoned_addr())?,
                    None,
                    "the page through the entry mapped before the failure"
                );
                *window = Some(w);
                Ok(())
            }),
        ),
        test(
            "refault_after_reset",
            with(|dev, window| {
                let w = window
                    .as_ref()
                    .ok_or_else(|| Failure::Skip("no poisoned page".into()))?;
                dev.reset()?;
                expect_refault("after VFIO_DEVICE_RESET", w.poisoned_addr())?;
                check_eq!(
                    touch(w.poisoned_addr() + page_size())?,
                    None,
                    "the next page after the reset"
                );
                Ok(())
            }),
        ),
        test(
            "refault_after_munmap_mmap",
            with(|dev, window| {
                window
                    .take()
                    .ok_or_else(|| Failure::Skip("no poisoned page".into()))?;
                let w = Window::map(dev, &usemem)?;
                expect_refault("in a new mapping", w.poisoned_addr())
            }),
        ),
        test(
            "pread_pwrite",
            with(|dev, _| {
                need()?;
                let off = page_off(WINDOW + POISONED as u64);
                // Across the start of the poisoned page, inside it, and the next page alone.
                expect_rw(dev, &usemem, off - 8, 16, true)?;
                expect_rw(dev, &usemem, off + 64, 8, true)?;
                expect_rw(dev, &usemem, off + page_size() as u64, 8, false)
            }),
        ),
        test(
            "huge_mapping_around_it",
            with(|dev, _| {
                need()?;
                huge_mapping_around_it(dev, &usemem)
            }),
        ),
        test(
            "resmem_pread_and_refault",
            with(|dev, _| {
                need()?;
                let r = resmem.ok_or_else(|| {
                    Failure::Skip(format!("{} has no resmem", nvgrace_guest_tests::rig_gpu()))
                })?;
                let map = mm::mmap_shared(&dev.fd, r.at(page_off(RESMEM_PAGE)), page_size())?;
                poison(r.pa(page_off(RESMEM_PAGE)), map.addr())?;
                expect_rw(dev, &r, page_off(RESMEM_PAGE), 8, true)?;
                drop(map);
                let map = mm::mmap_shared(&dev.fd, r.at(page_off(RESMEM_PAGE)), page_size())?;
                expect_refault("resmem, in a new mapping", map.addr())
            }),
        ),
        test("refault_after_close_open", |ctx: &mut Ctx| {
            ctx.dev = None;
            need()?;
            let dev = Device::open_iommufd(GPU_BDF)?;
            let w = Window::map(&dev, &usemem)?;
            expect_refault("after close and open", w.poisoned_addr())?;
            expect_rw(&dev, &usemem, page_off(WINDOW + POISONED as u64), 8, true)
        }),
        test("operator_sees_the_pages", |_: &mut Ctx| {
            need()?;
            let listing = debugfs_listing();
            let log = sys::kernel_log()?;
            let logged = |off: u64| {
                log.iter()
                    .any(|l| l.contains(&format!("memory failure at usemem offset {off:#x} (PFN")))
            };
            let off = page_off(WINDOW + POISONED as u64);
            if poisoned_pages_stay_poisoned() {
                let listing = listing?;
                println!("# poisoned_pages: {}", listing.trim().replace('\n', "; "));
                check!(
                    listing.lines().any(|l| l == format!("usemem {off:#x}")),
                    "debugfs listing has no line 'usemem {off:#x}': {listing:?}"
                );
                if resmem.is_some() {
                    let roff = page_off(RESMEM_PAGE);
                    check!(
                        listing.lines().any(|l| l == format!("resmem {roff:#x}")),
                        "debugfs listing has no line 'resmem {roff:#x}': {listing:?}"
                    );
                }
                check!(logged(off), "no kernel log line for usemem offset {off:#x}");
            } else {
                check!(
                    listing.is_err(),
                    "upstream has a debugfs listing of poisoned pages?"
                );
                check!(
                    !logged(off),
                    "upstream logged the record of a poisoned page?"
                );
            }
            Ok(())
        }),
        test("no_kernel_splat", |_: &mut Ctx| sys::no_kernel_splat()),
    ];
    Harness::run_table(
        &mut Ctx {
            dev: Some(dev),
            window: None,
        },
        tests,
    )
}
