// SPDX-License-Identifier: GPL-2.0

//! `struct vfio_device_ops` and `struct vfio_pci_device_ops` tables.
//!
//! C header: [`include/linux/vfio.h`](srctree/include/linux/vfio.h)

use kernel::ffi::c_int;
use kernel::prelude::*;

use super::bindings;
use super::core_device::CoreDevice;
use super::core_device::DeviceOps;
use super::core_device::PciDeviceOps;

/// The plain vfio-pci-core behaviour, for a device without coherent GPU memory (upstream's
/// `nvgrace_gpu_pci_core_ops`): every operation is vfio-pci-core's, except that `release` also
/// drops the driver state `T`.
pub(crate) const fn core_ops<T>(name: &'static CStr) -> DeviceOps {
    DeviceOps(bindings::vfio_device_ops {
        name: name.as_ptr().cast::<kernel::ffi::c_char>().cast_mut(),
        init: Some(bindings::vfio_pci_core_init_dev),
        release: Some(CoreDevice::<T>::release),
        open_device: Some(core_open_device),
        close_device: Some(bindings::vfio_pci_core_close_device),
        ioctl: Some(bindings::vfio_pci_core_ioctl),
        get_region_info_caps: Some(bindings::vfio_pci_ioctl_get_region_info),
        device_feature: Some(bindings::vfio_pci_core_ioctl_feature),
        read: Some(bindings::vfio_pci_core_read),
        write: Some(bindings::vfio_pci_core_write),
        mmap: Some(bindings::vfio_pci_core_mmap),
        request: Some(bindings::vfio_pci_core_request),
        match_: Some(bindings::vfio_pci_core_match),
        match_token_uuid: Some(bindings::vfio_pci_core_match_token_uuid),
        bind_iommufd: Some(bindings::vfio_iommufd_physical_bind),
        unbind_iommufd: Some(bindings::vfio_iommufd_physical_unbind),
        attach_ioas: Some(bindings::vfio_iommufd_physical_attach_ioas),
        detach_ioas: Some(bindings::vfio_iommufd_physical_detach_ioas),
        ..pin_init::zeroed()
    })
}

/// vfio-pci-core's dma-buf export for every BAR.
pub(crate) static CORE_PCI_OPS: PciDeviceOps = PciDeviceOps(bindings::vfio_pci_device_ops {
    get_dmabuf_phys: Some(bindings::vfio_pci_core_get_dmabuf_phys),
});

/// `open_device` of [`core_ops`]: enable the device, then finish enabling it.
///
/// # Safety
///
/// Only vfio may call this, as `ops->open_device` of a vfio-pci-core device.
unsafe extern "C" fn core_open_device(vdev: *mut bindings::vfio_device) -> c_int {
    // CAST: `vdev` is the first member of the `vfio_pci_core_device` (safety requirements).
    let core = vdev.cast::<bindings::vfio_pci_core_device>();
    // SAFETY: `core` is a valid core device that vfio is opening.
    let ret = unsafe { bindings::vfio_pci_core_enable(core) };
    if ret != 0 {
        return ret;
    }
    // SAFETY: `vfio_pci_core_enable()` succeeded on `core`.
    unsafe { bindings::vfio_pci_core_finish_enable(core) };
    0
}
