// SPDX-License-Identifier: GPL-2.0
//! The emulated GPU: device state and the vfio-user backend.
//!
//! [`GpuDevice`] owns the configuration space, the BAR2 RAM window, the
//! readiness state machine, the settings and the access log, and implements
//! [`vfio_user::ServerBackend`]. [`regions`] and [`irqs`] describe the device
//! to the vfio-user client.
//!
//! # Regions
//!
//! | VFIO index | size | contents |
//! | ---------- | ---- | -------- |
//! | 0 (BAR0) | 16 MiB | MMIO registers; the two readiness status registers, everything else 0 |
//! | 2 (BAR2) | 32 MiB | RAM, zero at start, kept across resets |
//! | 4 (BAR4) | 64 MiB | reads 0, writes ignored (see [`BAR4_SIZE`]) |
//! | 7 (config) | 4 KiB | see [`crate::config`] |
//! | others | 0 | absent |
//!
//! No region has an mmap file descriptor, so every guest access to a BAR
//! becomes a vfio-user message and is logged.
//!
//! # Reset
//!
//! A Function Level Reset (Device Control bit 15) and the client's device
//! reset message do the same thing: log `reset cause=flr|vfio-user`, apply
//! the register effects of an FLR ([`ConfigSpace::reset_function`]: Command,
//! BAR addresses and Device Control return to their defaults), and restart
//! the readiness countdown with `ready_delay_ms` (or never, with
//! `never_ready`), never ending before the power-on deadline (see
//! [`Readiness`]). The BAR2 RAM is deliberately kept: it stands in for device
//! memory, which a reset does not scrub.

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::path::PathBuf;
use std::rc::Rc;

use vfio_bindings::bindings::vfio::{
    vfio_region_info, VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX,
    VFIO_PCI_BAR4_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_NUM_IRQS,
    VFIO_PCI_NUM_REGIONS, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion};

use crate::config::{
    ConfigSpace, LiveState, Variant, BAR0_SIZE, BAR2_SIZE, BAR4_SIZE, CONFIG_SPACE_SIZE,
};
use crate::control::{ControlWatcher, Overrides, Settings};
use crate::hw;
use crate::log::{format_access, AccessLog, Space};
use crate::readiness::{Clock, Readiness};

/// BAR0 offset of the C2C link status register (`C2C_LINK_BAR0_OFFSET` in
/// Linux drivers/vfio/pci/nvgrace-gpu/main.c).
pub const BAR0_C2C_LINK_STATUS: u64 = hw::BAR0_C2C_LINK_STATUS;
/// BAR0 offset of the HBM training status register
/// (`HBM_TRAINING_BAR0_OFFSET` in the same driver).
pub const BAR0_HBM_TRAINING_STATUS: u64 = hw::BAR0_HBM_TRAINING_STATUS;
/// Width in bytes of each status register.
pub const BAR0_STATUS_LEN: usize = 4;
/// Value of a status register once the device is ready (`STATUS_READY` in
/// the same driver); it reads 0 before.
pub const STATUS_READY: u32 = hw::BAR0_STATUS_READY;

/// Why a reset happened, as logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetCause {
    /// Device Control bit 15 (Initiate Function Level Reset) was written.
    Flr,
    /// The vfio-user client sent a device reset.
    VfioUser,
}

impl ResetCause {
    fn name(self) -> &'static str {
        match self {
            ResetCause::Flr => "flr",
            ResetCause::VfioUser => "vfio-user",
        }
    }
}

/// How to build a [`GpuDevice`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Which GPU to present.
    pub variant: Variant,
    /// Settings from the command line; the control file overrides them.
    pub settings: Settings,
    /// Where `access.log` is written and `control` is read, if anywhere.
    pub state_dir: Option<PathBuf>,
    /// Whether every access-log line ends in its time (`--log-times`).
    pub log_times: bool,
}

/// The emulated GPU.
pub struct GpuDevice {
    config: ConfigSpace,
    /// Contents of the BAR2 RAM window, [`BAR2_SIZE`] bytes.
    bar2: Vec<u8>,
    /// Shared with the access log when it logs times.
    clock: Rc<dyn Clock>,
    readiness: Readiness,
    /// Settings from the command line.
    cli: Settings,
    /// Settings in force: `cli` overlaid with the control file.
    settings: Settings,
    control: Option<ControlWatcher>,
    /// Last error reading the control file, so it is reported once.
    control_error: Option<String>,
    log: AccessLog,
}

impl GpuDevice {
    /// Powers the device on: creates the access log, reads the control file
    /// and starts the power-on readiness countdown.
    pub fn new(options: Options, clock: Box<dyn Clock>) -> io::Result<GpuDevice> {
        let (mut log, control) = match &options.state_dir {
            Some(dir) => (
                AccessLog::create(&dir.join("access.log"))?,
                Some(ControlWatcher::new(dir.join("control"))),
            ),
            None => (AccessLog::disabled(), None),
        };
        let clock: Rc<dyn Clock> = Rc::from(clock);
        let now = clock.now();
        if options.log_times {
            log.log_times(Rc::clone(&clock), now);
        }
        let mut dev = GpuDevice {
            config: ConfigSpace::new(options.variant),
            bar2: vec![0; BAR2_SIZE as usize],
            clock,
            readiness: Readiness::new(now, None),
            cli: options.settings.clone(),
            settings: options.settings,
            control,
            control_error: None,
            log,
        };
        let variant = dev.config.variant();
        dev.log.line(&format!(
            "start variant={variant} device={:#06x}",
            variant.device_id()
        ));
        // A not_ready_now present at start is moot (the device starts not
        // ready) and counts as consumed.
        dev.poll_control(false);
        dev.readiness = Readiness::new(now, dev.settings.power_on().duration());
        dev.note_readiness();
        Ok(dev)
    }

    /// The settings in force.
    #[cfg(test)]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether the device is ready now.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready(self.clock.now())
    }

    /// Resets the function (see the module documentation).
    pub fn reset(&mut self, cause: ResetCause) {
        self.poll_control(true);
        self.log.line(&format!("reset cause={}", cause.name()));
        self.config.reset_function();
        let now = self.clock.now();
        self.readiness.restart(now, self.settings.after_reset());
        self.note_readiness();
    }

    /// Logs the end of the session (the client disconnected).
    pub fn stop(&mut self) {
        self.log.line("stop");
    }

    /// Re-reads the control file if it changed, applying its settings and
    /// its `not_ready_now` request.
    fn check_control(&mut self) {
        if let Some(overrides) = self.poll_control(true) {
            if overrides.not_ready_now {
                self.log.line("not-ready cause=control");
                let now = self.clock.now();
                self.readiness.restart(now, self.settings.after_reset());
                self.note_readiness();
            }
        }
    }

    /// Re-reads the control file if it changed and makes its settings the
    /// ones in force. `started` is false only at power-on, the one time
    /// `power_on_delay_ms` is honoured. Returns the new file's keys.
    fn poll_control(&mut self, started: bool) -> Option<Overrides> {
        let watcher = self.control.as_mut()?;
        let change = match watcher.poll() {
            Ok(change) => {
                self.control_error = None;
                change?
            }
            Err(e) => {
                let msg = e.to_string();
                if self.control_error.as_ref() != Some(&msg) {
                    eprintln!("gpu-model: warning: reading control file: {msg}");
                    self.control_error = Some(msg);
                }
                return None;
            }
        };
        for w in &change.warnings {
            eprintln!("gpu-model: warning: {} {w}", watcher.path().display());
        }
        let mut settings = change.overrides.apply(&self.cli);
        if started {
            settings.power_on_delay = self.settings.power_on_delay;
        }
        if settings != self.settings || !started {
            self.log.line(&format!(
                "control ready_delay_ms={} never_ready={} power_on_delay_ms={} cxl_timeout={} \
                 flap_ready_ms={} flap_not_ready_ms={} bar0_all_ones={}",
                settings.ready_delay_ms,
                u8::from(settings.never_ready),
                settings.power_on(),
                settings.cxl_timeout,
                settings.flap_ready_ms,
                settings.flap_not_ready_ms,
                u8::from(settings.bar0_all_ones),
            ));
        }
        let now = self.clock.now();
        self.readiness.set_flap(now, settings.flap());
        self.settings = settings;
        Some(change.overrides)
    }

    /// Logs `ready` the first time readiness is observed after a restart or
    /// a flap, and `not-ready cause=flap` when a flap took it away.
    fn note_readiness(&mut self) {
        match self.readiness.observe(self.clock.now()) {
            Some(true) => self.log.line("ready"),
            Some(false) => self.log.line("not-ready cause=flap"),
            None => {}
        }
    }

    fn live(&self) -> LiveState {
        let now = self.clock.now();
        LiveState {
            ready: self.readiness.is_ready(now),
            info_valid: self
                .readiness
                .info_valid(now, self.settings.cxl_info_valid_delay),
            cxl_timeout: self.settings.cxl_timeout,
        }
    }

    fn config_read(&mut self, offset: u64, data: &mut [u8]) -> io::Result<()> {
        if self.config.reads_readiness(offset, data.len()) {
            self.check_control();
        }
        self.note_readiness();
        let live = self.live();
        self.config.read(offset, data, live)?;
        self.log
            .line(&format_access(Space::Config, false, offset, data));
        Ok(())
    }

    fn config_write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.note_readiness();
        let effect = self.config.write(offset, data)?;
        self.log
            .line(&format_access(Space::Config, true, offset, data));
        if effect.flr {
            self.reset(ResetCause::Flr);
        }
        Ok(())
    }

    fn bar0_read(&mut self, offset: u64, data: &mut [u8]) -> io::Result<()> {
        check_bar_range("BAR0", BAR0_SIZE, offset, data.len())?;
        let status_regs = [BAR0_C2C_LINK_STATUS, BAR0_HBM_TRAINING_STATUS];
        // Every BAR0 read checks the control file, so that `bar0_all_ones`
        // applies to the very next read wherever it lands.
        self.check_control();
        self.note_readiness();
        let status = if self.is_ready() { STATUS_READY } else { 0 }.to_le_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            let off = offset + i as u64;
            *byte = status_regs
                .iter()
                .find(|&&reg| (reg..reg + BAR0_STATUS_LEN as u64).contains(&off))
                .map_or(0, |&reg| status[(off - reg) as usize]);
        }
        if self.settings.bar0_all_ones {
            data.fill(0xff);
        }
        self.log
            .line(&format_access(Space::Bar0, false, offset, data));
        Ok(())
    }

    fn bar0_write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_bar_range("BAR0", BAR0_SIZE, offset, data.len())?;
        self.note_readiness();
        self.log
            .line(&format_access(Space::Bar0, true, offset, data));
        Ok(())
    }

    fn bar2_read(&mut self, offset: u64, data: &mut [u8]) -> io::Result<()> {
        let start = check_bar_range("BAR2", BAR2_SIZE, offset, data.len())?;
        self.note_readiness();
        data.copy_from_slice(&self.bar2[start..start + data.len()]);
        self.log
            .line(&format_access(Space::Bar2, false, offset, data));
        Ok(())
    }

    fn bar2_write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = check_bar_range("BAR2", BAR2_SIZE, offset, data.len())?;
        self.note_readiness();
        self.bar2[start..start + data.len()].copy_from_slice(data);
        self.log
            .line(&format_access(Space::Bar2, true, offset, data));
        Ok(())
    }

    fn bar4_read(&mut self, offset: u64, data: &mut [u8]) -> io::Result<()> {
        check_bar_range("BAR4", BAR4_SIZE, offset, data.len())?;
        self.note_readiness();
        data.fill(0);
        self.log
            .line(&format_access(Space::Bar4, false, offset, data));
        Ok(())
    }

    fn bar4_write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_bar_range("BAR4", BAR4_SIZE, offset, data.len())?;
        self.note_readiness();
        self.log
            .line(&format_access(Space::Bar4, true, offset, data));
        Ok(())
    }
}

/// Checks that a `len`-byte access at `offset` fits a BAR of `size` bytes;
/// returns the offset as an index.
fn check_bar_range(name: &str, size: u64, offset: u64, len: usize) -> io::Result<usize> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(offset as usize),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name} access at {offset:#x} of {len} bytes is outside the {size:#x}-byte BAR"
            ),
        )),
    }
}

fn no_such_region(region: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("region {region} does not exist on this device (size 0)"),
    )
}

impl ServerBackend for GpuDevice {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.config_read(offset, data),
            VFIO_PCI_BAR0_REGION_INDEX => self.bar0_read(offset, data),
            VFIO_PCI_BAR2_REGION_INDEX => self.bar2_read(offset, data),
            VFIO_PCI_BAR4_REGION_INDEX => self.bar4_read(offset, data),
            _ => Err(no_such_region(region)),
        }
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.config_write(offset, data),
            VFIO_PCI_BAR0_REGION_INDEX => self.bar0_write(offset, data),
            VFIO_PCI_BAR2_REGION_INDEX => self.bar2_write(offset, data),
            VFIO_PCI_BAR4_REGION_INDEX => self.bar4_write(offset, data),
            _ => Err(no_such_region(region)),
        }
    }

    /// Accepted and ignored: the model never does DMA.
    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        _fd: Option<File>,
    ) -> io::Result<()> {
        self.log.line(&format!(
            "dma-map iova={address:#x} size={size:#x} offset={offset:#x} flags={:#x}",
            flags.bits()
        ));
        Ok(())
    }

    /// Accepted and ignored.
    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> io::Result<()> {
        self.log.line(&format!(
            "dma-unmap iova={address:#x} size={size:#x} flags={:#x}",
            flags.bits()
        ));
        Ok(())
    }

    fn reset(&mut self) -> io::Result<()> {
        GpuDevice::reset(self, ResetCause::VfioUser);
        Ok(())
    }

    /// The device has no interrupts: only requests for zero vectors (which
    /// the client sends to disable an index) are accepted.
    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        _fds: Vec<File>,
    ) -> io::Result<()> {
        self.log.line(&format!(
            "set-irqs index={index} flags={flags:#x} start={start} count={count}"
        ));
        if count != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "set_irqs index {index} start {start} count {count}: the device has no interrupts"
                ),
            ));
        }
        Ok(())
    }
}

/// The vfio-user regions, one per VFIO PCI region index.
pub fn regions() -> Vec<ServerRegion> {
    (0..VFIO_PCI_NUM_REGIONS)
        .map(|index| {
            let size = match index {
                VFIO_PCI_BAR0_REGION_INDEX => BAR0_SIZE,
                VFIO_PCI_BAR2_REGION_INDEX => BAR2_SIZE,
                VFIO_PCI_BAR4_REGION_INDEX => BAR4_SIZE,
                VFIO_PCI_CONFIG_REGION_INDEX => CONFIG_SPACE_SIZE as u64,
                _ => 0,
            };
            let flags = if size > 0 {
                VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE
            } else {
                0
            };
            ServerRegion {
                region_info: vfio_region_info {
                    argsz: size_of::<vfio_region_info>() as u32,
                    flags,
                    index,
                    cap_offset: 0,
                    size,
                    offset: 0,
                },
                sparse_areas: Vec::new(),
                mmap_fd: None,
            }
        })
        .collect()
}

/// The interrupt indexes (INTx, MSI, MSI-X, ERR, REQ), all with 0 vectors.
pub fn irqs() -> Vec<IrqInfo> {
    (0..VFIO_PCI_NUM_IRQS)
        .map(|index| IrqInfo {
            index,
            flags: 0,
            count: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests;
