// SPDX-License-Identifier: GPL-2.0

//! User-space side of mapped device memory: shared mappings (optionally at a chosen virtual
//! alignment, for PMD/PUD mappings), volatile access, touching a page in a child process to see
//! whether it gets SIGBUS, forked helper processes with bounded waits, a SIGBUS recorder for
//! memory-failure reports, the task's fault counter, `/proc/self/smaps` and `/proc/self/pagemap`,
//! and the monotonic clock.
//!
//! The test binaries are single-threaded, so `fork()` without `exec` is safe; children only run
//! the closure they are given and leave with `_exit()` (no atexit handlers, no flush of the
//! parent's buffered stdout).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::time::Duration;

mod child;
mod sigbus;

/// The base page size of the running kernel, in bytes (`sysconf(_SC_PAGESIZE)`): 4 KiB on
/// x86_64, 4, 16 or 64 KiB on arm64 (64 KiB is what Grace hosts run).
pub fn page_size() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety requirements.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        assert!(
            n > 0 && (n as usize).is_power_of_two(),
            "sysconf(_SC_PAGESIZE) returned {n}"
        );
        n as usize
    })
}

/// The base page shift: `page_size() == 1 << page_shift()` (12 with 4 KiB pages, 16 with 64 KiB).
pub fn page_shift() -> u32 {
    page_size().trailing_zeros()
}

/// Where the kernel tells the size of its PMD-level huge pages (CONFIG_TRANSPARENT_HUGEPAGE).
pub const HPAGE_PMD_SIZE: &str = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size";

/// Bytes one page-table entry `levels` levels above the PTE level maps with `page`-byte pages
/// (a power of two): a table is one page of 8-byte entries at every level of x86_64 and arm64
/// (arm64's top level can be smaller, which PMD and PUD never are).
fn entry_size(page: usize, levels: u32) -> usize {
    page * (page / 8).pow(levels)
}

/// Bytes one PMD entry maps: `hpage_pmd_size` when the kernel has THP, else derived from the
/// page size (2 MiB with 4 KiB pages, 32 MiB with 16 KiB, 512 MiB with 64 KiB).
pub fn pmd_size() -> usize {
    std::fs::read_to_string(HPAGE_PMD_SIZE)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| entry_size(page_size(), 1))
}

/// Bytes one PUD entry maps (1 GiB with 4 KiB pages), whether or not the kernel maps PFNs there.
pub fn pud_size() -> usize {
    pmd_size() * (page_size() / 8)
}

/// Whether the running kernel can map a PFN map (the drivers' `huge_fault` at `PMD_ORDER`,
/// vfio-pci-core's `vfio_pci_vmf_insert_pfn()`) with a PMD entry: `Ok(PMD size in bytes)`, or
/// why not. CONFIG_ARCH_SUPPORTS_PMD_PFNMAP (mm/Kconfig) is ARCH_SUPPORTS_HUGE_PFNMAP, which
/// x86, arm64, riscv and powerpc (Book3S-64) select with TRANSPARENT_HUGEPAGE, plus
/// HAVE_ARCH_TRANSPARENT_HUGEPAGE; THP shows in sysfs.
pub fn pmd_pfnmap() -> Result<usize, String> {
    let arch = std::env::consts::ARCH;
    if !matches!(arch, "x86_64" | "aarch64" | "riscv64" | "powerpc64") {
        return Err(format!(
            "{arch} does not select ARCH_SUPPORTS_HUGE_PFNMAP: no PMD-level PFN maps"
        ));
    }
    if !std::path::Path::new(HPAGE_PMD_SIZE).exists() {
        return Err(format!(
            "no {HPAGE_PMD_SIZE}: the kernel has no THP, and ARCH_SUPPORTS_PMD_PFNMAP depends on it"
        ));
    }
    Ok(pmd_size())
}

/// Whether the running kernel can map a PFN map with a PUD entry (`huge_fault` at `PUD_ORDER`):
/// `Ok(PUD size in bytes)`, or why not. CONFIG_ARCH_SUPPORTS_PUD_PFNMAP needs
/// HAVE_ARCH_TRANSPARENT_HUGEPAGE_PUD, which of the architectures the driver runs on only x86_64
/// selects (arch/x86/Kconfig); arch/arm64/Kconfig does not, with any page size.
pub fn pud_pfnmap() -> Result<usize, String> {
    let pmd = pmd_pfnmap()?;
    match std::env::consts::ARCH {
        "x86_64" => Ok(pmd * (page_size() / 8)),
        arch => Err(format!(
            "{arch} has no PUD-level PFN maps (ARCH_SUPPORTS_PUD_PFNMAP needs \
             HAVE_ARCH_TRANSPARENT_HUGEPAGE_PUD, which only x86_64 selects): a PMD of {} MiB is \
             the largest entry the drivers' huge_fault installs",
            pmd >> 20
        )),
    }
}

/// Why the x86 page-table dump cannot be read here, or `None` on x86_64: the dump of the calling
/// process's page tables ([`page_table_entry`]) and its flag names are x86's.
/// Also `Some` on a kernel without the dump (no `CONFIG_PTDUMP_DEBUGFS`: Debian's).
pub fn x86_ptdump_unavailable() -> Option<String> {
    if std::env::consts::ARCH != "x86_64" {
        return Some("x86 page-table dump; arm64 attributes are checked by cache_attr_test".into());
    }
    let path = "/sys/kernel/debug/page_tables/current_kernel";
    (!std::path::Path::new(path).exists()).then(|| {
        format!("no {path}: the kernel has no CONFIG_PTDUMP_DEBUGFS (cache_attr_test reads the attributes through tests/pgattr)")
    })
}

/// `BUS_MCEERR_AR` (include/uapi/asm-generic/siginfo.h): hardware memory error consumed on a
/// machine check, action required.
pub const BUS_MCEERR_AR: i32 = 4;
/// `BUS_MCEERR_AO`: hardware memory error detected in the process but not consumed, action
/// optional.
pub const BUS_MCEERR_AO: i32 = 5;

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The monotonic clock (`clock_gettime(CLOCK_MONOTONIC)`), as time since boot.
pub fn now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The page-table dump line (x86 `CONFIG_PTDUMP_DEBUGFS`, arch/x86/mm/dump_pagetables.c) of the
/// calling process's range that holds `addr`, e.g.
/// `0x00007f...000-0x00007f...000   4K  USR RW  PCD  NX pte`; `None` if `addr` is not mapped.
///
/// `page_tables/current_kernel` walks the current process's page tables, user half included
/// (no page-table isolation in the rig's kernel). Flags appear as the dump names them: `PWT`,
/// `PCD` are the cache-control bits (Intel SDM Vol. 3A, 4.9 "Paging and Memory Typing").
pub fn page_table_entry(addr: usize) -> io::Result<Option<String>> {
    let path = "/sys/kernel/debug/page_tables/current_kernel";
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    for line in text.lines() {
        let Some((range, _)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let parse = |h: &str| usize::from_str_radix(h.trim_start_matches("0x"), 16).ok();
        if let (Some(lo), Some(hi)) = (parse(lo), parse(hi)) {
            if (lo..hi).contains(&addr) {
                return Ok(Some(line.split_whitespace().collect::<Vec<_>>().join(" ")));
            }
        }
    }
    Ok(None)
}

/// The calling process's minor fault count (`getrusage(RUSAGE_SELF).ru_minflt`): the kernel
/// counts one per successfully handled page fault, whatever the size of the entry it installed,
/// so touching every page of a PMD-mapped range costs one fault, not one per page.
pub fn minor_faults() -> u64 {
    // SAFETY: An all-zero rusage is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage to write.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_minflt as u64
}

/// A shared mapping of a file (the device fd), unmapped on drop.
pub struct Mapping {
    addr: usize,
    len: usize,
}

impl Mapping {
    /// Takes ownership of an existing mapping of `len` bytes at `addr`, to unmap it on drop.
    ///
    /// # Safety
    ///
    /// `[addr, addr + len)` must be a mapping of this process that nothing else unmaps.
    pub unsafe fn from_raw(addr: usize, len: usize) -> Self {
        Mapping { addr, len }
    }

    /// The first mapped address.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// The mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: mmap refuses empty mappings).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, off: usize, size: usize) -> usize {
        assert!(
            off.checked_add(size).is_some_and(|e| e <= self.len),
            "access {off:#x}+{size} beyond mapping of {:#x}",
            self.len
        );
        self.addr + off
    }

    /// Reads a byte with a volatile load (faults the page in).
    pub fn read_u8(&self, off: usize) -> u8 {
        // SAFETY: In bounds of a live mapping (checked); SIGBUS is the only failure and ends the
        // process.
        unsafe { std::ptr::read_volatile(self.at(off, 1) as *const u8) }
    }

    /// Writes a byte with a volatile store.
    pub fn write_u8(&self, off: usize, v: u8) {
        // SAFETY: As in `read_u8`; the mapping is shared and writable.
        unsafe { std::ptr::write_volatile(self.at(off, 1) as *mut u8, v) }
    }

    /// Reads an aligned 64-bit value with a volatile load.
    pub fn read_u64(&self, off: usize) -> u64 {
        assert_eq!(off % 8, 0);
        // SAFETY: As in `read_u8`; aligned (mappings are page-aligned).
        unsafe { std::ptr::read_volatile(self.at(off, 8) as *const u64) }
    }

    /// Writes an aligned 64-bit value with a volatile store.
    pub fn write_u64(&self, off: usize, v: u64) {
        assert_eq!(off % 8, 0);
        // SAFETY: As in `write_u8`; aligned.
        unsafe { std::ptr::write_volatile(self.at(off, 8) as *mut u64, v) }
    }

    /// Copies `buf.len()` bytes out of the mapping at `off` with volatile byte loads.
    pub fn read_bytes(&self, off: usize, buf: &mut [u8]) {
        let base = self.at(off, buf.len());
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: In bounds (checked above).
            *b = unsafe { std::ptr::read_volatile((base + i) as *const u8) };
        }
    }

    /// Copies `data` into the mapping at `off` with volatile byte stores.
    pub fn write_bytes(&self, off: usize, data: &[u8]) {
        let base = self.at(off, data.len());
        for (i, b) in data.iter().enumerate() {
            // SAFETY: In bounds (checked above).
            unsafe { std::ptr::write_volatile((base + i) as *mut u8, *b) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: The range is a mapping this object owns.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset)`.
pub fn mmap_shared(fd: &impl AsRawFd, offset: u64, len: usize) -> io::Result<Mapping> {
    // SAFETY: A new mapping at an address the kernel chooses; nothing is overwritten.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Mapping {
        addr: p as usize,
        len,
    })
}

/// A shared mapping whose first address is a multiple of `align` (a power of two): a
/// `PROT_NONE` reservation of `len + align` bytes, the mapping placed in it with `MAP_FIXED`,
/// the rest of the reservation released.
pub fn mmap_shared_aligned(
    fd: &impl AsRawFd,
    offset: u64,
    len: usize,
    align: usize,
) -> io::Result<Mapping> {
    assert!(align.is_power_of_two() && align >= page_size());
    let total = len + align;
    // SAFETY: A new anonymous reservation; nothing is overwritten.
    let r = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = r as usize;
    let aligned = (start + align - 1) & !(align - 1);
    // SAFETY: `[aligned, aligned + len)` lies inside the reservation this function owns.
    let p = unsafe {
        libc::mmap(
            aligned as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        // SAFETY: The reservation is ours.
        unsafe { libc::munmap(r, total) };
        return Err(e);
    }
    // SAFETY: Both ranges are the unused parts of our reservation.
    unsafe {
        if aligned > start {
            libc::munmap(start as *mut libc::c_void, aligned - start);
        }
        let end = aligned + len;
        if start + total > end {
            libc::munmap(end as *mut libc::c_void, start + total - end);
        }
    }
    Ok(Mapping { addr: aligned, len })
}

/// Tries `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset)` with a raw (possibly
/// negative or unaligned) file offset: `Ok(())` if it mapped (the mapping is removed at once),
/// else the errno.
pub fn mmap_errno(fd: &impl AsRawFd, offset: i64, len: usize) -> Result<(), i32> {
    // SAFETY: A new mapping at an address the kernel chooses.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(errno());
    }
    // SAFETY: The mapping just made.
    unsafe { libc::munmap(p, len) };
    Ok(())
}

pub use child::*;
pub use sigbus::*;

/// The `/proc/self/smaps` entry of the mapping that contains `addr`.
#[derive(Clone, Debug, Default)]
pub struct Smaps {
    /// The header line ("start-end perms offset dev inode path").
    pub header: String,
    /// The "Key: value" lines, in order.
    pub fields: Vec<(String, String)>,
}

impl Smaps {
    /// The value of a field ("Rss" gives e.g. "4 kB").
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A size field in kB.
    pub fn kb(&self, key: &str) -> Option<u64> {
        self.field(key)?.split_whitespace().next()?.parse().ok()
    }

    /// The two-letter `VmFlags` mnemonics (fs/proc/task_mmu.c).
    pub fn vm_flags(&self) -> Vec<String> {
        self.field("VmFlags")
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// The `/proc/self/smaps` entry of the mapping containing `addr`, if any.
pub fn smaps_of(addr: usize) -> io::Result<Option<Smaps>> {
    let text = std::fs::read_to_string("/proc/self/smaps")?;
    let mut current: Option<(bool, Smaps)> = None;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((s, e)) = first.split_once('-') {
            if let (Ok(s), Ok(e)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16)) {
                if let Some((true, sm)) = current.take() {
                    return Ok(Some(sm));
                }
                current = Some((
                    s <= addr && addr < e,
                    Smaps {
                        header: line.to_string(),
                        fields: Vec::new(),
                    },
                ));
                continue;
            }
        }
        if let (Some((_, sm)), Some((k, v))) = (current.as_mut(), line.split_once(':')) {
            sm.fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(current.and_then(|(hit, sm)| hit.then_some(sm)))
}

/// The raw 64-bit `/proc/self/pagemap` entry of the page at `addr`
/// (Documentation/admin-guide/mm/pagemap.rst: bit 63 present, bits 0-54 the PFN).
pub fn pagemap_entry(addr: usize) -> io::Result<u64> {
    let f = File::open("/proc/self/pagemap")?;
    let mut b = [0u8; 8];
    let n = f.read_at(&mut b, (addr / page_size() * 8) as u64)?;
    if n != 8 {
        return Err(io::Error::other(format!(
            "pagemap: short read of {n} bytes"
        )));
    }
    Ok(u64::from_le_bytes(b))
}

/// A deterministic byte pattern: the bytes at `[offset, offset + len)` of an endless sequence
/// chosen by `seed`, distinct for every 8-byte word (so misplaced pages show).
pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut o = offset;
    while out.len() < len {
        let word = o / 8;
        let mut z = seed ^ word.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.push(z.to_le_bytes()[(o % 8) as usize]);
        o += 1;
    }
    out
}

/// The first offset where `got` and `want` differ, for a readable failure message.
pub fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .or((got.len() != want.len()).then(|| got.len().min(want.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_sizes_per_page_size() {
        // 4 KiB pages (x86_64, arm64): PMD 2 MiB, PUD 1 GiB.
        assert_eq!(entry_size(4 << 10, 1), 2 << 20);
        assert_eq!(entry_size(4 << 10, 2), 1 << 30);
        // 16 KiB (arm64): PMD 32 MiB.
        assert_eq!(entry_size(16 << 10, 1), 32 << 20);
        // 64 KiB (arm64, Grace): PMD 512 MiB, the level above 4 TiB.
        assert_eq!(entry_size(64 << 10, 1), 512 << 20);
        assert_eq!(entry_size(64 << 10, 2), 4 << 40);
    }

    #[test]
    fn running_kernel_sizes_agree() {
        let page = page_size();
        assert_eq!(1 << page_shift(), page);
        // hpage_pmd_size, where the host has THP, is what the derivation gives.
        assert_eq!(pmd_size(), entry_size(page, 1));
        assert_eq!(pud_size(), entry_size(page, 2));
    }
}
