// SPDX-License-Identifier: GPL-2.0

//! Region info of the emulated BARs (upstream `nvgrace_gpu_ioctl_get_region_info()`), that only
//! their sparse area can be mapped, and their read/write paths (upstream
//! `nvgrace_gpu_read_mem()`/`_write_mem()`): every boundary, the all-ones fill past the memory,
//! dropped writes, access widths and large buffers.

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::differences::resmem_stops_at_memlength;
use nvgrace_guest_tests::expected_regions;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::vfio::VFIO_PCI_OFFSET_SHIFT;
use nvgrace_guest_tests::Region;
use nvgrace_guest_tests::GPU_BDF;
use vfio_bindings::bindings::vfio as uapi;

/// `VFIO_REGION_INFO_CAP_SPARSE_MMAP`.
const CAP_SPARSE_MMAP: u16 = 1;

fn base(index: u32) -> u64 {
    (index as u64) << VFIO_PCI_OFFSET_SHIFT
}

fn errno(r: std::io::Result<usize>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// A byte pattern that differs per offset and per test run.
fn pattern(offset: u64, len: usize, seed: u8) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i).wrapping_mul(31) as u8) ^ seed)
        .collect()
}

fn region_info_test(dev: &Device, index: u32, r: &Region) -> Outcome {
    let fixed = size_of::<uapi::vfio_region_info>() as u32;
    // argsz of the fixed part only: the kernel reports the size it needs and no capability.
    let (small, _) = dev.region_info_raw(index, fixed)?;
    check_eq!(small.size, r.bar_size, "BAR size (region {index})");
    check_eq!(small.offset, base(index), "offset (region {index})");
    let want_flags = uapi::VFIO_REGION_INFO_FLAG_READ
        | uapi::VFIO_REGION_INFO_FLAG_WRITE
        | uapi::VFIO_REGION_INFO_FLAG_MMAP
        | uapi::VFIO_REGION_INFO_FLAG_CAPS;
    check_eq!(small.flags, want_flags, "flags (region {index})");
    check_eq!(small.cap_offset, 0u32, "cap_offset with a too-small argsz");
    let needed = small.argsz;
    let cap_len = size_of::<uapi::vfio_region_info_cap_sparse_mmap>()
        + size_of::<uapi::vfio_region_sparse_mmap_area>();
    check_eq!(
        needed as usize,
        fixed as usize + cap_len,
        "argsz needed for one sparse area"
    );

    // Exactly the needed argsz: the sparse-mmap capability follows the fixed part.
    let (full, bytes) = dev.region_info_raw(index, needed)?;
    check_eq!(full.cap_offset, fixed, "cap_offset with an exact argsz");
    let cap = &bytes[fixed as usize..];
    let id = u16::from_le_bytes([cap[0], cap[1]]);
    let version = u16::from_le_bytes([cap[2], cap[3]]);
    let next = u32::from_le_bytes(cap[4..8].try_into().unwrap());
    let nr_areas = u32::from_le_bytes(cap[8..12].try_into().unwrap());
    check_eq!(
        (id, version, next, nr_areas),
        (CAP_SPARSE_MMAP, 1u16, 0u32, 1u32),
        "sparse-mmap header"
    );
    let area_off = u64::from_le_bytes(cap[16..24].try_into().unwrap());
    let area_size = u64::from_le_bytes(cap[24..32].try_into().unwrap());
    check_eq!((area_off, area_size), (0u64, r.memlength), "sparse area");
    Ok(())
}

/// Only the sparse area, the memory, can be mapped: a mapping that reaches past `memlength` is
/// refused with EINVAL, also where the BAR goes on (upstream `nvgrace_gpu_mmap()`: `end >
/// memlength`). mmap_test checks the same bounds, but it runs only where memory and BAR have the
/// same size; this runs on every geometry of the matrix.
fn sparse_area_mmap_test(dev: &Device, index: u32, r: &Region) -> Outcome {
    let page = mm::page_size() as u64;
    let at = |off: u64| (base(index) + off) as i64;
    // Memory that is not a multiple of the page size ends inside a page, which cannot be mapped
    // (the mapping would reach past memlength).
    let whole = r.memlength - r.memlength % page;
    let mut cases = vec![
        (
            "the last whole page of memory",
            at(whole - page),
            mm::page_size(),
            Ok(()),
        ),
        (
            "all of memory plus a page",
            at(0),
            (r.memlength + page) as usize,
            Err(libc::EINVAL),
        ),
        (
            "the first page at or past memlength",
            at(r.memlength.next_multiple_of(page)),
            mm::page_size(),
            Err(libc::EINVAL),
        ),
    ];
    if whole < r.memlength {
        cases.push((
            "the page that holds the end of memory",
            at(whole),
            mm::page_size(),
            Err(libc::EINVAL),
        ));
    }
    if r.bar_size > r.memlength {
        cases.push((
            "the last page of the BAR, past the memory",
            at(r.bar_size - page),
            mm::page_size(),
            Err(libc::EINVAL),
        ));
        cases.push((
            "the whole BAR",
            at(0),
            r.bar_size as usize,
            Err(libc::EINVAL),
        ));
    }
    let show = |r: Result<(), i32>| match r {
        Ok(()) => "mapped".to_string(),
        Err(e) => format!("errno {e}"),
    };
    let mut bad = Vec::new();
    for (what, off, len, want) in cases {
        let got = mm::mmap_errno(&dev.fd, off, len);
        if got != want {
            bad.push(format!(
                "{what} (offset {off:#x}, length {len:#x}): {}, expected {}",
                show(got),
                show(want)
            ));
        }
    }
    check!(bad.is_empty(), "region {index}:\n{}", bad.join("\n"));
    Ok(())
}

/// Whether an access of this region that crosses the end of memory stops there (difference 3).
fn stops_at_memlength(index: u32) -> bool {
    index == 2 && resmem_stops_at_memlength()
}

fn boundaries_test(dev: &Device, index: u32, r: &Region) -> Outcome {
    let at = |off: u64| base(index) + off;
    let mut b8 = [0u8; 8];
    // Start of memory and its last byte.
    check_eq!(dev.pread(&mut b8[..1], at(0))?, 1usize, "read at 0");
    check_eq!(
        dev.pread(&mut b8[..1], at(r.memlength - 1))?,
        1usize,
        "read at memlength - 1"
    );
    // A read across the end of memory: memory, then all-ones.
    if r.memlength < r.bar_size {
        if index == 2 {
            nvgrace_guest_tests::tap::trace_listed(3);
        }
        dev.pwrite(&[0x5a; 4], at(r.memlength - 4))?;
        b8 = [0; 8];
        if stops_at_memlength(index) {
            check_eq!(
                dev.pread(&mut b8, at(r.memlength - 4))?,
                4usize,
                "read across memlength (difference 3)"
            );
            check_eq!(
                b8,
                [0x5a, 0x5a, 0x5a, 0x5a, 0, 0, 0, 0],
                "bytes across memlength (difference 3)"
            );
            check_eq!(
                dev.pwrite(&[0x5a; 8], at(r.memlength - 4))?,
                4usize,
                "write across memlength (difference 3)"
            );
        } else {
            check_eq!(
                dev.pread(&mut b8, at(r.memlength - 4))?,
                8usize,
                "read across memlength"
            );
            check_eq!(
                b8,
                [0x5a, 0x5a, 0x5a, 0x5a, 0xff, 0xff, 0xff, 0xff],
                "bytes across memlength"
            );
            check_eq!(
                dev.pwrite(&[0x5a; 8], at(r.memlength - 4))?,
                8usize,
                "write across memlength"
            );
        }
        check_eq!(
            dev.pread(&mut b8[..1], at(r.memlength))?,
            1usize,
            "read at memlength"
        );
        check_eq!(b8[0], 0xffu8, "byte at memlength");
        // Writes beyond the memory are accepted and dropped.
        check_eq!(
            dev.pwrite(&[0u8; 8], at(r.memlength))?,
            8usize,
            "write at memlength"
        );
        dev.pread(&mut b8, at(r.memlength))?;
        check_eq!(b8, [0xff; 8], "bytes at memlength after a write");
    }
    // The last byte of the BAR, and clipping at the BAR's end.
    check_eq!(
        dev.pread(&mut b8[..1], at(r.bar_size - 1))?,
        1usize,
        "read at bar_size - 1"
    );
    check_eq!(
        dev.pread(&mut b8, at(r.bar_size - 2))?,
        2usize,
        "read clipped at the BAR end"
    );
    check_eq!(
        dev.pwrite(&b8, at(r.bar_size - 2))?,
        2usize,
        "write clipped at the BAR end"
    );
    // At and beyond the BAR: EINVAL.
    check_eq!(
        errno(dev.pread(&mut b8, at(r.bar_size))),
        Some(libc::EINVAL),
        "read at bar_size"
    );
    check_eq!(
        errno(dev.pwrite(&b8, at(r.bar_size))),
        Some(libc::EINVAL),
        "write at bar_size"
    );
    let last = base(index) + (1u64 << VFIO_PCI_OFFSET_SHIFT) - 8;
    check_eq!(
        errno(dev.pread(&mut b8, last)),
        Some(libc::EINVAL),
        "read at the region's last offset"
    );
    // A position whose end overflows loff_t: refused before the driver (rw_verify_area).
    let huge = i64::MAX as u64 - 3;
    check_eq!(
        errno(dev.pread(&mut b8, huge)),
        Some(libc::EINVAL),
        "read whose end overflows"
    );
    Ok(())
}

fn widths_and_large_test(dev: &Device, index: u32, r: &Region) -> Outcome {
    let at = |off: u64| base(index) + off;
    // Each width at an aligned and an unaligned offset.
    for width in [1usize, 2, 4, 8] {
        for off in [0x1000u64, 0x2003] {
            let data = pattern(off, width, width as u8);
            check_eq!(
                dev.pwrite(&data, at(off))?,
                width,
                "write of {width} at {off:#x}"
            );
            let mut back = vec![0u8; width];
            check_eq!(
                dev.pread(&mut back, at(off))?,
                width,
                "read of {width} at {off:#x}"
            );
            check_eq!(back, data, "{width} bytes at {off:#x}");
        }
    }
    // 1 MiB at an odd offset, and across the end of memory when the BAR is larger.
    let off = 0x10_0001u64.min(r.memlength / 2);
    let data = pattern(off, 1 << 20, 0xa5);
    check_eq!(dev.pwrite(&data, at(off))?, data.len(), "1 MiB write");
    let mut back = vec![0u8; data.len()];
    check_eq!(dev.pread(&mut back, at(off))?, data.len(), "1 MiB read");
    check!(back == data, "1 MiB read-back differs");
    if r.memlength < r.bar_size {
        if index == 2 {
            nvgrace_guest_tests::tap::trace_listed(3);
        }
        let off = r.memlength - 4096;
        // Three pages' worth, clipped at the end of the BAR (memory 4 KiB short of it: 8 KiB).
        let mut back = vec![0u8; (3 * 4096).min(r.bar_size - off) as usize];
        let data = pattern(off, 4096, 0x3c);
        dev.pwrite(&data, at(off))?;
        if stops_at_memlength(index) {
            check_eq!(
                dev.pread(&mut back, at(off))?,
                4096usize,
                "read across memlength (difference 3)"
            );
            check!(back[..4096] == data[..], "memory part across memlength");
        } else {
            check_eq!(
                dev.pread(&mut back, at(off))?,
                back.len(),
                "read across memlength"
            );
            check!(back[..4096] == data[..], "memory part across memlength");
            check!(
                back[4096..].iter().all(|&b| b == 0xff),
                "all-ones part across memlength"
            );
        }
    }
    Ok(())
}

/// Accesses of no bytes still check readiness after a reset (upstream `nvgrace_gpu_read_mem()`
/// checks for any offset below the BAR size, `nvgrace_gpu_write_mem()` for any offset below
/// memlength): with Memory Space Enable off, a pending readiness check fails them with EIO; with
/// it on, they return 0 and the check is done.
fn zero_length_after_reset_test(dev: &Device, index: u32) -> Outcome {
    use nvgrace_guest_tests::gpumem::GpuMemExt;
    let at = base(index) + 0x1000;
    let mut b = [0u8; 1];
    dev.reset()?;
    let cmd = dev.set_memory_enable(false)?;
    let read = dev.pread(&mut b[..0], at);
    let write = dev.pwrite(&b[..0], at);
    dev.set_memory_enable(true)?;
    let read_on = dev.pread(&mut b[..0], at);
    dev.reset()?;
    let write_on = dev.pwrite(&b[..0], at);
    // The write did the readiness check: with memory off again, a read has nothing to wait for.
    dev.set_memory_enable(false)?;
    let read_after = dev.pread(&mut b, at);
    dev.config_write::<2>(nvgrace_guest_tests::gpumem::PCI_COMMAND, cmd.to_le_bytes())?;
    check_eq!(
        (errno(read), errno(write)),
        (Some(libc::EIO), Some(libc::EIO)),
        "read and write of 0 bytes after a reset, memory disabled"
    );
    check_eq!(
        (read_on?, write_on?),
        (0usize, 0usize),
        "read and write of 0 bytes after a reset, memory enabled"
    );
    check_eq!(
        read_after?,
        1usize,
        "read with memory disabled after a 0-byte write did the readiness check"
    );
    Ok(())
}

/// The device `main` opened for the tests up to the one that closes it.
fn opened(d: &mut Option<Device>) -> Result<&Device, Failure> {
    d.as_ref()
        .ok_or_else(|| Failure::Fail("the device is already closed".into()))
}

fn main() {
    // Its I/O is the same in every boot: tapsum compares it between the builds.
    nvgrace_guest_tests::tap::trace_io();
    let Some((usemem, resmem)) = expected_regions() else {
        println!("1..0 # SKIP no GPU memory described to the driver");
        std::process::exit(4);
    };
    tap::diag(format!("usemem {usemem:x?}, resmem {resmem:x?}"));
    let dev = match Device::open_iommufd(GPU_BDF) {
        Ok(d) => d,
        Err(e) => {
            println!("Bail out! cannot open {GPU_BDF}: {e}");
            std::process::exit(1);
        }
    };
    let resmem_or_skip = || resmem.ok_or_else(|| Failure::Skip("no resmem on this GPU".into()));

    let mut ctx = Some(dev);
    let tests = vec![
        test("usemem_region_info", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            region_info_test(dev, 4, &usemem)
        }),
        test("resmem_region_info", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            region_info_test(dev, 2, &resmem_or_skip()?)
        }),
        test("usemem_mmap_only_sparse_area", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            sparse_area_mmap_test(dev, 4, &usemem)
        }),
        test("resmem_mmap_only_sparse_area", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            sparse_area_mmap_test(dev, 2, &resmem_or_skip()?)
        }),
        test("usemem_boundaries", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            boundaries_test(dev, 4, &usemem)
        }),
        test("resmem_boundaries", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            boundaries_test(dev, 2, &resmem_or_skip()?)
        }),
        test("usemem_widths_and_large", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            widths_and_large_test(dev, 4, &usemem)
        }),
        test("resmem_widths_and_large", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            widths_and_large_test(dev, 2, &resmem_or_skip()?)
        }),
        test("bar0_region_info_from_core", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            let info = dev.region_info(0)?;
            check_eq!(
                (info.offset, info.size),
                (0u64, 16u64 << 20),
                "BAR0 offset and size"
            );
            Ok(())
        }),
        test(
            "zero_length_accesses_check_readiness",
            |d: &mut Option<Device>| {
                let dev = opened(d)?;
                zero_length_after_reset_test(dev, 4)
            },
        ),
        test("no_kernel_splat", |d: &mut Option<Device>| {
            tap::untraced(|| drop(d.take()));
            sys::no_kernel_splat()
        }),
    ];
    Harness::run_table(&mut ctx, tests)
}
