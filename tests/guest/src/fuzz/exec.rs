// SPDX-License-Identifier: GPL-2.0

//! Running the fuzzer's operations on the device and comparing with the model.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::hash::Hasher;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::gen::*;
use super::model::*;
use super::*;
use crate::differences::Build;
use crate::gpumem::PCI_COMMAND;
use crate::gpumem::PCI_COMMAND_MEMORY;
use crate::mm;
use crate::mm::ChildEnd;
use crate::tap;
use crate::vfio::ioctl;
use crate::vfio::Device;
use crate::Region;
use crate::GPU_BDF;

// ---------------------------------------------------------------------------------------------
// Running operations.

/// The kinds of operations, one TAP test each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cat {
    ReadWrite,
    Mmap,
    Ioctl,
    Config,
    Reset,
}

pub const CATS: [(Cat, &str); 5] = [
    (Cat::ReadWrite, "read_write"),
    (Cat::Mmap, "mmap_and_touch"),
    (Cat::Ioctl, "ioctls"),
    (Cat::Config, "config_space_writes"),
    (Cat::Reset, "resets_and_reopens"),
];

/// Failure messages kept per kind (the rest are counted).
pub const KEEP_FAILURES: usize = 8;

/// A page shared with forked children: they report how many touches they completed and the
/// first wrong value they read.
pub struct Report(pub mm::Mapping);

impl Report {
    pub fn new() -> io::Result<Self> {
        // SAFETY: A new anonymous shared mapping; nothing is overwritten.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mm::page_size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `p` is a page-sized mapping this process owns; `Mapping` unmaps it on drop.
        Ok(Report(unsafe {
            mm::Mapping::from_raw(p as usize, mm::page_size())
        }))
    }
}

/// The fuzzer's state: the device, the model and the results so far.
pub struct Fuzzer {
    pub dev: Option<Device>,
    pub layout: Layout,
    pub state: State,
    pub shadow: Shadow,
    /// A 2 MiB `PROT_NONE` reservation: a buffer the kernel cannot copy to or from.
    pub bad: mm::Mapping,
    pub report: Report,
    pub failures: HashMap<&'static str, (usize, Vec<String>)>,
    pub counts: HashMap<&'static str, u64>,
    /// A digest of every result, for comparing runs of the same seed.
    pub digest: u64,
    /// Per kind of operation ([`cat_name`]): the results noted and their digest.
    pub digests: HashMap<&'static str, (u64, u64)>,
    /// `--trace`: what went into the digest for the current operation.
    pub tracing: bool,
    pub noted: Vec<String>,
}

pub fn errno_of(r: isize) -> Result<usize, i32> {
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r as usize)
    }
}

/// `prev` with `v` folded in (std's SipHash with its fixed keys: the same in every run of one
/// binary, which is what both builds run).
pub fn fold(prev: u64, v: &impl Hash) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    prev.hash(&mut h);
    v.hash(&mut h);
    h.finish()
}

pub fn cat_name(c: Cat) -> &'static str {
    CATS.iter()
        .find(|(k, _)| *k == c)
        .map(|(_, n)| *n)
        .unwrap_or("?")
}

impl Fuzzer {
    pub fn dev(&self) -> &Device {
        self.dev
            .as_ref()
            .expect("the device is open between operations")
    }

    pub fn fd(&self) -> i32 {
        self.dev().fd.as_raw_fd()
    }

    pub fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    /// Adds one result of an operation of kind `cat` to the digests (the run's and the kind's).
    pub fn note(&mut self, cat: Cat, v: impl Hash + std::fmt::Debug) {
        if self.tracing {
            self.noted.push(format!("{v:?}"));
        }
        self.digest = fold(self.digest, &v);
        let d = self.digests.entry(cat_name(cat)).or_default();
        d.0 += 1;
        d.1 = fold(d.1, &v);
    }

    /// Adds a result whose expected value is `want` under this build's rules and `other` under
    /// the other build's: the result itself when both builds should return the same (both must
    /// then have returned it for the digests to agree), else only whether it was this build's
    /// (a listed difference: the values differ by design).
    pub fn note_result<T: Hash + PartialEq + std::fmt::Debug>(
        &mut self,
        cat: Cat,
        tag: u8,
        got: &T,
        want: &T,
        other: &T,
    ) {
        if want == other {
            self.note(cat, (tag, got));
        } else {
            self.note(cat, (tag, "listed difference", got == want));
        }
    }

    pub fn fail(&mut self, cat: Cat, i: u64, op: &Op, msg: String) {
        let e = self.failures.entry(cat_name(cat)).or_default();
        e.0 += 1;
        if e.1.len() < KEEP_FAILURES {
            e.1.push(format!("iteration {i}: {}: {msg}", op.describe()));
        }
    }

    /// Reads Memory Space Enable back from config space (after anything that may change it).
    pub fn sync_command(&mut self) -> io::Result<()> {
        let cmd = self.dev().config_read16(PCI_COMMAND)?;
        self.state.mem_enabled = cmd & PCI_COMMAND_MEMORY != 0;
        Ok(())
    }

    /// After a result the model did not expect, brings the device and the model back in step:
    /// memory enabled, the readiness check done, low power left.
    pub fn resync(&mut self) -> io::Result<()> {
        let cmd = self.dev().config_read16(PCI_COMMAND)?;
        self.dev()
            .config_write::<2>(PCI_COMMAND, (cmd | PCI_COMMAND_MEMORY).to_le_bytes())?;
        let mut b = [0u8; 1];
        let _ = self.dev().fd.read_at_raw(&mut b, (4u64 << SHIFT) as i64);
        let _ = self.dev().set_feature(FEATURE_LOW_POWER_EXIT);
        self.state = State {
            mem_enabled: true,
            reset_pending: false,
            low_power: false,
        };
        Ok(())
    }

    pub fn run(&mut self, i: u64, op: &Op) -> io::Result<()> {
        match op {
            Op::Read { pos, count, bad } => self.read(i, op, *pos, *count, *bad),
            Op::Write { pos, data, bad } => self.write(i, op, *pos, data, *bad),
            Op::Mmap {
                off,
                len,
                prot,
                flags,
                touches,
            } => self.mmap(i, op, *off, *len, *prot, *flags, touches),
            Op::Ioctl(io) => self.ioctl(i, op, io),
            Op::ConfigWrite { off, data } => self.config_write(i, op, *off, data),
            Op::MemoryEnable(on) => {
                self.count("memory enable");
                let cmd = self.dev().config_read16(PCI_COMMAND)?;
                let new = if *on {
                    cmd | PCI_COMMAND_MEMORY
                } else {
                    cmd & !PCI_COMMAND_MEMORY
                };
                self.dev()
                    .config_write::<2>(PCI_COMMAND, new.to_le_bytes())?;
                self.sync_command()?;
                self.note(Cat::Config, (7u8, self.state.mem_enabled));
                if self.state.mem_enabled != *on {
                    self.fail(
                        Cat::Config,
                        i,
                        op,
                        "Memory Space Enable did not take".into(),
                    );
                }
                Ok(())
            }
            Op::Reset => {
                self.count("reset");
                let r = self.dev().reset();
                self.note(Cat::Reset, r.as_ref().map_err(|e| e.raw_os_error()).is_ok());
                match r {
                    Ok(()) => self.state.reset_pending = true,
                    Err(e) => self.fail(Cat::Reset, i, op, format!("failed: {e}")),
                }
                Ok(())
            }
            Op::Reopen => {
                self.count("reopen");
                self.dev = None;
                match Device::open_iommufd(GPU_BDF) {
                    Ok(d) => self.dev = Some(d),
                    Err(e) => {
                        // Try once more so the run can go on and report.
                        self.fail(Cat::Reset, i, op, format!("reopen failed: {e}"));
                        self.dev = Some(Device::open_iommufd(GPU_BDF)?);
                    }
                }
                // Opening resets the function (vfio_pci_core_enable()), and closing left low
                // power.
                self.state.reset_pending = true;
                self.state.low_power = false;
                self.sync_command()?;
                self.note(Cat::Reset, (8u8, self.state.mem_enabled));
                Ok(())
            }
        }
    }

    pub fn buffer(&self, bad: bool, len: usize) -> (*mut u8, Vec<u8>) {
        let mut buf = vec![0xa5u8; len.max(1)];
        let p = if bad {
            self.bad.addr() as *mut u8
        } else {
            buf.as_mut_ptr()
        };
        (p, buf)
    }

    pub fn read(&mut self, i: u64, op: &Op, pos: i64, count: usize, bad: bool) -> io::Result<()> {
        self.count("pread");
        let before = self.state;
        let (other, _) = expect_read(
            &self.layout.other_build(),
            &mut before.clone(),
            &self.shadow,
            pos,
            count,
            bad,
        );
        let (want, bytes) =
            expect_read(&self.layout, &mut self.state, &self.shadow, pos, count, bad);
        let (p, buf) = self.buffer(bad, count);
        // SAFETY: `p` is `count` writable bytes of `buf`, or the PROT_NONE reservation (at least
        // MAX_BUF bytes, which the kernel cannot write: the read fails with EFAULT).
        let got = errno_of(unsafe { libc::pread(self.fd(), p.cast(), count, pos) });
        // The bytes read count too, from GPU memory and BAR0 (config space holds what the
        // builds' different config writes left there, difference 1).
        let data = match (
            got,
            split(pos, count).map(|(index, _)| self.layout.kind(index)),
        ) {
            (Ok(n), Ok(Kind::Emulated(_) | Kind::Bar0)) => fold(0, &&buf[..n.min(buf.len())]),
            _ => 0,
        };
        self.note_result(
            Cat::ReadWrite,
            0,
            &(got, data),
            &(want, data),
            &(other, data),
        );
        if got != want {
            self.fail(
                Cat::ReadWrite,
                i,
                op,
                format!(
                    "got {}, expected {} (state before {before:?})",
                    show(&got),
                    show(&want)
                ),
            );
            return self.resync();
        }
        let Ok(n) = got else { return Ok(()) };
        let (index, off) = split(pos, count).unwrap_or((0, 0));
        let mut wrong = None;
        for (k, want) in bytes.iter().enumerate().take(n) {
            if let Some(w) = want {
                if buf[k] != *w {
                    wrong = Some((k, buf[k], *w));
                    break;
                }
            }
        }
        if let Some((k, g, w)) = wrong {
            self.fail(
                Cat::ReadWrite,
                i,
                op,
                format!(
                    "byte {k} (region offset {:#x}) is {g:#04x}, expected {w:#04x}",
                    off + k as u64
                ),
            );
            if let Kind::Emulated(_) = self.layout.kind(index) {
                self.shadow.forget(index, off, n as u64);
            }
            return Ok(());
        }
        // Learn what was read from memory, so that later reads and touches are checked too.
        if let Kind::Emulated(r) = self.layout.kind(index) {
            if n <= LEARN_MAX && off < r.memlength {
                let mc = (n as u64).min(r.memlength - off) as usize;
                self.shadow.set(index, off, &buf[..mc]);
            }
        }
        Ok(())
    }

    pub fn write(&mut self, i: u64, op: &Op, pos: i64, data: &[u8], bad: bool) -> io::Result<()> {
        self.count("pwrite");
        let before = self.state;
        let (other, _) = expect_write(
            &self.layout.other_build(),
            &mut before.clone(),
            pos,
            data.len(),
            bad,
        );
        let (want, lands) = expect_write(&self.layout, &mut self.state, pos, data.len(), bad);
        let p = if bad {
            self.bad.addr() as *const u8
        } else {
            data.as_ptr()
        };
        // SAFETY: `p` is `data.len()` readable bytes, or the PROT_NONE reservation, which the
        // kernel cannot read (EFAULT).
        let got = errno_of(unsafe { libc::pwrite(self.fd(), p.cast(), data.len(), pos) });
        self.note_result(Cat::ReadWrite, 1, &got, &want, &other);
        if got != want {
            self.fail(
                Cat::ReadWrite,
                i,
                op,
                format!(
                    "got {}, expected {} (state before {before:?})",
                    show(&got),
                    show(&want)
                ),
            );
            if let Ok((index, off)) = split(pos, data.len()) {
                if let Kind::Emulated(_) = self.layout.kind(index) {
                    self.shadow.forget(index, off, data.len() as u64);
                }
            }
            return self.resync();
        }
        match lands {
            Some(Lands::Data { index, off, len }) => self.shadow.set(index, off, &data[..len]),
            Some(Lands::Zeros { index, off, len }) => {
                self.shadow.set(index, off, &vec![0; len]);
                self.count("EFAULT write zero-filled usemem");
            }
            None => {}
        }
        if let Ok((7, off)) = split(pos, data.len()) {
            self.after_config_write(off, data)?;
        }
        Ok(())
    }

    /// What a config write may have changed: Memory Space Enable, and an FLR through the PCIe
    /// Device Control register (vfio-pci-core virtualises Initiate FLR and resets the function,
    /// `vfio_exp_config_write()`).
    pub fn after_config_write(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        if (off..off + data.len() as u64).contains(&DEVCTL_HI)
            && data[(DEVCTL_HI - off) as usize] & 0x80 != 0
        {
            self.state.reset_pending = true;
            self.count("FLR via config space");
        }
        self.sync_command()
    }

    pub fn config_write(&mut self, i: u64, op: &Op, off: u64, data: &[u8]) -> io::Result<()> {
        self.count("config write");
        let want = expect_config_write(&self.layout, off, data.len(), false);
        let other = expect_config_write(&self.layout.other_build(), off, data.len(), false);
        let got = errno_of(
            // SAFETY: `data` is `data.len()` readable bytes.
            unsafe {
                libc::pwrite(
                    self.fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    ((7u64 << SHIFT) + off) as i64,
                )
            },
        );
        self.note_result(Cat::Config, 2, &got, &want, &other);
        if got != want {
            self.fail(
                Cat::Config,
                i,
                op,
                format!("got {}, expected {}", show(&got), show(&want)),
            );
        }
        if got.is_ok() {
            self.after_config_write(off, data)?;
        }
        Ok(())
    }

    /// The signal one touch of a mapping with protection `prot` is expected to end with
    /// (SIGSEGV: not allowed by `prot`; SIGBUS: the fault fails, vfio_pci_vmf_insert_pfn() and
    /// the driver's fault handler), or `None` when it succeeds. Write permission implies read
    /// permission: on x86 (no write-only pages) and on arm64 (`protection_map[VM_SHARED |
    /// VM_WRITE]` is `PAGE_SHARED`, arch/arm64/mm/mmap.c), and the touches are of shared mappings.
    pub fn expect_touch(&self, prot: i32, t: &Touch) -> Option<i32> {
        let readable = prot & (libc::PROT_READ | libc::PROT_WRITE) != 0;
        let ok = match t.write {
            Some(_) => prot & libc::PROT_WRITE != 0,
            None => readable,
        };
        if !ok {
            return Some(libc::SIGSEGV);
        }
        if self.state.low_power || !self.state.mem_enabled {
            return Some(libc::SIGBUS);
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    pub fn mmap(
        &mut self,
        i: u64,
        op: &Op,
        off: i64,
        len: u64,
        prot: i32,
        flags: i32,
        touches: &[Touch],
    ) -> io::Result<()> {
        self.count("mmap");
        let want = expect_mmap(&self.layout, off, len, flags);
        let other = expect_mmap(&self.layout.other_build(), off, len, flags);
        // SAFETY: A new mapping at an address the kernel chooses; nothing is overwritten.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                prot,
                flags,
                self.fd(),
                off as libc::off_t,
            )
        };
        let got = if p == libc::MAP_FAILED {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(())
        };
        self.note_result(Cat::Mmap, 3, &got, &want, &other);
        if got != want {
            let msg = format!(
                "got {}, expected {}",
                got.map_or_else(|e| show(&Err(e)), |_| "a mapping".into()),
                want.map_or_else(|e| show(&Err(e)), |_| "a mapping".into())
            );
            self.fail(Cat::Mmap, i, op, msg);
        }
        if got.is_err() {
            return Ok(());
        }
        let alen = len.div_ceil(page_bytes()) * page_bytes();
        // SAFETY: The mapping just made, of `alen` bytes; `Mapping` unmaps it on drop.
        let map = unsafe { mm::Mapping::from_raw(p as usize, alen as usize) };
        let shared = flags & 0xf != libc::MAP_PRIVATE;
        if touches.is_empty() || !shared || want.is_err() {
            return Ok(());
        }
        let pos = off as u64;
        let (index, start) = (pos >> SHIFT, pos & (REGION_SPAN - 1));
        // The touches up to the first that is expected to fail.
        let mut plan = Vec::new();
        let mut last_sig = None;
        for t in touches {
            plan.push(*t);
            if let Some(sig) = self.expect_touch(prot, t) {
                last_sig = Some(sig);
                break;
            }
        }
        let kind = self.layout.kind(index);
        let expected: Vec<Option<u64>> = plan
            .iter()
            .map(|t| {
                if t.write.is_some() {
                    return None;
                }
                let at = start + t.off;
                let bytes: Option<Vec<u8>> = (0..t.width as u64)
                    .map(|k| match kind {
                        Kind::Emulated(_) => self.shadow.get(index, at + k),
                        Kind::Bar0 => Some(bar0_byte(at + k)),
                        _ => None,
                    })
                    .collect();
                bytes.map(|b| {
                    let mut v = [0u8; 8];
                    v[..b.len()].copy_from_slice(&b);
                    u64::from_le_bytes(v)
                })
            })
            .collect();
        self.count("touch");
        let report = self.report.0.addr();
        // SAFETY: The report page is ours and mapped.
        unsafe { std::ptr::write_bytes(report as *mut u8, 0, 32) };
        let base = map.addr();
        let mut child = mm::fork_child(|| {
            // One fault, one signal (see mm::touch_in_child).
            // SAFETY: Resets signal dispositions in this single-threaded child.
            unsafe {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            }
            let slot = |k: usize| (report + 8 * k) as *mut u64;
            for (n, t) in plan.iter().enumerate() {
                let a = base + t.off as usize;
                // SAFETY: `a` lies in the mapping the child inherited (touch offsets are drawn
                // inside it); a failing access raises the signal the parent expects.
                let v = unsafe {
                    match (t.width, t.write) {
                        (1, Some(v)) => {
                            std::ptr::write_volatile(a as *mut u8, v as u8);
                            0
                        }
                        (2, Some(v)) => {
                            std::ptr::write_volatile(a as *mut u16, v as u16);
                            0
                        }
                        (4, Some(v)) => {
                            std::ptr::write_volatile(a as *mut u32, v as u32);
                            0
                        }
                        (_, Some(v)) => {
                            std::ptr::write_volatile(a as *mut u64, v);
                            0
                        }
                        (1, None) => u64::from(std::ptr::read_volatile(a as *const u8)),
                        (2, None) => u64::from(std::ptr::read_volatile(a as *const u16)),
                        (4, None) => u64::from(std::ptr::read_volatile(a as *const u32)),
                        _ => std::ptr::read_volatile(a as *const u64),
                    }
                };
                if let Some(w) = expected[n] {
                    if v != w {
                        // SAFETY: The report page is shared with the parent.
                        unsafe {
                            *slot(1) = n as u64 + 1;
                            *slot(2) = v;
                            *slot(3) = w;
                        }
                        return 1;
                    }
                }
                // SAFETY: As above.
                unsafe { *slot(0) = n as u64 + 1 };
            }
            0
        })?;
        let end = child.wait_timeout(Duration::from_secs(60))?;
        // SAFETY: The report page is ours; the child has ended.
        let rep: [u64; 4] = unsafe { std::ptr::read_volatile(report as *const [u64; 4]) };
        let done = rep[0] as usize;
        self.note(Cat::Mmap, (4u8, format!("{end}"), done));
        let want_end = match last_sig {
            Some(sig) => ChildEnd::Signaled(sig),
            None => ChildEnd::Exited(0),
        };
        let want_done = if last_sig.is_some() {
            plan.len() - 1
        } else {
            plan.len()
        };
        // Writes that completed landed in memory; a fault that succeeded did the readiness check.
        for t in &plan[..done.min(plan.len())] {
            if let (Some(v), Kind::Emulated(_)) = (t.write, kind) {
                self.shadow
                    .set(index, start + t.off, &v.to_le_bytes()[..t.width]);
            }
        }
        if done > 0 && matches!(kind, Kind::Emulated(_)) {
            self.state.reset_pending = false;
        }
        if end != want_end || done != want_done {
            let mut msg = format!(
                "touches {:?}: child {end} after {done} touches, expected {want_end} after {want_done} (state {:?})",
                plan, self.state
            );
            if rep[1] != 0 {
                let _ = write!(
                    msg,
                    "; touch {} read {:#x}, expected {:#x}",
                    rep[1] - 1,
                    rep[2],
                    rep[3]
                );
            }
            self.fail(Cat::Mmap, i, op, msg);
            if let Kind::Emulated(_) = kind {
                for t in &plan {
                    self.shadow.forget(index, start + t.off, t.width as u64);
                }
            }
            return self.resync();
        }
        Ok(())
    }

    pub fn ioctl(&mut self, i: u64, op: &Op, io: &IoctlOp) -> io::Result<()> {
        self.count("ioctl");
        let bad_ptr = self.bad.addr() as *mut u64;
        let fd = self.fd();
        let call = |req: libc::c_ulong, arg: *mut u64| -> Result<usize, i32> {
            // SAFETY: `arg` points to the 512-byte buffer below or to the PROT_NONE reservation
            // (the kernel's copies fail with EFAULT). A random `argsz` or count may make the
            // kernel read past the buffer, as a hostile VMM would; what it writes back is at
            // most a fixed part and the capabilities, which fit in the buffer.
            errno_of(unsafe { libc::ioctl(fd, req, arg) } as isize)
        };
        let mut buf = [0u64; 64];
        let (got, want): (Result<usize, i32>, Option<Result<usize, i32>>) = match io {
            IoctlOp::GetInfo { argsz, bad } => {
                buf[0] = u64::from(*argsz);
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(ioctl::VFIO_DEVICE_GET_INFO, p);
                let want = if *bad {
                    Err(libc::EFAULT)
                } else if *argsz < 16 {
                    Err(libc::EINVAL)
                } else {
                    Ok(0)
                };
                if got == Ok(0) && want == Ok(0) {
                    // flags PCI | RESET, 9 regions, 5 IRQ indexes (vfio_pci_ioctl_get_info()).
                    let fields = (
                        buf[0] as u32,
                        (buf[0] >> 32) as u32,
                        buf[1] as u32,
                        (buf[1] >> 32) as u32,
                    );
                    if fields != (*argsz, 0x3, NUM_REGIONS as u32, NUM_IRQS) {
                        self.fail(Cat::Ioctl, i, op, format!("device info {fields:x?}"));
                    }
                }
                (got, Some(want))
            }
            IoctlOp::RegionInfo {
                argsz,
                index,
                cap_offset,
                bad,
            } => {
                buf[0] = u64::from(*argsz) | u64::from(u32::MAX) << 32;
                buf[1] = u64::from(*index) | u64::from(*cap_offset) << 32;
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(ioctl::VFIO_DEVICE_GET_REGION_INFO, p);
                let want = self.expect_region_info(*argsz, *index, *cap_offset, *bad);
                let wanted = want.as_ref().map(|_| ()).map_err(|e| *e);
                if got.map(|_| ()) == wanted {
                    if let Ok(fields) = want {
                        let seen = (
                            buf[0] as u32,
                            (buf[0] >> 32) as u32,
                            (buf[1] >> 32) as u32,
                            buf[2],
                            buf[3],
                        );
                        let mut bad_info = seen != fields.0;
                        if let Some(memlength) = fields.1 {
                            // The sparse-mmap capability after the fixed part.
                            let cap = (
                                buf[4] as u16,
                                (buf[4] >> 16) as u16,
                                (buf[4] >> 32) as u32,
                                buf[5] as u32,
                                buf[6],
                                buf[7],
                            );
                            bad_info |= cap != (1, 1, 0, 1, 0, memlength);
                        }
                        if bad_info {
                            self.fail(
                                Cat::Ioctl,
                                i,
                                op,
                                format!("region info {:x?}, expected {fields:x?}", &buf[..8]),
                            );
                        }
                    }
                }
                (got, Some(wanted.map(|_| 0)))
            }
            IoctlOp::IrqInfo { argsz, index, bad } => {
                buf[0] = u64::from(*argsz);
                buf[1] = u64::from(*index);
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(GET_IRQ_INFO, p);
                let want = if *bad {
                    Err(libc::EFAULT)
                } else if *argsz < 16 || *index >= NUM_IRQS {
                    Err(libc::EINVAL)
                } else {
                    Ok(0)
                };
                (got, Some(want))
            }
            IoctlOp::Ioeventfd { payload } => {
                buf[..4].copy_from_slice(payload);
                // The driver refuses ioeventfds before reading the argument (upstream
                // nvgrace_gpu_ioctl()).
                (
                    call(ioctl::VFIO_DEVICE_IOEVENTFD, buf.as_mut_ptr()),
                    Some(Err(libc::ENOTTY)),
                )
            }
            IoctlOp::Unknown { cmd } => (call(*cmd, buf.as_mut_ptr()), Some(Err(libc::ENOTTY))),
            IoctlOp::Feature { words, bad } => {
                buf[..words.len()].copy_from_slice(words);
                let p = if *bad { bad_ptr } else { buf.as_mut_ptr() };
                let got = call(ioctl::VFIO_DEVICE_FEATURE, p);
                let flags = (words[0] >> 32) as u32;
                if let Ok(n) = got {
                    let feature = flags & FEATURE_MASK;
                    let acting = flags & FEATURE_PROBE == 0;
                    if feature == FEATURE_DMA_BUF && acting && n > 0 {
                        // SAFETY: A new dma-buf fd that nothing else owns.
                        unsafe { libc::close(n as i32) };
                    }
                    if acting
                        && (feature == FEATURE_LOW_POWER_ENTRY
                            || feature == FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP)
                    {
                        self.state.low_power = true;
                    }
                    if acting && feature == FEATURE_LOW_POWER_EXIT {
                        self.state.low_power = false;
                    }
                }
                let want = if *bad { Some(Err(libc::EFAULT)) } else { None };
                (got.map(|n| usize::from(n > 0)), want)
            }
            IoctlOp::SetIrqs { words } => {
                buf[..words.len()].copy_from_slice(words);
                (call(SET_IRQS, buf.as_mut_ptr()), None)
            }
            IoctlOp::HotResetInfo { argsz } => {
                buf[0] = u64::from(*argsz);
                (call(GET_PCI_HOT_RESET_INFO, buf.as_mut_ptr()), None)
            }
        };
        // No ioctl result depends on the build (nothing listed): each by value (a dma-buf fd
        // as whether there is one).
        self.note(Cat::Ioctl, (5u8, &got));
        if let Some(want) = want {
            if got != want {
                self.fail(
                    Cat::Ioctl,
                    i,
                    op,
                    format!("got {}, expected {}", show(&got), show(&want)),
                );
            }
        }
        Ok(())
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` (vfio_get_region_info(), upstream
    /// nvgrace_gpu_ioctl_get_region_info(), vfio_pci_ioctl_get_region_info()): the fields
    /// `(argsz, flags, cap_offset, size, offset)` and, for the emulated BARs with room for it,
    /// the sparse area's size.
    #[allow(clippy::type_complexity)]
    pub fn expect_region_info(
        &self,
        argsz: u32,
        index: u32,
        cap_offset: u32,
        bad: bool,
    ) -> Result<((u32, u32, u32, u64, u64), Option<u64>), i32> {
        if bad {
            return Err(libc::EFAULT);
        }
        if argsz < 32 {
            return Err(libc::EINVAL);
        }
        let offset = u64::from(index) << SHIFT;
        const R: u32 = 1;
        const W: u32 = 2;
        const M: u32 = 4;
        const CAPS: u32 = 8;
        match self.layout.kind(u64::from(index)) {
            Kind::Emulated(r) => {
                // One sparse-mmap capability: a 16-byte header and one 16-byte area.
                let needed = 32 + 32;
                if argsz < needed {
                    Ok(((needed, R | W | M | CAPS, 0, r.bar_size, offset), None))
                } else {
                    Ok((
                        (argsz, R | W | M | CAPS, 32, r.bar_size, offset),
                        Some(r.memlength),
                    ))
                }
            }
            Kind::Bar0 => Ok(((argsz, R | W | M, cap_offset, BAR0_SIZE, offset), None)),
            Kind::PhysBar2 => Ok(((argsz, R | W | M, cap_offset, PHYS_BAR2_SIZE, offset), None)),
            Kind::Config => Ok(((argsz, R | W, cap_offset, CONFIG_SIZE, offset), None)),
            // Absent BARs and the absent ROM have size 0 and no flags; VGA and beyond: EINVAL.
            Kind::None if index < 7 => Ok(((argsz, 0, cap_offset, 0, offset), None)),
            Kind::None => Err(libc::EINVAL),
        }
    }
}

/// A pread at a raw (possibly negative) position.
pub trait ReadAtRaw {
    fn read_at_raw(&self, buf: &mut [u8], pos: i64) -> Result<usize, i32>;
}

impl ReadAtRaw for std::fs::File {
    fn read_at_raw(&self, buf: &mut [u8], pos: i64) -> Result<usize, i32> {
        // SAFETY: `buf` is writable for its length.
        errno_of(unsafe { libc::pread(self.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), pos) })
    }
}

impl Fuzzer {
    /// Opens the GPU and sets the fuzzer up for the layout `usemem`/`resmem`: memory enabled, the
    /// readiness check after open done, the model's control back to the command line's.
    /// `tracing`: keep what goes into the digest, per operation ([`Fuzzer::noted`]).
    pub fn new(
        usemem: Region,
        resmem: Option<Region>,
        build: Build,
        tracing: bool,
    ) -> io::Result<Self> {
        let dev = Device::open_iommufd(GPU_BDF)?;
        // SAFETY: A new anonymous PROT_NONE reservation; nothing is overwritten.
        let bad = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * MAX_BUF,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if bad == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut f = Fuzzer {
            dev: Some(dev),
            layout: Layout {
                usemem,
                resmem,
                build,
            },
            state: State {
                mem_enabled: true,
                reset_pending: true,
                low_power: false,
            },
            shadow: Shadow::default(),
            // SAFETY: The reservation just made; `Mapping` unmaps it on drop.
            bad: unsafe { mm::Mapping::from_raw(bad as usize, 2 * MAX_BUF) },
            report: Report::new()?,
            failures: HashMap::new(),
            counts: HashMap::new(),
            digest: 0,
            digests: HashMap::new(),
            tracing,
            noted: Vec::new(),
        };
        // Leave the model as the command line set it (ready at once after resets), and start
        // from a known state: memory enabled, the readiness check after open done.
        if crate::model::available() {
            crate::model::reset_control()?;
        }
        f.resync()?;
        Ok(f)
    }

    /// A fresh check that the device works after the fuzzing: reset, memory enabled, a write
    /// read back through pread and through a mapping.
    pub fn usable_after(&mut self) -> tap::Outcome {
        use std::os::unix::fs::FileExt;
        self.resync()?;
        self.dev().reset()?;
        let dev = self.dev();
        let at = (4u64 << SHIFT) + 0x2000;
        let v = 0x0123_4567_89ab_cdefu64;
        crate::check_eq!(dev.fd.write_at(&v.to_le_bytes(), at)?, 8usize, "pwrite");
        let mut b = [0u8; 8];
        crate::check_eq!(dev.fd.read_at(&mut b, at)?, 8usize, "pread");
        crate::check_eq!(u64::from_le_bytes(b), v, "value read back");
        let map = mm::mmap_shared(&dev.fd, at & !(page_bytes() - 1), mm::page_size())?;
        let (end, _) = mm::touch_in_child(map.addr(), Duration::from_secs(60))?;
        crate::check_eq!(end, ChildEnd::Exited(0), "a touch of a mapping ({end})");
        crate::check_eq!(
            map.read_u64((at % page_bytes()) as usize),
            v,
            "value through the mapping"
        );
        Ok(())
    }
}
