// SPDX-License-Identifier: GPL-2.0

//! A TAP 13 harness in the kselftest format (tools/testing/selftests/kselftest.h): a plan line,
//! one `ok`/`not ok` line per test with `# SKIP reason` for skips, `# ` diagnostics, and a totals
//! line. The exit status follows kselftest: 0 all passed, 1 any failure, 4 all skipped.
//!
//! What a test observed goes in a TAP 13 YAML block after its line, for scripts/tapsum to
//! compare between the driver builds ([`observe`], [`observe_listed`]):
//!
//! ```text
//! ok 4 pread_pwrite
//!   ---
//!   observed:
//!     pread_errno: "EIO"
//!   listed:
//!     pread_errno: 6
//!   ...
//! ```
//!
//! Values are JSON strings (valid YAML); `listed` names the entry of
//! tests/guest/src/differences.rs under which a value may differ between the builds.

use std::fmt::Display;
use std::sync::Mutex;

/// The observations of the running test: `(key, value, listed difference)`, in order.
static OBSERVED: Mutex<Vec<(String, String, Option<u32>)>> = Mutex::new(Vec::new());

fn push_observation(key: &str, value: String, listed: Option<u32>) {
    let key: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut obs = OBSERVED.lock().unwrap_or_else(|e| e.into_inner());
    // The last value of a key counts: a test that observes in a loop reports where it ended.
    obs.retain(|(k, _, _)| *k != key);
    obs.push((key, value, listed));
}

/// Records what the running test saw under `key` (an errno, a byte count, a digest, a signal
/// code, a fault count): scripts/tapsum fails the run if the other driver build saw otherwise.
/// Only values that do not depend on the boot (no virtual addresses, no times).
pub fn observe(key: &str, value: impl Display) {
    push_observation(key, value.to_string(), None);
}

/// Like [`observe`], for a value that may differ between the builds because of the listed
/// difference `difference` (tests/guest/src/differences.rs).
pub fn observe_listed(difference: u32, key: &str, value: impl Display) {
    push_observation(key, value.to_string(), Some(difference));
}

/// An errno as its name where the tests meet it, else its number: for observations.
pub fn errno_name(e: Option<i32>) -> String {
    match e {
        Some(libc::EIO) => "EIO".into(),
        Some(libc::EFAULT) => "EFAULT".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::ENODEV) => "ENODEV".into(),
        Some(libc::EBUSY) => "EBUSY".into(),
        Some(libc::ETIME) => "ETIME".into(),
        Some(libc::EINTR) => "EINTR".into(),
        Some(libc::ENOTTY) => "ENOTTY".into(),
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EOVERFLOW) => "EOVERFLOW".into(),
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(n) => format!("errno {n}"),
        None => "no errno".into(),
    }
}

/// The I/O trace of the running test: every pread/pwrite, config access and region info query
/// made through the library's helpers (tests/guest/src/vfio.rs, gpumem.rs), folded into a
/// digest of what was asked and what came back (counts, errnos, the bytes read).
struct Trace {
    /// Whether the program asked for it ([`trace_io`]): only programs whose I/O is the same
    /// in every boot (no races, no timing) do.
    enabled: bool,
    ops: u64,
    /// FNV-1a, 64 bits.
    hash: u64,
    /// The listed difference under which this test's I/O may differ between the builds.
    listed: Option<u32>,
}

impl Trace {
    /// What the trace of the test that just ended adds to its observations, `(ops, digest,
    /// listed)` if it traced anything; starts the next test's trace empty.
    fn take(&mut self) -> Option<(u64, u64, Option<u32>)> {
        let done = (self.enabled && self.ops > 0).then_some((self.ops, self.hash, self.listed));
        self.ops = 0;
        self.hash = FNV_OFFSET;
        self.listed = None;
        done
    }
}

static TRACE: Mutex<Trace> = Mutex::new(Trace {
    enabled: false,
    ops: 0,
    hash: FNV_OFFSET,
    listed: None,
});

/// FNV-1a 64-bit offset basis and prime (Fowler, Noll, Vo; IETF draft-eastlake-fnv).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Makes every later test of this program report its I/O trace (`io.ops`, `io.digest`).
pub fn trace_io() {
    TRACE.lock().unwrap_or_else(|e| e.into_inner()).enabled = true;
}

/// Runs `f` with the I/O trace paused: set-up that a table's test does before its own checks
/// (opening the device again) stays out of its trace, as set-up in `main` between tests did.
pub fn untraced<T>(f: impl FnOnce() -> T) -> T {
    let was = std::mem::replace(
        &mut TRACE.lock().unwrap_or_else(|e| e.into_inner()).enabled,
        false,
    );
    let r = f();
    TRACE.lock().unwrap_or_else(|e| e.into_inner()).enabled = was;
    r
}

/// The running test's I/O differs between the builds by the listed difference `difference`.
pub fn trace_listed(difference: u32) {
    TRACE.lock().unwrap_or_else(|e| e.into_inner()).listed = Some(difference);
}

/// Adds one operation to the trace: its name, position and length, its result (a count or an
/// errno) and the bytes it returned (reads).
pub fn trace(op: &str, pos: u64, len: usize, result: &std::io::Result<usize>, data: &[u8]) {
    let mut t = TRACE.lock().unwrap_or_else(|e| e.into_inner());
    if !t.enabled {
        return;
    }
    let res = match result {
        Ok(n) => *n as i64,
        Err(e) => -(e.raw_os_error().unwrap_or(i32::MAX) as i64),
    };
    let mut h = t.hash;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
        }
    };
    feed(op.as_bytes());
    feed(&pos.to_le_bytes());
    feed(&(len as u64).to_le_bytes());
    feed(&res.to_le_bytes());
    if let Ok(n) = result {
        feed(&data[..(*n).min(data.len())]);
    }
    t.hash = h;
    t.ops += 1;
}

/// Prints the YAML block of the test that just ended, if it observed anything.
fn flush_observations() {
    let traced = TRACE.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((ops, hash, listed)) = traced {
        push_observation("io.ops", ops.to_string(), listed);
        push_observation("io.digest", format!("{hash:016x}"), listed);
    }
    let obs = std::mem::take(&mut *OBSERVED.lock().unwrap_or_else(|e| e.into_inner()));
    if obs.is_empty() {
        return;
    }
    println!("  ---");
    println!("  observed:");
    for (k, v, _) in &obs {
        println!("    {k}: {}", serde_json::Value::String(v.clone()));
    }
    if obs.iter().any(|(_, _, l)| l.is_some()) {
        println!("  listed:");
        for (k, _, l) in &obs {
            if let Some(n) = l {
                println!("    {k}: {n}");
            }
        }
    }
    println!("  ...");
}

/// The outcome of one test: `Ok(())` passed, `Err(Failure)` failed or skipped with a reason.
pub type Outcome = Result<(), Failure>;

/// Why a test did not pass.
#[derive(Debug)]
pub enum Failure {
    /// The behaviour was wrong; the message says what was expected and what was seen.
    Fail(String),
    /// The test could not run here; the message says why.
    Skip(String),
}

impl<E: Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Fail(e.to_string())
    }
}

/// Fails the test with a formatted message.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { return Err($crate::tap::Failure::Fail(format!($($arg)*))) };
}

/// Fails the test unless the two values are equal, naming both, the two expressions and where
/// the check is (file and line).
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr, $($what:tt)*) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            $crate::fail!(
                "{}: got {:#x?}, expected {:#x?} ({}:{}: `{} == {}`)",
                format!($($what)*),
                l,
                r,
                file!(),
                line!(),
                stringify!($left),
                stringify!($right)
            );
        }
    }};
}

/// Fails the test unless the condition holds, naming the condition and where the check is (file
/// and line).
#[macro_export]
macro_rules! check {
    ($cond:expr, $($what:tt)*) => {
        if !$cond {
            $crate::fail!(
                "{} ({}:{}: `{}`)",
                format!($($what)*),
                file!(),
                line!(),
                stringify!($cond)
            );
        }
    };
}

/// Prints a diagnostic line, also from inside a running test.
pub fn diag(msg: impl Display) {
    for line in msg.to_string().lines() {
        println!("# {line}");
    }
}

/// The body of one test of a table ([`Harness::run_table`]): it gets the program's context.
pub type TestFn<'a, C> = Box<dyn FnOnce(&mut C) -> Outcome + 'a>;

/// One test of a program's table: its name (what the inventory lists) and its body.
pub struct Test<'a, C> {
    name: String,
    body: TestFn<'a, C>,
}

/// A test for a table ([`Harness::run_table`]).
pub fn test<'a, C>(
    name: impl Into<String>,
    body: impl FnOnce(&mut C) -> Outcome + 'a,
) -> Test<'a, C> {
    Test {
        name: name.into(),
        body: Box::new(body),
    }
}

/// Runs the tests of one binary and reports them in TAP.
pub struct Harness {
    planned: usize,
    run: usize,
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Harness {
    /// Starts the report of `planned` tests.
    pub fn new(planned: usize) -> Self {
        println!("TAP version 13");
        println!("1..{planned}");
        Harness {
            planned,
            run: 0,
            passed: 0,
            failed: 0,
            skipped: 0,
        }
    }

    /// Prints a diagnostic line.
    pub fn diag(&self, msg: impl Display) {
        diag(msg);
    }

    /// Runs one test and reports its outcome.
    pub fn test(&mut self, name: &str, f: impl FnOnce() -> Outcome) {
        self.run += 1;
        let n = self.run;
        OBSERVED.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // Whatever ran between tests (set-up in main) is not this test's trace.
        TRACE.lock().unwrap_or_else(|e| e.into_inner()).take();
        match f() {
            Ok(()) => {
                self.passed += 1;
                println!("ok {n} {name}");
            }
            Err(Failure::Skip(why)) => {
                self.skipped += 1;
                println!("ok {n} {name} # SKIP {why}");
            }
            Err(Failure::Fail(why)) => {
                self.failed += 1;
                for line in why.lines() {
                    println!("# {name}: {line}");
                }
                println!("not ok {n} {name}");
            }
        }
        flush_observations();
    }

    /// Runs a program's table of tests in order, each with the context `ctx`, and reports them:
    /// the plan is the table's length, so it cannot drift from the tests. Prints the totals and
    /// exits as [`Harness::finish`].
    pub fn run_table<C>(ctx: &mut C, tests: Vec<Test<'_, C>>) -> ! {
        let mut t = Harness::new(tests.len());
        for Test { name, body } in tests {
            t.test(&name, || body(ctx));
        }
        t.finish()
    }

    /// Reports a program that cannot run here at all: a plan of one test, `name`, skipped with
    /// reason `why` (not kselftest's `1..0 # SKIP`: scripts/tapsum counts a program without test
    /// lines as failed), then the totals; exits 4 (all skipped).
    pub fn skip_all(name: &str, why: &str) -> ! {
        let mut t = Harness::new(1);
        t.test(name, || Err(Failure::Skip(why.to_string())));
        t.finish()
    }

    /// Reports a program whose device did not open: a plan of one test, `open_device`, failed
    /// with `why`, then the totals; exits 1.
    pub fn open_failed(why: impl Display) -> ! {
        let mut t = Harness::new(1);
        t.test("open_device", || Err(Failure::Fail(why.to_string())));
        t.finish()
    }

    /// Prints the totals and exits with the kselftest status.
    pub fn finish(self) -> ! {
        let missing = self.planned.saturating_sub(self.run);
        println!(
            "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:{}",
            self.passed, self.failed, self.skipped, missing
        );
        let status = if self.failed > 0 || missing > 0 || self.run > self.planned {
            1
        } else if self.passed == 0 && self.skipped > 0 {
            4
        } else {
            0
        };
        std::process::exit(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq_fails() -> Outcome {
        let two = 2;
        crate::check_eq!(1 + 1, two + 1, "the sum");
        Ok(())
    }

    fn cond_fails() -> Outcome {
        let v = [1, 2];
        crate::check!(v.len() > 2, "{} entries", v.len());
        Ok(())
    }

    fn message(outcome: Outcome) -> String {
        match outcome {
            Err(Failure::Fail(m)) => m,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn check_eq_names_the_values_the_expressions_and_the_place() {
        let m = message(eq_fails());
        assert!(m.starts_with("the sum: got 0x2, expected 0x3 ("), "{m}");
        assert!(m.contains("src/tap.rs:"), "{m}");
        assert!(m.ends_with(": `1 + 1 == two + 1`)"), "{m}");
    }

    #[test]
    fn check_names_the_condition_and_the_place() {
        let m = message(cond_fails());
        assert!(m.starts_with("2 entries (src/tap.rs:"), "{m}");
        assert!(m.ends_with(": `v.len() > 2`)"), "{m}");
    }

    #[test]
    fn checks_that_hold_pass() {
        let check = || -> Outcome {
            crate::check_eq!(2 + 2, 4, "sum");
            crate::check!(1 < 2, "order");
            Ok(())
        };
        assert!(check().is_ok());
    }

    #[test]
    fn a_table_keeps_its_order_and_gives_each_test_the_context() {
        let tests: Vec<Test<'_, Vec<&str>>> = vec![
            test("first", |seen: &mut Vec<&str>| {
                seen.push("first");
                Ok(())
            }),
            test("second", |seen: &mut Vec<&str>| {
                seen.push("second");
                Err(Failure::Skip("not here".into()))
            }),
        ];
        assert_eq!(tests.len(), 2);
        let mut seen = Vec::new();
        let names: Vec<String> = tests
            .into_iter()
            .map(|t| {
                let _ = (t.body)(&mut seen);
                t.name
            })
            .collect();
        assert_eq!(names, ["first", "second"]);
        assert_eq!(seen, ["first", "second"]);
    }
}
