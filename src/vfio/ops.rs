// SPDX-License-Identifier: GPL-2.0

//! `struct vfio_device_ops` and `struct vfio_pci_device_ops` tables, and the trampolines that
//! forward their callbacks to a [`VariantOps`] implementation in safe Rust.
//!
//! C header: [`include/linux/vfio.h`](srctree/include/linux/vfio.h)

use kernel::{
    error::{
        from_result,
        to_result, //
    },
    ffi::{
        c_char,
        c_int,
        c_long,
        c_uint,
        c_ulong,
        c_void, //
    },
    page::PAGE_SHIFT,
    prelude::*,
    str::as_char_ptr_in_const_context,
    uaccess::UserPtr, //
};

use super::{
    bindings,
    core_device::{
        CoreDevice,
        DeviceOps,
        PciDeviceOps, //
    },
    gpu_memory::GpuMemory,
    vma::Vma, //
};

/// `struct vfio_region_info`: the fixed part of a `VFIO_DEVICE_GET_REGION_INFO` reply.
pub(crate) type RegionInfo = bindings::vfio_region_info;

/// The fixed layout of a vfio-pci device fd: region `index` starts at byte offset
/// `index << OFFSET_SHIFT` (`VFIO_PCI_OFFSET_SHIFT`, include/linux/vfio_pci_core.h). The
/// functions below are the only place that encodes or decodes it.
const OFFSET_SHIFT: u32 = bindings::VFIO_PCI_OFFSET_SHIFT;

/// The device-fd byte offset at which region `index` starts (`VFIO_PCI_INDEX_TO_OFFSET()`).
pub(crate) fn region_start(index: u32) -> u64 {
    u64::from(index) << OFFSET_SHIFT
}

/// The region index and the byte offset inside the region of the device-fd byte offset `pos`
/// (`VFIO_PCI_OFFSET_TO_INDEX()` and `pos & VFIO_PCI_OFFSET_MASK`).
pub(crate) fn split_pos(pos: i64) -> (u64, u64) {
    let pos = pos as u64;
    (pos >> OFFSET_SHIFT, pos & ((1u64 << OFFSET_SHIFT) - 1))
}

/// The region index and the page offset inside the region of a VMA's page offset `pgoff`
/// (its `vm_pgoff`, in pages of `1 << PAGE_SHIFT` bytes).
pub(crate) fn split_pgoff(pgoff: u64) -> (u64, u64) {
    let shift = OFFSET_SHIFT as usize - PAGE_SHIFT;
    (pgoff >> shift, pgoff & ((1u64 << shift) - 1))
}

/// `VFIO_PCI_*_REGION_INDEX` (include/uapi/linux/vfio.h).
pub(crate) mod region_index {
    use super::bindings;
    /// BAR2/3: resmem.
    pub(crate) const BAR2: u32 = bindings::VFIO_PCI_BAR2_REGION_INDEX;
    /// BAR4/5: usemem.
    pub(crate) const BAR4: u32 = bindings::VFIO_PCI_BAR4_REGION_INDEX;
    /// PCI config space.
    pub(crate) const CONFIG: u32 = bindings::VFIO_PCI_CONFIG_REGION_INDEX;
}

/// `VFIO_DEVICE_*` ioctl numbers the driver handles itself.
pub(crate) mod ioctl_cmd {
    use super::bindings;
    /// `VFIO_DEVICE_RESET`.
    pub(crate) const RESET: u32 = bindings::NVGRACE_CONST_VFIO_DEVICE_RESET;
    /// `VFIO_DEVICE_IOEVENTFD`.
    pub(crate) const IOEVENTFD: u32 = bindings::NVGRACE_CONST_VFIO_DEVICE_IOEVENTFD;
}

/// `VFIO_REGION_INFO_FLAG_*` (include/uapi/linux/vfio.h).
pub(crate) mod region_flags {
    use super::bindings;
    pub(crate) const READ: u32 = bindings::VFIO_REGION_INFO_FLAG_READ;
    pub(crate) const WRITE: u32 = bindings::VFIO_REGION_INFO_FLAG_WRITE;
    pub(crate) const MMAP: u32 = bindings::VFIO_REGION_INFO_FLAG_MMAP;
}

/// The capability chain of a `VFIO_DEVICE_GET_REGION_INFO` reply being built.
///
/// # Invariants
///
/// The pointer is the `struct vfio_info_cap` that vfio passed to the `get_region_info_caps`
/// callback in progress, valid and ours to add to for the callback's duration (the value is
/// made only by that callback's trampoline and lent to the driver by reference).
pub(crate) struct InfoCaps(*mut bindings::vfio_info_cap);

impl InfoCaps {
    /// Adds a `VFIO_REGION_INFO_CAP_SPARSE_MMAP` capability (version 1) with one area of `size`
    /// bytes at `offset` bytes into the region. Returns `ENOMEM`.
    pub(crate) fn add_sparse_mmap(&mut self, offset: u64, size: u64) -> Result {
        type Sparse = bindings::vfio_region_info_cap_sparse_mmap;
        type Area = bindings::vfio_region_sparse_mmap_area;
        const LEN: usize = core::mem::size_of::<Sparse>() + core::mem::size_of::<Area>();
        // `vfio_info_add_capability()` copies the capability, so it can live on the stack
        // (upstream allocates it): 32 bytes, 8-byte aligned as `u64`s.
        let mut buf = [0u64; LEN.div_ceil(8)];
        let sparse = buf.as_mut_ptr().cast::<Sparse>();
        // SAFETY: `buf` is zeroed, 8-byte aligned and large enough for the capability and one
        // area; `vfio_info_add_capability()` copies it.
        unsafe {
            (*sparse).header.id = bindings::VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16;
            (*sparse).header.version = 1;
            (*sparse).nr_areas = 1;
            let area = (&raw mut (*sparse).areas).cast::<Area>();
            (*area).offset = offset;
            (*area).size = size;
            to_result(bindings::vfio_info_add_capability(
                self.0,
                &raw mut (*sparse).header,
                LEN,
            ))
        }
    }
}

/// A `get_dmabuf_phys` request: describe a region's memory for a dma-buf export.
///
/// # Invariants
///
/// The fields are the arguments vfio-pci-core passed to the `get_dmabuf_phys` callback in
/// progress: `provider` is its output slot, `phys_vec` an array of `nr_ranges` entries to fill
/// and `dma_ranges` the `nr_ranges` ranges requested, all valid for the callback's duration
/// (the value is made only by that callback's trampoline and lent to the driver by reference).
pub(crate) struct DmabufRequest {
    provider: *mut *mut bindings::p2pdma_provider,
    region_index: u32,
    phys_vec: *mut bindings::phys_vec,
    dma_ranges: *mut bindings::vfio_region_dma_range,
    nr_ranges: usize,
}

impl DmabufRequest {
    /// The VFIO region index the export is for.
    pub(crate) fn region_index(&self) -> u32 {
        self.region_index
    }

    /// Answers for the GPU memory `mem`, with the p2pdma provider of BAR `bar`
    /// (`pcim_p2pdma_provider()`; `EINVAL` if it has none or `bar` is not a standard BAR) and the
    /// requested ranges checked against `mem` (`vfio_pci_core_fill_phys_vec()`).
    pub(crate) fn fill_with_provider_of_bar<T>(
        &mut self,
        vdev: &CoreDevice<T>,
        bar: u32,
        mem: &GpuMemory,
    ) -> Result {
        if bar >= bindings::PCI_STD_NUM_BARS {
            return Err(EINVAL);
        }
        let bar = c_int::try_from(bar).map_err(|_| EINVAL)?;
        let (phys, len) = (mem.phys(), mem.len());
        // SAFETY: The PCI device is valid and `bar` a standard BAR; `provider` is the caller's
        // output slot; the range is GPU memory (the type invariant of `mem`), which may be
        // exported.
        unsafe {
            let provider = bindings::pcim_p2pdma_provider(vdev.pdev_raw(), bar);
            if provider.is_null() {
                return Err(EINVAL);
            }
            *self.provider = provider;
            to_result(bindings::vfio_pci_core_fill_phys_vec(
                self.phys_vec,
                self.dma_ranges,
                self.nr_ranges,
                phys,
                len,
            ))
        }
    }

    /// Lets vfio-pci-core answer for a real BAR (`vfio_pci_core_get_dmabuf_phys()`).
    pub(crate) fn fill_from_core<T>(&mut self, vdev: &CoreDevice<T>) -> Result {
        // SAFETY: The arguments are the ones vfio-pci-core passed to us.
        to_result(unsafe {
            bindings::vfio_pci_core_get_dmabuf_phys(
                vdev.as_raw(),
                self.provider,
                self.region_index,
                self.phys_vec,
                self.dma_ranges,
                self.nr_ranges,
            )
        })
    }
}

/// The VFIO operations a variant driver overrides; everything else is vfio-pci-core's.
///
/// Each method runs in the context of the matching `vfio_device_ops` callback.
pub(crate) trait VariantOps: Sized + Send + Sync + 'static {
    /// `open_device`: the first open of the device.
    fn open_device(vdev: &CoreDevice<Self>) -> Result;
    /// `close_device`: the last close.
    fn close_device(vdev: &CoreDevice<Self>);
    /// `ioctl`: returns the ioctl's result (non-negative), or its error.
    fn ioctl(vdev: &CoreDevice<Self>, cmd: u32, arg: usize) -> Result<isize>;
    /// `get_region_info_caps`: fills `info` (its `index` is set) and its capabilities.
    fn region_info(vdev: &CoreDevice<Self>, info: &mut RegionInfo, caps: &mut InfoCaps) -> Result;
    /// Whether `read`/`write` of region `index` go to [`VariantOps::read`] and
    /// [`VariantOps::write`]. The other regions' go straight to vfio-pci-core
    /// (`vfio_pci_core_read()`, `vfio_pci_core_write()`), without a round trip through `Result`
    /// or a stack frame of the callback's own.
    fn emulates(vdev: &CoreDevice<Self>, index: u64) -> bool;
    /// `read` of a region that [`VariantOps::emulates`]: `count` bytes at the device-fd offset
    /// `*pos` into user memory at `buf`.
    fn read(vdev: &CoreDevice<Self>, buf: UserPtr, count: usize, pos: &mut i64) -> Result<usize>;
    /// `write` of a region that [`VariantOps::emulates`]: `count` bytes from user memory at
    /// `buf` to the device-fd offset `*pos`.
    fn write(vdev: &CoreDevice<Self>, buf: UserPtr, count: usize, pos: &mut i64) -> Result<usize>;
    /// `mmap`: sets up `vma`.
    fn mmap(vdev: &CoreDevice<Self>, vma: &Vma) -> Result;
    /// `vfio_pci_device_ops.get_dmabuf_phys`.
    fn dmabuf_phys(vdev: &CoreDevice<Self>, req: &mut DmabufRequest) -> Result;
}

impl<T> CoreDevice<T> {
    /// vfio-pci-core's `ioctl`.
    pub(crate) fn core_ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        // SAFETY: Called from our own `ioctl` callback with its arguments.
        let r = unsafe { bindings::vfio_pci_core_ioctl(self.as_vdev(), cmd, arg as c_ulong) };
        if r < 0 {
            // A negative result is a negative errno (include/linux/vfio.h `ioctl`).
            return Err(Error::from_errno(r as i32));
        }
        Ok(r as isize)
    }

    /// vfio-pci-core's `get_region_info_caps`.
    pub(crate) fn core_region_info(&self, info: &mut RegionInfo, caps: &mut InfoCaps) -> Result {
        // SAFETY: Called from our own `get_region_info_caps` callback with its arguments.
        to_result(unsafe { bindings::vfio_pci_ioctl_get_region_info(self.as_vdev(), info, caps.0) })
    }

    /// vfio-pci-core's `read`.
    pub(crate) fn core_read(&self, buf: UserPtr, count: usize, pos: &mut i64) -> Result<usize> {
        // SAFETY: `buf` is a user pointer (checked by the copy routines); `pos` is valid.
        let r = unsafe {
            bindings::vfio_pci_core_read(
                self.as_vdev(),
                buf.as_mut_ptr().cast::<c_char>(),
                count,
                pos,
            )
        };
        ssize_to_result(r)
    }

    /// vfio-pci-core's `write`.
    pub(crate) fn core_write(&self, buf: UserPtr, count: usize, pos: &mut i64) -> Result<usize> {
        // SAFETY: As in `core_read`.
        let r = unsafe {
            bindings::vfio_pci_core_write(
                self.as_vdev(),
                buf.as_const_ptr().cast::<c_char>(),
                count,
                pos,
            )
        };
        ssize_to_result(r)
    }

    /// vfio-pci-core's `mmap`.
    pub(crate) fn core_mmap(&self, vma: &Vma) -> Result {
        // SAFETY: Called from our own `mmap` callback with its VMA.
        to_result(unsafe { bindings::vfio_pci_core_mmap(self.as_vdev(), vma.as_raw()) })
    }

    /// vfio-pci-core's access to BAR-like memory mapped at `io` (`vfio_pci_core_do_io_rw()`),
    /// with accesses no wider than 8 bytes and no memory-enable check, as upstream uses it for
    /// resmem. `offset` is the byte offset into `io`. Returns the bytes copied.
    ///
    /// # Safety
    ///
    /// `io` must map at least `offset + count` bytes of MMIO-capable memory for the call.
    pub(crate) unsafe fn do_io_rw(
        &self,
        io: *mut c_void,
        buf: UserPtr,
        offset: u64,
        count: usize,
        write: bool,
    ) -> Result<usize> {
        // SAFETY: By the safety requirements; `buf` is a user pointer.
        let r = unsafe {
            bindings::vfio_pci_core_do_io_rw(
                self.as_raw(),
                false,
                io,
                buf.as_mut_ptr().cast::<c_char>(),
                offset as i64,
                count,
                0,
                0,
                write,
                bindings::vfio_pci_io_width_VFIO_PCI_IO_WIDTH_8,
            )
        };
        ssize_to_result(r)
    }
}

fn ssize_to_result(r: isize) -> Result<usize> {
    if r < 0 {
        Err(Error::from_errno(r as i32))
    } else {
        Ok(r as usize)
    }
}

fn result_to_ssize(r: Result<usize>) -> isize {
    match r {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
///
/// `vdev` must be the `vfio_device` of a device of `T` whose data is initialised (true for every
/// callback after `init`; `release` is handled by [`CoreDevice::release`]).
unsafe fn dev<'a, T>(vdev: *mut bindings::vfio_device) -> &'a CoreDevice<T> {
    // SAFETY: By the safety requirements.
    unsafe { CoreDevice::<T>::from_vdev(vdev) }
}

/// # Safety
///
/// Only vfio may call this, as the matching callback of a device made for `T`.
unsafe extern "C" fn open_device<T: VariantOps>(vdev: *mut bindings::vfio_device) -> c_int {
    // SAFETY: vfio calls this for a device of `T`.
    from_result(|| T::open_device(unsafe { dev::<T>(vdev) }).map(|()| 0))
}

/// # Safety
///
/// Only vfio may call this, as the matching callback of a device made for `T`.
unsafe extern "C" fn close_device<T: VariantOps>(vdev: *mut bindings::vfio_device) {
    // SAFETY: vfio calls this for a device of `T`.
    T::close_device(unsafe { dev::<T>(vdev) })
}

/// # Safety
///
/// Only vfio may call this, as the matching callback of a device made for `T`.
unsafe extern "C" fn ioctl<T: VariantOps>(
    vdev: *mut bindings::vfio_device,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: vfio calls this for a device of `T`.
    match T::ioctl(unsafe { dev::<T>(vdev) }, cmd, arg) {
        Ok(r) => r as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
///
/// Only vfio may call this, as the matching callback of a device made for `T`.
unsafe extern "C" fn region_info<T: VariantOps>(
    vdev: *mut bindings::vfio_device,
    info: *mut RegionInfo,
    caps: *mut bindings::vfio_info_cap,
) -> c_int {
    // SAFETY: vfio calls this for a device of `T` with a valid, exclusively ours `info`.
    let (d, info) = unsafe { (dev::<T>(vdev), &mut *info) };
    from_result(|| T::region_info(d, info, &mut InfoCaps(caps)).map(|()| 0))
}

/// # Safety
///
/// Only vfio may call this, as the matching callback of a device made for `T`.
unsafe extern "C" fn read<T: VariantOps>(
    vdev: *mut bindings::vfio_device,
    buf: *mut c_char,
    count: usize,
    ppos: *mut i64,
) -> isize {
    // SAFETY: vfio calls this for a device of `T` with a valid position; `buf` is a user pointer.
    let (d, pos) = unsafe { (dev::<T>(vdev), &mut *ppos) };
    if !T::emulates(d, split_pos(*pos).0) {
        // SAFETY: vfio-pci-core's own callback, called as vfio calls this one.
        return unsafe { bindings::vfio_pci_core_read(vdev, buf, count, ppos) };
    }
    read_emulated(d, UserPtr::from_ptr(buf.cast()), count, pos)
}

/// [`VariantOps::read`], its result as `read` returns it. Out of line: the callback stays a
/// frameless dispatch for the regions vfio-pci-core serves.
#[inline(never)]
fn read_emulated<T: VariantOps>(
    d: &CoreDevice<T>,
    buf: UserPtr,
    count: usize,
    pos: &mut i64,
) -> isize {
    result_to_ssize(T::read(d, buf, count, pos))
}

/// # Safety
///
/// Only vfio may call this, as the matching callback of a device made for `T`.
unsafe extern "C" fn write<T: VariantOps>(
    vdev: *mut bindings::vfio_device,
    buf: *const c_char,
    count: usize,
    ppos: *mut i64,
) -> isize {
    // SAFETY: As in `read`.
    let (d, pos) = unsafe { (dev::<T>(vdev), &mut *ppos) };
    if !T::emulates(d, split_pos(*pos).0) {
        // SAFETY: As in `read`.
        return unsafe { bindings::vfio_pci_core_write(vdev, buf, count, ppos) };
    }
    write_emulated(d, UserPtr::from_ptr(buf.cast_mut().cast()), count, pos)
}

/// [`VariantOps::write`], its result as `write` returns it; out of line as [`read_emulated`].
#[inline(never)]
fn write_emulated<T: VariantOps>(
    d: &CoreDevice<T>,
    buf: UserPtr,
    count: usize,
    pos: &mut i64,
) -> isize {
    result_to_ssize(T::write(d, buf, count, pos))
}

/// # Safety
///
/// Only vfio may call this, as the matching callback of a device made for `T`.
unsafe extern "C" fn mmap<T: VariantOps>(
    vdev: *mut bindings::vfio_device,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: vfio calls this for a device of `T` from `mmap(2)` with the new VMA, which the
    // mmap lock protects for the call.
    let (d, vma) = unsafe { (dev::<T>(vdev), Vma::from_raw(vma)) };
    from_result(|| T::mmap(d, vma).map(|()| 0))
}

/// # Safety
///
/// Only vfio may call this, as the matching callback of a device made for `T`.
unsafe extern "C" fn dmabuf_phys<T: VariantOps>(
    vdev: *mut bindings::vfio_pci_core_device,
    provider: *mut *mut bindings::p2pdma_provider,
    region_index: c_uint,
    phys_vec: *mut bindings::phys_vec,
    dma_ranges: *mut bindings::vfio_region_dma_range,
    nr_ranges: usize,
) -> c_int {
    // SAFETY: vfio-pci-core calls this for a device of `T`; `vdev->vdev` is its `vfio_device`.
    let d = unsafe { dev::<T>(&raw mut (*vdev).vdev) };
    let mut req = DmabufRequest {
        provider,
        region_index,
        phys_vec,
        dma_ranges,
        nr_ranges,
    };
    from_result(|| T::dmabuf_phys(d, &mut req).map(|()| 0))
}

/// The table of a variant driver `T` (upstream's `nvgrace_gpu_pci_ops`): `T`'s operations, and
/// vfio-pci-core's for the rest (init, device_feature, request, match, iommufd).
pub(crate) const fn variant_ops<T: VariantOps>(name: &'static CStr) -> DeviceOps {
    DeviceOps(bindings::vfio_device_ops {
        name: as_char_ptr_in_const_context(name).cast_mut(),
        init: Some(bindings::vfio_pci_core_init_dev),
        release: Some(CoreDevice::<T>::release),
        open_device: Some(open_device::<T>),
        close_device: Some(close_device::<T>),
        ioctl: Some(ioctl::<T>),
        get_region_info_caps: Some(region_info::<T>),
        device_feature: Some(bindings::vfio_pci_core_ioctl_feature),
        read: Some(read::<T>),
        write: Some(write::<T>),
        mmap: Some(mmap::<T>),
        request: Some(bindings::vfio_pci_core_request),
        match_: Some(bindings::vfio_pci_core_match),
        match_token_uuid: Some(bindings::vfio_pci_core_match_token_uuid),
        // Without CONFIG_IOMMUFD (Debian 13's kernels) vfio.h defines these four as NULL: the
        // fields stay `None`, as upstream's do.
        #[cfg(CONFIG_IOMMUFD)]
        bind_iommufd: Some(bindings::vfio_iommufd_physical_bind),
        #[cfg(CONFIG_IOMMUFD)]
        unbind_iommufd: Some(bindings::vfio_iommufd_physical_unbind),
        #[cfg(CONFIG_IOMMUFD)]
        attach_ioas: Some(bindings::vfio_iommufd_physical_attach_ioas),
        #[cfg(CONFIG_IOMMUFD)]
        detach_ioas: Some(bindings::vfio_iommufd_physical_detach_ioas),
        ..pin_init::zeroed()
    })
}

/// The dma-buf hook of a variant driver `T`.
pub(crate) const fn variant_pci_ops<T: VariantOps>() -> PciDeviceOps {
    PciDeviceOps(bindings::vfio_pci_device_ops {
        get_dmabuf_phys: Some(dmabuf_phys::<T>),
    })
}

/// The plain vfio-pci-core behaviour, for a device without coherent GPU memory (upstream's
/// `nvgrace_gpu_pci_core_ops`): every operation is vfio-pci-core's, except that `release` also
/// drops the driver state `T`.
pub(crate) const fn core_ops<T>(name: &'static CStr) -> DeviceOps {
    DeviceOps(bindings::vfio_device_ops {
        name: as_char_ptr_in_const_context(name).cast_mut(),
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
        // Without CONFIG_IOMMUFD (Debian 13's kernels) vfio.h defines these four as NULL: the
        // fields stay `None`, as upstream's do.
        #[cfg(CONFIG_IOMMUFD)]
        bind_iommufd: Some(bindings::vfio_iommufd_physical_bind),
        #[cfg(CONFIG_IOMMUFD)]
        unbind_iommufd: Some(bindings::vfio_iommufd_physical_unbind),
        #[cfg(CONFIG_IOMMUFD)]
        attach_ioas: Some(bindings::vfio_iommufd_physical_attach_ioas),
        #[cfg(CONFIG_IOMMUFD)]
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
