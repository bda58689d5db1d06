// SPDX-License-Identifier: GPL-2.0

//! mmap of the GPU memory regions, usemem (BAR4) and resmem (BAR2): upstream
//! `nvgrace_gpu_mmap()` and `nvgrace_gpu_vfio_pci_huge_fault()`, with vfio-pci-core's zapping
//! of the mappings on memory disable and reset and the readiness check of the first fault after
//! a reset (`nvgrace_gpu_check_device_ready()`).
//!
//! Faults that must fail are made in forked children (no signal handler can return from a
//! SIGBUS raised by a load); the parent checks the child's wait status. Times are only ever
//! asserted as lower bounds that prove a wait happened.
//!
//! A fault on a GPU that never becomes ready after a reset (SIGBUS after the 30 s budget) is
//! tested by device_fault_test, side by side with the reads and writes that wait the same way.

use std::time::Duration;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::expected_regions;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::gpumem::OpenGpu;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::page_size;
use nvgrace_guest_tests::mm::ChildEnd;
use nvgrace_guest_tests::model;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::tap::Test;
use nvgrace_guest_tests::vfio;
use nvgrace_guest_tests::GPU_BDF;
use vfio_bindings::bindings::vfio as uapi;

mod huge;

use huge::misaligned_test;
use huge::page_table_test;
use huge::pmd_test;
use huge::pud_test;

/// The VFIO region window: region offsets are `index << 40` (`VFIO_PCI_OFFSET_SHIFT`).
const REGION_WINDOW: u64 = 1 << 40;
/// How long a child that touches a mapping may take before the test gives up on it: well past
/// the drivers' 30 s readiness budget (upstream `POLL_TIMEOUT_MS`), under TCG.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// What every test here starts from.
type Ctx = OpenGpu;

fn resmem_or_skip(ctx: &Ctx) -> Result<GpuMem, Failure> {
    ctx.resmem
        .ok_or_else(|| Failure::Skip(format!("{} has no resmem", nvgrace_guest_tests::rig_gpu())))
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EINVAL => "EINVAL".into(),
        libc::EOVERFLOW => "EOVERFLOW".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EIO => "EIO".into(),
        libc::ETIME => "ETIME".into(),
        e => format!("errno {e}"),
    }
}

fn mmap_result(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "mapped".into(),
        Err(e) => errno_name(e),
    }
}

/// Makes sure no reset is pending: the first access after a reset waits for readiness and
/// clears the drivers' `reset_done`, which changes how memory disable is handled.
fn settle(ctx: &Ctx, m: &GpuMem) -> Outcome {
    let mut b = [0u8; 8];
    ctx.dev.mem_read_exact(m, 0, &mut b)?;
    Ok(())
}

fn regions_test(ctx: &Ctx) -> Outcome {
    let want = uapi::VFIO_REGION_INFO_FLAG_READ
        | uapi::VFIO_REGION_INFO_FLAG_WRITE
        | uapi::VFIO_REGION_INFO_FLAG_MMAP;
    let page = page_size() as u64;
    let mut all = vec![ctx.usemem];
    all.extend(ctx.resmem);
    for m in &all {
        check_eq!(
            m.flags & want,
            want,
            "{} region flags READ|WRITE|MMAP",
            m.name()
        );
        check!(
            m.memlength > 0 && m.memlength % page == 0,
            "{} memlength {:#x} not a page multiple",
            m.name(),
            m.memlength
        );
        check!(
            m.memlength <= m.bar_size,
            "{} memlength {:#x} > BAR size {:#x}",
            m.name(),
            m.memlength,
            m.bar_size
        );
    }
    if let Some((u, r)) = expected_regions() {
        check_eq!(
            (ctx.usemem.memlength, ctx.usemem.bar_size),
            (u.memlength, u.bar_size),
            "usemem (memlength, BAR size)"
        );
        check_eq!(
            ctx.resmem.map(|m| (m.memlength, m.bar_size)),
            r.map(|r| (r.memlength, r.bar_size)),
            "resmem (memlength, BAR size)"
        );
    }
    // The physical addresses are checked from the page tables (`page_table_after_touch`,
    // `*_pmd_aligned`) against the firmware's table, not here against the rig's configuration,
    // which is where both the library's `phys` and these expectations come from.
    Ok(())
}

fn whole_region_test(ctx: &Ctx, m: &GpuMem) -> Outcome {
    let map = mm::mmap_shared(&ctx.dev.fd, m.fd_offset, m.memlength as usize).map_err(|e| {
        Failure::Fail(format!(
            "mmap of all {:#x} bytes of {}: {e}",
            m.memlength,
            m.name()
        ))
    })?;
    let last = m.memlength - 8;
    let (a, b) = (
        0x1122_3344_5566_7788u64 ^ m.index as u64,
        0x99aa_bbcc_ddee_ff00u64 ^ m.index as u64,
    );
    ctx.dev.mem_write_all(m, 0, &a.to_le_bytes())?;
    ctx.dev.mem_write_all(m, last, &b.to_le_bytes())?;
    check_eq!(
        map.read_u64(0),
        a,
        "{} first word through the mapping",
        m.name()
    );
    check_eq!(
        map.read_u64(last as usize),
        b,
        "{} last word through the mapping",
        m.name()
    );
    Ok(())
}

fn smaps_flags_test(ctx: &Ctx, m: &GpuMem) -> Outcome {
    let map = mm::mmap_shared(&ctx.dev.fd, m.fd_offset, 4 * page_size())?;
    map.read_u8(0);
    let sm = mm::smaps_of(map.addr())?
        .ok_or_else(|| Failure::Fail(format!("no smaps entry for {:#x}", map.addr())))?;
    let flags = sm.vm_flags();
    // VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP from the driver, VM_SHARED from mmap.
    for f in ["io", "pf", "de", "dd", "sh"] {
        check!(
            flags.iter().any(|x| x == f),
            "{} VmFlags {:?} lack '{f}' ({})",
            m.name(),
            flags,
            sm.header
        );
    }
    Ok(())
}

fn bounds_test(ctx: &Ctx, m: &GpuMem) -> Outcome {
    let fd = &ctx.dev.fd;
    let at = |off: u64| m.at(off) as i64;
    let len = m.memlength as usize;
    let (page, page64) = (page_size(), page_size() as u64);
    let mut cases = vec![
        (
            "whole memory plus a page",
            at(0),
            len + page,
            Err(libc::EINVAL),
        ),
        (
            "a page at memlength",
            at(m.memlength),
            page,
            Err(libc::EINVAL),
        ),
        (
            "two pages over the end",
            at(m.memlength - page64),
            2 * page,
            Err(libc::EINVAL),
        ),
        ("the last page", at(m.memlength - page64), page, Ok(())),
    ];
    if m.bar_size > m.memlength {
        // Inside the BAR, past the memory: the BAR reads all-ones there, it cannot be mapped.
        cases.push((
            "the last page of the BAR, past the memory",
            at(m.bar_size - page64),
            page,
            Err(libc::EINVAL),
        ));
    }
    let mut bad = Vec::new();
    for (what, off, len, want) in cases {
        let got = mm::mmap_errno(fd, off, len);
        if got != want {
            bad.push(format!(
                "{what} (offset {off:#x}, length {len:#x}): {}, expected {}",
                mmap_result(got),
                mmap_result(want)
            ));
        }
    }
    check!(bad.is_empty(), "{}:\n{}", m.name(), bad.join("\n"));
    Ok(())
}

/// Offsets and lengths whose end overflows the region's 40-bit window or the file offset. Both
/// drivers compute `end = PFN_PHYS(pgoff) + len` with an overflow check (EOVERFLOW), but on
/// 64-bit the in-region page offset has 28 bits and a mapping at most 47, so that sum cannot
/// overflow: a mapping that runs past the region's window gets EINVAL from the
/// `end > memlength` check, a file offset whose region index does not exist gets EINVAL from
/// vfio-pci-core's mmap, and a file offset + length past 2^64 gets EOVERFLOW from the mm core
/// (`file_mmap_ok()`) before the driver is called.
fn overflow_test(ctx: &Ctx) -> Outcome {
    let fd = &ctx.dev.fd;
    let m = &ctx.usemem;
    let (page, page64) = (page_size(), page_size() as u64);
    let cases: Vec<(&str, i64, usize, Result<(), i32>)> = vec![
        (
            "last page of the 2^40 window, two pages",
            m.at(REGION_WINDOW - page64) as i64,
            2 * page,
            Err(libc::EINVAL),
        ),
        (
            "a 2^40-byte mapping",
            m.at(0) as i64,
            REGION_WINDOW as usize,
            Err(libc::EINVAL),
        ),
        (
            "a 2^46-byte mapping at the last page of the window",
            m.at(REGION_WINDOW - page64) as i64,
            1 << 46,
            Err(libc::EINVAL),
        ),
        // The last page below 2^64 ends at 2^64: mm's file_mmap_ok() refuses before any driver.
        (
            "file offset 2^64 - one page, one page",
            -(page as i64),
            page,
            Err(libc::EOVERFLOW),
        ),
        (
            "file offset 2^64 - two pages, two pages",
            -2 * page as i64,
            2 * page,
            Err(libc::EOVERFLOW),
        ),
        ("file offset 2^63", i64::MIN, page, Err(libc::EINVAL)),
    ];
    let mut bad = Vec::new();
    for (what, off, len, want) in cases {
        let got = mm::mmap_errno(fd, off, len);
        if got != want {
            bad.push(format!(
                "{what} (offset {off:#x}, length {len:#x}): {}, expected {}",
                mmap_result(got),
                mmap_result(want)
            ));
        }
    }
    check!(bad.is_empty(), "{}", bad.join("\n"));
    Ok(())
}

fn compare(what: &str, got: &[u8], want: &[u8]) -> Outcome {
    if let Some(i) = mm::first_difference(got, want) {
        fail!(
            "{what}: first difference at byte {i:#x}: got {:#04x}, expected {:#04x}",
            got.get(i).copied().unwrap_or(0),
            want.get(i).copied().unwrap_or(0)
        );
    }
    Ok(())
}

fn partial_mapping_test(ctx: &Ctx, m: &GpuMem) -> Outcome {
    let seed = 0x5eed_0000 + m.index as u64;
    let (page, page64) = (page_size(), page_size() as u64);
    for (first_page, pages) in [(37u64, 5usize), (m.memlength / page64 - 3, 3)] {
        let off = first_page * page64;
        let want = mm::pattern(seed, off, pages * page);
        ctx.dev.mem_write_all(m, off, &want)?;
        let map = mm::mmap_shared(&ctx.dev.fd, m.at(off), pages * page)?;
        let mut got = vec![0u8; pages * page];
        map.read_bytes(0, &mut got);
        compare(
            &format!("{} mapping of {pages} pages at page {first_page}", m.name()),
            &got,
            &want,
        )?;
    }
    Ok(())
}

fn coherence_test(ctx: &Ctx, m: &GpuMem) -> Outcome {
    let page_len = page_size();
    let base = 100 * page_len as u64;
    let map = mm::mmap_shared(&ctx.dev.fd, m.at(base), 16 * page_len)?;
    let page = |p: usize| base + (p * page_len) as u64;
    let mut got = vec![0u8; page_len];

    // pwrite, then read through the (not yet faulted) mapping.
    let a = mm::pattern(0xa, page(3), page_len);
    ctx.dev.mem_write_all(m, page(3), &a)?;
    map.read_bytes(3 * page_len, &mut got);
    compare(&format!("{}: pwrite then mapping read", m.name()), &got, &a)?;

    // Write through the mapping, then pread.
    let b = mm::pattern(0xb, page(7), page_len);
    map.write_bytes(7 * page_len, &b);
    ctx.dev.mem_read_exact(m, page(7), &mut got)?;
    compare(&format!("{}: mapping write then pread", m.name()), &got, &b)?;

    // The same page both ways while it stays mapped: nothing stale on either side.
    let c = mm::pattern(0xc, page(3), page_len);
    ctx.dev.mem_write_all(m, page(3), &c)?;
    map.read_bytes(3 * page_len, &mut got);
    compare(
        &format!("{}: second pwrite then read of the faulted page", m.name()),
        &got,
        &c,
    )?;
    let d = mm::pattern(0xd, page(3), page_len);
    map.write_bytes(3 * page_len, &d);
    ctx.dev.mem_read_exact(m, page(3), &mut got)?;
    compare(
        &format!("{}: mapping write then pread of the same page", m.name()),
        &got,
        &d,
    )?;
    Ok(())
}

/// Memory Space Enable cleared in the Command register: vfio-pci-core zaps the BAR mappings and
/// every fault fails (`vfio_pci_vmf_insert_pfn()`), for a page never touched and for a page that
/// was mapped. pread/pwrite are not gated by it (upstream: the hardware makes such accesses
/// harmless) unless a reset is pending, see `memory_disabled_pending_reset`.
fn memory_disabled_test(ctx: &Ctx, m: &GpuMem) -> Outcome {
    settle(ctx, m)?;
    let map = mm::mmap_shared(
        &ctx.dev.fd,
        m.at(200 * (page_size() as u64)),
        8 * page_size(),
    )?;
    map.write_u64(0, 0xabcd_0000 + m.index as u64);
    let prev = ctx.dev.set_memory_enable(false)?;
    let outcome = (|| -> Outcome {
        check!(
            prev & 0x2 != 0,
            "{}: memory was not enabled before the test (Command {prev:#x})",
            m.name()
        );
        let (end, _) = mm::touch_in_child(map.addr() + 3 * page_size(), CHILD_TIMEOUT)?;
        check_eq!(
            end,
            ChildEnd::Signaled(libc::SIGBUS),
            "{}: touching an unfaulted page with memory disabled ({end})",
            m.name()
        );
        let (end, _) = mm::touch_in_child(map.addr(), CHILD_TIMEOUT)?;
        check_eq!(
            end,
            ChildEnd::Signaled(libc::SIGBUS),
            "{}: touching the faulted (now zapped) page with memory disabled ({end})",
            m.name()
        );
        let mut b = [0u8; 8];
        let r = ctx.dev.mem_read(m, 200 * (page_size() as u64), &mut b);
        check!(
            matches!(r, Ok(8)),
            "{}: pread with memory disabled and no reset pending: {r:?}, expected 8 bytes",
            m.name()
        );
        Ok(())
    })();
    ctx.dev.set_memory_enable(true)?;
    outcome?;
    let (end, _) = mm::touch_in_child(map.addr() + 3 * page_size(), CHILD_TIMEOUT)?;
    check_eq!(
        end,
        ChildEnd::Exited(0),
        "{}: touching the page after memory is enabled again ({end})",
        m.name()
    );
    check_eq!(
        map.read_u64(0),
        0xabcd_0000 + m.index as u64,
        "{}: data after memory is enabled again",
        m.name()
    );
    Ok(())
}

/// After a reset and before the first access, memory disabled: the readiness check refuses
/// (`-EIO` from `nvgrace_gpu_check_device_ready()`), so pread fails with EIO and faults with
/// SIGBUS; once memory is enabled both work.
/// The cache attribute of a faulted-in page of the region, from the page-table dump: usemem is
/// mapped cacheable (no PCD/PWT), resmem write-combining (upstream: `pgprot_writecombine`, with
/// `VM_ALLOW_ANY_UNCACHED` for KVM on arm64). The rig's x86 kernel has no PAT, so
/// write-combining falls back to UC- (`_PAGE_PCD`): the VMA's attribute reaches the page table
/// unchanged (with PAT, x86 would substitute the range's memtype at fault time).
fn cache_attribute_test(ctx: &Ctx, m: &GpuMem) -> Outcome {
    if let Some(why) = mm::x86_ptdump_unavailable() {
        return Err(Failure::Skip(why));
    }
    settle(ctx, m)?;
    let map = mm::mmap_shared(&ctx.dev.fd, m.at(0), page_size())?;
    map.read_u8(0);
    let entry = mm::page_table_entry(map.addr())?
        .ok_or_else(|| Failure::Fail(format!("{:#x} not in the page-table dump", map.addr())))?;
    let flags: Vec<&str> = entry.split_whitespace().skip(2).collect();
    check!(
        flags.contains(&"USR"),
        "{} page not a user page: {entry}",
        m.name()
    );
    let uncached = flags.contains(&"PCD") || flags.contains(&"PWT");
    match m.index {
        vfio::region::BAR2 => check!(
            flags.contains(&"PCD"),
            "resmem page lacks PCD (write-combining, UC- without PAT): {entry}"
        ),
        _ => check!(!uncached, "usemem page not cacheable: {entry}"),
    }
    Ok(())
}

fn memory_disabled_pending_reset_test(ctx: &Ctx) -> Outcome {
    let m = ctx.usemem;
    let map = mm::mmap_shared(
        &ctx.dev.fd,
        m.at(300 * (page_size() as u64)),
        4 * page_size(),
    )?;
    ctx.dev.reset()?;
    let prev = ctx.dev.set_memory_enable(false)?;
    let outcome = (|| -> Outcome {
        check!(
            prev & 0x2 != 0,
            "memory was not enabled after the reset (Command {prev:#x})"
        );
        let mut b = [0u8; 8];
        let r = ctx.dev.mem_read(&m, 300 * (page_size() as u64), &mut b);
        check!(
            matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EIO)),
            "pread after a reset with memory disabled: {r:?}, expected EIO"
        );
        let (end, _) = mm::touch_in_child(map.addr(), CHILD_TIMEOUT)?;
        check_eq!(
            end,
            ChildEnd::Signaled(libc::SIGBUS),
            "touch after a reset with memory disabled ({end})"
        );
        Ok(())
    })();
    ctx.dev.set_memory_enable(true)?;
    outcome?;
    let mut b = [0u8; 8];
    ctx.dev
        .mem_read_exact(&m, 300 * (page_size() as u64), &mut b)?;
    let (end, _) = mm::touch_in_child(map.addr(), CHILD_TIMEOUT)?;
    check_eq!(
        end,
        ChildEnd::Exited(0),
        "touch once memory is enabled again ({end})"
    );
    Ok(())
}

/// VFIO_DEVICE_RESET zaps the mapping; the next touch faults again (one more minor fault),
/// polls readiness (the model logs the driver's status reads) and finds the data, which is RAM.
fn reset_refault_test(ctx: &Ctx, m: &GpuMem) -> Outcome {
    let off = 16 * (page_size() as u64);
    let map = mm::mmap_shared(&ctx.dev.fd, m.at(off), 8 * page_size())?;
    let want = mm::pattern(
        0x7e5e7 + m.index as u64,
        off + 2 * (page_size() as u64),
        page_size(),
    );
    map.write_bytes(2 * page_size(), &want);
    let mut got = vec![0xffu8; page_size()];
    let mark = model::log_mark()?;
    ctx.dev.reset()?;
    let before = mm::minor_faults();
    map.read_bytes(2 * page_size(), &mut got);
    let faults = mm::minor_faults() - before;
    compare(
        &format!("{}: data through the mapping after the reset", m.name()),
        &got,
        &want,
    )?;
    check!(
        faults >= 1,
        "{}: reading the page after the reset took no fault: the mapping was not zapped",
        m.name()
    );
    if !model::readiness_via_bar0() {
        // CXL readiness is read from config space; the zap and refault are checked above.
        return Ok(());
    }
    let log = model::log_since(mark)?;
    let polls = model::readiness_polls(&log);
    check!(
        polls.resets >= 1,
        "{}: the model saw no reset:\n{}",
        m.name(),
        model::tail(&log, 20)
    );
    check!(
        polls.ready_reads >= 1,
        "{}: the first fault after the reset did not check readiness (no C2C status read):\n{}",
        m.name(),
        model::tail(&log, 20)
    );
    Ok(())
}

/// Difference 4 (tests/guest/src/differences.rs): a private mapping of an emulated BAR. The
/// Rust driver refuses it with EINVAL, as vfio-pci-core does for its BARs; upstream maps it, and
/// its first fault would oops the kernel (BUG_ON() in vmf_insert_pfn_prot()), so the mapping is
/// never touched here.
fn private_mapping_test(ctx: &Ctx) -> Outcome {
    use std::os::fd::AsRawFd;
    let refused = nvgrace_guest_tests::differences::private_mmap_refused();
    for m in std::iter::once(ctx.usemem).chain(ctx.resmem) {
        // SAFETY: A new mapping at an address the kernel chooses; removed at once, untouched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                ctx.dev.fd.as_raw_fd(),
                m.at(0) as libc::off_t,
            )
        };
        let got = if p == libc::MAP_FAILED {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            // SAFETY: The mapping just made.
            unsafe { libc::munmap(p, page_size()) };
            Ok(())
        };
        let want = if refused { Err(libc::EINVAL) } else { Ok(()) };
        check!(
            got == want,
            "{}: mmap(MAP_PRIVATE): {}, expected {} (difference 4)",
            m.name(),
            mmap_result(got),
            mmap_result(want)
        );
    }
    Ok(())
}

fn main() {
    // Its I/O is the same in every boot: tapsum compares it between the builds.
    nvgrace_guest_tests::tap::trace_io();
    tap::diag(format!(
        "driver build: {}, GPU model: {}",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));
    let ctx = match Ctx::open(GPU_BDF) {
        Ok(c) => c,
        Err(e) => Harness::open_failed(e),
    };
    tap::diag(format!("usemem: {:x?}", ctx.usemem));
    tap::diag(format!("resmem: {:x?}", ctx.resmem));
    let mut tests = vec![test("regions_mmap_capable", with(regions_test))];
    tests.extend(both("mmap_whole", whole_region_test));
    tests.extend(both("smaps_vm_flags", smaps_flags_test));
    tests.extend([
        test(
            "usemem_mapping_cacheable",
            with(|ctx| cache_attribute_test(ctx, &ctx.usemem)),
        ),
        test(
            "resmem_mapping_write_combining",
            with(|ctx| cache_attribute_test(ctx, &resmem_or_skip(ctx)?)),
        ),
    ]);
    tests.extend(both("bounds", bounds_test));
    tests.push(test("offset_length_overflow", with(overflow_test)));
    tests.extend(both("partial_mapping_at_offset", partial_mapping_test));
    tests.extend(both("coherence", coherence_test));
    tests.extend(both("pmd_aligned", pmd_test));
    tests.extend([
        test("pud_aligned", with(pud_test)),
        test("misaligned_pfn_falls_back_to_pages", with(misaligned_test)),
        test("page_table_after_touch", with(page_table_test)),
    ]);
    tests.extend(both("memory_disabled_sigbus", memory_disabled_test));
    tests.push(test(
        "memory_disabled_pending_reset",
        with(memory_disabled_pending_reset_test),
    ));
    tests.extend(both("reset_zaps_and_refaults", reset_refault_test));
    tests.extend([
        test("private_mapping", with(private_mapping_test)),
        test(
            "device_still_works",
            with(|ctx| {
                // A final consistency check: a fresh mapping still reads what pread reads.
                let m = ctx.usemem;
                let map = mm::mmap_shared(&ctx.dev.fd, m.at(0), page_size())?;
                let mut b = [0u8; 8];
                ctx.dev.mem_read_exact(&m, 0, &mut b)?;
                check_eq!(
                    map.read_u64(0),
                    u64::from_le_bytes(b),
                    "first usemem word: mapping vs pread"
                );
                Ok(())
            }),
        ),
        // The device closed first: the last check reads the kernel log of the whole program.
        test("no_kernel_splat", |open: &mut Option<Ctx>| {
            *open = None;
            sys::no_kernel_splat()
        }),
    ]);
    Harness::run_table(&mut Some(ctx), tests)
}

/// The two tests of one check, of usemem (`usemem_NAME`) and of resmem (`resmem_NAME`, skipped
/// without resmem).
fn both(name: &str, f: fn(&Ctx, &GpuMem) -> Outcome) -> [Test<'static, Option<Ctx>>; 2] {
    [
        test(
            format!("usemem_{name}"),
            with(move |ctx| f(ctx, &ctx.usemem)),
        ),
        test(
            format!("resmem_{name}"),
            with(move |ctx| f(ctx, &resmem_or_skip(ctx)?)),
        ),
    ]
}

/// A test of the open device (the table's context is `None` once the last test has closed it).
fn with(f: impl FnOnce(&Ctx) -> Outcome) -> impl FnOnce(&mut Option<Ctx>) -> Outcome {
    move |open| match open {
        Some(ctx) => f(ctx),
        None => fail!("the device is closed"),
    }
}
