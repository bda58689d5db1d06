// SPDX-License-Identifier: GPL-2.0

//! Running the fuzzer's operations on the device and comparing with the model: reads, writes,
//! config writes, resets and reopens here; mmaps and ioctls in the child modules.

mod ioctls;
mod mmap;

use std::collections::HashMap;
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

    /// A read or write returned `got`, not `want`, from the state `before`.
    pub fn unexpected(&mut self, i: u64, op: &Op, got: &Want, want: &Want, before: State) {
        let msg = format!(
            "got {}, expected {} (state before {before:?})",
            show(got),
            show(want)
        );
        self.fail(Cat::ReadWrite, i, op, msg);
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
            self.unexpected(i, op, &got, &want, before);
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
            self.unexpected(i, op, &got, &want, before);
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
