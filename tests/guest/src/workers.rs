// SPDX-License-Identifier: GPL-2.0

//! Worker processes for tests that race: a test runs in a forked worker (its own process group)
//! that reports its outcome on a [`Board`] in shared memory, so that the test program never
//! blocks on it; a worker that does not finish in time is described (state, wait channel and
//! kernel stack of each of its threads), killed with the processes it forked, and reported as a
//! failure. Processes fork only while single-threaded, as [`mm::fork_child`] requires.

use std::fs;
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::fail;
use crate::mm;
use crate::mm::ChildEnd;
use crate::sys;
use crate::tap::Failure;
use crate::tap::Outcome;

/// How long to wait for a process blocked in the kernel to die after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// Flags of a [`Board`].
pub mod flag {
    /// The racing threads stop.
    pub const STOP: usize = 0;
    /// The worker has started its threads / is ready for the next step.
    pub const READY: usize = 1;
    /// The worker has dropped its mappings and device fd.
    pub const RELEASED: usize = 2;
    /// The worker may exit.
    pub const EXIT: usize = 3;
}

/// Bytes of a worker's failure message kept.
pub const MSG: usize = 3072;

/// Memory shared by a process and the children it forks (`MAP_SHARED | MAP_ANONYMOUS`): flags,
/// progress counters and a worker's result, so that neither side ever blocks on the other.
#[repr(C)]
pub struct Board {
    pub flags: [AtomicU64; 8],
    pub counters: [AtomicU64; 16],
    /// 0 no result yet, 1 passed, 2 failed, 3 skipped; stored after the message.
    result: AtomicU64,
    msg_len: AtomicU64,
    msg: [AtomicU8; MSG],
}

/// A [`Board`] in its own shared mapping, unmapped on drop.
pub struct SharedBoard(&'static Board);

impl SharedBoard {
    pub fn new() -> io::Result<Self> {
        let len = size_of::<Board>();
        // SAFETY: A new anonymous mapping at an address the kernel chooses.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: The mapping is zero-filled, page-aligned and large enough; all-zero bytes are
        // valid atomics. It lives until `drop`, and is only used through this object.
        Ok(SharedBoard(unsafe { &*p.cast::<Board>() }))
    }
}

impl std::ops::Deref for SharedBoard {
    type Target = Board;
    fn deref(&self) -> &Board {
        self.0
    }
}

impl Drop for SharedBoard {
    fn drop(&mut self) {
        // SAFETY: The mapping made in `new`, no longer referenced (the borrow ends with self).
        unsafe {
            libc::munmap(
                (self.0 as *const Board).cast_mut().cast(),
                size_of::<Board>(),
            )
        };
    }
}

impl Board {
    pub fn set(&self, f: usize) {
        self.flags[f].store(1, Ordering::SeqCst);
    }

    pub fn is_set(&self, f: usize) -> bool {
        self.flags[f].load(Ordering::SeqCst) != 0
    }

    pub fn count(&self, c: usize) -> u64 {
        self.counters[c].load(Ordering::Relaxed)
    }

    pub fn bump(&self, c: usize) {
        self.counters[c].fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self, outcome: &Outcome) {
        let (code, msg) = match outcome {
            Ok(()) => (1, ""),
            Err(Failure::Fail(m)) => (2, m.as_str()),
            Err(Failure::Skip(m)) => (3, m.as_str()),
        };
        let bytes = msg.as_bytes();
        let n = bytes.len().min(MSG);
        for (slot, b) in self.msg.iter().zip(&bytes[..n]) {
            slot.store(*b, Ordering::Relaxed);
        }
        self.msg_len.store(n as u64, Ordering::Relaxed);
        self.result.store(code, Ordering::Release);
    }

    /// The worker's result, if it reported one.
    pub fn outcome(&self) -> Option<Outcome> {
        let code = self.result.load(Ordering::Acquire);
        let n = self.msg_len.load(Ordering::Relaxed) as usize;
        let msg: Vec<u8> = self.msg[..n.min(MSG)]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let msg = String::from_utf8_lossy(&msg).into_owned();
        match code {
            1 => Some(Ok(())),
            2 => Some(Err(Failure::Fail(msg))),
            3 => Some(Err(Failure::Skip(msg))),
            _ => None,
        }
    }
}

/// The state letter, wait channel and kernel stack of every thread of `pid` and of its children.
pub fn describe_tree(pid: libc::pid_t) -> String {
    let mut pids = vec![pid];
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<libc::pid_t>() else {
                continue;
            };
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // "pid (comm) S ppid ...".
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<libc::pid_t>().ok());
            if ppid == Some(pid) {
                pids.push(p);
            }
        }
    }
    let mut out = String::new();
    for p in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let tid = t.file_name().to_string_lossy().into_owned();
            let base = format!("/proc/{p}/task/{tid}");
            let stat = fs::read_to_string(format!("{base}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?")
                .to_string();
            let wchan = fs::read_to_string(format!("{base}/wchan")).unwrap_or_default();
            let stack = fs::read_to_string(format!("{base}/stack")).unwrap_or_default();
            out.push_str(&format!(
                "pid {p} tid {tid}: state {state}, wchan {wchan}\n"
            ));
            for l in stack.lines().take(12) {
                out.push_str(&format!("    {l}\n"));
            }
        }
    }
    out
}

/// Whether a description from [`describe_tree`] shows a thread in uninterruptible sleep.
pub fn has_d_state(desc: &str) -> bool {
    desc.lines().any(|l| l.contains(": state D,"))
}

/// Forks a worker that runs `f` and reports its outcome on `board`. The worker leads a process
/// group of its own, so that processes it forks can be found after it (see [`finish_worker`]).
pub fn spawn_worker(board: &Board, f: impl FnOnce(&Board) -> Outcome) -> io::Result<mm::Child> {
    mm::fork_child(|| {
        // SAFETY: Makes this new process the leader of a new process group.
        unsafe { libc::setpgid(0, 0) };
        let r = f(board);
        board.report(&r);
        0
    })
}

/// Waits for a worker at most `deadline` and returns its outcome. A worker that does not end in
/// time is described, given the hung-task detector's time to report (twice `hung_task_timeout`) if one of its threads is
/// blocked in the kernel, then killed; one that cannot be killed is left behind rather than
/// waited for.
pub fn finish_worker(
    mut child: mm::Child,
    board: &Board,
    deadline: Duration,
    hung_task_timeout: Duration,
) -> Outcome {
    let pgid = child.pid();
    let end = child.wait_timeout(deadline)?;
    if end != ChildEnd::TimedOut {
        end_group(pgid);
    }
    if end == ChildEnd::TimedOut {
        board.set(flag::STOP);
        board.set(flag::EXIT);
        let desc = describe_tree(child.pid());
        if has_d_state(&desc) {
            std::thread::sleep(2 * hung_task_timeout + Duration::from_secs(2));
        }
        let _ = child.signal(libc::SIGKILL);
        let after_kill = child.wait_timeout(KILL_WAIT)?;
        end_group(pgid);
        if after_kill == ChildEnd::TimedOut {
            // Dropping it would wait for it forever.
            std::mem::forget(child);
        }
        let splats = sys::splats().unwrap_or_default();
        fail!(
            "the worker did not finish within {deadline:?} (after SIGKILL: {after_kill}); its threads:\n{desc}kernel log splats:\n{}",
            splats.join("\n")
        );
    }
    match (end, board.outcome()) {
        (ChildEnd::Exited(0), Some(r)) => r,
        (end, r) => {
            let why = match r {
                Some(Err(Failure::Fail(m))) => format!(": {m}"),
                _ => String::new(),
            };
            fail!("the worker {end}{why}")
        }
    }
}

/// Kills what is left of a worker's process group (processes it forked that outlived it, which
/// may hold the device open) and waits up to [`KILL_WAIT`] for them to be gone.
pub fn end_group(pgid: libc::pid_t) {
    // SAFETY: Signals the processes of a group this program created.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let until = Until::after(KILL_WAIT);
    // SAFETY: Signal 0 only checks whether the group still has processes.
    while unsafe { libc::kill(-pgid, 0) } == 0 && !until.passed() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An end time on the monotonic clock.
#[derive(Clone, Copy)]
pub struct Until(Duration);

impl Until {
    pub fn after(d: Duration) -> Self {
        Until(mm::now() + d)
    }

    pub fn passed(&self) -> bool {
        mm::now() >= self.0
    }
}
