// SPDX-License-Identifier: GPL-2.0

//! The fuzzer's VFIO ioctls and what each should return.

use std::io;

use super::*;
use crate::fuzz::gen::*;
use crate::fuzz::model::*;
use crate::fuzz::*;
use crate::vfio::ioctl;

impl Fuzzer {
    pub fn ioctl(&mut self, i: u64, op: &Op, io: &IoctlOp) -> io::Result<()> {
        self.count("ioctl");
        let bad_ptr = self.bad.addr() as *mut u64;
        let fd = self.fd();
        let call = |req: libc::c_ulong, arg: *mut u64| -> Result<usize, i32> {
            // SAFETY: `arg` points to the 512-byte buffer below or to the PROT_NONE reservation
            // (the kernel's copies fail with EFAULT). A random `argsz` or count may make the
            // kernel read past the buffer, as a hostile VMM would; what it writes back is at
            // most a fixed part and the capabilities, which fit in the buffer.
            errno_of(unsafe { libc::ioctl(fd, req, arg) } as isize)
        };
        let mut buf = [0u64; 64];
        let (got, want): (Result<usize, i32>, Option<Result<usize, i32>>) = match io {
            IoctlOp::GetInfo { argsz, bad } => {
                buf[0] = u64::from(*argsz);
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(ioctl::VFIO_DEVICE_GET_INFO, p);
                let want = if *bad {
                    Err(libc::EFAULT)
                } else if *argsz < 16 {
                    Err(libc::EINVAL)
                } else {
                    Ok(0)
                };
                if got == Ok(0) && want == Ok(0) {
                    // flags PCI | RESET, 9 regions, 5 IRQ indexes (vfio_pci_ioctl_get_info()).
                    let fields = (
                        buf[0] as u32,
                        (buf[0] >> 32) as u32,
                        buf[1] as u32,
                        (buf[1] >> 32) as u32,
                    );
                    if fields != (*argsz, 0x3, NUM_REGIONS as u32, NUM_IRQS) {
                        self.fail(Cat::Ioctl, i, op, format!("device info {fields:x?}"));
                    }
                }
                (got, Some(want))
            }
            IoctlOp::RegionInfo {
                argsz,
                index,
                cap_offset,
                bad,
            } => {
                buf[0] = u64::from(*argsz) | u64::from(u32::MAX) << 32;
                buf[1] = u64::from(*index) | u64::from(*cap_offset) << 32;
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(ioctl::VFIO_DEVICE_GET_REGION_INFO, p);
                let want = self.expect_region_info(*argsz, *index, *cap_offset, *bad);
                let wanted = want.as_ref().map(|_| ()).map_err(|e| *e);
                if got.map(|_| ()) == wanted {
                    if let Ok(fields) = want {
                        let seen = (
                            buf[0] as u32,
                            (buf[0] >> 32) as u32,
                            (buf[1] >> 32) as u32,
                            buf[2],
                            buf[3],
                        );
                        let mut bad_info = seen != fields.0;
                        if let Some(memlength) = fields.1 {
                            // The sparse-mmap capability after the fixed part.
                            let cap = (
                                buf[4] as u16,
                                (buf[4] >> 16) as u16,
                                (buf[4] >> 32) as u32,
                                buf[5] as u32,
                                buf[6],
                                buf[7],
                            );
                            bad_info |= cap != (1, 1, 0, 1, 0, memlength);
                        }
                        if bad_info {
                            self.fail(
                                Cat::Ioctl,
                                i,
                                op,
                                format!("region info {:x?}, expected {fields:x?}", &buf[..8]),
                            );
                        }
                    }
                }
                (got, Some(wanted.map(|_| 0)))
            }
            IoctlOp::IrqInfo { argsz, index, bad } => {
                buf[0] = u64::from(*argsz);
                buf[1] = u64::from(*index);
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(GET_IRQ_INFO, p);
                let want = if *bad {
                    Err(libc::EFAULT)
                } else if *argsz < 16 || *index >= NUM_IRQS {
                    Err(libc::EINVAL)
                } else {
                    Ok(0)
                };
                (got, Some(want))
            }
            IoctlOp::Ioeventfd { payload } => {
                buf[..4].copy_from_slice(payload);
                // The driver refuses ioeventfds before reading the argument (upstream
                // nvgrace_gpu_ioctl()).
                (
                    call(ioctl::VFIO_DEVICE_IOEVENTFD, buf.as_mut_ptr()),
                    Some(Err(libc::ENOTTY)),
                )
            }
            IoctlOp::Unknown { cmd } => (call(*cmd, buf.as_mut_ptr()), Some(Err(libc::ENOTTY))),
            IoctlOp::Feature { words, bad } => {
                buf[..words.len()].copy_from_slice(words);
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(ioctl::VFIO_DEVICE_FEATURE, p);
                let flags = (words[0] >> 32) as u32;
                if let Ok(n) = got {
                    let feature = flags & FEATURE_MASK;
                    let acting = flags & FEATURE_PROBE == 0;
                    if feature == FEATURE_DMA_BUF && acting && n > 0 {
                        // SAFETY: A new dma-buf fd that nothing else owns.
                        unsafe { libc::close(n as i32) };
                    }
                    if acting
                        && (feature == FEATURE_LOW_POWER_ENTRY
                            || feature == FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP)
                    {
                        self.state.low_power = true;
                    }
                    if acting && feature == FEATURE_LOW_POWER_EXIT {
                        self.state.low_power = false;
                    }
                }
                let want = if *bad { Some(Err(libc::EFAULT)) } else { None };
                (got.map(|n| usize::from(n > 0)), want)
            }
            IoctlOp::SetIrqs { words } => {
                buf[..words.len()].copy_from_slice(words);
                (call(SET_IRQS, buf.as_mut_ptr()), None)
            }
            IoctlOp::HotResetInfo { argsz } => {
                buf[0] = u64::from(*argsz);
                (call(GET_PCI_HOT_RESET_INFO, buf.as_mut_ptr()), None)
            }
        };
        // No ioctl result depends on the build (nothing listed): each by value (a dma-buf fd
        // as whether there is one).
        self.note(Cat::Ioctl, (5u8, &got));
        if let Some(want) = want {
            if got != want {
                self.fail(
                    Cat::Ioctl,
                    i,
                    op,
                    format!("got {}, expected {}", show(&got), show(&want)),
                );
            }
        }
        Ok(())
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` (vfio_get_region_info(), upstream
    /// nvgrace_gpu_ioctl_get_region_info(), vfio_pci_ioctl_get_region_info()): the fields
    /// `(argsz, flags, cap_offset, size, offset)` and, for the emulated BARs with room for it,
    /// the sparse area's size.
    #[allow(clippy::type_complexity)]
    pub fn expect_region_info(
        &self,
        argsz: u32,
        index: u32,
        cap_offset: u32,
        bad: bool,
    ) -> Result<((u32, u32, u32, u64, u64), Option<u64>), i32> {
        if bad {
            return Err(libc::EFAULT);
        }
        if argsz < 32 {
            return Err(libc::EINVAL);
        }
        let offset = u64::from(index) << SHIFT;
        const R: u32 = 1;
        const W: u32 = 2;
        const M: u32 = 4;
        const CAPS: u32 = 8;
        match self.layout.kind(u64::from(index)) {
            Kind::Emulated(r) => {
                // One sparse-mmap capability: a 16-byte header and one 16-byte area.
                let needed = 32 + 32;
                if argsz < needed {
                    Ok(((needed, R | W | M | CAPS, 0, r.bar_size, offset), None))
                } else {
                    Ok((
                        (argsz, R | W | M | CAPS, 32, r.bar_size, offset),
                        Some(r.memlength),
                    ))
                }
            }
            Kind::Bar0 => Ok(((argsz, R | W | M, cap_offset, BAR0_SIZE, offset), None)),
            Kind::PhysBar2 => Ok(((argsz, R | W | M, cap_offset, PHYS_BAR2_SIZE, offset), None)),
            Kind::Config => Ok(((argsz, R | W, cap_offset, CONFIG_SIZE, offset), None)),
            // Absent BARs and the absent ROM have size 0 and no flags; VGA and beyond: EINVAL.
            Kind::None if index < 7 => Ok(((argsz, 0, cap_offset, 0, offset), None)),
            Kind::None => Err(libc::EINVAL),
        }
    }
}
