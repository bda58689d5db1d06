// SPDX-License-Identifier: GPL-2.0

//! Readiness after VFIO_DEVICE_RESET: the first access to GPU memory after a reset waits until
//! the GPU reports ready (upstream `nvgrace_gpu_vfio_pci_reset_done()`,
//! `nvgrace_gpu_check_device_ready()`, `nvgrace_gpu_wait_device_ready_legacy()`) and the wait
//! ends on SIGKILL. A GPU that never becomes ready (ETIME after the 30 s budget) is tested by
//! device_fault_test, for reads, writes and faults side by side.
//!
//! The model's readiness is changed at runtime through its control file (tests/gpu-model). The
//! waits are measured between both bounds: at least the model's readiness delay, at most the
//! delay and upstream's one-second poll interval plus slack for a loaded TCG guest; and a killed
//! waiter must die well before the 30 s budget would have ended its wait anyway. The drivers
//! poll at different intervals (tests/guest/src/differences.rs, difference 2), which no
//! assertion here depends on. Takes ~15 s in the guest.

use std::time::Duration;

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::gpumem::OpenGpu;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::ChildEnd;
use nvgrace_guest_tests::model;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::test;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::timing::Bounds;
use nvgrace_guest_tests::GPU_BDF;

/// The readiness delay the model is given after each reset.
const DELAY: Duration = Duration::from_millis(3000);
/// How long a child may take to die after SIGKILL while waiting for readiness: far below the
/// 30 s budget, which a wait that ignored the signal would run to the end.
const KILL_DEADLINE: Duration = Duration::from_secs(10);
/// Bound on children that wait for the 30 s budget, under TCG.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Both bounds of a wait for the readiness delay, reset included: at least [`DELAY`] (the model
/// counts it from the FLR, which the reset ioctl starts), at most the delay, upstream's last
/// poll interval (`POLL_QUANTUM_MS`, 1 s) and 2 s for the reset and a loaded TCG guest (seen:
/// 3.0-3.2 s with both builds). The model counts the delay on the host's clock, which a TCG
/// guest's follows (`timing::CALIBRATION`).
const WAIT: Bounds = Bounds::new(DELAY, Duration::from_millis(3000 + 1000 + 2000));

/// What every test here starts from.
type Ctx = OpenGpu;

fn require_model() -> Outcome {
    if !model::available() {
        return Err(Failure::Skip("no model state share at /mnt/model".into()));
    }
    if !model::readiness_via_bar0() {
        return Err(Failure::Skip(
            "the CXL variant's readiness wait (CXL DVSEC, Memory_Active_Timeout) is not covered here".into(),
        ));
    }
    Ok(())
}

fn polls_since(mark: model::LogMark) -> Result<(model::ReadinessPolls, Vec<String>), Failure> {
    let log = model::log_since(mark)?;
    Ok((model::readiness_polls(&log), log))
}

/// The first pread after a reset succeeds, returns the data written before the reset, and took
/// at least the model's readiness delay; the model's log shows the driver reading the status
/// registers while not ready and then once ready.
fn first_pread_test(ctx: &Ctx, m: &GpuMem) -> Outcome {
    require_model()?;
    let off = 0x3000 + m.index as u64 * 8;
    let v = 0x5eed_0000_0000_0001u64 + m.index as u64;
    ctx.dev.mem_write_all(m, off, &v.to_le_bytes())?;
    model::set_control(&[("ready_delay_ms", &DELAY.as_millis().to_string())])?;
    let mark = model::log_mark()?;
    let t0 = mm::now();
    ctx.dev.reset()?;
    let t1 = mm::now();
    let mut b = [0u8; 8];
    let r = ctx.dev.mem_read(m, off, &mut b);
    let t2 = mm::now();
    println!(
        "# {}: reset took {:?}, the first pread {:?}",
        m.name(),
        t1 - t0,
        t2 - t1
    );
    check!(
        matches!(r, Ok(8)),
        "{}: first pread after the reset: {r:?}",
        m.name()
    );
    check_eq!(
        u64::from_le_bytes(b),
        v,
        "{}: data read after the reset",
        m.name()
    );
    WAIT.check(
        "wait",
        &format!("{}: reset + first pread", m.name()),
        t2 - t0,
    )?;
    let (polls, log) = polls_since(mark)?;
    check!(
        polls.resets >= 1 && polls.not_ready_reads >= 1 && polls.ready_reads >= 1,
        "{}: expected a reset, status reads while not ready and one once ready, got {polls:?}:\n{}",
        m.name(),
        model::tail(&log, 20)
    );
    // Once the GPU was seen ready, later accesses do not poll again.
    let mark = model::log_mark()?;
    ctx.dev.mem_read_exact(m, off, &mut b)?;
    ctx.dev.mem_write_all(m, off, &v.to_le_bytes())?;
    let (polls, log) = polls_since(mark)?;
    check!(
        polls.ready_reads + polls.not_ready_reads == 0,
        "{}: accesses after readiness was established read the status registers again: {polls:?}\n{}",
        m.name(),
        model::tail(&log, 10)
    );
    Ok(())
}

/// The same for the first pwrite after a reset: it waits, then lands.
fn first_pwrite_test(ctx: &Ctx) -> Outcome {
    require_model()?;
    let m = ctx.usemem;
    let off = 0x5000;
    model::set_control(&[("ready_delay_ms", &DELAY.as_millis().to_string())])?;
    let mark = model::log_mark()?;
    let t0 = mm::now();
    ctx.dev.reset()?;
    let v = 0x0bad_cafe_f00d_0003u64;
    let r = ctx.dev.mem_write(&m, off, &v.to_le_bytes());
    let took = mm::now() - t0;
    println!("# usemem: reset + first pwrite took {took:?}");
    check!(matches!(r, Ok(8)), "first pwrite after the reset: {r:?}");
    WAIT.check("wait", "reset + first pwrite", took)?;
    let (polls, _) = polls_since(mark)?;
    check!(
        polls.not_ready_reads >= 1 && polls.ready_reads >= 1,
        "status reads around the pwrite: {polls:?}"
    );
    let mut b = [0u8; 8];
    ctx.dev.mem_read_exact(&m, off, &mut b)?;
    check_eq!(
        u64::from_le_bytes(b),
        v,
        "data written by the first pwrite after the reset"
    );
    Ok(())
}

/// The first fault on a mapping after a reset waits for readiness too (in a child, which exits
/// 0 once its load succeeds).
fn first_fault_test(ctx: &Ctx) -> Outcome {
    require_model()?;
    let m = ctx.usemem;
    let map = mm::mmap_shared(&ctx.dev.fd, m.at(0x10000), 4 * mm::page_size())?;
    map.write_u64(0, 0x1234);
    model::set_control(&[("ready_delay_ms", &DELAY.as_millis().to_string())])?;
    let t0 = mm::now();
    ctx.dev.reset()?;
    let (end, _) = mm::touch_in_child(map.addr(), CHILD_TIMEOUT)?;
    let took = mm::now() - t0;
    println!("# usemem: reset + first fault took {took:?}");
    check_eq!(
        end,
        ChildEnd::Exited(0),
        "first touch of the mapping after the reset ({end})"
    );
    WAIT.check("wait", "reset + first fault", took)?;
    check_eq!(
        map.read_u64(0),
        0x1234u64,
        "data through the mapping after the reset"
    );
    Ok(())
}

fn pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: Both descriptors are new and owned by nothing else.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

/// A pread blocked in the readiness wait (the GPU never becomes ready) ends when its process is
/// sent SIGKILL: the wait is killable, the child dies at once rather than after the budget.
fn killable_test(ctx: &Ctx) -> Outcome {
    use std::io::Read;
    use std::io::Write;
    require_model()?;
    let m = ctx.usemem;
    model::set_control(&[("never_ready", "1")])?;
    let mark = model::log_mark()?;
    ctx.dev.reset()?;
    let (mut rx, mut tx) = pipe()?;
    let mut child = mm::fork_child(|| {
        let _ = tx.write_all(b"r");
        let mut b = [0u8; 8];
        match ctx.dev.mem_read(&m, 0, &mut b) {
            Ok(_) => 0,
            Err(e) => e.raw_os_error().unwrap_or(1),
        }
    })?;
    drop(tx);
    let mut b = [0u8; 1];
    rx.read_exact(&mut b)?;
    // Let the child wait a second, then make sure it is in the readiness wait: the driver's
    // status reads (only this child's pread makes them) show in the model's log.
    std::thread::sleep(Duration::from_secs(1));
    let deadline = mm::now() + Duration::from_secs(20);
    while polls_since(mark)?.0.not_ready_reads == 0 && mm::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(end) = child.try_wait()? {
        return Err(Failure::Fail(format!(
            "the pread did not block while the GPU is not ready: the child {end}"
        )));
    }
    let (polls, _) = polls_since(mark)?;
    check!(
        polls.not_ready_reads >= 1,
        "the child's pread is not polling the status registers: {polls:?}"
    );
    let state = child.state();
    let t0 = mm::now();
    child.signal(libc::SIGKILL)?;
    let end = child.wait_timeout(KILL_DEADLINE)?;
    let took = mm::now() - t0;
    println!("# readiness_wait_killable: child state {state:?} while waiting; {end} {took:?} after SIGKILL");
    check_eq!(
        end,
        ChildEnd::Signaled(libc::SIGKILL),
        "child blocked in the readiness wait, {KILL_DEADLINE:?} after SIGKILL ({end})"
    );
    Ok(())
}

/// Readiness comes back with the next reset once the model is told so; data kept.
fn restored_test(ctx: &Ctx) -> Outcome {
    require_model()?;
    model::reset_control()?;
    ctx.dev.reset()?;
    let m = ctx.usemem;
    let mut b = [0u8; 8];
    ctx.dev.mem_read_exact(&m, 0x5000, &mut b)?;
    check_eq!(
        u64::from_le_bytes(b),
        0x0bad_cafe_f00d_0003u64,
        "data after readiness is restored"
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
    // Its I/O is the same in every boot: tapsum compares it between the builds.
    nvgrace_guest_tests::tap::trace_io();
    tap::diag(format!(
        "driver build: {}, GPU model: {}",
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));
    let ctx = match Ctx::open(GPU_BDF) {
        Ok(c) => c,
        Err(e) => Harness::open_failed(e),
    };
    let use_ = ctx.usemem;
    let tests = vec![
        test(
            "usemem_first_pread_after_reset_waits",
            with(|ctx| first_pread_test(ctx, &use_)),
        ),
        test(
            "resmem_first_pread_after_reset_waits",
            with(|ctx| {
                let r = ctx.resmem.ok_or_else(|| {
                    Failure::Skip(format!("{} has no resmem", nvgrace_guest_tests::rig_gpu()))
                })?;
                first_pread_test(ctx, &r)
            }),
        ),
        test("first_pwrite_after_reset_waits", with(first_pwrite_test)),
        test("first_fault_after_reset_waits", with(first_fault_test)),
        test("readiness_wait_killable", with(killable_test)),
        test("readiness_restored_by_reset", with(restored_test)),
        test("device_closes", |open: &mut Option<Ctx>| {
            drop(open.take());
            Ok(())
        }),
        test("no_kernel_splat", |_: &mut Option<Ctx>| {
            // Whatever failed above, leave the model as the command line set it (untraced, as
            // set-up between the tests).
            let _ = tap::untraced(model::reset_control);
            sys::no_kernel_splat()
        }),
    ];
    Harness::run_table(&mut Some(ctx), tests)
}
