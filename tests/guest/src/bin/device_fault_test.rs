// SPDX-License-Identifier: GPL-2.0

//! Device faults injected through the GPU model's control file (tests/gpu-model): readiness that
//! never returns after a reset, readiness that flaps, a BAR0 that reads all-ones (a device that
//! fell off the bus), and a fault while user space holds a never-ready device in low power. Each access under test runs in a forked child whose end is awaited
//! with a deadline, so a wait that never ends shows as a failure, not as a hung run.
//!
//! Upstream's behaviour (drivers/vfio/pci/nvgrace-gpu/main.c): after a reset, the first access
//! to GPU memory waits for readiness under `memory_lock` (`nvgrace_gpu_check_device_ready()`);
//! the legacy path polls the BAR0 status registers for `POLL_TIMEOUT_MS` (30 s) and reads and
//! writes then fail with ETIME, faults with SIGBUS. The CXL path waits for Memory_Info_Valid for
//! 1 s (then Memory_Active for the time the DVSEC announces) outside the lock, and fails the
//! same way; its final check under the lock can also fail a read or write with EAGAIN when
//! readiness dropped in between (only the fault path retries). All-ones status registers are
//! not "ready" (0xff), so a gone device is waited for like one that is not ready.
//!
//! The never-ready waits are measured between both bounds of the budget ([`budget_bounds`]);
//! elsewhere times are only bounds that separate "ended" from "hung": the readiness budget plus
//! a margin for a slow TCG guest. The never-ready waits run side by side, so the test costs one
//! budget.
//!
//! `device_fault_test [--long]`: `--long` also waits out the budget with BAR0 reading all-ones
//! for good (30 s more on the legacy path); by default the device comes back after a few
//! seconds, which checks that nothing succeeded or failed while it was gone.

use std::time::Duration;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::differences;
use nvgrace_guest_tests::differences::Build;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::gpumem::OpenGpu;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::Child;
use nvgrace_guest_tests::mm::ChildEnd;
use nvgrace_guest_tests::model;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::timing::Bounds;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::GPU_BDF;
use vfio_bindings::bindings::vfio as uapi;

/// Upstream's legacy readiness budget (`POLL_TIMEOUT_MS`).
const LEGACY_BUDGET: Duration = Duration::from_secs(30);
/// The CXL budget when Memory_Info_Valid never appears (CXL r4.0 8.1.3.8.2: within 1 s), plus
/// upstream's one-second poll quantum that may pass before the deadline is noticed.
const CXL_BUDGET: Duration = Duration::from_secs(2);
/// What a TCG guest may add to a budget before a wait counts as hung.
const MARGIN: Duration = Duration::from_secs(60);
/// What the legacy budget may be overrun by and still count as kept: upstream's last poll
/// interval (`POLL_QUANTUM_MS`, 1 s: a budget that ends just after a poll is only noticed at the
/// next one), plus what a TCG guest on a loaded 2-core host stretches 30 s of sleeps and five
/// concurrent waiters by (seen: 30.3-31.0 s in make check, two guests at once); 15 s is half the
/// budget, so a budget of 45 s or more fails. The CXL path's 1 s gets the quantum plus 2 s.
const LEGACY_OVERRUN: Duration = Duration::from_secs(15);
const CXL_OVERRUN: Duration = Duration::from_secs(3);
/// How long the device stays gone (BAR0 all-ones) before it comes back, in the default run:
/// long enough for several polls of either driver, far below the budget.
const GONE_FOR: Duration = Duration::from_secs(3);
/// Flapping readiness: ready periods and not-ready periods, in ms. A reset takes ~100 ms
/// (pcie_flr()'s wait) before the accesses start, which lands them in the first not-ready period
/// (60..130 ms after the reset), so every wait sees the device flap. Upstream polls once a
/// second, which is not a multiple of the 130 ms period: its polls land at varying phases and
/// about every other one finds the device ready (measured: 1-3 s per round).
const FLAP_READY_MS: u64 = 60;
const FLAP_NOT_READY_MS: u64 = 70;
/// Rounds of reset + concurrent accesses with flapping readiness.
const FLAP_ROUNDS: usize = 2;
/// Exit status of a child whose access succeeded but returned the wrong data.
const BAD_DATA: i32 = 200;

/// What every test here starts from.
type Ctx = OpenGpu;

/// The readiness budget of the rig's GPU after a reset that it never recovers from.
fn budget() -> Duration {
    if model::readiness_via_bar0() {
        LEGACY_BUDGET
    } else {
        CXL_BUDGET
    }
}

/// Both bounds of a wait that spends the whole budget: at least the budget (the drivers' clock
/// is the guest's), at most the budget and its overrun. On the CXL path the budget is the 1 s
/// of Memory_Info_Valid, which never comes when the model never becomes ready (the model raises
/// it with Memory_Active unless told otherwise).
fn budget_bounds() -> Bounds {
    if model::readiness_via_bar0() {
        Bounds::new(LEGACY_BUDGET, LEGACY_BUDGET + LEGACY_OVERRUN)
    } else {
        let budget = Duration::from_secs(1);
        Bounds::new(budget, budget + CXL_OVERRUN)
    }
}

/// An access to GPU memory made by a child process.
#[derive(Clone, Copy, Debug)]
enum Access {
    /// pread of 8 bytes at the offset, expecting the value.
    Read(GpuMem, u64, u64),
    /// pwrite of the value's 8 bytes at the offset.
    Write(GpuMem, u64, u64),
    /// A load through an existing mapping (address), expecting the value.
    Fault(usize, u64),
}

impl Access {
    fn name(&self) -> String {
        match self {
            Access::Read(m, ..) => format!("{} pread", m.name()),
            Access::Write(m, ..) => format!("{} pwrite", m.name()),
            Access::Fault(..) => "fault".into(),
        }
    }
}

/// Starts `access` in a child. The child exits 0 on success, with the errno on failure,
/// [`BAD_DATA`] on wrong data; a failed fault kills it with SIGBUS.
fn spawn(dev: &Device, access: Access) -> std::io::Result<Child> {
    mm::fork_child(|| {
        let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(1);
        match access {
            Access::Read(m, off, want) => {
                let mut b = [0u8; 8];
                match dev.mem_read(&m, off, &mut b) {
                    Ok(8) if u64::from_le_bytes(b) == want => 0,
                    Ok(_) => BAD_DATA,
                    Err(e) => errno(e),
                }
            }
            Access::Write(m, off, v) => match dev.mem_write(&m, off, &v.to_le_bytes()) {
                Ok(8) => 0,
                Ok(_) => BAD_DATA,
                Err(e) => errno(e),
            },
            Access::Fault(addr, want) => {
                // One fault, one SIGBUS (see mm::touch_in_child).
                // SAFETY: Resets a signal disposition in this single-threaded child.
                unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
                // SAFETY: `addr` is in a mapping the parent made and the child inherited; a
                // failed fault raises SIGBUS, which is what the parent observes.
                let got = unsafe { std::ptr::read_volatile(addr as *const u64) };
                if got == want {
                    0
                } else {
                    BAD_DATA
                }
            }
        }
    })
}

fn show(access: &Access, end: &ChildEnd) -> String {
    match end {
        ChildEnd::Exited(0) => format!("{}: succeeded", access.name()),
        ChildEnd::Exited(BAD_DATA) => format!("{}: wrong data", access.name()),
        ChildEnd::Exited(e) => format!(
            "{}: {}",
            access.name(),
            std::io::Error::from_raw_os_error(*e)
        ),
        other => format!("{}: {other}", access.name()),
    }
}

/// A word per region at a fixed offset, written before each fault so that accesses that
/// succeed can be checked; the word after it is zeroed, and is where the pwrites under test
/// write, so that a failed write can be shown not to have landed.
const WORD_OFF: u64 = 0x7000;

fn word(m: &GpuMem, round: u64) -> u64 {
    0xfa17_0000_0000_0000 | (u64::from(m.index) << 32) | round
}

/// Writes each region's word for `round` and zeroes the word after it (the device must be
/// usable).
fn seed_words(ctx: &Ctx, round: u64) -> Outcome {
    for m in ctx.regions() {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&word(&m, round).to_le_bytes());
        ctx.dev.mem_write_all(&m, WORD_OFF, &b)?;
    }
    Ok(())
}

/// Checks each region's word (the device must be usable).
fn check_words(ctx: &Ctx, round: u64, what: &str) -> Outcome {
    for m in ctx.regions() {
        let mut b = [0u8; 8];
        ctx.dev.mem_read_exact(&m, WORD_OFF, &mut b)?;
        check_eq!(
            u64::from_le_bytes(b),
            word(&m, round),
            "{} word {what}",
            m.name()
        );
    }
    Ok(())
}

/// Maps the usemem page holding the word and faults it in; returns the mapping and the word's
/// address in it.
fn map_word(ctx: &Ctx) -> std::io::Result<(mm::Mapping, usize)> {
    let page = WORD_OFF & !(mm::page_size() as u64 - 1);
    let map = mm::mmap_shared(&ctx.dev.fd, ctx.usemem.at(page), mm::page_size())?;
    let in_page = (WORD_OFF - page) as usize;
    map.read_u64(in_page);
    let addr = map.addr() + in_page;
    Ok((map, addr))
}

/// One access, how it ended and after how long.
struct Ended {
    access: Access,
    end: ChildEnd,
    took: Duration,
}

impl Ended {
    fn show(&self) -> String {
        format!("{} after {:.1?}", show(&self.access, &self.end), self.took)
    }
}

/// Accesses running in children, started at `t0` (time since boot).
struct Running {
    children: Vec<(Access, Child)>,
    t0: Duration,
}

/// Starts, side by side, a pread and a pwrite of every region and a fault on the usemem word
/// (`addr`, in a mapping made and populated before the reset, which zapped it). The pwrites
/// write the inverted word after the seeded one.
fn start_accesses(ctx: &Ctx, addr: usize, round: u64) -> std::io::Result<Running> {
    let mut accesses = Vec::new();
    for m in ctx.regions() {
        accesses.push(Access::Read(m, WORD_OFF, word(&m, round)));
        accesses.push(Access::Write(m, WORD_OFF + 8, !word(&m, round)));
    }
    accesses.push(Access::Fault(addr, word(&ctx.usemem, round)));
    let t0 = mm::now();
    let mut children = Vec::new();
    for a in accesses {
        children.push((a, spawn(&ctx.dev, a)?));
    }
    Ok(Running { children, t0 })
}

impl Running {
    /// The accesses that already ended.
    fn ended_early(&mut self) -> std::io::Result<Vec<String>> {
        let mut v = Vec::new();
        for (a, c) in self.children.iter_mut() {
            if let Some(end) = c.try_wait()? {
                v.push(show(a, &end));
            }
        }
        Ok(v)
    }

    /// Waits for every access until `deadline` (time since boot); children still running then
    /// are killed.
    fn wait(self, deadline: Duration) -> std::io::Result<Vec<Ended>> {
        let mut ended = Vec::new();
        for (access, mut c) in self.children {
            let end = c.wait_timeout(deadline.saturating_sub(mm::now()))?;
            ended.push(Ended {
                access,
                end,
                took: mm::now() - self.t0,
            });
        }
        Ok(ended)
    }
}

/// Starts the accesses and waits for them until `timeout` from now.
fn run_accesses(
    ctx: &Ctx,
    addr: usize,
    round: u64,
    timeout: Duration,
) -> std::io::Result<Vec<Ended>> {
    start_accesses(ctx, addr, round)?.wait(mm::now() + timeout)
}

/// Checks, on a usable device, that each pwrite in `ended` landed if it succeeded and did not
/// if it failed.
fn check_writes(ctx: &Ctx, ended: &[Ended]) -> Outcome {
    for e in ended {
        if let Access::Write(m, off, v) = e.access {
            let mut b = [0u8; 8];
            ctx.dev.mem_read_exact(&m, off, &mut b)?;
            let want = if e.end == ChildEnd::Exited(0) { v } else { 0 };
            check_eq!(
                u64::from_le_bytes(b),
                want,
                "{} word written by a pwrite that {}",
                m.name(),
                show(&e.access, &e.end)
            );
        }
    }
    Ok(())
}

fn require_model() -> Outcome {
    if !model::available() {
        return Err(Failure::Skip("no model state share at /mnt/model".into()));
    }
    Ok(())
}

/// Restores the model's settings and resets (readiness returns at once).
fn recover(ctx: &Ctx) -> Outcome {
    model::reset_control()?;
    ctx.dev.reset()?;
    Ok(())
}

/// The accesses of `ended` whose end is not the one `want` gives.
fn unexpected(ended: &[Ended], want: impl Fn(&Access, &ChildEnd) -> bool) -> Vec<String> {
    ended
        .iter()
        .filter(|e| !want(&e.access, &e.end))
        .map(Ended::show)
        .collect()
}

/// Readiness never returns after a reset: every access fails with ETIME (faults with SIGBUS)
/// once the budget is spent, each between the bounds of [`budget_bounds`]; failed writes do not
/// land.
fn never_ready_test(ctx: &Ctx) -> Outcome {
    require_model()?;
    let round = 1;
    seed_words(ctx, round)?;
    let (_map, addr) = map_word(ctx)?;
    model::set_control(&[("never_ready", "1")])?;
    let mark = model::log_mark()?;
    ctx.dev.reset()?;
    let ended = run_accesses(ctx, addr, round, budget() + MARGIN)?;
    for e in &ended {
        tap::diag(format!("never ready: {}", e.show()));
    }
    let log = model::log_since(mark)?;
    let polls = model::readiness_polls(&log);
    let cxl_polls = log
        .iter()
        .filter(|l| l.starts_with("cfg-read ") && l.contains("len=4"))
        .count();
    tap::diag(format!(
        "never ready: {} BAR0 status reads not ready, {cxl_polls} 4-byte config reads",
        polls.not_ready_reads
    ));
    recover(ctx)?;
    check_words(ctx, round, "after the device recovered")?;
    check_writes(ctx, &ended)?;
    let mut bad = unexpected(&ended, |a, end| match a {
        Access::Fault(..) => *end == ChildEnd::Signaled(libc::SIGBUS),
        _ => *end == ChildEnd::Exited(libc::ETIME),
    });
    if model::readiness_via_bar0() && polls.not_ready_reads == 0 {
        bad.push("the driver never read the BAR0 status registers".into());
    }
    check!(
        bad.is_empty(),
        "with readiness never returning after a reset, expected ETIME (SIGBUS for the fault) \
         within {:?}:\n{}",
        budget() + MARGIN,
        bad.join("\n")
    );
    let bounds = budget_bounds();
    let mut outside = Vec::new();
    for e in &ended {
        let key = format!("wait.{}", e.access.name().replace(' ', "_"));
        tap::observe(&key, bounds.bucket(e.took));
        if !bounds.contains(e.took) {
            outside.push(e.show());
        }
    }
    check!(
        outside.is_empty(),
        "never-ready waits outside {:?}..{:?}:\n{}",
        bounds.lower,
        bounds.upper,
        outside.join("\n")
    );
    Ok(())
}

/// How many reads of the C2C status register returned all-ones in the model's log since `mark`.
fn all_ones_polls(mark: model::LogMark) -> std::io::Result<usize> {
    Ok(model::log_since(mark)?
        .iter()
        .filter_map(|l| model::bar0_read(l))
        .filter(|&(off, val)| off == model::C2C_LINK_STATUS && val == 0xffff_ffff)
        .count())
}

/// BAR0 reads all-ones (the device is gone). Without a reset, GPU memory does not depend on
/// BAR0 and stays usable, while BAR0 reads all-ones through vfio-pci-core. After a reset, on
/// the legacy path, the accesses wait (all-ones status is not "ready"), neither succeeding nor
/// failing while the device is gone, and succeed once it is back; with `long`, it never comes
/// back and they fail as in [`never_ready_test`]. The CXL path reads readiness from config
/// space, so there the accesses succeed at once.
fn gone_test(ctx: &Ctx, long: bool) -> Outcome {
    require_model()?;
    let round = 2;
    seed_words(ctx, round)?;
    let (_map, addr) = map_word(ctx)?;
    model::set_control(&[("bar0_all_ones", "1")])?;
    let mut b = [0u8; 4];
    let n = ctx.dev.read_region(0, model::C2C_LINK_STATUS, &mut b)?;
    check_eq!(
        (n, u32::from_le_bytes(b)),
        (4usize, u32::MAX),
        "BAR0 status register through vfio-pci-core while gone"
    );
    check_words(ctx, round, "while BAR0 is gone, without a reset")?;

    let legacy = model::readiness_via_bar0();
    let comes_back = !(legacy && long);
    let mark = model::log_mark()?;
    ctx.dev.reset()?;
    let mut bad = Vec::new();
    let ended = if legacy && !long {
        let mut running = start_accesses(ctx, addr, round)?;
        std::thread::sleep(GONE_FOR);
        // Neither a success nor an error while the device is gone.
        for s in running.ended_early()? {
            bad.push(format!("{s}, while the device was gone"));
        }
        let polls = all_ones_polls(mark)?;
        tap::diag(format!(
            "gone: {polls} all-ones status polls in the {GONE_FOR:?} before the device came back"
        ));
        if polls == 0 {
            bad.push("no status read while gone: the accesses did not wait for readiness".into());
        }
        model::reset_control()?;
        running.wait(mm::now() + MARGIN)?
    } else {
        let budget = if legacy { budget() } else { Duration::ZERO };
        run_accesses(ctx, addr, round, budget + MARGIN)?
    };
    for e in &ended {
        tap::diag(format!("gone: {}", e.show()));
    }
    recover(ctx)?;
    check_words(ctx, round, "after the device came back")?;
    check_writes(ctx, &ended)?;
    bad.extend(unexpected(&ended, |a, end| match (comes_back, a) {
        (true, _) => *end == ChildEnd::Exited(0),
        (false, Access::Fault(..)) => *end == ChildEnd::Signaled(libc::SIGBUS),
        (false, _) => *end == ChildEnd::Exited(libc::ETIME),
    }));
    check!(bad.is_empty(), "BAR0 reading all-ones:\n{}", bad.join("\n"));
    Ok(())
}

/// Readiness flaps: after each reset, concurrent accesses either succeed with the right data
/// or fail cleanly (ETIME; on the CXL path also EAGAIN for reads and writes; SIGBUS for the
/// fault), within the budget plus the margin, and failed writes do not land.
fn flapping_test(ctx: &Ctx) -> Outcome {
    require_model()?;
    let (_map, addr) = map_word(ctx)?;
    let mut bad = Vec::new();
    let mut succeeded = 0;
    for r in 0..FLAP_ROUNDS as u64 {
        let round = 10 + r;
        seed_words(ctx, round)?;
        model::set_control(&[
            ("flap_ready_ms", &FLAP_READY_MS.to_string()),
            ("flap_not_ready_ms", &FLAP_NOT_READY_MS.to_string()),
        ])?;
        let mark = model::log_mark()?;
        ctx.dev.reset()?;
        let ended = run_accesses(ctx, addr, round, budget() + MARGIN)?;
        let polls = model::readiness_polls(&model::log_since(mark)?);
        tap::diag(format!(
            "flapping, round {r}: {} status reads not ready, {} ready; {}",
            polls.not_ready_reads,
            polls.ready_reads,
            ended.iter().map(Ended::show).collect::<Vec<_>>().join("; ")
        ));
        succeeded += ended
            .iter()
            .filter(|e| e.end == ChildEnd::Exited(0))
            .count();
        recover(ctx)?;
        check_words(ctx, round, "after flapping")?;
        check_writes(ctx, &ended)?;
        let cxl = !model::readiness_via_bar0();
        bad.extend(
            unexpected(&ended, |a, end| match (a, end) {
                (_, ChildEnd::Exited(0)) => true,
                (Access::Fault(..), end) => *end == ChildEnd::Signaled(libc::SIGBUS),
                (_, ChildEnd::Exited(e)) => *e == libc::ETIME || (cxl && *e == libc::EAGAIN),
                _ => false,
            })
            .into_iter()
            .map(|s| format!("round {r}: {s}")),
        );
    }
    check!(
        bad.is_empty(),
        "with flapping readiness, neither a success nor a clean error:\n{}",
        bad.join("\n")
    );
    // A device that is ready more than half of the time must let accesses through; a driver
    // that failed them all with ETIME would pass the check above. Upstream on the CXL path
    // need not (difference 2): its wait tests Memory_Active when an access starts, in a
    // not-ready period, and once more 1 s later, which lands in a not-ready period again
    // when the start was ~100 ms after the reset (1000 ms mod the 130 ms flap period is 90
    // ms, inside 60..130); it then gives up with ETIME, since Memory_Info_Valid flaps with
    // Memory_Active and its active phase never begins. Seen in most runs, not all.
    let must_succeed = differences::build() == Some(Build::Rust) || model::readiness_via_bar0();
    tap::observe_listed(2, "flapping_some_access_succeeded", succeeded > 0);
    check!(
        !must_succeed || succeeded > 0,
        "with flapping readiness no access succeeded in {FLAP_ROUNDS} rounds"
    );
    Ok(())
}

/// After the faults, the device closes and opens again (a leaked memory-failure PFN range would
/// make the open fail with EBUSY) and its memory reads, writes and maps.
/// User space puts the device in low power (`VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY`) after a reset
/// that it never recovers from: a fault on GPU memory fails with SIGBUS at once, without the
/// readiness wait (upstream nvgrace_gpu_vfio_pci_huge_fault() checks pm_runtime_engaged under
/// memory_lock before it waits). vfio-pci-core's PFN insertion refuses as well, so the time
/// alone tells the early check from a wait: half the budget separates them.
fn low_power_test(ctx: &Ctx) -> Outcome {
    require_model()?;
    let round = 7;
    seed_words(ctx, round)?;
    let (map, addr) = map_word(ctx)?;
    model::set_control(&[("never_ready", "1")])?;
    ctx.dev.reset()?;
    let entered = ctx
        .dev
        .set_feature(uapi::VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY);
    let touched = match entered {
        Ok(()) => Some(mm::touch_in_child(addr, budget() + MARGIN)),
        Err(_) => None,
    };
    let exited = ctx
        .dev
        .set_feature(uapi::VFIO_DEVICE_FEATURE_LOW_POWER_EXIT);
    recover(ctx)?;
    entered.map_err(|e| Failure::Fail(format!("low-power entry: {e}")))?;
    exited.map_err(|e| Failure::Fail(format!("low-power exit: {e}")))?;
    let (end, took) = touched.expect("the entry succeeded")?;
    tap::diag(format!(
        "low power, never ready: {} after {took:.1?}",
        show(&Access::Fault(addr, 0), &end)
    ));
    check_eq!(end, ChildEnd::Signaled(libc::SIGBUS), "fault in low power");
    check!(
        took < budget() / 2,
        "the fault in low power took {took:.1?}: it waited for readiness (budget {:?})",
        budget()
    );
    // Out of low power and ready again, the same mapping faults onto the same memory.
    check_eq!(
        map.read_u64(addr - map.addr()),
        word(&ctx.usemem, round),
        "word through the mapping after low-power exit"
    );
    Ok(())
}

fn reopen_test(ctx: Ctx) -> Outcome {
    let round = 42;
    drop(ctx);
    let dev = Device::open_iommufd(GPU_BDF)?;
    let (usemem, resmem) = dev.gpu_mem()?;
    let ctx = Ctx {
        dev,
        usemem,
        resmem,
    };
    seed_words(&ctx, round)?;
    check_words(&ctx, round, "after reopening")?;
    let (map, addr) = map_word(&ctx)?;
    check_eq!(
        map.read_u64(addr - map.addr()),
        word(&ctx.usemem, round),
        "word through a mapping after reopening"
    );
    Ok(())
}

/// A test of the opened GPU, while it is open.
fn with(f: impl FnOnce(&Ctx) -> Outcome) -> impl FnOnce(&mut Option<Ctx>) -> Outcome {
    move |open| match open {
        Some(ctx) => f(ctx),
        None => fail!("the device is closed"),
    }
}

fn main() {
    let long = std::env::args().skip(1).any(|a| a == "--long");
    tap::diag(format!(
        "driver build: {}, GPU model: {}, readiness via {}, budget {:?}{}",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu(),
        if model::readiness_via_bar0() {
            "BAR0"
        } else {
            "CXL DVSEC"
        },
        budget(),
        if long { ", long run" } else { "" }
    ));
    let ctx = match Ctx::open(GPU_BDF) {
        Ok(c) => c,
        Err(e) => {
            println!("Bail out! cannot open {GPU_BDF}: {e}");
            std::process::exit(1);
        }
    };
    let tests = vec![
        test(
            "never_ready_accesses_fail_with_etime",
            with(never_ready_test),
        ),
        test(
            "bar0_all_ones_device_gone",
            with(|ctx| gone_test(ctx, long)),
        ),
        test(
            "flapping_readiness_succeeds_or_fails_cleanly",
            with(flapping_test),
        ),
        test(
            "low_power_fault_does_not_wait_for_readiness",
            with(low_power_test),
        ),
        test("reopen_after_faults", |open: &mut Option<Ctx>| {
            // Whatever failed above, leave the model as the command line set it (untraced, as
            // set-up between the tests).
            let _ = tap::untraced(model::reset_control);
            match open.take() {
                Some(ctx) => reopen_test(ctx),
                None => fail!("the device is closed"),
            }
        }),
        test("no_kernel_splat", |_: &mut Option<Ctx>| {
            sys::no_kernel_splat()
        }),
    ];
    Harness::run_table(&mut Some(ctx), tests)
}
