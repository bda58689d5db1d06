// SPDX-License-Identifier: GPL-2.0

//! Config-space emulation of the BARs that present GPU memory (upstream
//! `nvgrace_gpu_read_config_emu()`/`_write_config_emu()`): read-back and sizing of BAR2..5,
//! access widths and straddling, resets, and that writes never reach the device.

use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::differences::build;
use nvgrace_guest_tests::differences::Build;
use nvgrace_guest_tests::expected_regions;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::Region;
use nvgrace_guest_tests::GPU_BDF;

/// `PCI_BASE_ADDRESS_2` and `PCI_BASE_ADDRESS_4`.
const BAR2: u64 = 0x18;
const BAR4: u64 = 0x20;
/// 64-bit, prefetchable memory BAR.
const FLAGS: u64 = 0xC;
/// The physical BAR2 of the GPU model: 64-bit prefetchable, 32 MiB (tests/gpu-model).
const MODEL_BAR2_SIZE: u64 = 32 << 20;

/// The GPU model's physical BAR4/5 register as the device holds it (the address the guest's
/// kernel assigned, and the flags), read through sysfs, not through VFIO: what vfio-pci-core's
/// virtual copy of the register returns where no driver emulates it (vfio_bar_fixup()).
fn physical_bar4() -> Result<u64, Failure> {
    let config = std::fs::read(format!("/sys/bus/pci/devices/{GPU_BDF}/config"))?;
    let reg = config
        .get(BAR4 as usize..BAR4 as usize + 8)
        .ok_or_else(|| Failure::Fail("config space shorter than the BARs".into()))?;
    Ok(u64::from_le_bytes(reg.try_into().unwrap()))
}

fn read_back(bar_size: u64, written: u64) -> u64 {
    (written & !(bar_size - 1)) | FLAGS
}

fn regions() -> Result<(Region, Option<Region>), Failure> {
    expected_regions()
        .ok_or_else(|| Failure::Skip("no GPU memory described (RIG_DSD/RIG_MEM_SIZE)".into()))
}

/// The device `main` opened for the tests up to the one that closes it.
fn opened(d: &mut Option<Device>) -> Result<&Device, Failure> {
    d.as_ref()
        .ok_or_else(|| Failure::Fail("the device is already closed".into()))
}

fn main() {
    // Its I/O is the same in every boot: tapsum compares it between the builds.
    nvgrace_guest_tests::tap::trace_io();
    let (usemem, resmem) = match expected_regions() {
        Some(r) => r,
        None => {
            tap::diag("no _DSD memory: the BARs are not emulated");
            (
                Region {
                    memphys: 0,
                    memlength: 0,
                    bar_size: 0,
                },
                None,
            )
        }
    };
    let dev = match Device::open_iommufd(GPU_BDF) {
        Ok(d) => d,
        Err(e) => {
            println!("Bail out! cannot open {GPU_BDF}: {e}");
            std::process::exit(1);
        }
    };

    let mut ctx = Some(dev);
    let tests = vec![
        test("bars_read_flags_after_open", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            regions()?;
            check_eq!(dev.config_read64(BAR4)?, FLAGS, "BAR4/5 after open");
            if resmem.is_some() {
                check_eq!(dev.config_read64(BAR2)?, FLAGS, "BAR2/3 after open");
            }
            Ok(())
        }),
        test("bar_sizing_32bit_halves", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            regions()?;
            for (bar, size) in [
                (BAR4, Some(usemem.bar_size)),
                (BAR2, resmem.map(|r| r.bar_size)),
            ] {
                let Some(size) = size else { continue };
                dev.config_write(bar, 0xffff_ffffu32.to_le_bytes())?;
                dev.config_write(bar + 4, 0xffff_ffffu32.to_le_bytes())?;
                check_eq!(
                    dev.config_read32(bar)?,
                    read_back(size, !0) as u32,
                    "low half at {bar:#x}"
                );
                check_eq!(
                    dev.config_read32(bar + 4)?,
                    (read_back(size, !0) >> 32) as u32,
                    "high half at {bar:#x}"
                );
                // Program an address; read back the address bits plus flags.
                let addr = 0x0000_0040_0000_0000u64;
                dev.config_write(bar, (addr as u32).to_le_bytes())?;
                dev.config_write(bar + 4, ((addr >> 32) as u32).to_le_bytes())?;
                check_eq!(
                    dev.config_read64(bar)?,
                    read_back(size, addr),
                    "programmed BAR at {bar:#x}"
                );
            }
            Ok(())
        }),
        test("access_widths_1_2_4_8", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            regions()?;
            let val = 0x1234_5678_9abc_def0u64;
            dev.config_write(BAR4, val.to_le_bytes())?;
            let want = read_back(usemem.bar_size, val).to_le_bytes();
            for width in [1usize, 2, 4, 8] {
                for start in (0..8).step_by(width) {
                    let mut b = vec![0u8; width];
                    let n = dev.config_pread(BAR4 + start as u64, &mut b)?;
                    check_eq!(n, width, "read count, {width} bytes at +{start}");
                    check_eq!(
                        b.as_slice(),
                        &want[start..start + width],
                        "{width} bytes at BAR4+{start}"
                    );
                }
            }
            // Byte-wise writes build the same register.
            for (i, byte) in (!0u64).to_le_bytes().iter().enumerate() {
                dev.config_write(BAR4 + i as u64, [*byte])?;
            }
            check_eq!(
                dev.config_read64(BAR4)?,
                read_back(usemem.bar_size, !0),
                "after byte-wise sizing"
            );
            Ok(())
        }),
        test("straddling_and_64_byte_reads", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            regions()?;
            nvgrace_guest_tests::tap::trace_listed(1);
            dev.config_write(BAR4, 0xffff_ffff_ffff_ffffu64.to_le_bytes())?;
            let mut header = [0u8; 64];
            check_eq!(dev.config_pread(0, &mut header)?, 64usize, "64-byte read");
            check_eq!(
                u16::from_le_bytes([header[0], header[1]]),
                0x10deu16,
                "vendor in the 64-byte read"
            );
            // A read that starts inside BAR3 and ends inside BAR4. Difference 1: upstream stops at the
            // BAR2/3 range (emulated or not), so the BAR4 bytes read vfio-pci-core's copy of the
            // physical BAR4 register.
            let mut b = [0u8; 4];
            dev.config_pread(BAR4 - 2, &mut b)?;
            let bar4 = read_back(usemem.bar_size, !0).to_le_bytes();
            let physical = physical_bar4()?.to_le_bytes();
            let want = match build() {
                Some(Build::Upstream) => [physical[0], physical[1]],
                _ => [bar4[0], bar4[1]],
            };
            check_eq!(
                &b[2..],
                &want[..],
                "BAR4 bytes of a read straddling 0x20 ({:?})",
                build()
            );
            // Difference 1: upstream looks no further than BAR2/3 for a window that covers it (and
            // emulates nothing there without resmem), so BAR4/5 reads the physical register's copy.
            let want = match build() {
                Some(Build::Upstream) => physical,
                _ => bar4,
            };
            check_eq!(
                &header[0x20..0x28],
                &want[..],
                "BAR4/5 in the 64-byte read ({:?})",
                build()
            );
            Ok(())
        }),
        test("multi_bar_read", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            let Some(res) = resmem else {
                return Err(Failure::Skip("no resmem on this GPU".into()));
            };
            nvgrace_guest_tests::tap::trace_listed(1);
            dev.config_write(BAR2, (!0u64).to_le_bytes())?;
            dev.config_write(BAR4, (!0u64).to_le_bytes())?;
            let mut b = [0u8; 16];
            check_eq!(dev.config_pread(BAR2, &mut b)?, 16usize, "16-byte read");
            check_eq!(
                &b[..8],
                &read_back(res.bar_size, !0).to_le_bytes()[..],
                "BAR2/3 part"
            );
            // Difference 1: Rust emulates BAR4/5 too; upstream returns vfio-pci-core's copy of the
            // model's physical BAR4/5.
            let want = match build() {
                Some(Build::Upstream) => physical_bar4()?,
                _ => read_back(usemem.bar_size, !0),
            };
            check_eq!(
                u64::from_le_bytes(b[8..].try_into().unwrap()),
                want,
                "BAR4/5 part ({:?})",
                build()
            );
            Ok(())
        }),
        test("multi_bar_write", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            let Some(res) = resmem else {
                return Err(Failure::Skip("no resmem on this GPU".into()));
            };
            nvgrace_guest_tests::tap::trace_listed(1);
            dev.config_write(BAR2, 0u64.to_le_bytes())?;
            dev.config_write(BAR4, 0u64.to_le_bytes())?;
            let n = dev.config_pwrite(BAR2, &[0xff; 16])?;
            let (want_n, want_bar4) = match build() {
                // Difference 1: upstream consumes only the BAR2/3 bytes and leaves BAR4/5 alone.
                Some(Build::Upstream) => (8usize, FLAGS),
                _ => (16usize, read_back(usemem.bar_size, !0)),
            };
            check_eq!(n, want_n, "bytes written ({:?})", build());
            check_eq!(
                dev.config_read64(BAR2)?,
                read_back(res.bar_size, !0),
                "BAR2/3 after the write"
            );
            check_eq!(
                dev.config_read64(BAR4)?,
                want_bar4,
                "BAR4/5 after the write ({:?})",
                build()
            );
            Ok(())
        }),
        test("no_resmem_bar2_passes_through", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            regions()?;
            if resmem.is_some() {
                return Err(Failure::Skip("this GPU has resmem".into()));
            }
            // vfio-pci-core virtualises the model's physical BAR2 (64-bit prefetchable, 32 MiB).
            dev.config_write(BAR2, (!0u64).to_le_bytes())?;
            check_eq!(
                dev.config_read64(BAR2)?,
                !(MODEL_BAR2_SIZE - 1) | FLAGS,
                "BAR2/3 sizing through vfio-pci-core"
            );
            let info = dev.region_info(2)?;
            check_eq!(info.size, MODEL_BAR2_SIZE, "BAR2 region size");
            Ok(())
        }),
        test("no_resmem_straddle", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            regions()?;
            if resmem.is_some() {
                return Err(Failure::Skip("this GPU has resmem".into()));
            }
            nvgrace_guest_tests::tap::trace_listed(1);
            dev.config_write(BAR4, (!0u64).to_le_bytes())?;
            let mut b = [0u8; 8];
            dev.config_pread(BAR4 - 4, &mut b)?;
            // Difference 1: upstream stops at BAR2/3 (not emulated without resmem) and never looks at
            // BAR4/5, so the BAR4 half reads vfio-pci-core's value of the physical register.
            let want = match build() {
                Some(Build::Upstream) => physical_bar4()? as u32,
                _ => read_back(usemem.bar_size, !0) as u32,
            };
            check_eq!(
                u32::from_le_bytes(b[4..].try_into().unwrap()),
                want,
                "BAR4 low half ({:?})",
                build()
            );
            Ok(())
        }),
        test("reset_clears_bars", |d: &mut Option<Device>| {
            let dev = opened(d)?;
            regions()?;
            let emulated: &[u64] = if resmem.is_some() {
                &[BAR2, BAR4]
            } else {
                &[BAR4]
            };
            for &bar in emulated {
                dev.config_write(bar, (!0u64).to_le_bytes())?;
            }
            dev.reset()?;
            for &bar in emulated {
                check_eq!(
                    dev.config_read64(bar)?,
                    FLAGS,
                    "BAR at {bar:#x} after VFIO_DEVICE_RESET"
                );
            }
            Ok(())
        }),
        test("reopen_clears_bars", |d: &mut Option<Device>| {
            tap::untraced(|| drop(d.take()));
            regions()?;
            let mut emulated = vec![(BAR4, usemem.bar_size)];
            emulated.extend(resmem.map(|r| (BAR2, r.bar_size)));
            {
                let dev = Device::open_iommufd(GPU_BDF)?;
                for &(bar, size) in &emulated {
                    dev.config_write(bar, (!0u64).to_le_bytes())?;
                    check_eq!(
                        dev.config_read64(bar)?,
                        read_back(size, !0),
                        "BAR at {bar:#x} before close"
                    );
                }
            }
            let dev = Device::open_iommufd(GPU_BDF)?;
            for &(bar, _) in &emulated {
                check_eq!(
                    dev.config_read64(bar)?,
                    FLAGS,
                    "BAR at {bar:#x} after close and open"
                );
            }
            Ok(())
        }),
        test("no_kernel_splat", |_: &mut Option<Device>| {
            sys::no_kernel_splat()
        }),
    ];
    Harness::run_table(&mut ctx, tests)
}
