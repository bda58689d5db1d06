// SPDX-License-Identifier: GPL-2.0

//! The inner machine of the passthrough test: QEMU started from a block of the user guide in the
//! Debian userland, its serial output, and a minimal QMP client to query and stop it.

use std::fs;
use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::GPU_BDF;
use serde_json::json;
use serde_json::Value;

use crate::Iface;
use crate::BOOT_TIMEOUT;
use crate::MACHINE;
use crate::MEM;
use crate::QEMU;
use crate::QUIT_TIMEOUT;
use crate::STUB;
use crate::USERLAND;

/// A minimal QMP client (docs/interop/qmp-spec.rst): one JSON object per line, asynchronous
/// events skipped. serde_json parses; the protocol itself is three lines.
pub(crate) struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    pub(crate) fn connect(path: &Path) -> Result<Self, Failure> {
        let stream =
            UnixStream::connect(path).map_err(|e| format!("QMP {}: {e}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = qmp.read()?;
        check!(greeting.get("QMP").is_some(), "no QMP greeting: {greeting}");
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    pub(crate) fn read(&mut self) -> Result<Value, Failure> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                fail!("QMP connection closed");
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| format!("QMP: {e}: {line}"))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    pub(crate) fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, Failure> {
        let req = json!({ "execute": cmd, "arguments": args });
        writeln!(self.writer, "{req}")?;
        let resp = self.read()?;
        match resp.get("return") {
            Some(r) => Ok(r.clone()),
            None => fail!("QMP {cmd}: {resp}"),
        }
    }
}

/// The inner machine: QEMU in the Debian userland, in its own process group.
pub(crate) struct Inner {
    child: Child,
    dir: PathBuf,
}

impl Inner {
    pub(crate) fn start(iface: Iface, block: &str) -> Result<Self, Failure> {
        let dir = PathBuf::from(format!("/tmp/passthrough-{}", iface.name()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        fs::copy(STUB, dir.join("stub.elf")).map_err(|e| format!("{STUB}: {e}"))?;
        let log = fs::File::create(dir.join("qemu.log"))?;
        let guest = format!(
            "-kernel {0}/stub.elf -serial file:{0}/serial.log",
            dir.display()
        );
        let child = Command::new("chroot")
            .arg(USERLAND)
            .args(["/bin/sh", "-c", block])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("QEMU", QEMU)
            .env("MACHINE", MACHINE)
            .env("MEM", MEM)
            .env("BDF", GPU_BDF)
            .env("QMP", dir.join("qmp.sock"))
            .env("GUEST", guest)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("chroot {USERLAND} sh: {e}"))?;
        Ok(Inner { child, dir })
    }

    pub(crate) fn serial(&self) -> String {
        fs::read_to_string(self.dir.join("serial.log")).unwrap_or_default()
    }

    pub(crate) fn qemu_log(&self) -> String {
        fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default()
    }

    /// Waits for the inner kernel's `stub: done`; fails if QEMU exits first or time runs out.
    pub(crate) fn wait_done(&mut self) -> Outcome {
        let start = Instant::now();
        loop {
            let serial = self.serial();
            if serial.contains("stub: error") {
                fail!(
                    "the inner kernel failed\nQEMU: {}\nserial: {serial}",
                    self.qemu_log()
                );
            }
            if serial.contains("stub: done") {
                tap::diag(format!(
                    "inner machine done after {:.1} s",
                    start.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            if let Some(st) = self.child.try_wait()? {
                fail!(
                    "QEMU exited ({st}) before the inner kernel finished\nQEMU: {}\nserial: {serial}",
                    self.qemu_log()
                );
            }
            if start.elapsed() > BOOT_TIMEOUT {
                fail!(
                    "the inner kernel did not finish within {BOOT_TIMEOUT:?}\nQEMU: {}\nserial: {serial}",
                    self.qemu_log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `key=0x...` values the inner kernel printed.
    pub(crate) fn value(&self, key: &str) -> Option<u64> {
        let prefix = format!("stub: {key}=0x");
        self.serial()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    }

    pub(crate) fn qmp(&self) -> Result<Qmp, Failure> {
        Qmp::connect(&self.dir.join("qmp.sock"))
    }

    /// arm64: the power button (QMP `system_powerdown`), which the stub answers with PSCI
    /// SYSTEM_OFF; QEMU must then exit by itself, successfully.
    pub(crate) fn power_off(&mut self) -> Outcome {
        let start = Instant::now();
        self.qmp()?.execute("system_powerdown", json!({}))?;
        loop {
            if let Some(st) = self.child.try_wait()? {
                check!(
                    st.success(),
                    "QEMU exited with {st} after the power button\nQEMU: {}",
                    self.qemu_log()
                );
                break;
            }
            if start.elapsed() > QUIT_TIMEOUT {
                fail!(
                    "QEMU still running {QUIT_TIMEOUT:?} after the power button\nserial: {}",
                    self.serial()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        check!(
            self.serial().contains("stub: power-off"),
            "QEMU exited but the stub did not power off: {}",
            self.serial()
        );
        tap::diag(format!(
            "inner machine powered off (PSCI SYSTEM_OFF) {:.1} s after the power button",
            start.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// QMP `quit`, then waits for QEMU to exit.
    pub(crate) fn quit(&mut self) -> Outcome {
        if self.child.try_wait()?.is_none() {
            // QEMU may close the connection before it answers.
            if let Ok(mut q) = self.qmp() {
                let _ = q.execute("quit", json!({}));
            }
        }
        let start = Instant::now();
        while self.child.try_wait()?.is_none() {
            if start.elapsed() > QUIT_TIMEOUT {
                fail!("QEMU still running {QUIT_TIMEOUT:?} after quit");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: Signals the process group this object started; no memory is involved.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// The device's entry in `query-pci`.
pub(crate) fn find_gpu(qmp: &mut Qmp) -> Result<Value, Failure> {
    let buses = qmp.execute("query-pci", json!({}))?;
    for bus in buses.as_array().into_iter().flatten() {
        for dev in bus["devices"].as_array().into_iter().flatten() {
            if dev["qdev_id"] == "gpu0" {
                return Ok(dev.clone());
            }
        }
    }
    fail!("query-pci has no device gpu0: {buses}")
}
