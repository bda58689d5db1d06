// SPDX-License-Identifier: GPL-2.0

//! `read` and `write` of the emulated BARs (upstream `nvgrace_gpu_read_mem()`,
//! `nvgrace_gpu_write_mem()`).
//!
//! The BAR is a power of two while the memory behind it may not be: accesses starting at or
//! beyond the BAR size fail with `EINVAL`, the part beyond the BAR size is clipped, and the part
//! between the memory's end and the BAR's end reads as all-ones and drops writes.
//!
//! The copy between the memory and the user buffer runs under `memory_lock` with page faults
//! disabled; where it stops at a user page that is not mapped, that page is faulted in after the
//! lock is dropped and the copy resumes (the buffer may be a mapping of this very device, whose
//! fault handler takes `memory_lock` too; see vfio/uaccess.rs). Rounds that keep copying
//! nothing although the page was just faulted in (an arm64 MTE tag mismatch, an injected
//! usercopy failure) end the call with `EFAULT`, as upstream's single copy does; a fatal signal
//! ends it with `EINTR`.

use kernel::{
    prelude::*,
    uaccess::{
        UserPtr,
        UserSlice, //
    }, //
};

use super::{
    MemRegion,
    NvGraceGpu,
    Which, //
};
use crate::vfio::{
    core_device::CoreDevice,
    kmap::{
        Caching,
        KernelMap,
        LazyKernelMap, //
    },
    ops::split_pos,
    uaccess, //
};

/// The bytes of an access that reach memory, after clipping at the BAR: `(count, mem_count)`,
/// with `mem_count <= count`. `EINVAL` when the access starts at or beyond the BAR.
fn clip(offset: u64, count: usize, memlength: u64, bar_size: u64) -> Result<(usize, usize)> {
    if offset >= bar_size {
        return Err(EINVAL);
    }
    let count = (count as u64).min(bar_size - offset);
    let mem_count = if offset >= memlength {
        0
    } else {
        count.min(memlength - offset)
    };
    Ok((count as usize, mem_count as usize))
}

/// The region's kernel mapping, made on first use (upstream `nvgrace_gpu_map_device_mem()`):
/// usemem write-back, resmem write-combining. `ENOMEM` (or `EOVERFLOW`) when the mapping
/// cannot be made.
#[inline(always)]
fn kmap<'a, C: Caching>(
    vdev: &'a CoreDevice<NvGraceGpu>,
    slot: &'a LazyKernelMap<C>,
    which: Which,
) -> Result<&'a KernelMap<C>> {
    match slot.get() {
        Some(map) => Ok(map),
        None => kmap_first(vdev, slot, which),
    }
}

/// [`kmap`] on the first use of a region's mapping: makes it. Out of line, with its arguments
/// in registers, so that the common path sets up nothing for it.
#[cold]
#[inline(never)]
fn kmap_first<'a, C: Caching>(
    vdev: &'a CoreDevice<NvGraceGpu>,
    slot: &'a LazyKernelMap<C>,
    which: Which,
) -> Result<&'a KernelMap<C>> {
    slot.get_or_map(|| {
        KernelMap::new(vdev.data().memory(which)?).inspect_err(|e| {
            dev_err!(
                vdev.pdev().as_ref(),
                "cannot map {} into the kernel for read/write: error {}\n",
                which.name(),
                e.to_errno()
            )
        })
    })
}

/// The copy of [`copy_round`] through the region's mapping `map`.
#[inline(always)]
fn copy_with<C: Caching>(
    vdev: &CoreDevice<NvGraceGpu>,
    map: &KernelMap<C>,
    offset: u64,
    buf: UserPtr,
    len: usize,
    dir: Direction,
) -> Result<usize> {
    match dir {
        Direction::ToUser => map.read_to_user_nofault(vdev, offset, buf, len),
        Direction::FromUser => map.write_from_user_nofault(vdev, offset, buf, len),
    }
}

/// `EIO` if the `mem_count` bytes of memory at `offset` hold a page that memory-failure
/// reported (poison.rs): nothing of the access is copied, so the kernel never reads the
/// poison through its own mapping. A page reported while the copy runs is not seen.
// Always inline: its common case is one load of the poison count.
#[inline(always)]
fn refuse_poisoned(
    vdev: &CoreDevice<NvGraceGpu>,
    which: Which,
    offset: u64,
    mem_count: usize,
) -> Result {
    if vdev
        .data()
        .poison()
        .any_in_bytes(which, offset, mem_count as u64)
    {
        return Err(EIO);
    }
    Ok(())
}

/// Consecutive rounds that may copy nothing right after a successful fault-in before the call
/// fails with `EFAULT`. One such round proves nothing: when the user buffer is a mapping of a
/// device (this one included), a reset can zap it between the fault-in and the copy
/// (`concurrency_test`, `user_buffer_in_device_mapping`, saw it). A copy that cannot succeed
/// fails every round; each round costs a fault-in, so the bound is a few faults.
const MAX_STALLED_ROUNDS: u32 = 8;

/// Bytes of 0xFF written at a time to fill the part of a read beyond the memory.
const FILL_CHUNK: usize = 64;

/// Which way a copy goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// From GPU memory to the user buffer (`read`).
    ToUser,
    /// From the user buffer to GPU memory (`write`).
    FromUser,
}

/// Copies the `mem_count` bytes of region `which` at `offset` to or from the user buffer `buf`,
/// after readiness: the rounds under `memory_lock` with page faults disabled, and the fault-in
/// of the user page a round stopped at without the lock (vfio/uaccess.rs). Returns `EIO`,
/// before anything else, if the bytes hold a poisoned page (`refuse_poisoned`), the error of
/// the readiness check or the mapping, `EINTR` on a fatal signal, `EFAULT` when the user buffer
/// cannot be faulted in or [`MAX_STALLED_ROUNDS`] rounds in a row copied nothing.
///
/// A write into usemem that fails with `EFAULT` leaves the memory as upstream's
/// `copy_from_user()` does: zeroed from the first byte not copied. resmem's copy goes through a
/// bounce value and leaves the rest unchanged, as upstream's.
// Always inline: `read` and `write` are its two callers, each with a fixed `dir`, which leaves
// one straight path per direction.
#[inline(always)]
fn copy(
    vdev: &CoreDevice<NvGraceGpu>,
    which: Which,
    offset: u64,
    buf: UserPtr,
    mem_count: usize,
    dir: Direction,
) -> Result {
    refuse_poisoned(vdev, which, offset, mem_count)?;
    NvGraceGpu::wait_cxl_if_reset(vdev)?;
    // The first round copies everything unless a user page is not mapped in; the rest, with
    // its fault-ins, is out of line.
    let copied = copy_round(vdev, which, offset, buf, mem_count, dir)?;
    if copied == mem_count {
        return Ok(());
    }
    copy_rest(vdev, which, offset, buf, mem_count, dir, copied)
}

/// One round of [`copy`]: under `memory_lock`, after the readiness check (made even when
/// `len` is 0, as upstream's), the `len` bytes at `offset` of the region and `buf` with page
/// faults disabled. Returns the bytes copied.
// Always inline: every read and write runs one round, and a call per round cost its prologue.
#[inline(always)]
fn copy_round(
    vdev: &CoreDevice<NvGraceGpu>,
    which: Which,
    offset: u64,
    buf: UserPtr,
    len: usize,
    dir: Direction,
) -> Result<usize> {
    let guard = vdev.memory_read_lock();
    NvGraceGpu::check_ready(vdev, &guard)?;
    if len == 0 {
        return Ok(0);
    }
    let me = vdev.data();
    match which {
        Which::Usemem => {
            let map = kmap(vdev, &me.usemem_kmap, which)?;
            copy_with(vdev, map, offset, buf, len, dir)
        }
        Which::Resmem => {
            let map = kmap(vdev, &me.resmem_kmap, which)?;
            copy_with(vdev, map, offset, buf, len, dir)
        }
    }
}

/// The rest of [`copy`] after a first round that stopped at a user page after `done` bytes:
/// fault that page in without the lock, copy on, until done or one of `copy`'s errors.
#[cold]
#[inline(never)]
fn copy_rest(
    vdev: &CoreDevice<NvGraceGpu>,
    which: Which,
    offset: u64,
    buf: UserPtr,
    mem_count: usize,
    dir: Direction,
    mut done: usize,
) -> Result {
    // The first round has not faulted anything in yet.
    let mut stalled = u32::from(done == 0);
    loop {
        let r = if stalled > MAX_STALLED_ROUNDS {
            Err(EFAULT)
        } else {
            // The user page the copy stopped at, faulted in without memory_lock
            // (vfio/uaccess.rs).
            let (user, len) = (buf.wrapping_byte_add(done), mem_count - done);
            uaccess::fatal_signal_check().and_then(|()| match dir {
                Direction::ToUser => uaccess::fault_in_writeable(user, len),
                Direction::FromUser => uaccess::fault_in_readable(user, len),
            })
        };
        if let Err(e) = r {
            if e == EFAULT && dir == Direction::FromUser && which == Which::Usemem {
                let _guard = vdev.memory_read_lock();
                kmap(vdev, &vdev.data().usemem_kmap, which)?
                    .zero(offset + done as u64, mem_count - done)?;
            }
            return Err(e);
        }
        let copied = copy_round(
            vdev,
            which,
            offset + done as u64,
            buf.wrapping_byte_add(done),
            mem_count - done,
            dir,
        )?;
        done += copied;
        if done == mem_count {
            return Ok(());
        }
        stalled = if copied == 0 { stalled + 1 } else { 0 };
    }
}

/// Writes `len` bytes of 0xFF to the user buffer `buf`: the part of a read beyond the memory.
/// Out of line, since most reads stay inside the memory. `EFAULT` if `buf` is not writable.
#[inline(never)]
fn fill_ones(buf: UserPtr, len: usize) -> Result {
    let mut writer = UserSlice::new(buf, len).writer();
    let ones = [0xFFu8; FILL_CHUNK];
    while !writer.is_empty() {
        let n = writer.len().min(FILL_CHUNK);
        writer.write_slice(&ones[..n])?;
    }
    Ok(())
}

/// `read` of the emulated BAR of region `which` (`region`, which `*pos` is in): `count` bytes
/// at `*pos` into `buf`. Returns the bytes read and advances `*pos`.
#[inline(always)]
pub(super) fn read(
    vdev: &CoreDevice<NvGraceGpu>,
    which: Which,
    region: &MemRegion,
    buf: UserPtr,
    count: usize,
    pos: &mut i64,
) -> Result<usize> {
    let (_, offset) = split_pos(*pos);
    let (count, mem_count) = clip(offset, count, region.memlength, region.bar_size)?;
    copy(vdev, which, offset, buf, mem_count, Direction::ToUser)?;

    if count > mem_count {
        fill_ones(buf.wrapping_byte_add(mem_count), count - mem_count)?;
    }
    *pos += count as i64;
    Ok(count)
}

/// `write` of the emulated BAR of region `which` (`region`, which `*pos` is in): `count` bytes
/// from `buf` to `*pos`. Returns the bytes consumed (including dropped ones) and advances
/// `*pos`.
#[inline(always)]
pub(super) fn write(
    vdev: &CoreDevice<NvGraceGpu>,
    which: Which,
    region: &MemRegion,
    buf: UserPtr,
    count: usize,
    pos: &mut i64,
) -> Result<usize> {
    let (_, offset) = split_pos(*pos);
    let (count, mem_count) = clip(offset, count, region.memlength, region.bar_size)?;

    // Writes wholly beyond the memory are dropped without a readiness check, as upstream; any
    // other write checks readiness, even one of no bytes (upstream's `offset >= memlength` test).
    if offset < region.memlength {
        copy(vdev, which, offset, buf, mem_count, Direction::FromUser)?;
    }
    *pos += count as i64;
    Ok(count)
}
