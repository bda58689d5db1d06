// SPDX-License-Identifier: GPL-2.0

//! The debug kernel's leak check (scripts/kconfig/debug.config): `make check-debug` ends every
//! guest boot with it. It asks kmemleak for a scan (Documentation/dev-tools/kmemleak.rst) and
//! fails if an unreferenced object was allocated on a path through nvgrace-gpu-vfio-pci, either
//! build. Every other report is printed as a diagnostic and left to the kernel's maintainers.
//!
//! Which reports are the driver's: `nvgrace_guest_tests::kmemleak`, whose unit tests run on the
//! host against reports recorded on the rig's debug kernel. That the whole check catches a leak
//! of the driver was measured by putting one in (see tests/README.md, "The debug kernel").
//!
//! The scan follows an unbind of the GPU (the driver stays loaded), so a leak of what only the
//! device's removal frees is seen too.
//!
//! Needs a kernel with CONFIG_DEBUG_KMEMLEAK; skips elsewhere.

use std::fs;
use std::time::Duration;

use nvgrace_guest_tests::kmemleak::parse;
use nvgrace_guest_tests::kmemleak::Report;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::GPU_BDF;

const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";
/// kmemleak reports only objects at least this old when a scan starts (mm/kmemleak.c
/// `MSECS_MIN_AGE`, 5 s), plus a second for the scheduling of the guest under TCG: what the
/// programs before this one leaked is reported by a scan after this wait.
const MIN_AGE: Duration = Duration::from_secs(6);
/// Scans made: objects only briefly unreferenced (a pointer held in a register or moved during
/// the first scan) are no longer reported by the second (kmemleak.rst suggests scanning again).
const SCANS: usize = 2;
/// Reports printed in full; the rest are counted.
const PRINTED: usize = 20;

/// Unbinds the GPU from its driver, if it has one, so that what the driver frees only at remove
/// (its per-device state, vfio-pci-core's saved config state: `ops->release`) is freed before
/// the scan, or reported by it. The module stays loaded: its frames then read as the driver's
/// symbols, not as the bare addresses that `nvgrace_guest_tests::kmemleak` attributes to it
/// after an rmmod.
fn unbind_gpu() -> Result<(), Failure> {
    let unbind = format!("/sys/bus/pci/devices/{GPU_BDF}/driver/unbind");
    if !std::path::Path::new(&unbind).exists() {
        return Ok(());
    }
    fs::write(&unbind, GPU_BDF)
        .map_err(|e| Failure::Fail(format!("write of {GPU_BDF} to {unbind}: {e}")))
}

fn scan() -> Result<Vec<Report>, Failure> {
    if !std::path::Path::new(KMEMLEAK).exists() {
        return Err(Failure::Skip(format!(
            "no {KMEMLEAK} (CONFIG_DEBUG_KMEMLEAK, debugfs)"
        )));
    }
    unbind_gpu()?;
    std::thread::sleep(MIN_AGE);
    for i in 0..SCANS {
        // EPERM: kmemleak disabled itself (an internal error, reported in the kernel log).
        fs::write(KMEMLEAK, "scan").map_err(|e| {
            Failure::Fail(format!(
                "scan #{}: write of 'scan' to {KMEMLEAK}: {e}",
                i + 1
            ))
        })?;
    }
    let text = fs::read_to_string(KMEMLEAK)
        .map_err(|e| Failure::Fail(format!("read of {KMEMLEAK}: {e}")))?;
    Ok(parse(&text))
}

fn main() {
    tap::diag(format!(
        "driver build: {}, GPU model: {}",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));
    // The scan's reports, or why there are none.
    let mut scanned: Result<Vec<Report>, String> = Err("not scanned".into());
    let tests = vec![
        test(
            "kmemleak_scan",
            |scanned: &mut Result<Vec<Report>, String>| match scan() {
                Ok(r) => {
                    *scanned = Ok(r);
                    Ok(())
                }
                Err(f) => {
                    let why = match &f {
                        Failure::Fail(m) | Failure::Skip(m) => m.clone(),
                    };
                    *scanned = Err(why);
                    Err(f)
                }
            },
        ),
        test(
            "no_leak_from_driver",
            |scanned: &mut Result<Vec<Report>, String>| {
                let reports = match scanned {
                    Ok(r) => r,
                    Err(why) => return Err(Failure::Skip(format!("no kmemleak scan: {why}"))),
                };
                tap::diag(format!(
                    "kmemleak reports {} unreferenced objects",
                    reports.len()
                ));
                // The driver's reports first, so that they are among those printed in full.
                reports.sort_by_key(|r| r.driver_frame().is_none());
                for r in reports.iter().take(PRINTED) {
                    let tag = match r.driver_frame() {
                        Some(why) => format!("driver ({why})"),
                        None => "not the driver".into(),
                    };
                    tap::diag(format!("kmemleak [{tag}]:\n{}", r.lines.join("\n")));
                }
                if reports.len() > PRINTED {
                    tap::diag(format!("... and {} more", reports.len() - PRINTED));
                }
                let ours: Vec<String> = reports
                    .iter()
                    .filter_map(|r| Some(format!("{} ({})", r.lines[0], r.driver_frame()?)))
                    .collect();
                if ours.is_empty() {
                    Ok(())
                } else {
                    Err(Failure::Fail(format!(
                        "{} unreferenced objects allocated through the driver:\n{}",
                        ours.len(),
                        ours.join("\n")
                    )))
                }
            },
        ),
    ];
    Harness::run_table(&mut scanned, tests)
}
