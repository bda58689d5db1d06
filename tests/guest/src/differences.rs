// SPDX-License-Identifier: GPL-2.0

//! The deliberate differences between the Rust driver and upstream, in one place. Every other
//! behaviour must be the same for both builds; these have their own assertions, per build.
//!
//! 1. **Config accesses over more than one emulated BAR register.** Upstream's
//!    `nvgrace_gpu_read_config_emu()`/`_write_config_emu()` look for the first of BAR2/3 and
//!    BAR4/5 that the access overlaps and emulate only that one: the rest of the window reads
//!    vfio-pci-core's value of the physical register (and writes of it are dropped). When the
//!    device has no resmem, an access that also touches BAR2/3 does not emulate BAR4/5 at all.
//!    The Rust driver emulates every emulated register the access overlaps.
//!    Tests: `config_test` (`multi_bar_read`, `multi_bar_write`, `no_resmem_straddle`).
//! 2. **Readiness polling.** Upstream sleeps 1 s between readiness polls after a reset, so the
//!    first access after a reset costs up to a second more than the device needs. The Rust
//!    driver polls at an interval of max(1 ms, 1/256 of the time waited), up to 1 s, on an
//!    hrtimer, with the same budget.
//!    On the CXL path with readiness that flaps (device_fault_test), upstream's two tests of
//!    Memory_Active, when the access starts and 1 s later, can both land in not-ready periods,
//!    and the access fails with ETIME; the Rust driver's polls find a ready period.
//!    Tests: `readiness_poll_test` (BAR0 and CXL paths); `device_fault_test`
//!    (`flapping_readiness_succeeds_or_fails_cleanly`).
//! 3. **resmem reads and writes that cross the end of the memory** (found while testing, kept
//!    on purpose). Upstream's `nvgrace_gpu_read_mem()`/`_write_mem()` return the byte count of
//!    `vfio_pci_core_do_io_rw()` as if it were an error code for resmem, so such a read returns
//!    only the bytes of memory (a short read, no all-ones fill, position not advanced) and such
//!    a write returns only the bytes written. usemem, and upstream's own comments, have the
//!    intended behaviour: the full count, all-ones past the memory, writes there dropped. The
//!    Rust driver does that for both regions. A user that retries short reads sees the same
//!    bytes either way; QEMU, which treats a short BAR read as an error, works only with ours.
//!    Test: `region_rw_test` (`resmem_boundaries`, `resmem_widths_and_large`).
//!    The same early return leaves the file position of every resmem access where it was;
//!    the Rust driver moves it, as for usemem and every region of vfio-pci-core. No user can
//!    see that: the device fd has no llseek, so read(2)/write(2) start at position 0 (BAR0)
//!    and cannot reach an emulated BAR, and pread/pwrite do not use the position.
//!    Test: `file_ops_test` (`file_position_unreachable`), which fails if that ever changes.
//! 4. **Private mappings of the emulated BARs** (found by the fuzzer, a crash upstream).
//!    Upstream's `nvgrace_gpu_mmap()` accepts `MAP_PRIVATE`, which makes a copy-on-write
//!    mapping; its first fault calls `vmf_insert_pfn()`, whose `BUG_ON()` for PFN maps that are
//!    copy-on-write (mm/memory.c) oopses the kernel with `memory_lock` held, and the device is
//!    wedged. Any holder of the device fd can do this. The Rust driver refuses private mappings
//!    with EINVAL, as vfio-pci-core's own `vfio_pci_core_mmap()` does for the BARs it maps.
//!    Tests: `mmap_test` (`private_mapping`), `fuzz_test` (its mmaps; it never touches a private
//!    mapping, so that upstream survives the run).
//! 5. **A read or write whose user buffer is a mapping of the device's own memory** (found
//!    while testing). Upstream's `nvgrace_gpu_read_mem()`/`_write_mem()` copy to and from the
//!    user buffer while holding `memory_lock` for reading. When the buffer is a mapping of the
//!    device's GPU memory that is not faulted in, the copy faults, and the fault handler
//!    (`nvgrace_gpu_vfio_pci_huge_fault()`) takes `memory_lock` for reading a second time. A
//!    reset (`VFIO_DEVICE_RESET`, which takes it for writing) that comes in between blocks that
//!    second read, since rwsem readers queue behind a waiting writer: the copying thread, the
//!    reset and then everything that needs the mm or the device (munmap, close, unbind) hang
//!    for good, in uninterruptible sleep. The Rust driver copies with page faults disabled under
//!    the lock and faults the buffer in after dropping it (src/vfio/uaccess.rs).
//!    Test: `concurrency_test` (`user_buffer_in_device_mapping`), which is not run against
//!    upstream, where it wedges the guest; it reports a skip there that `scripts/tapsum` does
//!    not count as a difference between the builds (its reason starts with "difference 5").
//!    On the debug kernel (`make check-debug`) lockdep reports the same inversion for upstream
//!    without any hostile input, as soon as a pread has copied to user memory under
//!    `memory_lock` and a fault has taken it under `mmap_lock` ("possible circular locking
//!    dependency detected", `&mm->mmap_lock` and `&vdev->memory_lock`, `nvgrace_gpu_read` or
//!    `nvgrace_gpu_write` in the chain); the splat checks of upstream runs leave that report
//!    out and print it (`listed_kernel_report`, `sys::no_kernel_splat`). Lockdep turns itself
//!    off after its first report, so the rest of such a boot is not checked for lock bugs.
//! 6. **Poisoned pages stay poisoned** (beyond upstream). GPU memory has no `struct page`, so
//!    nothing in the MM remembers that memory-failure reported one of its pages, and upstream
//!    7.3 keeps no state of its own: once a reset, munmap or close has zapped the mapping, the
//!    next fault maps the bad page again, and a pread/pwrite reads or writes it through the
//!    kernel's mapping (consuming the poison in kernel context on real hardware). The Rust
//!    driver records each PFN that memory-failure's callback reports (src/device/poison.rs), from
//!    probe to remove: a fault on it gets SIGBUS `BUS_MCEERR_AR` (VM_FAULT_HWPOISON), a huge
//!    fault over it falls back to smaller entries so the good pages around it still map, a
//!    read or write that touches it fails with EIO, and debugfs
//!    (`nvgrace_gpu_vfio_pci/<device>/poisoned_pages`) and the kernel log list it. Neither
//!    driver unmaps what is already mapped when the failure is reported.
//!    Tests: `poison_test`; `concurrency_test` (`memory_failure_while_faulting`: the faulting
//!    process may get that SIGBUS after a reset, with the Rust driver only).
//! 7. **Concurrent writes of an emulated BAR register** (found by bar_race_test, on x86).
//!    Upstream's `nvgrace_gpu_write_config_emu()` copies the user's bytes straight into the
//!    register (`copy_from_user()` into `bar_val`), and `nvgrace_gpu_read_config_emu()` reads it
//!    without a lock. A user copy may store a byte at a time (x86's `rep movsb`, which TCG runs as
//!    a byte loop), so a concurrent reader can get some bytes of the old value and some of the
//!    new: `0xffe000000c` from writers of 0 and all-ones to BAR4, in about one boot of 16 here.
//!    On arm64 an aligned 8-byte user copy is one store, which hides it. The Rust driver stores
//!    each write whole under its register lock and reads under a sequence count
//!    (`config_emu::EmuBarRegs`): every read is a value the register held. No write is lost with
//!    either driver (upstream copies only the bytes the access covers).
//!    Test: `bar_race_test` (for upstream, each byte of a read must be a byte some write stored
//!    there; for ours, the value itself).

/// Which build of the driver the rig bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// This project's Rust driver.
    Rust,
    /// The upstream C driver.
    Upstream,
}

/// The build under test (`RIG_DRIVER`), `None` when no driver is bound.
pub fn build() -> Option<Build> {
    match crate::rig_driver().as_str() {
        "rust" => Some(Build::Rust),
        "upstream" => Some(Build::Upstream),
        _ => None,
    }
}

/// Difference 3: whether a resmem access that crosses the end of the memory stops at it.
pub fn resmem_stops_at_memlength() -> bool {
    build() == Some(Build::Upstream)
}

/// Difference 4: whether `mmap(MAP_PRIVATE)` of an emulated BAR is refused (EINVAL).
pub fn private_mmap_refused() -> bool {
    build() == Some(Build::Rust)
}

/// Difference 5: whether the driver copies to and from the user buffer of a read or write
/// while holding `memory_lock`, which deadlocks when that buffer is an unfaulted mapping of the
/// device and a reset comes in between.
pub fn copies_under_memory_lock() -> bool {
    build() == Some(Build::Upstream)
}

/// Difference 6: whether a page that memory-failure reported is refused from then on (faults
/// SIGBUS, reads and writes EIO, huge faults over it fall back).
pub fn poisoned_pages_stay_poisoned() -> bool {
    build() == Some(Build::Rust)
}

/// Difference 7: whether a config read of an emulated BAR register returns a value the register
/// held, never a mix of the bytes of a concurrent write and those before it.
pub fn bar_reads_whole() -> bool {
    build() == Some(Build::Rust)
}

/// The listed difference a kernel log report belongs to, if the build under test has it: the
/// lines of one report, from its header to the end of its backtrace. Only lockdep's report of
/// difference 5 for the upstream build is known.
pub fn listed_kernel_report(report: &[String]) -> Option<u32> {
    let has = |s: &str| report.iter().any(|l| l.contains(s));
    let difference_5 = copies_under_memory_lock()
        && has("possible circular locking dependency detected")
        && has("&mm->mmap_lock")
        && has("&vdev->memory_lock")
        && (has("nvgrace_gpu_read+") || has("nvgrace_gpu_write+"));
    difference_5.then_some(5)
}
