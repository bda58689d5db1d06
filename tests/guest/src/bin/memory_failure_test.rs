// SPDX-License-Identifier: GPL-2.0

//! Memory failure on GPU memory, which has no `struct page`: while the device is open the
//! drivers register usemem and resmem with memory-failure (upstream
//! `nvgrace_gpu_vfio_pci_register_pfn_range()`), whose PFN-to-offset callback
//! (`nvgrace_gpu_pfn_to_vma_pgoff()`) lets the kernel find the user address at which each
//! process maps a poisoned PFN and send it SIGBUS there (mm/memory-failure.c
//! `memory_failure_pfn()`).
//!
//! Errors are injected with `/sys/devices/system/memory/hard_offline_page` (the physical address
//! of the page). The process that writes it is `current` for memory-failure: if it maps the page
//! it gets `BUS_MCEERR_AR`; other processes that map it get `BUS_MCEERR_AO`, but only if they
//! asked for early kill (`PR_MCE_KILL_EARLY`; task_early_kill()). Each mapping or injecting
//! process is a forked "probe" with a recording SIGBUS handler, driven over pipes, so the test
//! process itself never maps a page it poisons. PFN maps keep no poison state, so every
//! injection is reported anew; the tests still use a fresh page each time.

use std::fs::File;
use std::io;
use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::fd::FromRawFd;
use std::time::Duration;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::page_size;
use nvgrace_guest_tests::mm::ChildEnd;
use nvgrace_guest_tests::mm::SigbusRecord;
use nvgrace_guest_tests::mm::BUS_MCEERR_AO;
use nvgrace_guest_tests::mm::BUS_MCEERR_AR;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::GPU_BDF;

const HARD_OFFLINE: &str = "/sys/devices/system/memory/hard_offline_page";
/// How long a probe may take to answer a command.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// One mapping a probe makes: `pages` pages of `region` from page `first_page`, and optionally
/// one of them touched (read) after mapping.
#[derive(Clone, Copy)]
struct ProbeMap {
    region: GpuMem,
    first_page: u64,
    pages: usize,
    touch: Option<usize>,
}

/// A forked process that maps what it is told, records the SIGBUS it receives, and writes
/// physical addresses to hard_offline_page on command.
struct Probe {
    child: mm::Child,
    cmd: File,
    rep: File,
    buf: Vec<u8>,
    /// The address of each of its mappings.
    addrs: Vec<usize>,
}

/// What a probe's write to hard_offline_page returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wrote {
    /// The whole string was written (memory_failure() returned 0).
    Ok,
    /// The write failed with this errno.
    Err(i32),
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: Both descriptors are new and owned by nothing else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// The probe's side: set up, report "ready ADDR...", then serve commands until "exit". A probe
/// without mappings needs no device (`dev` is only used to map).
fn probe_main(
    dev: Option<&Device>,
    maps: &[ProbeMap],
    early_kill: bool,
    cmd: File,
    mut rep: File,
) -> i32 {
    let mut reply = |s: String| {
        let _ = rep.write_all(format!("{s}\n").as_bytes());
    };
    if let Err(e) = mm::install_sigbus_recorder() {
        reply(format!("error sigaction: {e}"));
        return 1;
    }
    if early_kill {
        if let Err(e) = mm::set_mce_early_kill() {
            reply(format!("error prctl: {e}"));
            return 1;
        }
    }
    let mut held = Vec::new();
    for m in maps {
        let Some(dev) = dev else {
            reply("error mappings without a device".into());
            return 1;
        };
        match mm::mmap_shared(
            &dev.fd,
            m.region.at(m.first_page * (page_size() as u64)),
            m.pages * page_size(),
        ) {
            Ok(map) => {
                if let Some(p) = m.touch {
                    map.read_u8(p * page_size());
                }
                held.push(map);
            }
            Err(e) => {
                reply(format!(
                    "error mmap {} page {}: {e}",
                    m.region.name(),
                    m.first_page
                ));
                return 1;
            }
        }
    }
    let addrs: Vec<String> = held.iter().map(|m| format!("{:#x}", m.addr())).collect();
    reply(format!("ready {}", addrs.join(" ")));
    // read_line retries reads interrupted by the (recorded) SIGBUS.
    let mut lines = BufReader::new(cmd);
    loop {
        let mut line = String::new();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => return 2,
            Ok(_) => {}
        }
        let line = line.trim();
        if let Some(pa) = line.strip_prefix("poison ") {
            let r = std::fs::OpenOptions::new()
                .write(true)
                .open(HARD_OFFLINE)
                .and_then(|mut f| f.write(pa.as_bytes()));
            reply(match r {
                Ok(n) if n == pa.len() => "wrote ok".into(),
                Ok(n) => format!("wrote short {n}"),
                Err(e) => format!("wrote err {}", e.raw_os_error().unwrap_or(0)),
            });
        } else if line == "report" {
            let r = mm::sigbus_record();
            reply(format!(
                "report {} {} {:#x} {}",
                r.count, r.code, r.addr, r.addr_lsb
            ));
        } else if line == "exit" {
            drop(held);
            return 0;
        } else {
            reply(format!("error unknown command {line}"));
        }
    }
}

impl Probe {
    fn spawn(dev: Option<&Device>, maps: &[ProbeMap], early_kill: bool) -> Result<Probe, Failure> {
        let (cmd_r, cmd_w) = pipe()?;
        let (rep_r, rep_w) = pipe()?;
        let child = mm::fork_child(move || probe_main(dev, maps, early_kill, cmd_r, rep_w))?;
        let mut p = Probe {
            child,
            cmd: cmd_w,
            rep: rep_r,
            buf: Vec::new(),
            addrs: Vec::new(),
        };
        let line = p.line()?;
        let Some(rest) = line.strip_prefix("ready") else {
            fail!("probe set-up: {line}");
        };
        p.addrs = rest
            .split_whitespace()
            .map(|a| usize::from_str_radix(a.trim_start_matches("0x"), 16).unwrap_or(0))
            .collect();
        Ok(p)
    }

    /// The next line of the probe's replies; fails if it died or did not answer in time.
    fn line(&mut self) -> Result<String, Failure> {
        let deadline = mm::now() + PROBE_TIMEOUT;
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&line).trim().to_string());
            }
            let left = deadline.saturating_sub(mm::now());
            if left.is_zero() {
                fail!(
                    "probe {} did not answer within {PROBE_TIMEOUT:?}",
                    self.child.pid()
                );
            }
            let mut pfd = libc::pollfd {
                fd: self.rep.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: One valid pollfd.
            let r =
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::last_os_error().into());
            }
            if r <= 0 {
                continue;
            }
            let mut chunk = [0u8; 256];
            // SAFETY: Reads into a local buffer.
            let n =
                unsafe { libc::read(self.rep.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
            if n <= 0 {
                let end = self.child.wait_timeout(Duration::from_secs(5))?;
                fail!("probe {} went away ({end})", self.child.pid());
            }
            self.buf.extend_from_slice(&chunk[..n as usize]);
        }
    }

    fn send(&mut self, cmd: &str) -> Result<String, Failure> {
        if let Err(e) = self.cmd.write_all(format!("{cmd}\n").as_bytes()) {
            let end = self.child.wait_timeout(Duration::from_secs(5))?;
            fail!(
                "probe {} cannot be sent '{cmd}': {e} ({end})",
                self.child.pid()
            );
        }
        self.line()
    }

    /// Has the probe write `pa` to hard_offline_page.
    fn poison(&mut self, pa: u64) -> Result<Wrote, Failure> {
        let r = self.send(&format!("poison {pa:#x}"))?;
        match r.strip_prefix("wrote ") {
            Some("ok") => Ok(Wrote::Ok),
            Some(e) if e.starts_with("err ") => Ok(Wrote::Err(e[4..].parse().unwrap_or(0))),
            _ => fail!("poison {pa:#x}: probe replied '{r}'"),
        }
    }

    /// The SIGBUS the probe recorded so far.
    fn report(&mut self) -> Result<SigbusRecord, Failure> {
        let r = self.send("report")?;
        let f: Vec<&str> = r.split_whitespace().collect();
        if f.len() != 5 || f[0] != "report" {
            fail!("probe report: '{r}'");
        }
        Ok(SigbusRecord {
            count: f[1].parse().unwrap_or(u32::MAX),
            code: f[2].parse().unwrap_or(-1),
            addr: usize::from_str_radix(f[3].trim_start_matches("0x"), 16).unwrap_or(0),
            addr_lsb: f[4].parse().unwrap_or(-1),
        })
    }

    /// Tells the probe to exit and checks it exits cleanly.
    fn finish(mut self) -> Outcome {
        let _ = self.cmd.write_all(b"exit\n");
        let end = self.child.wait_timeout(PROBE_TIMEOUT)?;
        check_eq!(end, ChildEnd::Exited(0), "probe exit ({end})");
        Ok(())
    }
}

fn code_name(code: i32) -> &'static str {
    match code {
        BUS_MCEERR_AR => "BUS_MCEERR_AR",
        BUS_MCEERR_AO => "BUS_MCEERR_AO",
        _ => "other",
    }
}

/// Checks one SIGBUS report: `count` deliveries, the last with `code` at `addr`, page-sized
/// (`si_addr_lsb` is the page shift: memory-failure reports PFN-map pages with `PAGE_SHIFT`,
/// mm/memory-failure.c `add_to_kill_pgoff()`; 12 with 4 KiB pages, 16 with 64 KiB).
fn expect_sigbus(what: &str, got: SigbusRecord, count: u32, code: i32, addr: usize) -> Outcome {
    let lsb = mm::page_shift() as i32;
    tap::observe(
        &format!("sigbus {what}"),
        format!(
            "{} {} lsb {} at expected {:+#x}",
            got.count,
            code_name(got.code),
            got.addr_lsb,
            got.addr.wrapping_sub(addr) as isize
        ),
    );
    let want = SigbusRecord {
        count,
        code,
        addr,
        addr_lsb: lsb,
    };
    if got != want {
        fail!(
            "{what}: got {} SIGBUS (last: si_code {} {}, si_addr {:#x}, si_addr_lsb {}), expected {count} with {} at {addr:#x}, lsb {lsb}",
            got.count,
            got.code,
            code_name(got.code),
            got.addr,
            got.addr_lsb,
            code_name(code)
        );
    }
    Ok(())
}

fn expect_none(what: &str, got: SigbusRecord) -> Outcome {
    tap::observe(&format!("sigbus {what}"), got.count);
    check!(
        got.count == 0,
        "{what}: got {} SIGBUS (si_code {} {}, si_addr {:#x}), expected none",
        got.count,
        got.code,
        code_name(got.code),
        got.addr
    );
    Ok(())
}

/// A probe maps `pages` pages of `m` from `first_page`, touches page `touch` (if any) and itself
/// poisons page `poison` of its mapping: BUS_MCEERR_AR at exactly that page's address. With
/// `again`, the same PFN is poisoned a second time: reported again the same way.
fn self_poison_test(
    dev: &Device,
    m: &GpuMem,
    first_page: u64,
    touch: Option<usize>,
    poison: usize,
    again: bool,
) -> Outcome {
    let maps = [ProbeMap {
        region: *m,
        first_page,
        pages: 16,
        touch,
    }];
    let mut p = Probe::spawn(Some(dev), &maps, false)?;
    let pa = m.pa((first_page + poison as u64) * (page_size() as u64));
    let addr = p.addrs[0] + poison * page_size();
    let wrote = p.poison(pa)?;
    check_eq!(
        wrote,
        Wrote::Ok,
        "{}: write of {pa:#x} to hard_offline_page",
        m.name()
    );
    expect_sigbus(
        &format!(
            "{} page {} poisoned by the process mapping it",
            m.name(),
            first_page + poison as u64
        ),
        p.report()?,
        1,
        BUS_MCEERR_AR,
        addr,
    )?;
    if again {
        let wrote = p.poison(pa)?;
        check_eq!(
            wrote,
            Wrote::Ok,
            "{}: second write of {pa:#x} to hard_offline_page",
            m.name()
        );
        expect_sigbus(
            &format!("{} page poisoned a second time", m.name()),
            p.report()?,
            2,
            BUS_MCEERR_AR,
            addr,
        )?;
    }
    p.finish()
}

/// A bystander (no mapping) poisons a page that an early-kill probe maps at a non-zero page
/// offset: that probe gets BUS_MCEERR_AO at its address of the page; the bystander, an
/// early-kill probe mapping only pages after it, an early-kill probe mapping the other region
/// and a probe mapping the page without early kill get nothing.
fn other_process_test(
    dev: &Device,
    m: &GpuMem,
    other: Option<&GpuMem>,
    first_page: u64,
) -> Outcome {
    let touch = 3usize;
    let target = first_page + touch as u64;
    let pa = m.pa(target * (page_size() as u64));
    let mut mapper = Probe::spawn(
        Some(dev),
        &[ProbeMap {
            region: *m,
            first_page,
            pages: 16,
            touch: Some(touch),
        }],
        true,
    )?;
    let mut after = Probe::spawn(
        Some(dev),
        &[ProbeMap {
            region: *m,
            first_page: first_page + 16,
            pages: 16,
            touch: Some(0),
        }],
        true,
    )?;
    let mut late = Probe::spawn(
        Some(dev),
        &[ProbeMap {
            region: *m,
            first_page,
            pages: 16,
            touch: Some(touch),
        }],
        false,
    )?;
    let mut elsewhere = match other {
        Some(o) => Some(Probe::spawn(
            Some(dev),
            &[ProbeMap {
                region: *o,
                first_page: 0,
                pages: 16,
                touch: Some(0),
            }],
            true,
        )?),
        None => None,
    };
    let mut bystander = Probe::spawn(Some(dev), &[], false)?;
    let wrote = bystander.poison(pa)?;
    check_eq!(
        wrote,
        Wrote::Ok,
        "{}: write of {pa:#x} to hard_offline_page",
        m.name()
    );
    let addr = mapper.addrs[0] + touch * page_size();
    expect_sigbus(
        &format!("early-kill process mapping {} page {target}", m.name()),
        mapper.report()?,
        1,
        BUS_MCEERR_AO,
        addr,
    )?;
    expect_none(
        "the injecting process, which maps nothing",
        bystander.report()?,
    )?;
    expect_none(
        &format!(
            "early-kill process mapping only {} pages after it",
            m.name()
        ),
        after.report()?,
    )?;
    expect_none(
        "process mapping the page without early kill",
        late.report()?,
    )?;
    if let Some(e) = elsewhere.as_mut() {
        expect_none(
            "early-kill process mapping only the other region",
            e.report()?,
        )?;
    }
    for p in [mapper, after, late, bystander]
        .into_iter()
        .chain(elsewhere)
    {
        p.finish()?;
    }
    Ok(())
}

/// An early-kill probe maps pages [first, first + 4) and a page after that window is poisoned
/// by a bystander. Upstream's `nvgrace_gpu_pfn_to_vma_pgoff()` only rejects PFNs before the
/// VMA's window, not after it, so memory-failure gets an offset outside the VMA, finds no
/// address for it (`vma_filebacked_address()` -EFAULT) and kill_procs() SIGKILLs the process
/// ("forcibly killing ... because of failure to unmap corrupted page"). This asserts that
/// behaviour, which both builds share; see the report for the discussion.
fn mapping_before_page_test(dev: &Device, m: &GpuMem, first_page: u64) -> Outcome {
    let mut p = Probe::spawn(
        Some(dev),
        &[ProbeMap {
            region: *m,
            first_page,
            pages: 4,
            touch: Some(0),
        }],
        true,
    )?;
    let mut bystander = Probe::spawn(Some(dev), &[], false)?;
    let pa = m.pa((first_page + 10) * (page_size() as u64));
    let wrote = bystander.poison(pa)?;
    check_eq!(wrote, Wrote::Ok, "write of {pa:#x} to hard_offline_page");
    expect_none("the injecting process", bystander.report()?)?;
    bystander.finish()?;
    let end = p.child.wait_timeout(Duration::from_secs(10))?;
    println!("# mapping_ends_before_page: the early-kill process mapping only pages before the poisoned one: {end}");
    tap::observe("end of the process mapping pages before it", end);
    check_eq!(
        end,
        ChildEnd::Signaled(libc::SIGKILL),
        "early-kill process whose mapping ends before the poisoned page ({end})"
    );
    Ok(())
}

/// Once the device is closed (no fd, no mapping), its memory is no longer registered:
/// memory-failure does not know the PFN (-EBUSY from the write, "Ignored" in the log) and
/// signals nobody.
fn after_close_test(m: &GpuMem, page: u64) -> Outcome {
    let mut bystander = Probe::spawn(None, &[], false)?;
    let pa = m.pa(page * (page_size() as u64));
    let wrote = bystander.poison(pa)?;
    check_eq!(
        wrote,
        Wrote::Err(libc::EBUSY),
        "write of {pa:#x} to hard_offline_page with the device closed"
    );
    expect_none("the injecting process", bystander.report()?)?;
    bystander.finish()
}

fn open() -> io::Result<(Device, GpuMem, Option<GpuMem>)> {
    let dev = Device::open_iommufd(GPU_BDF)?;
    let (u, r) = dev.gpu_mem()?;
    Ok((dev, u, r))
}

/// What the tests of the table share: the device as opened first, closed for the tests of a
/// closed device, and the device opened again after them.
struct Ctx {
    dev: Option<Device>,
    reopened: Option<io::Result<(Device, GpuMem, Option<GpuMem>)>>,
}

/// A test of the device as opened first.
fn with(f: impl FnOnce(&Device) -> Outcome) -> impl FnOnce(&mut Ctx) -> Outcome {
    move |ctx| match &ctx.dev {
        Some(dev) => f(dev),
        None => fail!("the device is closed"),
    }
}

fn main() {
    // Its I/O is the same in every boot: tapsum compares it between the builds.
    nvgrace_guest_tests::tap::trace_io();
    tap::diag(format!(
        "driver build: {}, GPU model: {}",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));
    let available = std::path::Path::new(HARD_OFFLINE).exists();
    let need = || -> Outcome {
        if !available {
            return Err(Failure::Skip(format!(
                "no {HARD_OFFLINE} (CONFIG_MEMORY_FAILURE, CONFIG_MEMORY_HOTPLUG)"
            )));
        }
        Ok(())
    };
    let (dev, usemem, resmem) = match open() {
        Ok(x) => x,
        Err(e) => Harness::open_failed(e),
    };
    let no_resmem = || Failure::Skip(format!("{} has no resmem", nvgrace_guest_tests::rig_gpu()));

    // Each test poisons pages of its own (PFN maps keep no poison state, but a fresh page per
    // injection keeps the tests independent of that).
    let tests = vec![
        test(
            "usemem_self_poison_action_required",
            with(|dev| {
                need()?;
                self_poison_test(dev, &usemem, 0, Some(1), 1, false)
            }),
        ),
        test(
            "usemem_same_pfn_poisoned_again",
            with(|dev| {
                need()?;
                self_poison_test(dev, &usemem, 32, Some(2), 2, true)
            }),
        ),
        test(
            "usemem_offset_mapping_action_required",
            with(|dev| {
                need()?;
                self_poison_test(dev, &usemem, 64, Some(5), 5, false)
            }),
        ),
        test(
            "usemem_untouched_page_reported",
            with(|dev| {
                need()?;
                self_poison_test(dev, &usemem, 128, None, 3, false)
            }),
        ),
        test(
            "usemem_other_process_action_optional",
            with(|dev| {
                need()?;
                other_process_test(dev, &usemem, resmem.as_ref(), 256)
            }),
        ),
        test(
            "resmem_self_poison_action_required",
            with(|dev| {
                need()?;
                self_poison_test(dev, &resmem.ok_or_else(no_resmem)?, 0, Some(2), 2, false)
            }),
        ),
        test(
            "resmem_offset_mapping_action_required",
            with(|dev| {
                need()?;
                self_poison_test(dev, &resmem.ok_or_else(no_resmem)?, 40, Some(6), 6, false)
            }),
        ),
        test(
            "resmem_other_process_action_optional",
            with(|dev| {
                need()?;
                other_process_test(dev, &resmem.ok_or_else(no_resmem)?, Some(&usemem), 64)
            }),
        ),
        test(
            "mapping_ends_before_page",
            with(|dev| {
                need()?;
                mapping_before_page_test(dev, &usemem, 400)
            }),
        ),
        test("after_close_not_registered", |ctx: &mut Ctx| {
            ctx.dev = None;
            need()?;
            after_close_test(&usemem, 500)
        }),
        test("resmem_after_close_not_registered", |_: &mut Ctx| {
            need()?;
            after_close_test(&resmem.ok_or_else(no_resmem)?, 500)
        }),
        test("reopen_registers_again", |ctx: &mut Ctx| {
            let reopened = ctx.reopened.insert(tap::untraced(open));
            need()?;
            let (dev, usemem, _) = reopened
                .as_ref()
                .map_err(|e| Failure::Fail(format!("re-open after close: {e}")))?;
            self_poison_test(dev, usemem, 600, Some(0), 0, false)
        }),
        test("reopen_closes", |ctx: &mut Ctx| {
            ctx.reopened = None;
            Ok(())
        }),
        test("no_kernel_splat", |_: &mut Ctx| sys::no_kernel_splat()),
    ];
    Harness::run_table(
        &mut Ctx {
            dev: Some(dev),
            reopened: None,
        },
        tests,
    )
}
