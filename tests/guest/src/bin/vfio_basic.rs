// SPDX-License-Identifier: GPL-2.0

//! The GPU binds to nvgrace-gpu-vfio-pci and user space reaches it through both VFIO interfaces;
//! unbind and rmmod are clean. Runs against whichever driver build the rig bound (`--driver`).

use std::time::Duration;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::ChildEnd;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::vfio::region;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::vfio::VFIO_PCI_OFFSET_SHIFT;
use nvgrace_guest_tests::DRIVER_NAME;
use nvgrace_guest_tests::GPU_BDF;
use vfio_bindings::bindings::vfio as uapi;

/// BAR0 of the GPU model: 16 MiB of MMIO registers (tests/gpu-model).
const BAR0_SIZE: u64 = 16 << 20;
/// The NVIDIA vendor ID.
const NVIDIA: u16 = 0x10de;
/// The module name both builds share.
const MODULE: &str = "nvgrace_gpu_vfio_pci";

fn identity(dev: &Device) -> nvgrace_guest_tests::tap::Outcome {
    let want = nvgrace_guest_tests::model_device_id(&nvgrace_guest_tests::rig_gpu())
        .ok_or_else(|| Failure::Skip("unknown RIG_GPU".into()))?;
    check_eq!(dev.config_read16(0x00)?, NVIDIA, "vendor ID at config 0x00");
    check_eq!(dev.config_read16(0x02)?, want, "device ID at config 0x02");
    Ok(())
}

fn main() {
    tap::diag(format!(
        "driver build: {}, GPU model: {}",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));

    let tests = vec![
        test("bound_to_nvgrace_gpu_vfio_pci", |_: &mut ()| {
            check_eq!(
                sys::bound_driver(GPU_BDF),
                Some(DRIVER_NAME.to_string()),
                "driver of {GPU_BDF}"
            );
            Ok(())
        }),
        test("open_iommufd_cdev", |_: &mut ()| {
            if !nvgrace_guest_tests::vfio::iommufd_available() {
                return Err(Failure::Skip(nvgrace_guest_tests::vfio::NO_IOMMUFD.into()));
            }
            let dev = Device::open_iommufd(GPU_BDF)?;
            let info = dev.info()?;
            check!(
                info.flags & uapi::VFIO_DEVICE_FLAGS_PCI != 0,
                "device info flags {:#x} lack PCI",
                info.flags
            );
            check!(
                info.num_regions >= uapi::VFIO_PCI_NUM_REGIONS,
                "{} regions, expected at least {}",
                info.num_regions,
                uapi::VFIO_PCI_NUM_REGIONS
            );
            identity(&dev)
        }),
        test("open_legacy_group_container", |_: &mut ()| {
            let dev = Device::open_group(GPU_BDF)?;
            let info = dev.info()?;
            check!(
                info.flags & uapi::VFIO_DEVICE_FLAGS_PCI != 0,
                "device info flags {:#x} lack PCI",
                info.flags
            );
            identity(&dev)
        }),
        test("bar0_region_info", |_: &mut ()| {
            let dev = Device::open_iommufd(GPU_BDF)?;
            let info = dev.region_info(region::BAR0)?;
            check_eq!(info.size, BAR0_SIZE, "BAR0 size");
            check_eq!(info.offset, 0u64, "BAR0 offset (index 0 << 40)");
            let rw = uapi::VFIO_REGION_INFO_FLAG_READ | uapi::VFIO_REGION_INFO_FLAG_WRITE;
            check_eq!(info.flags & rw, rw, "BAR0 READ|WRITE flags");
            Ok(())
        }),
        test("unbind_waits_while_mapped", |_: &mut ()| {
            if nvgrace_guest_tests::expected_regions().is_none() {
                return Err(Failure::Skip("no GPU memory described".into()));
            }
            // A user maps usemem, touches it and keeps it; the unbind must wait for it to go away.
            let mut fds = [0i32; 2];
            // SAFETY: `fds` has room for the two descriptors.
            check!(
                unsafe { libc::pipe(fds.as_mut_ptr()) } == 0,
                "pipe: {}",
                std::io::Error::last_os_error()
            );
            let user = mm::fork_child(|| {
                let Ok(dev) = Device::open_iommufd(GPU_BDF) else {
                    return 1;
                };
                let Ok(map) = mm::mmap_shared(&dev.fd, 4 << VFIO_PCI_OFFSET_SHIFT, 2 << 20) else {
                    return 2;
                };
                map.write_u64(0, 0x5a5a);
                // SAFETY: Writes one byte to the pipe's write end.
                unsafe { libc::write(fds[1], b"r".as_ptr().cast(), 1) };
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            })?;
            // Only the child writes: if it ends without writing (the device did not open), the
            // read below sees end-of-file instead of waiting for ever.
            // SAFETY: Closes this process's copy of the write end, which nothing here uses.
            unsafe { libc::close(fds[1]) };
            let mut ready = [0u8; 1];
            // SAFETY: Reads one byte from the pipe's read end.
            let n = unsafe { libc::read(fds[0], ready.as_mut_ptr().cast(), 1) };
            check_eq!(n, 1isize, "the mapping process did not start");
            let mut unbinder = mm::fork_child(|| if sys::unbind(GPU_BDF).is_ok() { 0 } else { 1 })?;
            check_eq!(
                unbinder.wait_timeout(Duration::from_secs(2))?,
                ChildEnd::TimedOut,
                "unbind while the device is open and mapped"
            );
            user.signal(libc::SIGKILL)?;
            drop(user);
            check_eq!(
                unbinder.wait_timeout(Duration::from_secs(30))?,
                ChildEnd::Exited(0),
                "unbind once the user is gone"
            );
            check_eq!(
                sys::bound_driver(GPU_BDF),
                None::<String>,
                "driver after unbind"
            );
            Ok(())
        }),
        test("unbind_clean", |_: &mut ()| {
            // Already unbound by the previous test when the GPU has memory to map.
            sys::unbind(GPU_BDF)?;
            check_eq!(
                sys::bound_driver(GPU_BDF),
                None::<String>,
                "driver after unbind"
            );
            Ok(())
        }),
        test("rmmod_clean", |_: &mut ()| {
            sys::rmmod(MODULE)?;
            check!(
                !sys::module_loaded(MODULE),
                "{MODULE} still loaded after rmmod"
            );
            Ok(())
        }),
        test("no_kernel_splat", |_: &mut ()| sys::no_kernel_splat()),
    ];
    Harness::run_table(&mut (), tests)
}
