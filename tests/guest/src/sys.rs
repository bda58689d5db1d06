// SPDX-License-Identifier: GPL-2.0

//! sysfs, module and kernel-log helpers.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::PathBuf;

/// The sysfs directory of a PCI function.
pub fn pci_dir(bdf: &str) -> PathBuf {
    PathBuf::from("/sys/bus/pci/devices").join(bdf)
}

/// The name of the driver bound to a PCI function, if any.
pub fn bound_driver(bdf: &str) -> Option<String> {
    let link = fs::read_link(pci_dir(bdf).join("driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Reads a sysfs attribute, trimmed.
pub fn read_attr(path: impl Into<PathBuf>) -> io::Result<String> {
    let path = path.into();
    fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Writes a sysfs attribute.
pub fn write_attr(path: impl Into<PathBuf>, value: &str) -> io::Result<()> {
    let path = path.into();
    fs::write(&path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Unbinds a PCI function from its driver, if it has one.
pub fn unbind(bdf: &str) -> io::Result<()> {
    if bound_driver(bdf).is_some() {
        write_attr(pci_dir(bdf).join("driver/unbind"), bdf)?;
    }
    Ok(())
}

/// Removes a module (`delete_module(2)` without O_TRUNC: fails with EBUSY while it is in use).
pub fn rmmod(name: &str) -> io::Result<()> {
    let c = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, c.as_ptr(), libc::O_NONBLOCK) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a module is loaded.
pub fn module_loaded(name: &str) -> bool {
    PathBuf::from("/sys/module").join(name).exists()
}

/// The kernel log, one record a line (the text of `/dev/kmsg` records). Fails when the log no
/// longer holds every record since boot (see [`lost`]).
pub fn kernel_log() -> io::Result<Vec<String>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")?;
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut first = true;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                // "prio,seq,time,flags;text\n" followed by " KEY=value\n" dictionary lines.
                let Some((prefix, text)) = rec.split_once(';') else {
                    continue;
                };
                if first {
                    first = false;
                    let seq = prefix.split(',').nth(1).and_then(|s| s.parse::<u64>().ok());
                    if seq != Some(0) {
                        return Err(lost(format!(
                            "its oldest record is number {}",
                            seq.map_or("?".into(), |s| s.to_string())
                        )));
                    }
                }
                lines.push(text.lines().next().unwrap_or("").to_string());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // EPIPE: records were overwritten while reading.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                return Err(lost("records were overwritten while it was read".into()))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(lines)
}

/// The error of a kernel log that no longer holds every record since boot: a splat check on it
/// could miss a report, or see only the tail of one. scripts/vm-run boots with a log buffer
/// (`log_buf_len`) that holds every run of the suite.
fn lost(why: String) -> io::Error {
    io::Error::other(format!(
        "the kernel log lost records ({why}): the log buffer is too small for this run"
    ))
}

/// Markers of kernel splats: warnings, bugs, oopses, lockdep and KASAN reports, hung tasks.
///
/// The debug kernel's checkers (scripts/kconfig/debug.config) report through these too: lockdep
/// ("WARNING: possible circular locking dependency detected", "... recursive locking ...",
/// "inconsistent lock state"), DEBUG_ATOMIC_SLEEP ("BUG: sleeping function called from invalid
/// context"), DEBUG_VM ("kernel BUG at", "BUG: Bad page map"), KASAN ("BUG: KASAN: ..."). kmemleak
/// reports leaks in debugfs, which kmemleak_check reads; in the log it only says when it
/// disabled itself after an internal error, which voids that check.
const SPLAT_MARKERS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "Oops",
    "general protection fault",
    "Call Trace:",
    // arm64: dump_backtrace() (arch/arm64/kernel/stacktrace.c), kernel faults
    // (arch/arm64/mm/fault.c die_kernel_fault()), SErrors (arch/arm64/kernel/traps.c).
    "Call trace:",
    "Unable to handle kernel",
    "SError Interrupt",
    "possible circular locking dependency",
    "possible recursive locking",
    "inconsistent lock state",
    "suspicious RCU usage",
    "KASAN:",
    "UBSAN:",
    "blocked for more than",
    "kernel BUG at",
    "unreferenced object",
    "memory leak detector disabled",
];

/// The header of lockdep's report of a circular locking dependency.
const LOCKDEP_CIRCULAR: &str = "WARNING: possible circular locking dependency detected";
/// The line that ends a report's stack backtrace on x86 (arm64 has none: its reports are taken
/// to [`REPORT_MAX_LINES`]).
const TRACE_END: &str = "</TASK>";
/// Lines a lockdep report takes at most (header, chain, scenario, locks held, backtrace).
const REPORT_MAX_LINES: usize = 200;

/// What the kernel log reports.
pub struct KernelReports {
    /// The lines that report a splat.
    pub splats: Vec<String>,
    /// Reports left out of `splats` because they are of a listed difference of the build under
    /// test (see [`crate::differences::listed_kernel_report`]): the difference number and the
    /// report's header line.
    pub listed: Vec<(u32, String)>,
}

/// The splats in the kernel log, and the reports of listed differences left out of them.
pub fn kernel_reports() -> io::Result<KernelReports> {
    let log = kernel_log()?;
    let mut splats = Vec::new();
    let mut listed = Vec::new();
    let mut i = 0;
    while i < log.len() {
        if log[i].contains(LOCKDEP_CIRCULAR) {
            let end = log[i..]
                .iter()
                .take(REPORT_MAX_LINES)
                .position(|l| l.contains(TRACE_END))
                .map_or((i + REPORT_MAX_LINES).min(log.len()), |k| i + k + 1);
            let report = &log[i..end];
            if let Some(n) = crate::differences::listed_kernel_report(report) {
                listed.push((n, log[i].trim().to_string()));
                i = end;
                continue;
            }
        }
        if SPLAT_MARKERS.iter().any(|m| log[i].contains(m)) {
            splats.push(log[i].clone());
        }
        i += 1;
    }
    Ok(KernelReports { splats, listed })
}

/// The kernel log lines that report a splat (reports of a listed difference of the build under
/// test left out).
pub fn splats() -> io::Result<Vec<String>> {
    Ok(kernel_reports()?.splats)
}

/// The test every program ends with: the kernel log reports no splat, other than the report of
/// a listed difference of the build under test, which is printed as a diagnostic.
pub fn no_kernel_splat() -> crate::tap::Outcome {
    let KernelReports { splats, listed } = kernel_reports()?;
    for (n, header) in listed {
        crate::tap::diag(format!(
            "the kernel log has the report of difference {n} (tests/guest/src/differences.rs), expected of this build: {header}"
        ));
    }
    if !splats.is_empty() {
        return Err(crate::tap::Failure::Fail(format!(
            "kernel log reports:\n{}",
            splats.join("\n")
        )));
    }
    Ok(())
}
