// SPDX-License-Identifier: GPL-2.0

//! The suites, one per rig geometry: which metrics each measures, in which groups.

use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::page_size;
use serde_json::Value;

use crate::runner::*;
use crate::steps::*;

/// The largest entry a PFN map gets on this kernel: the PUD where there are PUD-level PFN maps
/// (x86_64: 1 GiB), else the PMD (arm64: 2 MiB with 4 KiB pages, 512 MiB with 64 KiB).
pub(crate) fn top_entry() -> usize {
    mm::pud_pfnmap().unwrap_or_else(|_| mm::pmd_size())
}

/// The fault-in runs of usemem, one per entry order, and the touch of the mapping once faulted;
/// the PUD run is left out (`b.skip()`) where the kernel has no PUD-level PFN maps.
fn usemem_fault_steps<'a>(b: &Bench) -> Vec<(Metric, Step<'a>)> {
    let (page, pmd, top) = (page_size(), mm::pmd_size(), top_entry());
    // PMD runs start one PMD past the first `top`-aligned address: PMD- but not PUD-aligned
    // where there are PUDs.
    let pmd_off = move |m: &GpuMem| first_aligned_offset(m, top) + pmd as u64;
    let mut faults: Vec<(Metric, Step<'_>)> = Vec::new();
    match mm::pud_pfnmap() {
        Ok(pud) => faults.push((
            rate(
                format!("fault_usemem_{}_aligned", size_tag(pud)),
                "fault-in",
                format!(
                    "touch every {} page of a fresh {} usemem mapping whose VA and PA are {}-aligned (PUD faults)",
                    size_name(page),
                    size_name(HUGE_FAULT_LEN),
                    size_name(pud)
                ),
            ),
            fault_step(
                false,
                move |m| first_aligned_offset(m, pud),
                HUGE_FAULT_LEN,
                pud,
            ),
        )),
        Err(why) => b.skip("fault_usemem_pud_aligned", &why),
    }
    faults.extend([
        (
            rate(
                format!("fault_usemem_{}_aligned", size_tag(pmd)),
                "fault-in",
                format!(
                    "touch every {} page of a fresh {} usemem mapping whose VA and PA are {}-aligned{} (PMD faults)",
                    size_name(page),
                    size_name(HUGE_FAULT_LEN),
                    size_name(pmd),
                    if top > pmd {
                        format!(", not {}", size_name(top))
                    } else {
                        String::new()
                    }
                ),
            ),
            fault_step(false, pmd_off, HUGE_FAULT_LEN, pmd),
        ),
        (
            rate(
                "fault_usemem_unaligned",
                "fault-in",
                format!(
                    "touch every {} page of a fresh 128 MiB usemem mapping whose PA is only page-aligned (PTE faults)",
                    size_name(page)
                ),
            ),
            fault_step(
                false,
                move |m| pmd_off(m) + page as u64,
                PTE_FAULT_LEN,
                pmd,
            ),
        ),
        (
            rate(
                "touch_usemem_mapped",
                "fault-in",
                format!(
                    "touch every {} page of the {}-aligned usemem mapping again, all faulted in (no faults)",
                    size_name(page),
                    size_name(top)
                ),
            ),
            Box::new(move |_, o| {
                let o = need(o)?;
                let g = first_aligned_offset(&o.usemem, top);
                let map =
                    mm::mmap_shared_aligned(&o.dev.fd, o.usemem.at(g), HUGE_FAULT_LEN, top)?;
                // SAFETY: A shared writable mapping of GPU memory that only this code uses.
                unsafe {
                    touch(map.addr(), map.len());
                    touch_rate(map.addr(), map.len())
                }
            }),
        ),
    ]);
    faults
}

pub(crate) fn suite_usemem(b: &mut Bench, scratch: &mut Scratch) {
    let mut faults = usemem_fault_steps(b);
    faults.extend(ceiling_touch_steps());
    b.run(Needs::Device, scratch, faults);
    b.run(Needs::Device, scratch, rw_steps(false));
    b.run(Needs::Device, scratch, ceiling_copy_steps());
    b.run(Needs::Device, scratch, latency_steps());
    reset_runs(b, scratch);
    for (m, by) in b.group(Needs::Closed, scratch, closed_steps()) {
        if m.name == "lat_bind" {
            // Its details hold the unbind times.
            let unbind = by
                .iter()
                .map(|(d, (_, per_rep))| {
                    let t = per_rep
                        .iter()
                        .filter_map(|v| v.get("unbind_ms").and_then(Value::as_f64))
                        .collect();
                    (d.clone(), (t, Vec::new()))
                })
                .collect();
            b.emit_all(
                &time(
                    "lat_unbind",
                    "probe",
                    "ms",
                    "write of the GPU's address to the driver's unbind: remove and vfio unregistration",
                ),
                unbind,
            );
        }
        b.emit_all(&m, by);
    }
}

/// The per-operation metrics of the `usemem` suite, for a boot under `-icount` (guest time counts
/// instructions): fault-in at each order, read/write, the ceiling's copies (memcpy and tmpfs, to
/// compare the copy loops with the drivers') and the latencies. Not the ceiling's anonymous
/// page touches (they do not bear on the drivers), reset, readiness, open/close nor bind: they
/// sleep (the FLR's 100 ms in open, close and reset, the model's delay), and while every vCPU
/// sleeps QEMU's icount clock follows the host's clock (`-icount` sleep=on), so their "counts"
/// would be mostly host time (a first run counted ~104 M per open and close, the 100 ms of the
/// FLR).
pub(crate) fn counts_usemem(b: &mut Bench, scratch: &mut Scratch) {
    let faults = usemem_fault_steps(b);
    b.run(Needs::Device, scratch, faults);
    b.run(Needs::Device, scratch, rw_steps(false));
    b.run(Needs::Device, scratch, ceiling_copy_steps());
    b.run(Needs::Device, scratch, latency_steps());
}

pub(crate) fn suite_resmem(b: &mut Bench, scratch: &mut Scratch) {
    let mut steps = rw_steps(true);
    let top = top_entry();
    steps.push((
        rate(
            format!("fault_resmem_{}_aligned", size_tag(top)),
            "fault-in",
            format!(
                "touch every {} page of a fresh {} resmem mapping (write-combining) whose VA and PA are {}-aligned ({} faults)",
                size_name(page_size()),
                size_name(HUGE_FAULT_LEN),
                size_name(top),
                if mm::pud_pfnmap().is_ok() { "PUD" } else { "PMD" }
            ),
        ),
        fault_step(
            true,
            move |m| first_aligned_offset(m, top),
            HUGE_FAULT_LEN,
            top,
        ),
    ));
    b.run(Needs::Device, scratch, steps);
}

/// The readiness sweep: reset to first access at every delay of [`sweep_delays_ms`], both
/// drivers (on the CXL GPU model too, where the driver polls the DVSEC instead of BAR0).
pub(crate) fn suite_readiness(b: &mut Bench, scratch: &mut Scratch) {
    let delays = sweep_delays_ms();
    if nvgrace_guest_tests::rig_gpu() == "cxl" {
        // The model delays Memory_Info_Valid, which both drivers wait for at most 1 s
        // (src/readiness.rs, CXL_MEM_INFO_VALID_TIMEOUT_MS): past that the Rust driver gives up
        // with ETIME, as its first sweep showed at 1150 ms and above.
        let delays: Vec<u64> = delays.into_iter().filter(|&d| d < 1000).collect();
        reset_runs_at(b, scratch, &delays, "sweep_cxl", "readiness-sweep-cxl");
    } else {
        reset_runs_at(b, scratch, &delays, "sweep", "readiness-sweep");
    }
}
