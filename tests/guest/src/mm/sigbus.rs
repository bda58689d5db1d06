// SPDX-License-Identifier: GPL-2.0

//! A SIGBUS recorder for memory-failure reports (the signal's count and the last siginfo), and
//! early kill.

use std::io;
use std::sync::atomic::AtomicI32;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

/// What the SIGBUS recorder saw: the number of SIGBUS deliveries and the siginfo of the last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigbusRecord {
    /// How many SIGBUS were delivered since the recorder was installed.
    pub count: u32,
    /// `si_code` of the last one.
    pub code: i32,
    /// `si_addr` of the last one.
    pub addr: usize,
    /// `si_addr_lsb` of the last one (the size of the affected unit, as a power of two).
    pub addr_lsb: i32,
}

static SIGBUS_COUNT: AtomicU32 = AtomicU32::new(0);
static SIGBUS_CODE: AtomicI32 = AtomicI32::new(0);
static SIGBUS_ADDR: AtomicUsize = AtomicUsize::new(0);
static SIGBUS_LSB: AtomicI32 = AtomicI32::new(0);

/// Offset of `si_addr_lsb` in `siginfo_t` on 64-bit Linux: `si_signo`, `si_errno`, `si_code`,
/// padding to 16, then the `_sigfault` union: `void *_addr` (16..24) and `short _addr_lsb` at 24
/// (include/uapi/asm-generic/siginfo.h). The libc crate has no accessor for it.
pub const SI_ADDR_LSB_OFFSET: usize = 24;

extern "C" fn record_sigbus(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    // SAFETY: The kernel passes a valid siginfo for SA_SIGINFO handlers; SIGBUS fills _sigfault.
    unsafe {
        SIGBUS_CODE.store((*info).si_code, Ordering::SeqCst);
        SIGBUS_ADDR.store((*info).si_addr() as usize, Ordering::SeqCst);
        let lsb =
            std::ptr::read_unaligned((info as *const u8).add(SI_ADDR_LSB_OFFSET) as *const i16);
        SIGBUS_LSB.store(lsb as i32, Ordering::SeqCst);
    }
    SIGBUS_COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Installs an `SA_SIGINFO` SIGBUS handler that records the deliveries and returns (without
/// `SA_RESTART`: an interrupted blocking call fails with EINTR). Only for signals sent by the
/// kernel outside a faulting access (memory-failure reports): returning from a SIGBUS raised by
/// a failed load would retry the load forever.
pub fn install_sigbus_recorder() -> io::Result<()> {
    SIGBUS_COUNT.store(0, Ordering::SeqCst);
    // SAFETY: An all-zero sigaction is a valid starting point.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = record_sigbus as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `sa.sa_mask` is a valid sigset to initialise.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: Installs a handler that only touches atomics (async-signal-safe).
    if unsafe { libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the SIGBUS recorder has seen so far.
pub fn sigbus_record() -> SigbusRecord {
    SigbusRecord {
        count: SIGBUS_COUNT.load(Ordering::SeqCst),
        code: SIGBUS_CODE.load(Ordering::SeqCst),
        addr: SIGBUS_ADDR.load(Ordering::SeqCst),
        addr_lsb: SIGBUS_LSB.load(Ordering::SeqCst),
    }
}

/// Opts the calling process into early kill (`prctl(PR_MCE_KILL, PR_MCE_KILL_SET,
/// PR_MCE_KILL_EARLY)`): memory-failure then also signals it (BUS_MCEERR_AO) for errors found
/// outside its own accesses, e.g. a page poisoned by another process.
pub fn set_mce_early_kill() -> io::Result<()> {
    // SAFETY: A prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_MCE_KILL,
            libc::PR_MCE_KILL_SET,
            libc::PR_MCE_KILL_EARLY,
            0,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
