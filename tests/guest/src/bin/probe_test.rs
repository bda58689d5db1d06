// SPDX-License-Identifier: GPL-2.0

//! Probe (upstream `nvgrace_gpu_probe()`): which operations the device gets for the firmware's
//! memory description, when probe fails, and the readiness wait before registration.
//!
//! Run with `vm-run --driver none ... -- probe_test rust|upstream [--no-readiness]`: the test
//! binds the driver itself, because some geometries must make probe fail. `--no-readiness` leaves
//! out the readiness waits (one of them takes 30 s), for runs that only vary the memory
//! description: the wait is the same code whatever the description.

use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::expected_probe_errno;
use nvgrace_guest_tests::expected_regions;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::model;
use nvgrace_guest_tests::rig_gpu;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::timing::Bounds;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::DRIVER_NAME;
use nvgrace_guest_tests::GPU_BDF;

/// The model's physical BAR2: 32 MiB (tests/gpu-model).
const MODEL_BAR2_SIZE: u64 = 32 << 20;
/// The physical BAR4 of the GPU model: 64-bit prefetchable, 64 MiB (tests/gpu-model).
const MODEL_BAR4_SIZE: u64 = 64 << 20;
/// The readiness delay used to check that probe waits, in ms: longer than a poll interval on
/// the BAR0 path; on the CXL path below the 1 s in which Memory_Info_Valid must appear (the
/// model raises valid and active together).
fn probe_delay_ms() -> u64 {
    if rig_gpu() == "cxl" {
        600
    } else {
        1_500
    }
}

/// Upstream's interval between readiness polls (`POLL_QUANTUM_MS`).
const QUANTUM: Duration = Duration::from_secs(1);
/// What binding adds to the wait in probe (rig-bind: driver_override, the bind through sysfs,
/// vfio-pci-core's registration; ~0.3 s seen) and a TCG guest on a loaded host adds to a sleep:
/// the slack of an upper bound beyond the wait and upstream's last poll interval.
const BIND_SLACK: Duration = Duration::from_secs(3);
/// The legacy budget (upstream `POLL_TIMEOUT_MS`) and what it may be overrun by: the last poll
/// interval, the bind and a loaded TCG host (device_fault_test `LEGACY_OVERRUN`, the same 15 s).
const LEGACY_BUDGET: Duration = Duration::from_secs(30);
const LEGACY_OVERRUN: Duration = Duration::from_secs(15);
/// The CXL path's budget when Memory_Info_Valid never comes (CXL r4.0 8.1.3.8.2).
const CXL_INFO_VALID_BUDGET: Duration = Duration::from_secs(1);

/// Loads the driver build and binds the GPU; returns whether it ended up bound.
fn bind(build: &str) -> bool {
    Command::new("rig-bind")
        .arg(build)
        .status()
        .is_ok_and(|s| s.success())
}

fn unbind() {
    let _ = Command::new("rig-unbind").status();
}

/// The errno the driver core reported for the last failed probe of the GPU, if any.
fn probe_error() -> Option<i32> {
    let log = sys::kernel_log().ok()?;
    log.iter().rev().find_map(|l| {
        let rest = l
            .split_once("probe with driver nvgrace_gpu_vfio_pci failed with error ")?
            .1;
        rest.trim().parse::<i32>().ok()
    })
}

fn main() {
    let build = std::env::args().nth(1).unwrap_or_default();
    if build != "rust" && build != "upstream" {
        println!("Bail out! usage: probe_test rust|upstream");
        std::process::exit(2);
    }
    let readiness = std::env::args().nth(2).as_deref() != Some("--no-readiness");
    let regions = expected_regions();
    let layout_errno = expected_probe_errno();
    let invalid_layout = layout_errno.is_some();
    tap::diag(format!(
        "build {build}, GPU {}, expected regions {regions:x?}",
        rig_gpu()
    ));

    let mut tests = vec![
        test("probe_outcome", |_: &mut ()| {
            let bound = bind(&build);
            if let Some(errno) = layout_errno {
                // usemem rounds down to 0 bytes (EINVAL), or the layout overflows (EOVERFLOW).
                check!(!bound, "bound although the memory cannot be laid out");
                let got = probe_error();
                tap::observe("probe_error", tap::errno_name(got.map(|e| -e)));
                check_eq!(got, Some(-errno), "probe error");
                // The failed probe left the device without a driver.
                check_eq!(
                    sys::bound_driver(GPU_BDF),
                    None,
                    "driver after the failed probe"
                );
                return Ok(());
            }
            check!(bound, "not bound (probe error {:?})", probe_error());
            check_eq!(
                sys::bound_driver(GPU_BDF),
                Some(DRIVER_NAME.to_string()),
                "driver"
            );
            Ok(())
        }),
        test("regions_for_the_memory_description", |_: &mut ()| {
            if invalid_layout {
                return Err(Failure::Skip("probe failed on purpose".into()));
            }
            let dev = Device::open_iommufd(GPU_BDF)?;
            let (bar2, bar4) = (dev.region_info(2)?, dev.region_info(4)?);
            match regions {
                // No memory described (or size 0): plain vfio-pci-core, the model's real BARs.
                None => {
                    check_eq!(bar2.size, MODEL_BAR2_SIZE, "BAR2 without GPU memory");
                    check_eq!(bar4.size, MODEL_BAR4_SIZE, "BAR4 without GPU memory");
                }
                Some((usemem, resmem)) => {
                    check_eq!(bar4.size, usemem.bar_size, "usemem BAR4 size");
                    check_eq!(
                        bar2.size,
                        resmem.map_or(MODEL_BAR2_SIZE, |r| r.bar_size),
                        "BAR2 size"
                    );
                }
            }
            Ok(())
        }),
    ];
    if readiness {
        tests.extend([
            test("probe_waits_for_readiness", |_: &mut ()| {
                if invalid_layout {
                    return Err(Failure::Skip("probe fails on the layout".into()));
                }
                unbind();
                let delay = probe_delay_ms();
                model::set_control(&[
                    ("ready_delay_ms", &delay.to_string()),
                    ("not_ready_now", "1"),
                ])?;
                let start = Instant::now();
                let bound = bind(&build);
                let took = start.elapsed();
                model::reset_control()?;
                check!(
                    bound,
                    "not bound after the device became ready (probe error {:?})",
                    probe_error()
                );
                check!(
                    took >= Duration::from_millis(delay),
                    "bound after {took:?}, before the device was ready ({delay} ms)"
                );
                let delay = Duration::from_millis(delay);
                Bounds::new(delay, delay + QUANTUM + BIND_SLACK).check("wait", "bind", took)
            }),
            test("probe_fails_when_never_ready", |_: &mut ()| {
                if invalid_layout {
                    return Err(Failure::Skip("probe fails on the layout".into()));
                }
                unbind();
                // Legacy path: 30 s of BAR0 polling; CXL: Memory_Info_Valid never set, 1 s.
                model::set_control(&[("never_ready", "1"), ("not_ready_now", "1")])?;
                let start = Instant::now();
                let bound = bind(&build);
                let took = start.elapsed();
                check!(!bound, "bound although the device never became ready");
                check_eq!(probe_error(), Some(-libc::ETIME), "probe error");
                let bounds = if model::readiness_via_bar0() {
                    Bounds::new(LEGACY_BUDGET, LEGACY_BUDGET + LEGACY_OVERRUN)
                } else {
                    Bounds::new(
                        CXL_INFO_VALID_BUDGET,
                        CXL_INFO_VALID_BUDGET + QUANTUM + BIND_SLACK,
                    )
                };
                bounds.check("wait", "failed bind", took)
            }),
            // The failed probe unwound everything it had set up (upstream
            // `nvgrace_gpu_probe_check_device_ready()` releases BAR0 and disables the device, then
            // `out_put_vdev` drops the VFIO device): once the device is ready, the same driver binds
            // it again and its memory works.
            test("binds_and_works_after_failed_probe", |_: &mut ()| {
                if invalid_layout {
                    return Err(Failure::Skip("probe fails on the layout".into()));
                }
                unbind();
                // Ready again at once (not_ready_now restarts the countdown with delay 0).
                model::set_control(&[("not_ready_now", "1")])?;
                let bound = bind(&build);
                model::reset_control()?;
                check!(
                    bound,
                    "not bound after a failed probe (probe error {:?})",
                    probe_error()
                );
                let dev = Device::open_iommufd(GPU_BDF)?;
                let (usemem, _) = dev.gpu_mem()?;
                let v = 0x9b0b_e000_0000_0001u64;
                dev.mem_write_all(&usemem, 0x8000, &v.to_le_bytes())?;
                let mut b = [0u8; 8];
                dev.mem_read_exact(&usemem, 0x8000, &mut b)?;
                check_eq!(u64::from_le_bytes(b), v, "usemem word after the rebind");
                Ok(())
            }),
        ]);
    }

    tests.push(test("no_kernel_splat", |_: &mut ()| sys::no_kernel_splat()));
    Harness::run_table(&mut (), tests)
}
