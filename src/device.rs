// SPDX-License-Identifier: GPL-2.0

//! One GPU function: probe, open and close, the ioctls and config-space emulation, readiness
//! after reset, and dma-buf export. The memory paths are its children: [`mem_access`]
//! (`read`/`write`) and [`mmap`] (mappings and their faults); [`poison`] records the pages
//! memory-failure reported (as nova-core's `fb` holds the pieces of its frame buffer).
//!
//! Reference: drivers/vfio/pci/nvgrace-gpu/main.c (function names in brackets below).

use core::sync::atomic::{
    AtomicBool,
    Ordering, //
};

use kernel::{
    debugfs,
    device,
    io::Io,
    new_spinlock,
    page::PAGE_SHIFT,
    pci,
    prelude::*,
    sync::SpinLock,
    types::ScopeGuard,
    uaccess::{
        UserPtr,
        UserSlice, //
    }, //
};

mod mem_access;
mod mmap;
mod poison;

use self::poison::PoisonRecord;
use crate::{
    config_emu::{
        may_touch_emulated,
        BarWriter,
        EmuBar,
        EmuBarRegs,
        EmuBars, //
    },
    layout::{
        Layout,
        LayoutError,
        MemRegion, //
    },
    readiness::{
        self,
        CxlMemStatus,
        WaitError, //
    },
    regs::{
        self,
        InDvsec, //
    },
    vfio::{
        core_device::{
            CoreDevice,
            DeviceOps,
            MemoryReadGuard,
            PciDeviceOps,
            Registered, //
        },
        gpu_memory::GpuMemory,
        kmap::{
            LazyKernelMap,
            WriteBack,
            WriteCombine, //
        },
        memory_failure::PfnRange,
        ops::{
            self,
            ioctl_cmd,
            region_flags,
            region_index,
            split_pos,
            DmabufRequest,
            InfoCaps,
            RegionInfo,
            VariantOps, //
        },
        pci::{
            find_dvsec,
            Driver,
            Enabled, //
        },
        time::KernelClock,
        uaccess, //
    }, //
};

/// The driver's state for one GPU function.
#[pin_data]
pub(crate) struct NvGraceGpu {
    /// The GPU memory regions; `None` on the plain vfio-pci-core path (no `_DSD` memory).
    layout: Option<Layout>,
    /// The VFIO regions whose `read`/`write` the driver serves itself, one bit per region index:
    /// config space and those [`Self::region`] finds in `layout` (BAR4, and BAR2 with resmem),
    /// computed with it at probe. One test per access instead of one per region.
    emulated_regions: u32,
    /// The memory of `layout`'s usemem and resmem, as the ranges the driver may map.
    usemem_mem: Option<GpuMemory>,
    resmem_mem: Option<GpuMemory>,
    /// Config-space offset of the CXL Device DVSEC; `None`: readiness is read from BAR0.
    cxl_dvsec: Option<u16>,
    /// A reset happened: the next access to GPU memory waits for readiness first (set by the
    /// PCI core's `reset_done`, cleared once the device was seen ready).
    reset_done: AtomicBool,
    /// The emulated BAR2..5 registers, read without a lock by config reads.
    bars: EmuBarRegs,
    /// Serialises the stores to `bars` (config writes, open, `VFIO_DEVICE_RESET`). A spinlock:
    /// a store takes a few instructions, and lock-free readers spin while one is under way, so
    /// it must not be preempted.
    #[pin]
    bars_writer: SpinLock<BarWriter>,
    /// The kernel mappings of usemem and resmem for `read`/`write` (upstream's `memaddr` and
    /// `ioaddr` with `remap_lock`), made on first use, dropped on close.
    #[pin]
    usemem_kmap: LazyKernelMap<WriteBack>,
    #[pin]
    resmem_kmap: LazyKernelMap<WriteCombine>,
    /// memory-failure registration of usemem.
    #[pin]
    usemem_pfns: PfnRange,
    /// memory-failure registration of resmem.
    #[pin]
    resmem_pfns: PfnRange,
    /// The pages memory-failure reported (poison.rs), with their debugfs listing.
    #[pin]
    poison: debugfs::File<PoisonRecord>,
}

/// Upstream's `nvgrace_gpu_pci_core_ops`: plain vfio-pci-core.
static CORE_OPS: DeviceOps = ops::core_ops::<NvGraceGpu>(c"nvgrace-gpu-vfio-pci-core");
/// Upstream's `nvgrace_gpu_pci_ops`.
static NVGRACE_OPS: DeviceOps = ops::variant_ops::<NvGraceGpu>(c"nvgrace-gpu-vfio-pci");
/// Upstream's `nvgrace_gpu_pci_dev_ops`.
static NVGRACE_PCI_OPS: PciDeviceOps = ops::variant_pci_ops::<NvGraceGpu>();

/// Which emulated region a VFIO region index is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    /// BAR4/5, cacheable.
    Usemem,
    /// BAR2/3, uncached.
    Resmem,
}

impl Which {
    /// The region's name, as in upstream's comments and the kernel log.
    fn name(self) -> &'static str {
        match self {
            Which::Usemem => "usemem",
            Which::Resmem => "resmem",
        }
    }
}

/// [`NvGraceGpu::region`] of a device with `layout`.
#[inline(always)]
fn region_in(layout: Option<&Layout>, index: u64) -> Option<(Which, &MemRegion)> {
    let layout = layout?;
    match u32::try_from(index).ok()? {
        region_index::BAR4 => Some((Which::Usemem, &layout.usemem)),
        region_index::BAR2 => layout.resmem.as_ref().map(|r| (Which::Resmem, r)),
        _ => None,
    }
}

impl NvGraceGpu {
    /// The emulated region behind a VFIO region index, if any (upstream
    /// `nvgrace_gpu_memregion()`): BAR4 always, BAR2 only with resmem.
    fn region(&self, index: u64) -> Option<(Which, &MemRegion)> {
        region_in(self.layout.as_ref(), index)
    }

    /// The poisoned pages of usemem and resmem (deliberate difference 6, crate::poison).
    fn poison(&self) -> &PoisonRecord {
        &self.poison
    }

    /// The memory of an emulated region, to map or export.
    fn memory(&self, which: Which) -> Result<&GpuMemory> {
        match which {
            Which::Usemem => self.usemem_mem.as_ref(),
            Which::Resmem => self.resmem_mem.as_ref(),
        }
        .ok_or(EINVAL)
    }
}

fn wait_errno(e: WaitError) -> Error {
    match e {
        WaitError::TimedOut => ETIME,
        WaitError::Interrupted => EINTR,
        WaitError::Gone => ENODEV,
    }
}

/// Readiness (upstream `nvgrace_gpu_wait_device_ready_*()`, `nvgrace_gpu_check_device_ready()`).
impl NvGraceGpu {
    /// The CXL memory status of the CXL Device DVSEC at `dvsec`; `None` when the register reads
    /// all-ones or cannot be read (the device is gone).
    fn cxl_status(pdev: &pci::Device<device::Bound>, dvsec: u16) -> Option<CxlMemStatus> {
        let config = pdev.config_space_extended().ok()?;
        config
            .try_read(InDvsec::<regs::CXL_RANGE1_SIZE_LOW>::at(dvsec))
            .ok()?
            .status()
    }

    /// Whether BAR0's status registers, read with `c2c` and then, if the C2C link is up, with
    /// `hbm` (upstream's order), say the GPU is ready: a register that cannot be read counts as
    /// not ready.
    fn bar0_ready(
        c2c: impl FnOnce() -> Result<regs::NV_C2C_LINK_STATUS>,
        hbm: impl FnOnce() -> Result<regs::NV_HBM_TRAINING_STATUS>,
    ) -> bool {
        c2c().is_ok_and(|r| readiness::status_ready(r.status().get()))
            && hbm().is_ok_and(|r| readiness::status_ready(r.status().get()))
    }

    /// Waits for CXL memory to become active, outside `memory_lock` (it may take up to 256 s);
    /// only after a reset on the CXL path. Inlined: every access of GPU memory passes here, and
    /// only the first one after a reset has anything to do.
    #[inline]
    fn wait_cxl_if_reset(vdev: &CoreDevice<Self>) -> Result {
        let me = vdev.data();
        match me.cxl_dvsec {
            Some(dvsec) if me.reset_done.load(Ordering::Acquire) => Self::wait_cxl(vdev, dvsec),
            _ => Ok(()),
        }
    }

    /// The wait of [`NvGraceGpu::wait_cxl_if_reset`], out of line.
    #[cold]
    #[inline(never)]
    fn wait_cxl(vdev: &CoreDevice<Self>, dvsec: u16) -> Result {
        readiness::wait_cxl(&mut KernelClock::new(), || {
            Self::cxl_status(vdev.pdev(), dvsec)
        })
        .map_err(wait_errno)
    }

    /// Checks, under `memory_lock`, that the GPU is ready after a reset before its memory is
    /// touched (accesses before that can log harmless corrected RAS events). The legacy path
    /// polls BAR0 here; the CXL path only tests (`EAGAIN` if not active: wait and retry).
    /// Inlined, as [`NvGraceGpu::wait_cxl_if_reset`].
    #[inline]
    fn check_ready(vdev: &CoreDevice<Self>, guard: &MemoryReadGuard<'_, Self>) -> Result {
        if !vdev.data().reset_done.load(Ordering::Acquire) {
            return Ok(());
        }
        Self::check_ready_after_reset(vdev, guard)
    }

    /// The check of [`NvGraceGpu::check_ready`] once a reset happened, out of line.
    #[cold]
    #[inline(never)]
    fn check_ready_after_reset(
        vdev: &CoreDevice<Self>,
        guard: &MemoryReadGuard<'_, Self>,
    ) -> Result {
        let me = vdev.data();
        if !guard.memory_enabled() {
            return Err(EIO);
        }
        match me.cxl_dvsec {
            Some(dvsec) => match readiness::cxl_ready(Self::cxl_status(vdev.pdev(), dvsec))
                .map_err(wait_errno)?
            {
                true => {}
                false => return Err(EAGAIN),
            },
            None => readiness::wait_legacy(&mut KernelClock::new(), || {
                Self::bar0_ready(|| vdev.bar_read(0), || vdev.bar_read(0))
            })
            .map_err(wait_errno)?,
        }
        me.reset_done.store(false, Ordering::Release);
        Ok(())
    }
}

/// Probe (upstream `nvgrace_gpu_probe()` and helpers).
impl NvGraceGpu {
    /// Whether the part has the MIG hardware bug: yes unless the NVIDIA GPU capability DVSEC
    /// says MIG works with cached resmem.
    fn has_mig_hw_bug(pdev: &pci::Device<device::Bound>) -> bool {
        let Some(dvsec) = find_dvsec(pdev, pci::Vendor::NVIDIA, regs::GPU_CAP_DVSEC_ID) else {
            return true;
        };
        // A bitmap that cannot be read counts as all-ones, as the PCI core reports a failed
        // read: MIG supported, no bug.
        pdev.config_space_extended()
            .and_then(|c| c.try_read(InDvsec::<regs::NV_GPU_CAP_DVSEC_BITMAP>::at(dvsec)))
            .is_ok_and(|bitmap| !bitmap.mig_supported_with_cached_resmem())
    }

    /// Waits for the GPU to be ready before registering it: the CXL DVSEC where there is one
    /// (up to ~256 s), else BAR0's status registers (up to 30 s; since Grace Blackwell HBM
    /// training runs after boot, not in UEFI).
    fn probe_check_ready(pdev: &pci::Device<device::Core<'_>>, cxl: Option<u16>) -> Result {
        let mut clock = KernelClock::new();
        match cxl {
            Some(dvsec) => readiness::wait_cxl(&mut clock, || Self::cxl_status(pdev, dvsec))
                .map_err(wait_errno),
            None => {
                // Enabled, BAR0 requested and mapped for the wait, all undone in reverse order
                // on return.
                let _enabled = Enabled::new(pdev)?;
                let bar0 = pdev.iomap_region(0, <Self as Driver>::NAME)?;
                readiness::wait_legacy(&mut clock, || {
                    Self::bar0_ready(
                        || bar0.try_read(regs::NV_C2C_LINK_STATUS),
                        || bar0.try_read(regs::NV_HBM_TRAINING_STATUS),
                    )
                })
                .map_err(wait_errno)
            }
        }
    }

    /// The driver state; `debugfs` is the device's own directory, which must live until the
    /// initialiser has run.
    fn new<'a>(
        layout: Option<Layout>,
        mem: Option<GpuMemory>,
        cxl_dvsec: Option<u16>,
        debugfs: &'a debugfs::Dir,
    ) -> impl PinInit<Self, Error> + 'a {
        let region_mem = |r: &MemRegion| mem.and_then(|m| m.sub_range(r.memphys, r.memlength));
        let usemem_mem = layout.as_ref().and_then(|l| region_mem(&l.usemem));
        let resmem_mem = layout
            .as_ref()
            .and_then(|l| l.resmem.as_ref())
            .and_then(region_mem);
        let (bars, bars_writer) = EmuBarRegs::new(EmuBars {
            resmem: layout
                .and_then(|l| l.resmem)
                .map(|r| EmuBar::new(r.bar_size)),
            usemem: EmuBar::new(layout.map_or(0, |l| l.usemem.bar_size)),
        });
        let poison = PoisonRecord::new(
            layout.as_ref().map(|l| &l.usemem),
            layout.as_ref().and_then(|l| l.resmem.as_ref()),
            PAGE_SHIFT,
        );
        // The regions `region()` finds, and config space.
        let emulated_regions = [region_index::BAR2, region_index::BAR4]
            .into_iter()
            .filter(|&i| region_in(layout.as_ref(), i.into()).is_some())
            .fold(1 << region_index::CONFIG, |mask, i| mask | 1 << i);
        try_pin_init!(Self {
            layout,
            emulated_regions,
            usemem_mem,
            resmem_mem,
            cxl_dvsec,
            reset_done: AtomicBool::new(false),
            bars,
            bars_writer <- new_spinlock!(bars_writer, "nvgrace_gpu_bars"),
            usemem_kmap <- LazyKernelMap::new(),
            resmem_kmap <- LazyKernelMap::new(),
            usemem_pfns <- PfnRange::new(),
            resmem_pfns <- PfnRange::new(),
            poison <- debugfs.read_callback_file(
                c"poisoned_pages",
                poison,
                &|r: &PoisonRecord, f: &mut core::fmt::Formatter<'_>| r.show(f),
            ),
        }? Error)
    }
}

impl Driver for NvGraceGpu {
    type Data = NvGraceGpu;

    const NAME: &'static CStr = c"nvgrace_gpu_vfio_pci";

    fn probe(
        pdev: &pci::Device<device::Core<'_>>,
        debugfs: &debugfs::Dir,
    ) -> Result<Registered<Self>> {
        let dev = pdev.as_ref();
        // No memory described (absent properties, or size 0, which firmware reports when the C2C
        // link is down): plain vfio-pci-core.
        let mem = GpuMemory::from_firmware(pdev)?;
        let vdev = CoreDevice::<Self>::alloc(
            pdev,
            if mem.is_some() {
                &NVGRACE_OPS
            } else {
                &CORE_OPS
            },
        )?;
        let cxl_dvsec = find_dvsec(pdev, pci::Vendor::CXL, regs::CXL_DEVICE_DVSEC_ID);

        Self::probe_check_ready(pdev, cxl_dvsec).inspect_err(|e| {
            let path = if cxl_dvsec.is_some() {
                "CXL DVSEC memory status"
            } else {
                "BAR0 C2C/HBM status"
            };
            dev_err!(dev, "GPU not ready ({path}): error {}\n", e.to_errno());
        })?;

        let mut vdev = vdev;
        let layout = match mem {
            Some(m) => {
                let (base, size) = (m.phys(), m.len());
                let bug = Self::has_mig_hw_bug(pdev);
                let layout = Layout::new(base, size, bug).map_err(|e| {
                    dev_err!(dev, "cannot present {size:#x} bytes of GPU memory at {base:#x} (MIG bug: {bug}): {e:?}\n");
                    match e {
                        LayoutError::Overflow => EOVERFLOW,
                        LayoutError::NoUsemem => EINVAL,
                    }
                })?;
                vdev.set_pci_ops(&NVGRACE_PCI_OPS);
                Some(layout)
            }
            None => {
                vdev.set_pci_ops(&ops::CORE_PCI_OPS);
                None
            }
        };
        // The directory lives as long as the entries made in it (poison.rs).
        let dir = debugfs.subdir(dev.name());
        vdev.init_data(Self::new(layout, mem, cxl_dvsec, &dir))?
            .register()
            .inspect_err(|e| {
                dev_err!(
                    dev,
                    "cannot register the VFIO device: error {}\n",
                    e.to_errno()
                )
            })
    }

    fn reset_done(vdev: &CoreDevice<Self>) {
        // The first access after any reset (FLR, bus reset, AER recovery) waits for readiness.
        // vfio-pci-core holds memory_lock for writing around its own resets; resets from
        // elsewhere are not serialised with accesses, hence the atomic.
        vdev.data().reset_done.store(true, Ordering::Release);
    }
}

impl VariantOps for NvGraceGpu {
    fn open_device(vdev: &CoreDevice<Self>) -> Result {
        let me = vdev.data();
        let Some(layout) = me.layout else {
            return Err(EINVAL);
        };
        // Disabled again (`Opening`'s drop) if the open fails from here on.
        let opening = vdev.enable()?;
        me.bars.reset(&mut me.bars_writer.lock());
        // The PFN ranges registered so far, unregistered before that if the open fails.
        let pfns = ScopeGuard::new(|| {
            me.resmem_pfns.unregister();
            me.usemem_pfns.unregister();
        });
        Self::open_regions(vdev, &layout).inspect_err(|e| {
            dev_err!(
                vdev.pdev().as_ref(),
                "open failed (BAR0 map or PFN range registration): error {}\n",
                e.to_errno()
            )
        })?;
        pfns.dismiss();
        opening.finish();
        Ok(())
    }

    fn close_device(vdev: &CoreDevice<Self>) {
        let me = vdev.data();
        me.resmem_pfns.unregister();
        me.usemem_pfns.unregister();
        // SAFETY: VFIO calls `close_device` once the last file of the device is released: no
        // `read`/`write`, the only users of the kernel mappings, can run.
        unsafe {
            me.usemem_kmap.unmap();
            me.resmem_kmap.unmap();
        }
        vdev.close_core();
    }

    fn ioctl(vdev: &CoreDevice<Self>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            ioctl_cmd::IOEVENTFD => Err(ENOTTY),
            ioctl_cmd::RESET => {
                let me = vdev.data();
                me.bars.reset(&mut me.bars_writer.lock());
                vdev.core_ioctl(cmd, arg)
            }
            _ => vdev.core_ioctl(cmd, arg),
        }
    }

    fn region_info(vdev: &CoreDevice<Self>, info: &mut RegionInfo, caps: &mut InfoCaps) -> Result {
        let Some((_, region)) = vdev.data().region(info.index.into()) else {
            return vdev.core_region_info(info, caps);
        };
        // Only the memory that exists can be mapped: one sparse area, the rest of the
        // (power-of-two) BAR reads as all-ones.
        caps.add_sparse_mmap(0, region.memlength)?;
        info.offset = ops::region_start(info.index);
        info.size = region.bar_size;
        info.flags = region_flags::READ | region_flags::WRITE | region_flags::MMAP;
        Ok(())
    }

    // The regions vfio-pci-core serves (BAR0, the others) go to it straight from the callback
    // (`emulates()`), as upstream's `nvgrace_gpu_read()` passes them on; `read` and `write`
    // inline the emulated paths, whose one out-of-line frame converts their `Result`
    // (Documentation/performance.md, "BAR0 read", "config read").
    #[inline(always)]
    fn emulates(vdev: &CoreDevice<Self>, index: u64) -> bool {
        index < u64::from(u32::BITS) && vdev.data().emulated_regions & (1 << index) != 0
    }

    // Config space first: the guest's config accesses make config reads the most frequent
    // read of all (QEMU maps usemem and resmem, and reads them through the fd only in part).
    #[inline(always)]
    fn read(vdev: &CoreDevice<Self>, buf: UserPtr, count: usize, pos: &mut i64) -> Result<usize> {
        let (index, _) = split_pos(*pos);
        if index == region_index::CONFIG.into() {
            return Self::read_config(vdev, buf, count, pos);
        }
        if let Some((which, region)) = vdev.data().region(index) {
            return Self::read_mem(vdev, buf, count, pos, which, region);
        }
        vdev.core_read(buf, count, pos)
    }

    #[inline(always)]
    fn write(vdev: &CoreDevice<Self>, buf: UserPtr, count: usize, pos: &mut i64) -> Result<usize> {
        let (index, _) = split_pos(*pos);
        if let Some((which, region)) = vdev.data().region(index) {
            return Self::write_mem(vdev, buf, count, pos, which, region);
        }
        if index == region_index::CONFIG.into() {
            return Self::write_config(vdev, buf, count, pos);
        }
        vdev.core_write(buf, count, pos)
    }

    fn mmap(vdev: &CoreDevice<Self>, vma: &crate::vfio::vma::Vma) -> Result {
        mmap::mmap(vdev, vma)
    }

    fn dmabuf_phys(vdev: &CoreDevice<Self>, req: &mut DmabufRequest) -> Result {
        // The P2P properties of GPU memory are those of BAR0 (and Grace ignores the caching
        // attribute programmed in the SMMU), so both regions export with BAR0's provider.
        match vdev.data().region(req.region_index().into()) {
            Some((which, _)) => req.fill_with_provider_of_bar(vdev, 0, vdev.data().memory(which)?),
            None => req.fill_from_core(vdev),
        }
    }
}

impl NvGraceGpu {
    /// The part of open that needs the enabled device: readiness is read from BAR0, which
    /// `vfio_pci_core_enable()` just mapped; then the memory-failure registration of resmem
    /// and usemem (without CONFIG_MEMORY_FAILURE there is none, which is not an error).
    fn open_regions(vdev: &CoreDevice<Self>, layout: &Layout) -> Result {
        let me = vdev.data();
        vdev.check_bar_map(0)?;
        if let Some(res) = layout.resmem {
            tolerate_eopnotsupp(me.resmem_pfns.register(
                vdev,
                res.first_pfn(PAGE_SHIFT),
                res.nr_pages(PAGE_SHIFT),
            ))?;
        }
        let use_ = layout.usemem;
        tolerate_eopnotsupp(me.usemem_pfns.register(
            vdev,
            use_.first_pfn(PAGE_SHIFT),
            use_.nr_pages(PAGE_SHIFT),
        ))
    }
}

fn tolerate_eopnotsupp(r: Result) -> Result {
    match r {
        Err(e) if e == EOPNOTSUPP => Ok(()),
        r => r,
    }
}

/// The emulated BARs' `read` and `write` (upstream `nvgrace_gpu_read()` and
/// `nvgrace_gpu_write()` for usemem and resmem): the device is resumed around the access.
impl NvGraceGpu {
    #[inline(always)]
    fn read_mem(
        vdev: &CoreDevice<Self>,
        buf: UserPtr,
        count: usize,
        pos: &mut i64,
        which: Which,
        region: &MemRegion,
    ) -> Result<usize> {
        let _pm = vdev.pm_resume()?;
        mem_access::read(vdev, which, region, buf, count, pos)
    }

    #[inline(always)]
    fn write_mem(
        vdev: &CoreDevice<Self>,
        buf: UserPtr,
        count: usize,
        pos: &mut i64,
        which: Which,
        region: &MemRegion,
    ) -> Result<usize> {
        let _pm = vdev.pm_resume()?;
        mem_access::write(vdev, which, region, buf, count, pos)
    }
}

/// Config space (upstream `nvgrace_gpu_read_config_emu()`, `nvgrace_gpu_write_config_emu()`).
impl NvGraceGpu {
    #[inline(always)]
    fn read_config(
        vdev: &CoreDevice<Self>,
        buf: UserPtr,
        count: usize,
        pos: &mut i64,
    ) -> Result<usize> {
        let (_, offset) = split_pos(*pos);
        vdev.core_read(buf, count, pos)?;
        let me = vdev.data();
        // Which registers are emulated is fixed at probe: a read that misses them loads nothing.
        let Some(window) = me.bars.shape().read_window(offset, count) else {
            return Ok(count);
        };
        // The image comes out of either branch as scalars, and only its bytes go to memory: a
        // struct from either branch was copied between stack slots.
        let image = me
            .bars
            .try_image(window)
            .unwrap_or_else(move || me.bars.load_exclusive(&me.bars_writer.lock()).image(window));
        let bytes = image.to_le_bytes();
        let dst = buf.wrapping_byte_add(window.buf_offset());
        if uaccess::copy_to_user(dst, window.data(&bytes)).is_err() {
            // vfio_pci_core_read() advanced the position; undo it, as upstream does.
            *pos -= count as i64;
            return Err(EFAULT);
        }
        Ok(count)
    }

    #[inline(always)]
    fn write_config(
        vdev: &CoreDevice<Self>,
        buf: UserPtr,
        count: usize,
        pos: &mut i64,
    ) -> Result<usize> {
        let (_, offset) = split_pos(*pos);
        if !may_touch_emulated(offset, count) {
            return vdev.core_write(buf, count, pos);
        }
        // Which bytes land in emulated registers depends only on which BARs are emulated, fixed
        // at probe. The user bytes are copied before the writer lock is taken: the copy may
        // fault, and the buffer may be a mapping of this device whose fault waits for readiness
        // (up to the 30 s budget), which must not happen under a spinlock.
        let me = vdev.data();
        let span = me.bars.shape().write_span(offset, count);
        let Some((start, end)) = span else {
            return vdev.core_write(buf, count, pos);
        };
        // At most the two 8-byte registers.
        let mut data = [0u8; 16];
        let data = &mut data[..end - start];
        UserSlice::new(buf.wrapping_byte_add(start), data.len())
            .reader()
            .read_slice(data)?;
        let consumed = me
            .bars
            .update(&mut me.bars_writer.lock(), |bars| {
                bars.write(offset + start as u64, data)
            })
            .unwrap_or(0);
        *pos += consumed as i64;
        Ok(consumed)
    }
}
