// SPDX-License-Identifier: GPL-2.0

//! concurrency_test's scenario 3: the device unbound while a process has it mapped and faults it.

use nvgrace_guest_tests::check;
use nvgrace_guest_tests::check_eq;
use nvgrace_guest_tests::fail;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::ChildEnd;
use nvgrace_guest_tests::rng::Rng;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Outcome;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::workers::finish_worker;
use nvgrace_guest_tests::workers::flag;
use nvgrace_guest_tests::workers::spawn_worker;
use nvgrace_guest_tests::workers::Board;
use nvgrace_guest_tests::workers::SharedBoard;
use nvgrace_guest_tests::workers::Until;
use nvgrace_guest_tests::DRIVER_NAME;
use nvgrace_guest_tests::GPU_BDF;
use std::time::Duration;

use super::*;

/// Scenario 3: the device is unbound while a process has it mapped and is faulting and reading
/// it. The unbind waits while the process uses the device, and the process's accesses keep
/// working meanwhile; once the process drops its mappings and fd (and is still alive), the
/// unbind completes. The device is bound again at the end.
pub(crate) fn unbind_while_faulting(rng: &Rng) -> Outcome {
    if nvgrace_guest_tests::expected_regions().is_none() {
        return Err(Failure::Skip("no GPU memory described".into()));
    }
    let board = SharedBoard::new()?;
    let wrng = &rng.fork(20);
    let worker = spawn_worker(&board, |b| {
        let dev = Device::open_iommufd(GPU_BDF)?;
        let (usemem, resmem) = dev.gpu_mem()?;
        require_window(&usemem)?;
        let resmem = resmem_fits(&resmem);
        // The threads run until the supervisor says stop, bounded by the worker's deadline.
        let until = Until::after(worker_deadline());
        let job = FaultJob {
            source: Source::Fd(&dev.fd),
            m: &usemem,
            slice: 4,
            huge: true,
            until,
            board: b,
            counter: 0,
        };
        let results = std::thread::scope(|s| {
            let mut hs = Vec::new();
            let (fd, u) = (&dev.fd, &usemem);
            hs.push(s.spawn(move || fault_thread(job, wrng.fork(1))));
            let j = FaultJob {
                slice: 5,
                huge: false,
                ..job
            };
            hs.push(s.spawn(move || fault_thread(j, wrng.fork(2))));
            if let Some(r) = resmem.as_ref() {
                let j = FaultJob {
                    m: r,
                    huge: false,
                    ..job
                };
                hs.push(s.spawn(move || fault_thread(j, wrng.fork(3))));
            }
            // Not slices 6 and 7: memory_failure_while_faulting poisoned pages there, which the
            // Rust driver refuses from then on (difference 6).
            hs.push(s.spawn(move || rw_thread(fd, u, 2, wrng.fork(4), until, b, 1)));
            b.set(flag::READY);
            hs.into_iter().map(|h| h.join()).collect::<Vec<_>>()
        });
        drop(dev);
        b.set(flag::RELEASED);
        let r = join_all(results);
        // Stay alive until told to exit: the unbind must complete while this process lives.
        let exit_by = Until::after(WORKER_GRACE);
        while !b.is_set(flag::EXIT) && !exit_by.passed() {
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    })?;
    let outcome = unbind_steps(&board);
    board.set(flag::STOP);
    board.set(flag::EXIT);
    let worker_outcome = finish_worker(
        worker,
        &board,
        worker_deadline(),
        Duration::from_secs(HUNG_TASK_TIMEOUT_S),
    );
    println!(
        "# unbind_while_faulting: {} accesses through mappings, {} reads/writes",
        board.count(0),
        board.count(1)
    );
    // Bound again whatever failed, for the programs after this one.
    let rebound = if sys::bound_driver(GPU_BDF).is_none() {
        rebind()
    } else {
        Ok(())
    };
    outcome?;
    worker_outcome?;
    rebound?;
    check_device_works()
}

/// The supervisor's side of [`unbind_while_faulting`].
pub(crate) fn unbind_steps(board: &Board) -> Outcome {
    let started = Until::after(worker_deadline());
    while !(board.is_set(flag::READY) && board.count(0) > 100 && board.count(1) > 10) {
        if started.passed() || board.outcome().is_some() {
            fail!(
                "the worker did not start faulting ({} accesses through mappings, {} reads/writes): {:?}",
                board.count(0),
                board.count(1),
                board.outcome().map(|r| r.err())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut unbinder = mm::fork_child(|| match sys::unbind(GPU_BDF) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(1),
    })?;
    // Whatever happens below, the worker lets go of the device before the unbinder is dropped
    // (which waits for it): declared after it, dropped before it.
    let _release = SetOnDrop(board, &[flag::STOP, flag::EXIT]);
    let (f0, r0) = (board.count(0), board.count(1));
    let waiting = race().min(Duration::from_secs(3));
    check_eq!(
        unbinder.wait_timeout(waiting)?,
        ChildEnd::TimedOut,
        "unbind while the device is open, mapped and faulted"
    );
    let (f1, r1) = (board.count(0), board.count(1));
    println!(
        "# unbind_while_faulting: while the unbind waited {waiting:?}: {} accesses through mappings, {} reads/writes",
        f1 - f0,
        r1 - r0
    );
    check!(
        f1 > f0 && r1 > r0,
        "faults ({f0} -> {f1}) and reads/writes ({r0} -> {r1}) stopped while the unbind waited"
    );
    board.set(flag::STOP);
    let released = Until::after(WORKER_GRACE);
    while !board.is_set(flag::RELEASED) {
        if released.passed() {
            fail!("the worker did not drop its mappings within {WORKER_GRACE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = unbinder.wait_timeout(Duration::from_secs(30))?;
    check_eq!(
        end,
        ChildEnd::Exited(0),
        "unbind once the mappings and the fd are gone, the process still alive ({end})"
    );
    check_eq!(
        sys::bound_driver(GPU_BDF),
        None::<String>,
        "driver after unbind"
    );
    Ok(())
}

/// Sets flags of a board when dropped.
pub(crate) struct SetOnDrop<'a>(&'a Board, &'static [usize]);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        for f in self.1 {
            self.0.set(*f);
        }
    }
}

/// Binds the GPU again (its driver_override still names the driver).
pub(crate) fn rebind() -> Outcome {
    sys::write_attr("/sys/bus/pci/drivers_probe", GPU_BDF)?;
    check_eq!(
        sys::bound_driver(GPU_BDF),
        Some(DRIVER_NAME.to_string()),
        "driver after rebinding"
    );
    Ok(())
}

/// The device opens and its memory reads.
pub(crate) fn check_device_works() -> Outcome {
    let dev = Device::open_iommufd(GPU_BDF)?;
    let (usemem, _) = dev.gpu_mem()?;
    let mut b = [0u8; 8];
    dev.mem_read_exact(&usemem, WINDOW_BASE, &mut b)?;
    Ok(())
}
