// SPDX-License-Identifier: GPL-2.0

//! Removal: unbinding the GPU from the driver (upstream `nvgrace_gpu_remove()`, then the VFIO
//! device's `ops->release` when its last reference goes) leaves nothing of the device behind,
//! on both paths: the one with GPU memory and plain vfio-pci-core (no `_DSD` memory, upstream's
//! `nvgrace_gpu_pci_core_ops`), and a second bind works as the first did.
//!
//! What it can see from user space: the device's debugfs directory (the Rust driver's record of
//! poisoned pages, difference 6: upstream has none), which the driver's state owns, so it goes
//! only when that state is dropped in `release`. A `release` that forgot the state would leave
//! the directory, with a file whose data is freed memory, until the module is removed.
//!
//! Run after probe_test in the probe runs: `remove_test rust|upstream` (binds that build first
//! if the GPU is unbound).

use std::path::PathBuf;
use std::process::Command;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::DRIVER_NAME;
use nvgrace_guest_tests::GPU_BDF;

/// The device's debugfs directory (src/device/poison.rs: `nvgrace_gpu_vfio_pci/<BDF>`).
fn debugfs_dir() -> PathBuf {
    PathBuf::from(format!("/sys/kernel/debug/{DRIVER_NAME}/{GPU_BDF}"))
}

/// Binds the GPU to the driver build through driver_override, loading it first if it is not
/// loaded (scripts/guest/rig-bind); whether it ended up bound.
fn bind(build: &str) -> bool {
    let done = if sys::module_loaded(DRIVER_NAME) {
        sys::write_attr(sys::pci_dir(GPU_BDF).join("driver_override"), DRIVER_NAME)
            .and_then(|()| sys::write_attr("/sys/bus/pci/drivers_probe", GPU_BDF))
            .is_ok()
    } else {
        Command::new("rig-bind")
            .arg(build)
            .status()
            .is_ok_and(|s| s.success())
    };
    done && sys::bound_driver(GPU_BDF).as_deref() == Some(DRIVER_NAME)
}

/// The debugfs directory's presence while bound, as each build has it.
fn bound_state(build: &str, when: &str) -> tap::Outcome {
    check_eq!(
        sys::bound_driver(GPU_BDF),
        Some(DRIVER_NAME.to_string()),
        "driver bound {when}"
    );
    let dir = debugfs_dir().exists();
    tap::observe_listed(6, "debugfs_dir", dir);
    check_eq!(
        dir,
        build == "rust",
        "{} exists {when}",
        debugfs_dir().display()
    );
    Ok(())
}

/// Unbinds, then: no driver, no debugfs directory of the device.
fn unbind_state() -> tap::Outcome {
    sys::unbind(GPU_BDF).map_err(|e| Failure::Fail(format!("unbind: {e}")))?;
    check_eq!(
        sys::bound_driver(GPU_BDF),
        None::<String>,
        "driver after unbind"
    );
    let dir = debugfs_dir().exists();
    tap::observe("debugfs_dir_after_unbind", dir);
    check!(
        !dir,
        "{} is still there after unbind: the device's state was not dropped",
        debugfs_dir().display()
    );
    Ok(())
}

fn main() {
    let build = std::env::args().nth(1).unwrap_or_default();
    if build != "rust" && build != "upstream" {
        println!("Bail out! usage: remove_test rust|upstream");
        std::process::exit(2);
    }
    tap::diag(format!(
        "build {build}, GPU model {}",
        nvgrace_guest_tests::rig_gpu()
    ));
    let tests = vec![
        test("bound", |_: &mut ()| {
            check!(
                sys::bound_driver(GPU_BDF).as_deref() == Some(DRIVER_NAME) || bind(&build),
                "cannot bind {GPU_BDF} to {DRIVER_NAME} ({build})"
            );
            bound_state(&build, "before unbind")
        }),
        test("unbind_drops_device_state", |_: &mut ()| unbind_state()),
        test("rebind", |_: &mut ()| {
            check!(bind(&build), "second bind of {GPU_BDF} failed");
            bound_state(&build, "after the second bind")
        }),
        test("second_unbind_drops_device_state", |_: &mut ()| {
            unbind_state()
        }),
        test("module_removable", |_: &mut ()| {
            sys::rmmod(DRIVER_NAME)
                .map_err(|e| Failure::Fail(format!("rmmod {DRIVER_NAME}: {e}")))?;
            check!(
                !sys::module_loaded(DRIVER_NAME),
                "{DRIVER_NAME} still loaded"
            );
            Ok(())
        }),
        test("no_kernel_splat", |_: &mut ()| sys::no_kernel_splat()),
    ];
    Harness::run_table(&mut (), tests)
}
