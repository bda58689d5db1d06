// SPDX-License-Identifier: GPL-2.0

//! The GPU model's state share in the guest (`/mnt/model`, see tests/gpu-model/README.md): the
//! control file that changes its readiness behaviour at runtime, and its access log.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::hw;

/// Where vm-run mounts the model's state directory in the guest.
pub const STATE_DIR: &str = "/mnt/model";

fn path(name: &str) -> String {
    format!("{STATE_DIR}/{name}")
}

/// Whether the state share is mounted (the model's control file can be written).
pub fn available() -> bool {
    Path::new(&path("access.log")).exists()
}

/// Whether the rig's GPU reports readiness through the BAR0 status registers (gh200, gb200,
/// gb300: the drivers' legacy 30 s wait). The `cxl` variant reports it in its CXL DVSEC, with
/// other timeouts, and its polls are config reads.
pub fn readiness_via_bar0() -> bool {
    crate::rig_gpu() != "cxl"
}

/// Replaces the model's control file with these `key=value` settings, atomically (written to
/// `control.tmp`, then renamed over `control`), so the model never reads a half-written file.
/// Keys left out take the model's command-line values again. The model applies `ready_delay_ms`
/// and `never_ready` at the next reset.
pub fn set_control(settings: &[(&str, &str)]) -> io::Result<()> {
    let mut text = String::from("# written by the guest tests\n");
    for (k, v) in settings {
        text.push_str(&format!("{k}={v}\n"));
    }
    let tmp = path("control.tmp");
    fs::write(&tmp, text).map_err(|e| io::Error::new(e.kind(), format!("{tmp}: {e}")))?;
    fs::rename(&tmp, path("control"))
        .map_err(|e| io::Error::new(e.kind(), format!("rename {tmp}: {e}")))
}

/// Restores the command-line settings (an empty control file).
pub fn reset_control() -> io::Result<()> {
    set_control(&[])
}

/// A position in the access log: only lines written after it are read back.
#[derive(Clone, Copy, Debug)]
pub struct LogMark(u64);

/// The current end of the access log.
pub fn log_mark() -> io::Result<LogMark> {
    Ok(LogMark(fs::metadata(path("access.log"))?.len()))
}

/// The complete lines the model logged since `mark`, as written (with the model's `t=` times
/// when it logs them).
fn raw_log_since(mark: LogMark) -> io::Result<Vec<String>> {
    let f = fs::File::open(path("access.log"))?;
    let len = f.metadata()?.len();
    let mut buf = vec![0u8; len.saturating_sub(mark.0) as usize];
    let mut got = 0;
    while got < buf.len() {
        let n = f.read_at(&mut buf[got..], mark.0 + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    let text = String::from_utf8_lossy(&buf);
    // Drop a trailing partial line (the model writes whole lines, but be safe).
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    Ok(complete.lines().map(str::to_string).collect())
}

/// The complete lines the model logged since `mark`, without their times: the same lines
/// whether or not the model logs times (`gpu-model --log-times`).
pub fn log_since(mark: LogMark) -> io::Result<Vec<String>> {
    Ok(raw_log_since(mark)?
        .iter()
        .map(|l| split_time(l).0.to_string())
        .collect())
}

/// The complete lines the model logged since `mark`, each without its time and with it: the
/// model's `t=<ns>` (nanoseconds since it started, on its monotonic clock), `None` on a line
/// without one (a model started without `--log-times`).
pub fn timed_log_since(mark: LogMark) -> io::Result<Vec<(String, Option<u64>)>> {
    Ok(raw_log_since(mark)?
        .iter()
        .map(|l| {
            let (text, t) = split_time(l);
            (text.to_string(), t)
        })
        .collect())
}

/// A log line split into its text and its trailing ` t=<ns>` time, if it has one.
pub fn split_time(line: &str) -> (&str, Option<u64>) {
    if let Some((text, ns)) = line.rsplit_once(" t=") {
        // Digits only: `str::parse` would take a sign.
        if ns.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(t) = ns.parse() {
                return (text, Some(t));
            }
        }
    }
    (line, None)
}

/// A BAR0 read the model logged: `(offset, value)` of `bar0-read off=0x1498 len=4 val=0x000000ff`.
pub fn bar0_read(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("bar0-read ")?;
    let mut off = None;
    let mut val = None;
    for kv in rest.split_whitespace() {
        if let Some(v) = kv.strip_prefix("off=0x") {
            off = u64::from_str_radix(v, 16).ok();
        } else if let Some(v) = kv.strip_prefix("val=0x") {
            val = u64::from_str_radix(v, 16).ok();
        }
    }
    Some((off?, val?))
}

/// BAR0 offset of the C2C link status register the drivers poll for readiness.
pub const C2C_LINK_STATUS: u64 = hw::BAR0_C2C_LINK_STATUS;
/// BAR0 offset of the HBM training status register the drivers poll for readiness.
pub const HBM_TRAINING_STATUS: u64 = hw::BAR0_HBM_TRAINING_STATUS;
/// The value both status registers read when the GPU is ready.
pub const STATUS_READY: u64 = hw::BAR0_STATUS_READY as u64;

/// Config-space offset of the `cxl` variant's CXL Range 1 Size Low register (its CXL Device
/// DVSEC at 0x110, register at +0x1c; tests/gpu-model/README.md), which the drivers poll.
pub const CXL_RANGE1_SIZE_LOW: u64 = 0x12c;
/// Range 1 Size Low bit 0: Memory_Info_Valid (CXL r4.0 8.1.3.8.2).
pub const CXL_MEM_INFO_VALID: u32 = 1 << 0;
/// Range 1 Size Low bit 1: Memory_Active.
pub const CXL_MEM_ACTIVE: u32 = 1 << 1;

/// The values of the 4-byte reads of CXL Range 1 Size Low in `lines` (the drivers' CXL
/// readiness polls), in order.
pub fn cxl_status_reads(lines: &[String]) -> Vec<u32> {
    let prefix = format!("cfg-read off={CXL_RANGE1_SIZE_LOW:#05x} len=4 val=0x");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|v| u32::from_str_radix(v, 16).ok())
        .collect()
}

/// What the access log says about the driver's readiness polling after a reset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadinessPolls {
    /// `reset` lines.
    pub resets: usize,
    /// Reads of the C2C status register that found the GPU not ready.
    pub not_ready_reads: usize,
    /// Reads of the C2C status register that found it ready.
    pub ready_reads: usize,
}

/// Counts the resets and C2C status reads in `lines`.
pub fn readiness_polls(lines: &[String]) -> ReadinessPolls {
    let mut p = ReadinessPolls::default();
    for l in lines {
        if l.starts_with("reset ") {
            p.resets += 1;
        } else if let Some((off, val)) = bar0_read(l) {
            if off == C2C_LINK_STATUS {
                if val == STATUS_READY {
                    p.ready_reads += 1;
                } else {
                    p.not_ready_reads += 1;
                }
            }
        }
    }
    p
}

/// The last few lines, for failure messages.
pub fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_time_takes_the_models_time_off() {
        assert_eq!(
            split_time("reset cause=flr t=8127009876"),
            ("reset cause=flr", Some(8_127_009_876))
        );
        assert_eq!(
            split_time("bar0-read off=0x0000 len=4 val=0x00000000 t=0"),
            ("bar0-read off=0x0000 len=4 val=0x00000000", Some(0))
        );
        for plain in [
            "reset cause=flr",
            "ready",
            "cfg-read off=0x000 len=3 data=de1042",
            "odd t=",
            "odd t=12x",
            "odd t=+12",
        ] {
            assert_eq!(split_time(plain), (plain, None));
        }
    }
}
