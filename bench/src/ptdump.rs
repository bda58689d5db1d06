// SPDX-License-Identifier: GPL-2.0

//! Page-table entries by level, from the kernel's page-table dump (x86
//! `/sys/kernel/debug/page_tables/current_kernel`, CONFIG_PTDUMP_DEBUGFS).
//!
//! Why this source: the VFIO mappings are VM_PFNMAP, and the page walks behind
//! `/proc/self/smaps` and `/proc/self/pagemap` skip PFN maps (mm/pagewalk.c `walk_page_test()`),
//! while `/proc/vmstat`'s `thp_*` counters count only anonymous and file THPs. The dump walks
//! the page tables themselves, whatever the VMA, so it sees the PUD, PMD and PTE entries both
//! drivers install (`vmf_insert_pfn_pud()`, `_pmd()`, `vmf_insert_pfn()` through
//! vfio-pci-core) and the anonymous THPs of the ceiling alike. Without page-table isolation
//! (the rig's kernel has none) `current_kernel` walks the calling process's whole page table,
//! user half included (arch/x86/mm/debug_pagetables.c, dump_pagetables.c).
//!
//! Format (arch/x86/mm/dump_pagetables.c `note_page()`, `printk_prot()`): one line per run of
//! entries at one level with equal protections,
//! `0x<start>-0x<end>   <size><unit> <flags> <level>`, where a present run has `RW` or `ro`
//! among its flags and `<level>` is `pgd`, `p4d`, `pud`, `pmd` or `pte`.

use serde::Deserialize;
use serde::Serialize;

/// Where the dump of the calling process's page table is.
pub const CURRENT: &str = "/sys/kernel/debug/page_tables/current_kernel";

/// Bytes one entry maps at each leaf level, x86_64 with 4 KiB pages: the dump is x86's (arm64's
/// `CONFIG_PTDUMP_DEBUGFS` dumps only the kernel's page tables, so there is no [`CURRENT`] and
/// the benchmark reports no entries).
const PUD_SIZE: u64 = 1 << 30;
const PMD_SIZE: u64 = 2 << 20;
const PTE_SIZE: u64 = 4 << 10;

/// Present leaf entries in a range of virtual addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entries {
    /// 1 GiB entries (order 18).
    pub pud: u64,
    /// 2 MiB entries (order 9).
    pub pmd: u64,
    /// 4 KiB entries (order 0).
    pub pte: u64,
}

impl Entries {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.pud + self.pmd + self.pte
    }
}

/// Counts the present leaf entries of `dump` that map `[start, end)`; runs that cross the range's
/// ends are clipped to it.
pub fn count(dump: &str, start: u64, end: u64) -> Entries {
    let mut e = Entries::default();
    for line in dump.lines() {
        let mut words = line.split_whitespace();
        let Some((a, b)) = words.next().and_then(|r| r.split_once('-')) else {
            continue;
        };
        let (Some(a), Some(b)) = (hex(a), hex(b)) else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        if !rest.iter().any(|w| *w == "RW" || *w == "ro") {
            continue;
        }
        let (lo, hi) = (a.max(start), b.min(end));
        if lo >= hi {
            continue;
        }
        let bytes = hi - lo;
        match rest.last().copied() {
            Some("pud") => e.pud += bytes / PUD_SIZE,
            Some("pmd") => e.pmd += bytes / PMD_SIZE,
            Some("pte") => e.pte += bytes / PTE_SIZE,
            _ => {}
        }
    }
    e
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like the kernel's output (flags columns as printk_prot() prints them).
    const DUMP: &str = "\
---[ User Space ]---
0x0000000000000000-0x0000000000400000           4M                               pte
0x0000000000400000-0x0000000000402000           8K     USR ro                 NX pte
0x00007f0000000000-0x00007f0040000000           1G     USR RW         PSE     x  pud
0x00007f0040000000-0x00007f0040400000           4M     USR RW         PSE     x  pmd
0x00007f0040400000-0x00007f0040600000           2M                               pmd
0x00007f0040600000-0x00007f0040603000          12K     USR RW     PCD         NX pte
---[ Kernel Space ]---
0xffff888000000000-0xffff888040000000           1G         RW         PSE GLB NX pud
";

    #[test]
    fn counts_by_level_within_range() {
        let e = count(DUMP, 0x7f00_0000_0000, 0x7f00_4060_3000);
        assert_eq!(
            e,
            Entries {
                pud: 1,
                pmd: 2,
                pte: 3
            }
        );
        assert_eq!(e.total(), 6);
    }

    #[test]
    fn clips_to_range_and_skips_not_present() {
        let e = count(DUMP, 0x7f00_4020_0000, 0x7f00_4060_1000);
        assert_eq!(
            e,
            Entries {
                pud: 0,
                pmd: 1,
                pte: 1
            }
        );
        assert_eq!(count(DUMP, 0, 0x40_0000), Entries::default());
    }
}
