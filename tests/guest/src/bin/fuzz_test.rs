// SPDX-License-Identifier: GPL-2.0

//! A seeded fuzzer of the device fd, as a hostile VMM would use it: reads and writes of random
//! regions at offsets around the region boundaries (`index << 40`, the BAR size, memlength, and
//! the end of the file offset range), mmaps with random offsets, lengths, protections and flags
//! followed by touches, VFIO ioctls with random `argsz` and payloads, config-space writes
//! anywhere, Memory Space Enable toggles, resets and reopens, all interleaved.
//!
//! Every result is checked against a model: the region layout from src/layout.rs (through
//! [`expected_regions`]), the rig's GPU (tests/gpu-model: BAR0 16 MiB, zero except the ready
//! status registers, 4 KiB of config space) and the rules the upstream driver and vfio-pci-core
//! follow (drivers/vfio/pci/nvgrace-gpu/main.c, vfio_pci_core.c, vfio_pci_rdwr.c,
//! vfio_pci_config.c, mm/mmap.c; cited where used). The model tracks what a result depends on:
//! Memory Space Enable, a readiness check pending after a reset, low-power entry, and the bytes
//! of GPU memory written or read so far. The deliberate differences
//! (tests/guest/src/differences.rs) are expected per build; the random choices depend only on
//! the seed, never on results, so both builds see the same operations.
//!
//! The operations run in batches; after each batch the kernel log is checked for new splats
//! (WARN, BUG, lockdep, KASAN, ...). Results are reported per kind of operation, with the seed,
//! the bounds and the first failures (iteration numbers) in the TAP diagnostics.
//!
//! ```text
//! fuzz_test [--seed N] [--iterations N] [--seconds N] [--batch N] [--long] [--trace]
//! ```
//!
//! The run stops after `--iterations` operations or `--seconds`, whichever comes first; `--long`
//! raises both bounds for soak runs (`make check` runs the defaults). A failure at iteration `i`
//! is reproduced by the same seed with `--iterations i+1` (operation `i` depends only on the
//! seed and `i`; the state it meets depends on the operations before it).
//!
//! The generator, the model and the executor are library modules (tests/guest/src/fuzz/); this
//! program parses its arguments, runs the batches and reports.

use std::time::Duration;

use nvgrace_guest_tests::differences;
use nvgrace_guest_tests::expected_regions;
use nvgrace_guest_tests::fuzz::exec::Cat;
use nvgrace_guest_tests::fuzz::exec::Fuzzer;
use nvgrace_guest_tests::fuzz::exec::CATS;
use nvgrace_guest_tests::fuzz::gen::gen_op;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::sys;
use nvgrace_guest_tests::tap;
use nvgrace_guest_tests::tap::Failure;
use nvgrace_guest_tests::tap::Harness;

/// The default seed (any value works; a fixed one keeps `make check` reproducible).
const DEFAULT_SEED: u64 = 0x6e76_6772_6163_6501;
/// Default bounds: about 25 s of guest time per driver build under TCG (measured: 5000
/// operations in 37-39 s).
const DEFAULT_ITERATIONS: u64 = 3000;
const DEFAULT_SECONDS: u64 = 45;
/// `--long` bounds: ten minutes fit in vm-run's default 900 s bound on a boot, with the boot's
/// other programs (~110 operations a second under TCG without debug options).
const LONG_ITERATIONS: u64 = 100_000;
const LONG_SECONDS: u64 = 600;
/// Operations between two kernel-log checks.
const DEFAULT_BATCH: u64 = 100;

struct Args {
    seed: u64,
    iterations: u64,
    seconds: u64,
    batch: u64,
    /// Print every operation (to reproduce a failure by hand).
    trace: bool,
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seed: DEFAULT_SEED,
        iterations: DEFAULT_ITERATIONS,
        seconds: DEFAULT_SECONDS,
        batch: DEFAULT_BATCH,
        trace: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .and_then(|v| parse_u64(&v))
                .ok_or(format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--seed" => a.seed = value("--seed")?,
            "--iterations" => a.iterations = value("--iterations")?,
            "--seconds" => a.seconds = value("--seconds")?,
            "--batch" => a.batch = value("--batch")?.max(1),
            "--trace" => a.trace = true,
            "--long" => {
                a.iterations = LONG_ITERATIONS;
                a.seconds = LONG_SECONDS;
            }
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    Ok(a)
}

/// What the batches left for the tests to report.
struct Ran {
    /// The fuzzer, until the device-usable test closes it.
    f: Option<Fuzzer>,
    /// Why the fuzzer stopped early, if it did.
    error: Option<String>,
    /// Kernel-log splats that appeared during the batches.
    new_splats: Vec<String>,
    seed: u64,
    /// Whether every iteration ran (the time bound did not cut the run).
    complete: bool,
}

impl Ran {
    /// The test of one kind of operation: its unexpected results.
    fn category(&self, cat: Cat, name: &str) -> tap::Outcome {
        // What this kind of operation returned (fuzz::exec::Fuzzer::note): the same seed must
        // give the same on both builds. Only a run of every iteration is comparable: one that
        // the time bound cut depends on the machine's speed.
        if let Some(f) = &self.f {
            let (n, digest) = f.digests.get(name).copied().unwrap_or_default();
            if self.complete {
                tap::observe("results", n);
                tap::observe("results_digest", format!("{digest:016x}"));
            } else {
                tap::observe("results_digest", "not compared: the time bound cut the run");
            }
        }
        if let (Some(e), Cat::ReadWrite) = (&self.error, cat) {
            return Err(Failure::Fail(format!("the fuzzer stopped: {e}")));
        }
        match self.f.as_ref().and_then(|f| f.failures.get(name)) {
            None => Ok(()),
            Some((n, msgs)) => Err(Failure::Fail(format!(
                "{n} unexpected results (seed {:#x}); the first:\n{}",
                self.seed,
                msgs.join("\n")
            ))),
        }
    }

    fn no_new_splat(&self) -> tap::Outcome {
        if self.new_splats.is_empty() {
            Ok(())
        } else {
            Err(Failure::Fail(format!(
                "the kernel log reported (seed {:#x}):\n{}",
                self.seed,
                self.new_splats.join("\n")
            )))
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuzz_test: {e}\nusage: fuzz_test [--seed N] [--iterations N] [--seconds N] [--batch N] [--long] [--trace]");
            std::process::exit(2);
        }
    };
    tap::diag(format!(
        "fuzz: seed {:#x}, at most {} operations and {} s, kernel log checked every {} operations; driver build {}, GPU {}",
        args.seed,
        args.iterations,
        args.seconds,
        args.batch,
        nvgrace_guest_tests::rig_driver(),
        nvgrace_guest_tests::rig_gpu()
    ));
    tap::diag(format!(
        "fuzz: reproduce with: fuzz_test --seed {:#x} --iterations N (N: the failing iteration + 1)",
        args.seed
    ));
    let Some((usemem, resmem)) = expected_regions() else {
        println!("1..0 # SKIP no GPU memory described to the driver");
        std::process::exit(4);
    };
    let Some(build) = differences::build() else {
        Harness::skip_all("fuzz", "no driver bound (RIG_DRIVER)");
    };
    let mut f = match Fuzzer::new(usemem, resmem, build, args.trace) {
        Ok(f) => f,
        Err(e) => {
            println!("Bail out! cannot set up: {e}");
            std::process::exit(1);
        }
    };
    let splats_before = sys::splats().map(|s| s.len()).unwrap_or(0);
    let mut new_splats: Vec<String> = Vec::new();
    let start = mm::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut ran = 0;
    let mut batches = 0;
    let mut error = None;
    while ran < args.iterations && mm::now() < deadline {
        let end = (ran + args.batch).min(args.iterations);
        while ran < end && mm::now() < deadline {
            let i = ran;
            let op = gen_op(args.seed, i, &f.layout);
            if args.trace {
                tap::diag(format!("op {i}: {} (state {:?})", op.describe(), f.state));
            }
            if let Err(e) = f.run(i, &op) {
                error = Some(format!("iteration {i}: {}: {e}", op.describe()));
                break;
            }
            if args.trace {
                let noted = std::mem::take(&mut f.noted).join(" ");
                tap::diag(format!("op {i}: {noted}, digest {:016x}", f.digest));
            }
            ran += 1;
        }
        batches += 1;
        match sys::splats() {
            Ok(s) if s.len() > splats_before + new_splats.len() => {
                let fresh: Vec<String> = s[splats_before + new_splats.len()..].to_vec();
                tap::diag(format!("fuzz: kernel splat after iteration {ran}:"));
                for l in &fresh {
                    tap::diag(format!("  {l}"));
                }
                new_splats.extend(fresh);
            }
            Ok(_) => {}
            // Batches left unchecked would pass for clean ones: stop here.
            Err(e) => {
                new_splats.push(format!("after iteration {ran}: {e}"));
                break;
            }
        }
        if error.is_some() {
            break;
        }
    }
    let took = mm::now() - start;
    let mut counts: Vec<_> = f.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    counts.sort();
    tap::diag(format!(
        "fuzz: {ran} operations in {batches} batches, {took:.1?}: {}; results digest {:016x}",
        counts.join(", "),
        f.digest
    ));
    let mut ran = Ran {
        f: Some(f),
        error,
        new_splats,
        seed: args.seed,
        complete: ran == args.iterations,
    };
    let mut tests = Vec::new();
    for (cat, name) in CATS {
        tests.push(tap::test(name, move |r: &mut Ran| r.category(cat, name)));
    }
    tests.push(tap::test("no_splat_after_any_batch", |r: &mut Ran| {
        r.no_new_splat()
    }));
    tests.push(tap::test("device_usable_after_fuzzing", |r: &mut Ran| {
        let outcome = r.f.as_mut().map_or(Ok(()), Fuzzer::usable_after);
        // Closed before the last check, which reads the kernel log of the whole run.
        r.f = None;
        outcome
    }));
    tests.push(tap::test("no_kernel_splat", |_: &mut Ran| {
        sys::no_kernel_splat()
    }));
    Harness::run_table(&mut ran, tests)
}
