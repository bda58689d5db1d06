// SPDX-License-Identifier: GPL-2.0
//! `gpu-model`: an emulated NVIDIA Grace Hopper / Grace Blackwell GPU, served
//! over vfio-user, for testing the nvgrace-gpu-vfio-pci driver in a QEMU
//! guest (QEMU's `vfio-user-pci` device connects to the socket).
//!
//! The model serves one client: it listens on `--socket`, handles the
//! client's messages and exits with status 0 when the client disconnects.
//! Errors go to stderr with context, and the exit status is then 1 (2 for a
//! bad command line).
//!
//! Modules:
//! * [`config`]: the configuration space layout (header, PCIe capability,
//!   DVSECs) and its write semantics;
//! * [`device`]: the device state and the `vfio_user::ServerBackend`;
//! * [`readiness`]: the power-on/reset readiness state machine;
//! * [`control`]: settings and the control file;
//! * [`log`]: the access log format and the stderr logger.
//!
//! See README.md beside Cargo.toml for the user-facing description.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod control;
mod device;
#[path = "../../hw.rs"]
mod hw;
mod log;
mod readiness;
#[cfg(test)]
mod test_util;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use config::Variant;
use control::{parse_cxl_timeout, parse_ms, Delay, Settings};
use device::{GpuDevice, Options};
use readiness::SystemClock;

const USAGE: &str = "\
Usage: gpu-model --socket PATH --variant gh200|gb200|gb300|cxl [OPTIONS]

Serves an emulated NVIDIA Grace GPU over vfio-user on the Unix socket PATH
and exits when the client disconnects.

Options:
  --socket PATH              vfio-user socket to create (a stale socket is removed)
  --variant NAME             gh200 (10de:2342), gb200 (10de:2941), gb300 or cxl (10de:31c2)
  --ready-delay MS           not ready for MS milliseconds after each reset (default 0)
  --power-on-delay MS|never  not ready for MS milliseconds after start, even across
                             resets (default: --ready-delay); never: never ready
  --never-ready              after a reset, never become ready again
  --cxl-timeout N            CXL Memory_Active_Timeout field, 0..7 (default 0)
  --state-dir DIR            write DIR/access.log, read DIR/control
  --log-times                end every access-log line in t=NS: nanoseconds since
                             the model started, on its monotonic clock
  -h, --help                 show this help

Environment: GPU_MODEL_LOG=error|warn|info|debug|trace (stderr log level, default warn).";

/// The parsed command line.
#[derive(Debug, PartialEq)]
struct Cli {
    socket: PathBuf,
    variant: Variant,
    settings: Settings,
    state_dir: Option<PathBuf>,
    log_times: bool,
}

/// Parses the arguments (without the program name). `Ok(None)` means help
/// was asked for. Options take their value as the next argument or after
/// `=`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Cli>, String> {
    let mut args = args.into_iter();
    let mut socket = None;
    let mut variant = None;
    let mut settings = Settings::default();
    let mut state_dir = None;
    let mut log_times = false;

    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--socket" => socket = Some(PathBuf::from(value("a path")?)),
            "--variant" => {
                let v = value("a variant")?;
                variant = Some(Variant::from_name(&v).ok_or_else(|| {
                    format!("--variant: unknown variant '{v}' (gh200, gb200, gb300, cxl)")
                })?);
            }
            "--ready-delay" => {
                settings.ready_delay_ms =
                    parse_ms(&value("milliseconds")?).map_err(|e| format!("--ready-delay: {e}"))?
            }
            "--power-on-delay" => {
                let v = value("milliseconds or 'never'")?;
                settings.power_on_delay =
                    Some(Delay::parse(&v).map_err(|e| format!("--power-on-delay: {e}"))?);
            }
            "--cxl-timeout" => {
                settings.cxl_timeout = parse_cxl_timeout(&value("a value 0..7")?)
                    .map_err(|e| format!("--cxl-timeout: {e}"))?
            }
            "--state-dir" => state_dir = Some(PathBuf::from(value("a directory")?)),
            "--never-ready" if inline.is_none() => settings.never_ready = true,
            "--log-times" if inline.is_none() => log_times = true,
            _ => return Err(format!("unknown argument '{arg}'")),
        }
    }

    Ok(Some(Cli {
        socket: socket.ok_or("--socket is required")?,
        variant: variant.ok_or("--variant is required")?,
        settings,
        state_dir,
        log_times,
    }))
}

/// Removes a socket left behind by an earlier run (`Server::new` refuses to
/// bind over an existing file). Anything other than a socket is left alone.
fn remove_stale_socket(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path)
            .map_err(|e| format!("removing stale socket {}: {e}", path.display())),
        Ok(_) => Err(format!(
            "{} exists and is not a socket; not removing it",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("checking {}: {e}", path.display())),
    }
}

fn run(cli: Cli) -> Result<(), String> {
    if let Some(dir) = &cli.state_dir {
        fs::create_dir_all(dir)
            .map_err(|e| format!("creating state directory {}: {e}", dir.display()))?;
    }
    remove_stale_socket(&cli.socket)?;

    let options = Options {
        variant: cli.variant,
        settings: cli.settings,
        state_dir: cli.state_dir,
        log_times: cli.log_times,
    };
    let mut device = GpuDevice::new(options, Box::new(SystemClock))
        .map_err(|e| format!("setting up the device: {e}"))?;

    let server = vfio_user::Server::new(&cli.socket, true, device::irqs(), device::regions())
        .map_err(|e| format!("listening on {}: {e}", cli.socket.display()))?;
    eprintln!(
        "gpu-model: {} (10de:{:04x}) listening on {}",
        cli.variant,
        cli.variant.device_id(),
        cli.socket.display()
    );
    // Serves one client; returns when it disconnects. Dropping the server
    // removes the socket file.
    server
        .run(&mut device)
        .map_err(|e| format!("serving {}: {e}", cli.socket.display()))?;
    device.stop();
    eprintln!("gpu-model: client disconnected, exiting");
    Ok(())
}

fn main() -> ExitCode {
    log::StderrLogger::init();
    let cli = match parse_args(std::env::args().skip(1)) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gpu-model: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu-model: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Cli>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_the_command_line() {
        let cli = parse(&[
            "--socket",
            "/tmp/s",
            "--variant=cxl",
            "--ready-delay",
            "250",
            "--power-on-delay=never",
            "--never-ready",
            "--cxl-timeout",
            "3",
            "--state-dir",
            "/tmp/st",
            "--log-times",
        ])
        .expect("valid")
        .expect("not help");
        assert_eq!(
            cli,
            Cli {
                socket: PathBuf::from("/tmp/s"),
                variant: Variant::Cxl,
                settings: Settings {
                    ready_delay_ms: 250,
                    never_ready: true,
                    power_on_delay: Some(Delay::Never),
                    cxl_timeout: 3,
                    ..Settings::default()
                },
                state_dir: Some(PathBuf::from("/tmp/st")),
                log_times: true,
            }
        );
        let plain = parse(&["--socket", "s", "--variant", "gh200"])
            .expect("valid")
            .expect("not help");
        assert!(!plain.log_times, "times are off by default");
        assert_eq!(parse(&["--help"]), Ok(None));
    }

    #[test]
    fn rejects_bad_command_lines() {
        let cases: &[(&[&str], &str)] = &[
            (&["--variant", "gh200"], "--socket is required"),
            (&["--socket", "s"], "--variant is required"),
            (&["--socket", "s", "--variant", "h100"], "unknown variant"),
            (
                &["--socket", "s", "--variant", "gh200", "--cxl-timeout", "8"],
                "0..=7",
            ),
            (
                &["--socket", "s", "--variant", "gh200", "--ready-delay", "-1"],
                "milliseconds",
            ),
            (
                &["--socket", "s", "--variant", "gh200", "--bogus"],
                "unknown argument",
            ),
            (&["--socket"], "--socket needs a path"),
            (
                &["--socket", "s", "--variant", "gh200", "--log-times=1"],
                "unknown argument",
            ),
        ];
        for (args, expected) in cases {
            let err = parse(args).expect_err("must fail");
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }
}
