// SPDX-License-Identifier: GPL-2.0

//! The guest side of `make bench`: measures driver builds in the rig's guest and prints one
//! `@@bench` JSON line per metric and driver (every repetition's sample) on the console, for
//! `bench-report` on the host to set the Rust driver against upstream. Not a test: it asserts
//! nothing about speed, and it exits non-zero only when a metric could not be measured.
//!
//! ```text
//! nvgrace-bench [--reps N] [--warmup N] [--switch DRIVER,DRIVER [--passes N]] [--icount] SUITE...
//! ```
//!
//! `--icount`: the boot runs under QEMU's `-icount shift=0` (scripts/vm-run `--icount`), where
//! guest time counts instructions; the suites then measure only their per-operation metrics and
//! report them as instructions per operation (`<metric>_insns`, group `counts`), which do not
//! depend on the host's load.
//!
//! Without `--switch` it measures the build `scripts/vm-run --driver` bound. With `--switch`
//! (vm-run `--driver none`) it binds the builds itself, one after the other, group of metrics
//! by group of metrics, in `--passes` passes (default: one per repetition) whose order
//! alternates (A B, B A, ...): both builds are then measured seconds apart in the same boot, so
//! a busy host slows both alike. Every binding of a build warms up again before it measures.
//!
//! Suites, each for one geometry of the rig:
//!
//! - `usemem` (`--gpu gb200 --mem-size 0x80000000`: 2 GiB of usemem, which holds a 1 GiB-aligned
//!   GiB): fault-in of usemem mappings 1 GiB-aligned, 2 MiB-aligned and unaligned; pread/pwrite
//!   bandwidth of usemem; latency of an emulated BAR config read, a plain config read, a region
//!   info query and a BAR0 read; reset-to-first-access latency at readiness delays of 0, 150 and
//!   500 ms; open/close; unbind/bind (probe). And the ceiling: the same page touches on anonymous
//!   memory, the same copies on a tmpfs file and as memcpy, measured in each build's turn (they
//!   do not involve the driver, so they show how much the host's load moves the figures).
//! - `readiness` (`--gpu gh200`, or `--gpu cxl` for the CXL path): the readiness sweep, reset to
//!   first access at delays from 0 to 3 s (every 50 ms around 1 s), for bench-report's plot.
//! - `resmem` (`--gpu gh200`, the rig's default geometry: 1 GiB of resmem at a 1 GiB-aligned
//!   address): pread/pwrite bandwidth of resmem and fault-in of a 1 GiB-aligned resmem mapping.
//!
//! The reset runs (`usemem`, `readiness`) give the overhead a driver adds twice: counted from
//! the reset ioctl's start, and counted from readiness, the FLR + the delay, with the FLR placed
//! on the guest's clock from the model's logged times (`nvgrace_bench::flr`). They need the
//! model started with `--log-times` (`scripts/vm-run --model-log-times`, as scripts/bench does)
//! and fail without it.
//!
//! The sizes follow the guest kernel's pages (`mm::page_size()`, `mm::pmd_size()`): with 4 KiB
//! pages a PMD maps 2 MiB and a PUD 1 GiB; on arm64 with 64 KiB pages a PMD maps 512 MiB, and
//! arm64 has no PUD-level PFN maps at any page size (`mm::pud_pfnmap()`), so the PUD runs are
//! left out there, with a `@@bench-skipped` line that says why (the report lists it), and the
//! metric names carry the sizes (`fault_usemem_512m_aligned`).
//!
//! No x86_64 rig geometry holds both a 1 GiB-aligned GiB of usemem and a resmem region: with the
//! carve-out of a GH200 (1 GiB of resmem after usemem), usemem would have to reach 2 GiB past
//! the aperture's start at 512 MiB, and the aperture must stay in the 2 GiB of guest RAM above
//! the kernel's 512 MiB, below 4 GiB (scripts/vm-run, scripts/mkssdt). The arm64 rig (aperture
//! at 4 GiB) runs the same two geometries.


mod runner;
mod steps;
mod suites;

use std::error::Error;

use nvgrace_bench::ptdump;
use nvgrace_bench::Env;
use nvgrace_bench::ENV_TAG;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::sys;
use serde_json::json;
use serde_json::Map;
use serde_json::Value;


use crate::runner::*;
use crate::steps::*;
use crate::suites::*;

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// What the guest is, for the report.
fn env(suite: &str, reps: usize, warmup: usize) -> Env {
    let mut g = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        g.insert(k.into(), v.map_or(Value::Null, Value::String));
    };
    put("kernel", read_trim("/proc/sys/kernel/osrelease"));
    put("kernel_version", read_trim("/proc/sys/kernel/version"));
    put("cmdline", read_trim("/proc/cmdline"));
    put(
        "clocksource",
        read_trim("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
    );
    put("thp", read_trim(THP_ENABLED));
    put(
        "module_srcversion",
        read_trim("/sys/module/nvgrace_gpu_vfio_pci/srcversion"),
    );
    let cpuinfo = read_trim("/proc/cpuinfo").unwrap_or_default();
    put(
        "cpus",
        Some(
            cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count()
                .to_string(),
        ),
    );
    put(
        "cpu_model",
        cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string()),
    );
    put(
        "mem_total",
        read_trim("/proc/meminfo").and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .map(|l| l["MemTotal:".len()..].trim().to_string())
        }),
    );
    put(
        "ptdump",
        Some(std::path::Path::new(ptdump::CURRENT).exists().to_string()),
    );
    Env {
        suite: suite.into(),
        driver: nvgrace_guest_tests::rig_driver(),
        gpu: nvgrace_guest_tests::rig_gpu(),
        mem_size: std::env::var("RIG_MEM_SIZE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        reps,
        warmup,
        guest: g,
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: nvgrace-bench [--reps N] [--warmup N] [--switch DRIVER,DRIVER [--passes N]] [--icount] usemem|resmem|readiness..."
    );
    std::process::exit(2);
}

fn main() {
    let mut reps = 5;
    let mut warmup = 1;
    let mut passes = None;
    let mut switch = None;
    let mut suites = Vec::new();
    let mut icount = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--reps" => reps = value().parse().unwrap_or_else(|_| usage()),
            "--warmup" => warmup = value().parse().unwrap_or_else(|_| usage()),
            "--passes" => passes = Some(value().parse().unwrap_or_else(|_| usage())),
            "--switch" => {
                switch = Some(
                    value()
                        .split(',')
                        .map(str::to_string)
                        .collect::<Vec<String>>(),
                )
            }
            "--icount" => icount = true,
            "usemem" | "resmem" | "readiness" => suites.push(a),
            _ => usage(),
        }
    }
    if suites.is_empty() || reps == 0 || passes == Some(0) {
        usage();
    }
    let drivers = match &switch {
        Some(d) if !d.is_empty() && d.iter().all(|x| x == "rust" || x == "upstream") => d.clone(),
        Some(_) => usage(),
        None => vec![nvgrace_guest_tests::rig_driver()],
    };
    // Interleaved, one repetition per pass by default; one pass when there is nothing to
    // interleave.
    let passes: usize = if switch.is_some() {
        passes.unwrap_or(reps).min(reps)
    } else {
        1
    };

    // The first clock read maps the vDSO's data page with a fault: take it before any fault
    // count.
    let _ = (mm::now(), mm::minor_faults());
    let thp_default = read_trim(THP_ENABLED);
    if let Err(e) = sys::write_attr(THP_ENABLED, "madvise") {
        eprintln!("nvgrace-bench: cannot set THP to madvise: {e}");
    }
    let mut scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nvgrace-bench: buffers: {e}");
            std::process::exit(1);
        }
    };
    let mut failed = false;
    for suite in suites {
        let mut e = env(&suite, reps, warmup);
        e.guest.insert(
            "thp_boot_default".into(),
            thp_default.clone().map_or(Value::Null, Value::String),
        );
        e.guest.insert("passes".into(), json!(passes));
        e.guest.insert("icount".into(), json!(icount));
        e.guest.insert("drivers".into(), json!(drivers));
        println!(
            "{ENV_TAG}{}",
            serde_json::to_string(&e).expect("the environment serialises")
        );
        let mut b = Bench {
            suite: suite.clone(),
            reps,
            warmup,
            passes,
            drivers: drivers.clone(),
            switch: switch.is_some(),
            bound: None,
            open: None,
            errors: 0,
            icount,
        };
        match (suite.as_str(), icount) {
            ("usemem", false) => suite_usemem(&mut b, &mut scratch),
            ("usemem", true) => counts_usemem(&mut b, &mut scratch),
            ("readiness", _) => suite_readiness(&mut b, &mut scratch),
            _ => suite_resmem(&mut b, &mut scratch),
        }
        b.open = None;
        match sys::splats() {
            Ok(s) if !s.is_empty() => b.error(
                "kernel_log",
                &*Box::<dyn Error>::from(format!("kernel splat:\n{}", s.join("\n"))),
            ),
            Err(e) => b.error("kernel_log", &e),
            Ok(_) => {}
        }
        failed |= b.errors > 0;
    }
    std::process::exit(i32::from(failed));
}
