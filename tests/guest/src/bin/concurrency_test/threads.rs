// SPDX-License-Identifier: GPL-2.0

//! concurrency_test's racing threads: faulting a slice mapping, pread/pwrite, resets and BAR
//! register writes, each checking what it reads against what it wrote.

use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::hw;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::page_size;
use nvgrace_guest_tests::mm::Mapping;
use nvgrace_guest_tests::rng::Rng;
use nvgrace_guest_tests::vfio::ioctl;
use nvgrace_guest_tests::vfio::ioctl_val;
use nvgrace_guest_tests::workers::Board;
use nvgrace_guest_tests::workers::Until;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use super::*;

/// The virtual alignment of a `huge` slice mapping, bytes: the PMD size where a PMD fits in a
/// slice (2 MiB with 4 KiB pages), else the slice size (a 512 MiB PMD of 64 KiB pages does not
/// fit: such a thread faults pages, at a slice-aligned address).
pub(crate) fn huge_align() -> usize {
    let pmd = mm::pmd_size();
    if pmd <= SLICE as usize {
        pmd
    } else {
        SLICE as usize
    }
}

/// A mapping of slice `slice` of region `m`: at a PMD-aligned address when `huge` (PMD faults
/// where the driver makes them and a PMD fits in the slice, see [`huge_align`]), else one page
/// into the slice at any address (page faults).
pub(crate) fn map_slice(fd: &File, m: &GpuMem, slice: u64, huge: bool) -> io::Result<Mapping> {
    let off = WINDOW_BASE + slice * SLICE;
    if huge {
        mm::mmap_shared_aligned(fd, m.at(off), SLICE as usize, huge_align())
    } else {
        mm::mmap_shared(
            fd,
            m.at(off + page_size() as u64),
            SLICE as usize - page_size(),
        )
    }
}

/// What a faulting thread remembers of its pages: the value it last wrote to the first and last
/// word of each.
pub(crate) struct PageValues(pub(crate) Vec<Option<u64>>);

impl PageValues {
    pub(crate) fn new(pages: usize) -> Self {
        PageValues(vec![None; pages])
    }

    /// Visits page `p` of `map`: checks the value last written there, writes `v`.
    pub(crate) fn visit(
        &mut self,
        map: &Mapping,
        p: usize,
        v: u64,
        what: &str,
    ) -> Result<(), String> {
        let first = p * page_size();
        let last = first + page_size() - 8;
        if let Some(want) = self.0[p] {
            let (a, b) = (map.read_u64(first), map.read_u64(last));
            if a != want || b != !want {
                return Err(format!(
                    "{what}: page {p} reads {a:#x}/{b:#x}, last written {want:#x}/{:#x}",
                    !want
                ));
            }
        }
        map.write_u64(first, v);
        map.write_u64(last, !v);
        self.0[p] = Some(v);
        Ok(())
    }
}

/// Where a faulting thread gets its mapping from.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// A device fd of its own from the group, closed and replaced with its mapping every
    /// [`REOPEN_EVERY`] accesses.
    Group(&'a Group),
    /// A device fd shared with other threads; the mapping is replaced every [`REOPEN_EVERY`]
    /// accesses.
    Fd(&'a File),
}

/// What a faulting thread maps and how long it runs.
#[derive(Clone, Copy)]
pub(crate) struct FaultJob<'a> {
    pub(crate) source: Source<'a>,
    pub(crate) m: &'a GpuMem,
    pub(crate) slice: u64,
    /// PMD-aligned mapping (else one page into the slice), see [`map_slice`].
    pub(crate) huge: bool,
    pub(crate) until: Until,
    pub(crate) board: &'a Board,
    /// The board counter of the visits.
    pub(crate) counter: usize,
}

/// Faults random pages of a mapping of the job's slice until the end, checking each against
/// what the thread last wrote. Every [`REOPEN_EVERY`] accesses the thread replaces its mapping,
/// with a group source also its device fd (the data must survive).
pub(crate) fn fault_thread(job: FaultJob<'_>, mut rng: Rng) -> Result<String, String> {
    let FaultJob {
        source,
        m,
        slice,
        huge,
        until,
        board,
        counter,
    } = job;
    let what = format!("{} slice {slice}", m.name());
    let err = |e: io::Error| format!("{what}: {e}");
    let open = || -> Result<(Option<File>, Mapping), String> {
        match source {
            Source::Group(g) => {
                let f = g.device_fd().map_err(err)?;
                let map = map_slice(&f, m, slice, huge).map_err(err)?;
                Ok((Some(f), map))
            }
            Source::Fd(f) => Ok((None, map_slice(f, m, slice, huge).map_err(err)?)),
        }
    };
    let (mut own_fd, mut map) = open()?;
    let mut values = PageValues::new(map.len() / page_size());
    let (mut i, mut reopens) = (0u64, 0u64);
    while !done(until, board, i) {
        let p = rng.below(values.0.len() as u64) as usize;
        values.visit(&map, p, rng.bits(), &what)?;
        board.bump(counter);
        i += 1;
        if i % REOPEN_EVERY == 0 {
            drop(map);
            drop(own_fd.take());
            (own_fd, map) = open()?;
            reopens += 1;
        }
    }
    // Everything written is still there.
    for p in 0..values.0.len() {
        if values.0[p].is_some() {
            let v = rng.bits();
            values.visit(&map, p, v, &what)?;
        }
    }
    Ok(format!(
        "{what} ({}): {i} accesses, {reopens} new mappings",
        if huge {
            format!("{} KiB-aligned", huge_align() >> 10)
        } else {
            "page-offset".into()
        }
    ))
}

/// pread/pwrite of random sizes at random offsets of `slice` of `m`, checked against a copy of
/// what the thread wrote there. Counts operations in counter `c`.
pub(crate) fn rw_thread(
    fd: &File,
    m: &GpuMem,
    slice: u64,
    mut rng: Rng,
    until: Until,
    board: &Board,
    c: usize,
) -> Result<String, String> {
    let what = format!("{} slice {slice} pread/pwrite", m.name());
    let base = m.at(WINDOW_BASE + slice * SLICE);
    let len = RW_LEN;
    let mut shadow = mm::pattern(rng.bits(), 0, len);
    for off in (0..len).step_by(1 << 16) {
        let n = fd
            .write_at(&shadow[off..off + (1 << 16)], base + off as u64)
            .map_err(|e| format!("{what}: initial pwrite at {off:#x}: {e}"))?;
        if n != 1 << 16 {
            return Err(format!("{what}: initial pwrite at {off:#x}: {n} bytes"));
        }
    }
    let sizes = [1usize, 2, 4, 8, 64, 4096, 1 << 16];
    let (mut reads, mut writes) = (0u64, 0u64);
    let mut i = 0;
    while !done(until, board, i) {
        let size = match rng.below(8) {
            7 => 1 + rng.below(8192) as usize,
            k => sizes[k as usize],
        };
        let off = rng.below((len - size) as u64 + 1) as usize;
        if rng.below(2) == 0 {
            let data = mm::pattern(rng.bits(), 0, size);
            let n = fd
                .write_at(&data, base + off as u64)
                .map_err(|e| format!("{what}: pwrite of {size} at {off:#x}: {e}"))?;
            if n != size {
                return Err(format!("{what}: pwrite of {size} at {off:#x}: {n} bytes"));
            }
            shadow[off..off + size].copy_from_slice(&data);
            writes += 1;
        } else {
            let mut buf = vec![0u8; size];
            let n = fd
                .read_at(&mut buf, base + off as u64)
                .map_err(|e| format!("{what}: pread of {size} at {off:#x}: {e}"))?;
            if n != size {
                return Err(format!("{what}: pread of {size} at {off:#x}: {n} bytes"));
            }
            if let Some(d) = mm::first_difference(&buf, &shadow[off..off + size]) {
                return Err(format!(
                    "{what}: pread of {size} at {off:#x}: byte {d} is {:#x}, written {:#x}",
                    buf[d],
                    shadow[off + d]
                ));
            }
            reads += 1;
        }
        board.bump(c);
        i += 1;
    }
    Ok(format!("{what}: {reads} reads, {writes} writes"))
}

/// VFIO_DEVICE_RESET in a loop with short random pauses. EAGAIN (the PCI device lock is held
/// by another reset or a probe) is counted, not an error.
pub(crate) fn reset_thread(
    fd: &File,
    mut rng: Rng,
    until: Until,
    board: &Board,
    c: usize,
) -> Result<String, String> {
    let (mut ok, mut busy, mut i) = (0u64, 0u64, 0u64);
    while !done(until, board, i) {
        match ioctl_val(fd, ioctl::VFIO_DEVICE_RESET, 0) {
            Ok(_) => ok += 1,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => busy += 1,
            Err(e) => return Err(format!("VFIO_DEVICE_RESET #{i}: {e}")),
        }
        board.bump(c);
        i += 1;
        std::thread::sleep(Duration::from_millis(rng.below(50)));
    }
    Ok(format!("resets: {ok} done, {busy} EAGAIN"))
}

/// Config space: the vendor ID read (it must always read NVIDIA's), the emulated BAR2..5
/// registers sized (all-ones written, read back) and restored, while resets reset them.
pub(crate) fn config_thread(
    fd: &File,
    until: Until,
    board: &Board,
    c: usize,
) -> Result<String, String> {
    let cfg = (7u64) << nvgrace_guest_tests::vfio::VFIO_PCI_OFFSET_SHIFT;
    let rw = |off: u64, data: Option<[u8; 4]>| -> Result<[u8; 4], String> {
        let mut b = data.unwrap_or([0; 4]);
        let n = match data {
            Some(d) => fd.write_at(&d, cfg + off),
            None => fd.read_at(&mut b, cfg + off),
        }
        .map_err(|e| format!("config {off:#x}: {e}"))?;
        if n != 4 {
            return Err(format!("config {off:#x}: {n} of 4 bytes"));
        }
        Ok(b)
    };
    let mut i = 0;
    while !done(until, board, i) {
        let id = rw(0, None)?;
        if u16::from_le_bytes([id[0], id[1]]) != hw::NVIDIA_VENDOR_ID {
            return Err(format!("vendor ID read {id:x?}"));
        }
        let (res, use_) = (hw::RESMEM_BAR_OFFSET, hw::USEMEM_BAR_OFFSET);
        for bar in [res, res + 4, use_, use_ + 4] {
            let old = rw(bar, None)?;
            rw(bar, Some([0xff; 4]))?;
            rw(bar, None)?;
            rw(bar, Some(old))?;
        }
        board.bump(c);
        i += 1;
    }
    Ok(format!("config: {i} rounds"))
}
