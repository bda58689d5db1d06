// SPDX-License-Identifier: GPL-2.0

//! The cache attributes of the drivers' mappings of the GPU memory at stage 1, read from the
//! page tables by the rig's test module (tests/pgattr, through `nvgrace_guest_tests::pgattr`),
//! on x86_64 and arm64.
//!
//! Both drivers map usemem (BAR4) cacheable and resmem (BAR2) write-combining, to user space
//! (upstream `nvgrace_gpu_mmap()`: `pgprot_writecombine()` for resmem, the VMA's default
//! write-back for usemem) and into the kernel for read/write (`nvgrace_gpu_map_device_mem()`:
//! `memremap(MEMREMAP_WB)` of usemem, `ioremap_wc()` of resmem). On arm64 that is Normal
//! Write-Back and Normal Non-cacheable (MAIR attributes 0xff and 0x44); on x86 write-back, and
//! for write-combining WC with PAT or, without it (the rig's kernel), UC- (PCD). The deliberate
//! differences (tests/guest/src/differences.rs) include none of these: both builds are held to
//! the same types.
//!
//! What x86 cannot tell apart: `pgprot_noncached()` there is UC- too
//! (arch/x86/include/asm/pgtable.h), so without PAT a resmem mapped uncached has the very entry
//! of one mapped write-combining; arm64 tells them apart (Device-nGnRnE against Normal-NC).
//!
//! User mappings are checked at every level the kernel maps PFNs with (PTE, PMD, and PUD on
//! x86_64) where the region holds an aligned block of memory; kernel mappings are found in
//! `/proc/vmallocinfo` (the area that maps the region's physical address) and by walking vmalloc
//! space for the entries that map the region's first and last pages.

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::gpumem::OpenGpu;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::pgattr;
use nvgrace_guest_tests::pgattr::Caching;
use nvgrace_guest_tests::pgattr::Leaf;
use nvgrace_guest_tests::pgattr::Pgattr;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::vfio;
use nvgrace_guest_tests::GPU_BDF;

/// The entry levels a user mapping is checked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Pte,
    Pmd,
    Pud,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Pte => "pte",
            Level::Pmd => "pmd",
            Level::Pud => "pud",
        }
    }

    /// Bytes an entry of this level maps, or why the kernel maps no PFNs with it.
    fn size(self) -> Result<usize, String> {
        match self {
            Level::Pte => Ok(mm::page_size()),
            Level::Pmd => mm::pmd_pfnmap(),
            Level::Pud => mm::pud_pfnmap(),
        }
    }
}

/// The caching both drivers give a region.
fn caching(m: &GpuMem) -> Caching {
    match m.index {
        vfio::region::BAR2 => Caching::WriteCombine,
        _ => Caching::WriteBack,
    }
}

/// The memory type a leaf must have for region `m`.
fn want_type(m: &GpuMem, leaf: &Leaf) -> &'static str {
    pgattr::expected_type(caching(m), leaf.field("kernel-pat") == Some("on"))
}

fn resmem_or_skip(ctx: &OpenGpu) -> Result<GpuMem, Failure> {
    ctx.resmem
        .ok_or_else(|| Failure::Skip(format!("{} has no resmem", nvgrace_guest_tests::rig_gpu())))
}

/// A user mapping of `m` touched, and the entry that maps the touched byte: a one-page mapping
/// for [`Level::Pte`], else a mapping of one aligned block of the level's size at an aligned
/// physical address, which the drivers map with one entry of that level.
fn user_test(ctx: &OpenGpu, pg: &Pgattr, m: &GpuMem, level: Level) -> Outcome {
    let page = mm::page_size();
    let size = level.size().map_err(Failure::Skip)?;
    let (off, touch) = if level == Level::Pte {
        (3 * page as u64, 8)
    } else {
        let off = m.phys.next_multiple_of(size as u64) - m.phys;
        if off + size as u64 > m.memlength {
            return Err(Failure::Skip(format!(
                "{} (PA {:#x}, {:#x} bytes) holds no {size:#x}-aligned block of {size:#x} bytes",
                m.name(),
                m.phys,
                m.memlength
            )));
        }
        (off, size / 2 + 5 * page + 8)
    };
    let map = if level == Level::Pte {
        mm::mmap_shared(&ctx.dev.fd, m.at(off), page)?
    } else {
        mm::mmap_shared_aligned(&ctx.dev.fd, m.at(off), size, size)?
    };
    let word = 0x0cac_4e00_0000_0000 | (m.index as u64) << 8 | level as u64;
    map.write_u64(touch, word);
    check_eq!(
        map.read_u64(touch),
        word,
        "{}: word read back through the mapping",
        m.name()
    );
    let va = map.addr() + touch;
    let leaf = pg
        .user(va)
        .map_err(|e| Failure::Fail(format!("{}: lookup of touched VA {va:#x}: {e}", m.name())))?;
    println!("# {} {}: {leaf}", m.name(), level.name());
    check_eq!(
        leaf.level.as_str(),
        level.name(),
        "{}: level of the entry mapping a touched {size:#x}-aligned mapping of {size:#x} bytes at PA {:#x} ({leaf})",
        m.name(),
        m.pa(off)
    );
    check_eq!(leaf.size, size as u64, "{}: bytes the entry maps", m.name());
    check_eq!(leaf.va, va as u64, "{}: VA looked up", m.name());
    check_eq!(
        leaf.phys,
        m.pa(off + touch as u64),
        "{}: PA the touched VA translates to",
        m.name()
    );
    let want = want_type(m, &leaf);
    if leaf.mem_type != want {
        if let Some(why) = pat_untracked_uc(&leaf) {
            return Err(Failure::Skip(format!("{}: {why}", m.name())));
        }
    }
    check!(
        leaf.mem_type == want,
        "{}: user {} entry has memory type {}, expected {want} ({leaf})",
        m.name(),
        level.name(),
        leaf.mem_type
    );
    Ok(())
}

/// x86 with PAT (Debian's kernels; the rig's has none): a fault that inserts a PFN takes the
/// memory type of the range's memtype reservation, and of memory that is not RAM and has none,
/// UC- (`pfnmap_setup_cachemode()`, `lookup_memtype()` in arch/x86/mm/pat/memtype.c), whatever
/// `vm_page_prot` the driver set: the same for both drivers, whose faults both go through
/// `vmf_insert_pfn*()`. The reason to skip when a UC- user entry is that case (no reservation
/// in `/sys/kernel/debug/x86/pat_memtype_list` covers its PA), else `None`.
fn pat_untracked_uc(leaf: &Leaf) -> Option<String> {
    if std::env::consts::ARCH != "x86_64"
        || leaf.field("kernel-pat") != Some("on")
        || leaf.mem_type != "uc-"
    {
        return None;
    }
    let path = "/sys/kernel/debug/x86/pat_memtype_list";
    let list = std::fs::read_to_string(path).ok()?;
    // Lines: "PAT: [mem 0x00000000fd000000-0x00000000fd400000] write-combining".
    let covered = list.lines().any(|l| {
        let Some(r) = l.split("[mem ").nth(1).and_then(|r| r.split(']').next()) else {
            return false;
        };
        let Some((lo, hi)) = r.split_once('-') else {
            return false;
        };
        let p = |h: &str| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok();
        matches!((p(lo), p(hi)), (Some(lo), Some(hi)) if (lo..hi).contains(&leaf.phys))
    });
    (!covered).then(|| {
        format!(
            "x86 PAT is on and no memtype reservation covers PA {:#x} ({path}): the kernel gives a PFN-map fault of it UC- (lookup_memtype(), arch/x86/mm/pat/memtype.c), whatever the VMA's attribute",
            leaf.phys
        )
    })
}

/// The driver's kernel mapping of `m`, made on the first read: one vmalloc area of the region's
/// memory in /proc/vmallocinfo, and the entries that map the region's first and last pages.
fn kernel_test(ctx: &OpenGpu, pg: &Pgattr, m: &GpuMem) -> Outcome {
    let page = mm::page_size() as u64;
    let mut b = [0u8; 8];
    ctx.dev.mem_read_exact(m, 0, &mut b)?;
    ctx.dev.mem_read_exact(m, m.memlength - 8, &mut b)?;

    let areas = pgattr::vmalloc_areas_in(m.phys, m.phys + m.memlength)?;
    for a in &areas {
        println!("# {} vmallocinfo: {}", m.name(), a.line);
    }
    check_eq!(
        areas.len(),
        1,
        "{}: vmalloc areas mapping its memory (PA {:#x}, {:#x} bytes) after a read; the driver maps it once",
        m.name(),
        m.phys,
        m.memlength
    );
    let area = &areas[0];
    check_eq!(
        area.phys,
        Some(m.phys),
        "{}: PA of the vmalloc area",
        m.name()
    );
    check!(
        area.ioremap && area.size >= m.memlength,
        "{}: the vmalloc area is not an ioremap area of the whole region: {}",
        m.name(),
        area.line
    );

    let mut found = Vec::new();
    for (what, off) in [("first", 0), ("last", m.memlength - page)] {
        let pa = m.pa(off);
        let leaves = pg.kernel_mappings_of(pa).map_err(|e| {
            Failure::Fail(format!("{}: kernel mappings of PA {pa:#x}: {e}", m.name()))
        })?;
        for l in &leaves {
            println!("# {} kernel, {what} page: {l}", m.name());
        }
        check_eq!(
            leaves.len(),
            1,
            "{}: vmalloc-space entries that map the {what} page (PA {pa:#x})",
            m.name()
        );
        let l = leaves.into_iter().next().expect("one entry, checked above");
        check_eq!(l.phys, pa, "{}: PA of the {what} page's mapping", m.name());
        let want = want_type(m, &l);
        check!(
            l.mem_type == want,
            "{}: kernel entry of the {what} page has memory type {}, expected {want} ({l})",
            m.name(),
            l.mem_type
        );
        found.push(l);
    }
    check_eq!(
        found[1].va.wrapping_sub(found[0].va),
        m.memlength - page,
        "{}: distance of the first and last pages' kernel VAs (one mapping)",
        m.name()
    );

    // The entry at the mapping's start, looked up by kernel VA: the one vmallocinfo shows when
    // the kernel shows pointers to this reader, else the one the walk found.
    let va = if area.addresses_shown() {
        check_eq!(
            found[0].va,
            area.start,
            "{}: kernel VA of the first page vs vmallocinfo",
            m.name()
        );
        area.start
    } else {
        println!(
            "# {}: vmallocinfo prints hashed addresses (%pK with kptr_restrict 0); the VA is the one found by the walk",
            m.name()
        );
        found[0].va
    };
    let l = pg
        .kernel(va)
        .map_err(|e| Failure::Fail(format!("{}: lookup of kernel VA {va:#x}: {e}", m.name())))?;
    check!(
        l.entry == found[0].entry && l.phys == m.phys && l.mem_type == found[0].mem_type,
        "{}: lookup of kernel VA {va:#x}: {l}; the walk by PA found {}",
        m.name(),
        found[0]
    );
    Ok(())
}

/// Requests the module must refuse, each with its errno, and an answer for a page not mapped.
fn lookup_errors_test(ctx: &OpenGpu, pg: &Pgattr) -> Outcome {
    let errno = |r: std::io::Result<Leaf>| match r {
        Ok(l) => format!("an answer: {l}"),
        Err(e) => match e.raw_os_error() {
            Some(libc::EINVAL) => "EINVAL".into(),
            Some(libc::EFAULT) => "EFAULT".into(),
            Some(libc::ENOENT) => "ENOENT".into(),
            Some(libc::EOPNOTSUPP) => "EOPNOTSUPP".into(),
            _ => e.to_string(),
        },
    };
    let page = mm::page_size();
    // No VMA at address 0 (mmap_min_addr).
    let got = errno(pg.user(0));
    check_eq!(got.as_str(), "EFAULT", "user lookup of unmapped address 0");
    // An anonymous page, touched: not a PFN map.
    let anon = vec![1u8; 4 * page];
    let got = errno(pg.user(anon.as_ptr() as usize + page));
    check_eq!(got.as_str(), "EOPNOTSUPP", "user lookup of a heap page");
    // A device mapping never touched: no entry yet.
    let map = mm::mmap_shared(&ctx.dev.fd, ctx.usemem.at(7 * page as u64), page)?;
    let got = errno(pg.user(map.addr()));
    check_eq!(
        got.as_str(),
        "ENOENT",
        "user lookup of an untouched usemem page"
    );
    map.read_u8(0);
    let l = pg.user(map.addr())?;
    check_eq!(
        l.phys,
        ctx.usemem.pa(7 * page as u64),
        "user lookup of that page once touched"
    );
    // A kernel lookup outside vmalloc space.
    let got = errno(pg.kernel(map.addr() as u64));
    check_eq!(got.as_str(), "EINVAL", "kernel lookup of a user address");
    // No kernel mapping of the last page of the physical address space.
    let none = pg.kernel_mappings_of(!(page as u64 - 1))?;
    check!(
        none.is_empty(),
        "kernel mappings of the last physical page: {none:?}"
    );
    Ok(())
}

/// After the device is closed, the drivers' kernel mappings are gone (upstream
/// `nvgrace_gpu_close_device()`): from vmallocinfo and from the page tables the module walks.
fn kernel_mappings_gone_test(pg: &Pgattr, regions: &[GpuMem]) -> Outcome {
    for m in regions {
        let areas = pgattr::vmalloc_areas_in(m.phys, m.phys + m.memlength)?;
        check!(
            areas.is_empty(),
            "{}: vmalloc areas still map it after close:\n{}",
            m.name(),
            areas
                .iter()
                .map(|a| a.line.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
        let leaves = pg.kernel_mappings_of(m.phys)?;
        check!(
            leaves.is_empty(),
            "{}: kernel entries still map PA {:#x} after close: {leaves:?}",
            m.name(),
            m.phys
        );
    }
    Ok(())
}

/// What the tests of the table share: the page-attribute module (unloaded by the test of its
/// unload) and the device (closed before the test of the kernel mappings after close).
struct Ctx {
    pg: Option<Pgattr>,
    gpu: Option<OpenGpu>,
}

/// A test of the open device with the module loaded.
fn with(f: impl FnOnce(&OpenGpu, &Pgattr) -> Outcome) -> impl FnOnce(&mut Ctx) -> Outcome {
    move |ctx| match (&ctx.gpu, &ctx.pg) {
        (Some(gpu), Some(pg)) => f(gpu, pg),
        _ => Err(Failure::Fail(
            "the device is closed or the module unloaded".into(),
        )),
    }
}

fn main() {
    // Its I/O is the same in every boot: tapsum compares it between the builds.
    nvgrace_guest_tests::tap::trace_io();
    tap::diag(format!(
        "driver build: {}, GPU model: {}, {} with {} KiB pages",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu(),
        std::env::consts::ARCH,
        mm::page_size() >> 10
    ));
    // The module is loaded before the device is opened; its test reports how the load went.
    let pg = match Pgattr::load(pgattr::MODULE_PATH) {
        Ok(pg) => pg,
        Err(e) => {
            let why = e.to_string();
            Harness::run_table(
                &mut (),
                vec![test("module_loads", move |_: &mut ()| {
                    Err(Failure::Fail(why))
                })],
            );
        }
    };
    let gpu = match OpenGpu::open(GPU_BDF) {
        Ok(c) => c,
        Err(e) => {
            let why = e.to_string();
            Harness::run_table(
                &mut (),
                vec![
                    test("module_loads", |_: &mut ()| Ok(())),
                    test("open_device", move |_: &mut ()| Err(Failure::Fail(why))),
                ],
            );
        }
    };
    tap::diag(format!("usemem: {:x?}", gpu.usemem));
    tap::diag(format!("resmem: {:x?}", gpu.resmem));
    let use_ = gpu.usemem;
    let regions = gpu.regions();

    // Loaded above: this test's outcome is that of the load.
    let mut tests = vec![test("module_loads", |_: &mut Ctx| Ok(()))];
    for level in [Level::Pte, Level::Pmd, Level::Pud] {
        tests.push(test(
            format!("usemem_user_{}", level.name()),
            with(move |gpu, pg| user_test(gpu, pg, &use_, level)),
        ));
    }
    for level in [Level::Pte, Level::Pmd, Level::Pud] {
        tests.push(test(
            format!("resmem_user_{}", level.name()),
            with(move |gpu, pg| user_test(gpu, pg, &resmem_or_skip(gpu)?, level)),
        ));
    }
    tests.extend([
        test(
            "usemem_kernel_mapping",
            with(|gpu, pg| kernel_test(gpu, pg, &use_)),
        ),
        test(
            "resmem_kernel_mapping",
            with(|gpu, pg| kernel_test(gpu, pg, &resmem_or_skip(gpu)?)),
        ),
        test("lookup_errors", with(lookup_errors_test)),
        test("kernel_mappings_gone_after_close", |ctx: &mut Ctx| {
            ctx.gpu = None;
            let pg = ctx
                .pg
                .as_ref()
                .ok_or_else(|| Failure::Fail("module unloaded".into()))?;
            kernel_mappings_gone_test(pg, &regions)
        }),
        test("module_unload", |ctx: &mut Ctx| {
            let pg = ctx
                .pg
                .take()
                .ok_or_else(|| Failure::Fail("module unloaded".into()))?;
            pg.unload()?;
            check!(
                !sys::module_loaded(pgattr::MODULE_NAME),
                "{} still loaded after delete_module",
                pgattr::MODULE_NAME
            );
            Ok(())
        }),
        test("no_kernel_splat", |_: &mut Ctx| sys::no_kernel_splat()),
    ]);
    Harness::run_table(
        &mut Ctx {
            pg: Some(pg),
            gpu: Some(gpu),
        },
        tests,
    )
}
