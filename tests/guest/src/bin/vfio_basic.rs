// SPDX-License-Identifier: GPL-2.0

//! The GPU binds to nvgrace-gpu-vfio-pci and user space reaches it through both VFIO interfaces;
//! unbind and rmmod are clean. Runs against whichever driver build the rig bound (`--driver`).

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::vfio::region;
use nvgrace_guest_tests::vfio::Device;
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
    let mut t = Harness::new(7);
    t.diag(format!(
        "driver build: {}, GPU model: {}",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));

    t.test("bound_to_nvgrace_gpu_vfio_pci", || {
        check_eq!(
            sys::bound_driver(GPU_BDF),
            Some(DRIVER_NAME.to_string()),
            "driver of {GPU_BDF}"
        );
        Ok(())
    });

    t.test("open_iommufd_cdev", || {
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
    });

    t.test("open_legacy_group_container", || {
        let dev = Device::open_group(GPU_BDF)?;
        let info = dev.info()?;
        check!(
            info.flags & uapi::VFIO_DEVICE_FLAGS_PCI != 0,
            "device info flags {:#x} lack PCI",
            info.flags
        );
        identity(&dev)
    });

    t.test("bar0_region_info", || {
        let dev = Device::open_iommufd(GPU_BDF)?;
        let info = dev.region_info(region::BAR0)?;
        check_eq!(info.size, BAR0_SIZE, "BAR0 size");
        check_eq!(info.offset, 0u64, "BAR0 offset (index 0 << 40)");
        let rw = uapi::VFIO_REGION_INFO_FLAG_READ | uapi::VFIO_REGION_INFO_FLAG_WRITE;
        check_eq!(info.flags & rw, rw, "BAR0 READ|WRITE flags");
        Ok(())
    });

    t.test("unbind_clean", || {
        sys::unbind(GPU_BDF)?;
        check_eq!(
            sys::bound_driver(GPU_BDF),
            None::<String>,
            "driver after unbind"
        );
        Ok(())
    });

    t.test("rmmod_clean", || {
        sys::rmmod(MODULE)?;
        check!(
            !sys::module_loaded(MODULE),
            "{MODULE} still loaded after rmmod"
        );
        Ok(())
    });

    t.test("no_kernel_splat", sys::no_kernel_splat);

    t.finish()
}
