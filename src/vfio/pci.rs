// SPDX-License-Identifier: GPL-2.0

//! Registration of a VFIO PCI variant driver as a `struct pci_driver`.
//!
//! `kernel::pci::Driver` cannot host a VFIO variant driver: it has no `driver_managed_dma` and no
//! error handlers, and it owns the device's drvdata, which vfio-pci-core needs for itself (its AER
//! handler and `vfio_pci_core_register_device()` expect drvdata to be the core device). So this
//! module registers the C structure directly, as binder does for its C parts, and forwards
//! `probe`, `remove` and `reset_done` to a [`Driver`].
//!
//! C header: [`include/linux/pci.h`](srctree/include/linux/pci.h)

use core::marker::PhantomData;

use kernel::{
    debugfs,
    device,
    device_id::RawDeviceId,
    error::{
        from_result,
        to_result, //
    },
    ffi::c_int,
    pci,
    prelude::*,
    types::Opaque,
    ThisModule, //
};

use super::{
    bindings,
    core_device::{
        CoreDevice,
        Registered, //
    }, //
};

/// A PCI ID table entry that matches only through `driver_override`, as VFIO drivers do.
///
/// The Rust form of `PCI_DRIVER_OVERRIDE_DEVICE_VFIO(vendor, device)` (include/linux/pci.h):
/// any subsystem, `override_only = PCI_ID_F_VFIO_DRIVER_OVERRIDE`, which makes modpost emit the
/// `vfio_pci:v...d...sv*sd*bc*sc*i*` alias instead of a `pci:` one.
///
/// # Invariants
///
/// The wrapped `pci_device_id` has `override_only` set to `PCI_ID_F_VFIO_DRIVER_OVERRIDE`.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(crate) struct VfioDeviceId(bindings::pci_device_id);

impl VfioDeviceId {
    /// `PCI_ANY_ID` of include/linux/mod_devicetable.h.
    const ANY: u32 = !0;

    /// An entry for one vendor/device pair (16-bit PCI device ID).
    pub(crate) const fn new(vendor: pci::Vendor, device: u16) -> Self {
        // INVARIANT: `override_only` is set to the VFIO flag.
        Self(bindings::pci_device_id {
            vendor: vendor.as_raw() as u32,
            device: device as u32,
            subvendor: Self::ANY,
            subdevice: Self::ANY,
            class: 0,
            class_mask: 0,
            driver_data: 0,
            override_only: bindings::PCI_ID_F_VFIO_DRIVER_OVERRIDE,
        })
    }
}

// SAFETY: `VfioDeviceId` is a `#[repr(transparent)]` wrapper of `struct pci_device_id`.
unsafe impl RawDeviceId for VfioDeviceId {
    type RawType = bindings::pci_device_id;
}

/// A VFIO PCI variant driver: what the PCI core calls back into.
pub(crate) trait Driver {
    /// The driver's own per-device state, stored after the `vfio_pci_core_device`.
    type Data: Send + Sync;

    /// The driver name (`struct pci_driver.name`, shown under /sys/bus/pci/drivers).
    const NAME: &'static CStr;

    /// Binds `pdev`: allocates, initialises and registers its VFIO device. `debugfs` is the
    /// driver's directory (`<debugfs>/<NAME>`), for the device's own entries.
    fn probe(
        pdev: &pci::Device<device::Core<'_>>,
        debugfs: &debugfs::Dir,
    ) -> Result<Registered<Self::Data>>;

    /// Called by the PCI core after any reset of the function (FLR, bus reset, AER recovery).
    fn reset_done(vdev: &CoreDevice<Self::Data>);
}

/// A registered `struct pci_driver` for the driver `T`.
///
/// The driver is registered inside the initialiser of `drv`, as `kernel::driver::Registration`
/// does: when `__pci_register_driver()` fails, the initialiser fails, no `Registration` exists
/// and nothing unregisters a driver that was never registered (which `driver_unregister()`
/// answers with a WARN, "Unexpected driver unregister!").
///
/// # Invariants
///
/// `drv` is registered with the PCI core from a successful [`Registration::new`] until drop;
/// `debugfs` is created before it and removed after it is unregistered.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: Driver> {
    /// The driver's debugfs directory, `<debugfs>/<T::NAME>`.
    debugfs: debugfs::Dir,
    #[pin]
    drv: Opaque<bindings::pci_driver>,
    _t: PhantomData<T>,
}

// SAFETY: The registration is only touched by the PCI core, which serialises its own accesses, and
// by `drop`, which has exclusive access.
unsafe impl<T: Driver> Send for Registration<T> {}
// SAFETY: `&Registration` exposes nothing.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver + 'static> Registration<T> {
    /// The error handlers of the driver: `reset_done` is ours, `error_detected` vfio-pci-core's.
    /// A constant, so that `&Self::ERR_HANDLERS` is promoted to a `'static` table.
    const ERR_HANDLERS: bindings::pci_error_handlers = bindings::pci_error_handlers {
        reset_done: Some(Self::reset_done_callback),
        error_detected: Some(bindings::vfio_pci_core_aer_err_detected),
        ..pin_init::zeroed()
    };

    /// Registers the driver for the devices of `ids` (a zero-terminated table that lives as long as
    /// the module, as a `module_device_table!` table does).
    ///
    /// Returns the error of `__pci_register_driver()` (`EBUSY` when a PCI driver of the same
    /// name is registered, `ENOMEM`); nothing is registered then.
    pub(crate) fn new(
        ids: &'static impl kernel::device_id::IdTable<VfioDeviceId, ()>,
        module: &'static ThisModule,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            debugfs: debugfs::Dir::new(T::NAME),
            drv <- Opaque::try_ffi_init(move |drv: *mut bindings::pci_driver| {
                // SAFETY: `drv` points to pinned storage, valid for writes, that is ours until
                // `__pci_register_driver` succeeds; it is zeroed first (every field the PCI core
                // does not get from us must be zero), and `ERR_HANDLERS` is a static table.
                unsafe {
                    core::ptr::write_bytes(drv, 0, 1);
                    (*drv).name = T::NAME.as_char_ptr();
                    (*drv).id_table = ids.as_ptr();
                    (*drv).probe = Some(Self::probe_callback);
                    (*drv).remove = Some(Self::remove_callback);
                    (*drv).driver_managed_dma = true;
                    (*drv).err_handler = &Self::ERR_HANDLERS;
                }
                // SAFETY: `drv` is fully initialised and pinned until `drop` unregisters it; on
                // failure the PCI core has not kept it.
                to_result(unsafe {
                    bindings::__pci_register_driver(drv, module.as_ptr(), T::NAME.as_char_ptr())
                })
            }),
            _t: PhantomData,
        })
    }

    extern "C" fn probe_callback(
        pdev: *mut bindings::pci_dev,
        _id: *const bindings::pci_device_id,
    ) -> c_int {
        // SAFETY: The PCI core calls probe with a valid `pci_dev` that stays valid for the call;
        // `pci::Device` is a transparent wrapper of it, and the call is the probe context `Core`
        // stands for.
        let pdev_ref = unsafe { &*pdev.cast::<pci::Device<device::Core<'_>>>() };
        // SAFETY: The driver core sets `dev.driver` to the driver being probed before calling
        // probe: the `device_driver` embedded in `drv` of this pinned `Registration`, which
        // stays alive until `drop` unregisters it, and no probe runs after that.
        let this = unsafe {
            let drv = kernel::container_of!((*pdev).dev.driver, bindings::pci_driver, driver);
            &*kernel::container_of!(drv.cast::<Opaque<bindings::pci_driver>>(), Self, drv)
        };
        from_result(|| {
            // Ownership of the reference moves to drvdata; `remove_callback` takes it back.
            T::probe(pdev_ref, &this.debugfs)?.into_drvdata();
            Ok(0)
        })
    }

    extern "C" fn remove_callback(pdev: *mut bindings::pci_dev) {
        // SAFETY: `remove` is only called after a successful `probe`, which left the registered
        // device of `T::Data` in drvdata (see `probe_callback`).
        drop(unsafe { Registered::<T::Data>::from_drvdata(pdev) });
    }

    extern "C" fn reset_done_callback(pdev: *mut bindings::pci_dev) {
        // SAFETY: Error handlers are only called for a bound device, whose drvdata holds the
        // registered device of `T::Data` until `remove` returns.
        let vdev = unsafe { CoreDevice::<T::Data>::from_drvdata(pdev) };
        T::reset_done(vdev);
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant `drv` is registered.
        unsafe { bindings::pci_unregister_driver(self.drv.get()) };
    }
}

/// The offset of the Designated Vendor-Specific Extended Capability of `pdev` with DVSEC vendor
/// `vendor` and DVSEC ID `id` (`pci_find_dvsec_capability()`, which the kernel crate lacks), if
/// the function has one. A DVSEC is an extended capability: its registers are read through
/// [`pci::Device::config_space_extended`].
pub(crate) fn find_dvsec(
    pdev: &pci::Device<device::Bound>,
    vendor: pci::Vendor,
    id: u16,
) -> Option<u16> {
    // SAFETY: `pdev` is a valid PCI device.
    let pos = unsafe { bindings::pci_find_dvsec_capability(as_raw(pdev), vendor.as_raw(), id) };
    (pos != 0).then_some(pos)
}

/// A PCI function enabled with `pci_enable_device()` (I/O and memory decoding) until drop,
/// which disables it again (`pci_disable_device()`): the probe-time readiness check maps BAR0
/// of a function that vfio-pci-core does not own yet (upstream
/// `nvgrace_gpu_probe_check_device_ready()`). The kernel crate's `enable_device_mem()` enables
/// memory decoding only and has no counterpart that disables.
///
/// # Invariants
///
/// `pdev` was enabled by [`Enabled::new`] and this value owns that enable count.
pub(crate) struct Enabled<'a> {
    pdev: &'a pci::Device<device::Bound>,
}

impl<'a> Enabled<'a> {
    /// Enables `pdev`, the device being probed; returns the error of `pci_enable_device()`.
    pub(crate) fn new(pdev: &'a pci::Device<device::Core<'_>>) -> Result<Self> {
        // SAFETY: `pdev` is the device being probed.
        to_result(unsafe { bindings::pci_enable_device(as_raw(pdev)) })?;
        // INVARIANT: Just enabled.
        Ok(Self { pdev })
    }
}

impl Drop for Enabled<'_> {
    fn drop(&mut self) {
        // SAFETY: Balances the enable of `new` (type invariant).
        unsafe { bindings::pci_disable_device(as_raw(self.pdev)) };
    }
}

/// The `struct pci_dev` of `pdev` (`pci::Device::as_raw()` is private to the kernel crate).
pub(crate) fn as_raw<Ctx: device::DeviceContext>(
    pdev: &pci::Device<Ctx>,
) -> *mut bindings::pci_dev {
    // CAST: `pci::Device` is a transparent wrapper of `struct pci_dev`.
    core::ptr::from_ref(pdev)
        .cast::<bindings::pci_dev>()
        .cast_mut()
}
