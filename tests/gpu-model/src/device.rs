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

use vfio_bindings::bindings::vfio::{
    vfio_region_info, VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion};

use crate::config::{ConfigSpace, LiveState, Variant, BAR0_SIZE, BAR2_SIZE, CONFIG_SPACE_SIZE};
use crate::control::{ControlWatcher, Overrides, Settings};
use crate::log::{format_access, AccessLog, Space};
use crate::readiness::{Clock, Readiness};

/// BAR0 offset of the C2C link status register (`C2C_LINK_BAR0_OFFSET` in
/// Linux drivers/vfio/pci/nvgrace-gpu/main.c).
pub const BAR0_C2C_LINK_STATUS: u64 = 0x1498;
/// BAR0 offset of the HBM training status register
/// (`HBM_TRAINING_BAR0_OFFSET` in the same driver).
pub const BAR0_HBM_TRAINING_STATUS: u64 = 0x200bc;
/// Width in bytes of each status register.
pub const BAR0_STATUS_LEN: usize = 4;
/// Value of a status register once the device is ready (`STATUS_READY` in
/// the same driver); it reads 0 before.
pub const STATUS_READY: u32 = 0xff;

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
}

/// The emulated GPU.
pub struct GpuDevice {
    config: ConfigSpace,
    /// Contents of the BAR2 RAM window, [`BAR2_SIZE`] bytes.
    bar2: Vec<u8>,
    clock: Box<dyn Clock>,
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
        let (log, control) = match &options.state_dir {
            Some(dir) => (
                AccessLog::create(&dir.join("access.log"))?,
                Some(ControlWatcher::new(dir.join("control"))),
            ),
            None => (AccessLog::disabled(), None),
        };
        let now = clock.now();
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
            _ => Err(no_such_region(region)),
        }
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.config_write(offset, data),
            VFIO_PCI_BAR0_REGION_INDEX => self.bar0_write(offset, data),
            VFIO_PCI_BAR2_REGION_INDEX => self.bar2_write(offset, data),
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
mod tests {
    use super::*;
    use crate::config::{COMMAND, CXL_DVSEC, CXL_RANGE1_SIZE_LOW, DEVCTL};
    use crate::readiness::tests::FakeClock;
    use crate::test_util::TempDir;
    use std::fs;

    struct Rig {
        dev: GpuDevice,
        clock: FakeClock,
        dir: TempDir,
    }

    impl Rig {
        fn new(variant: Variant, settings: Settings) -> Rig {
            Rig::with_control(variant, settings, None)
        }

        fn with_control(variant: Variant, settings: Settings, control: Option<&str>) -> Rig {
            let dir = TempDir::new("device");
            if let Some(text) = control {
                fs::write(dir.path().join("control"), text).expect("write control");
            }
            let clock = FakeClock::new();
            let options = Options {
                variant,
                settings,
                state_dir: Some(dir.path().to_path_buf()),
            };
            let dev = GpuDevice::new(options, Box::new(clock.clone())).expect("device");
            Rig { dev, clock, dir }
        }

        fn read(&mut self, region: u32, offset: u64, len: usize) -> u64 {
            let mut buf = [0u8; 8];
            self.dev
                .region_read(region, offset, &mut buf[..len])
                .expect("read");
            u64::from_le_bytes(buf)
        }

        fn write(&mut self, region: u32, offset: u64, data: &[u8]) {
            self.dev.region_write(region, offset, data).expect("write");
        }

        fn c2c(&mut self) -> u64 {
            self.read(VFIO_PCI_BAR0_REGION_INDEX, BAR0_C2C_LINK_STATUS, 4)
        }

        fn control(&self, text: &str) {
            fs::write(self.dir.path().join("control"), text).expect("write control");
        }

        fn log(&self) -> Vec<String> {
            fs::read_to_string(self.dir.path().join("access.log"))
                .expect("read log")
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn delay(ms: u64) -> Settings {
        Settings {
            ready_delay_ms: ms,
            ..Settings::default()
        }
    }

    #[test]
    fn status_registers_follow_power_on_readiness() {
        let mut rig = Rig::new(Variant::Gh200, delay(100));
        assert_eq!(rig.c2c(), 0);
        rig.clock.advance_ms(100);
        assert_eq!(rig.c2c(), 0xff);
        assert_eq!(
            rig.read(VFIO_PCI_BAR0_REGION_INDEX, BAR0_HBM_TRAINING_STATUS, 8),
            0xff
        );
        assert_eq!(
            rig.read(VFIO_PCI_BAR0_REGION_INDEX, BAR0_HBM_TRAINING_STATUS, 1),
            0xff
        );
        assert_eq!(
            rig.read(VFIO_PCI_BAR0_REGION_INDEX, BAR0_HBM_TRAINING_STATUS + 1, 1),
            0
        );
        assert_eq!(
            rig.read(VFIO_PCI_BAR0_REGION_INDEX, BAR0_HBM_TRAINING_STATUS - 4, 8),
            0xff << 32
        );
        assert_eq!(rig.read(VFIO_PCI_BAR0_REGION_INDEX, 0, 4), 0);
        rig.write(VFIO_PCI_BAR0_REGION_INDEX, BAR0_C2C_LINK_STATUS, &[0; 4]);
        assert_eq!(rig.c2c(), 0xff, "writes are ignored");
        assert_eq!(
            rig.log()[..4],
            [
                "start variant=gh200 device=0x2342",
                "control ready_delay_ms=100 never_ready=0 power_on_delay_ms=100 cxl_timeout=0 \
                 flap_ready_ms=0 flap_not_ready_ms=0 bar0_all_ones=0",
                "bar0-read off=0x1498 len=4 val=0x00000000",
                "ready",
            ]
        );
        assert_eq!(rig.log()[4], "bar0-read off=0x1498 len=4 val=0x000000ff");
        let mut buf = [0u8; 4];
        assert!(rig.dev.region_read(0, BAR0_SIZE - 2, &mut buf).is_err());
        assert!(rig.dev.region_read(4, 0, &mut buf).is_err());
    }

    #[test]
    fn flr_resets_registers_and_readiness() {
        let mut rig = Rig::new(Variant::Gb200, delay(50));
        rig.clock.advance_ms(50);
        let cfg = VFIO_PCI_CONFIG_REGION_INDEX;
        rig.write(cfg, COMMAND as u64, &6u16.to_le_bytes());
        rig.write(cfg, 0x10, &0xfd00_0000u32.to_le_bytes());
        rig.write(VFIO_PCI_BAR2_REGION_INDEX, 0x1000, &[0x5a]);
        assert_eq!(rig.read(cfg, COMMAND as u64, 2), 6);
        assert_eq!(rig.c2c(), 0xff);
        let devctl = rig.read(cfg, DEVCTL as u64, 2) as u16;
        rig.write(cfg, DEVCTL as u64, &(devctl | 0x8000).to_le_bytes());
        assert_eq!(rig.read(cfg, DEVCTL as u64, 2) & 0x8000, 0);
        assert_eq!(rig.read(cfg, COMMAND as u64, 2), 0);
        assert_eq!(rig.read(cfg, 0x10, 4), 0);
        assert_eq!(rig.c2c(), 0);
        assert_eq!(
            rig.read(VFIO_PCI_BAR2_REGION_INDEX, 0x1000, 1),
            0x5a,
            "RAM kept"
        );
        rig.clock.advance_ms(49);
        assert_eq!(rig.c2c(), 0);
        rig.clock.advance_ms(1);
        assert_eq!(rig.c2c(), 0xff);
        let log = rig.log();
        let reset = log
            .iter()
            .position(|l| l == "reset cause=flr")
            .expect("reset logged");
        assert_eq!(log[reset - 1], "cfg-write off=0x048 len=2 val=0xa810");
        assert_eq!(log.iter().filter(|l| *l == "ready").count(), 2);
        assert!(log.contains(&"bar2-write off=0x1000 len=1 val=0x5a".to_owned()));
    }

    #[test]
    fn vfio_user_reset_and_never_ready() {
        let settings = Settings {
            never_ready: true,
            ..delay(10)
        };
        let mut rig = Rig::new(Variant::Gb300, settings);
        rig.clock.advance_ms(10);
        assert_eq!(
            rig.c2c(),
            0xff,
            "power-on uses the delay even with never_ready"
        );
        ServerBackend::reset(&mut rig.dev).expect("reset");
        rig.clock.advance_ms(3_600_000);
        assert_eq!(rig.c2c(), 0);
        assert!(rig.log().contains(&"reset cause=vfio-user".to_owned()));
        // Clearing never_ready takes effect at the next reset.
        rig.control("never_ready=0\nready_delay_ms=5\n");
        assert_eq!(rig.c2c(), 0);
        rig.dev.reset(ResetCause::VfioUser);
        rig.clock.advance_ms(5);
        assert_eq!(rig.c2c(), 0xff);
    }

    #[test]
    fn control_file_power_on_delay_is_a_floor() {
        let mut rig = Rig::with_control(
            Variant::Gh200,
            delay(0),
            Some("power_on_delay_ms=300\nready_delay_ms=20\nnot_ready_now=1\n"),
        );
        rig.clock.advance_ms(10);
        rig.dev.reset(ResetCause::VfioUser);
        rig.clock.advance_ms(20);
        assert_eq!(rig.c2c(), 0, "a reset does not cut power-on short");
        rig.clock.advance_ms(270);
        assert_eq!(rig.c2c(), 0xff);
        assert!(
            !rig.log().contains(&"not-ready cause=control".to_owned()),
            "moot at start"
        );

        let mut rig = Rig::with_control(Variant::Gh200, delay(0), Some("power_on_delay_ms=never"));
        rig.dev.reset(ResetCause::Flr);
        rig.clock.advance_ms(1_000_000);
        assert_eq!(rig.c2c(), 0, "power-on never: never ready");
    }

    #[test]
    fn control_file_not_ready_now_applies_once() {
        let mut rig = Rig::new(Variant::Gh200, delay(0));
        assert_eq!(rig.c2c(), 0xff);
        // not_ready_now drops readiness once, without a register reset.
        let cfg = VFIO_PCI_CONFIG_REGION_INDEX;
        rig.write(cfg, COMMAND as u64, &2u16.to_le_bytes());
        rig.control("ready_delay_ms=30\nnot_ready_now=1\n");
        assert_eq!(rig.c2c(), 0);
        assert_eq!(rig.read(cfg, COMMAND as u64, 2), 2);
        rig.clock.advance_ms(30);
        assert_eq!(rig.c2c(), 0xff);
        assert_eq!(rig.c2c(), 0xff, "consumed: not applied again");
        let log = rig.log();
        assert_eq!(
            log.iter()
                .filter(|l| *l == "not-ready cause=control")
                .count(),
            1
        );
        // Rewriting the same content is a new request.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::remove_file(rig.dir.path().join("control")).expect("remove");
        rig.control("ready_delay_ms=30\nnot_ready_now=1\n");
        assert_eq!(rig.c2c(), 0);
        // Removing the file restores the command-line settings.
        fs::remove_file(rig.dir.path().join("control")).expect("remove");
        assert_eq!(rig.c2c(), 0);
        assert_eq!(rig.dev.settings(), &delay(0));
    }

    #[test]
    fn cxl_range_size_low_follows_readiness_and_timeout() {
        let settings = Settings {
            cxl_timeout: 1,
            ..delay(100)
        };
        let mut rig = Rig::new(Variant::Cxl, settings);
        let cfg = VFIO_PCI_CONFIG_REGION_INDEX;
        let rsl = (CXL_DVSEC + CXL_RANGE1_SIZE_LOW) as u64;
        assert_eq!(rig.read(cfg, rsl, 4), 1 << 13);
        rig.clock.advance_ms(100);
        assert_eq!(rig.read(cfg, rsl, 4), (1 << 13) | 0b11);
        rig.control("cxl_timeout=4\n");
        assert_eq!(rig.read(cfg, rsl, 4), (4 << 13) | 0b11);
        assert_eq!(rig.read(cfg, rsl, 1), 0b11);
        rig.control("cxl_timeout=4\nnot_ready_now=1\n");
        assert_eq!(rig.read(cfg, rsl, 4), 4 << 13);
    }

    #[test]
    fn cxl_memory_info_valid_and_active_come_separately() {
        let mut rig = Rig::new(Variant::Cxl, delay(0));
        let cfg = VFIO_PCI_CONFIG_REGION_INDEX;
        let rsl = (CXL_DVSEC + CXL_RANGE1_SIZE_LOW) as u64;
        assert_eq!(rig.read(cfg, rsl, 4), 0b11);
        // Each reset: Memory_Info_Valid after 200 ms, Memory_Active after 900.
        rig.control("ready_delay_ms=900\ncxl_info_valid_delay_ms=200\ncxl_timeout=1\n");
        rig.dev.reset(ResetCause::VfioUser);
        assert_eq!(rig.read(cfg, rsl, 4), 1 << 13);
        rig.clock.advance_ms(200);
        assert_eq!(rig.read(cfg, rsl, 4), (1 << 13) | 0b01);
        rig.clock.advance_ms(699);
        assert_eq!(rig.read(cfg, rsl, 4), (1 << 13) | 0b01);
        rig.clock.advance_ms(1);
        assert_eq!(rig.read(cfg, rsl, 4), (1 << 13) | 0b11);
        // Never valid: Memory_Active alone.
        rig.control("ready_delay_ms=0\ncxl_info_valid_delay_ms=never\n");
        rig.dev.reset(ResetCause::VfioUser);
        rig.clock.advance_ms(10_000);
        assert_eq!(rig.read(cfg, rsl, 4), 0b10);
        // Without the key both follow readiness again.
        rig.control("ready_delay_ms=0\n");
        assert_eq!(rig.read(cfg, rsl, 4), 0b11);
    }

    #[test]
    fn interrupts_and_dma() {
        let mut rig = Rig::new(Variant::Gh200, delay(0));
        rig.dev
            .set_irqs(3, 0x21, 0, 0, Vec::new())
            .expect("count 0");
        assert!(rig.dev.set_irqs(1, 0x24, 0, 1, Vec::new()).is_err());
        rig.dev
            .dma_map(DmaMapFlags::empty(), 0, 0x1000, 0x2000, None)
            .expect("dma_map");
        rig.dev
            .dma_unmap(DmaUnmapFlags::empty(), 0x1000, 0x2000)
            .expect("dma_unmap");
        let log = rig.log();
        assert_eq!(log[2], "ready", "ready at once with delay 0");
        assert!(log.contains(&"dma-map iova=0x1000 size=0x2000 offset=0x0 flags=0x0".to_owned()));
    }

    #[test]
    fn region_table() {
        let regions = regions();
        assert_eq!(regions.len(), 9);
        let sizes: Vec<u64> = regions.iter().map(|r| r.region_info.size).collect();
        assert_eq!(sizes, [16 << 20, 0, 32 << 20, 0, 0, 0, 0, 4096, 0]);
        assert!(regions.iter().all(|r| r.mmap_fd.is_none()));
        assert_eq!(irqs().len(), 5);
    }

    #[test]
    fn flapping_readiness_follows_the_control_file() {
        let mut rig = Rig::new(Variant::Gh200, delay(0));
        assert_eq!(rig.c2c(), 0xff);
        rig.control("flap_ready_ms=30\nflap_not_ready_ms=20\n");
        // The pattern starts at the read that noticed the file, with a ready period.
        assert_eq!(rig.c2c(), 0xff);
        rig.clock.advance_ms(30);
        assert_eq!(rig.c2c(), 0);
        rig.clock.advance_ms(20);
        assert_eq!(rig.c2c(), 0xff);
        rig.clock.advance_ms(45);
        assert_eq!(rig.c2c(), 0, "95 ms: in the second not-ready period");
        // A reset restarts readiness; flapping goes on once it is ready.
        rig.control("flap_ready_ms=30\nflap_not_ready_ms=20\nready_delay_ms=10\n");
        rig.dev.reset(ResetCause::Flr);
        assert_eq!(rig.c2c(), 0);
        rig.clock.advance_ms(10);
        assert_eq!(rig.c2c(), 0xff);
        rig.clock.advance_ms(30);
        assert_eq!(rig.c2c(), 0);
        // Removing the keys stops it.
        rig.control("ready_delay_ms=10\n");
        assert_eq!(rig.c2c(), 0xff);
        rig.clock.advance_ms(1_000);
        assert_eq!(rig.c2c(), 0xff);
        let log = rig.log();
        assert_eq!(
            log.iter().filter(|l| *l == "not-ready cause=flap").count(),
            3,
            "{log:#?}"
        );
        assert!(log.contains(
            &"control ready_delay_ms=0 never_ready=0 power_on_delay_ms=0 cxl_timeout=0 \
              flap_ready_ms=30 flap_not_ready_ms=20 bar0_all_ones=0"
                .to_owned()
        ));
    }

    #[test]
    fn flapping_shows_in_the_cxl_status_too() {
        let mut rig = Rig::new(Variant::Cxl, delay(0));
        let cfg = VFIO_PCI_CONFIG_REGION_INDEX;
        let rsl = (CXL_DVSEC + CXL_RANGE1_SIZE_LOW) as u64;
        rig.control("flap_ready_ms=10\nflap_not_ready_ms=10\n");
        assert_eq!(rig.read(cfg, rsl, 4) & 0b11, 0b11);
        rig.clock.advance_ms(10);
        assert_eq!(rig.read(cfg, rsl, 4) & 0b11, 0);
    }

    #[test]
    fn bar0_all_ones_applies_at_once_to_every_bar0_read() {
        let mut rig = Rig::new(Variant::Gb200, delay(0));
        let bar0 = VFIO_PCI_BAR0_REGION_INDEX;
        assert_eq!(rig.read(bar0, 0x100, 4), 0);
        rig.control("bar0_all_ones=1\n");
        // Not a status register: the file is checked on every BAR0 read.
        assert_eq!(rig.read(bar0, 0x100, 4), 0xffff_ffff);
        assert_eq!(rig.c2c(), 0xffff_ffff, "not STATUS_READY (0xff)");
        assert_eq!(rig.read(bar0, BAR0_HBM_TRAINING_STATUS, 8), u64::MAX);
        assert_eq!(rig.read(bar0, 0x3, 1), 0xff);
        assert!(rig.dev.is_ready(), "readiness itself is unchanged");
        // Config space and BAR2 are not affected.
        assert_eq!(rig.read(VFIO_PCI_CONFIG_REGION_INDEX, 0, 2), 0x10de);
        rig.write(VFIO_PCI_BAR2_REGION_INDEX, 0x10, &[0x5a]);
        assert_eq!(rig.read(VFIO_PCI_BAR2_REGION_INDEX, 0x10, 1), 0x5a);
        rig.control("bar0_all_ones=0\n");
        assert_eq!(rig.c2c(), 0xff);
        assert_eq!(rig.read(bar0, 0x100, 4), 0);
        assert!(rig
            .log()
            .contains(&"bar0-read off=0x0100 len=4 val=0xffffffff".to_owned()));
    }
}
