// SPDX-License-Identifier: GPL-2.0

//! The per-device logic of the driver: probe and reset notification.

use kernel::device;
use kernel::pci;
use kernel::prelude::*;

use crate::vfio::core_device::CoreDevice;
use crate::vfio::core_device::DeviceOps;
use crate::vfio::core_device::Registered;
use crate::vfio::ops;
use crate::vfio::pci::Driver;

/// The driver's state for one GPU function.
pub(crate) struct NvGraceGpu;

/// Upstream's `nvgrace_gpu_pci_core_ops`: plain vfio-pci-core.
static CORE_OPS: DeviceOps = ops::core_ops::<NvGraceGpu>(c"nvgrace-gpu-vfio-pci-core");

impl Driver for NvGraceGpu {
    type Data = NvGraceGpu;

    const NAME: &'static CStr = c"nvgrace_gpu_vfio_pci";

    fn probe(pdev: &pci::Device<device::Core<'_>>) -> Result<Registered<Self>> {
        let mut vdev = CoreDevice::<Self>::alloc(pdev, &CORE_OPS)?;
        vdev.set_pci_ops(&ops::CORE_PCI_OPS);
        vdev.init_data(Ok(NvGraceGpu))
            .and_then(|v| v.register())
            .inspect_err(|e| {
                dev_err!(pdev.as_ref(), "cannot register the VFIO device: {:?}\n", e);
            })
    }

    fn reset_done(_vdev: &CoreDevice<Self>) {}
}
