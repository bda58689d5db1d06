// SPDX-License-Identifier: GPL-2.0

//! A TAP 13 harness in the kselftest format (tools/testing/selftests/kselftest.h): a plan line,
//! one `ok`/`not ok` line per test with `# SKIP reason` for skips, `# ` diagnostics, and a totals
//! line. The exit status follows kselftest: 0 all passed, 1 any failure, 4 all skipped.

use std::fmt::Display;

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

/// Fails the test unless the two values are equal, naming both.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr, $($what:tt)*) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            $crate::fail!("{}: got {:#x?}, expected {:#x?}", format!($($what)*), l, r);
        }
    }};
}

/// Fails the test unless the condition holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($what:tt)*) => {
        if !$cond {
            $crate::fail!($($what)*);
        }
    };
}

/// Prints a diagnostic line, also from inside a running test.
pub fn diag(msg: impl Display) {
    for line in msg.to_string().lines() {
        println!("# {line}");
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
    }

    /// Reports a program that cannot run here at all: a plan of one test, `name`, skipped with
    /// reason `why` (not kselftest's `1..0 # SKIP`: scripts/tapsum counts a program without test
    /// lines as failed), then the totals; exits 4 (all skipped).
    pub fn skip_all(name: &str, why: &str) -> ! {
        let mut t = Harness::new(1);
        t.test(name, || Err(Failure::Skip(why.to_string())));
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
