// SPDX-License-Identifier: GPL-2.0
//! Unit tests of [`super`].

use super::*;

const READY: LiveState = LiveState {
    ready: true,
    info_valid: true,
    cxl_timeout: 0,
};
const NOT_READY: LiveState = LiveState {
    ready: false,
    info_valid: false,
    cxl_timeout: 0,
};

fn r16(cs: &ConfigSpace, off: usize) -> u16 {
    let mut b = [0; 2];
    cs.read(off as u64, &mut b, READY).expect("read");
    u16::from_le_bytes(b)
}

fn w(cs: &mut ConfigSpace, off: usize, data: &[u8]) -> WriteEffect {
    cs.write(off as u64, data).expect("write")
}

/// Walks the standard capability list like the Linux PCI core does.
fn std_caps(cs: &ConfigSpace) -> Vec<(usize, u8)> {
    let mut caps = Vec::new();
    let mut ptr = usize::from(cs.read32(CAPABILITIES_POINTER, READY) as u8);
    while ptr != 0 {
        assert!(
            (0x40..0x100).contains(&ptr) && caps.len() < 48,
            "bad pointer {ptr:#x}"
        );
        let header = cs.read32(ptr, READY);
        caps.push((ptr, header as u8));
        ptr = usize::from((header >> 8) as u8);
    }
    caps
}

/// Walks the extended capability list from 0x100.
fn ext_caps(cs: &ConfigSpace) -> Vec<(usize, u32)> {
    let mut caps = Vec::new();
    let mut ptr = EXT_CAP_START;
    while ptr != 0 {
        assert!((0x100..CONFIG_SPACE_SIZE).contains(&ptr) && caps.len() < 64);
        let header = cs.read32(ptr, READY);
        assert_eq!(header & 0xffff, u32::from(EXT_CAP_ID_DVSEC));
        assert_eq!((header >> 16) & 0xf, 1, "capability version");
        caps.push((ptr, header));
        ptr = (header >> 20) as usize;
    }
    caps
}

#[test]
fn header_identifies_each_variant() {
    for v in Variant::ALL {
        let cs = ConfigSpace::new(v);
        assert_eq!(r16(&cs, VENDOR_ID), 0x10de);
        assert_eq!(r16(&cs, DEVICE_ID), v.device_id());
        assert_eq!(cs.read32(REVISION, READY), 0x0302_00a1);
        assert_eq!(r16(&cs, STATUS), STATUS_CAP_LIST);
        assert_eq!(r16(&cs, SUBSYSTEM_VENDOR_ID), 0x10de);
        assert_eq!(cs.read32(0x3c, READY), 0, "interrupt pin and line");
        assert_eq!(cs.read32(BAR4, READY), 0xc, "BAR4: 64-bit prefetchable");
        assert_eq!(cs.read32(BAR5, READY), 0);
    }
    assert_eq!(Variant::from_name("gh200"), Some(Variant::Gh200));
    assert_eq!(
        Variant::from_name("cxl").map(Variant::device_id),
        Some(0x31c2)
    );
    assert_eq!(Variant::from_name("gh100"), None);
}

#[test]
fn capability_chains() {
    for v in Variant::ALL {
        let cs = ConfigSpace::new(v);
        assert_eq!(std_caps(&cs), vec![(PCIE_CAP, PCIE_CAP_ID)]);
        assert_eq!(r16(&cs, PCIE_CAP + 2), 0x0002, "version 2, Endpoint");
        assert_eq!(cs.read32(DEVCAP, READY), 1 << 28, "FLR capable");
        let offsets: Vec<usize> = ext_caps(&cs).iter().map(|c| c.0).collect();
        if v == Variant::Cxl {
            assert_eq!(offsets, vec![0x100, 0x110]);
        } else {
            assert_eq!(offsets, vec![0x100]);
        }
    }
}

#[test]
fn nvidia_dvsec_contents() {
    for v in Variant::ALL {
        let cs = ConfigSpace::new(v);
        let h1 = cs.read32(NV_DVSEC + 4, READY);
        assert_eq!(h1 & 0xffff, 0x10de, "vendor");
        assert_eq!((h1 >> 16) & 0xf, 0, "revision");
        assert_eq!(h1 >> 20, 0x10, "length");
        assert_eq!(r16(&cs, NV_DVSEC + 8), 3, "DVSEC ID");
        let bitmap = r16(&cs, NV_DVSEC + 0xa);
        assert_eq!(bitmap & 1 != 0, v != Variant::Gh200, "MIG bit on {v}");
    }
}

#[test]
fn cxl_dvsec_contents_follow_readiness_and_timeout() {
    let cs = ConfigSpace::new(Variant::Cxl);
    let h1 = cs.read32(CXL_DVSEC + 4, READY);
    assert_eq!(h1, 0x1e98 | (1 << 16) | (0x3c << 20));
    assert_eq!(r16(&cs, CXL_DVSEC + 8), 0);
    assert_eq!(cs.read32(CXL_DVSEC + 0x18, READY), 0, "Range 1 Size High");
    let rsl = CXL_DVSEC + 0x1c;
    assert_eq!(cs.read32(rsl, READY), 0b11);
    assert_eq!(cs.read32(rsl, NOT_READY), 0);
    let live = LiveState {
        ready: false,
        info_valid: false,
        cxl_timeout: 2,
    };
    assert_eq!(cs.read32(rsl, live), 2 << 13);
    // Memory_Info_Valid and Memory_Active each have their own bit.
    let valid = LiveState {
        info_valid: true,
        ..live
    };
    assert_eq!(cs.read32(rsl, valid), (2 << 13) | 0b01);
    let active = LiveState {
        ready: true,
        ..live
    };
    assert_eq!(cs.read32(rsl, active), (2 << 13) | 0b10);
    // Byte reads see the same live value.
    let mut b = [0u8; 1];
    cs.read(rsl as u64 + 1, &mut b, live).expect("read");
    assert_eq!(b[0], (2u32 << 13 >> 8) as u8);
    assert!(cs.reads_readiness(rsl as u64 + 2, 2));
    assert!(!cs.reads_readiness(rsl as u64 - 4, 4));
    assert!(!ConfigSpace::new(Variant::Gb300).reads_readiness(rsl as u64, 4));
    // Read-only: writes are ignored.
    let mut cs = cs;
    w(&mut cs, rsl, &[0xff; 4]);
    w(&mut cs, CXL_DVSEC + 4, &[0; 4]);
    assert_eq!(cs.read32(rsl, NOT_READY), 0);
    assert_eq!(cs.read32(CXL_DVSEC + 4, READY), h1);
}

#[test]
fn flr_bit_triggers_reset_and_reads_zero() {
    let mut cs = ConfigSpace::new(Variant::Gh200);
    assert_eq!(r16(&cs, DEVCTL), DEVCTL_DEFAULT);
    // Plain write: no FLR, all other bits read back.
    assert!(!w(&mut cs, DEVCTL, &0x7fffu16.to_le_bytes()).flr);
    assert_eq!(r16(&cs, DEVCTL), 0x7fff);
    assert!(!w(&mut cs, DEVCTL, &0x1234u16.to_le_bytes()).flr);
    assert_eq!(r16(&cs, DEVCTL), 0x1234);
    // Bit 15 set, as a word write and as a byte write to the high byte.
    assert!(w(&mut cs, DEVCTL, &0x8020u16.to_le_bytes()).flr);
    assert_eq!(r16(&cs, DEVCTL), 0x0020);
    assert!(w(&mut cs, DEVCTL + 1, &[0x80]).flr);
    assert_eq!(r16(&cs, DEVCTL) & DEVCTL_BCR_FLR, 0);
    // A dword write covering Device Control and Device Status.
    assert!(w(&mut cs, DEVCTL, &0x0000_8000u32.to_le_bytes()).flr);
    // The low byte alone never triggers.
    assert!(!w(&mut cs, DEVCTL, &[0xff]).flr);
}

#[test]
fn bar_sizing_and_reset() {
    let mut cs = ConfigSpace::new(Variant::Gb200);
    assert_eq!(cs.read32(BAR0, READY), 0);
    assert_eq!(cs.read32(BAR2, READY), 0xc);
    w(&mut cs, BAR0, &[0xff; 4]);
    w(&mut cs, BAR2, &[0xff; 4]);
    w(&mut cs, BAR3, &[0xff; 4]);
    assert_eq!(cs.read32(BAR0, READY), !(16u32 << 20) + 1);
    assert_eq!(cs.read32(BAR2, READY), 0xfe00_000c);
    assert_eq!(cs.read32(BAR3, READY), 0xffff_ffff);
    let size =
        !(u64::from(cs.read32(BAR3, READY)) << 32 | u64::from(cs.read32(BAR2, READY) & !0xf)) + 1;
    assert_eq!(size, BAR2_SIZE);
    // Program addresses, then reset.
    w(&mut cs, BAR0, &0xfd00_0000u32.to_le_bytes());
    w(&mut cs, BAR2, &0x8000_0000u32.to_le_bytes());
    w(&mut cs, BAR3, &0x0000_0040u32.to_le_bytes());
    w(&mut cs, COMMAND, &0xffffu16.to_le_bytes());
    assert_eq!(r16(&cs, COMMAND), 0x7, "only I/O, memory and bus master");
    w(&mut cs, DEVCTL, &0x10e0u16.to_le_bytes());
    assert_eq!(cs.read32(BAR0, READY), 0xfd00_0000);
    cs.reset_function();
    assert_eq!(r16(&cs, COMMAND), 0);
    assert_eq!(cs.read32(BAR0, READY), 0);
    assert_eq!(cs.read32(BAR2, READY), 0xc);
    assert_eq!(cs.read32(BAR3, READY), 0);
    assert_eq!(r16(&cs, DEVCTL), DEVCTL_DEFAULT | 0xe0, "MPS kept");
    assert_eq!(r16(&cs, DEVICE_ID), 0x2941);
}

#[test]
fn bar4_is_a_64_bit_prefetchable_bar_of_its_own_size() {
    for v in Variant::ALL {
        let mut cs = ConfigSpace::new(v);
        w(&mut cs, BAR4, &[0xff; 4]);
        w(&mut cs, BAR5, &[0xff; 4]);
        let read = u64::from(cs.read32(BAR5, READY)) << 32 | u64::from(cs.read32(BAR4, READY));
        assert_eq!(read & 0xf, 0xc, "{v}: type bits");
        assert_eq!(!(read & !0xf) + 1, BAR4_SIZE, "{v}: size from sizing");
        assert_ne!(BAR4_SIZE, BAR2_SIZE);
        // Sizing BAR4 leaves BAR2 alone, and the reverse.
        assert_eq!(cs.read32(BAR2, READY), 0xc, "{v}: BAR2 after sizing BAR4");
        w(&mut cs, BAR2, &[0xff; 4]);
        assert_eq!(cs.read32(BAR4, READY) as u64, read & 0xffff_ffff);
        // An address, then an FLR: the address bits go, the type bits stay.
        w(&mut cs, BAR4, &0x8400_0000u32.to_le_bytes());
        w(&mut cs, BAR5, &0x0000_0080u32.to_le_bytes());
        assert_eq!(cs.read32(BAR4, READY), 0x8400_000c);
        assert_eq!(cs.read32(BAR5, READY), 0x80);
        cs.reset_function();
        assert_eq!(cs.read32(BAR4, READY), 0xc);
        assert_eq!(cs.read32(BAR5, READY), 0);
    }
}

#[test]
fn read_only_fields_ignore_writes_and_bounds_are_checked() {
    let mut cs = ConfigSpace::new(Variant::Gh200);
    let before: Vec<u32> = (0..CONFIG_SPACE_SIZE)
        .step_by(4)
        .map(|o| cs.read32(o, READY))
        .collect();
    for off in (0..CONFIG_SPACE_SIZE).step_by(4) {
        if off == COMMAND || off == DEVCTL || (BAR0..BARS_END).contains(&off) {
            continue;
        }
        w(&mut cs, off, &[0xff; 4]);
    }
    let after: Vec<u32> = (0..CONFIG_SPACE_SIZE)
        .step_by(4)
        .map(|o| cs.read32(o, READY))
        .collect();
    assert_eq!(before, after);
    let mut buf = [0u8; 4];
    assert!(cs.read(4094, &mut buf, READY).is_err());
    assert!(cs.write(u64::MAX, &buf).is_err());
    let mut all = vec![0u8; CONFIG_SPACE_SIZE];
    cs.read(0, &mut all, READY).expect("whole space");
    assert_eq!(&all[0..4], &[0xde, 0x10, 0x42, 0x23]);
}
