// SPDX-License-Identifier: GPL-2.0

//! Copies between GPU memory and user memory under `memory_lock`, which the fault handler of
//! this device's mappings takes too: a user buffer may itself be such a mapping, not yet faulted
//! in, and a fault taken while holding the lock would take it a second time, which deadlocks
//! once a reset waits for it in between (rwsem readers queue behind a waiting writer). So the
//! copies run with page faults disabled, and the pages they stop at are faulted in after the
//! lock is dropped (the pattern of the page-cache write path, `generic_perform_write()`).
//!
//! C header: [`include/linux/uaccess.h`](srctree/include/linux/uaccess.h),
//! [`include/linux/pagemap.h`](srctree/include/linux/pagemap.h)

use core::marker::PhantomData;

use kernel::{
    prelude::*,
    uaccess::UserPtr, //
};

use super::bindings;

/// Page faults disabled for the current task while it lives (`pagefault_disable()`): a user
/// access that would fault fails instead (`copy_to_user()` returns the bytes it did not copy).
/// Nests; does not disable preemption.
///
/// # Invariants
///
/// [`NoPageFaults::new`] raised the current task's pagefault-disabled count once for this
/// value, on the task that owns it (the raw-pointer marker makes it neither `Send` nor `Sync`).
pub(crate) struct NoPageFaults(PhantomData<*mut ()>);

impl NoPageFaults {
    /// Disables page faults until the returned guard is dropped, on the same task (the guard
    /// is neither `Send` nor `Sync`).
    pub(crate) fn new() -> Self {
        // SAFETY: Increments the task's pagefault-disabled count; `drop` decrements it.
        unsafe { bindings::nvgrace_helper_pagefault_disable() };
        // INVARIANT: Raised once, on this task.
        NoPageFaults(PhantomData)
    }
}

impl Drop for NoPageFaults {
    fn drop(&mut self) {
        // SAFETY: Balances the increment of `new`, on the same task.
        unsafe { bindings::nvgrace_helper_pagefault_enable() };
    }
}

/// Copies `src` to user memory at `buf` (`copy_to_user()`): `EFAULT` unless every byte was
/// copied. What `UserSlice::new(buf, src.len()).writer().write_slice(src)` does, without the
/// writer's bookkeeping and `write_slice()`'s own out-of-line call, a measurable part of the
/// emulated config read, which copies at most 16 bytes (counts in Documentation/performance.md).
#[inline(always)]
pub(crate) fn copy_to_user(buf: UserPtr, src: &[u8]) -> Result {
    // SAFETY: `src` is valid for reading `src.len()` bytes; `copy_to_user()` checks `buf` with
    // `access_ok()` and returns the bytes it could not copy.
    let left = unsafe {
        bindings::copy_to_user(
            buf.as_mut_ptr(),
            src.as_ptr().cast(),
            src.len() as kernel::ffi::c_ulong,
        )
    };
    if left == 0 {
        Ok(())
    } else {
        Err(EFAULT)
    }
}

/// `Ok` when a fault-in of `len` bytes that left `left` of them got at least the first page:
/// the copy can make progress (and stops again where the fault-in did). `EFAULT` otherwise.
fn faulted_in_any(left: usize, len: usize) -> Result {
    if len == 0 || left < len {
        Ok(())
    } else {
        Err(EFAULT)
    }
}

/// Faults in `len` bytes of user memory at `buf` for writing. Where the architecture has
/// sub-page faults (arm64 MTE: `CONFIG_ARCH_HAS_SUBPAGE_FAULTS`) with
/// `fault_in_subpage_writeable()`, which also probes each sub-page (it writes zeros to the
/// start of each page, a destination that the copy overwrites); elsewhere with
/// `fault_in_safe_writeable()`, which changes nothing. Both work on PFN mappings. `EFAULT` if
/// not even the first page can be.
pub(crate) fn fault_in_writeable(buf: UserPtr, len: usize) -> Result {
    #[cfg(CONFIG_ARCH_HAS_SUBPAGE_FAULTS)]
    // SAFETY: The function checks the user range itself (`user_write_access_begin()`).
    let left = unsafe { bindings::fault_in_subpage_writeable(buf.as_mut_ptr().cast(), len) };
    #[cfg(not(CONFIG_ARCH_HAS_SUBPAGE_FAULTS))]
    // SAFETY: The function checks the user range itself and faults it in through the MM; it
    // writes nothing.
    let left = unsafe { bindings::fault_in_safe_writeable(buf.as_const_ptr().cast(), len) };
    faulted_in_any(left, len)
}

/// Faults in `len` bytes of user memory at `buf` for reading (`fault_in_readable()`). `EFAULT`
/// if not even the first page can be.
pub(crate) fn fault_in_readable(buf: UserPtr, len: usize) -> Result {
    // SAFETY: The function checks the user range itself and only reads it.
    let left = unsafe { bindings::fault_in_readable(buf.as_const_ptr().cast(), len) };
    faulted_in_any(left, len)
}

/// `EINTR` when the current task has a fatal signal pending (`fatal_signal_pending()`): a copy
/// loop that faults user pages in stops then, as `generic_perform_write()` does.
pub(crate) fn fatal_signal_check() -> Result {
    // SAFETY: Reads the current task's signal state; no preconditions.
    if unsafe { bindings::nvgrace_helper_fatal_signal_pending() } {
        Err(EINTR)
    } else {
        Ok(())
    }
}
