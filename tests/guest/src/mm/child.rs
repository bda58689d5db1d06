// SPDX-License-Identifier: GPL-2.0

//! Forked helper processes with bounded waits, and touching a page in one to see whether it gets
//! SIGBUS. The test binaries fork only while single-threaded; a child runs the closure it is given
//! and leaves with `_exit()`.

use std::io;
use std::io::Write;
use std::time::Duration;

use super::now;

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEnd {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// Still running when the wait gave up (it is killed when its [`Child`] is dropped).
    TimedOut,
}

impl std::fmt::Display for ChildEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildEnd::Exited(c) => write!(f, "exited with status {c}"),
            ChildEnd::Signaled(s) => write!(f, "killed by signal {s} ({})", signal_name(*s)),
            ChildEnd::TimedOut => write!(f, "still running at the deadline"),
        }
    }
}

/// A short name for the signals the tests expect.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGBUS => "SIGBUS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        _ => "?",
    }
}

/// A forked child process. Dropping it kills (SIGKILL, by its pid) and reaps it if it has not
/// been reaped yet, so no test leaves processes behind.
pub struct Child {
    pid: libc::pid_t,
    reaped: bool,
}

/// Forks a child that runs `f` and exits with its return value via `_exit()`.
pub fn fork_child(f: impl FnOnce() -> i32) -> io::Result<Child> {
    // Whatever the parent buffered must not be written twice or interleaved.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: The process is single-threaded (test binaries run their tests sequentially).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = f();
        // SAFETY: Leaves the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    Ok(Child { pid, reaped: false })
}

impl Child {
    /// The child's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Whether the child has ended (reaping it if so).
    pub fn try_wait(&mut self) -> io::Result<Option<ChildEnd>> {
        if self.reaped {
            return Err(io::Error::other("child already reaped"));
        }
        let mut status = 0;
        // SAFETY: Waits for our own child.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Ok(None);
        }
        self.reaped = true;
        if libc::WIFEXITED(status) {
            Ok(Some(ChildEnd::Exited(libc::WEXITSTATUS(status))))
        } else if libc::WIFSIGNALED(status) {
            Ok(Some(ChildEnd::Signaled(libc::WTERMSIG(status))))
        } else {
            Err(io::Error::other(format!(
                "unexpected wait status {status:#x}"
            )))
        }
    }

    /// Waits for the child to end, at most `timeout` (polling every 10 ms).
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<ChildEnd> {
        let deadline = now() + timeout;
        loop {
            if let Some(end) = self.try_wait()? {
                return Ok(end);
            }
            if now() >= deadline {
                return Ok(ChildEnd::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        if self.reaped {
            return Err(io::Error::other("child already reaped"));
        }
        // SAFETY: Signals our own, not yet reaped, child.
        if unsafe { libc::kill(self.pid, sig) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The state letter of `/proc/<pid>/stat` (R, S, D, Z, ...), if readable.
    pub fn state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // "pid (comm) S ...": the state follows the last ')'.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let mut status = 0;
            // SAFETY: Kills and reaps our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
    }
}

/// Touches (reads one byte at) `addr` in a forked child, which exits 0 if the load succeeds.
/// Returns how the child ended (killed by SIGBUS when the fault failed) and how long it took.
/// The child is killed if it has not ended after `timeout`.
pub fn touch_in_child(addr: usize, timeout: Duration) -> io::Result<(ChildEnd, Duration)> {
    let t0 = now();
    let mut child = fork_child(|| {
        // Rust's runtime handles SIGBUS (stack-overflow detection): for any other fault it
        // restores the default action and returns, so the load runs, and faults, a second time.
        // Take the default action at once: one fault, one SIGBUS.
        // SAFETY: Resets a signal disposition in this single-threaded child.
        unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
        // SAFETY: `addr` is in a mapping the parent owns and the child inherited; a failed fault
        // raises SIGBUS, which is what the parent observes.
        unsafe { std::ptr::read_volatile(addr as *const u8) };
        0
    })?;
    let end = child.wait_timeout(timeout)?;
    Ok((end, now() - t0))
}
