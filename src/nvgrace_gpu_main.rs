// SPDX-License-Identifier: GPL-2.0

//! VFIO PCI variant driver for the GPU of NVIDIA Grace Hopper and Grace Blackwell superchips.
//!
//! On these superchips the GPU's memory is coherent system memory described by ACPI `_DSD`
//! properties, not a PCI BAR. The driver binds to the GPU function through vfio-pci-core
//! (`driver_override`) and presents that memory to user space as emulated BARs.
//!
//! Behavioural reference: `drivers/vfio/pci/nvgrace-gpu/main.c`.

mod config_emu;
mod device;
mod layout;
mod readiness;
mod regs;
mod vfio;

use kernel::{
    pci,
    prelude::*, //
};

use crate::vfio::pci::{
    Registration,
    VfioDeviceId, //
};

kernel::module_device_table!(
    "pci",
    VfioDeviceId,
    NVGRACE_GPU_VFIO_PCI_TABLE,
    @none,
    [
        // GH200 120GB
        VfioDeviceId::new(pci::Vendor::NVIDIA, 0x2342),
        // GH200 480GB
        VfioDeviceId::new(pci::Vendor::NVIDIA, 0x2345),
        // GH200 SKU
        VfioDeviceId::new(pci::Vendor::NVIDIA, 0x2348),
        // GB200 SKU
        VfioDeviceId::new(pci::Vendor::NVIDIA, 0x2941),
        // GB300 SKU
        VfioDeviceId::new(pci::Vendor::NVIDIA, 0x31C2),
    ]
);

module! {
    type: NvGraceGpuModule,
    name: "nvgrace_gpu_vfio_pci",
    authors: ["The nvgrace-gpu-vfio-pci Rust developers"],
    description: "VFIO PCI variant driver for NVIDIA GPUs with CPU-coherent device memory (Grace Hopper, Grace Blackwell)",
    license: "GPL",
}

#[pin_data]
struct NvGraceGpuModule {
    #[pin]
    driver: Registration<device::NvGraceGpu>,
}

impl kernel::InPlaceModule for NvGraceGpuModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            driver <- Registration::new(&NVGRACE_GPU_VFIO_PCI_TABLE, module),
        })
    }
}
