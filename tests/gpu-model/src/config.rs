// SPDX-License-Identifier: GPL-2.0
//! PCI configuration space of the emulated GPU.
//!
//! The model keeps the 4 KiB configuration space as a byte array plus a
//! per-byte write mask, the way QEMU's PCI core does: a write changes only the
//! bits its mask allows, so read-only fields ignore writes without special
//! cases. Three things are not plain bytes:
//!
//! * BAR sizing falls out of the write masks: the address bits below the BAR
//!   size are read-only zero and the type bits are read-only, so writing all
//!   ones reads back `!(size - 1) | flags` (PCIe Base r6.0 §7.5.1.2.1).
//! * Device Control bit 15 ("Initiate Function Level Reset") is not stored:
//!   writing it set is reported to the caller as [`WriteEffect::flr`] and the
//!   bit always reads 0 (PCIe Base r6.0 §7.5.3.4).
//! * On the `cxl` variant the CXL Range 1 Size Low register is computed at
//!   read time from the device's readiness and the Memory_Active_Timeout
//!   setting (CXL r4.0 §8.1.3.8.2), see [`LiveState`].
//!
//! Layout (offsets in bytes from the start of configuration space):
//!
//! | offset | what |
//! | ------ | ---- |
//! | 0x000  | type 0 header, capabilities pointer (0x34) = 0x40 |
//! | 0x040  | PCI Express capability, version 2, Endpoint, next = 0 |
//! | 0x100  | NVIDIA DVSEC (ID 3), 0x10 bytes; next = 0x110 on `cxl`, else 0 |
//! | 0x110  | `cxl` only: CXL Device DVSEC (ID 0), 0x3C bytes, next = 0 |
//!
//! Everything else reads 0 and ignores writes.

use std::fmt;
use std::io;

use crate::hw;

/// Size of the configuration space in bytes: the PCIe extended configuration
/// space (PCIe Base r6.0 §7.2.2). The vfio-user config region must be this
/// big for the client to see the extended capabilities.
pub const CONFIG_SPACE_SIZE: usize = 4096;

/// PCI-SIG vendor ID of NVIDIA.
pub const NVIDIA_VENDOR_ID: u16 = hw::NVIDIA_VENDOR_ID;
/// Class code 03h/02h/00h: display controller, 3D controller (PCI Code and ID
/// Assignment Specification r1.16 §1.4), as the GPU reports it.
pub const CLASS_CODE_3D_CONTROLLER: u32 = 0x03_02_00;
/// Revision ID the model reports (any value works; 0xa1 is what GH200 boards
/// report).
pub const REVISION_ID: u8 = 0xa1;

// Type 0 header fields (PCIe Base r6.0 §7.5.1.1 and §7.5.1.2).
/// Vendor ID register, 16 bits.
pub const VENDOR_ID: usize = 0x00;
/// Device ID register, 16 bits.
pub const DEVICE_ID: usize = 0x02;
/// Command register, 16 bits (§7.5.1.1.3).
pub const COMMAND: usize = 0x04;
/// Status register, 16 bits (§7.5.1.1.4).
pub const STATUS: usize = 0x06;
/// Revision ID register, 8 bits.
pub const REVISION: usize = 0x08;
/// Class Code register, 24 bits (programming interface, sub-class, base class).
pub const CLASS_CODE: usize = 0x09;
/// Header Type register, 8 bits (0 = type 0, single function).
pub const HEADER_TYPE: usize = 0x0e;
/// Base Address Register 0, 32 bits (§7.5.1.2.1).
pub const BAR0: usize = hw::PCI_BASE_ADDRESS_0 as usize;
/// Base Address Register 2 (low half of the 64-bit BAR2/3).
pub const BAR2: usize = hw::RESMEM_BAR_OFFSET as usize;
/// Base Address Register 3 (high half of the 64-bit BAR2/3).
pub const BAR3: usize = 0x1c;
/// Base Address Register 4 (low half of the 64-bit BAR4/5).
pub const BAR4: usize = hw::USEMEM_BAR_OFFSET as usize;
/// Base Address Register 5 (high half of the 64-bit BAR4/5).
pub const BAR5: usize = 0x24;
/// End (exclusive) of the BAR registers.
pub const BARS_END: usize = 0x28;
/// Subsystem Vendor ID register, 16 bits.
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
/// Capabilities Pointer register, 8 bits.
pub const CAPABILITIES_POINTER: usize = 0x34;
/// Interrupt Pin register, 8 bits (0 = no INTx).
pub const INTERRUPT_PIN: usize = 0x3d;

/// Command register: I/O Space Enable.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: Memory Space Enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: Bus Master Enable.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// The Command register bits the model lets software change.
pub const COMMAND_WRITABLE: u16 = COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER;
/// Status register: Capabilities List (§7.5.1.1.4), hardwired to 1.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// BAR0 size in bytes: 16 MiB, 32-bit non-prefetchable memory.
pub const BAR0_SIZE: u64 = hw::BAR0_SIZE;
/// BAR2/3 size in bytes: 32 MiB, 64-bit prefetchable memory.
pub const BAR2_SIZE: u64 = 32 << 20;
/// BAR4/5 size in bytes: 64 MiB, 64-bit prefetchable memory. A GH200 has a
/// small physical BAR4/5 (the device memory itself is reached over C2C, not
/// through it; the variant drivers show usemem at index 4 instead). That it
/// exists matters: vfio-pci-core exports a dma-buf of a region only if it
/// could request and iomap the BAR of that index (`vfio_pci_core_map_bars()`
/// and `vfio_pci_core_feature_dma_buf()` in Linux 7.3), before it asks the
/// driver. The size is the model's choice; it differs from BAR2's and from
/// every usemem BAR size (1 GiB and more) so that a test cannot mistake one
/// for another.
pub const BAR4_SIZE: u64 = 64 << 20;
/// Memory BAR bits 2:1 = 10b: 64-bit decoder (§7.5.1.2.1).
pub const BAR_MEM_TYPE_64: u32 = 0b10 << 1;
/// Memory BAR bit 3: prefetchable.
pub const BAR_MEM_PREFETCH: u32 = 1 << 3;
/// Memory BAR bits 3:0 hold the type flags and are never address bits.
const BAR_FLAG_BITS: u32 = 0xf;

/// Offset of the PCI Express capability.
pub const PCIE_CAP: usize = 0x40;
/// Length in bytes of a version 2 PCI Express capability (§7.5.3).
pub const PCIE_CAP_LEN: usize = 0x3c;
/// Capability ID of the PCI Express capability (§7.5.3.1).
pub const PCIE_CAP_ID: u8 = 0x10;
/// PCI Express Capabilities Register (cap+0x02, §7.5.3.2): capability version
/// 2 in bits 3:0, Device/Port Type 0000b (PCI Express Endpoint) in bits 7:4.
pub const PCIE_CAPS_VALUE: u16 = 0x0002;
/// Device Capabilities Register offset (cap+0x04, §7.5.3.3).
pub const DEVCAP: usize = PCIE_CAP + 0x04;
/// Device Capabilities bit 28: Function Level Reset Capability.
pub const DEVCAP_FLR: u32 = 1 << 28;
/// Device Control Register offset (cap+0x08, §7.5.3.4).
pub const DEVCTL: usize = PCIE_CAP + 0x08;
/// Device Control bit 15: Initiate Function Level Reset (reads 0).
pub const DEVCTL_BCR_FLR: u16 = 1 << 15;
/// Device Control bits 7:5: Max_Payload_Size, which an FLR preserves
/// (PCIe Base r6.0 §6.6.2).
pub const DEVCTL_PAYLOAD: u16 = 0b111 << 5;
/// Device Control value after reset (§7.5.3.4 default values): Enable Relaxed
/// Ordering (bit 4) = 1, Enable No Snoop (bit 11) = 1, Max_Read_Request_Size
/// (bits 14:12) = 010b (512 bytes), everything else 0.
pub const DEVCTL_DEFAULT: u16 = (1 << 4) | (1 << 11) | (0b010 << 12);

/// Start of the extended capabilities (PCIe Base r6.0 §7.6.2).
pub const EXT_CAP_START: usize = 0x100;
/// Extended capability ID of a Designated Vendor-Specific Extended
/// Capability (DVSEC, PCIe Base r6.0 §7.9.6).
pub const EXT_CAP_ID_DVSEC: u16 = hw::EXT_CAP_ID_DVSEC;
/// Capability version of the DVSEC extended capability header.
pub const DVSEC_CAP_VERSION: u8 = 1;
/// DVSEC Header 1 offset within a DVSEC: vendor (15:0), revision (19:16),
/// length (31:20).
pub const DVSEC_HEADER1: usize = 0x4;
/// DVSEC Header 2 offset within a DVSEC: DVSEC ID (15:0).
pub const DVSEC_HEADER2: usize = 0x8;

/// Offset of the NVIDIA DVSEC.
pub const NV_DVSEC: usize = EXT_CAP_START;
/// Length in bytes of the NVIDIA DVSEC (header included).
pub const NV_DVSEC_LEN: u16 = 0x10;
/// DVSEC ID of the NVIDIA GPU capability DVSEC (`GPU_CAP_DVSEC_REGISTER` in
/// Linux drivers/vfio/pci/nvgrace-gpu/main.c).
pub const NV_DVSEC_ID: u16 = hw::GPU_CAP_DVSEC_ID;
/// Offset within the NVIDIA DVSEC of the 16-bit capability bitmap
/// (`DVSEC_BITMAP_OFFSET` in the same driver).
pub const NV_DVSEC_BITMAP: usize = hw::GPU_CAP_DVSEC_BITMAP as usize;
/// Bitmap bit 0: "MIG supported with cached resmem"
/// (`MIG_SUPPORTED_WITH_CACHED_RESMEM` in the same driver). When clear, the
/// driver applies its MIG hardware bug workaround (uncached resmem).
pub const MIG_SUPPORTED_WITH_CACHED_RESMEM: u16 = 1 << 0;

/// Offset of the CXL Device DVSEC (variant `cxl` only), right after the
/// NVIDIA DVSEC.
pub const CXL_DVSEC: usize = NV_DVSEC + NV_DVSEC_LEN as usize;
/// CXL consortium vendor ID used in DVSEC Header 1 (CXL r4.0 §8.1.3).
pub const CXL_VENDOR_ID: u16 = hw::CXL_VENDOR_ID;
/// DVSEC ID of the "PCIe DVSEC for CXL Devices" (CXL r4.0 §8.1.3).
pub const CXL_DVSEC_ID: u16 = hw::CXL_DEVICE_DVSEC_ID;
/// DVSEC revision of the CXL Device DVSEC the model presents.
pub const CXL_DVSEC_REVISION: u8 = 1;
/// Length in bytes of the CXL Device DVSEC (CXL r4.0 §8.1.3).
pub const CXL_DVSEC_LEN: u16 = 0x3c;
/// DVSEC CXL Range 1 Size High offset within the DVSEC (CXL r4.0 §8.1.3.8.1).
pub const CXL_RANGE1_SIZE_HIGH: usize = 0x18;
/// DVSEC CXL Range 1 Size Low offset within the DVSEC (CXL r4.0 §8.1.3.8.2).
pub const CXL_RANGE1_SIZE_LOW: usize = 0x1c;
/// Range 1 Size Low bit 0: Memory_Info_Valid.
pub const CXL_MEMORY_INFO_VALID: u32 = 1 << 0;
/// Range 1 Size Low bit 1: Memory_Active.
pub const CXL_MEMORY_ACTIVE: u32 = 1 << 1;
/// Range 1 Size Low bits 15:13: Memory_Active_Timeout, encoded as
/// 4^value seconds (000b = 1 s, 001b = 4 s, 010b = 16 s, 011b = 64 s,
/// 100b = 256 s; 101b..111b are reserved).
pub const CXL_MEMORY_ACTIVE_TIMEOUT_SHIFT: u32 = 13;
/// Width mask of the Memory_Active_Timeout field (3 bits).
pub const CXL_MEMORY_ACTIVE_TIMEOUT_MASK: u32 = 0b111;

/// Which GPU the model presents. It decides the device ID and the DVSECs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Grace Hopper GH200: MIG bit clear, no CXL DVSEC.
    Gh200,
    /// Grace Blackwell GB200: MIG bit set, no CXL DVSEC.
    Gb200,
    /// Grace Blackwell GB300: MIG bit set, no CXL DVSEC.
    Gb300,
    /// A GB300-like device that also carries the CXL Device DVSEC.
    Cxl,
}

impl Variant {
    /// All variants, in CLI order.
    pub const ALL: [Variant; 4] = [Variant::Gh200, Variant::Gb200, Variant::Gb300, Variant::Cxl];

    /// Parses a CLI name (`gh200`, `gb200`, `gb300`, `cxl`).
    pub fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// The CLI name, also used in the access log.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Gh200 => "gh200",
            Variant::Gb200 => "gb200",
            Variant::Gb300 => "gb300",
            Variant::Cxl => "cxl",
        }
    }

    /// PCI device ID (the IDs the nvgrace-gpu-vfio-pci driver matches).
    pub fn device_id(self) -> u16 {
        match self {
            Variant::Gh200 => 0x2342,
            Variant::Gb200 => 0x2941,
            Variant::Gb300 | Variant::Cxl => 0x31c2,
        }
    }

    /// Whether the NVIDIA DVSEC bitmap has [`MIG_SUPPORTED_WITH_CACHED_RESMEM`].
    pub fn mig_with_cached_resmem(self) -> bool {
        self != Variant::Gh200
    }

    /// Whether the CXL Device DVSEC follows the NVIDIA DVSEC.
    pub fn has_cxl_dvsec(self) -> bool {
        self == Variant::Cxl
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Device state that some configuration registers reflect at read time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveState {
    /// Whether the device has finished its (emulated) power-on or reset
    /// sequence (and, on CXL devices, Memory_Active is set).
    pub ready: bool,
    /// CXL: whether Memory_Info_Valid is set.
    pub info_valid: bool,
    /// Memory_Active_Timeout field value, 0..=7 (only the low 3 bits count).
    pub cxl_timeout: u8,
}

/// What a configuration write asked the device to do besides storing bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteEffect {
    /// The write set Device Control bit 15: perform a Function Level Reset.
    pub flr: bool,
}

/// Encodes a PCIe extended capability header (PCIe Base r6.0 §7.6.3):
/// ID in bits 15:0, version in 19:16, next capability offset in 31:20.
pub fn ext_cap_header(id: u16, version: u8, next: usize) -> u32 {
    u32::from(id) | (u32::from(version & 0xf) << 16) | ((next as u32 & 0xfff) << 20)
}

/// Encodes DVSEC Header 1 (PCIe Base r6.0 §7.9.6.2): vendor ID in bits 15:0,
/// revision in 19:16, length in bytes in 31:20.
pub fn dvsec_header1(vendor: u16, revision: u8, length: u16) -> u32 {
    u32::from(vendor) | (u32::from(revision & 0xf) << 16) | (u32::from(length & 0xfff) << 20)
}

/// Value of the CXL Range 1 Size Low register (CXL r4.0 §8.1.3.8.2) for a
/// device in `live` state: Memory_Info_Valid is `live.info_valid`,
/// Memory_Active follows readiness, Memory_Active_Timeout is
/// `live.cxl_timeout`, Memory_Size_Low (bits 31:28) and everything else is 0.
pub fn cxl_range1_size_low(live: LiveState) -> u32 {
    let mut status = 0;
    if live.info_valid {
        status |= CXL_MEMORY_INFO_VALID;
    }
    if live.ready {
        status |= CXL_MEMORY_ACTIVE;
    }
    let timeout = u32::from(live.cxl_timeout) & CXL_MEMORY_ACTIVE_TIMEOUT_MASK;
    status | (timeout << CXL_MEMORY_ACTIVE_TIMEOUT_SHIFT)
}

/// The configuration space of one emulated function.
pub struct ConfigSpace {
    variant: Variant,
    /// Stored register contents, little endian.
    bytes: [u8; CONFIG_SPACE_SIZE],
    /// Per byte, the bits a configuration write may change.
    wmask: [u8; CONFIG_SPACE_SIZE],
}

impl ConfigSpace {
    /// Builds the power-on configuration space of `variant`.
    pub fn new(variant: Variant) -> ConfigSpace {
        let mut cs = ConfigSpace {
            variant,
            bytes: [0; CONFIG_SPACE_SIZE],
            wmask: [0; CONFIG_SPACE_SIZE],
        };

        // Type 0 header.
        cs.put16(VENDOR_ID, NVIDIA_VENDOR_ID);
        cs.put16(DEVICE_ID, variant.device_id());
        cs.put16(STATUS, STATUS_CAP_LIST);
        cs.bytes[REVISION] = REVISION_ID;
        let class = CLASS_CODE_3D_CONTROLLER.to_le_bytes();
        cs.bytes[CLASS_CODE..CLASS_CODE + 3].copy_from_slice(&class[..3]);
        cs.bytes[HEADER_TYPE] = 0;
        cs.put16(SUBSYSTEM_VENDOR_ID, NVIDIA_VENDOR_ID);
        cs.bytes[CAPABILITIES_POINTER] = PCIE_CAP as u8;
        cs.bytes[INTERRUPT_PIN] = 0;
        cs.mask16(COMMAND, COMMAND_WRITABLE);

        // BAR0: 32-bit non-prefetchable memory; BAR2/3 and BAR4/5: 64-bit
        // prefetchable.
        cs.put32(BAR0, 0);
        cs.mask32(BAR0, !(BAR0_SIZE as u32 - 1) & !BAR_FLAG_BITS);
        for (low, high, size) in [(BAR2, BAR3, BAR2_SIZE), (BAR4, BAR5, BAR4_SIZE)] {
            cs.put32(low, BAR_MEM_TYPE_64 | BAR_MEM_PREFETCH);
            cs.mask32(low, !(size as u32 - 1) & !BAR_FLAG_BITS);
            cs.put32(high, 0);
            cs.mask32(high, !((size - 1) >> 32) as u32);
        }

        // PCI Express capability.
        cs.bytes[PCIE_CAP] = PCIE_CAP_ID;
        cs.bytes[PCIE_CAP + 1] = 0; // next capability: end of list
        cs.put16(PCIE_CAP + 0x02, PCIE_CAPS_VALUE);
        cs.put32(DEVCAP, DEVCAP_FLR);
        cs.put16(DEVCTL, DEVCTL_DEFAULT);
        cs.mask16(DEVCTL, !DEVCTL_BCR_FLR);

        // NVIDIA DVSEC, optionally followed by the CXL Device DVSEC.
        let nv_next = if variant.has_cxl_dvsec() {
            CXL_DVSEC
        } else {
            0
        };
        cs.put32(
            NV_DVSEC,
            ext_cap_header(EXT_CAP_ID_DVSEC, DVSEC_CAP_VERSION, nv_next),
        );
        cs.put32(
            NV_DVSEC + DVSEC_HEADER1,
            dvsec_header1(NVIDIA_VENDOR_ID, 0, NV_DVSEC_LEN),
        );
        cs.put16(NV_DVSEC + DVSEC_HEADER2, NV_DVSEC_ID);
        let bitmap = if variant.mig_with_cached_resmem() {
            MIG_SUPPORTED_WITH_CACHED_RESMEM
        } else {
            0
        };
        cs.put16(NV_DVSEC + NV_DVSEC_BITMAP, bitmap);

        if variant.has_cxl_dvsec() {
            cs.put32(
                CXL_DVSEC,
                ext_cap_header(EXT_CAP_ID_DVSEC, DVSEC_CAP_VERSION, 0),
            );
            cs.put32(
                CXL_DVSEC + DVSEC_HEADER1,
                dvsec_header1(CXL_VENDOR_ID, CXL_DVSEC_REVISION, CXL_DVSEC_LEN),
            );
            cs.put16(CXL_DVSEC + DVSEC_HEADER2, CXL_DVSEC_ID);
            cs.put32(CXL_DVSEC + CXL_RANGE1_SIZE_HIGH, 0);
            // Range 1 Size Low is computed at read time (see read_byte).
        }
        cs
    }

    /// The variant this space was built for.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// Reads `buf.len()` bytes at `offset`, with live registers computed from
    /// `live`. Any size and alignment within the 4 KiB space is accepted.
    pub fn read(&self, offset: u64, buf: &mut [u8], live: LiveState) -> io::Result<()> {
        let start = Self::check_range(offset, buf.len())?;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.read_byte(start + i, live);
        }
        Ok(())
    }

    /// Writes `data` at `offset`, changing only writable bits.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<WriteEffect> {
        let start = Self::check_range(offset, data.len())?;
        let mut effect = WriteEffect::default();
        for (i, &value) in data.iter().enumerate() {
            let off = start + i;
            if off == DEVCTL + 1 && value & (DEVCTL_BCR_FLR >> 8) as u8 != 0 {
                effect.flr = true;
            }
            let mask = self.wmask[off];
            self.bytes[off] = (self.bytes[off] & !mask) | (value & mask);
        }
        Ok(effect)
    }

    /// Whether a `len`-byte access at `offset` touches a register whose value
    /// depends on readiness (the CXL Range 1 Size Low register).
    pub fn reads_readiness(&self, offset: u64, len: usize) -> bool {
        let reg = (CXL_DVSEC + CXL_RANGE1_SIZE_LOW) as u64;
        self.variant.has_cxl_dvsec() && overlaps(offset, len, reg, 4)
    }

    /// Applies the register effects of a Function Level Reset (PCIe Base
    /// r6.0 §6.6.2): the Command register and the BAR address bits return
    /// to 0 and Device Control to its default, keeping Max_Payload_Size.
    /// Read-only contents (IDs, capabilities, BAR type bits) are unchanged.
    pub fn reset_function(&mut self) {
        self.put16(COMMAND, 0);
        for off in BAR0..BARS_END {
            self.bytes[off] &= !self.wmask[off];
        }
        let devctl = self.get16(DEVCTL);
        self.put16(
            DEVCTL,
            (devctl & DEVCTL_PAYLOAD) | (DEVCTL_DEFAULT & !DEVCTL_PAYLOAD),
        );
    }

    /// Reads a little-endian 32-bit value at `offset`.
    #[cfg(test)]
    pub fn read32(&self, offset: usize, live: LiveState) -> u32 {
        let mut b = [0; 4];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = self.read_byte(offset + i, live);
        }
        u32::from_le_bytes(b)
    }

    fn read_byte(&self, off: usize, live: LiveState) -> u8 {
        let rsl = CXL_DVSEC + CXL_RANGE1_SIZE_LOW;
        if self.variant.has_cxl_dvsec() && (rsl..rsl + 4).contains(&off) {
            return cxl_range1_size_low(live).to_le_bytes()[off - rsl];
        }
        self.bytes[off]
    }

    fn check_range(offset: u64, len: usize) -> io::Result<usize> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= CONFIG_SPACE_SIZE as u64 => Ok(offset as usize),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "config access at {offset:#x} of {len} bytes is outside the \
                     {CONFIG_SPACE_SIZE}-byte configuration space"
                ),
            )),
        }
    }

    fn get16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]])
    }

    fn put16(&mut self, off: usize, value: u16) {
        self.bytes[off..off + 2].copy_from_slice(&value.to_le_bytes());
    }

    fn put32(&mut self, off: usize, value: u32) {
        self.bytes[off..off + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn mask16(&mut self, off: usize, mask: u16) {
        self.wmask[off..off + 2].copy_from_slice(&mask.to_le_bytes());
    }

    fn mask32(&mut self, off: usize, mask: u32) {
        self.wmask[off..off + 4].copy_from_slice(&mask.to_le_bytes());
    }
}

// The layout fits: the PCIe capability ends before the extended space and
// the last DVSEC ends inside the configuration space.
const _: () = assert!(PCIE_CAP + PCIE_CAP_LEN <= EXT_CAP_START);
const _: () = assert!(CXL_DVSEC + CXL_DVSEC_LEN as usize <= CONFIG_SPACE_SIZE);
const _: () = assert!(NV_DVSEC_BITMAP + 2 <= NV_DVSEC_LEN as usize);

/// Whether `[a, a + a_len)` and `[b, b + b_len)` intersect.
pub fn overlaps(a: u64, a_len: usize, b: u64, b_len: usize) -> bool {
    a < b.saturating_add(b_len as u64) && b < a.saturating_add(a_len as u64)
}

#[cfg(test)]
mod tests;
