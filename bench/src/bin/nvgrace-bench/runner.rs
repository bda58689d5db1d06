// SPDX-License-Identifier: GPL-2.0

//! The run: metrics, their steps and the loop that binds each build in turn and measures them.

use std::collections::BTreeMap;
use std::error::Error;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::Command;

use nvgrace_bench::BenchError;
use nvgrace_bench::Better;
use nvgrace_bench::Record;
use nvgrace_bench::Skipped;
use nvgrace_bench::ERROR_TAG;
use nvgrace_bench::RECORD_TAG;
use nvgrace_bench::SKIP_TAG;
use nvgrace_guest_tests::gpumem::GpuMem;
use nvgrace_guest_tests::gpumem::GpuMemExt;
use nvgrace_guest_tests::mm;
use nvgrace_guest_tests::mm::page_size;
use nvgrace_guest_tests::vfio::Device;
use nvgrace_guest_tests::GPU_BDF;
use serde_json::Value;


use crate::steps::Anon;
use crate::steps::*;

pub(crate) type R<T> = Result<T, Box<dyn Error>>;

/// What one metric is, for its record.
pub(crate) struct Metric {
    pub(crate) name: String,
    pub(crate) group: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
    pub(crate) what: String,
}

pub(crate) fn rate(name: impl Into<String>, group: &'static str, what: impl Into<String>) -> Metric {
    Metric {
        name: name.into(),
        group,
        unit: "GiB/s",
        better: Better::Higher,
        what: what.into(),
    }
}

pub(crate) fn time(
    name: impl Into<String>,
    group: &'static str,
    unit: &'static str,
    what: impl Into<String>,
) -> Metric {
    Metric {
        name: name.into(),
        group,
        unit,
        better: Better::Lower,
        what: what.into(),
    }
}

/// The device opened through the bound build, with its GPU memory regions.
pub(crate) struct Open {
    pub(crate) dev: Device,
    pub(crate) usemem: GpuMem,
    pub(crate) resmem: Option<GpuMem>,
}

impl Open {
    pub(crate) fn new() -> R<Open> {
        let dev = Device::open_iommufd(GPU_BDF)?;
        let (usemem, resmem) = dev.gpu_mem()?;
        Ok(Open {
            dev,
            usemem,
            resmem,
        })
    }
}

/// What a group of metrics needs while it runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    /// The device open ([`Open`]).
    Device,
    /// The device closed (open/close and unbind/bind measure it themselves).
    Closed,
}

/// Buffers and files the metrics share, made once.
pub(crate) struct Scratch {
    /// The user buffer of the read/write runs, 1 MiB, page-aligned, faulted in.
    pub(crate) buf: Anon,
    /// The memcpy ceiling's source and destination, [`USEMEM_RW_WINDOW`] bytes, faulted in.
    pub(crate) window: Anon,
    /// The tmpfs ceiling's file, [`USEMEM_RW_WINDOW`] bytes, unlinked.
    pub(crate) tmpfs: File,
}

impl Scratch {
    pub(crate) fn new() -> R<Scratch> {
        let mut buf = Anon::new(MIB, page_size(), false)?;
        buf.slice().fill(0x5a);
        let mut window = Anon::new(USEMEM_RW_WINDOW, mm::pmd_size(), true)?;
        window.slice().fill(0xa5);
        let path = "/tmp/nvgrace-bench.ceiling";
        let tmpfs = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        std::fs::remove_file(path)?;
        for pos in (0..USEMEM_RW_WINDOW).step_by(MIB) {
            tmpfs.write_all_at(buf.slice(), pos as u64)?;
        }
        Ok(Scratch { buf, window, tmpfs })
    }
}

/// One repetition of a metric: a sample and its details (or `Value::Null`).
pub(crate) type Step<'a> = Box<dyn FnMut(&mut Scratch, Option<&Open>) -> R<(f64, Value)> + 'a>;

/// Per driver build: the samples and details of a metric.
pub(crate) type ByDriver = BTreeMap<String, (Vec<f64>, Vec<Value>)>;

/// The open device a step needs.
pub(crate) fn need(o: Option<&Open>) -> R<&Open> {
    o.ok_or_else(|| "the device is not open".into())
}

/// The run: its settings, the bound build and the open device, and whether anything failed.
pub(crate) struct Bench {
    pub(crate) suite: String,
    pub(crate) reps: usize,
    pub(crate) warmup: usize,
    pub(crate) passes: usize,
    /// The builds to measure, in the first pass's order.
    pub(crate) drivers: Vec<String>,
    /// Whether this program binds the builds (`--switch`) or vm-run bound the only one.
    pub(crate) switch: bool,
    pub(crate) bound: Option<String>,
    pub(crate) open: Option<Open>,
    pub(crate) errors: usize,
    /// The boot runs under `-icount` (scripts/vm-run `--icount`): samples are converted to guest
    /// instructions per operation ([`to_count`]) and the metrics renamed `<name>_insns`.
    pub(crate) icount: bool,
}

/// A sample measured under `-icount shift=0`, where one ns of guest time is one guest
/// instruction (QEMU's docs of `-icount`), as instructions per operation: per call for the
/// latencies (µs, ms per call), per page of data for the rates (GiB/s over pages of
/// `page_size()` bytes). `None` for a unit with no such reading.
pub(crate) fn to_count(unit: &str, sample: f64) -> Option<(&'static str, f64)> {
    match unit {
        "us" => Some(("insns/op", sample * 1e3)),
        "ms" => Some(("insns/op", sample * 1e6)),
        "GiB/s" if sample > 0.0 => Some((
            "insns/page",
            page_size() as f64 / (sample * GIB) * 1e9,
        )),
        _ => None,
    }
}

impl Bench {
    /// Binds `driver` (when switching) and opens or closes the device as `needs` says.
    pub(crate) fn ensure(&mut self, driver: &str, needs: Needs) -> R<Option<&Open>> {
        if self.bound.as_deref() != Some(driver) {
            self.open = None;
            if self.switch {
                // rig-unbind: unbind, clear driver_override, rmmod; rig-bind: insmod, bind
                // through driver_override (scripts/guest/rig-bind).
                let _ = Command::new("rig-unbind").status();
                self.bound = None;
                let s = Command::new("rig-bind").arg(driver).status()?;
                if !s.success() {
                    return Err(format!("rig-bind {driver}: {s}").into());
                }
            }
            self.bound = Some(driver.to_string());
        }
        match needs {
            Needs::Closed => {
                self.open = None;
                Ok(None)
            }
            Needs::Device => {
                if self.open.is_none() {
                    self.open = Some(Open::new()?);
                }
                Ok(self.open.as_ref())
            }
        }
    }

    /// Repetitions of pass `pass`: `reps` spread over the passes.
    pub(crate) fn reps_in_pass(&self, pass: usize) -> usize {
        self.reps / self.passes + usize::from(pass < self.reps % self.passes)
    }

    /// Measures a group of metrics: in each pass, for each build in the pass's order, binds it,
    /// then for each metric runs its step `warmup` times unmeasured and its share of `reps`
    /// measured. Returns each metric with its samples per build; a metric whose step failed is
    /// reported and left out.
    pub(crate) fn group(
        &mut self,
        needs: Needs,
        scratch: &mut Scratch,
        steps: Vec<(Metric, Step<'_>)>,
    ) -> Vec<(Metric, ByDriver)> {
        let mut steps: Vec<(Metric, Step<'_>, ByDriver, bool)> = steps
            .into_iter()
            .map(|(m, s)| (m, s, ByDriver::new(), false))
            .collect();
        for pass in 0..self.passes {
            let mut order = self.drivers.clone();
            if pass % 2 == 1 {
                order.reverse();
            }
            let n = self.reps_in_pass(pass);
            if n == 0 {
                continue;
            }
            for driver in order {
                let (warmup, switch) = (self.warmup, self.switch);
                let open = match self.ensure(&driver, needs) {
                    Ok(o) => o,
                    Err(e) => {
                        let what = if switch { "binding" } else { "opening" };
                        let e: Box<dyn Error> = format!("{what} {driver}: {e}").into();
                        self.error(&format!("{}_group", steps[0].0.name), &*e);
                        return Vec::new();
                    }
                };
                let mut failed = Vec::new();
                for (m, step, by, dead) in steps.iter_mut() {
                    if *dead {
                        continue;
                    }
                    let samples = by.entry(driver.clone()).or_default();
                    let r = (|| -> R<()> {
                        for _ in 0..warmup {
                            step(scratch, open)?;
                        }
                        for _ in 0..n {
                            let (v, x) = step(scratch, open)?;
                            samples.0.push(v);
                            if !x.is_null() {
                                samples.1.push(x);
                            }
                        }
                        Ok(())
                    })();
                    if let Err(e) = r {
                        *dead = true;
                        failed.push((m.name.clone(), format!("{driver}: {e}")));
                    }
                }
                for (name, e) in failed {
                    let e: Box<dyn Error> = e.into();
                    self.error(&name, &*e);
                }
            }
        }
        steps
            .into_iter()
            .filter(|s| !s.3)
            .map(|(m, _, by, _)| (m, by))
            .collect()
    }

    /// Measures a group and prints its records.
    pub(crate) fn run(&mut self, needs: Needs, scratch: &mut Scratch, steps: Vec<(Metric, Step<'_>)>) {
        for (m, by) in self.group(needs, scratch, steps) {
            self.emit_all(&m, by);
        }
    }

    pub(crate) fn emit_all(&self, m: &Metric, by: ByDriver) {
        for (driver, (samples, per_rep)) in by {
            self.emit(m, &driver, samples, per_rep);
        }
    }

    pub(crate) fn emit(&self, m: &Metric, driver: &str, samples: Vec<f64>, per_rep: Vec<Value>) {
        if self.icount {
            let counts: Option<Vec<(&str, f64)>> =
                samples.iter().map(|&v| to_count(m.unit, v)).collect();
            let Some(counts) = counts.filter(|c| !c.is_empty()) else {
                return;
            };
            let unit = counts[0].0;
            let c = Metric {
                name: format!("{}_insns", m.name),
                group: "counts",
                unit,
                better: Better::Lower,
                what: format!("guest instructions (-icount shift=0) per operation of: {}", m.what),
            };
            return self.emit_plain(&c, driver, counts.iter().map(|c| c.1).collect(), per_rep);
        }
        self.emit_plain(m, driver, samples, per_rep)
    }

    fn emit_plain(&self, m: &Metric, driver: &str, samples: Vec<f64>, per_rep: Vec<Value>) {
        if let Some(s) = nvgrace_bench::summary(&samples) {
            println!(
                "# {:<30} {:<8} {:>10.4} {:>10.4} {:>10.4} {}",
                m.name, driver, s.min, s.median, s.max, m.unit
            );
        }
        let r = Record {
            suite: self.suite.clone(),
            driver: Some(driver.to_string()),
            metric: m.name.clone(),
            group: m.group.into(),
            unit: m.unit.into(),
            better: m.better,
            what: m.what.clone(),
            samples,
            per_rep,
        };
        println!(
            "{RECORD_TAG}{}",
            serde_json::to_string(&r).expect("records serialise")
        );
    }

    /// Leaves `metric` out on this guest, by design (its kernel or architecture lacks what it
    /// measures): says why on the console, and in a [`SKIP_TAG`] line for the report. Not an
    /// error. Under `--icount` the name is the count's (`<metric>_insns`).
    pub(crate) fn skip(&self, metric: &str, reason: &str) {
        let metric = if self.icount {
            format!("{metric}_insns")
        } else {
            metric.to_string()
        };
        println!("# left out: {metric}: {reason}");
        let s = Skipped {
            suite: self.suite.clone(),
            metric,
            reason: reason.into(),
        };
        println!(
            "{SKIP_TAG}{}",
            serde_json::to_string(&s).expect("skipped metrics serialise")
        );
    }

    pub(crate) fn error(&mut self, metric: &str, e: &dyn Error) {
        self.errors += 1;
        let r = BenchError {
            suite: self.suite.clone(),
            metric: metric.into(),
            error: e.to_string(),
        };
        println!(
            "{ERROR_TAG}{}",
            serde_json::to_string(&r).expect("errors serialise")
        );
    }
}

