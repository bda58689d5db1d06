// SPDX-License-Identifier: GPL-2.0

//! A GPU without GPU memory in its `_DSD` (absent properties, or size 0: the C2C link is down)
//! gets the plain vfio-pci-core operations (upstream `nvgrace_gpu_pci_core_ops`): every one of
//! them is vfio-pci-core's, so the device behaves as under vfio-pci. Each operation the drivers
//! must pass through is used once: device features (`VFIO_DEVICE_FEATURE`, its probe of
//! low-power entry), read and write of BAR0 through the device fd, mmap of BAR0, the device
//! reset, and the matching of a device name (`match`: vfio-pci-core's parses a VF token). What
//! each returned is an observation compared between the builds.
//!
//! Run after probe_test in the probe-no-dsd run (the GPU is bound to the build under test).

use std::io;

use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::vfio;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::GPU_BDF;
use vfio_bindings::bindings::vfio as uapi;

/// The device fd position of BAR0 (VFIO_PCI_INDEX_TO_OFFSET(0)).
const BAR0: u64 = 0;

fn errno_or(r: &io::Result<usize>) -> String {
    match r {
        Ok(n) => format!("{n}"),
        Err(e) => tap::errno_name(e.raw_os_error()),
    }
}

/// `VFIO_DEVICE_FEATURE_PROBE` of setting low-power entry: vfio-pci-core supports it (0).
fn feature_probe(dev: &Device) -> tap::Outcome {
    // struct vfio_device_feature: argsz (its 8 bytes, no payload), then flags.
    let flags = uapi::VFIO_DEVICE_FEATURE_PROBE
        | uapi::VFIO_DEVICE_FEATURE_SET
        | uapi::VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY;
    let mut hdr: u64 = 8 | (u64::from(flags) << 32);
    // SAFETY: `hdr` is a `vfio_device_feature` header without payload, as its argsz says.
    let r = unsafe { vfio::ioctl_ptr(&dev.fd, vfio::ioctl::VFIO_DEVICE_FEATURE, &mut hdr) };
    let got = r.as_ref().map(|_| 0).map_err(|e| e.raw_os_error());
    tap::observe("low_power_entry_probe", format!("{got:?}"));
    check_eq!(got, Ok(0), "probe of VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY");
    Ok(())
}

/// BAR0 through the device fd: a read of its first register, a write of it back.
fn bar0_read_write(dev: &Device) -> tap::Outcome {
    let mut b = [0u8; 4];
    let r = dev.pread(&mut b, BAR0);
    tap::observe("bar0_pread", errno_or(&r));
    tap::observe("bar0_reg0", format!("{:#x}", u32::from_le_bytes(b)));
    check_eq!(r.as_ref().ok().copied(), Some(4), "pread of BAR0");
    let w = dev.pwrite(&b, BAR0);
    tap::observe("bar0_pwrite", errno_or(&w));
    check_eq!(w.as_ref().ok().copied(), Some(4), "pwrite of BAR0");
    Ok(())
}

/// BAR0 mapped: its first register reads what pread read.
fn bar0_mmap(dev: &Device) -> tap::Outcome {
    let info = dev.region_info(0)?;
    check_eq!(
        info.flags & uapi::VFIO_REGION_INFO_FLAG_MMAP,
        uapi::VFIO_REGION_INFO_FLAG_MMAP,
        "BAR0 region flags {:#x}",
        info.flags
    );
    let map = mm::mmap_shared(&dev.fd, info.offset, mm::page_size())?;
    let mut b = [0u8; 8];
    dev.pread(&mut b, BAR0)?;
    let mapped = map.read_u64(0);
    tap::observe("bar0_mapped_matches_pread", mapped == u64::from_le_bytes(b));
    check_eq!(mapped, u64::from_le_bytes(b), "BAR0 through the mapping");
    Ok(())
}

/// `VFIO_GROUP_GET_DEVICE_FD` by the PCI name with a VF token: vfio-pci-core's `match` parses
/// the token and refuses it for a function that is neither a PF with VFs nor a VF
/// (vfio_pci_validate_vf_token(): EINVAL); without that `match`, vfio compares the whole string
/// with the device name and finds no device (ENODEV). The device must be closed (its iommufd
/// open is dropped first).
fn name_with_vf_token() -> tap::Outcome {
    let name = format!("{GPU_BDF} vf_token=00000000-0000-0000-0000-000000000000");
    let r = Device::open_group_as(GPU_BDF, &name).map(drop);
    let kind = r.as_ref().err().map(io::Error::kind);
    tap::observe("vf_token_open", format!("{kind:?}"));
    check_eq!(
        kind,
        Some(io::ErrorKind::InvalidInput),
        "VFIO_GROUP_GET_DEVICE_FD of {name:?} (EINVAL expected): {r:?}"
    );
    // The name alone still finds it.
    Device::open_group(GPU_BDF)?;
    Ok(())
}

/// The device opened in main, until a test closes it.
fn open(d: &Option<Device>) -> Result<&Device, Failure> {
    d.as_ref()
        .ok_or_else(|| Failure::Fail("the device was closed by an earlier test".into()))
}

fn main() {
    let dev = match Device::open_iommufd(GPU_BDF) {
        Ok(d) => d,
        Err(e) => Harness::open_failed(e),
    };
    Harness::run_table(
        &mut Some(dev),
        vec![
            test(
                "device_feature_is_vfio_pci_cores",
                |d: &mut Option<Device>| feature_probe(open(d)?),
            ),
            test(
                "bar0_read_write_through_the_fd",
                |d: &mut Option<Device>| bar0_read_write(open(d)?),
            ),
            test("bar0_mmap", |d: &mut Option<Device>| bar0_mmap(open(d)?)),
            test("device_reset", |d: &mut Option<Device>| {
                let r = open(d)?.reset();
                tap::observe(
                    "reset",
                    r.as_ref()
                        .map(|_| "ok".to_string())
                        .unwrap_or_else(|e| tap::errno_name(e.raw_os_error())),
                );
                Ok(r?)
            }),
            test(
                "device_name_match_is_vfio_pci_cores",
                |d: &mut Option<Device>| {
                    // The group interface needs the device closed.
                    d.take();
                    name_with_vf_token()
                },
            ),
            test("no_kernel_splat", |_: &mut Option<Device>| {
                sys::no_kernel_splat()
            }),
        ],
    )
}
