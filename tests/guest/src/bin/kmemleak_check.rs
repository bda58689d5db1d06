// SPDX-License-Identifier: GPL-2.0

//! The debug kernel's leak check (scripts/kconfig/debug.config): `make check-debug` ends every
//! guest boot with it. It asks kmemleak for a scan (Documentation/dev-tools/kmemleak.rst) and
//! fails if an unreferenced object was allocated on a path through nvgrace-gpu-vfio-pci, either
//! build. Every other report is printed as a diagnostic and left to the kernel's maintainers.
//!
//! A report belongs to the driver when its allocation backtrace names the module
//! (`[nvgrace_gpu_vfio_pci]`, while it is loaded) or has a frame that no longer resolves to a
//! symbol: an address in a module that was unloaded since, and the driver is the only module the
//! rig unloads (vfio_basic, probe_test).
//!
//! Then it shows that the check can fail: it loads kmemleak's own test module, which leaks
//! objects on purpose (samples/kmemleak, CONFIG_SAMPLE_KMEMLEAK), scans again and expects their
//! reports, and none of them taken for the driver's.
//!
//! Needs a kernel with CONFIG_DEBUG_KMEMLEAK; skips elsewhere.

use std::fs;
use std::process::Command;
use std::time::Duration;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;

const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";
/// kmemleak reports only objects at least this old when a scan starts (mm/kmemleak.c
/// `MSECS_MIN_AGE`, 5 s), plus a second for the scheduling of the guest under TCG: what the
/// programs before this one leaked is reported by a scan after this wait.
const MIN_AGE: Duration = Duration::from_secs(6);
/// Scans made: objects only briefly unreferenced (a pointer held in a register or moved during
/// the first scan) are no longer reported by the second (kmemleak.rst suggests scanning again).
const SCANS: usize = 2;
/// The module name both driver builds have, as `%pS` prints it after a symbol.
const MODULE_TAG: &str = "[nvgrace_gpu_vfio_pci]";
/// Reports printed in full; the rest are counted.
const PRINTED: usize = 20;
/// kmemleak's test module, and its name as `%pS` prints it after a symbol.
const CONTROL_MODULE: &str = "kmemleak-test";
const CONTROL_TAG: &str = "[kmemleak_test]";

/// One kmemleak report: its header line and the lines after it.
struct Report {
    lines: Vec<String>,
}

impl Report {
    /// The backtrace frames (`%pS`): the indented lines after "backtrace".
    fn frames(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .skip_while(|l| !l.trim_start().starts_with("backtrace"))
            .skip(1)
            .map(|l| l.trim())
    }

    /// Why the report belongs to the driver, if it does.
    fn driver_frame(&self) -> Option<String> {
        self.frames().find_map(|f| {
            if f.contains(MODULE_TAG) {
                Some(format!("frame {f}"))
            } else if f.starts_with("0x") && f[2..].chars().all(|c| c.is_ascii_hexdigit()) {
                Some(format!("frame {f} in an unloaded module"))
            } else {
                None
            }
        })
    }
}

/// Splits the debugfs file into reports (each starts with "unreferenced object").
fn parse(text: &str) -> Vec<Report> {
    let mut reports: Vec<Report> = Vec::new();
    for line in text.lines() {
        if line.starts_with("unreferenced object") {
            reports.push(Report {
                lines: vec![line.to_string()],
            });
        } else if let Some(r) = reports.last_mut() {
            r.lines.push(line.to_string());
        }
    }
    reports
}

fn scan() -> Result<Vec<Report>, Failure> {
    if !std::path::Path::new(KMEMLEAK).exists() {
        return Err(Failure::Skip(format!(
            "no {KMEMLEAK} (CONFIG_DEBUG_KMEMLEAK, debugfs)"
        )));
    }
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
    let mut t = Harness::new(3);
    t.diag(format!(
        "driver build: {}, GPU model: {}",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));
    let reports = scan();
    let mut reports = match reports {
        Ok(r) => {
            t.test("kmemleak_scan", || Ok(()));
            r
        }
        Err(f) => {
            let why = match &f {
                Failure::Fail(m) | Failure::Skip(m) => m.clone(),
            };
            t.test("kmemleak_scan", || Err(f));
            t.test("no_leak_from_driver", || {
                Err(Failure::Skip(format!("no kmemleak scan: {why}")))
            });
            t.test("test_module_leaks_found", || {
                Err(Failure::Skip(format!("no kmemleak scan: {why}")))
            });
            t.finish();
        }
    };
    t.diag(format!(
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
        t.diag(format!("kmemleak [{tag}]:\n{}", r.lines.join("\n")));
    }
    if reports.len() > PRINTED {
        t.diag(format!("... and {} more", reports.len() - PRINTED));
    }
    t.test("no_leak_from_driver", || {
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
    });
    t.test("test_module_leaks_found", control);
    t.finish()
}

/// The positive control: the leaks of kmemleak's test module are reported, as its own.
fn control() -> Outcome {
    let status = Command::new("modprobe").arg(CONTROL_MODULE).status()?;
    check!(
        status.success(),
        "modprobe {CONTROL_MODULE}: {status} (CONFIG_SAMPLE_KMEMLEAK=m)"
    );
    let reports = scan()?;
    let theirs: Vec<&Report> = reports
        .iter()
        .filter(|r| r.frames().any(|f| f.contains(CONTROL_TAG)))
        .collect();
    println!(
        "# after loading {CONTROL_MODULE}: {} unreferenced objects, {} allocated by it",
        reports.len(),
        theirs.len()
    );
    check!(
        !theirs.is_empty(),
        "no report of the objects {CONTROL_MODULE} leaks"
    );
    if let Some(r) = theirs.iter().find(|r| r.driver_frame().is_some()) {
        fail!(
            "a leak of {CONTROL_MODULE} taken for the driver's:\n{}",
            r.lines.join("\n")
        );
    }
    Ok(())
}
