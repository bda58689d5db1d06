// SPDX-License-Identifier: GPL-2.0

//! mmap_test's huge mappings (PMD and PUD faults, the fallback to pages for a misaligned PFN) and
//! the page-table entries they leave.

use nvgrace_guest_tests::acpi;
use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::page_size;
use nvgrace_guest_tests::mm::Mapping;
use nvgrace_guest_tests::pgattr::Pgattr;
use nvgrace_guest_tests::pgattr::MODULE_PATH;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Outcome;

use super::*;

/// Writes a distinct 64-bit marker at each `stride` of `[off, off + len)` with pwrite; returns
/// them (allocated before any measurement).
pub(crate) fn write_markers(
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
pub(crate) fn read_markers(
    what: &str,
    map: &Mapping,
    stride: usize,
    markers: &[u64],
) -> Result<u64, Failure> {
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
pub(crate) fn huge_window(m: &GpuMem, size: u64, extra: u64) -> Option<(u64, usize)> {
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

pub(crate) fn size_name(bytes: usize) -> String {
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
pub(crate) fn pmd_test(ctx: &Ctx, m: &GpuMem) -> Outcome {
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
pub(crate) fn pud_test(ctx: &Ctx) -> Outcome {
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
pub(crate) fn misaligned_test(ctx: &Ctx) -> Outcome {
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

pub(crate) fn page_table_test(ctx: &Ctx) -> Outcome {
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
pub(crate) fn firmware_pa(ctx: &Ctx, m: &GpuMem, off: u64) -> Result<u64, Failure> {
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
pub(crate) fn expect_entry(
    ctx: &Ctx,
    what: &str,
    addr: usize,
    level: &str,
    m: &GpuMem,
    off: u64,
) -> Outcome {
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
