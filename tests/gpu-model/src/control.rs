// SPDX-License-Identifier: GPL-2.0
//! Run-time settings and the control file that changes them.
//!
//! The settings start from the command line ([`Settings`]). With a state
//! directory, the file `DIR/control` overrides them: it holds `key=value`
//! lines (blank lines and lines starting with `#` are ignored, spaces around
//! key and value are trimmed):
//!
//! | key | value | effect |
//! | --- | ----- | ------ |
//! | `ready_delay_ms` | milliseconds | readiness delay after each later reset |
//! | `never_ready` | `0` or `1` | `1`: after the next reset, readiness never returns |
//! | `power_on_delay_ms` | milliseconds or `never` | only read at start: the model starts not ready for that long, and no reset makes it ready sooner (`never`: never ready at all) |
//! | `cxl_timeout` | `0`..=`7` | Memory_Active_Timeout field of the CXL DVSEC (applies at once) |
//! | `cxl_info_valid_delay_ms` | milliseconds or `never` | CXL: Memory_Info_Valid is set this long after each power-on or reset, apart from Memory_Active (which `ready_delay_ms` governs); without the key it is set and cleared with Memory_Active (applies at once, counted from the last reset) |
//! | `not_ready_now` | `1` | drop readiness now, as a reset would, without resetting registers; applied once per change of the file |
//! | `flap_ready_ms` | milliseconds | with `flap_not_ready_ms`, both non-zero: once ready, readiness flaps, this long ready, then that long not ready, ... (applies at once) |
//! | `flap_not_ready_ms` | milliseconds | see `flap_ready_ms` |
//! | `bar0_all_ones` | `0` or `1` | `1`: every BAR0 read returns all-ones bytes, as from a device that fell off the bus (applies at once) |
//!
//! The file is checked on every BAR0 read, every read of the CXL readiness
//! register and on every reset; whenever it changed (content, size, mtime, ctime or inode), the
//! effective settings become the command line's overlaid with the file's
//! keys, so removing a key (or the file) restores the command-line value.
//! Unknown keys and bad values are reported on stderr and ignored.
//!
//! The watcher compares the whole content as well as the metadata, so even a
//! rewrite within one timestamp tick is seen as long as the content or size
//! differs. Writers should replace the file atomically (write a temporary
//! file and rename it over `control`) so the model never reads half a file.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::readiness::Flap;

/// Largest Memory_Active_Timeout field value (the field is 3 bits wide).
pub const CXL_TIMEOUT_MAX: u8 = 7;

/// A delay in milliseconds, or never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delay {
    /// Ready after this many milliseconds.
    Ms(u64),
    /// Never ready.
    Never,
}

impl Delay {
    /// Parses `N` (milliseconds) or `never`.
    pub fn parse(s: &str) -> Result<Delay, String> {
        if s == "never" {
            return Ok(Delay::Never);
        }
        parse_ms(s).map(Delay::Ms)
    }

    /// The delay as a duration, `None` for never.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Delay::Ms(ms) => Some(Duration::from_millis(ms)),
            Delay::Never => None,
        }
    }
}

impl fmt::Display for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Delay::Ms(ms) => write!(f, "{ms}"),
            Delay::Never => f.write_str("never"),
        }
    }
}

/// Parses a non-negative number of milliseconds.
pub fn parse_ms(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("'{s}' is not a number of milliseconds"))
}

/// Parses a Memory_Active_Timeout value, 0..=7.
pub fn parse_cxl_timeout(s: &str) -> Result<u8, String> {
    match s.parse::<u8>() {
        Ok(v) if v <= CXL_TIMEOUT_MAX => Ok(v),
        _ => Err(format!(
            "'{s}' is not a Memory_Active_Timeout value (0..=7)"
        )),
    }
}

/// The settings that govern readiness and the CXL timeout field. The
/// defaults: ready at once, always ready again after a reset, timeout 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Delay in milliseconds after each reset before the device is ready.
    pub ready_delay_ms: u64,
    /// After the next reset, the device never becomes ready.
    pub never_ready: bool,
    /// Delay after the model starts; `None` means the same as
    /// `ready_delay_ms`.
    pub power_on_delay: Option<Delay>,
    /// Memory_Active_Timeout field value, 0..=7.
    pub cxl_timeout: u8,
    /// CXL: delay of Memory_Info_Valid after each power-on or reset; `None`:
    /// it follows readiness, as Memory_Active does.
    pub cxl_info_valid_delay: Option<Delay>,
    /// Flapping readiness: length of each ready period in milliseconds
    /// (flapping needs both this and `flap_not_ready_ms` non-zero).
    pub flap_ready_ms: u64,
    /// Flapping readiness: length of each not-ready period in milliseconds.
    pub flap_not_ready_ms: u64,
    /// Every BAR0 read returns all-ones bytes (the device is gone).
    pub bar0_all_ones: bool,
}

impl Settings {
    /// The flapping pattern, if readiness flaps.
    pub fn flap(&self) -> Option<Flap> {
        Flap::from_ms(self.flap_ready_ms, self.flap_not_ready_ms)
    }

    /// Readiness delay to use at power-on.
    pub fn power_on(&self) -> Delay {
        self.power_on_delay
            .unwrap_or(Delay::Ms(self.ready_delay_ms))
    }

    /// Readiness delay to use after a reset (`None` = never).
    pub fn after_reset(&self) -> Option<Duration> {
        if self.never_ready {
            None
        } else {
            Some(Duration::from_millis(self.ready_delay_ms))
        }
    }
}

/// The keys found in one version of the control file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `ready_delay_ms=N`
    pub ready_delay_ms: Option<u64>,
    /// `never_ready=0|1`
    pub never_ready: Option<bool>,
    /// `power_on_delay_ms=N|never`
    pub power_on_delay: Option<Delay>,
    /// `cxl_timeout=0..7`
    pub cxl_timeout: Option<u8>,
    /// `cxl_info_valid_delay_ms=N|never`
    pub cxl_info_valid_delay: Option<Delay>,
    /// `not_ready_now=1`
    pub not_ready_now: bool,
    /// `flap_ready_ms=N`
    pub flap_ready_ms: Option<u64>,
    /// `flap_not_ready_ms=N`
    pub flap_not_ready_ms: Option<u64>,
    /// `bar0_all_ones=0|1`
    pub bar0_all_ones: Option<bool>,
}

impl Overrides {
    /// Parses control file text. Returns the keys and one warning per
    /// ignored line.
    pub fn parse(text: &str) -> (Overrides, Vec<String>) {
        let mut o = Overrides::default();
        let mut warnings = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                warnings.push(format!(
                    "line {}: '{line}' is not key=value, ignored",
                    n + 1
                ));
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            let result = match key {
                "ready_delay_ms" => parse_ms(value).map(|v| o.ready_delay_ms = Some(v)),
                "never_ready" => parse_bool(value).map(|v| o.never_ready = Some(v)),
                "power_on_delay_ms" => Delay::parse(value).map(|v| o.power_on_delay = Some(v)),
                "cxl_timeout" => parse_cxl_timeout(value).map(|v| o.cxl_timeout = Some(v)),
                "cxl_info_valid_delay_ms" => {
                    Delay::parse(value).map(|v| o.cxl_info_valid_delay = Some(v))
                }
                "not_ready_now" => parse_bool(value).map(|v| o.not_ready_now = v),
                "flap_ready_ms" => parse_ms(value).map(|v| o.flap_ready_ms = Some(v)),
                "flap_not_ready_ms" => parse_ms(value).map(|v| o.flap_not_ready_ms = Some(v)),
                "bar0_all_ones" => parse_bool(value).map(|v| o.bar0_all_ones = Some(v)),
                _ => Err(format!("unknown key '{key}'")),
            };
            if let Err(e) = result {
                warnings.push(format!("line {}: {e}, ignored", n + 1));
            }
        }
        (o, warnings)
    }

    /// `base` with these overrides applied (`not_ready_now` is an action,
    /// not a setting, and is left to the caller).
    pub fn apply(&self, base: &Settings) -> Settings {
        Settings {
            ready_delay_ms: self.ready_delay_ms.unwrap_or(base.ready_delay_ms),
            never_ready: self.never_ready.unwrap_or(base.never_ready),
            power_on_delay: self.power_on_delay.or(base.power_on_delay),
            cxl_timeout: self.cxl_timeout.unwrap_or(base.cxl_timeout),
            cxl_info_valid_delay: self.cxl_info_valid_delay.or(base.cxl_info_valid_delay),
            flap_ready_ms: self.flap_ready_ms.unwrap_or(base.flap_ready_ms),
            flap_not_ready_ms: self.flap_not_ready_ms.unwrap_or(base.flap_not_ready_ms),
            bar0_all_ones: self.bar0_all_ones.unwrap_or(base.bar0_all_ones),
        }
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("'{s}' is not 0 or 1")),
    }
}

/// Identity of one version of the file: metadata plus content.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content: Vec<u8>,
}

/// Watches the control file for changes.
pub struct ControlWatcher {
    path: PathBuf,
    /// Last version seen; `None` = the file did not exist.
    last: Option<Snapshot>,
    /// Whether [`ControlWatcher::poll`] has run yet.
    polled: bool,
}

/// A new version of the control file.
#[derive(Debug)]
pub struct ControlChange {
    /// The keys it holds (all `None` if the file disappeared).
    pub overrides: Overrides,
    /// Problems with its lines, ready to print.
    pub warnings: Vec<String>,
}

impl ControlWatcher {
    /// Watches `path`; the first [`ControlWatcher::poll`] always reports.
    pub fn new(path: PathBuf) -> ControlWatcher {
        ControlWatcher {
            path,
            last: None,
            polled: false,
        }
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the file's keys if it changed since the last poll (the first
    /// poll always returns them). A file that cannot be read (other than
    /// not existing) is reported as an error and treated as unchanged.
    pub fn poll(&mut self) -> io::Result<Option<ControlChange>> {
        let snapshot = match self.snapshot() {
            Ok(s) => s,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", self.path.display()),
                ))
            }
        };
        if self.polled && snapshot == self.last {
            return Ok(None);
        }
        self.polled = true;
        let (overrides, warnings) = match &snapshot {
            Some(s) => Overrides::parse(&String::from_utf8_lossy(&s.content)),
            None => (Overrides::default(), Vec::new()),
        };
        self.last = snapshot;
        Ok(Some(ControlChange {
            overrides,
            warnings,
        }))
    }

    fn snapshot(&self) -> io::Result<Option<Snapshot>> {
        let content = match fs::read(&self.path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(Snapshot {
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            content,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    #[test]
    fn parses_keys_and_warns_about_the_rest() {
        let text = "# comment\n\nready_delay_ms = 250\nnever_ready=1\npower_on_delay_ms=never\n\
                    cxl_timeout=3\nnot_ready_now=1\nbogus=2\ncxl_timeout=9\nnoequals\n\
                    flap_ready_ms=40\nflap_not_ready_ms=20\nbar0_all_ones=1\nbar0_all_ones=2\n\
                    cxl_info_valid_delay_ms=1500\ncxl_info_valid_delay_ms=soon\n";
        let (o, warnings) = Overrides::parse(text);
        assert_eq!(
            o,
            Overrides {
                ready_delay_ms: Some(250),
                never_ready: Some(true),
                power_on_delay: Some(Delay::Never),
                cxl_timeout: Some(3),
                not_ready_now: true,
                flap_ready_ms: Some(40),
                flap_not_ready_ms: Some(20),
                bar0_all_ones: Some(true),
                cxl_info_valid_delay: Some(Delay::Ms(1500)),
            }
        );
        assert_eq!(warnings.len(), 5, "{warnings:?}");
        assert!(warnings[4].starts_with("line 16:"), "{warnings:?}");
        assert!(warnings[3].starts_with("line 14:"), "{warnings:?}");
        assert!(warnings[0].contains("unknown key 'bogus'"));
        assert!(warnings[1].starts_with("line 9:"));
    }

    #[test]
    fn overrides_overlay_the_command_line() {
        let cli = Settings {
            ready_delay_ms: 10,
            never_ready: false,
            power_on_delay: None,
            cxl_timeout: 1,
            ..Settings::default()
        };
        assert_eq!(cli.power_on(), Delay::Ms(10));
        let (o, _) = Overrides::parse("cxl_timeout=5\npower_on_delay_ms=30");
        let s = o.apply(&cli);
        assert_eq!(s.ready_delay_ms, 10);
        assert_eq!(s.cxl_timeout, 5);
        assert_eq!(s.power_on(), Delay::Ms(30));
        assert_eq!(Overrides::default().apply(&cli), cli);
        assert_eq!(s.flap(), None);
        let (o, _) = Overrides::parse("flap_ready_ms=30\nflap_not_ready_ms=10\nbar0_all_ones=1");
        let s = o.apply(&cli);
        assert_eq!(s.flap(), Flap::from_ms(30, 10));
        assert!(s.bar0_all_ones);
        let (o, _) = Overrides::parse("flap_ready_ms=30");
        assert_eq!(o.apply(&cli).flap(), None, "both periods are needed");
        assert_eq!(s.cxl_info_valid_delay, None, "follows Memory_Active by default");
        let (o, _) = Overrides::parse("cxl_info_valid_delay_ms=never");
        assert_eq!(o.apply(&cli).cxl_info_valid_delay, Some(Delay::Never));
        let never = Settings {
            never_ready: true,
            ..cli
        };
        assert_eq!(never.after_reset(), None);
    }

    #[test]
    fn watcher_reports_changes_once() {
        let dir = TempDir::new("control");
        let path = dir.path().join("control");
        let mut w = ControlWatcher::new(path.clone());
        let first = w.poll().expect("poll").expect("first poll reports");
        assert_eq!(first.overrides, Overrides::default());
        assert!(w.poll().expect("poll").is_none());
        fs::write(&path, "not_ready_now=1\n").expect("write");
        assert!(
            w.poll()
                .expect("poll")
                .expect("changed")
                .overrides
                .not_ready_now
        );
        assert!(w.poll().expect("poll").is_none(), "consumed");
        fs::write(&path, "not_ready_now=1\ncxl_timeout=2\n").expect("write");
        let c = w.poll().expect("poll").expect("changed");
        assert!(c.overrides.not_ready_now);
        assert_eq!(c.overrides.cxl_timeout, Some(2));
        fs::remove_file(&path).expect("remove");
        assert_eq!(
            w.poll().expect("poll").expect("gone").overrides,
            Overrides::default()
        );
        assert!(w.poll().expect("poll").is_none());
    }
}
