// SPDX-License-Identifier: GPL-2.0

//! Opening the GPU through VFIO, both ways user space does it, and the region accessors.
//!
//! - iommufd: the device cdev `/dev/vfio/devices/vfioN` bound to `/dev/iommu`
//!   (Documentation/driver-api/vfio.rst, "VFIO device cdev").
//! - legacy: the group `/dev/vfio/<group>` attached to a type1 container `/dev/vfio/vfio`.

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use vfio_bindings::bindings::vfio as uapi;

use crate::sys;

/// `_IO(type, nr)` of include/uapi/asm-generic/ioctl.h (no size, no direction: VFIO's ioctls).
const fn io(ty: u8, nr: u32) -> libc::c_ulong {
    ((ty as libc::c_ulong) << 8) | nr as libc::c_ulong
}

/// VFIO ioctl numbers, `_IO(VFIO_TYPE, VFIO_BASE + n)` (include/uapi/linux/vfio.h).
pub mod ioctl {
    use super::io;
    use super::uapi::VFIO_BASE;
    use super::uapi::VFIO_TYPE;

    pub const VFIO_GET_API_VERSION: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE);
    pub const VFIO_CHECK_EXTENSION: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 1);
    pub const VFIO_SET_IOMMU: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 2);
    pub const VFIO_GROUP_GET_STATUS: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 3);
    pub const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 4);
    pub const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 6);
    pub const VFIO_DEVICE_GET_INFO: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 7);
    pub const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 8);
    pub const VFIO_DEVICE_RESET: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 11);
    pub const VFIO_DEVICE_IOEVENTFD: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 16);
    pub const VFIO_DEVICE_FEATURE: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 17);
    pub const VFIO_DEVICE_BIND_IOMMUFD: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 18);
    pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: libc::c_ulong = io(VFIO_TYPE, VFIO_BASE + 19);

    /// `IOMMU_IOAS_ALLOC`: `_IO(IOMMUFD_TYPE = ';', IOMMUFD_CMD_IOAS_ALLOC = 0x81)`
    /// (include/uapi/linux/iommufd.h).
    pub const IOMMU_IOAS_ALLOC: libc::c_ulong = io(b';', 0x81);
}

/// `struct iommu_ioas_alloc` (include/uapi/linux/iommufd.h); vfio-bindings has no iommufd.
#[repr(C)]
#[derive(Default)]
struct IommuIoasAlloc {
    size: u32,
    flags: u32,
    out_ioas_id: u32,
}

/// Binds a device opened through its cdev to `iommufd` and attaches it to a new IOAS there (the
/// VFIO cdev sequence: VFIO_DEVICE_BIND_IOMMUFD, IOMMU_IOAS_ALLOC,
/// VFIO_DEVICE_ATTACH_IOMMUFD_PT), which makes its regions accessible.
pub fn attach_to_new_ioas(fd: &File, iommufd: &File) -> io::Result<()> {
    let mut bind = uapi::vfio_device_bind_iommufd {
        argsz: size_of::<uapi::vfio_device_bind_iommufd>() as u32,
        iommufd: iommufd.as_raw_fd(),
        ..Default::default()
    };
    // SAFETY: The argument is the structure VFIO_DEVICE_BIND_IOMMUFD takes.
    ctx("VFIO_DEVICE_BIND_IOMMUFD", unsafe {
        ioctl_ptr(fd, ioctl::VFIO_DEVICE_BIND_IOMMUFD, &mut bind)
    })?;
    let mut alloc = IommuIoasAlloc {
        size: size_of::<IommuIoasAlloc>() as u32,
        ..Default::default()
    };
    // SAFETY: The argument is the structure IOMMU_IOAS_ALLOC takes.
    ctx("IOMMU_IOAS_ALLOC", unsafe {
        ioctl_ptr(iommufd, ioctl::IOMMU_IOAS_ALLOC, &mut alloc)
    })?;
    let mut attach = uapi::vfio_device_attach_iommufd_pt {
        argsz: size_of::<uapi::vfio_device_attach_iommufd_pt>() as u32,
        pt_id: alloc.out_ioas_id,
        ..Default::default()
    };
    // SAFETY: The argument is the structure VFIO_DEVICE_ATTACH_IOMMUFD_PT takes.
    ctx("VFIO_DEVICE_ATTACH_IOMMUFD_PT", unsafe {
        ioctl_ptr(fd, ioctl::VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut attach)
    })?;
    Ok(())
}

/// Issues an ioctl whose argument is a pointer to `arg`; returns its non-negative result.
///
/// # Safety
///
/// `T` must be the argument structure `req` expects on `fd`.
pub unsafe fn ioctl_ptr<T>(fd: &impl AsRawFd, req: libc::c_ulong, arg: &mut T) -> io::Result<i32> {
    // SAFETY: By the safety requirements, `arg` has the layout the kernel reads and writes.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Issues an ioctl with an integer argument.
pub fn ioctl_val(fd: &impl AsRawFd, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: The requests used with this take a value, not a pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `VFIO_PCI_*_REGION_INDEX` (include/uapi/linux/vfio.h).
pub mod region {
    pub const BAR0: u32 = 0;
    pub const BAR2: u32 = 2;
    pub const BAR4: u32 = 4;
    pub const CONFIG: u32 = 7;
}

/// `VFIO_PCI_OFFSET_SHIFT` of vfio-pci-core: the fixed offset layout of the device fd. Drivers
/// report it in region info; tests use the reported offset, this only names the convention.
pub const VFIO_PCI_OFFSET_SHIFT: u32 = 40;

/// How a device fd was obtained; what keeps its IOMMU context alive.
pub enum Context {
    /// iommufd: the `/dev/iommu` fd the device is bound to.
    Iommufd(File),
    /// Legacy: the container and group fds.
    Group { container: File, group: File },
}

/// An open VFIO device.
pub struct Device {
    /// The device fd.
    pub fd: File,
    /// Dropped after `fd` (field order): the device is closed before its IOMMU context.
    pub context: Context,
}

/// The cdev of a PCI function under /dev/vfio/devices (its `vfio-dev/vfioN` sysfs child).
pub fn cdev_path(bdf: &str) -> io::Result<String> {
    let dir = sys::pci_dir(bdf).join("vfio-dev");
    for e in std::fs::read_dir(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
    {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with("vfio") {
            return Ok(format!("/dev/vfio/devices/{name}"));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{bdf} has no VFIO device cdev"),
    ))
}

/// The IOMMU group number of a PCI function.
pub fn iommu_group(bdf: &str) -> io::Result<String> {
    let link = std::fs::read_link(sys::pci_dir(bdf).join("iommu_group"))?;
    Ok(link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default())
}

fn open_rw(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {path}: {e}")))
}

fn ctx<T>(what: &str, r: io::Result<T>) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Whether the running kernel has iommufd (CONFIG_IOMMUFD: `/dev/iommu`, and the device cdevs of
/// CONFIG_VFIO_DEVICE_CDEV). Debian's kernels have neither: there the VFIO group is the only way.
pub fn iommufd_available() -> bool {
    std::path::Path::new("/dev/iommu").exists()
}

/// The reason of a test about iommufd itself that skips on a kernel without it.
pub const NO_IOMMUFD: &str = "the kernel has no iommufd (no /dev/iommu: CONFIG_IOMMUFD is not set)";

impl Device {
    /// Opens the device through its cdev and iommufd, attached to a new IOAS. On a kernel without
    /// iommufd (`iommufd_available()`), through its group instead (`open_group`): the tests that
    /// open the device only to use it run on both; the tests of iommufd itself check first.
    pub fn open_iommufd(bdf: &str) -> io::Result<Self> {
        if !iommufd_available() {
            return Self::open_group(bdf);
        }
        let fd = open_rw(&cdev_path(bdf)?)?;
        let iommufd = open_rw("/dev/iommu")?;
        attach_to_new_ioas(&fd, &iommufd)?;
        Ok(Device {
            fd,
            context: Context::Iommufd(iommufd),
        })
    }

    /// Opens the device through its IOMMU group in a new type1 (v2) container.
    pub fn open_group(bdf: &str) -> io::Result<Self> {
        Self::open_group_as(bdf, bdf)
    }

    /// Like [`Self::open_group`], asking `VFIO_GROUP_GET_DEVICE_FD` for the device by `name`:
    /// what the device's `match` operation accepts (vfio-pci-core's: the PCI name, then
    /// optionally ` vf_token=<UUID>`), or the device name exactly when it has none.
    pub fn open_group_as(bdf: &str, name: &str) -> io::Result<Self> {
        let container = open_rw("/dev/vfio/vfio")?;
        let group = open_rw(&format!("/dev/vfio/{}", iommu_group(bdf)?))?;
        let mut status = uapi::vfio_group_status {
            argsz: size_of::<uapi::vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: The argument is the structure VFIO_GROUP_GET_STATUS takes.
        ctx("VFIO_GROUP_GET_STATUS", unsafe {
            ioctl_ptr(&group, ioctl::VFIO_GROUP_GET_STATUS, &mut status)
        })?;
        if status.flags & uapi::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(io::Error::other("the IOMMU group is not viable"));
        }
        let mut cfd = container.as_raw_fd();
        // SAFETY: VFIO_GROUP_SET_CONTAINER takes a pointer to the container fd.
        ctx("VFIO_GROUP_SET_CONTAINER", unsafe {
            ioctl_ptr(&group, ioctl::VFIO_GROUP_SET_CONTAINER, &mut cfd)
        })?;
        ctx(
            "VFIO_SET_IOMMU",
            ioctl_val(
                &container,
                ioctl::VFIO_SET_IOMMU,
                uapi::VFIO_TYPE1v2_IOMMU as libc::c_ulong,
            ),
        )?;
        let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD takes a NUL-terminated device name.
        let r = unsafe {
            libc::ioctl(
                group.as_raw_fd(),
                ioctl::VFIO_GROUP_GET_DEVICE_FD,
                name.as_ptr(),
            )
        };
        if r < 0 {
            return ctx("VFIO_GROUP_GET_DEVICE_FD", Err(io::Error::last_os_error()));
        }
        // SAFETY: `r` is a new fd that nothing else owns.
        let fd = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(r) };
        Ok(Device {
            fd,
            context: Context::Group { container, group },
        })
    }

    /// `VFIO_DEVICE_GET_INFO`.
    pub fn info(&self) -> io::Result<uapi::vfio_device_info> {
        let mut info = uapi::vfio_device_info {
            argsz: size_of::<uapi::vfio_device_info>() as u32,
            ..Default::default()
        };
        // SAFETY: The argument is the structure VFIO_DEVICE_GET_INFO takes.
        ctx("VFIO_DEVICE_GET_INFO", unsafe {
            ioctl_ptr(&self.fd, ioctl::VFIO_DEVICE_GET_INFO, &mut info)
        })?;
        Ok(info)
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` without capabilities (the fixed part only).
    pub fn region_info(&self, index: u32) -> io::Result<uapi::vfio_region_info> {
        let mut info = uapi::vfio_region_info {
            argsz: size_of::<uapi::vfio_region_info>() as u32,
            index,
            ..Default::default()
        };
        // SAFETY: The argument is the structure VFIO_DEVICE_GET_REGION_INFO takes; its argsz
        // covers only the fixed part, so the kernel writes no capabilities.
        let r = ctx("VFIO_DEVICE_GET_REGION_INFO", unsafe {
            ioctl_ptr(&self.fd, ioctl::VFIO_DEVICE_GET_REGION_INFO, &mut info)
        });
        // The fixed part's flags, size and offset, for the trace.
        let mut fixed = [0u8; 20];
        fixed[..4].copy_from_slice(&info.flags.to_le_bytes());
        fixed[4..12].copy_from_slice(&info.size.to_le_bytes());
        fixed[12..20].copy_from_slice(&info.offset.to_le_bytes());
        let traced = match &r {
            Ok(_) => Ok(fixed.len()),
            Err(e) => Err(io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0))),
        };
        crate::tap::trace("region_info", index.into(), 0, &traced, &fixed);
        r?;
        Ok(info)
    }

    /// One pread of the device fd at `pos`, in the test's I/O trace (crate::tap::trace).
    pub fn pread(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let r = self.fd.read_at(buf, pos);
        crate::tap::trace("pread", pos, buf.len(), &r, buf);
        r
    }

    /// One pwrite of the device fd at `pos`, in the test's I/O trace.
    pub fn pwrite(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        let r = self.fd.write_at(buf, pos);
        crate::tap::trace("pwrite", pos, buf.len(), &r, &[]);
        r
    }

    /// Reads `buf.len()` bytes of region `index` at `offset`, as one pread; returns the count.
    pub fn read_region(&self, index: u32, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let info = self.region_info(index)?;
        self.pread(buf, info.offset + offset)
    }

    /// Writes `buf` to region `index` at `offset`, as one pwrite; returns the count.
    pub fn write_region(&self, index: u32, offset: u64, buf: &[u8]) -> io::Result<usize> {
        let info = self.region_info(index)?;
        self.pwrite(buf, info.offset + offset)
    }

    /// Reads a little-endian config-space value of `N` bytes.
    pub fn config_read<const N: usize>(&self, offset: u64) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        let n = self.read_region(region::CONFIG, offset, &mut b)?;
        if n != N {
            return Err(io::Error::other(format!(
                "config read at {offset:#x}: {n} of {N} bytes"
            )));
        }
        Ok(b)
    }

    /// Reads `buf.len()` config-space bytes at `offset`, as one pread.
    pub fn config_pread(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.pread(
            buf,
            ((region::CONFIG as u64) << VFIO_PCI_OFFSET_SHIFT) + offset,
        )
    }

    /// Writes `buf` to config space at `offset`, as one pwrite.
    pub fn config_pwrite(&self, offset: u64, buf: &[u8]) -> io::Result<usize> {
        self.pwrite(
            buf,
            ((region::CONFIG as u64) << VFIO_PCI_OFFSET_SHIFT) + offset,
        )
    }

    /// Reads a little-endian 64-bit config-space value.
    pub fn config_read64(&self, offset: u64) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.config_read::<8>(offset)?))
    }

    /// Reads a 32-bit config-space register.
    pub fn config_read32(&self, offset: u64) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.config_read::<4>(offset)?))
    }

    /// Writes a little-endian value of `N` bytes to config space, checking the count.
    pub fn config_write<const N: usize>(&self, offset: u64, val: [u8; N]) -> io::Result<()> {
        let n = self.config_pwrite(offset, &val)?;
        if n != N {
            return Err(io::Error::other(format!(
                "config write at {offset:#x}: {n} of {N} bytes"
            )));
        }
        Ok(())
    }

    /// `VFIO_DEVICE_RESET`.
    pub fn reset(&self) -> io::Result<()> {
        ioctl_val(&self.fd, ioctl::VFIO_DEVICE_RESET, 0).map(|_| ())
    }

    /// `VFIO_DEVICE_FEATURE` with `VFIO_DEVICE_FEATURE_SET` of a feature that takes no payload
    /// (`VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY`, `_LOW_POWER_EXIT`). Errors keep their errno.
    pub fn set_feature(&self, feature: u32) -> io::Result<()> {
        // struct vfio_device_feature: argsz (its 8 bytes, no payload), then flags.
        let mut hdr: u64 = 8 | (u64::from(uapi::VFIO_DEVICE_FEATURE_SET | feature) << 32);
        // SAFETY: `hdr` is a `vfio_device_feature` header without payload, as its argsz says.
        unsafe { ioctl_ptr(&self.fd, ioctl::VFIO_DEVICE_FEATURE, &mut hdr) }.map(|_| ())
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` with a caller-chosen `argsz` (at least the fixed part):
    /// returns the fixed part and the raw bytes the kernel wrote (capabilities follow the fixed
    /// part when `argsz` is large enough). Errors keep their errno.
    pub fn region_info_raw(
        &self,
        index: u32,
        argsz: u32,
    ) -> io::Result<(uapi::vfio_region_info, Vec<u8>)> {
        let fixed = size_of::<uapi::vfio_region_info>();
        let len = (argsz as usize).max(fixed);
        // u64 storage keeps the structure aligned.
        let mut buf = vec![0u64; len.div_ceil(8)];
        let info = buf.as_mut_ptr().cast::<uapi::vfio_region_info>();
        // SAFETY: `buf` is large and aligned enough for the fixed part.
        unsafe {
            (*info).argsz = argsz;
            (*info).index = index;
        }
        // SAFETY: The kernel writes at most `argsz` bytes, which `buf` holds.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                ioctl::VFIO_DEVICE_GET_REGION_INFO,
                info,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: The fixed part was written by the kernel (or by us above).
        let fixed_part = unsafe { std::ptr::read(info) };
        // SAFETY: `buf` holds `len` initialised bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) }.to_vec();
        Ok((fixed_part, bytes))
    }

    /// Reads a 16-bit config-space register.
    pub fn config_read16(&self, offset: u64) -> io::Result<u16> {
        Ok(u16::from_le_bytes(self.config_read::<2>(offset)?))
    }
}
