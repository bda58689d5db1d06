// SPDX-License-Identifier: GPL-2.0

//! A VFIO PCI core device with the variant driver's own state after it.
//!
//! vfio-pci-core requires variant drivers to embed `struct vfio_pci_core_device` at the start of
//! their device structure and to allocate it with `vfio_alloc_device()`, which zeroes the
//! allocation and calls `ops->init`. The driver's Rust state lives after the core structure in the
//! same allocation and is initialised in place with pin-init once the allocation exists; the
//! `release` callback drops it just before vfio frees the allocation.
//!
//! Lifetime of a device:
//! [`CoreDevice::alloc`] -> [`NewDevice`] (one reference, dropped with `vfio_put_device()`)
//! -> [`NewDevice::register`] -> [`Registered`] (kept in drvdata while bound; dropping it
//! unregisters and puts the reference).
//!
//! C header: [`include/linux/vfio_pci_core.h`](srctree/include/linux/vfio_pci_core.h)

use core::{
    marker::PhantomData,
    mem::{
        offset_of,
        MaybeUninit, //
    },
    ptr::NonNull, //
};

use kernel::{
    device,
    error::{
        from_err_ptr,
        to_result, //
    },
    io::register::FixedRegister,
    pci,
    prelude::*,
    types::Opaque, //
};

use super::bindings;

/// The allocation `vfio_alloc_device()` makes for a variant driver.
///
/// `core` must come first: vfio frees the allocation through the `vfio_device` pointer, which is
/// the first member of `vfio_pci_core_device`.
///
/// # Invariants
///
/// `data` is initialised exactly when `data_ready` is set.
#[repr(C)]
struct Allocation<T> {
    core: Opaque<bindings::vfio_pci_core_device>,
    /// Set once `data` is initialised; `false` from the zeroed allocation until then.
    data_ready: bool,
    data: MaybeUninit<T>,
}

/// A VFIO PCI core device carrying driver state `T`.
///
/// # Invariants
///
/// A `&CoreDevice<T>` points into an [`Allocation<T>`] made by [`CoreDevice::alloc`] whose `core`
/// has been initialised by `vfio_alloc_device()` and whose `data` is initialised
/// (`data_ready == true`), and the allocation holds at least one reference for the lifetime of the
/// borrow. Its PCI function is bound to this driver meanwhile: the device is made in probe, and
/// `vfio_pci_core_unregister_device()` in remove waits for its last user (open files, and the
/// VMAs that hold them) to go away.
#[repr(transparent)]
pub(crate) struct CoreDevice<T>(Allocation<T>);

// SAFETY: The core device is designed to be used from any thread (vfio-pci-core locks it
// internally); `T` is `Send`.
unsafe impl<T: Send> Send for CoreDevice<T> {}
// SAFETY: See `Send`; shared access to `T` needs `T: Sync`.
unsafe impl<T: Sync> Sync for CoreDevice<T> {}

/// A `struct vfio_device_ops` table that may live in a `static`.
///
/// # Invariants
///
/// The table is never written after it is made; its pointers are functions and a
/// `'static` C string (made by `ops::variant_ops`/`ops::core_ops`).
#[repr(transparent)]
pub(crate) struct DeviceOps(pub(crate) bindings::vfio_device_ops);
// SAFETY: The table is immutable and only holds function pointers and a static name.
unsafe impl Sync for DeviceOps {}

/// A `struct vfio_pci_device_ops` table that may live in a `static`.
///
/// # Invariants
///
/// The table is never written after it is made; it holds only function pointers.
#[repr(transparent)]
pub(crate) struct PciDeviceOps(pub(crate) bindings::vfio_pci_device_ops);
// SAFETY: The table is immutable and only holds function pointers.
unsafe impl Sync for PciDeviceOps {}

impl<T> CoreDevice<T> {
    /// Allocates the device for `pdev` with `ops` (`vfio_alloc_device()` semantics: zeroed, core
    /// first, `ops->init` called). `ops.release` must be [`CoreDevice::release`] so that the
    /// driver state is dropped.
    ///
    /// Returns the error of `ops->init` or `-ENOMEM`.
    pub(crate) fn alloc(
        pdev: &pci::Device<device::Core<'_>>,
        ops: &'static DeviceOps,
    ) -> Result<NewDevice<T>> {
        let raw = super::pci::as_raw(pdev);
        // SAFETY: `raw` is a valid PCI device and `ops` a valid static table; the size covers the
        // core structure at offset 0 as required.
        let vdev = from_err_ptr(unsafe {
            bindings::_vfio_alloc_device(
                core::mem::size_of::<Allocation<T>>(),
                &raw mut (*raw).dev,
                &ops.0,
            )
        })?;
        // INVARIANT: `vdev` is the start of a new `Allocation<T>` holding one reference, which the
        // new `NewDevice` owns.
        Ok(NewDevice {
            ptr: NonNull::new(vdev.cast()).ok_or(ENOMEM)?,
            _t: PhantomData,
        })
    }

    /// Returns the device whose `vfio_device` is `vdev`.
    ///
    /// # Safety
    ///
    /// `vdev` must be the `vfio_device` of a device made by [`CoreDevice::alloc`] for the same `T`,
    /// with its data initialised, and it must stay alive for `'a`.
    pub(crate) unsafe fn from_vdev<'a>(vdev: *mut bindings::vfio_device) -> &'a Self {
        // CAST: `vfio_device` is at offset 0 of `vfio_pci_core_device`, which is at offset 0 of
        // `Allocation<T>`, and `Self` is transparent over it.
        // SAFETY: By the safety requirements.
        unsafe { &*vdev.cast::<Self>() }
    }

    /// Returns the device a bound `pdev` stores in drvdata.
    ///
    /// # Safety
    ///
    /// `pdev` must be bound to a driver whose drvdata is a device of this `T` registered through
    /// [`NewDevice::register`], and stay bound for `'a`.
    pub(crate) unsafe fn from_drvdata<'a>(pdev: *mut bindings::pci_dev) -> &'a Self {
        // SAFETY: `pdev` is valid, and its drvdata is the `vfio_pci_core_device` at the start of
        // our allocation (set in `NewDevice::register`).
        unsafe {
            let core = bindings::dev_get_drvdata(&raw mut (*pdev).dev);
            Self::from_vdev(core.cast())
        }
    }

    /// The raw core device, for calls into vfio-pci-core.
    pub(crate) fn as_raw(&self) -> *mut bindings::vfio_pci_core_device {
        self.0.core.get()
    }

    /// The raw `vfio_device`.
    pub(crate) fn as_vdev(&self) -> *mut bindings::vfio_device {
        // SAFETY: `core` is valid by the type invariant.
        unsafe { &raw mut (*self.as_raw()).vdev }
    }

    /// The driver state.
    pub(crate) fn data(&self) -> &T {
        // SAFETY: `data` is initialised by the type invariant.
        unsafe { self.0.data.assume_init_ref() }
    }

    /// The PCI function of the device, bound to this driver.
    pub(crate) fn pdev(&self) -> &pci::Device<device::Bound> {
        // SAFETY: `pdev` is set by `vfio_pci_core_init_dev()` and valid for the device's
        // lifetime; `pci::Device` is a transparent wrapper of `struct pci_dev`. The function is
        // bound to this driver for as long as the device is in use (type invariant).
        unsafe { &*(*self.as_raw()).pdev.cast::<pci::Device<device::Bound>>() }
    }

    /// The raw PCI function, for calls into the PCI core.
    pub(crate) fn pdev_raw(&self) -> *mut bindings::pci_dev {
        // SAFETY: As in `pdev()`.
        unsafe { (*self.as_raw()).pdev }
    }

    /// `vfio_pci_core_enable()`: the first step of opening the device (enables the function,
    /// maps its BARs). Only from `open_device`, which vfio serialises with close. The returned
    /// [`Opening`] undoes it when dropped, unless [`Opening::finish`] completes the open.
    pub(crate) fn enable(&self) -> Result<Opening<'_, T>> {
        // SAFETY: The core device is valid; vfio serialises open and close.
        to_result(unsafe { bindings::vfio_pci_core_enable(self.as_raw()) })?;
        // INVARIANT: Just enabled.
        Ok(Opening { dev: self })
    }

    /// `vfio_pci_core_close_device()`: vfio-pci-core's part of closing the device.
    pub(crate) fn close_core(&self) {
        // SAFETY: Called from `close_device` of an opened device.
        unsafe { bindings::vfio_pci_core_close_device(self.as_vdev()) }
    }

    /// Whether vfio-pci-core mapped BAR `bar` (`vfio_pci_core_get_iomap()`): `Ok` between
    /// enable and disable. Returns `ENODEV` (with a warning from vfio-pci-core) otherwise, and
    /// `EINVAL` for an index that is not a standard BAR.
    pub(crate) fn check_bar_map(&self, bar: u32) -> Result {
        if bar >= bindings::PCI_STD_NUM_BARS {
            return Err(EINVAL);
        }
        // SAFETY: The core device is valid and `bar` is a standard BAR.
        let io = unsafe { bindings::nvgrace_helper_vfio_pci_core_get_iomap(self.as_raw(), bar) };
        from_err_ptr(io).map(|_| ())
    }

    /// Reads the 32-bit register `R` (a `register!` type of `u32` storage) of BAR `bar` through
    /// vfio-pci-core's mapping of the BAR.
    ///
    /// Returns `ENODEV` when the BAR is not mapped (the device is not open, or vfio-pci-core
    /// could not request or map it) and `EINVAL` when the register is outside the BAR or `bar`
    /// is not a standard BAR.
    pub(crate) fn bar_read<R: FixedRegister + From<u32>>(&self, bar: u32) -> Result<R> {
        let index = usize::try_from(bar).map_err(|_| EINVAL)?;
        // SAFETY: The core device is valid. `barmap[bar]` is NULL while the device is closed;
        // `vfio_pci_core_enable()` sets it to the BAR's mapping or, when the BAR cannot be
        // requested or mapped, to an `IOMEM_ERR_PTR()` (vfio_pci_core_map_bars()), and disable
        // sets it back to NULL, which vfio does not run while a file operation is in progress.
        let io = unsafe { *(*self.as_raw()).barmap.get(index).ok_or(EINVAL)? };
        // An error pointer is not a mapping: test it before the address is used.
        let io = from_err_ptr(io).map_err(|_| ENODEV)?;
        if io.is_null() {
            return Err(ENODEV);
        }
        if R::OFFSET
            .checked_add(4)
            .is_none_or(|end| end as u64 > self.pdev().resource_len(bar).unwrap_or(0))
        {
            return Err(EINVAL);
        }
        // SAFETY: `io` is neither NULL nor an error pointer, so it is vfio-pci-core's
        // `pci_iomap()` of the whole BAR, and the register lies inside it.
        let raw = unsafe { bindings::nvgrace_helper_ioread32(io.byte_add(R::OFFSET)) };
        Ok(raw.into())
    }

    /// Takes `memory_lock` for reading: the lock vfio-pci-core holds for writing while the
    /// device's memory is disabled or being reset.
    #[inline]
    pub(crate) fn memory_read_lock(&self) -> MemoryReadGuard<'_, T> {
        // SAFETY: `memory_lock` is initialised by `vfio_pci_core_init_dev()`.
        unsafe { bindings::down_read(&raw mut (*self.as_raw()).memory_lock) };
        // INVARIANT: The lock was just taken for reading.
        MemoryReadGuard { dev: self }
    }

    /// Resumes the device from runtime suspend and holds it resumed until the guard is dropped
    /// (`pm_runtime_resume_and_get()`). Returns `EIO` when it cannot be resumed, as upstream.
    /// Without `CONFIG_PM` runtime PM is the stubs of include/linux/pm_runtime.h, which succeed
    /// and count nothing: the helper is not called then (nor its `put` on drop), as upstream's
    /// inline calls compile to nothing.
    #[inline]
    pub(crate) fn pm_resume(&self) -> Result<PmGuard<'_, T>> {
        if !cfg!(CONFIG_PM) {
            // INVARIANT: Without CONFIG_PM there is no usage count to own.
            return Ok(PmGuard { dev: self });
        }
        // SAFETY: The PCI device is valid.
        let r = unsafe {
            bindings::nvgrace_helper_pm_runtime_resume_and_get(&raw mut (*self.pdev_raw()).dev)
        };
        if r != 0 {
            return Err(EIO);
        }
        // INVARIANT: The usage count was raised.
        Ok(PmGuard { dev: self })
    }

    /// The `release` callback for [`DeviceOps`] tables of this `T`: drops the driver state, then
    /// lets vfio-pci-core release its part. vfio frees the allocation afterwards.
    ///
    /// # Safety
    ///
    /// Only vfio may call this, as `ops->release` of a device made by [`CoreDevice::alloc`] for
    /// this `T`, once its last reference is gone.
    pub(crate) unsafe extern "C" fn release(vdev: *mut bindings::vfio_device) {
        let alloc = vdev.cast::<Allocation<T>>();
        // SAFETY: `vdev` starts an `Allocation<T>` (safety requirements) that nobody else uses any
        // more; `data` is initialised exactly when `data_ready` is set.
        unsafe {
            if (*alloc).data_ready {
                (*alloc).data_ready = false;
                (*alloc).data.assume_init_drop();
            }
            bindings::vfio_pci_core_release_dev(vdev);
        }
    }
}

/// A core device being opened: between a successful `vfio_pci_core_enable()`
/// ([`CoreDevice::enable`]) and the end of `open_device`. Dropped, it undoes the enable
/// (`vfio_pci_core_disable()`), for an open that fails after it; [`Opening::finish`] completes
/// the open instead.
///
/// # Invariants
///
/// `vfio_pci_core_enable()` succeeded on `dev`, within its `open_device`, and neither
/// `vfio_pci_core_disable()` nor `vfio_pci_core_finish_enable()` ran since.
pub(crate) struct Opening<'a, T> {
    dev: &'a CoreDevice<T>,
}

impl<T> Opening<'_, T> {
    /// `vfio_pci_core_finish_enable()`: the last step of a successful open; vfio-pci-core's
    /// close undoes the enable from then on.
    pub(crate) fn finish(self) {
        // SAFETY: Enabled and not finished (type invariant).
        unsafe { bindings::vfio_pci_core_finish_enable(self.dev.as_raw()) };
        core::mem::forget(self);
    }
}

impl<T> Drop for Opening<'_, T> {
    fn drop(&mut self) {
        // SAFETY: Enabled and neither disabled nor finished (type invariant), in the failing
        // open.
        unsafe { bindings::vfio_pci_core_disable(self.dev.as_raw()) };
    }
}

/// A device allocated by [`CoreDevice::alloc`] and not yet registered.
///
/// # Invariants
///
/// `ptr` is the start of an [`Allocation<T>`] initialised by `vfio_alloc_device()`, and this value
/// owns one reference to it.
pub(crate) struct NewDevice<T> {
    ptr: NonNull<Allocation<T>>,
    _t: PhantomData<T>,
}

impl<T> NewDevice<T> {
    fn core(&self) -> *mut bindings::vfio_pci_core_device {
        // SAFETY: `ptr` is valid by the type invariant.
        unsafe { (*self.ptr.as_ptr()).core.get() }
    }

    /// Sets the device's `vfio_pci_device_ops` (dma-buf export of its regions).
    pub(crate) fn set_pci_ops(&mut self, ops: &'static PciDeviceOps) {
        // SAFETY: The device is not registered yet, so nothing else reads `pci_ops`.
        unsafe { (*self.core()).pci_ops = &ops.0 };
    }

    /// Initialises the driver state in place.
    ///
    /// On error the device is put (its reference dropped), which frees it.
    pub(crate) fn init_data(self, init: impl PinInit<T, Error>) -> Result<Self> {
        let alloc = self.ptr.as_ptr();
        // SAFETY: `data` is zeroed, uninitialised storage in our allocation, which never moves
        // (it is pinned until `release`); on success `data_ready` marks it for dropping.
        unsafe {
            pin_init::raw_try_init((*alloc).data.as_mut_ptr(), init)?;
            (*alloc).data_ready = true;
        }
        Ok(self)
    }

    /// Registers the device with vfio-pci-core, storing it in the PCI device's drvdata first (as
    /// `vfio_pci_core_register_device()` requires).
    ///
    /// The state must have been initialised with [`NewDevice::init_data`]. Returns the error of
    /// `vfio_pci_core_register_device()`; the device is put on error.
    pub(crate) fn register(self) -> Result<Registered<T>> {
        let alloc = self.ptr.as_ptr();
        // SAFETY: `ptr` is valid.
        if !unsafe { (*alloc).data_ready } {
            return Err(EINVAL);
        }
        let core = self.core();
        // SAFETY: `core` is a valid, initialised core device whose `pdev` was set by `init`.
        to_result(unsafe {
            bindings::dev_set_drvdata(&raw mut (*(*core).pdev).dev, core.cast());
            bindings::vfio_pci_core_register_device(core)
        })?;
        let ptr = self.ptr;
        core::mem::forget(self);
        // INVARIANT: The device is registered and the reference moves to `Registered`.
        Ok(Registered { ptr })
    }
}

impl<T> Drop for NewDevice<T> {
    fn drop(&mut self) {
        // SAFETY: We own one reference (type invariant).
        unsafe { bindings::nvgrace_helper_vfio_put_device(&raw mut (*self.core()).vdev) };
    }
}

/// A device registered with vfio-pci-core.
///
/// # Invariants
///
/// `ptr` is a device registered by [`NewDevice::register`] with initialised data, and this value
/// owns the reference taken at allocation.
pub(crate) struct Registered<T> {
    ptr: NonNull<Allocation<T>>,
}

impl<T> Registered<T> {
    /// Leaves the registration to the PCI device's drvdata, which already points to it; the PCI
    /// `remove` callback takes it back with [`Registered::from_drvdata`].
    pub(crate) fn into_drvdata(self) {
        core::mem::forget(self);
    }

    /// Takes back the registration left in drvdata by [`Registered::into_drvdata`].
    ///
    /// # Safety
    ///
    /// `pdev`'s drvdata must hold a registration of this `T` given up with `into_drvdata`, and it
    /// must be taken back only once.
    pub(crate) unsafe fn from_drvdata(pdev: *mut bindings::pci_dev) -> Self {
        // SAFETY: By the safety requirements.
        let dev = unsafe { CoreDevice::<T>::from_drvdata(pdev) };
        // INVARIANT: The reference moves back from drvdata to the new value.
        Self {
            ptr: NonNull::from(&dev.0),
        }
    }
}

impl<T> Drop for Registered<T> {
    fn drop(&mut self) {
        let core = self.ptr.as_ptr().cast::<bindings::vfio_pci_core_device>();
        // SAFETY: The device is registered and we own a reference (type invariant).
        // `vfio_pci_core_unregister_device()` waits for every user of the device to go away.
        unsafe {
            bindings::vfio_pci_core_unregister_device(core);
            bindings::nvgrace_helper_vfio_put_device(&raw mut (*core).vdev);
        }
    }
}

/// `memory_lock` of a core device held for reading.
///
/// # Invariants
///
/// The guard holds `dev`'s `memory_lock` for reading.
pub(crate) struct MemoryReadGuard<'a, T> {
    dev: &'a CoreDevice<T>,
}

impl<T> MemoryReadGuard<'_, T> {
    /// Whether the device decodes memory (`__vfio_pci_memory_enabled()`: PCI_COMMAND_MEMORY set
    /// and the function not in a low-power state).
    pub(crate) fn memory_enabled(&self) -> bool {
        // SAFETY: The lock is held (type invariant), as the helper requires.
        unsafe { bindings::nvgrace_helper_vfio_pci_memory_enabled(self.dev.as_raw()) }
    }

    /// Whether vfio-pci-core has put the device in runtime low power on user request.
    pub(crate) fn pm_runtime_engaged(&self) -> bool {
        // SAFETY: `pm_runtime_engaged` changes only under `memory_lock` held for writing; we hold
        // it for reading.
        unsafe { (*self.dev.as_raw()).pm_runtime_engaged }
    }

    /// The raw core device whose `memory_lock` is held, for calls that require the lock.
    pub(crate) fn as_raw(&self) -> *mut bindings::vfio_pci_core_device {
        self.dev.as_raw()
    }
}

impl<T> Drop for MemoryReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: The lock is held for reading (type invariant).
        unsafe { bindings::up_read(&raw mut (*self.dev.as_raw()).memory_lock) };
    }
}

/// A runtime-PM usage reference on the device.
///
/// # Invariants
///
/// With `CONFIG_PM`, the guard owns one usage count of `dev`'s PCI device.
pub(crate) struct PmGuard<'a, T> {
    dev: &'a CoreDevice<T>,
}

impl<T> Drop for PmGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if !cfg!(CONFIG_PM) {
            return;
        }
        // SAFETY: We own one usage count (type invariant, with CONFIG_PM).
        unsafe { bindings::nvgrace_helper_pm_runtime_put(&raw mut (*self.dev.pdev_raw()).dev) };
    }
}

const _: () = assert!(offset_of!(Allocation<()>, core) == 0);
