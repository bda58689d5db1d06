// SPDX-License-Identifier: GPL-2.0

//! Resets that do not come through `VFIO_DEVICE_RESET` (reset_test covers that one), with a GPU
//! that is ready late (the model's `ready_delay_ms`), and the emulated BARs after them.
//!
//! - **FLR through config space.** A write of Device Control with Initiate Function Level Reset
//!   (bit 15) through the VFIO config region makes vfio-pci-core's `vfio_exp_config_write()`
//!   call `pci_try_reset_function()` (the device announces FLR in Device Capabilities bit 28),
//!   whose `reset_done` handler flags the reset to both drivers: the first access after it waits
//!   for readiness. The emulated BAR registers are cleared only by the driver's own
//!   `VFIO_DEVICE_RESET` handler (upstream `nvgrace_gpu_ioctl()` calls
//!   `nvgrace_gpu_init_fake_bar_emu_regs()` there, not from `reset_done`), so they keep what the
//!   user wrote across this reset. The regions do not change.
//! - **Hot reset** (`VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`, `VFIO_DEVICE_PCI_HOT_RESET`). The
//!   rig's GPU sits on the root bus (0000:00:05.0), which has no bridge whose secondary bus
//!   could be reset and no hotplug slot: vfio-pci-core refuses both ioctls with ENODEV before
//!   either driver is asked (`pci_probe_reset_slot()`, `pci_probe_reset_bus()`). The test
//!   asserts that refusal and that nothing was reset (the model logged no reset, the BARs and
//!   the memory kept their contents, no readiness wait follows); on a topology where the reset
//!   happens it checks the readiness wait and the BARs as for the FLR instead.

use std::time::Duration;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::gpumem::OpenGpu;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::model;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::timing::Bounds;
use nvgrace_guest_tests::vfio;
use nvgrace_guest_tests::GPU_BDF;
use vfio_bindings::bindings::vfio as uapi;

/// The model's readiness delay after the resets here.
const DELAY: Duration = Duration::from_millis(2_000);
/// Both bounds of the first access after a reset, counted from the reset: at least [`DELAY`],
/// at most the delay, upstream's last poll interval (`POLL_QUANTUM_MS`, 1 s) and 2 s for the
/// FLR's own 100 ms wait and a loaded TCG guest.
const WAIT: Bounds = Bounds::new(DELAY, Duration::from_millis(2_000 + 1_000 + 2_000));
/// `PCI_BASE_ADDRESS_2`, `PCI_BASE_ADDRESS_4` and the flags the emulated BARs read (64-bit,
/// prefetchable).
const BAR2: u64 = 0x18;
const BAR4: u64 = 0x20;
const BAR_FLAGS: u64 = 0xc;
/// What the tests write to the emulated BARs before the resets: an address a guest could assign.
const BAR_ADDR: u64 = 0x0000_0080_0000_0000;
/// `PCI_CAPABILITY_LIST`, `PCI_CAP_ID_EXP`, and in the PCI Express capability `PCI_EXP_DEVCAP`
/// with `PCI_EXP_DEVCAP_FLR` and `PCI_EXP_DEVCTL` with `PCI_EXP_DEVCTL_BCR_FLR`
/// (include/uapi/linux/pci_regs.h).
const CAPABILITY_LIST: u64 = 0x34;
const CAP_ID_EXP: u8 = 0x10;
const EXP_DEVCAP: u64 = 0x4;
const EXP_DEVCAP_FLR: u32 = 1 << 28;
const EXP_DEVCTL: u64 = 0x8;
const EXP_DEVCTL_BCR_FLR: u16 = 1 << 15;
/// Where the tests keep a word in each region.
const WORD_OFF: u64 = 0x6000;
/// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` and `VFIO_DEVICE_PCI_HOT_RESET`: `_IO(VFIO_TYPE,
/// VFIO_BASE + 12)` and `+ 13` (include/uapi/linux/vfio.h).
const GET_PCI_HOT_RESET_INFO: libc::c_ulong =
    ((uapi::VFIO_TYPE as libc::c_ulong) << 8) | (uapi::VFIO_BASE + 12) as libc::c_ulong;
const PCI_HOT_RESET: libc::c_ulong =
    ((uapi::VFIO_TYPE as libc::c_ulong) << 8) | (uapi::VFIO_BASE + 13) as libc::c_ulong;

type Ctx = OpenGpu;

/// Makes the model ready [`DELAY`] after the next reset. On the CXL variant Memory_Info_Valid
/// comes at once (its 1 s would otherwise run out first) and Memory_Active_Timeout is 001b
/// (4 s), so that the wait lasts the delay there too; the BAR0 variants ignore both keys.
fn late_readiness() -> Outcome {
    model::set_control(&[
        ("ready_delay_ms", &DELAY.as_millis().to_string()),
        ("cxl_info_valid_delay_ms", "0"),
        ("cxl_timeout", "1"),
    ])?;
    Ok(())
}

fn word(m: &GpuMem, salt: u64) -> u64 {
    0x4e50_0000_0000_0000 | (u64::from(m.index) << 32) | salt
}

/// The config-space offset of the PCI Express capability.
fn pcie_cap(ctx: &Ctx) -> Result<u64, Failure> {
    let mut off = u64::from(ctx.dev.config_read::<1>(CAPABILITY_LIST)?[0]);
    for _ in 0..48 {
        if off == 0 {
            break;
        }
        let [id, next] = ctx.dev.config_read::<2>(off)?;
        if id == CAP_ID_EXP {
            return Ok(off);
        }
        off = u64::from(next);
    }
    Err(Failure::Fail("no PCI Express capability".into()))
}

/// The emulated BAR registers of the device, with the region behind each.
fn emulated_bars(ctx: &Ctx) -> Vec<(u64, GpuMem)> {
    let mut v = vec![(BAR4, ctx.usemem)];
    v.extend(ctx.resmem.map(|r| (BAR2, r)));
    v
}

/// Writes [`BAR_ADDR`] to every emulated BAR and each region's word; returns what the BARs read.
fn seed(ctx: &Ctx, salt: u64) -> Result<Vec<u64>, Failure> {
    let mut bars = Vec::new();
    for (bar, m) in emulated_bars(ctx) {
        ctx.dev
            .config_write(bar, (BAR_ADDR | BAR_FLAGS).to_le_bytes())?;
        let v = ctx.dev.config_read64(bar)?;
        check_eq!(
            v,
            (BAR_ADDR & !(m.bar_size - 1)) | BAR_FLAGS,
            "BAR at {bar:#x} before the reset"
        );
        bars.push(v);
        ctx.dev
            .mem_write_all(&m, WORD_OFF, &word(&m, salt).to_le_bytes())?;
    }
    Ok(bars)
}

/// After a reset at `t0` (time since boot): the first pread of usemem waits between the bounds
/// of [`WAIT`] and reads the word; then every region's word, the emulated BARs (`bars`: what
/// they read before) and the region sizes and flags are as before.
fn check_after_reset(ctx: &Ctx, t0: Duration, salt: u64, bars: &[u64]) -> Outcome {
    let mut b = [0u8; 8];
    let r = ctx.dev.mem_read(&ctx.usemem, WORD_OFF, &mut b);
    let took = mm::now() - t0;
    model::reset_control()?;
    check!(matches!(r, Ok(8)), "first pread after the reset: {r:?}");
    WAIT.check("wait", "reset + first pread", took)?;
    for (i, (bar, m)) in emulated_bars(ctx).into_iter().enumerate() {
        ctx.dev.mem_read_exact(&m, WORD_OFF, &mut b)?;
        check_eq!(
            u64::from_le_bytes(b),
            word(&m, salt),
            "{} word after the reset",
            m.name()
        );
        let v = ctx.dev.config_read64(bar)?;
        tap::observe(&format!("bar_{bar:#x}"), format!("{v:#x}"));
        check_eq!(v, bars[i], "BAR at {bar:#x} after the reset");
        let info = ctx.dev.region_info(m.index)?;
        tap::observe(
            &format!("region{}", m.index),
            format!("size={:#x} flags={:#x}", info.size, info.flags),
        );
        check_eq!(
            (info.size, info.flags),
            (m.bar_size, m.flags),
            "region {} after the reset",
            m.index
        );
    }
    Ok(())
}

/// FLR through config space with a GPU ready [`DELAY`] later.
fn flr_test(ctx: &Ctx) -> Outcome {
    if !model::available() {
        return Err(Failure::Skip("no model state share at /mnt/model".into()));
    }
    let exp = pcie_cap(ctx)?;
    let devcap = ctx.dev.config_read32(exp + EXP_DEVCAP)?;
    check!(
        devcap & EXP_DEVCAP_FLR != 0,
        "Device Capabilities {devcap:#x} without FLR"
    );
    let salt = 1;
    let bars = seed(ctx, salt)?;
    late_readiness()?;
    let mark = model::log_mark()?;
    let devctl = ctx.dev.config_read16(exp + EXP_DEVCTL)?;
    let t0 = mm::now();
    ctx.dev.config_write(
        exp + EXP_DEVCTL,
        (devctl | EXP_DEVCTL_BCR_FLR).to_le_bytes(),
    )?;
    let log = model::log_since(mark)?;
    let flrs = log.iter().filter(|l| *l == "reset cause=flr").count();
    tap::observe("model_flrs", flrs);
    check_eq!(
        flrs,
        1usize,
        "FLRs the model saw for the Device Control write"
    );
    let after = ctx.dev.config_read16(exp + EXP_DEVCTL)?;
    tap::observe("devctl_after", format!("{after:#x}"));
    check_eq!(
        after,
        devctl & !EXP_DEVCTL_BCR_FLR,
        "Device Control after the FLR"
    );
    check_after_reset(ctx, t0, salt, &bars)
}

/// `struct vfio_pci_hot_reset_info` with room for one `vfio_pci_dependent_device` (4 u32s).
#[repr(C)]
#[derive(Default)]
struct HotResetInfo {
    argsz: u32,
    flags: u32,
    count: u32,
    devices: [u32; 4],
}

/// `struct vfio_pci_hot_reset` without group fds: a device opened through its cdev names the
/// devices of its iommufd context.
#[repr(C)]
#[derive(Default)]
struct HotReset {
    argsz: u32,
    flags: u32,
    count: u32,
}

/// Hot reset with a GPU ready [`DELAY`] later (see the module documentation).
fn hot_reset_test(ctx: &Ctx) -> Outcome {
    if !model::available() {
        return Err(Failure::Skip("no model state share at /mnt/model".into()));
    }
    let salt = 2;
    let bars = seed(ctx, salt)?;
    late_readiness()?;
    let mut info = HotResetInfo {
        argsz: size_of::<HotResetInfo>() as u32,
        ..Default::default()
    };
    // SAFETY: `info` is a `vfio_pci_hot_reset_info` with room for the one device its argsz says.
    let got_info = unsafe { vfio::ioctl_ptr(&ctx.dev.fd, GET_PCI_HOT_RESET_INFO, &mut info) };
    tap::observe(
        "hot_reset_info",
        match &got_info {
            Ok(_) => format!("ok count={}", info.count),
            Err(e) => tap::errno_name(e.raw_os_error()),
        },
    );
    let mark = model::log_mark()?;
    let mut reset = HotReset {
        argsz: size_of::<HotReset>() as u32,
        ..Default::default()
    };
    let t0 = mm::now();
    // SAFETY: `reset` is a `vfio_pci_hot_reset` with no group fds, as its count says.
    let r = unsafe { vfio::ioctl_ptr(&ctx.dev.fd, PCI_HOT_RESET, &mut reset) };
    tap::observe(
        "hot_reset",
        match &r {
            Ok(_) => "ok".to_string(),
            Err(e) => tap::errno_name(e.raw_os_error()),
        },
    );
    let resets = model::log_since(mark)?
        .iter()
        .filter(|l| l.starts_with("reset "))
        .count();
    tap::diag(format!(
        "hot reset info: {got_info:?}, hot reset: {r:?}, model resets: {resets}"
    ));
    match r {
        Ok(_) => {
            check!(
                resets >= 1,
                "the hot reset succeeded but the model saw no reset"
            );
            check_after_reset(ctx, t0, salt, &bars)
        }
        Err(e) => {
            model::reset_control()?;
            // Opened through its cdev (iommufd), a hot reset with no group fds resets what the
            // iommufd context owns, and the root bus has nothing to reset: ENODEV. Opened
            // through its group (a kernel without iommufd, as Debian's), the same empty array is
            // refused before that (vfio_pci_ioctl_pci_hot_reset(): a group-opened device must
            // name its groups): EINVAL. vfio-pci-core's answers both, not the drivers'.
            let refused = if vfio::iommufd_available() {
                libc::ENODEV
            } else {
                libc::EINVAL
            };
            check_eq!(
                (
                    got_info.map_err(|e| e.raw_os_error()).map(|_| ()),
                    e.raw_os_error()
                ),
                (Err(Some(libc::ENODEV)), Some(refused)),
                "hot reset of a device on the root bus"
            );
            check_eq!(
                resets,
                0usize,
                "resets the model saw for a refused hot reset"
            );
            // Nothing was reset: no wait, the BARs and the words are as written.
            let t1 = mm::now();
            for (i, (bar, m)) in emulated_bars(ctx).into_iter().enumerate() {
                let mut b = [0u8; 8];
                ctx.dev.mem_read_exact(&m, WORD_OFF, &mut b)?;
                check_eq!(u64::from_le_bytes(b), word(&m, salt), "{} word", m.name());
                check_eq!(ctx.dev.config_read64(bar)?, bars[i], "BAR at {bar:#x}");
            }
            let took = mm::now() - t1;
            check!(
                took < DELAY,
                "the accesses after a refused hot reset took {took:?}: they waited for readiness"
            );
            Ok(())
        }
    }
}

fn main() {
    tap::diag(format!(
        "driver build: {}, GPU model: {}",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));
    let ctx = match Ctx::open(GPU_BDF) {
        Ok(c) => c,
        Err(e) => {
            println!("Bail out! cannot open {GPU_BDF}: {e}");
            std::process::exit(1);
        }
    };
    let tests = vec![
        test(
            "flr_through_config_space_waits_and_keeps_bars",
            |_: &mut ()| flr_test(&ctx),
        ),
        test("hot_reset_with_late_readiness", |_: &mut ()| {
            // Whatever the test before left in the model's controls is gone.
            let _ = model::reset_control();
            hot_reset_test(&ctx)
        }),
        // The driver's own reset clears the emulated BARs, after the resets above too.
        test("vfio_device_reset_clears_bars_after_them", |_: &mut ()| {
            let _ = model::reset_control();
            for (bar, _) in emulated_bars(&ctx) {
                ctx.dev
                    .config_write(bar, (BAR_ADDR | BAR_FLAGS).to_le_bytes())?;
            }
            ctx.dev.reset()?;
            for (bar, _) in emulated_bars(&ctx) {
                check_eq!(ctx.dev.config_read64(bar)?, BAR_FLAGS, "BAR at {bar:#x}");
            }
            Ok(())
        }),
        test("no_kernel_splat", |_: &mut ()| sys::no_kernel_splat()),
    ];
    Harness::run_table(&mut (), tests)
}
