// SPDX-License-Identifier: GPL-2.0
//! Unit tests of [`super`].

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
        Rig::build(variant, settings, control, false)
    }

    fn build(variant: Variant, settings: Settings, control: Option<&str>, log_times: bool) -> Rig {
        let dir = TempDir::new("device");
        if let Some(text) = control {
            fs::write(dir.path().join("control"), text).expect("write control");
        }
        let clock = FakeClock::new();
        let options = Options {
            variant,
            settings,
            state_dir: Some(dir.path().to_path_buf()),
            log_times,
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
    assert!(rig.dev.region_read(1, 0, &mut buf).is_err());
}

#[test]
fn bar4_reads_zero_ignores_writes_and_is_bounded() {
    let mut rig = Rig::new(Variant::Gh200, delay(0));
    let bar4 = VFIO_PCI_BAR4_REGION_INDEX;
    rig.write(bar4, 0x10, &0x5a5a_5a5au32.to_le_bytes());
    assert_eq!(rig.read(bar4, 0x10, 4), 0);
    assert_eq!(rig.read(bar4, BAR4_SIZE - 8, 8), 0);
    let mut buf = [0u8; 4];
    assert!(rig.dev.region_read(bar4, BAR4_SIZE - 2, &mut buf).is_err());
    assert!(rig.dev.region_write(bar4, BAR4_SIZE, &buf).is_err());
    let log = rig.log();
    assert!(log.contains(&"bar4-write off=0x0010 len=4 val=0x5a5a5a5a".to_owned()));
    assert!(log.contains(&"bar4-read off=0x0010 len=4 val=0x00000000".to_owned()));
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
fn log_times_give_every_line_its_time_since_start() {
    let mut rig = Rig::build(Variant::Gh200, delay(200), None, true);
    rig.clock.advance_ms(7);
    assert_eq!(rig.read(VFIO_PCI_BAR0_REGION_INDEX, 0, 4), 0);
    rig.clock.advance_ms(2);
    let cfg = VFIO_PCI_CONFIG_REGION_INDEX;
    let devctl = rig.read(cfg, DEVCTL as u64, 2) as u16;
    rig.write(cfg, DEVCTL as u64, &(devctl | 0x8000).to_le_bytes());
    rig.clock.advance_ms(199);
    assert_eq!(rig.c2c(), 0);
    rig.clock.advance_ms(1);
    assert_eq!(rig.c2c(), 0xff);
    let log = rig.log();
    assert_eq!(log[0], "start variant=gh200 device=0x2342 t=0");
    for line in [
        "bar0-read off=0x0000 len=4 val=0x00000000 t=7000000",
        "reset cause=flr t=9000000",
        "bar0-read off=0x1498 len=4 val=0x00000000 t=208000000",
        "ready t=209000000",
        "bar0-read off=0x1498 len=4 val=0x000000ff t=209000000",
    ] {
        assert!(log.contains(&line.to_owned()), "{line} in {log:#?}");
    }
    assert!(log.iter().all(|l| l.contains(" t=")), "{log:#?}");
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
    assert_eq!(sizes, [16 << 20, 0, 32 << 20, 0, 64 << 20, 0, 0, 4096, 0]);
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
