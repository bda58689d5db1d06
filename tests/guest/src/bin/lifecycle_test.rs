// SPDX-License-Identifier: GPL-2.0

//! The device's lifecycle and the ioctls the driver handles itself: open/close cycles (a leaked
//! memory-failure PFN range would make the next open fail with EBUSY), rmmod refused while open,
//! `VFIO_DEVICE_IOEVENTFD` refused with ENOTTY, dma-buf export of the emulated BARs
//! (`VFIO_DEVICE_FEATURE_DMA_BUF`, upstream `nvgrace_get_dmabuf_phys()`), and low-power entry
//! by user space (`VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY` / `_EXIT`).

use std::os::fd::AsRawFd;
use std::os::fd::FromRawFd;
use std::os::fd::OwnedFd;
use std::time::Duration;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::expected_regions;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::ChildEnd;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::vfio::ioctl;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::vfio::VFIO_PCI_OFFSET_SHIFT;
use nvgrace_guest_tests::GPU_BDF;
use vfio_bindings::bindings::vfio as uapi;

/// The physical BAR4 of the GPU model: 64 MiB (tests/gpu-model).
const MODEL_BAR4_SIZE: u64 = 64 << 20;

/// Open/close cycles, as the suite's specification asks.
const CYCLES: usize = 100;

/// `VFIO_DEVICE_FEATURE_DMA_BUF` for `len` bytes at the start of region `index`: the dma-buf fd,
/// or the errno.
fn export_dmabuf(dev: &Device, index: u32, len: u64) -> Result<OwnedFd, i32> {
    export_dmabuf_ranges(dev, index, &[(0, len)])
}

/// `VFIO_DEVICE_FEATURE_DMA_BUF` for the `(offset, length)` byte ranges of region `index`, in
/// order: the dma-buf fd, or the errno.
fn export_dmabuf_ranges(dev: &Device, index: u32, ranges: &[(u64, u64)]) -> Result<OwnedFd, i32> {
    // vfio_device_feature (8 bytes) + vfio_device_feature_dma_buf (16) + 16 per range, as u64s.
    let mut buf = vec![0u64; 3 + 2 * ranges.len()];
    let bytes = 8 * buf.len();
    buf[0] = u64::from(bytes as u32)
        | (u64::from(uapi::VFIO_DEVICE_FEATURE_GET | uapi::VFIO_DEVICE_FEATURE_DMA_BUF) << 32);
    // Opened read-write, so that an mmap of it is refused for what the dma-buf is, not for the
    // file's mode.
    buf[1] = u64::from(index) | (u64::from((libc::O_RDWR | libc::O_CLOEXEC) as u32) << 32);
    buf[2] = (ranges.len() as u64) << 32; // flags 0, nr_ranges
    for (i, &(offset, length)) in ranges.iter().enumerate() {
        buf[3 + 2 * i] = offset;
        buf[4 + 2 * i] = length;
    }
    // SAFETY: `buf` is the feature header, the dma-buf request and its ranges, as the kernel
    // expects.
    let r = unsafe {
        libc::ioctl(
            dev.fd.as_raw_fd(),
            ioctl::VFIO_DEVICE_FEATURE,
            buf.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: The ioctl returned a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// The size of a dma-buf as its file reports it: `lseek(SEEK_END)` (dma_buf_llseek()).
fn dmabuf_size(fd: &OwnedFd) -> Result<u64, Failure> {
    // SAFETY: lseek on an fd this process owns.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
    u64::try_from(r)
        .map_err(|_| Failure::Fail(format!("lseek: {}", std::io::Error::last_os_error())))
}

/// A field of the dma-buf's `/proc/self/fdinfo` (dma_buf_show_fdinfo()).
fn dmabuf_fdinfo(fd: &OwnedFd, field: &str) -> Result<String, Failure> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| Failure::Fail(format!("no {field} in the dma-buf's fdinfo")))
}

/// The errno of an export, for observations.
fn export_errno(r: &Result<OwnedFd, i32>) -> String {
    tap::errno_name(r.as_ref().err().copied())
}

/// The errno of a failed call.
fn errno(r: std::io::Result<()>) -> Result<(), i32> {
    r.map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// The device `main` opened for the tests up to the one that closes it.
fn opened(d: &mut Option<Device>) -> Result<&Device, Failure> {
    d.as_ref()
        .ok_or_else(|| Failure::Fail("the device is already closed".into()))
}

/// Opens the GPU, or ends the program with a TAP bail-out.
fn open_or_bail_out() -> Device {
    match Device::open_iommufd(GPU_BDF) {
        Ok(d) => d,
        Err(e) => {
            println!("Bail out! cannot open {GPU_BDF}: {e}");
            std::process::exit(1);
        }
    }
}

fn main() {
    // Its I/O is the same in every boot: tapsum compares it between the builds.
    nvgrace_guest_tests::tap::trace_io();
    let regions = expected_regions();

    let mut ctx = None;
    let tests = vec![
        test("open_close_cycles", |_: &mut Option<Device>| {
            let Some((usemem, _)) = regions else {
                return Err(Failure::Skip("no GPU memory described".into()));
            };
            let mut b = [0u8; 8];
            for i in 0..CYCLES {
                let dev = Device::open_iommufd(GPU_BDF)
                    .map_err(|e| Failure::Fail(format!("open #{i}: {e}")))?;
                let n = dev.pread(
                    &mut b,
                    (4u64 << VFIO_PCI_OFFSET_SHIFT) + usemem.memlength - 8,
                )?;
                check_eq!(n, 8usize, "read in cycle {i}");
            }
            Ok(())
        }),
        test("ioeventfd_enotty", |d: &mut Option<Device>| {
            // The device the later tests share, opened after open_close_cycles closed its own.
            *d = Some(tap::untraced(open_or_bail_out));
            let dev = opened(d)?;
            if regions.is_none() {
                return Err(Failure::Skip(
                    "plain vfio-pci-core without GPU memory".into(),
                ));
            }
            let mut arg = uapi::vfio_device_ioeventfd {
                argsz: size_of::<uapi::vfio_device_ioeventfd>() as u32,
                flags: uapi::VFIO_DEVICE_IOEVENTFD_32,
                offset: 0,
                data: 0,
                fd: -1,
                ..Default::default()
            };
            // SAFETY: The argument is the structure VFIO_DEVICE_IOEVENTFD takes.
            let r = unsafe {
                nvgrace_guest_tests::vfio::ioctl_ptr(
                    &dev.fd,
                    ioctl::VFIO_DEVICE_IOEVENTFD,
                    &mut arg,
                )
            };
            check_eq!(
                r.err().and_then(|e| e.raw_os_error()),
                Some(libc::ENOTTY),
                "VFIO_DEVICE_IOEVENTFD"
            );
            Ok(())
        }),
        test("rmmod_refused_while_open", |_: &mut Option<Device>| {
            // delete_module(O_NONBLOCK), as rmmod(8) calls it, fails with EWOULDBLOCK while the
            // module is referenced (vfio holds the driver's module while the device is open).
            let r = sys::rmmod("nvgrace_gpu_vfio_pci");
            check_eq!(
                r.err().and_then(|e| e.raw_os_error()),
                Some(libc::EWOULDBLOCK),
                "rmmod while the device is open"
            );
            check!(
                sys::module_loaded("nvgrace_gpu_vfio_pci"),
                "module gone while the device is open"
            );
            Ok(())
        }),
        test("dmabuf_usemem", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            let Some((usemem, _)) = regions else {
                return Err(Failure::Skip("no GPU memory described".into()));
            };
            let page = mm::page_size() as u64;
            let len = usemem.memlength;
            // The model has a physical BAR4, so vfio-pci-core, which checks that it mapped
            // that BAR, lets the request through to the driver (vfio_pci_core_feature_dma_buf()).
            // Only the driver, answering with usemem, accepts a range past the physical BAR's end
            // and refuses one that ends past the memory even where it is still inside the BAR
            // (upstream nvgrace_get_dmabuf_phys() -> vfio_pci_core_fill_phys_vec(memphys,
            // memlength)).
            check!(
                len > MODEL_BAR4_SIZE,
                "usemem {len:#x} not larger than the physical BAR4"
            );
            let whole = export_dmabuf(dev, 4, len)
                .map_err(|e| Failure::Fail(format!("export of all {len:#x} bytes: errno {e}")))?;
            check_eq!(
                dmabuf_size(&whole)?,
                len,
                "size of the whole-usemem dma-buf"
            );
            check_eq!(
                dmabuf_fdinfo(&whole, "size")?,
                len.to_string(),
                "fdinfo size"
            );
            // The exporter is vfio-pci-core's, whichever driver answered for the ranges.
            let exporter = dmabuf_fdinfo(&whole, "exp_name")?;
            check_eq!(exporter.as_str(), "vfio_pci_core", "exporter");
            // Its dma_buf_ops have no mmap: user space cannot map it (dma_buf_mmap_internal()).
            let m = mm::mmap_shared(&whole, 0, page as usize);
            check_eq!(
                m.as_ref().err().and_then(|e| e.raw_os_error()),
                Some(libc::EINVAL),
                "mmap of the dma-buf"
            );
            // Two ranges, the first and the last page of the memory: one dma-buf of both.
            let two =
                export_dmabuf_ranges(dev, 4, &[(0, page), (len - page, page)]).map_err(|e| {
                    Failure::Fail(format!("export of the first and last pages: errno {e}"))
                })?;
            check_eq!(
                dmabuf_size(&two)?,
                2 * page,
                "size of the two-range dma-buf"
            );
            drop((whole, two));
            // Refused: past the memory's end (inside the BAR when the memory is shorter than it);
            // a range that wraps the physical address (the driver adds memphys); and the checks
            // vfio-pci-core makes before the driver: no length, an offset that is not page-aligned.
            let cases = [
                (
                    "a page past the memory",
                    vec![(0, len + page)],
                    libc::EINVAL,
                ),
                ("the page after the memory", vec![(len, page)], libc::EINVAL),
                (
                    "the last page, then one past",
                    vec![(0, page), (len - page, 2 * page)],
                    libc::EINVAL,
                ),
                (
                    "an offset that wraps",
                    vec![(!(page - 1), page)],
                    libc::EOVERFLOW,
                ),
                ("no length", vec![(0, 0)], libc::EINVAL),
                (
                    "an offset not page-aligned",
                    vec![(page / 2, page)],
                    libc::EINVAL,
                ),
            ];
            for (what, ranges, want) in cases {
                let r = export_dmabuf_ranges(dev, 4, &ranges);
                tap::observe(&format!("usemem export of {what}"), export_errno(&r));
                check_eq!(r.err(), Some(want), "usemem export of {what}");
            }
            if usemem.bar_size > len {
                // The part of the BAR past the memory is not memory: nothing there exports.
                let r = export_dmabuf_ranges(dev, 4, &[(usemem.bar_size - page, page)]);
                tap::observe("usemem export of the BAR's last page", export_errno(&r));
                check_eq!(r.err(), Some(libc::EINVAL), "export of the BAR's last page");
            }
            tap::observe("usemem dma-buf sizes", format!("{len:#x} {:#x}", 2 * page));
            Ok(())
        }),
        test("dmabuf_resmem", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            let Some((_, Some(resmem))) = regions else {
                return Err(Failure::Skip("no resmem".into()));
            };
            let fd = export_dmabuf(dev, 2, 1 << 21)
                .map_err(|e| Failure::Fail(format!("export failed: errno {e}")))?;
            check!(fd.as_raw_fd() >= 0, "no dma-buf fd");
            // Exactly the memory, no more: the whole of resmem exports, a page more does not.
            export_dmabuf(dev, 2, resmem.memlength).map_err(|e| {
                Failure::Fail(format!(
                    "export of all {:#x} bytes of resmem failed: errno {e}",
                    resmem.memlength
                ))
            })?;
            // A page more, not 4 KiB: dma-buf ranges must be page multiples (vfio_pci_dmabuf.c), so
            // a 4 KiB step on 64 KiB pages would be refused for its alignment, not for its end.
            check_eq!(
                export_dmabuf(dev, 2, resmem.memlength + mm::page_size() as u64).err(),
                Some(libc::EINVAL),
                "export past resmem"
            );
            Ok(())
        }),
        test("low_power_entry", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            if regions.is_none() {
                return Err(Failure::Skip("no GPU memory described".into()));
            }
            let (usemem, resmem) = dev.gpu_mem()?;
            for m in std::iter::once(usemem).chain(resmem) {
                let name = m.name();
                let map = mm::mmap_shared(&dev.fd, m.at(0), mm::page_size())?;
                let word = 0x6c6f_7770_6f77_6572 ^ u64::from(m.index);
                map.write_u64(0, word);
                check_eq!(
                    errno(dev.set_feature(uapi::VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)),
                    Ok(()),
                    "{name}: low-power entry"
                );
                // Already engaged: vfio_pci_runtime_pm_entry() refuses a second entry.
                check_eq!(
                    errno(dev.set_feature(uapi::VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)),
                    Err(libc::EINVAL),
                    "{name}: second low-power entry"
                );
                // The entry zapped the mapping, and a fault fails while user space keeps the device
                // in low power: the fault handler checks pm_runtime_engaged (upstream
                // nvgrace_gpu_vfio_pci_huge_fault()), and so does vfio_pci_vmf_insert_pfn(). That
                // the handler's own check spares the readiness wait is device_fault_test's.
                let (end, _) = mm::touch_in_child(map.addr(), Duration::from_secs(30))?;
                check_eq!(
                    end,
                    ChildEnd::Signaled(libc::SIGBUS),
                    "{name}: touch in low power"
                );
                // read/write resume the device for the access (pm_runtime_resume_and_get()).
                let mut b = [0u8; 8];
                check_eq!(
                    dev.pread(&mut b, m.at(0))?,
                    8usize,
                    "{name}: read in low power"
                );
                check_eq!(
                    u64::from_le_bytes(b),
                    word,
                    "{name}: word read in low power"
                );
                check_eq!(
                    errno(dev.set_feature(uapi::VFIO_DEVICE_FEATURE_LOW_POWER_EXIT)),
                    Ok(()),
                    "{name}: low-power exit"
                );
                // Out of low power, the same mapping faults again, onto the same memory.
                check_eq!(
                    map.read_u64(0),
                    word,
                    "{name}: word through the mapping after exit"
                );
            }
            Ok(())
        }),
        test("no_kernel_splat", |d: &mut Option<Device>| {
            tap::untraced(|| drop(d.take()));
            sys::no_kernel_splat()
        }),
    ];
    Harness::run_table(&mut ctx, tests)
}
