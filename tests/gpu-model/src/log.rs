// SPDX-License-Identifier: GPL-2.0
//! The access log and the stderr logger.
//!
//! # Access log
//!
//! With `--state-dir DIR` the model writes `DIR/access.log` (truncated at
//! start). Each event is one line, written with a single `write` call and not
//! buffered, so a reader on the other side of a 9p share sees whole lines as
//! they happen. Fields are `key=value`, separated by one space; numbers are
//! lowercase hexadecimal with a `0x` prefix unless noted.
//!
//! ```text
//! start variant=gh200 device=0x2342            first line
//! ready                                        readiness returned (see below)
//! cfg-read off=0x018 len=4 val=0x0000000c      config space read
//! cfg-write off=0x004 len=2 val=0x0006         config space write
//! bar0-read off=0x1498 len=4 val=0x000000ff    BAR0 (MMIO registers) read
//! bar0-write off=0x0100 len=4 val=0x00000001   BAR0 write (ignored by the device)
//! bar2-read off=0x0000 len=8 val=0x0000000000000000
//! bar2-write off=0x1000 len=1 val=0x5a
//! bar4-read off=0x0000 len=4 val=0x00000000    BAR4 read (always 0; writes ignored)
//! reset cause=flr                              Device Control bit 15 written
//! reset cause=vfio-user                        the client's device reset
//! not-ready cause=control                      not_ready_now=1 in the control file
//! control ready_delay_ms=100 never_ready=0 power_on_delay_ms=100 cxl_timeout=0 flap_ready_ms=0 flap_not_ready_ms=0 bar0_all_ones=0
//! dma-map iova=0x0 size=0x80000000 offset=0x0 flags=0x3
//! dma-unmap iova=0x0 size=0x80000000 flags=0x0
//! set-irqs index=3 flags=0x21 start=0 count=0
//! stop                                         the client disconnected
//! ```
//!
//! * `off` is the byte offset in the region: 3 hex digits for config space,
//!   at least 4 for BARs (`0x1498`, `0x200bc`).
//! * `len` is the access size in decimal bytes.
//! * `val` is the data as a little-endian integer with `2 * len` hex digits,
//!   for accesses of 1, 2, 4 or 8 bytes; other sizes (QEMU reads the whole
//!   config space at once when it starts) log `data=` followed by the bytes
//!   in address order as hex, two digits each, no separators.
//! * `control` gives the settings in force: once at start (second line),
//!   then whenever a change of the control file changes them.
//!   `power_on_delay_ms` is the delay the model used at start.
//! * `ready` is logged when the model first notices that the delay has run
//!   out: at start or after a reset when the delay is 0, otherwise just
//!   before the first access (of any kind) after the deadline. So a `ready`
//!   line always precedes the first access that observed readiness.
//!
//! ## Times (`--log-times`)
//!
//! With `--log-times` every line, of every kind, ends in ` t=<ns>`: when the
//! model wrote it, in decimal nanoseconds on the model's monotonic clock
//! (the one its readiness deadlines follow) since the model started
//! (`start ... t=0` or a little more). Without it (the default) the lines
//! are exactly as above, so the tests' parsers never see the field. The
//! benchmark takes the time of the `reset cause=flr` line, at which the
//! readiness countdown starts, against the time of an access it made.
//!
//! ```text
//! bar0-read off=0x0000 len=4 val=0x00000000 t=8123456789
//! cfg-write off=0x048 len=2 val=0xa810 t=8127001234
//! reset cause=flr t=8127009876
//! ```
//!
//! # Stderr logger
//!
//! [`StderrLogger`] prints the `log` crate's records (the vfio_user crate
//! logs protocol errors through it) to stderr. The level comes from the
//! environment variable `GPU_MODEL_LOG` (`error`, `warn`, `info`, `debug`,
//! `trace`; default `warn`).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use crate::readiness::Clock;

/// Which region an access went to, as named in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// PCI configuration space (`cfg`).
    Config,
    /// BAR0, the MMIO register space (`bar0`).
    Bar0,
    /// BAR2/3, the RAM window (`bar2`).
    Bar2,
    /// BAR4/5, which reads 0 (`bar4`).
    Bar4,
}

impl Space {
    fn name(self) -> &'static str {
        match self {
            Space::Config => "cfg",
            Space::Bar0 => "bar0",
            Space::Bar2 => "bar2",
            Space::Bar4 => "bar4",
        }
    }
}

/// Formats an access line, without the trailing newline.
pub fn format_access(space: Space, write: bool, offset: u64, data: &[u8]) -> String {
    let mut line = String::with_capacity(48 + 2 * data.len());
    let dir = if write { "write" } else { "read" };
    let _ = match space {
        Space::Config => write!(line, "{}-{dir} off={offset:#05x}", space.name()),
        _ => write!(line, "{}-{dir} off={offset:#06x}", space.name()),
    };
    let _ = write!(line, " len={}", data.len());
    match data.len() {
        1 | 2 | 4 | 8 => {
            let mut raw = [0u8; 8];
            raw[..data.len()].copy_from_slice(data);
            let width = 2 * data.len();
            let _ = write!(line, " val=0x{:0width$x}", u64::from_le_bytes(raw));
        }
        _ => {
            line.push_str(" data=");
            for b in data {
                let _ = write!(line, "{b:02x}");
            }
        }
    }
    line
}

/// The access log: `DIR/access.log`, or nowhere without a state directory.
pub struct AccessLog {
    file: Option<File>,
    path: PathBuf,
    /// Set after the first failed write, so a broken log is reported once.
    failed: bool,
    /// With `--log-times`: the clock and its instant at model start, for the
    /// ` t=<ns>` suffix of every line.
    times: Option<(Rc<dyn Clock>, Instant)>,
}

impl AccessLog {
    /// A log that drops every line.
    pub fn disabled() -> AccessLog {
        AccessLog {
            file: None,
            path: PathBuf::new(),
            failed: false,
            times: None,
        }
    }

    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> io::Result<AccessLog> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
        Ok(AccessLog {
            file: Some(file),
            path: path.to_path_buf(),
            failed: false,
            times: None,
        })
    }

    /// Ends every later line in ` t=<ns>`: nanoseconds on `clock` since
    /// `start` (see "Times" in the module documentation).
    pub fn log_times(&mut self, clock: Rc<dyn Clock>, start: Instant) {
        self.times = Some((clock, start));
    }

    /// Appends one line (a newline is added). A write error is reported on
    /// stderr once and otherwise ignored: the device keeps working.
    pub fn line(&mut self, text: &str) {
        let Some(file) = &mut self.file else { return };
        let mut buf = String::with_capacity(text.len() + 24);
        buf.push_str(text);
        if let Some((clock, start)) = &self.times {
            let ns = clock.now().saturating_duration_since(*start).as_nanos();
            let _ = write!(buf, " t={ns}");
        }
        buf.push('\n');
        if let Err(e) = file.write_all(buf.as_bytes()) {
            if !self.failed {
                eprintln!("gpu-model: warning: writing {}: {e}", self.path.display());
                self.failed = true;
            }
        }
    }
}

/// A minimal `log` backend that prints to stderr.
pub struct StderrLogger {
    level: ::log::LevelFilter,
}

static LOGGER: std::sync::OnceLock<StderrLogger> = std::sync::OnceLock::new();

impl StderrLogger {
    /// Installs the logger with the level from `GPU_MODEL_LOG`.
    pub fn init() {
        let level = std::env::var("GPU_MODEL_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(::log::LevelFilter::Warn);
        let logger = LOGGER.get_or_init(|| StderrLogger { level });
        if ::log::set_logger(logger).is_ok() {
            ::log::set_max_level(level);
        }
    }
}

impl ::log::Log for StderrLogger {
    fn enabled(&self, metadata: &::log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &::log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "gpu-model: {} {}: {}",
                record.level().as_str().to_lowercase(),
                record.target(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readiness::tests::FakeClock;
    use crate::test_util::TempDir;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .expect("read log")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn lines_have_no_time_by_default() {
        let dir = TempDir::new("log-plain");
        let path = dir.path().join("access.log");
        let mut log = AccessLog::create(&path).expect("create");
        log.line("reset cause=flr");
        assert_eq!(lines(&path), ["reset cause=flr"]);
    }

    #[test]
    fn log_times_end_every_line_in_ns_since_start() {
        let dir = TempDir::new("log-times");
        let path = dir.path().join("access.log");
        let clock = FakeClock::new();
        let mut log = AccessLog::create(&path).expect("create");
        log.log_times(Rc::new(clock.clone()), clock.now());
        log.line("start variant=gh200 device=0x2342");
        clock.advance_ms(1500);
        log.line(&format_access(Space::Bar0, false, 0, &[0; 4]));
        clock.advance_ms(3);
        log.line("reset cause=flr");
        assert_eq!(
            lines(&path),
            [
                "start variant=gh200 device=0x2342 t=0",
                "bar0-read off=0x0000 len=4 val=0x00000000 t=1500000000",
                "reset cause=flr t=1503000000",
            ]
        );
    }

    #[test]
    fn access_lines() {
        assert_eq!(
            format_access(Space::Config, false, 0x18, &0xcu32.to_le_bytes()),
            "cfg-read off=0x018 len=4 val=0x0000000c"
        );
        assert_eq!(
            format_access(Space::Config, true, 0x18, &[0xff; 4]),
            "cfg-write off=0x018 len=4 val=0xffffffff"
        );
        assert_eq!(
            format_access(Space::Bar0, false, 0x1498, &0xffu32.to_le_bytes()),
            "bar0-read off=0x1498 len=4 val=0x000000ff"
        );
        assert_eq!(
            format_access(Space::Bar0, false, 0x200bc, &[0xff, 0]),
            "bar0-read off=0x200bc len=2 val=0x00ff"
        );
        assert_eq!(
            format_access(Space::Bar2, true, 0, &[0x5a]),
            "bar2-write off=0x0000 len=1 val=0x5a"
        );
        assert_eq!(
            format_access(
                Space::Bar2,
                false,
                8,
                &0x0102_0304_0506_0708u64.to_le_bytes()
            ),
            "bar2-read off=0x0008 len=8 val=0x0102030405060708"
        );
        assert_eq!(
            format_access(Space::Config, false, 0, &[0xde, 0x10, 0x42]),
            "cfg-read off=0x000 len=3 data=de1042"
        );
    }
}
