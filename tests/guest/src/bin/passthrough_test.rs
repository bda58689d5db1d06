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
//!    pattern word at offset 0 of each, then closes the device;
//! 2. QEMU starts the inner machine (q35, TCG) with the small kernel of tests/passthrough/stub.c,
//!    which runs after the firmware has assigned the BARs: it reads word 0 of BAR2 and BAR4 at
//!    their guest-physical addresses and writes the complement at offset 8 (its serial output
//!    says what it saw);
//! 3. over QMP: `query-pci` shows 10de:<device> with BAR2 and BAR4 of the emulated sizes, 64-bit
//!    prefetchable, at the addresses the inner kernel used; the monitor's `xp` reads the pattern
//!    at the BAR4 address; then `quit`;
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
use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::vfio::region;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::vfio::VFIO_PCI_OFFSET_SHIFT;
use nvgrace_guest_tests::Region;
use nvgrace_guest_tests::DRIVER_NAME;
use nvgrace_guest_tests::GPU_BDF;
use serde_json::json;
use serde_json::Value;

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

/// The stage-2 report module (tests/passthrough/s2attr, arm64 only; build-artifacts puts it with
/// the test programs) and KVM's debugfs directory.
const S2ATTR_MODULE: &str = "/opt/tests/nvgrace_s2attr.ko";
const S2ATTR_WALK: &str = "/sys/kernel/debug/nvgrace_s2attr/walk";
const KVM_DEBUGFS: &str = "/sys/kernel/debug/kvm";

/// The inner machine boots under TCG inside this TCG guest; firmware plus the small kernel take
/// tens of seconds. Generous bounds: a run that exceeds them is a failure, not a slow pass.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const QUIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The pattern words this program writes at offset 0 of each BAR (distinct per interface so a
/// stale value from the previous run cannot pass).
fn pattern(iface: Iface, bar: u32) -> u64 {
    let seed = 0x4e56_4752_4143_4500 | (iface as u64) << 4 | u64::from(bar);
    u64::from_le_bytes(mm::pattern(seed, 0, 8).try_into().unwrap_or([0x5a; 8]))
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

/// A minimal QMP client (docs/interop/qmp-spec.rst): one JSON object per line, asynchronous
/// events skipped. serde_json parses; the protocol itself is three lines.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Self, Failure> {
        let stream =
            UnixStream::connect(path).map_err(|e| format!("QMP {}: {e}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = qmp.read()?;
        check!(greeting.get("QMP").is_some(), "no QMP greeting: {greeting}");
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value, Failure> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                fail!("QMP connection closed");
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| format!("QMP: {e}: {line}"))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, Failure> {
        let req = json!({ "execute": cmd, "arguments": args });
        writeln!(self.writer, "{req}")?;
        let resp = self.read()?;
        match resp.get("return") {
            Some(r) => Ok(r.clone()),
            None => fail!("QMP {cmd}: {resp}"),
        }
    }
}

/// The inner machine: QEMU in the Debian userland, in its own process group.
struct Inner {
    child: Child,
    dir: PathBuf,
}

impl Inner {
    fn start(iface: Iface, block: &str) -> Result<Self, Failure> {
        let dir = PathBuf::from(format!("/tmp/passthrough-{}", iface.name()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        fs::copy(STUB, dir.join("stub.elf")).map_err(|e| format!("{STUB}: {e}"))?;
        let log = fs::File::create(dir.join("qemu.log"))?;
        let guest = format!(
            "-kernel {0}/stub.elf -serial file:{0}/serial.log",
            dir.display()
        );
        let child = Command::new("chroot")
            .arg(USERLAND)
            .args(["/bin/sh", "-c", block])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("QEMU", QEMU)
            .env("MACHINE", MACHINE)
            .env("MEM", MEM)
            .env("BDF", GPU_BDF)
            .env("QMP", dir.join("qmp.sock"))
            .env("GUEST", guest)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("chroot {USERLAND} sh: {e}"))?;
        Ok(Inner { child, dir })
    }

    fn serial(&self) -> String {
        fs::read_to_string(self.dir.join("serial.log")).unwrap_or_default()
    }

    fn qemu_log(&self) -> String {
        fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default()
    }

    /// Waits for the inner kernel's `stub: done`; fails if QEMU exits first or time runs out.
    fn wait_done(&mut self) -> Outcome {
        let start = Instant::now();
        loop {
            let serial = self.serial();
            if serial.contains("stub: error") {
                fail!(
                    "the inner kernel failed\nQEMU: {}\nserial: {serial}",
                    self.qemu_log()
                );
            }
            if serial.contains("stub: done") {
                tap::diag(format!(
                    "inner machine done after {:.1} s",
                    start.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            if let Some(st) = self.child.try_wait()? {
                fail!(
                    "QEMU exited ({st}) before the inner kernel finished\nQEMU: {}\nserial: {serial}",
                    self.qemu_log()
                );
            }
            if start.elapsed() > BOOT_TIMEOUT {
                fail!(
                    "the inner kernel did not finish within {BOOT_TIMEOUT:?}\nQEMU: {}\nserial: {serial}",
                    self.qemu_log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `key=0x...` values the inner kernel printed.
    fn value(&self, key: &str) -> Option<u64> {
        let prefix = format!("stub: {key}=0x");
        self.serial()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    }

    fn qmp(&self) -> Result<Qmp, Failure> {
        Qmp::connect(&self.dir.join("qmp.sock"))
    }

    /// arm64: the power button (QMP `system_powerdown`), which the stub answers with PSCI
    /// SYSTEM_OFF; QEMU must then exit by itself, successfully.
    fn power_off(&mut self) -> Outcome {
        let start = Instant::now();
        self.qmp()?.execute("system_powerdown", json!({}))?;
        loop {
            if let Some(st) = self.child.try_wait()? {
                check!(
                    st.success(),
                    "QEMU exited with {st} after the power button\nQEMU: {}",
                    self.qemu_log()
                );
                break;
            }
            if start.elapsed() > QUIT_TIMEOUT {
                fail!(
                    "QEMU still running {QUIT_TIMEOUT:?} after the power button\nserial: {}",
                    self.serial()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        check!(
            self.serial().contains("stub: power-off"),
            "QEMU exited but the stub did not power off: {}",
            self.serial()
        );
        tap::diag(format!(
            "inner machine powered off (PSCI SYSTEM_OFF) {:.1} s after the power button",
            start.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// QMP `quit`, then waits for QEMU to exit.
    fn quit(&mut self) -> Outcome {
        if self.child.try_wait()?.is_none() {
            // QEMU may close the connection before it answers.
            if let Ok(mut q) = self.qmp() {
                let _ = q.execute("quit", json!({}));
            }
        }
        let start = Instant::now();
        while self.child.try_wait()?.is_none() {
            if start.elapsed() > QUIT_TIMEOUT {
                fail!("QEMU still running {QUIT_TIMEOUT:?} after quit");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: Signals the process group this object started; no memory is involved.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// The device's entry in `query-pci`.
fn find_gpu(qmp: &mut Qmp) -> Result<Value, Failure> {
    let buses = qmp.execute("query-pci", json!({}))?;
    for bus in buses.as_array().into_iter().flatten() {
        for dev in bus["devices"].as_array().into_iter().flatten() {
            if dev["qdev_id"] == "gpu0" {
                return Ok(dev.clone());
            }
        }
    }
    fail!("query-pci has no device gpu0: {buses}")
}

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
fn stage2_tests(t: &mut Harness, n: &str, inner: Option<&Inner>, bars: &[(u32, Region)]) {
    let stopped = || Failure::Fail("the inner machine did not run (see above)".into());
    let bar_ipa = |m: &Inner, bar: u32| -> Result<u64, Failure> {
        Ok(m.value(&format!("bar{bar}"))
            .ok_or_else(|| format!("the inner kernel printed no BAR{bar}"))?
            & !0xf)
    };

    t.test(&format!("{n}_stage2_dump_maps_gpu_memory"), || {
        let m = inner.ok_or_else(stopped)?;
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
            for l in ranges.iter().filter(|l| l.valid && l.start < ipa + r.bar_size && l.end > ipa) {
                tap::diag(format!("{n}: BAR{bar} (IPA {ipa:#x}) in KVM's dump: {}", l.line));
            }
            let Some(first) = ranges.iter().find(|l| l.start <= ipa && ipa + 16 <= l.end) else {
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
    });

    for (name, bar_index, want) in [
        ("usemem_write_back", region::BAR4, "normal-wb"),
        ("resmem_normal_nc", region::BAR2, "normal-nc"),
    ] {
        t.test(&format!("{n}_stage2_{name}"), || {
            let m = inner.ok_or_else(stopped)?;
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
        });
    }
}

/// One interface, steps 1-4 of the module documentation, as five tests.
fn run_interface(t: &mut Harness, iface: Iface, guide: &str, bars: &[(u32, Region)]) {
    let n = iface.name();
    let device_id = nvgrace_guest_tests::model_device_id(&nvgrace_guest_tests::rig_gpu());
    let mut inner: Option<Inner> = None;
    let stopped = || Failure::Fail("the inner machine did not run (see above)".into());

    t.test(&format!("{n}_outer_writes_pattern"), || {
        let dev = iface.open()?;
        for &(bar, _) in bars {
            poke(&dev, bar, &[(0, pattern(iface, bar)), (8, 0)])?;
        }
        Ok(())
    });

    t.test(&format!("{n}_inner_machine_runs"), || {
        let key = format!("qemu-{n}");
        let block =
            guide_block(guide, &key).ok_or_else(|| format!("{GUIDE} has no block {key}"))?;
        let mut m = Inner::start(iface, &block)?;
        let r = m.wait_done();
        inner = Some(m);
        r
    });

    t.test(&format!("{n}_gpu_and_bars_in_inner_machine"), || {
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
    });

    t.test(&format!("{n}_inner_machine_reads_outer_pattern"), || {
        let m = inner.as_ref().ok_or_else(stopped)?;
        let mut qmp = m.qmp()?;
        let gpu = find_gpu(&mut qmp)?;
        for &(bar, _) in bars {
            check_eq!(
                m.value(&format!("bar{bar}_read")),
                Some(pattern(iface, bar)),
                "word 0 of BAR{bar} as the inner kernel read it"
            );
            let addr = gpu["regions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["bar"].as_u64() == Some(u64::from(bar)))
                .and_then(|x| x["address"].as_u64())
                .ok_or("no BAR address")?;
            let out = qmp.execute(
                "human-monitor-command",
                json!({ "command-line": format!("xp /1gx {addr:#x}") }),
            )?;
            let text = out.as_str().unwrap_or_default();
            let word = text
                .split_whitespace()
                .last()
                .and_then(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok());
            check_eq!(
                word,
                Some(pattern(iface, bar)),
                "monitor xp at BAR{bar} ({text:?})"
            );
        }
        Ok(())
    });

    if ARM64 {
        stage2_tests(t, n, inner.as_ref(), bars);
    }

    t.test(&format!("{n}_inner_machine_writes_seen_outside"), || {
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
    });
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
    // Per interface: five tests, and on arm64 three of stage 2.
    let mut t = Harness::new(2 + 2 * if ARM64 { 8 } else { 5 });
    let guide = fs::read_to_string(GUIDE).unwrap_or_default();
    let bars = memory_bars().unwrap_or_default();

    t.test("bind_as_the_guide_says", || {
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
    });

    for iface in [Iface::Group, Iface::Iommufd] {
        run_interface(&mut t, iface, &guide, &bars);
    }
    t.test("no_kernel_splat", sys::no_kernel_splat);
    t.finish()
}
