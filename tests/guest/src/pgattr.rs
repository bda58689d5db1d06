// SPDX-License-Identifier: GPL-2.0

//! The stage-1 page-table entries of the drivers' mappings and the memory types they select, from
//! the rig's test module `nvgrace_pgattr.ko` (tests/pgattr/nvgrace_pgattr.c, whose top comment
//! documents its debugfs interface), and the kernel's list of its vmalloc-space mappings
//! (`/proc/vmallocinfo`), where the drivers' kernel mappings of the GPU memory (`memremap()`,
//! `ioremap_wc()`) show with their physical address.
//!
//! Memory types are named as the module names them: on arm64 the MAIR_EL1 attribute the entry's
//! AttrIndx selects (`normal-wb`, `normal-nc`, `device-nGnRE`, ...); on x86 the PAT memory type
//! its PAT/PCD/PWT bits select (`wb`, `wc`, `uc-`, `uc`, ...).

use std::ffi::CString;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Where the rig ships the module in the guest.
pub const MODULE_PATH: &str = "/opt/nvgrace/nvgrace_pgattr.ko";
/// The module's name, as `delete_module(2)` and /sys/module know it.
pub const MODULE_NAME: &str = "nvgrace_pgattr";
/// The module's debugfs file.
pub const LOOKUP: &str = "/sys/kernel/debug/nvgrace_pgattr/lookup";

/// One leaf entry as the module reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The virtual address looked up (for a kernel mapping found by physical address: the
    /// address that maps it).
    pub va: u64,
    /// `pte`, `pmd` or `pud`.
    pub level: String,
    /// Bytes the entry maps.
    pub size: u64,
    /// The raw entry.
    pub entry: u64,
    /// The physical address `va` translates to.
    pub phys: u64,
    /// The memory type the entry selects.
    pub mem_type: String,
    /// The answer line as the module wrote it, with the architecture's own fields (arm64
    /// `attrindx`, `mair`; x86 `pat-index`, `kernel-pat`).
    pub line: String,
}

impl Leaf {
    /// The value of field `key` of the answer line.
    pub fn field(&self, key: &str) -> Option<&str> {
        field(&self.line, key)
    }
}

impl std::fmt::Display for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

fn hex_field(line: &str, key: &str) -> io::Result<u64> {
    let v = field(line, key).ok_or_else(|| io::Error::other(format!("no {key}= in {line:?}")))?;
    u64::from_str_radix(v.trim_start_matches("0x"), 16)
        .map_err(|e| io::Error::other(format!("{key}={v} in {line:?}: {e}")))
}

/// Parses one answer line of the module.
pub fn parse_leaf(line: &str) -> io::Result<Leaf> {
    let text = |key: &str| {
        field(line, key)
            .map(str::to_string)
            .ok_or_else(|| io::Error::other(format!("no {key}= in {line:?}")))
    };
    Ok(Leaf {
        va: hex_field(line, "va")?,
        level: text("level")?,
        size: hex_field(line, "size")?,
        entry: hex_field(line, "entry")?,
        phys: hex_field(line, "phys")?,
        mem_type: text("type")?,
        line: line.trim().to_string(),
    })
}

/// The module's lookup file, open.
pub struct Pgattr {
    file: File,
}

/// `finit_module(2)` of the module file at `path` without parameters.
fn finit_module(path: &str) -> io::Result<()> {
    let f = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    let params = CString::default();
    // SAFETY: A valid fd and NUL-terminated parameter string for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("finit_module({path}): {e}"),
        ));
    }
    Ok(())
}

impl Pgattr {
    /// Loads the module from `path` unless it is loaded already, and opens its lookup file.
    pub fn load(path: &str) -> io::Result<Self> {
        if !crate::sys::module_loaded(MODULE_NAME) {
            match finit_module(path) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                _ => {}
            }
        }
        Self::open()
    }

    /// Opens the lookup file of the loaded module.
    pub fn open() -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(LOOKUP)
            .map_err(|e| io::Error::new(e.kind(), format!("{LOOKUP}: {e}")))?;
        Ok(Pgattr { file })
    }

    /// Unloads the module (the lookup file is closed first).
    pub fn unload(self) -> io::Result<()> {
        drop(self.file);
        crate::sys::rmmod(MODULE_NAME)
    }

    /// Sends one request and reads the answer lines. A refused request fails with the errno
    /// of the write (`raw_os_error()`), as the module documents them.
    fn query(&self, req: &str) -> io::Result<Vec<Leaf>> {
        let n = self.file.write_at(req.as_bytes(), 0)?;
        if n != req.len() {
            return Err(io::Error::other(format!(
                "{LOOKUP}: {req:?}: wrote {n} of {} bytes",
                req.len()
            )));
        }
        let mut buf = vec![0u8; 8192];
        let n = self.file.read_at(&mut buf, 0)?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.lines().map(parse_leaf).collect()
    }

    fn one(&self, req: &str) -> io::Result<Leaf> {
        let mut v = self.query(req)?;
        match v.len() {
            1 => Ok(v.remove(0)),
            n => Err(io::Error::other(format!(
                "{req:?}: {n} answer lines, expected 1"
            ))),
        }
    }

    /// The leaf entry that maps user address `va` of this process, which must be in a VM_IO or
    /// VM_PFNMAP mapping (a device mapping). `ENOENT` when it is not faulted in.
    pub fn user(&self, va: usize) -> io::Result<Leaf> {
        self.one(&format!("user {va:#x}"))
    }

    /// The leaf entry of init_mm that maps kernel address `va` (in vmalloc space).
    pub fn kernel(&self, va: u64) -> io::Result<Leaf> {
        self.one(&format!("kernel {va:#x}"))
    }

    /// Every vmalloc-space leaf entry that maps physical address `pa`: its kernel mappings, each
    /// with the address that maps `pa`. Empty when there is none.
    pub fn kernel_mappings_of(&self, pa: u64) -> io::Result<Vec<Leaf>> {
        match self.query(&format!("kmap {pa:#x}")) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Vec::new()),
            r => r,
        }
    }
}

/// One area of `/proc/vmallocinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmallocArea {
    /// Its first address, as printed: the real address only when the kernel shows pointers to
    /// the reader (`%pK`), else a hash or 0.
    pub start: u64,
    /// Its end, as printed.
    pub end: u64,
    /// Its size in bytes (guard page included).
    pub size: u64,
    /// Who made it (`%pS` of the caller), e.g. `memremap+0x9d/0x110`.
    pub caller: String,
    /// The physical address it maps (`phys=`, for ioremap()-style areas).
    pub phys: Option<u64>,
    /// Whether it is an ioremap area (`ioremap` flag: memremap() of memory outside the linear
    /// map and ioremap_wc() both make one).
    pub ioremap: bool,
    /// The line.
    pub line: String,
}

impl VmallocArea {
    /// Whether the addresses printed are the real ones: kernel addresses have their top bits
    /// set on x86_64 and arm64; `%pK` without the right to see pointers prints a 32-bit hash
    /// (`kptr_restrict` 0) or 0.
    pub fn addresses_shown(&self) -> bool {
        self.start >> 48 == 0xffff
    }
}

/// Parses the text of `/proc/vmallocinfo`, lines like
/// `0xffffc90000400000-0xffffc90020401000 536875008 memremap+0x9d/0x110 phys=0x0000000020000000 ioremap`.
pub fn parse_vmallocinfo(text: &str) -> Vec<VmallocArea> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (start, end) = words.next()?.split_once('-')?;
            let size = words.next()?.parse().ok()?;
            let rest: Vec<&str> = words.collect();
            let caller = rest
                .first()
                .filter(|w| !w.contains('='))
                .map(|w| w.to_string())
                .unwrap_or_default();
            Some(VmallocArea {
                start: hex(start)?,
                end: hex(end)?,
                size,
                caller,
                phys: rest
                    .iter()
                    .find_map(|w| w.strip_prefix("phys="))
                    .and_then(hex),
                ioremap: rest.contains(&"ioremap"),
                line: line.to_string(),
            })
        })
        .collect()
}

/// The areas of `/proc/vmallocinfo` that map physical memory in `[lo, hi)`.
pub fn vmalloc_areas_in(lo: u64, hi: u64) -> io::Result<Vec<VmallocArea>> {
    let path = "/proc/vmallocinfo";
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    Ok(parse_vmallocinfo(&text)
        .into_iter()
        .filter(|a| a.phys.is_some_and(|p| (lo..hi).contains(&p)))
        .collect())
}

/// What a mapping's cache attribute is meant to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// Cacheable, write-back: usemem.
    WriteBack,
    /// Write-combining (`pgprot_writecombine()`, `ioremap_wc()`): resmem.
    WriteCombine,
}

/// The memory type the module reports for a mapping made with `caching` on this architecture.
/// `kernel_pat` is whether the x86 kernel manages the PAT (the `kernel-pat` field): without it,
/// write-combining falls back to UC- (PCD, the legacy meaning of `_PAGE_CACHE_MODE_WC`'s bits in
/// arch/x86/mm/init.c `__cachemode2pte_tbl`).
pub fn expected_type(caching: Caching, kernel_pat: bool) -> &'static str {
    match (std::env::consts::ARCH, caching) {
        ("aarch64", Caching::WriteBack) => "normal-wb",
        ("aarch64", Caching::WriteCombine) => "normal-nc",
        (_, Caching::WriteBack) => "wb",
        (_, Caching::WriteCombine) if kernel_pat => "wc",
        (_, Caching::WriteCombine) => "uc-",
    }
}

/// The module's file that claims PFN ranges in memory-failure's registry.
pub const CLAIM: &str = "/sys/kernel/debug/nvgrace_pgattr/claim";

/// A PFN range claimed in memory-failure's registry through the module's `claim` file
/// (`register_pfn_address_space()`): while it lives, a driver's registration of an overlapping
/// range fails with `EBUSY`. Given back when dropped (the file is closed).
pub struct PfnClaim {
    file: File,
}

impl PfnClaim {
    /// Claims `pages` pages from PFN `first_pfn` (the module must be loaded: [`Pgattr::load`]).
    /// Fails with the module's errno: `EBUSY` (a range is claimed already, or memory-failure
    /// has an overlapping one), `EOPNOTSUPP` (no CONFIG_MEMORY_FAILURE), `EINVAL`.
    pub fn claim(first_pfn: u64, pages: u64) -> io::Result<Self> {
        Self::request(&format!("{first_pfn:#x} {pages}"))
    }

    /// Requests the physical range `[start, start + len)` (bytes) through the module, so that
    /// vfio-pci-core cannot request a BAR inside it when it enables the device. `EBUSY` when the
    /// range, or part of it, is requested already (or the module holds another).
    pub fn claim_mem(start: u64, len: u64) -> io::Result<Self> {
        Self::request(&format!("mem {start:#x} {len:#x}"))
    }

    /// Opens the claim file and writes one request to it; the open file holds the claim.
    fn request(req: &str) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .open(CLAIM)
            .map_err(|e| io::Error::new(e.kind(), format!("{CLAIM}: {e}")))?;
        let n = file.write_at(req.as_bytes(), 0)?;
        if n != req.len() {
            return Err(io::Error::other(format!(
                "{CLAIM}: {req:?}: wrote {n} of {} bytes",
                req.len()
            )));
        }
        Ok(PfnClaim { file })
    }

    /// Gives the range back now (dropping does the same).
    pub fn release(self) -> io::Result<()> {
        self.file.write_at(b"release", 0).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_x86_leaf() {
        let l = parse_leaf(
            "va=0x7f1234400000 level=pmd size=0x200000 entry=0x8000000020000ebf phys=0x20000000 \
             type=uc- pat-index=2 kernel-pat=off\n",
        )
        .unwrap();
        assert_eq!(l.va, 0x7f12_3440_0000);
        assert_eq!(l.level, "pmd");
        assert_eq!(l.size, 0x20_0000);
        assert_eq!(l.entry, 0x8000_0000_2000_0ebf);
        assert_eq!(l.phys, 0x2000_0000);
        assert_eq!(l.mem_type, "uc-");
        assert_eq!(l.field("kernel-pat"), Some("off"));
        assert_eq!(l.field("pat"), None);
    }

    #[test]
    fn parses_arm64_leaf() {
        let l = parse_leaf(
            "va=0xffff800089000000 level=pte size=0x10000 entry=0x68000100000f0b \
             phys=0x100000000 type=normal-nc attrindx=2 mair=0x44",
        )
        .unwrap();
        assert_eq!(l.mem_type, "normal-nc");
        assert_eq!(l.field("mair"), Some("0x44"));
        assert!(parse_leaf("va=0x1 level=pte").is_err());
    }

    #[test]
    fn parses_vmallocinfo() {
        let text = "\
0xffffc90000000000-0xffffc90000002000    8192 acpi_os_map_iomem+0x1c5/0x200 phys=0x000000007ffe0000 ioremap
0xffffc90000400000-0xffffc90020401000 536875008 memremap+0x9d/0x110 phys=0x0000000020000000 ioremap
0x00000000a1b2c3d4-0x0000000011223344 1073745920 nvgrace_gpu_map_device_mem+0x6e/0xb0 [nvgrace_gpu_vfio_pci] phys=0x0000000040000000 ioremap
0xffffc90000005000-0xffffc90000007000    8192 bpf_prog_alloc_no_stats+0x4a/0x260 pages=1 vmalloc
";
        let v = parse_vmallocinfo(text);
        assert_eq!(v.len(), 4);
        assert_eq!(v[1].start, 0xffff_c900_0040_0000);
        assert_eq!(v[1].size, 536_875_008);
        assert_eq!(v[1].phys, Some(0x2000_0000));
        assert_eq!(v[1].caller, "memremap+0x9d/0x110");
        assert!(v[1].ioremap && v[1].addresses_shown());
        assert!(!v[2].addresses_shown());
        assert_eq!(v[2].phys, Some(0x4000_0000));
        assert_eq!(v[3].phys, None);
        assert!(!v[3].ioremap);
    }

    #[test]
    fn expected_types() {
        let wb = expected_type(Caching::WriteBack, false);
        let wc = expected_type(Caching::WriteCombine, false);
        assert_ne!(wb, wc);
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(wc, "uc-");
            assert_eq!(expected_type(Caching::WriteCombine, true), "wc");
        }
    }
}
