// SPDX-License-Identifier: GPL-2.0

//! Reading kmemleak's reports (`/sys/kernel/debug/kmemleak`, Documentation/dev-tools/kmemleak.rst)
//! and telling the driver's leaks from the rest of the kernel's.
//!
//! A report belongs to the driver when its allocation backtrace names the module
//! (`[nvgrace_gpu_vfio_pci]`, as `%pS` prints a frame in a loaded module) or has a frame that no
//! longer resolves to a symbol: an address in a module that was unloaded since, and the driver is
//! the only module the rig unloads (vfio_basic, probe_test).

/// How `%pS` tags a frame in the driver's module.
pub const MODULE_TAG: &str = "[nvgrace_gpu_vfio_pci]";

/// One kmemleak report: its header line ("unreferenced object ...") and the lines after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub lines: Vec<String>,
}

impl Report {
    /// The backtrace frames (`%pS`): the lines after "backtrace", trimmed.
    pub fn frames(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .skip_while(|l| !l.trim_start().starts_with("backtrace"))
            .skip(1)
            .map(|l| l.trim())
    }

    /// Why the report belongs to the driver, if it does: the frame that says so.
    pub fn driver_frame(&self) -> Option<String> {
        self.frames().find_map(|f| {
            if f.contains(MODULE_TAG) {
                Some(format!("frame {f}"))
            } else if f.starts_with("0x") && f[2..].chars().all(|c| c.is_ascii_hexdigit()) {
                Some(format!("frame {f} in an unloaded module"))
            } else {
                None
            }
        })
    }
}

/// Splits the text of the debugfs file into reports (each starts with "unreferenced object").
pub fn parse(text: &str) -> Vec<Report> {
    let mut reports: Vec<Report> = Vec::new();
    for line in text.lines() {
        if line.starts_with("unreferenced object") {
            reports.push(Report {
                lines: vec![line.to_string()],
            });
        } else if let Some(r) = reports.last_mut() {
            r.lines.push(line.to_string());
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded on the rig's debug kernel: the Rust driver with a leak put in its open_device()
    /// on purpose, after lifecycle_test's open/close cycles (the module still loaded).
    const DRIVER_LOADED: &str = "\
unreferenced object 0xffff8880050af200 (size 96):
  comm \"lifecycle_test\", pid 62, jiffies 4294902661
  hex dump (first 32 bytes):
    5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a  ZZZZZZZZZZZZZZZZ
    5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a  ZZZZZZZZZZZZZZZZ
  backtrace (crc 63cac116):
    __kmalloc_node_track_caller_noprof+0x2a4/0x4a0
    krealloc_node_align_noprof+0x163/0x2d0
    _RNvYNtNtNtCs1EKtwoKEMO2_6kernel5alloc9allocator7KmallocNtB6_9Allocator5allocB8_+0x2e/0x3e
    _RNvXs2_NtCsg8H7GuIh2sk_16nvgrace_gpu_main6deviceNtB5_10NvGraceGpuNtNtNtB7_4vfio3ops10VariantOps11open_device+0x113/0x3d6 [nvgrace_gpu_vfio_pci]
    _RINvNtCs1EKtwoKEMO2_6kernel5error11from_resultlNCINvNtNtCsg8H7GuIh2sk_16nvgrace_gpu_main4vfio3ops11open_deviceNtNtBS_6device10NvGraceGpuE0EBS_+0x2f/0x41 [nvgrace_gpu_vfio_pci]
    _RINvNtNtCsg8H7GuIh2sk_16nvgrace_gpu_main4vfio3ops11open_deviceNtNtB6_6device10NvGraceGpuEB6_+0x13/0x15 [nvgrace_gpu_vfio_pci]
    vfio_df_open+0x31a/0x410
    vfio_df_ioctl_bind_iommufd+0x245/0x3c0
    __x64_sys_ioctl+0x940/0xd60
    do_syscall_64+0x92/0x2b0
    entry_SYSCALL_64_after_hwframe+0x4b/0x53
";

    /// Recorded on the rig's debug kernel: the same leak after vfio_basic unloaded the module;
    /// its frames no longer resolve.
    const DRIVER_UNLOADED: &str = "\
unreferenced object 0xffff888000193580 (size 96):
  comm \"lifecycle_test\", pid 62, jiffies 4294901850
  hex dump (first 32 bytes):
    5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a  ZZZZZZZZZZZZZZZZ
    5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a  ZZZZZZZZZZZZZZZZ
  backtrace (crc 63cac116):
    __kmalloc_node_track_caller_noprof+0x2a4/0x4a0
    krealloc_node_align_noprof+0x163/0x2d0
    _RNvYNtNtNtCs1EKtwoKEMO2_6kernel5alloc9allocator7KmallocNtB6_9Allocator5allocB8_+0x2e/0x3e
    0xffffffffa0017f0b
    0xffffffffa001440f
    0xffffffffa00146a4
    vfio_df_open+0x31a/0x410
    vfio_df_ioctl_bind_iommufd+0x245/0x3c0
    __x64_sys_ioctl+0x940/0xd60
    do_syscall_64+0x92/0x2b0
    entry_SYSCALL_64_after_hwframe+0x4b/0x53
";

    /// Recorded on the rig's debug kernel: a leak of kmemleak's test module (samples/kmemleak),
    /// loaded, not the driver.
    const OTHER_MODULE: &str = "\
unreferenced object (percpu) 0xffffffff831b3d24 (size 64):
  comm \"modprobe\", pid 56, jiffies 4294900458
  hex dump (first 32 bytes on cpu 1):
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
  backtrace (crc 0):
    pcpu_alloc_noprof+0x6c9/0xa00
    init_module+0x48d/0x4c0 [kmemleak_test]
    do_one_initcall+0x13a/0x2d0
    do_init_module+0x1fe/0x580
    __x64_sys_finit_module+0x386/0x560
    do_syscall_64+0x92/0x2b0
    entry_SYSCALL_64_after_hwframe+0x4b/0x53
";

    #[test]
    fn driver_frame_of_a_loaded_module() {
        let r = parse(DRIVER_LOADED);
        assert_eq!(r.len(), 1);
        let why = r[0].driver_frame().expect("the driver's leak");
        assert!(
            why.contains("open_device+0x113/0x3d6 [nvgrace_gpu_vfio_pci]"),
            "{why}"
        );
    }

    #[test]
    fn driver_frame_of_an_unloaded_module() {
        let r = parse(DRIVER_UNLOADED);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].driver_frame().as_deref(),
            Some("frame 0xffffffffa0017f0b in an unloaded module")
        );
    }

    #[test]
    fn another_modules_leak_is_not_the_drivers() {
        let r = parse(OTHER_MODULE);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].driver_frame(), None);
        assert_eq!(r[0].frames().count(), 7);
    }

    #[test]
    fn hex_dump_is_not_a_frame() {
        // The hex dump precedes the backtrace; a dump line is never read as a frame.
        let r = &parse(DRIVER_LOADED)[0];
        assert!(r.frames().all(|f| !f.starts_with("5a ")));
        assert_eq!(
            r.frames().next(),
            Some("__kmalloc_node_track_caller_noprof+0x2a4/0x4a0")
        );
    }

    #[test]
    fn several_reports_split() {
        let text = format!("{OTHER_MODULE}{DRIVER_LOADED}{OTHER_MODULE}{DRIVER_UNLOADED}");
        let r = parse(&text);
        assert_eq!(r.len(), 4);
        let ours: Vec<bool> = r.iter().map(|r| r.driver_frame().is_some()).collect();
        assert_eq!(ours, [false, true, false, true]);
    }

    #[test]
    fn empty_file_has_no_reports() {
        assert!(parse("").is_empty());
    }
}
