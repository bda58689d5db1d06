// SPDX-License-Identifier: GPL-2.0

//! A failed open is undone, and the next open works (upstream `nvgrace_gpu_open_device()`,
//! its `register_mem_failed` and `error_exit` paths): the open enables the device
//! (`vfio_pci_core_enable()`), registers resmem's PFN range with memory-failure, then usemem's;
//! a registration that fails with anything but EOPNOTSUPP (a kernel without
//! CONFIG_MEMORY_FAILURE) fails the open, after unregistering what it registered and disabling
//! the device.
//!
//! Before that, the open needs vfio-pci-core's mapping of BAR0, where readiness is read
//! (upstream: "bail early if that wasn't successful"): with BAR0's range requested by someone
//! else, vfio-pci-core leaves BAR0 unmapped and the open fails with its EBUSY.
//!
//! The rig makes the registration fail: the test module (tests/pgattr, its `claim` file) holds a
//! page of the range in memory-failure's registry first, and `register_pfn_address_space()`
//! refuses an overlapping range with EBUSY. The usemem case fails after resmem was registered:
//! if that registration were not undone, the next open would fail on resmem.

use std::io;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::expected_regions;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::gpumem::OpenGpu;
use nvgrace_guest_tests::mm::page_shift;
use nvgrace_guest_tests::pgattr::PfnClaim;
use nvgrace_guest_tests::pgattr::Pgattr;
use nvgrace_guest_tests::pgattr::MODULE_PATH;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::Region;
use nvgrace_guest_tests::GPU_BDF;

/// The PFN of the page in the middle of a region's memory.
fn middle_pfn(r: &Region) -> u64 {
    (r.memphys + r.memlength / 2) >> page_shift()
}

/// Opens the GPU and reads one byte of usemem: the open works and so does the memory.
fn open_and_read() -> tap::Outcome {
    let gpu = OpenGpu::open(GPU_BDF).map_err(|e| Failure::Fail(format!("open: {e}")))?;
    let mut b = [0u8; 8];
    let n = gpu.dev.mem_read(&gpu.usemem, 0, &mut b)?;
    check_eq!(n, b.len(), "pread of usemem after the open");
    Ok(())
}

/// With a page of `r` claimed, the open fails with EBUSY; once it is given back, it works.
fn failed_open_then_open(r: &Region, what: &str) -> tap::Outcome {
    let claim = match PfnClaim::claim(middle_pfn(r), 1) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            return Err(Failure::Skip(
                "no CONFIG_MEMORY_FAILURE: nothing to register".into(),
            ))
        }
        r => r.map_err(|e| Failure::Fail(format!("claim of a {what} page: {e}")))?,
    };
    // The library names the failing ioctl in the error, which keeps the errno's kind only
    // (EBUSY: ResourceBusy).
    let err = OpenGpu::open(GPU_BDF).err().map(|e: io::Error| e.kind());
    tap::observe(&format!("{what}_claimed_open_error"), format!("{err:?}"));
    check_eq!(
        err,
        Some(io::ErrorKind::ResourceBusy),
        "open while a {what} page is registered elsewhere (EBUSY)"
    );
    claim.release()?;
    open_and_read()?;
    // The range is the driver's again until close: a second claim overlaps it.
    let gpu = OpenGpu::open(GPU_BDF)?;
    let again = PfnClaim::claim(middle_pfn(r), 1)
        .err()
        .map(|e| e.raw_os_error());
    check_eq!(
        again,
        Some(Some(libc::EBUSY)),
        "claim of a {what} page while the device is open"
    );
    drop(gpu);
    check!(
        PfnClaim::claim(middle_pfn(r), 1).is_ok(),
        "the {what} range is still registered after close"
    );
    Ok(())
}

/// BAR0's physical range (bytes) from sysfs `resource` (its first line: start, end, flags).
fn bar0_range() -> Result<(u64, u64), Failure> {
    let text = sys::read_attr(sys::pci_dir(GPU_BDF).join("resource"))?;
    let first = text.lines().next().unwrap_or_default();
    let mut f = first
        .split_whitespace()
        .map(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16));
    match (f.next(), f.next()) {
        (Some(Ok(start)), Some(Ok(end))) if end > start => Ok((start, end - start + 1)),
        _ => Err(Failure::Fail(format!("BAR0 in sysfs resource: {first:?}"))),
    }
}

/// With BAR0's range taken, the open fails with EBUSY; once it is given back, it works.
fn bar0_taken_then_open() -> tap::Outcome {
    let (start, len) = bar0_range()?;
    let claim = PfnClaim::claim_mem(start, len)
        .map_err(|e| Failure::Fail(format!("request of BAR0 {start:#x}+{len:#x}: {e}")))?;
    let err = OpenGpu::open(GPU_BDF).err().map(|e: io::Error| e.kind());
    tap::observe("bar0_taken_open_error", format!("{err:?}"));
    check_eq!(
        err,
        Some(io::ErrorKind::ResourceBusy),
        "open while BAR0's range is requested elsewhere (EBUSY)"
    );
    claim.release()?;
    open_and_read()
}

fn main() {
    let Some((usemem, resmem)) = expected_regions() else {
        Harness::skip_all("open_unwind", "no GPU memory in the rig's _DSD");
    };
    // The module stays loaded; its lookup file is not needed.
    let loaded = Pgattr::load(MODULE_PATH)
        .map(drop)
        .map_err(|e| format!("{MODULE_PATH}: {e}"));
    let need = || loaded.clone().map_err(Failure::Fail);
    Harness::run_table(
        &mut (),
        vec![
            test("open_fails_while_bar0_is_taken", |_: &mut ()| {
                need()?;
                bar0_taken_then_open()
            }),
            test("open_fails_while_usemem_pfns_registered", |_: &mut ()| {
                need()?;
                failed_open_then_open(&usemem, "usemem")
            }),
            test("open_fails_while_resmem_pfns_registered", |_: &mut ()| {
                need()?;
                let r = resmem.ok_or_else(|| {
                    Failure::Skip(format!("{} has no resmem", nvgrace_guest_tests::rig_gpu()))
                })?;
                failed_open_then_open(&r, "resmem")
            }),
            test("no_kernel_splat", |_: &mut ()| sys::no_kernel_splat()),
        ],
    )
}
