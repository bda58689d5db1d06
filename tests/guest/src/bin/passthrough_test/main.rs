// SPDX-License-Identifier: GPL-2.0

//! QEMU passthrough end to end: an unmodified Debian QEMU in the guest's Debian userland
//! (`vm-run --userland`) hands the GPU to an inner machine with `-device vfio-pci`, once through
//! the legacy VFIO group and once through iommufd, and the guest-visible result is checked.
//!
//! The commands are not written here: they are the blocks of Documentation/user-guide.md marked
//! `<!-- tested: NAME -->` (bind, qemu-group, qemu-iommufd), run with the variables the guide's
//! table gives for the rig. Per interface:
//!
//! 1. this program maps BAR4 (usemem) and BAR2 (resmem) through its own VFIO fd and writes a
//!    pattern word at offset 0 of each, then, with pwrite(2) on the VFIO region, a list of probe
//!    offsets at offset 16 and a pattern word at each probe offset inside the memory ([`probes`]:
//!    the second page, the middle, the last word; past the memory's end, where the BAR is larger
//!    than the memory, it writes nothing); then it closes the device;
//! 2. QEMU starts the inner machine (q35, TCG) with the small kernel of tests/passthrough/stub.c,
//!    which runs after the firmware has assigned the BARs: it reads word 0 of BAR2 and BAR4 at
//!    their guest-physical addresses, writes the complement at offset 8, and reads the word at
//!    each listed probe offset (its serial output says what it saw);
//! 3. over QMP: `query-pci` shows 10de:<device> with BAR2 and BAR4 of the emulated sizes, 64-bit
//!    prefetchable, at the addresses the inner kernel used; what the inner kernel read must be
//!    what this program wrote, and all ones past the memory's end (the drivers' read of the part
//!    of the BAR without memory, upstream `nvgrace_gpu_read_mem()`, which QEMU calls for the part
//!    of the BAR outside the region's sparse mmap area); the monitor's `xp` at the same addresses
//!    must read the same; then `quit`;
//! 4. this program opens the device again and finds the inner machine's writes through its own
//!    mapping.
//!
//! On arm64 (the emulated Grace, `vm-run --arch arm64`) the inner machine is `virt` under KVM in
//! this guest (which runs at EL2), without firmware: tests/passthrough/stub-arm64.c assigns the
//! BARs itself through virt's ECAM, then reads and writes as the x86 stub does and keeps running.
//! Between steps 3 and 4 this program checks the inner VM's stage-2 page tables, which KVM built
//! from the VMAs of QEMU's mappings of the BARs (arch/arm64/kvm/mmu.c): KVM's own debugfs dump
//! (`/sys/kernel/debug/kvm/<pid>-<fd>/stage2_page_tables`) must show the BARs' first pages mapped
//! read-write at the addresses the stub gave them, and the leaf entries that map the GPU memory
//! (found by their output address, the memory's physical address in this guest) must sit at the
//! matching IPA of their BAR with usemem Normal Write-Back (cacheable, FEAT_S2FWB's encoding) and
//! resmem Normal Non-cacheable. KVM's dump has no memory type, so the entries themselves come
//! from tests/passthrough/s2attr (nvgrace_s2attr.ko), which reads the same tables. Step 4's
//! `quit` is the machine's power button there: the stub powers off through PSCI.
//!
//! Usage: `passthrough_test rust|upstream` with `vm-run --driver none --userland`: binding is
//! part of the test (the guide's bind block). `passthrough_test /opt/extra/NAME.ko` (with
//! `vm-run --add`) binds a build of the driver changed on purpose instead, to see checks fail.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::tap::Test;
use nvgrace_guest_tests::vfio::region;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::vfio::VFIO_PCI_OFFSET_SHIFT;
use nvgrace_guest_tests::Region;
use nvgrace_guest_tests::DRIVER_NAME;
use nvgrace_guest_tests::GPU_BDF;
use serde_json::json;
use serde_json::Value;

mod inner;
mod stage2;

use inner::find_gpu;
use inner::Inner;
use inner::Qmp;
use stage2::stage2_tests;

/// Where mkinitramfs puts the guide and the inner machine's kernel.
const GUIDE: &str = "/opt/nvgrace/user-guide.md";
const STUB: &str = "/opt/nvgrace/passthrough-stub.elf";
/// The Debian root `vm-run --userland` mounts, with /dev, /proc, /sys and /tmp inside. That root
/// is amd64; the arm64 guest runs the arm64 QEMU that tests/passthrough/arm64-userland unpacks
/// into it, with the guest's /dev, /proc, /sys and /tmp bound in by this program.
#[cfg(not(target_arch = "aarch64"))]
const USERLAND: &str = "/mnt/userland";
#[cfg(target_arch = "aarch64")]
const USERLAND: &str = "/mnt/userland/opt/arm64-userland";

/// The guide's rig column: QEMU, machine and memory of the inner machine.
#[cfg(not(target_arch = "aarch64"))]
const QEMU: &str = "qemu-system-x86_64";
#[cfg(not(target_arch = "aarch64"))]
const MACHINE: &str = "-M q35 -accel tcg";
#[cfg(target_arch = "aarch64")]
const QEMU: &str = "qemu-system-aarch64";
#[cfg(target_arch = "aarch64")]
const MACHINE: &str = "-M virt,gic-version=3 -accel kvm -cpu host -smp 1";
const MEM: &str = "64M";
const ARM64: bool = cfg!(target_arch = "aarch64");

/// The inner machine boots under TCG inside this TCG guest; firmware plus the small kernel take
/// tens of seconds. Generous bounds: a run that exceeds them is a failure, not a slow pass.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const QUIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The pattern word this program writes at offset 0 of each BAR (distinct per interface so a
/// stale value from the previous run cannot pass).
fn pattern(iface: Iface, bar: u32) -> u64 {
    pattern_at(iface, bar, 0)
}

/// The pattern word at byte `off` of a BAR's memory.
fn pattern_at(iface: Iface, bar: u32, off: u64) -> u64 {
    let seed = 0x4e56_4752_4143_4500 | (iface as u64) << 4 | u64::from(bar);
    u64::from_le_bytes(mm::pattern(seed, off, 8).try_into().unwrap_or([0x5a; 8]))
}

/// Where the probe list starts in each BAR: the count, then the offsets, one 64-bit word each
/// (tests/passthrough/stub.c, probe_bar(), which reads at most [`MAX_PROBES`] of them).
const PROBE_LIST: u64 = 16;
const MAX_PROBES: usize = 8;

/// The words the inner kernel reads in a BAR of memory `r`, past the probe list and the first
/// page: `(offset, what it must read)`. In the memory: the pattern word of that offset, at the
/// second page, the middle and the last word. Past the memory's end, where the BAR is larger:
/// all ones (upstream `nvgrace_gpu_read_mem()`: "reads extending beyond the actual device size
/// is filled with ~0"), at the first word past the end, the middle of the rest, the BAR's last
/// word.
fn probes(iface: Iface, bar: u32, r: Region) -> Vec<(u64, u64)> {
    let page = mm::page_size() as u64;
    let mut offs = vec![page, (r.memlength / 2) & !7, r.memlength - 8];
    let inside = offs.len();
    if r.bar_size > r.memlength {
        let rest = r.bar_size - r.memlength;
        offs.extend([r.memlength, r.memlength + ((rest / 2) & !7), r.bar_size - 8]);
    }
    offs.iter()
        .enumerate()
        .map(|(i, &off)| {
            let want = if i < inside {
                pattern_at(iface, bar, off)
            } else {
                u64::MAX
            };
            (off, want)
        })
        .collect()
}

/// Writes the probe list and the pattern words of the probes inside the memory of `bar`, through
/// the VFIO region (pwrite), not a mapping.
fn write_probes(dev: &Device, bar: u32, r: Region, probes: &[(u64, u64)]) -> Outcome {
    check!(probes.len() <= MAX_PROBES, "{} probes", probes.len());
    let base = u64::from(bar) << VFIO_PCI_OFFSET_SHIFT;
    let mut list = (probes.len() as u64).to_le_bytes().to_vec();
    for &(off, _) in probes {
        list.extend(off.to_le_bytes());
    }
    check_eq!(
        dev.pwrite(&list, base + PROBE_LIST)?,
        list.len(),
        "probe list of BAR{bar}"
    );
    for &(off, want) in probes.iter().filter(|(off, _)| *off < r.memlength) {
        check_eq!(
            dev.pwrite(&want.to_le_bytes(), base + off)?,
            8usize,
            "pattern word at {off:#x} of BAR{bar}"
        );
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Iface {
    Group = 1,
    Iommufd = 2,
}

impl Iface {
    fn name(self) -> &'static str {
        match self {
            Iface::Group => "group",
            Iface::Iommufd => "iommufd",
        }
    }

    fn open(self) -> std::io::Result<Device> {
        match self {
            Iface::Group => Device::open_group(GPU_BDF),
            Iface::Iommufd => Device::open_iommufd(GPU_BDF),
        }
    }
}

/// arm64: the guest's /dev, /proc, /sys and /tmp in the arm64 userland (vm-run's init binds them
/// into /mnt/userland only).
fn bind_guest_dirs() -> Outcome {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    for d in ["dev", "proc", "sys", "tmp"] {
        let target = format!("{USERLAND}/{d}");
        if mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(target.as_str()))
        {
            continue;
        }
        let out = Command::new("mount")
            .args(["-o", "rbind", &format!("/{d}"), &target])
            .output()?;
        check!(
            out.status.success(),
            "mount -o rbind /{d} {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The `sh` block of the guide that follows the marker `<!-- tested: NAME -->`.
fn guide_block(guide: &str, name: &str) -> Option<String> {
    let marker = format!("<!-- tested: {name} -->");
    let mut lines = guide.lines().skip_while(|l| l.trim() != marker).skip(1);
    if lines.next()?.trim() != "```sh" {
        return None;
    }
    let body: Vec<&str> = lines.take_while(|l| l.trim() != "```").collect();
    Some(body.join("\n") + "\n")
}

/// The BARs of the emulated memory the driver should present: `[(2, resmem), (4, usemem)]`,
/// resmem only on parts with the MIG bug.
fn memory_bars() -> Option<Vec<(u32, Region)>> {
    let (usemem, resmem) = nvgrace_guest_tests::expected_regions()?;
    let mut bars = Vec::new();
    if let Some(r) = resmem {
        bars.push((region::BAR2, r));
    }
    bars.push((region::BAR4, usemem));
    Some(bars)
}

/// Writes `words` (offset, value) into the first page of `bar` through a mapping of the device.
fn poke(dev: &Device, bar: u32, words: &[(usize, u64)]) -> Outcome {
    let map = mm::mmap_shared(
        &dev.fd,
        u64::from(bar) << VFIO_PCI_OFFSET_SHIFT,
        mm::page_size(),
    )
    .map_err(|e| format!("mmap of BAR{bar}: {e}"))?;
    for &(off, v) in words {
        map.write_u64(off, v);
    }
    Ok(())
}

/// Reads the word at `off` of `bar` through a mapping of the device.
fn peek(dev: &Device, bar: u32, off: usize) -> Result<u64, Failure> {
    let map = mm::mmap_shared(
        &dev.fd,
        u64::from(bar) << VFIO_PCI_OFFSET_SHIFT,
        mm::page_size(),
    )
    .map_err(|e| format!("mmap of BAR{bar}: {e}"))?;
    Ok(map.read_u64(off))
}
/// The address of `bar` in `query-pci`'s entry of the GPU.
fn bar_address(gpu: &Value, bar: u32) -> Result<u64, Failure> {
    Ok(gpu["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["bar"].as_u64() == Some(u64::from(bar)))
        .and_then(|x| x["address"].as_u64())
        .ok_or_else(|| format!("query-pci has no address of BAR{bar}"))?)
}

/// The 64-bit word at guest-physical `addr` of the inner machine, as the monitor's `xp` reads it
/// (through QEMU's memory API: the mapped part of a BAR, or a read of the VFIO region for the
/// rest), and the monitor's text.
fn monitor_xp(qmp: &mut Qmp, addr: u64) -> Result<(Option<u64>, String), Failure> {
    let out = qmp.execute(
        "human-monitor-command",
        json!({ "command-line": format!("xp /1gx {addr:#x}") }),
    )?;
    let text = out.as_str().unwrap_or_default().to_string();
    let word = text
        .split_whitespace()
        .last()
        .and_then(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok());
    Ok((word, text))
}

/// The probes of [`probes`] inside the memory (`inside`) or past its end: the offset the inner
/// kernel read must be the one listed, the word it read and the monitor's `xp` there what the
/// probe says. The words read are observations (the same for both drivers).
fn check_probes(
    m: &Inner,
    qmp: &mut Qmp,
    gpu: &Value,
    iface: Iface,
    bars: &[(u32, Region)],
    inside: bool,
) -> Outcome {
    for &(bar, r) in bars {
        let addr = bar_address(gpu, bar)?;
        let all = probes(iface, bar, r);
        check_eq!(
            m.value(&format!("bar{bar}_probes")),
            Some(all.len() as u64),
            "number of probes the inner kernel found in BAR{bar}"
        );
        for (k, &(off, want)) in all.iter().enumerate() {
            if (off < r.memlength) != inside {
                continue;
            }
            check_eq!(
                m.value(&format!("bar{bar}_off{k}")),
                Some(off),
                "offset of probe {k} of BAR{bar}"
            );
            let read = m.value(&format!("bar{bar}_at{k}"));
            tap::observe(
                &format!("BAR{bar} probe {k} at {off:#x}"),
                read.map_or("none".to_string(), |v| format!("{v:#018x}")),
            );
            check_eq!(
                read,
                Some(want),
                "word at {off:#x} of BAR{bar} (memory {:#x}, BAR {:#x}) as the inner kernel read it",
                r.memlength,
                r.bar_size
            );
            let (word, text) = monitor_xp(qmp, addr + off)?;
            check_eq!(
                word,
                Some(want),
                "monitor xp at {off:#x} of BAR{bar} ({text:?})"
            );
        }
    }
    Ok(())
}

/// The inner machine of the interface under test, from its `_inner_machine_runs` to its
/// `_inner_machine_writes_seen_outside`: the tests' context.
type Ctx = Option<Inner>;

/// One interface, steps 1-4 of the module documentation, as six tests (and on arm64 three of
/// stage 2 before the last).
fn interface_tests<'a>(
    iface: Iface,
    guide: &'a str,
    bars: &'a [(u32, Region)],
) -> Vec<Test<'a, Ctx>> {
    let n = iface.name();
    let device_id = nvgrace_guest_tests::model_device_id(&nvgrace_guest_tests::rig_gpu());
    let stopped = || Failure::Fail("the inner machine did not run (see above)".into());

    let mut tests = vec![
        test(format!("{n}_outer_writes_pattern"), move |_: &mut Ctx| {
            let dev = iface.open()?;
            for &(bar, r) in bars {
                poke(&dev, bar, &[(0, pattern(iface, bar)), (8, 0)])?;
                write_probes(&dev, bar, r, &probes(iface, bar, r))?;
            }
            Ok(())
        }),
        test(format!("{n}_inner_machine_runs"), move |inner: &mut Ctx| {
            let key = format!("qemu-{n}");
            let block =
                guide_block(guide, &key).ok_or_else(|| format!("{GUIDE} has no block {key}"))?;
            let mut m = Inner::start(iface, &block)?;
            let r = m.wait_done();
            *inner = Some(m);
            r
        }),
        test(
            format!("{n}_gpu_and_bars_in_inner_machine"),
            move |inner: &mut Ctx| {
                let m = inner.as_ref().ok_or_else(stopped)?;
                let mut qmp = m.qmp()?;
                let gpu = find_gpu(&mut qmp)?;
                check_eq!(
                    gpu["id"]["vendor"].as_u64(),
                    Some(0x10de),
                    "vendor ID in query-pci"
                );
                check_eq!(
                    gpu["id"]["device"].as_u64(),
                    device_id.map(u64::from),
                    "device ID in query-pci"
                );
                check_eq!(
                    m.value("id"),
                    Some(0x10de | u64::from(device_id.unwrap_or(0)) << 16),
                    "ID the inner kernel read"
                );
                let regions = gpu["regions"].as_array().cloned().unwrap_or_default();
                for &(bar, r) in bars {
                    let Some(reg) = regions
                        .iter()
                        .find(|x| x["bar"].as_u64() == Some(u64::from(bar)))
                    else {
                        fail!("query-pci shows no BAR{bar}: {}", gpu["regions"]);
                    };
                    check_eq!(reg["size"].as_u64(), Some(r.bar_size), "BAR{bar} size");
                    check_eq!(reg["type"].as_str(), Some("memory"), "BAR{bar} type");
                    check_eq!(reg["mem_type_64"].as_bool(), Some(true), "BAR{bar} 64-bit");
                    check_eq!(
                        reg["prefetch"].as_bool(),
                        Some(true),
                        "BAR{bar} prefetchable"
                    );
                    let addr = reg["address"].as_u64().unwrap_or(u64::MAX);
                    let raw = m
                        .value(&format!("bar{bar}"))
                        .ok_or("the inner kernel printed no BAR")?;
                    check_eq!(
                        raw & 0xf,
                        0xc,
                        "BAR{bar} register type bits in the inner machine (64-bit, prefetchable)"
                    );
                    check_eq!(
                        raw & !0xf,
                        addr,
                        "BAR{bar} address: inner kernel's register vs query-pci"
                    );
                    tap::diag(format!(
                        "{n}: BAR{bar} at {addr:#x}, size {:#x}",
                        r.bar_size
                    ));
                }
                Ok(())
            },
        ),
        test(
            format!("{n}_inner_machine_reads_outer_pattern"),
            move |inner: &mut Ctx| {
                let m = inner.as_ref().ok_or_else(stopped)?;
                let mut qmp = m.qmp()?;
                let gpu = find_gpu(&mut qmp)?;
                for &(bar, _) in bars {
                    check_eq!(
                        m.value(&format!("bar{bar}_read")),
                        Some(pattern(iface, bar)),
                        "word 0 of BAR{bar} as the inner kernel read it"
                    );
                    let addr = bar_address(&gpu, bar)?;
                    let (word, text) = monitor_xp(&mut qmp, addr)?;
                    check_eq!(
                        word,
                        Some(pattern(iface, bar)),
                        "monitor xp at BAR{bar} ({text:?})"
                    );
                }
                check_probes(m, &mut qmp, &gpu, iface, bars, true)
            },
        ),
        test(
            format!("{n}_inner_machine_reads_past_the_memory"),
            move |inner: &mut Ctx| {
                if bars.iter().all(|(_, r)| r.bar_size == r.memlength) {
                    return Err(Failure::Skip(
                        "every BAR is exactly its memory in this geometry".into(),
                    ));
                }
                let m = inner.as_ref().ok_or_else(stopped)?;
                let mut qmp = m.qmp()?;
                let gpu = find_gpu(&mut qmp)?;
                check_probes(m, &mut qmp, &gpu, iface, bars, false)
            },
        ),
    ];

    if ARM64 {
        tests.extend(stage2_tests(n, bars));
    }

    tests.push(test(
        format!("{n}_inner_machine_writes_seen_outside"),
        move |inner: &mut Ctx| {
            let mut m = inner.take().ok_or_else(stopped)?;
            if ARM64 {
                m.power_off()?;
            }
            m.quit()?;
            let log = m.qemu_log();
            if !log.trim().is_empty() {
                tap::diag(format!("{n}: QEMU said: {}", log.trim()));
            }
            drop(m);
            let dev = iface.open()?;
            for &(bar, _) in bars {
                check_eq!(
                    peek(&dev, bar, 8)?,
                    !pattern(iface, bar),
                    "word 8 of BAR{bar} after the inner machine wrote it"
                );
            }
            Ok(())
        },
    ));
    tests
}

fn main() {
    let build = std::env::args().nth(1).unwrap_or_default();
    // A path to a .ko (e.g. from vm-run --add, in /opt/extra): a build of the driver changed on
    // purpose, to see the checks fail.
    let module = match build.as_str() {
        "rust" => "/opt/nvgrace/nvgrace-gpu-vfio-pci.ko",
        "upstream" => "/opt/nvgrace/nvgrace-gpu-vfio-pci.upstream.ko",
        m if m.ends_with(".ko") && Path::new(m).exists() => m,
        _ => {
            eprintln!("usage: passthrough_test rust|upstream|MODULE.ko");
            std::process::exit(2);
        }
    };
    let guide = fs::read_to_string(GUIDE).unwrap_or_default();
    let bars = memory_bars().unwrap_or_default();

    let mut tests = vec![test("bind_as_the_guide_says", |_: &mut Ctx| {
        check!(
            Path::new(USERLAND).join("usr/bin").join(QEMU).exists(),
            "no {QEMU} in {USERLAND} (vm-run --userland{})",
            if ARM64 {
                "; tests/passthrough/arm64-userland"
            } else {
                ""
            }
        );
        if ARM64 {
            bind_guest_dirs()?;
        }
        check!(!bars.is_empty(), "no emulated memory for this geometry");
        let block =
            guide_block(&guide, "bind").ok_or_else(|| format!("{GUIDE} has no block bind"))?;
        let out = Command::new("sh")
            .args(["-c", &block])
            .env("BDF", GPU_BDF)
            .env("MODULE", module)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        check!(
            out.status.success(),
            "bind block failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        check_eq!(
            stdout.lines().last(),
            Some(DRIVER_NAME),
            "the bind block's last line"
        );
        check_eq!(
            sys::bound_driver(GPU_BDF),
            Some(DRIVER_NAME.to_string()),
            "driver of {GPU_BDF}"
        );
        Ok(())
    })];

    for iface in [Iface::Group, Iface::Iommufd] {
        tests.extend(interface_tests(iface, &guide, &bars));
    }
    tests.push(test("no_kernel_splat", |_: &mut Ctx| {
        sys::no_kernel_splat()
    }));
    Harness::run_table(&mut None, tests)
}
