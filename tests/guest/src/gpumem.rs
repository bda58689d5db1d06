// SPDX-License-Identifier: GPL-2.0

//! The GPU memory regions (usemem BAR4, resmem BAR2) as an open device reports them, and the
//! device-level operations the mapping tests need, as an extension of [`vfio::Device`]: region
//! info with the sparse-mmap capability, pread/pwrite at a region offset, the memory-enable bit
//! of the Command register.

use std::io;

use vfio_bindings::bindings::vfio as uapi;

use crate::vfio;
use crate::vfio::Device;

/// `VFIO_REGION_INFO_CAP_SPARSE_MMAP`.
const CAP_SPARSE_MMAP: u16 = 1;

pub use crate::hw::PCI_COMMAND;
pub use crate::hw::PCI_COMMAND_MEMORY;

/// The GPU opened through iommufd with the memory regions its driver reports: what the mapping,
/// reset and device-fault tests start from.
pub struct OpenGpu {
    /// The device (its cdev, bound to a new iommufd IOAS).
    pub dev: Device,
    /// usemem (BAR4).
    pub usemem: GpuMem,
    /// resmem (BAR2), on parts with the MIG hardware bug.
    pub resmem: Option<GpuMem>,
}

impl OpenGpu {
    /// Opens `bdf` through its cdev and iommufd and reads its GPU memory regions.
    pub fn open(bdf: &str) -> io::Result<Self> {
        let dev = Device::open_iommufd(bdf)?;
        let (usemem, resmem) = dev.gpu_mem()?;
        Ok(OpenGpu {
            dev,
            usemem,
            resmem,
        })
    }

    /// usemem, then resmem when there is one.
    pub fn regions(&self) -> Vec<GpuMem> {
        std::iter::once(self.usemem).chain(self.resmem).collect()
    }
}

/// One GPU memory region as the driver reports it, with its physical address in the rig.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuMem {
    /// The VFIO region index (4 usemem, 2 resmem).
    pub index: u32,
    /// The region's offset in the device fd (region info).
    pub fd_offset: u64,
    /// The reported region (BAR) size.
    pub bar_size: u64,
    /// Bytes of memory that can be mapped: the one sparse-mmap area's size.
    pub memlength: u64,
    /// Region info flags.
    pub flags: u32,
    /// Physical address of the region's first byte: the rig's aperture base for usemem, right
    /// after usemem for resmem (the layout of both drivers).
    pub phys: u64,
}

impl GpuMem {
    /// "usemem" or "resmem".
    pub fn name(&self) -> &'static str {
        match self.index {
            vfio::region::BAR4 => "usemem",
            vfio::region::BAR2 => "resmem",
            _ => "region",
        }
    }

    /// The device-fd offset of byte `off` of the region.
    pub fn at(&self, off: u64) -> u64 {
        self.fd_offset + off
    }

    /// The physical address of byte `off` of the region.
    pub fn pa(&self, off: u64) -> u64 {
        self.phys + off
    }
}

/// The sparse-mmap areas `(offset, size)` in the capability chain of raw region info bytes.
fn sparse_areas(info: &uapi::vfio_region_info, bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut areas = Vec::new();
    if info.flags & uapi::VFIO_REGION_INFO_FLAG_CAPS == 0 {
        return areas;
    }
    let mut off = info.cap_offset as usize;
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    // A bounded walk: a broken chain must not loop.
    for _ in 0..16 {
        if off == 0 || off + 8 > bytes.len() {
            break;
        }
        let id = u16_at(bytes, off);
        let next = u32_at(bytes, off + 4) as usize;
        if id == CAP_SPARSE_MMAP && off + 16 <= bytes.len() {
            let n = u32_at(bytes, off + 8) as usize;
            for i in 0..n {
                let a = off + 16 + i * 16;
                if a + 16 <= bytes.len() {
                    areas.push((u64_at(bytes, a), u64_at(bytes, a + 8)));
                }
            }
        }
        off = next;
    }
    areas
}

/// The GPU-memory operations of an open device.
pub trait GpuMemExt {
    /// Region info of `index` with its capabilities; the sparse-mmap areas.
    fn region_with_sparse(
        &self,
        index: u32,
    ) -> io::Result<(uapi::vfio_region_info, Vec<(u64, u64)>)>;
    /// The region at `index` as a [`GpuMem`] (its memlength from the one sparse area).
    fn gpu_mem_region(&self, index: u32, phys: u64) -> io::Result<GpuMem>;
    /// usemem, and resmem when the driver presents one (region 2 has a sparse area).
    fn gpu_mem(&self) -> io::Result<(GpuMem, Option<GpuMem>)>;
    /// One pread of the region at `off`; the byte count.
    fn mem_read(&self, m: &GpuMem, off: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// One pwrite to the region at `off`; the byte count.
    fn mem_write(&self, m: &GpuMem, off: u64, data: &[u8]) -> io::Result<usize>;
    /// Reads exactly `buf.len()` bytes of the region at `off` (one pread; a short count fails).
    fn mem_read_exact(&self, m: &GpuMem, off: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `off` (one pwrite; a short count fails).
    fn mem_write_all(&self, m: &GpuMem, off: u64, data: &[u8]) -> io::Result<()>;
    /// Sets or clears Memory Space Enable in the Command register through the config region;
    /// returns the previous Command value.
    fn set_memory_enable(&self, on: bool) -> io::Result<u16>;
}

impl GpuMemExt for Device {
    fn region_with_sparse(
        &self,
        index: u32,
    ) -> io::Result<(uapi::vfio_region_info, Vec<(u64, u64)>)> {
        let mut argsz = 256u32;
        loop {
            let (info, bytes) = self.region_info_raw(index, argsz)?;
            if info.argsz > argsz {
                argsz = info.argsz;
                continue;
            }
            return Ok((info, sparse_areas(&info, &bytes)));
        }
    }

    fn gpu_mem_region(&self, index: u32, phys: u64) -> io::Result<GpuMem> {
        let (info, areas) = self.region_with_sparse(index)?;
        let memlength = match areas.as_slice() {
            [(0, size)] => *size,
            other => {
                return Err(io::Error::other(format!(
                "region {index}: expected one sparse-mmap area at 0, got {other:x?} (flags {:#x})",
                info.flags
            )))
            }
        };
        Ok(GpuMem {
            index,
            fd_offset: info.offset,
            bar_size: info.size,
            memlength,
            flags: info.flags,
            phys,
        })
    }

    fn gpu_mem(&self) -> io::Result<(GpuMem, Option<GpuMem>)> {
        let base = crate::aperture_base();
        let usemem = self.gpu_mem_region(vfio::region::BAR4, base)?;
        let (_, areas) = self.region_with_sparse(vfio::region::BAR2)?;
        let resmem = if areas.is_empty() {
            None
        } else {
            Some(self.gpu_mem_region(vfio::region::BAR2, base + usemem.memlength)?)
        };
        Ok((usemem, resmem))
    }

    fn mem_read(&self, m: &GpuMem, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.pread(buf, m.at(off))
    }

    fn mem_write(&self, m: &GpuMem, off: u64, data: &[u8]) -> io::Result<usize> {
        self.pwrite(data, m.at(off))
    }

    fn mem_read_exact(&self, m: &GpuMem, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let n = self.mem_read(m, off, buf)?;
        if n != buf.len() {
            return Err(io::Error::other(format!(
                "{} pread at {off:#x}: {n} of {} bytes",
                m.name(),
                buf.len()
            )));
        }
        Ok(())
    }

    fn mem_write_all(&self, m: &GpuMem, off: u64, data: &[u8]) -> io::Result<()> {
        let n = self.mem_write(m, off, data)?;
        if n != data.len() {
            return Err(io::Error::other(format!(
                "{} pwrite at {off:#x}: {n} of {} bytes",
                m.name(),
                data.len()
            )));
        }
        Ok(())
    }

    fn set_memory_enable(&self, on: bool) -> io::Result<u16> {
        let cmd = self.config_read16(PCI_COMMAND)?;
        let new = if on {
            cmd | PCI_COMMAND_MEMORY
        } else {
            cmd & !PCI_COMMAND_MEMORY
        };
        self.config_write::<2>(PCI_COMMAND, new.to_le_bytes())?;
        Ok(cmd)
    }
}
