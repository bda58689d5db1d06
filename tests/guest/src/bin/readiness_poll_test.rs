// SPDX-License-Identifier: GPL-2.0

//! Difference 2 (tests/guest/src/differences.rs): after a reset, upstream polls the GPU's
//! readiness once a second, the Rust driver every max(1 ms, 1/256 of the time waited). With the
//! model ready 400 ms after the FLR, the first access after `VFIO_DEVICE_RESET` therefore waits a
//! whole second on upstream and a few milliseconds past the readiness on Rust.
//!
//! Evidence, per build: the number of readiness polls the model logged (its access log) and a
//! bound on the wait that lies a long way from the other build's behaviour (upstream: at least
//! the 1 s it sleeps; Rust: under that second, with ~550 ms of margin for a slow TCG guest).
//!
//! The same on both paths: the legacy one (BAR0 status registers; the polls counted are reads
//! of the C2C link status) and the CXL one (`--gpu cxl`: reads of the CXL DVSEC's Range 1 Size
//! Low, whose Memory_Info_Valid and Memory_Active the model raises together, 400 ms after the
//! FLR, well within the 1 s that Memory_Info_Valid has).

use std::os::unix::fs::FileExt;
use std::time::Duration;
use std::time::Instant;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::differences::build;
use nvgrace_guest_tests::differences::Build;
use nvgrace_guest_tests::expected_regions;
use nvgrace_guest_tests::model;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::vfio::VFIO_PCI_OFFSET_SHIFT;
use nvgrace_guest_tests::GPU_BDF;

/// The model's readiness delay after an FLR, in ms. Well past the FLR's own duration (the
/// kernel's fixed 100 ms wait in pcie_flr(), up to ~240 ms seen on a loaded host): if the FLR
/// outlasted the delay, upstream would find the GPU ready at its first poll and never sleep.
const READY_DELAY_MS: u64 = 400;
/// Upstream's interval between readiness polls (`POLL_QUANTUM_MS`).
const UPSTREAM_QUANTUM: Duration = Duration::from_millis(1_000);

fn main() {
    let build = build();
    let tests = vec![
        test("first_access_after_reset", |_: &mut ()| {
            if expected_regions().is_none() {
                return Err(Failure::Skip("no GPU memory described".into()));
            }
            let Some(build) = build else {
                return Err(Failure::Skip("no driver bound".into()));
            };
            let dev = Device::open_iommufd(GPU_BDF)?;
            model::set_control(&[("ready_delay_ms", &READY_DELAY_MS.to_string())])?;
            let mut b = [0u8; 8];
            let usemem = 4u64 << VFIO_PCI_OFFSET_SHIFT;
            dev.fd.read_at(&mut b, usemem)?;

            let mark = model::log_mark()?;
            let start = Instant::now();
            dev.reset()?;
            dev.fd.read_at(&mut b, usemem)?;
            let took = start.elapsed();
            // Reads of the C2C link status register (CXL: of Range 1 Size Low) since the reset,
            // ready or not.
            let lines = model::log_since(mark)?;
            let polls = if model::readiness_via_bar0() {
                let log = model::readiness_polls(&lines);
                log.not_ready_reads + log.ready_reads
            } else {
                model::cxl_status_reads(&lines).len()
            };
            model::reset_control()?;
            tap::diag(format!(
                "{build:?}: reset + first read took {took:?}, {polls} readiness polls ({})",
                if model::readiness_via_bar0() {
                    "BAR0"
                } else {
                    "CXL DVSEC"
                }
            ));

            check!(
                took >= Duration::from_millis(READY_DELAY_MS),
                "the read did not wait for readiness ({took:?})"
            );
            match build {
                Build::Upstream => {
                    check!(
                        took >= UPSTREAM_QUANTUM,
                        "upstream: expected a whole-second sleep, took {took:?}"
                    );
                    check!(
                        polls <= 3,
                        "upstream: expected one poll a second, saw {polls}"
                    );
                }
                Build::Rust => {
                    check!(
                        took < UPSTREAM_QUANTUM,
                        "rust: took {took:?}, as long as upstream's sleep"
                    );
                    check!(
                        polls >= 4,
                        "rust: expected polls at a short interval, saw {polls}"
                    );
                }
            }
            Ok(())
        }),
        test("no_kernel_splat", |_: &mut ()| sys::no_kernel_splat()),
    ];
    Harness::run_table(&mut (), tests)
}
