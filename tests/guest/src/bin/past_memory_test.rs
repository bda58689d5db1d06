// SPDX-License-Identifier: GPL-2.0

//! Writes to the part of an emulated BAR past the GPU memory are dropped without asking the GPU
//! whether it is ready (upstream `nvgrace_gpu_write_mem()`: `offset >= memlength` returns the
//! count before the readiness check), so they complete at once even on a GPU that never becomes
//! ready after a reset. Reads there do check readiness first on both drivers (the bytes are
//! all ones, but `nvgrace_gpu_read_mem()` checks before it fills them): device_fault_test covers
//! waits that end in ETIME.
//!
//! Needs a region whose memory is shorter than its BAR: the gh200-1.75g geometry (usemem
//! 512 MiB, resmem the remaining 1.25 GiB in a 2 GiB BAR); skips elsewhere.

use std::time::Duration;

use nvgrace_guest_tests::check;
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
use nvgrace_guest_tests::GPU_BDF;

/// Bound on the dropped writes together: no readiness wait (whose budget is 30 s on the BAR0
/// path and 1 s before Memory_Info_Valid on the CXL path) may fit in it; TCG on a loaded host
/// takes a few ms per pwrite.
const NO_WAIT: Duration = Duration::from_millis(500);

/// The region with memory shorter than its BAR, if any.
fn short_region(gpu: &OpenGpu) -> Result<GpuMem, Failure> {
    gpu.regions()
        .into_iter()
        .find(|m| m.memlength < m.bar_size)
        .ok_or_else(|| Failure::Skip("no region whose memory is shorter than its BAR".into()))
}

fn dropped_writes_do_not_wait(gpu: &OpenGpu) -> tap::Outcome {
    if !model::available() {
        return Err(Failure::Skip("no model state share at /mnt/model".into()));
    }
    let m = short_region(gpu)?;
    model::set_control(&[("never_ready", "1")])?;
    gpu.dev.reset()?;
    // Exactly at the end of the memory, a page past it, and the BAR's last bytes.
    let offsets = [
        m.memlength,
        m.memlength + mm::page_size() as u64,
        m.bar_size - 8,
    ];
    let t0 = mm::now();
    let results: Vec<String> = offsets
        .iter()
        .map(|&off| match gpu.dev.mem_write(&m, off, &[0x5a; 8]) {
            Ok(n) => format!("{n}"),
            Err(e) => tap::errno_name(e.raw_os_error()),
        })
        .collect();
    let took = mm::now() - t0;
    model::reset_control()?;
    gpu.dev.reset()?;
    tap::observe(
        &format!("{}_writes_past_memory", m.name()),
        results.join(","),
    );
    tap::diag(format!(
        "{} writes at {offsets:#x?} on a GPU that never becomes ready: {results:?} in {took:?}",
        m.name()
    ));
    check!(
        results.iter().all(|r| r == "8"),
        "writes past the memory on a GPU not ready: {results:?}, expected 8 bytes each"
    );
    check!(
        took < NO_WAIT,
        "writes past the memory took {took:?}: they waited for readiness"
    );
    // Ready again: the memory works.
    let mut b = [0u8; 8];
    gpu.dev.mem_read_exact(&m, 0, &mut b)?;
    Ok(())
}

fn main() {
    let gpu = match OpenGpu::open(GPU_BDF) {
        Ok(g) => g,
        Err(e) => Harness::open_failed(e),
    };
    Harness::run_table(
        &mut (),
        vec![
            test("writes_past_memory_need_no_readiness", |_: &mut ()| {
                dropped_writes_do_not_wait(&gpu)
            }),
            test("no_kernel_splat", |_: &mut ()| sys::no_kernel_splat()),
        ],
    )
}
