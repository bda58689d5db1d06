// SPDX-License-Identifier: GPL-2.0

//! The GPU memory as the firmware describes it: the `nvidia,gpu-mem-base-pa` and
//! `nvidia,gpu-mem-size` properties of the GPU's `_DSD`, read from the ACPI tables the guest
//! kernel installed (`/sys/firmware/acpi/tables/`), independently of the rig's configuration
//! and of the drivers.
//!
//! In AML (ACPI 6.5, 20.2 "AML Grammar Definition") a `_DSD` property is a package of a string,
//! `StringPrefix` (0x0D) then the NUL-terminated name, and its value, here an integer: `ZeroOp`
//! (0x00), `OneOp` (0x01), `OnesOp` (0xFF) or a `BytePrefix` (0x0A), `WordPrefix` (0x0B),
//! `DWordPrefix` (0x0C) or `QWordPrefix` (0x0E) constant, little-endian.

use std::io;

const TABLES: &str = "/sys/firmware/acpi/tables";

/// The integer that follows the string `name` in `aml`, if it is one.
fn integer_after(aml: &[u8], name: &str) -> Option<u64> {
    let mut needle = vec![0x0d];
    needle.extend_from_slice(name.as_bytes());
    needle.push(0);
    let at = aml.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let rest = aml.get(at..)?;
    let le = |n: usize| -> Option<u64> {
        let b = rest.get(1..1 + n)?;
        Some(b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    };
    match *rest.first()? {
        0x00 => Some(0),
        0x01 => Some(1),
        0xff => Some(u64::MAX),
        0x0a => le(1),
        0x0b => le(2),
        0x0c => le(4),
        0x0e => le(8),
        _ => None,
    }
}

/// `(base, size)` in bytes from the first installed SSDT or DSDT that has both properties;
/// `None` if none has.
pub fn gpu_memory() -> io::Result<Option<(u64, u64)>> {
    let mut names: Vec<_> = std::fs::read_dir(TABLES)
        .map_err(|e| io::Error::new(e.kind(), format!("{TABLES}: {e}")))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("SSDT") || n == "DSDT")
        .collect();
    names.sort();
    for n in names {
        let aml = std::fs::read(format!("{TABLES}/{n}"))?;
        if let (Some(base), Some(size)) = (
            integer_after(&aml, "nvidia,gpu-mem-base-pa"),
            integer_after(&aml, "nvidia,gpu-mem-size"),
        ) {
            return Ok(Some((base, size)));
        }
    }
    Ok(None)
}
