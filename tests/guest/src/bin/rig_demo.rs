// SPDX-License-Identifier: GPL-2.0

//! What a user sees of the GPU: its PCI identity (`lspci -nn` style), the bound driver, and the
//! VFIO regions the driver reports, with their sizes. `make demo` runs it in the guest.

use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::GPU_BDF;
use vfio_bindings::bindings::vfio as uapi;

const REGION_NAMES: [&str; 9] = [
    "BAR0", "BAR1", "BAR2", "BAR3", "BAR4", "BAR5", "ROM", "config", "VGA",
];

fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ];
    for (unit, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} B")
}

fn flags(f: u32) -> String {
    let mut v = Vec::new();
    for (bit, name) in [
        (uapi::VFIO_REGION_INFO_FLAG_READ, "read"),
        (uapi::VFIO_REGION_INFO_FLAG_WRITE, "write"),
        (uapi::VFIO_REGION_INFO_FLAG_MMAP, "mmap"),
        (uapi::VFIO_REGION_INFO_FLAG_CAPS, "caps"),
    ] {
        if f & bit != 0 {
            v.push(name);
        }
    }
    v.join(",")
}

fn main() -> std::io::Result<()> {
    let dir = sys::pci_dir(GPU_BDF);
    let hex = |attr: &str| -> std::io::Result<u32> {
        let s = sys::read_attr(dir.join(attr))?;
        u32::from_str_radix(s.trim_start_matches("0x"), 16).map_err(std::io::Error::other)
    };
    let (vendor, device, class) = (hex("vendor")?, hex("device")?, hex("class")?);
    println!(
        "{} 3D controller [{:04x}]: NVIDIA Corporation Device [{vendor:04x}:{device:04x}]",
        &GPU_BDF[5..],
        class >> 8
    );
    println!(
        "\tKernel driver in use: {}",
        sys::bound_driver(GPU_BDF).unwrap_or_else(|| "none".into())
    );
    if let Ok(fw) = sys::read_attr(dir.join("firmware_node/path")) {
        println!("\tACPI node: {fw}");
    }
    let dev = Device::open_iommufd(GPU_BDF)?;
    let info = dev.info()?;
    println!(
        "\tVFIO device: {} regions, {} IRQ types",
        info.num_regions, info.num_irqs
    );
    for index in 0..info.num_regions.min(REGION_NAMES.len() as u32) {
        // EINVAL: the function has no such region (VGA on a non-VGA device).
        let r = match dev.region_info(index) {
            Ok(r) if r.size > 0 => r,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => continue,
            Err(e) => return Err(e),
        };
        println!(
            "\tregion {index} {:<6} size {:>9}  offset {:#014x}  [{}]",
            REGION_NAMES[index as usize],
            human(r.size),
            r.offset,
            flags(r.flags)
        );
    }
    Ok(())
}
