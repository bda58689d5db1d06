// SPDX-License-Identifier: GPL-2.0

//! The fuzzer's mmaps and the touches of what they map, in a forked child.

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use super::*;
use crate::fuzz::gen::*;
use crate::fuzz::model::*;
use crate::fuzz::*;
use crate::mm;
use crate::mm::ChildEnd;

impl Fuzzer {
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
}
