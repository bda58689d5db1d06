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

use nvgrace_guest_tests::acpi;
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
use nvgrace_guest_tests::mm::Mapping;
use nvgrace_guest_tests::model;
use nvgrace_guest_tests::pgattr::Pgattr;
use nvgrace_guest_tests::pgattr::MODULE_PATH;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::vfio;
use nvgrace_guest_tests::GPU_BDF;
use vfio_bindings::bindings::vfio as uapi;

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

/// Writes a distinct 64-bit marker at each `stride` of `[off, off + len)` with pwrite; returns
/// them (allocated before any measurement).
fn write_markers(
    ctx: &Ctx,
    m: &GpuMem,
    off: u64,
    len: usize,
    stride: usize,
    seed: u64,
) -> Result<Vec<u64>, Failure> {
    let mut markers = Vec::with_capacity(len / stride);
    for i in 0..len / stride {
        let v = seed.wrapping_mul(0x1000_0000_01b3) ^ ((off + (i * stride) as u64) << 1) ^ 1;
        ctx.dev
            .mem_write_all(m, off + (i * stride) as u64, &v.to_le_bytes())?;
        markers.push(v);
    }
    Ok(markers)
}

/// Reads the markers back through `map` (one load per stride) and returns the number of minor
/// faults the loads took, failing on the first wrong value.
fn read_markers(what: &str, map: &Mapping, stride: usize, markers: &[u64]) -> Result<u64, Failure> {
    let before = mm::minor_faults();
    let mut wrong = None;
    for (i, want) in markers.iter().enumerate() {
        let got = map.read_u64(i * stride);
        if got != *want && wrong.is_none() {
            wrong = Some((i, got, *want));
        }
    }
    let faults = mm::minor_faults() - before;
    if let Some((i, got, want)) = wrong {
        fail!(
            "{what}: word at {:#x}: got {got:#x}, expected {want:#x}",
            i * stride
        );
    }
    Ok(faults)
}

/// Where a mapping of up to two whole `size`-byte entries (a power of two) at `size`-aligned
/// physical addresses fits in `m`, `extra` bytes past the alignment: `(region offset, number of
/// entries)`. Two entries one entry into the first aligned address when the region has room (a
/// mapping at a non-zero offset of the region), else as many as fit (at most two) from it:
/// on arm64 with 64 KiB pages one PMD maps 512 MiB, all of the default geometry's usemem.
fn huge_window(m: &GpuMem, size: u64, extra: u64) -> Option<(u64, usize)> {
    let aligned = m.phys.next_multiple_of(size) - m.phys;
    let fits = |off: u64| m.memlength.saturating_sub(off + extra) / size;
    if fits(aligned + size) >= 2 {
        return Some((aligned + size + extra, 2));
    }
    match fits(aligned) {
        0 => None,
        n => Some((aligned + extra, n.min(2) as usize)),
    }
}

fn size_name(bytes: usize) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// A PMD-aligned mapping of one or two PMDs (2 MiB each with 4 KiB pages, 512 MiB with 64 KiB)
/// at a PMD-aligned physical address: faulted with PMD entries (the drivers' `huge_fault` at
/// PMD order), so touching every page takes one fault per PMD, not per page (`ru_minflt` counts
/// handled faults) and the entries are PMDs (the rig's page-table module).
fn pmd_test(ctx: &Ctx, m: &GpuMem) -> Outcome {
    let pmd = mm::pmd_pfnmap().map_err(Failure::Skip)?;
    let page = page_size();
    let Some((off, n)) = huge_window(m, pmd as u64, 0) else {
        return Err(Failure::Skip(format!(
            "{} ({:#x} bytes at PA {:#x}) holds no {}-aligned {}",
            m.name(),
            m.memlength,
            m.phys,
            size_name(pmd),
            size_name(pmd)
        )));
    };
    let len = n * pmd;
    let markers = write_markers(ctx, m, off, len, page, 0x2_0000 + m.index as u64)?;
    let map = mm::mmap_shared_aligned(&ctx.dev.fd, m.at(off), len, pmd)?;
    let faults = read_markers(
        &format!("{} {}-aligned mapping", m.name(), size_name(pmd)),
        &map,
        page,
        &markers,
    )?;
    println!(
        "# {}: {}-aligned mapping of {} PMD(s), {} pages touched: {faults} faults",
        m.name(),
        size_name(pmd),
        n,
        len / page
    );
    check!(
        faults <= 4 * n as u64,
        "{}: touching the {} pages of a {}-aligned mapping at PA {:#x} took {faults} faults; PMD mappings take {n}",
        m.name(),
        len / page,
        size_name(pmd),
        m.pa(off)
    );
    expect_entry(ctx, "first PMD", map.addr(), "pmd", m, off)?;
    expect_entry(
        ctx,
        "last PMD",
        map.addr() + (n - 1) * pmd + 3 * page,
        "pmd",
        m,
        off + ((n - 1) * pmd + 3 * page) as u64,
    )?;
    // Writes through the huge mapping reach the memory.
    let at = (n - 1) * pmd + 5 * page + 8;
    map.write_u64(at, 0xfeed_f00d);
    let mut b = [0u8; 8];
    ctx.dev.mem_read_exact(m, off + at as u64, &mut b)?;
    check_eq!(
        u64::from_le_bytes(b),
        0xfeed_f00du64,
        "{} pread of a word written through the PMD mapping",
        m.name()
    );
    Ok(())
}

/// A PUD-aligned mapping of one PUD (1 GiB with 4 KiB pages) at a PUD-aligned physical address:
/// one PUD entry, so touching every PMD-sized part takes one fault (PMDs would take 512). Only
/// where the kernel has PUD-level PFN maps (x86_64); arm64's largest entry is the PMD, which
/// `*_pmd_*` tests at its size.
fn pud_test(ctx: &Ctx) -> Outcome {
    let pud = mm::pud_pfnmap().map_err(Failure::Skip)?;
    let pmd = mm::pmd_size();
    let mut all = vec![ctx.usemem];
    all.extend(ctx.resmem);
    let g = pud as u64;
    let Some((m, off)) = all.iter().find_map(|m| {
        let off = m.phys.next_multiple_of(g) - m.phys;
        (off + g <= m.memlength).then_some((*m, off))
    }) else {
        return Err(Failure::Skip(format!(
            "no region holds a {}-aligned {} of memory",
            size_name(pud),
            size_name(pud)
        )));
    };
    let markers = write_markers(ctx, &m, off, pud, pmd, 0x4_0000)?;
    let map = mm::mmap_shared_aligned(&ctx.dev.fd, m.at(off), pud, pud)?;
    let faults = read_markers(
        &format!("{} {}-aligned mapping", m.name(), size_name(pud)),
        &map,
        pmd,
        &markers,
    )?;
    println!(
        "# {}: {}-aligned mapping, every {} touched: {faults} faults",
        m.name(),
        size_name(pud),
        size_name(pmd)
    );
    check!(
        faults <= 4,
        "{}: touching every {} of a {}-aligned {} at PA {:#x} took {faults} faults; a PUD mapping takes 1",
        m.name(),
        size_name(pmd),
        size_name(pud),
        size_name(pud),
        m.pa(off)
    );
    expect_entry(
        ctx,
        "PUD",
        map.addr() + 5 * pmd,
        "pud",
        &m,
        off + 5 * pmd as u64,
    )
}

/// A PMD-aligned virtual address over a physical address that is not: no PMD may be used (it
/// would map the wrong memory); every page faults on its own and reads its own data. The
/// mapping covers one or two whole PMD-aligned PMDs of virtual addresses, one page past a
/// PMD-aligned physical address, in usemem, or in resmem where usemem has no room for it (on
/// arm64 with 64 KiB pages a PMD is all of the default usemem).
fn misaligned_test(ctx: &Ctx) -> Outcome {
    let pmd = mm::pmd_pfnmap().map_err(Failure::Skip)?;
    let page = page_size();
    let Some((m, off, n)) = std::iter::once(ctx.usemem)
        .chain(ctx.resmem)
        .find_map(|m| huge_window(&m, pmd as u64, page as u64).map(|(off, n)| (m, off, n)))
    else {
        return Err(Failure::Skip(format!(
            "no region holds a {} of memory one page past a {}-aligned address",
            size_name(pmd),
            size_name(pmd)
        )));
    };
    let len = n * pmd;
    let markers = write_markers(ctx, &m, off, len, page, 0x6_0000)?;
    let map = mm::mmap_shared_aligned(&ctx.dev.fd, m.at(off), len, pmd)?;
    let faults = read_markers(
        &format!(
            "{} {}-aligned mapping of a page-aligned PA",
            m.name(),
            size_name(pmd)
        ),
        &map,
        page,
        &markers,
    )?;
    println!(
        "# {}: {}-aligned VA over a PA that is not, {} pages touched: {faults} faults",
        m.name(),
        size_name(pmd),
        len / page
    );
    check!(
        faults >= (len / page) as u64,
        "{}: touching the {} pages of a mapping whose PA {:#x} is not {}-aligned took only {faults} faults",
        m.name(),
        len / page,
        m.pa(off),
        size_name(pmd)
    );
    expect_entry(
        ctx,
        "misaligned",
        map.addr() + page,
        "pte",
        &m,
        off + page as u64,
    )
}

fn page_table_test(ctx: &Ctx) -> Outcome {
    let m = ctx.usemem;
    let off = 8 * page_size() as u64;
    let map = mm::mmap_shared(&ctx.dev.fd, m.at(off), 4 * page_size())?;
    map.write_u8(0, 0x5a);
    expect_entry(ctx, "touched page", map.addr(), "pte", &m, off)?;
    // The next page was not touched: nothing maps it (faults map one page of an unaligned
    // mapping, no fault-around for PFN maps).
    let pg = Pgattr::load(MODULE_PATH)?;
    let next = pg
        .user(map.addr() + page_size())
        .map_err(|e| e.raw_os_error());
    check_eq!(
        next.map(|l| l.level),
        Err(Some(libc::ENOENT)),
        "the untouched next page"
    );
    Ok(())
}

/// The physical address of byte `off` of `m` by the firmware's description of the GPU memory
/// (the ACPI `_DSD`, not the rig's configuration): usemem starts at `nvidia,gpu-mem-base-pa`,
/// resmem right after usemem's memory (upstream's layout).
fn firmware_pa(ctx: &Ctx, m: &GpuMem, off: u64) -> Result<u64, Failure> {
    let Some((base, size)) = acpi::gpu_memory()? else {
        return Err(Failure::Fail(
            "no nvidia,gpu-mem-base-pa/-size in the installed ACPI tables".into(),
        ));
    };
    let start = if m.index == ctx.usemem.index {
        base
    } else {
        base + ctx.usemem.memlength
    };
    check!(
        start + off < base + size,
        "{} byte {off:#x} lies past the firmware's GPU memory ({size:#x} bytes at {base:#x})",
        m.name()
    );
    Ok(start + off)
}

/// The page-table entry that maps user address `addr`, looked up by the rig's page-table module
/// (nvgrace_pgattr, `follow_pfnmap_start()`): an entry of `level` (`pte`, `pmd`, `pud`) that
/// translates `addr` to byte `off` of `m` as the firmware places it.
fn expect_entry(ctx: &Ctx, what: &str, addr: usize, level: &str, m: &GpuMem, off: u64) -> Outcome {
    let pg = Pgattr::load(MODULE_PATH)?;
    let leaf = pg.user(addr)?;
    let pa = firmware_pa(ctx, m, off)?;
    tap::observe(&format!("{} {what} entry", m.name()), &leaf.level);
    check_eq!(
        (leaf.level.as_str(), leaf.phys),
        (level, pa),
        "{} {what}: the entry mapping {addr:#x} (level, physical address); {}",
        m.name(),
        leaf
    );
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
    let mut t = Harness::new(27);
    // Its I/O is the same in every boot: tapsum compares it between the builds.
    nvgrace_guest_tests::tap::trace_io();
    t.diag(format!(
        "driver build: {}, GPU model: {}",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));
    let ctx = match Ctx::open(GPU_BDF) {
        Ok(c) => c,
        Err(e) => {
            t.test("open_device", || Err(Failure::Fail(e.to_string())));
            t.finish();
        }
    };
    t.diag(format!("usemem: {:x?}", ctx.usemem));
    t.diag(format!("resmem: {:x?}", ctx.resmem));
    let use_ = ctx.usemem;

    t.test("regions_mmap_capable", || regions_test(&ctx));
    t.test("usemem_mmap_whole", || whole_region_test(&ctx, &use_));
    t.test("resmem_mmap_whole", || {
        whole_region_test(&ctx, &resmem_or_skip(&ctx)?)
    });
    t.test("usemem_smaps_vm_flags", || smaps_flags_test(&ctx, &use_));
    t.test("resmem_smaps_vm_flags", || {
        smaps_flags_test(&ctx, &resmem_or_skip(&ctx)?)
    });
    t.test("usemem_mapping_cacheable", || {
        cache_attribute_test(&ctx, &use_)
    });
    t.test("resmem_mapping_write_combining", || {
        cache_attribute_test(&ctx, &resmem_or_skip(&ctx)?)
    });
    t.test("usemem_bounds", || bounds_test(&ctx, &use_));
    t.test("resmem_bounds", || {
        bounds_test(&ctx, &resmem_or_skip(&ctx)?)
    });
    t.test("offset_length_overflow", || overflow_test(&ctx));
    t.test("usemem_partial_mapping_at_offset", || {
        partial_mapping_test(&ctx, &use_)
    });
    t.test("resmem_partial_mapping_at_offset", || {
        partial_mapping_test(&ctx, &resmem_or_skip(&ctx)?)
    });
    t.test("usemem_coherence", || coherence_test(&ctx, &use_));
    t.test("resmem_coherence", || {
        coherence_test(&ctx, &resmem_or_skip(&ctx)?)
    });
    t.test("usemem_pmd_aligned", || pmd_test(&ctx, &use_));
    t.test("resmem_pmd_aligned", || {
        pmd_test(&ctx, &resmem_or_skip(&ctx)?)
    });
    t.test("pud_aligned", || pud_test(&ctx));
    t.test("misaligned_pfn_falls_back_to_pages", || {
        misaligned_test(&ctx)
    });
    t.test("page_table_after_touch", || page_table_test(&ctx));
    t.test("usemem_memory_disabled_sigbus", || {
        memory_disabled_test(&ctx, &use_)
    });
    t.test("resmem_memory_disabled_sigbus", || {
        memory_disabled_test(&ctx, &resmem_or_skip(&ctx)?)
    });
    t.test("memory_disabled_pending_reset", || {
        memory_disabled_pending_reset_test(&ctx)
    });
    t.test("usemem_reset_zaps_and_refaults", || {
        reset_refault_test(&ctx, &use_)
    });
    t.test("resmem_reset_zaps_and_refaults", || {
        reset_refault_test(&ctx, &resmem_or_skip(&ctx)?)
    });
    t.test("private_mapping", || private_mapping_test(&ctx));
    t.test("device_still_works", || {
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
    });
    drop(ctx);
    t.test("no_kernel_splat", sys::no_kernel_splat);
    t.finish()
}
