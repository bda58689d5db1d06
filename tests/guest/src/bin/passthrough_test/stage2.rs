// SPDX-License-Identifier: GPL-2.0

//! arm64: the inner VM's stage-2 page tables, from KVM's debugfs dump and from
//! tests/passthrough/s2attr (nvgrace_s2attr.ko), checked against the BARs the stub used.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Test;
use nvgrace_guest_tests::vfio::region;
use nvgrace_guest_tests::Region;

use crate::inner::Inner;

/// The stage-2 report module (tests/passthrough/s2attr, arm64 only; build-artifacts puts it with
/// the test programs) and KVM's debugfs directory.
const S2ATTR_MODULE: &str = "/opt/tests/nvgrace_s2attr.ko";
const S2ATTR_WALK: &str = "/sys/kernel/debug/nvgrace_s2attr/walk";
const KVM_DEBUGFS: &str = "/sys/kernel/debug/kvm";

/// One range of KVM's stage-2 dump (arch/arm64/mm/ptdump.c, note_page()):
/// `0x<start>-0x<end>   <size> <level> <bits>`, the bits absent for an unmapped range.
struct DumpRange {
    start: u64,
    end: u64,
    valid: bool,
    rw: bool,
    af: bool,
    line: String,
}

fn parse_kvm_dump(text: &str) -> Vec<DumpRange> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (range, rest) = l.split_once(char::is_whitespace)?;
            let (a, b) = range.split_once('-')?;
            let hex = |x: &str| u64::from_str_radix(x.strip_prefix("0x")?, 16).ok();
            let bits: Vec<&str> = rest.split_whitespace().skip(2).collect();
            Some(DumpRange {
                start: hex(a)?,
                end: hex(b)?,
                valid: !bits.is_empty() && !bits.contains(&"F"),
                rw: bits.contains(&"R") && bits.contains(&"W"),
                af: bits.contains(&"AF"),
                line: l.to_string(),
            })
        })
        .collect()
}

/// One leaf entry as nvgrace_s2attr prints it (see tests/passthrough/s2attr/nvgrace_s2attr.c).
struct S2Leaf {
    ipa: u64,
    size: u64,
    pa: u64,
    mem_type: String,
    s2ap: String,
    line: String,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

fn hex_field(line: &str, key: &str) -> Option<u64> {
    u64::from_str_radix(field(line, key)?.strip_prefix("0x")?, 16).ok()
}

/// The inner VM's directory in KVM's debugfs (`<pid>-<fd>`, virt/kvm/kvm_main.c) and QEMU's pid:
/// the only VM of this guest while the inner machine runs.
fn inner_vm() -> Result<(PathBuf, u32), Failure> {
    let mut vms = Vec::new();
    for e in fs::read_dir(KVM_DEBUGFS).map_err(|e| format!("{KVM_DEBUGFS}: {e}"))? {
        let p = e?.path();
        if p.join("stage2_page_tables").exists() {
            vms.push(p);
        }
    }
    check_eq!(
        vms.len(),
        1,
        "VMs with a stage2_page_tables file in {KVM_DEBUGFS}: {vms:?}"
    );
    let dir = vms.remove(0);
    let name = dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let pid: u32 = name
        .split('-')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{}: not <pid>-<fd>", dir.display()))?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    check!(
        comm.starts_with("qemu-system"),
        "the VM's process {pid} is {comm:?}, not QEMU"
    );
    Ok((dir, pid))
}

/// Loads nvgrace_s2attr if it is not loaded and returns the leaf entries of the VM's stage-2
/// tables, and the report's first line.
fn stage2_leaves(vm: &Path) -> Result<(String, Vec<S2Leaf>), Failure> {
    if !sys::module_loaded("nvgrace_s2attr") {
        let out = Command::new("insmod").arg(S2ATTR_MODULE).output()?;
        check!(
            out.status.success(),
            "insmod {S2ATTR_MODULE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(S2ATTR_WALK)?;
    let req = vm.join("stage2_page_tables");
    f.write_all(req.to_string_lossy().as_bytes())
        .map_err(|e| format!("{S2ATTR_WALK} <- {}: {e}", req.display()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut f, &mut text)?;
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default().to_string();
    check!(head.starts_with("vm "), "nvgrace_s2attr answered {text:?}");
    let mut leaves = Vec::new();
    for l in lines {
        let leaf = (|| {
            Some(S2Leaf {
                ipa: hex_field(l, "ipa")?,
                size: hex_field(l, "size")?,
                pa: hex_field(l, "pa")?,
                mem_type: field(l, "type")?.to_string(),
                s2ap: field(l, "s2ap")?.to_string(),
                line: l.to_string(),
            })
        })()
        .ok_or_else(|| format!("nvgrace_s2attr line {l:?}"))?;
        leaves.push(leaf);
    }
    Ok((head, leaves))
}

fn size_name(size: u64) -> String {
    match size {
        s if s >= 1 << 30 && s % (1 << 30) == 0 => format!("{}G", s >> 30),
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}M", s >> 20),
        s => format!("{}K", s >> 10),
    }
}

/// arm64: the inner VM's stage-2 mappings of the GPU memory, while the stub spins after its
/// accesses (the stage-2 entries of the BARs exist from its first access on).
pub(crate) fn stage2_tests<'a>(
    n: &'static str,
    bars: &'a [(u32, Region)],
) -> Vec<Test<'a, Option<Inner>>> {
    let stopped = || Failure::Fail("the inner machine did not run (see above)".into());
    let bar_ipa = |m: &Inner, bar: u32| -> Result<u64, Failure> {
        Ok(m.value(&format!("bar{bar}"))
            .ok_or_else(|| format!("the inner kernel printed no BAR{bar}"))?
            & !0xf)
    };

    let mut tests = vec![test(
        format!("{n}_stage2_dump_maps_gpu_memory"),
        move |inner: &mut Option<Inner>| {
            let m = inner.as_ref().ok_or_else(stopped)?;
            let (vm, pid) = inner_vm()?;
            let dump = fs::read_to_string(vm.join("stage2_page_tables"))
                .map_err(|e| format!("{}: {e}", vm.display()))?;
            let ranges = parse_kvm_dump(&dump);
            let levels = fs::read_to_string(vm.join("stage2_levels")).unwrap_or_default();
            let ipa_bits = fs::read_to_string(vm.join("ipa_range")).unwrap_or_default();
            tap::diag(format!(
                "{n}: {} ({} lines; {} IPA bits, {} levels)",
                vm.display(),
                dump.lines().count(),
                ipa_bits.trim(),
                levels.trim()
            ));
            for &(bar, r) in bars {
                let ipa = bar_ipa(m, bar)?;
                for l in ranges
                    .iter()
                    .filter(|l| l.valid && l.start < ipa + r.bar_size && l.end > ipa)
                {
                    tap::diag(format!(
                        "{n}: BAR{bar} (IPA {ipa:#x}) in KVM's dump: {}",
                        l.line
                    ));
                }
                let Some(first) = ranges.iter().find(|l| l.start <= ipa && ipa + 16 <= l.end)
                else {
                    fail!("KVM's dump has no range holding BAR{bar}'s first words at IPA {ipa:#x}:\n{dump}");
                };
                check!(
                first.valid && first.rw && first.af,
                "BAR{bar}'s first page at IPA {ipa:#x} is not mapped read-write (with AF) at stage 2: {}",
                first.line
            );
            }
            // Where QEMU mapped the BARs (the stage-1 side of the block-size question).
            let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            for l in maps.lines().filter(|l| l.contains("vfio")) {
                tap::diag(format!("{n}: QEMU mapping: {l}"));
            }
            Ok(())
        },
    )];

    for (name, bar_index, want) in [
        ("usemem_write_back", region::BAR4, "normal-wb"),
        ("resmem_normal_nc", region::BAR2, "normal-nc"),
    ] {
        tests.push(test(format!("{n}_stage2_{name}"), move |inner: &mut Option<Inner>| {
            let m = inner.as_ref().ok_or_else(stopped)?;
            let Some(&(bar, r)) = bars.iter().find(|(b, _)| *b == bar_index) else {
                return Err(Failure::Skip(format!("no BAR{bar_index} memory on this GPU")));
            };
            let ipa = bar_ipa(m, bar)?;
            let (vm, _) = inner_vm()?;
            let (head, leaves) = stage2_leaves(&vm)?;
            if want == "normal-wb" {
                // KVM maps memory without struct pages cacheable only with FEAT_S2FWB (and
                // DIC): kvm_supports_cacheable_pfnmap().
                check_eq!(field(&head, "fwb"), Some("1"), "stage-2 FWB ({head})");
            }
            let (lo, hi) = (r.memphys, r.memphys + r.memlength);
            let mine: Vec<&S2Leaf> = leaves
                .iter()
                .filter(|l| l.pa < hi && l.pa + l.size > lo)
                .collect();
            check!(
                mine.iter().any(|l| l.pa <= lo && lo < l.pa + l.size),
                "no stage-2 entry maps BAR{bar}'s memory at {lo:#x} (the stub read it); {} entries:\n{}",
                leaves.len(),
                leaves.iter().map(|l| l.line.as_str()).collect::<Vec<_>>().join("\n")
            );
            let mut sizes = std::collections::BTreeMap::new();
            for l in &mine {
                tap::diag(format!("{n}: BAR{bar} stage 2: {}", l.line));
                *sizes.entry(l.size).or_insert(0u32) += 1;
                check_eq!(
                    l.ipa.wrapping_sub(ipa),
                    l.pa.wrapping_sub(lo),
                    "offset into BAR{bar} (IPA {ipa:#x}) vs into its memory ({lo:#x}): {}",
                    l.line
                );
                check_eq!(l.mem_type.as_str(), want, "stage-2 memory type of BAR{bar}: {}", l.line);
                check_eq!(l.s2ap.as_str(), "rw", "stage-2 access of BAR{bar}: {}", l.line);
            }
            tap::diag(format!(
                "{n}: BAR{bar} ({}) stage-2 entries: {}; {head}",
                if bar == region::BAR4 { "usemem" } else { "resmem" },
                sizes
                    .iter()
                    .map(|(s, c)| format!("{c} x {}", size_name(*s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            Ok(())
        }));
    }
    tests
}
