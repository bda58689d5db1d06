// SPDX-License-Identifier: GPL-2.0

//! The device fd's file operations at their edges, as a second line-by-line review of the driver
//! found them: where user copies fail or fault, the file position, read-only fds, and a driver
//! registration that fails.
//!
//! - `config_write_fault_keeps_config_reads`: a config write of an emulated BAR register whose
//!   user buffer is an unfaulted mapping of the device waits for the GPU's readiness in the
//!   fault; config reads of the BAR registers must not wait behind it (the Rust driver held its
//!   `bars` mutex across that user copy).
//! - `file_position_unreachable`: read(2)/write(2) use the file position, which cannot be moved
//!   into an emulated BAR (the device fd has no llseek), so how a driver moves it there is not
//!   visible: difference 3 covers it in documentation only.
//! - `readonly_fd_shared_mapping`: `MAP_SHARED` of an `O_RDONLY` device fd maps the memory
//!   read-only, as upstream does (the Rust driver refused it).
//! - `usemem_write_efault_leaves_upstream_bytes`: a usemem pwrite whose source has a page that
//!   is not resident, then an unreadable page, fails with EFAULT and leaves in GPU memory what
//!   upstream leaves: the bytes of both readable pages, zeros from the unreadable one on (the
//!   Rust driver left the not-resident page's part zeroed too).
//! - `usercopy_failure_ends`: on the debug kernel with fail_usercopy, a read or write whose user
//!   copy always fails ends with EFAULT in bounded time (the Rust driver looped for ever).
//! - `registration_failure_quiet`: on the debug kernel with failslab, loading the module when
//!   `pci_register_driver()` fails fails cleanly, without "Unexpected driver unregister!".

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::differences::build;
use nvgrace_guest_tests::expected_regions;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::ChildEnd;
use nvgrace_guest_tests::model;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::vfio;
use nvgrace_guest_tests::vfio::region;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::GPU_BDF;

/// The model's readiness delay after the reset of `config_write_fault_keeps_config_reads`, in
/// ms: far longer than the FLR itself (up to ~240 ms seen) and than a config read under TCG.
const READY_DELAY_MS: u64 = 2_000;
/// Config-space offset of BAR4 (usemem's emulated register, `PCI_BASE_ADDRESS_4`).
const BAR4_OFFSET: u64 = 0x20;
/// debugfs directory of fail_usercopy (Documentation/fault-injection/fault-injection.rst).
const FAIL_USERCOPY: &str = "/sys/kernel/debug/fail_usercopy";
/// debugfs directory of failslab.
const FAILSLAB: &str = "/sys/kernel/debug/failslab";

fn needs_driver() -> Result<(), Failure> {
    if expected_regions().is_none() {
        return Err(Failure::Skip("no GPU memory described".into()));
    }
    if build().is_none() {
        return Err(Failure::Skip("no driver bound".into()));
    }
    Ok(())
}

fn region_offset(dev: &Device, index: u32) -> io::Result<u64> {
    Ok(dev.region_info(index)?.offset)
}

fn config_write_fault_keeps_config_reads() -> tap::Outcome {
    needs_driver()?;
    let dev = Device::open_iommufd(GPU_BDF)?;
    let page = mm::page_size();
    let map = mm::mmap_shared(&dev.fd, region_offset(&dev, region::BAR4)?, page)?;
    let before = dev.config_read64(BAR4_OFFSET)?;
    model::set_control(&[("ready_delay_ms", &READY_DELAY_MS.to_string())])?;
    // The reset zaps the mapping: the write's copy from it faults, and the fault waits for the
    // GPU to be ready again.
    let reset = dev.reset();
    model::reset_control()?;
    reset?;
    let addr = map.addr();
    let (writer_took, reader_took) = std::thread::scope(|s| -> io::Result<_> {
        let dev = &dev;
        let writer = s.spawn(move || {
            let t0 = Instant::now();
            // SAFETY: The mapping is `page` bytes and lives until the scope ends.
            let src = unsafe { std::slice::from_raw_parts(addr as *const u8, 8) };
            let r = dev.config_pwrite(BAR4_OFFSET, src);
            (r, t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        let read = dev.config_read64(BAR4_OFFSET);
        let reader_took = t0.elapsed();
        let (w, writer_took) = writer
            .join()
            .map_err(|_| io::Error::other("writer panicked"))?;
        read?;
        w?;
        Ok((writer_took, reader_took))
    })?;
    // Put the register back as it was (the write stored whatever the memory held).
    dev.config_write(BAR4_OFFSET, before.to_le_bytes())?;
    tap::diag(format!(
        "config write from the unfaulted mapping took {writer_took:?}, the config read of BAR4 \
         meanwhile {reader_took:?}"
    ));
    check!(
        writer_took >= Duration::from_millis(READY_DELAY_MS / 2),
        "the write's fault did not wait for readiness ({writer_took:?}): nothing was tested"
    );
    check!(
        reader_took < Duration::from_millis(700),
        "the config read waited {reader_took:?} behind the faulting config write"
    );
    Ok(())
}

fn file_position_unreachable() -> tap::Outcome {
    needs_driver()?;
    let dev = Device::open_iommufd(GPU_BDF)?;
    let usemem = region_offset(&dev, region::BAR4)?;
    // SAFETY: lseek on an fd we own.
    let r = unsafe { libc::lseek(dev.fd.as_raw_fd(), usemem as libc::off_t, libc::SEEK_SET) };
    let errno = io::Error::last_os_error().raw_os_error();
    check!(
        r < 0 && errno == Some(libc::ESPIPE),
        "lseek to usemem returned {r} ({errno:?}), expected ESPIPE: the position of \
         read(2)/write(2) in an emulated BAR would be visible, test difference 3 there"
    );
    // read(2) at the initial position 0 is BAR0's vfio-pci-core path and moves the position,
    // for both builds.
    let mut b = [0u8; 4];
    // SAFETY: Reads into a local buffer.
    let n = unsafe { libc::read(dev.fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
    check_eq!(n, 4, "read(2) of BAR0 at position 0");
    Ok(())
}

/// The device fd through its cdev opened `O_RDONLY`, bound to a new iommufd and IOAS; returns
/// the device fd and the iommufd (to be dropped after it).
fn open_readonly() -> io::Result<(File, File)> {
    let fd = OpenOptions::new()
        .read(true)
        .open(vfio::cdev_path(GPU_BDF)?)?;
    let iommufd = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/iommu")?;
    vfio::attach_to_new_ioas(&fd, &iommufd)?;
    Ok((fd, iommufd))
}

fn readonly_fd_shared_mapping() -> tap::Outcome {
    needs_driver()?;
    // A read-only device fd comes only from the cdev: the group's VFIO_GROUP_GET_DEVICE_FD
    // opens it read-write.
    if !vfio::iommufd_available() {
        return Err(Failure::Skip(vfio::NO_IOMMUFD.into()));
    }
    let page = mm::page_size();
    let word = 0x0123_4567_89ab_cdefu64.to_le_bytes();
    let usemem = {
        let dev = Device::open_iommufd(GPU_BDF)?;
        dev.write_region(region::BAR4, 0, &word)?;
        region_offset(&dev, region::BAR4)?
    };
    let (fd, _iommufd) = open_readonly()?;
    // SAFETY: A new read-only shared mapping at an address the kernel chooses.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            usemem as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        fail!(
            "MAP_SHARED|PROT_READ of usemem on an O_RDONLY fd: {}",
            io::Error::last_os_error()
        );
    }
    // SAFETY: `p` maps `page` readable bytes; a failed fault would raise SIGBUS.
    let got = unsafe { std::ptr::read_volatile(p as *const [u8; 8]) };
    // SAFETY: Unmaps the mapping made above.
    unsafe { libc::munmap(p, page) };
    check_eq!(got, word, "the word written through the read-write fd");
    let mut b = [0u8; 8];
    fd.read_at(&mut b, usemem)?;
    check_eq!(b, word, "pread on the O_RDONLY fd");
    Ok(())
}

fn usemem_write_efault_leaves_upstream_bytes() -> tap::Outcome {
    needs_driver()?;
    let dev = Device::open_iommufd(GPU_BDF)?;
    let page = mm::page_size();
    let dst = 2 * page as u64;
    // The destination starts as 0x55 throughout.
    dev.write_region(region::BAR4, dst, &vec![0x55u8; 3 * page])?;

    // The source: [anonymous page, resident: 0xA1][memfd page, not resident: 0xB2][PROT_NONE].
    // SAFETY: A new reservation at an address the kernel chooses.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * page,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        fail!("reservation: {}", io::Error::last_os_error());
    }
    let base = base as usize;
    let result = (|| -> tap::Outcome {
        // SAFETY: Replaces the first page of our own reservation.
        let a = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if a == libc::MAP_FAILED {
            fail!("anonymous page: {}", io::Error::last_os_error());
        }
        // SAFETY: `a` is a writable page of ours.
        unsafe { std::ptr::write_bytes(a as *mut u8, 0xA1, page) };
        // SAFETY: A new memfd.
        let memfd = unsafe { libc::memfd_create(c"file_ops_test".as_ptr(), 0) };
        if memfd < 0 {
            fail!("memfd_create: {}", io::Error::last_os_error());
        }
        // SAFETY: `memfd` is a new fd that nothing else owns.
        let memfd = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(memfd) };
        memfd.write_all_at(&vec![0xB2u8; page], 0)?;
        // SAFETY: Replaces the second page of our reservation with the file, not touched, so
        // it has no page-table entry yet (no fault-around: a separate VMA, never read).
        let b = unsafe {
            libc::mmap(
                (base + page) as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_FIXED,
                memfd.as_raw_fd(),
                0,
            )
        };
        if b == libc::MAP_FAILED {
            fail!("memfd page: {}", io::Error::last_os_error());
        }
        // SAFETY: The source spans our three pages; the kernel reads it.
        let src = unsafe { std::slice::from_raw_parts(base as *const u8, 3 * page) };
        let r = dev.write_region(region::BAR4, dst, src);
        check!(
            r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EFAULT),
            "pwrite from a source with an unreadable third page: {r:?}, expected EFAULT"
        );
        let mut got = vec![0u8; 3 * page];
        dev.read_region(region::BAR4, dst, &mut got)?;
        let runs = |s: &[u8]| {
            let mut out: Vec<(u8, usize)> = Vec::new();
            for &b in s {
                match out.last_mut() {
                    Some((v, n)) if *v == b => *n += 1,
                    _ => out.push((b, 1)),
                }
            }
            out
        };
        tap::diag(format!("destination after the EFAULT: {:x?}", runs(&got)));
        check!(
            got[..page].iter().all(|&b| b == 0xA1),
            "the resident page's bytes were not written"
        );
        check!(
            got[page..2 * page].iter().all(|&b| b == 0xB2),
            "the not-resident (but readable) page's bytes were not written: {:x?}",
            runs(&got[page..2 * page])
        );
        check!(
            got[2 * page..].iter().all(|&b| b == 0),
            "the part of the unreadable page is not zeroed as upstream's copy_from_user() \
             leaves it: {:x?}",
            runs(&got[2 * page..])
        );
        Ok(())
    })();
    // SAFETY: Unmaps our reservation.
    unsafe { libc::munmap(base as *mut libc::c_void, 3 * page) };
    result
}

fn write_attr(path: &str, value: &str) -> io::Result<()> {
    std::fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// How a user copy that always fails (fail_usercopy on this task only) ends for one access, run
/// in a forked child (its every user copy fails, so it reports by exit status: 0 success, else
/// the errno). `None`: the access did not end in 20 s (the child is left behind, unkillable).
fn access_with_failing_usercopy(dev: &Device, offset: u64, write: bool) -> io::Result<Option<i32>> {
    let page = mm::page_size();
    let mut buf = vec![0x5au8; page];
    let mut child = mm::fork_child(|| {
        let Ok(mut f) = File::options()
            .write(true)
            .open("/proc/thread-self/make-it-fail")
        else {
            return 100;
        };
        if f.write_all(b"1").is_err() {
            return 101;
        }
        let r = if write {
            dev.fd.write_at(&buf, offset)
        } else {
            dev.fd.read_at(&mut buf, offset)
        };
        match r {
            Ok(_) => 0,
            Err(e) => e.raw_os_error().unwrap_or(102),
        }
    })?;
    match child.wait_timeout(Duration::from_secs(20))? {
        ChildEnd::Exited(code) => Ok(Some(code)),
        ChildEnd::TimedOut => {
            // Stuck in the kernel, where SIGKILL does not reach it: leave it (its drop would
            // wait for ever).
            std::mem::forget(child);
            Ok(None)
        }
        end => Err(io::Error::other(format!("the child ended with {end:?}"))),
    }
}

fn usercopy_failure_ends() -> tap::Outcome {
    needs_driver()?;
    if !Path::new(FAIL_USERCOPY).exists() {
        return Err(Failure::Skip(
            "no fail_usercopy (the debug kernel has it: RIG_FLAVOUR=debug)".into(),
        ));
    }
    let dev = Device::open_iommufd(GPU_BDF)?;
    // Every user copy of a task with make-it-fail set fails, silently.
    for (attr, v) in [
        ("task-filter", "Y"),
        ("probability", "100"),
        ("interval", "1"),
        ("times", "-1"),
        ("verbose", "0"),
    ] {
        write_attr(&format!("{FAIL_USERCOPY}/{attr}"), v)?;
    }
    let mut cases = vec![("usemem read", region_offset(&dev, region::BAR4)?, false)];
    if expected_regions().and_then(|(_, r)| r).is_some() {
        let resmem = region_offset(&dev, region::BAR2)?;
        cases.push(("resmem read", resmem, false));
        cases.push(("resmem write", resmem, true));
    }
    let mut outcome = Ok(());
    for (what, offset, write) in cases {
        let t0 = Instant::now();
        let r = access_with_failing_usercopy(&dev, offset, write);
        let took = t0.elapsed();
        tap::diag(format!(
            "{what} with every user copy failing: {r:?} after {took:?}"
        ));
        match r {
            Ok(Some(e)) if e == libc::EFAULT => {}
            Ok(Some(e)) => {
                outcome = Err(Failure::Fail(format!("{what}: errno {e}, expected EFAULT")));
            }
            Ok(None) => {
                outcome = Err(Failure::Fail(format!("{what}: did not end in 20 s")));
                break;
            }
            Err(e) => outcome = Err(e.into()),
        }
    }
    write_attr(&format!("{FAIL_USERCOPY}/probability"), "0")?;
    // usemem writes copy with __copy_from_user_inatomic(), which fail_usercopy does not reach
    // (upstream's copy_from_user() it does): not compared here.
    outcome
}

/// The address range `[start, end)` of a kernel function, from /proc/kallsyms (the next
/// symbol's address ends it).
fn function_range(name: &str) -> io::Result<(u64, u64)> {
    let syms = std::fs::read_to_string("/proc/kallsyms")?;
    let mut addrs: Vec<u64> = Vec::new();
    let mut start = None;
    for l in syms.lines() {
        let mut it = l.split_whitespace();
        let (Some(a), Some(_), Some(n)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(a) = u64::from_str_radix(a, 16) else {
            continue;
        };
        if it.next().is_none() && n == name {
            start = Some(a);
        }
        addrs.push(a);
    }
    let start = start.ok_or_else(|| io::Error::other(format!("{name} not in kallsyms")))?;
    if start == 0 {
        return Err(io::Error::other("kallsyms addresses are hidden"));
    }
    let end = addrs
        .iter()
        .copied()
        .filter(|&a| a > start)
        .min()
        .ok_or_else(|| io::Error::other(format!("no symbol after {name}")))?;
    Ok((start, end))
}

fn registration_failure_quiet() -> tap::Outcome {
    let Some(b) = build() else {
        return Err(Failure::Skip("no driver bound".into()));
    };
    if !Path::new(FAILSLAB).join("require-start").exists() {
        return Err(Failure::Skip(
            "no failslab with a stack-trace filter (the debug kernel has it: RIG_FLAVOUR=debug)"
                .into(),
        ));
    }
    let ko = match b {
        nvgrace_guest_tests::differences::Build::Rust => "/opt/nvgrace/nvgrace-gpu-vfio-pci.ko",
        nvgrace_guest_tests::differences::Build::Upstream => {
            "/opt/nvgrace/nvgrace-gpu-vfio-pci.upstream.ko"
        }
    };
    let ko = std::env::var("FILE_OPS_TEST_KO").unwrap_or_else(|_| ko.to_string());
    let (start, end) = function_range("bus_add_driver")?;
    let _ = Command::new("rig-unbind").status();
    check!(
        !sys::module_loaded("nvgrace_gpu_vfio_pci"),
        "the module is still loaded after rig-unbind"
    );
    // The first GFP_KERNEL slab allocation made under bus_add_driver() of this task fails: the
    // registration's, within pci_register_driver(). fail-nth counts the calls of every fault
    // type whose stack-trace filter passes: fail_usercopy's must not (init_module copies the
    // image from user memory), so its filter requires an address no stack holds.
    if Path::new(FAIL_USERCOPY).join("require-start").exists() {
        write_attr(&format!("{FAIL_USERCOPY}/require-start"), "1")?;
        write_attr(&format!("{FAIL_USERCOPY}/require-end"), "2")?;
    }
    for (attr, v) in [
        ("ignore-gfp-wait", "N"),
        ("require-start", &start.to_string()),
        ("require-end", &end.to_string()),
        ("verbose", "1"),
        ("probability", "0"),
    ] {
        write_attr(&format!("{FAILSLAB}/{attr}"), v)?;
    }
    let image = std::fs::read(&ko)?;
    let mut nth = File::options()
        .write(true)
        .open("/proc/thread-self/fail-nth")?;
    nth.write_all(b"1")?;
    // SAFETY: init_module with the module image and empty parameters.
    let r = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len() as libc::c_ulong,
            c"".as_ptr(),
        )
    };
    let err = io::Error::last_os_error();
    // Whether the failure was injected: fail-nth reads 0 once it has been.
    let left = std::fs::read_to_string("/proc/thread-self/fail-nth").unwrap_or_default();
    let _ = nth.write_all(b"0");
    for dir in [FAILSLAB, FAIL_USERCOPY] {
        if Path::new(dir).join("require-start").exists() {
            write_attr(&format!("{dir}/require-start"), "0")?;
            write_attr(&format!("{dir}/require-end"), &u64::MAX.to_string())?;
        }
    }
    let loaded = sys::module_loaded("nvgrace_gpu_vfio_pci");
    tap::diag(format!(
        "init_module with the registration failing: {r} ({err}), fail-nth left {}",
        left.trim()
    ));
    // Back to the bound driver for what follows.
    if loaded {
        let _ = sys::rmmod("nvgrace_gpu_vfio_pci");
    }
    let rebound = Command::new("rig-bind")
        .arg(match b {
            nvgrace_guest_tests::differences::Build::Rust => "rust",
            nvgrace_guest_tests::differences::Build::Upstream => "upstream",
        })
        .status()
        .is_ok_and(|s| s.success());
    check!(
        !loaded && r < 0,
        "the module loaded although its registration was to fail"
    );
    check_eq!(
        err.raw_os_error(),
        Some(libc::ENOMEM),
        "init_module's errno"
    );
    let log = sys::kernel_log()?;
    check!(
        log.iter()
            .any(|l| l.contains("FAULT_INJECTION: forcing a failure")),
        "failslab did not inject the failure"
    );
    check!(
        !log.iter()
            .any(|l| l.contains("Unexpected driver unregister")),
        "the failed registration was unregistered (WARN in driver_unregister())"
    );
    check!(rebound, "rig-bind failed after the test");
    Ok(())
}

fn main() {
    // Its I/O is the same in every boot: tapsum compares it between the builds.
    nvgrace_guest_tests::tap::trace_io();
    let tests = vec![
        test("config_write_fault_keeps_config_reads", |_: &mut ()| {
            config_write_fault_keeps_config_reads()
        }),
        test("file_position_unreachable", |_: &mut ()| {
            file_position_unreachable()
        }),
        test("readonly_fd_shared_mapping", |_: &mut ()| {
            readonly_fd_shared_mapping()
        }),
        test("usemem_write_efault_leaves_upstream_bytes", |_: &mut ()| {
            usemem_write_efault_leaves_upstream_bytes()
        }),
        test("usercopy_failure_ends", |_: &mut ()| {
            usercopy_failure_ends()
        }),
        test("registration_failure_quiet", |_: &mut ()| {
            registration_failure_quiet()
        }),
        test("no_kernel_splat", |_: &mut ()| sys::no_kernel_splat()),
    ];
    Harness::run_table(&mut (), tests)
}
