// SPDX-License-Identifier: GPL-2.0

//! The host side of `make bench`: reads the console logs of the guest runs (`nvgrace-bench`
//! under `scripts/vm-run`, one log per boot, any number of rounds), sets each metric of the Rust
//! driver against the upstream driver's, writes the JSON file and prints the table.
//!
//! ```text
//! bench-report --out FILE [--meta KEY=VALUE]... LOG...
//! ```
//!
//! Samples of the same driver and metric from several boots (rounds) are pooled. The ratio is
//! upstream time / Rust time of the medians (for rates: Rust rate / upstream rate), so above 1
//! means the Rust driver is faster; for the `ready_overhead_*` metrics it is upstream overhead /
//! Rust overhead. Exits non-zero when a log has errors or a metric lacks one driver's figures,
//! after writing what there is.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use nvgrace_bench::summary;
use nvgrace_bench::BenchError;
use nvgrace_bench::Better;
use nvgrace_bench::Env;
use nvgrace_bench::Line;
use nvgrace_bench::Summary;
use serde::Serialize;
use serde_json::Map;
use serde_json::Value;

/// The two builds, in the order the table shows them.
const DRIVERS: [&str; 2] = ["rust", "upstream"];

/// One driver's figures for a metric.
#[derive(Default, Serialize)]
struct Figures {
    #[serde(flatten)]
    summary: Option<Summary>,
    /// Every sample, in the order measured (rounds one after the other).
    samples: Vec<f64>,
    /// Per-repetition details, if the metric has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    per_rep: Vec<Value>,
}

/// One metric with both drivers' figures.
#[derive(Serialize)]
struct Metric {
    name: String,
    group: String,
    suite: String,
    unit: String,
    better: Better,
    what: String,
    rust: Figures,
    upstream: Figures,
    /// Upstream time / Rust time of the medians: above 1, the Rust driver is faster.
    ratio: Option<f64>,
    /// The same of the best samples (the least disturbed on a shared host).
    ratio_best: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    /// What the script recorded about the host and the command.
    meta: Map<String, Value>,
    /// Which ratio is which.
    ratio_definition: &'static str,
    /// One entry per guest boot.
    guests: Vec<Env>,
    metrics: Vec<Metric>,
    /// Metrics that could not be measured.
    errors: Vec<BenchError>,
}

fn usage() -> ! {
    eprintln!("usage: bench-report --out FILE [--meta KEY=VALUE]... LOG...");
    std::process::exit(2);
}

/// Three significant digits, without exponent for the values this shows.
fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

fn cell(f: &Figures) -> String {
    match &f.summary {
        Some(s) => format!("{} / **{}** / {}", num(s.min), num(s.median), num(s.max)),
        None => "missing".into(),
    }
}

/// A per-repetition detail: counts as integers, times with three significant digits.
fn detail(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        num(v)
    }
}

/// The distinct values of `key` over the per-repetition details, as "a" or "a-b".
fn per_rep_range(f: &Figures, key: &str) -> String {
    let vals: Vec<f64> = f
        .per_rep
        .iter()
        .filter_map(|v| v.get(key).and_then(Value::as_f64))
        .collect();
    if vals.is_empty() {
        return "-".into();
    }
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo == hi {
        detail(lo)
    } else {
        format!("{}-{}", detail(lo), detail(hi))
    }
}

fn entries(f: &Figures) -> String {
    ["pud", "pmd", "pte"]
        .iter()
        .map(|k| per_rep_range(f, k))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn table(r: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "min / **median** / max over all repetitions; ratio = upstream time / Rust time of the medians \
         (>1: Rust faster; ready_overhead_*: upstream overhead / Rust overhead)\n"
    );
    let _ = writeln!(
        t,
        "| group | metric | unit | Rust | upstream | ratio | ratio of best |\n|---|---|---|---|---|---|---|"
    );
    let fmt = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
    for m in &r.metrics {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} |",
            m.group,
            m.name,
            m.unit,
            cell(&m.rust),
            cell(&m.upstream),
            fmt(m.ratio),
            fmt(m.ratio_best)
        );
    }
    // The ceiling does not involve the driver: its ratios show how far apart two boots of the
    // same guest measure on this host.
    let ceiling: Vec<f64> = r
        .metrics
        .iter()
        .filter(|m| m.group == "ceiling")
        .filter_map(|m| m.ratio)
        .collect();
    if let Some(s) = summary(&ceiling) {
        let _ = writeln!(
            t,
            "\nNoise floor: the ceiling runs the same code for both drivers; its ratios span {:.2} to {:.2} \
             (median {:.2}). A driver ratio inside that span is not a measured difference.",
            s.min, s.max, s.median
        );
    }
    let faults: Vec<&Metric> = r
        .metrics
        .iter()
        .filter(|m| m.group == "fault-in" || m.name.starts_with("ceiling_fault"))
        .collect();
    if !faults.is_empty() {
        let _ = writeln!(
            t,
            "\nFaults per repetition (ru_minflt) and the entries mapping the range afterwards \
             (PUD / PMD / PTE, from the kernel's page-table dump):\n"
        );
        let _ = writeln!(
            t,
            "| metric | Rust faults | Rust PUD / PMD / PTE | upstream faults | upstream PUD / PMD / PTE |\n|---|---|---|---|---|"
        );
        for m in faults {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} |",
                m.name,
                per_rep_range(&m.rust, "faults"),
                entries(&m.rust),
                per_rep_range(&m.upstream, "faults"),
                entries(&m.upstream)
            );
        }
    }
    let ready: Vec<&Metric> = r
        .metrics
        .iter()
        .filter(|m| m.name.starts_with("ready_reset_to_read"))
        .collect();
    if !ready.is_empty() {
        let _ = writeln!(
            t,
            "\nReadiness polls per reset (C2C status reads in the model's access log) and the reset ioctl's duration (ms):\n"
        );
        let _ = writeln!(
            t,
            "| metric | Rust polls | Rust reset ioctl | upstream polls | upstream reset ioctl |\n|---|---|---|---|---|"
        );
        for m in ready {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} |",
                m.name,
                per_rep_range(&m.rust, "polls"),
                per_rep_range(&m.rust, "reset_ioctl_ms"),
                per_rep_range(&m.upstream, "polls"),
                per_rep_range(&m.upstream, "reset_ioctl_ms")
            );
        }
    }
    for e in &r.errors {
        let _ = writeln!(t, "\nNOT MEASURED: {} ({}): {}", e.metric, e.suite, e.error);
    }
    t
}

fn main() {
    let mut out = None;
    let mut meta = Map::new();
    let mut logs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = Some(args.next().unwrap_or_else(|| usage())),
            "--meta" => {
                let kv = args.next().unwrap_or_else(|| usage());
                let (k, v) = kv.split_once('=').unwrap_or_else(|| usage());
                meta.insert(k.into(), Value::String(v.into()));
            }
            _ if a.starts_with('-') => usage(),
            _ => logs.push(a),
        }
    }
    let Some(out) = out else { usage() };
    if logs.is_empty() {
        usage();
    }

    let mut guests = Vec::new();
    let mut errors = Vec::new();
    let mut order: Vec<String> = Vec::new();
    let mut metrics: BTreeMap<String, Metric> = BTreeMap::new();
    for path in &logs {
        let text = match std::fs::read(path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                eprintln!("bench-report: {path}: {e}");
                std::process::exit(1);
            }
        };
        let mut driver = None;
        for line in text.lines() {
            match Line::parse(line) {
                Some(Line::Env(e)) => {
                    driver = Some(e.driver.clone());
                    guests.push(e);
                }
                Some(Line::Error(e)) => errors.push(e),
                Some(Line::Record(r)) => {
                    let Some(d) = r.driver.as_deref().or(driver.as_deref()) else {
                        eprintln!("bench-report: {path}: a record before the environment line");
                        continue;
                    };
                    if !DRIVERS.contains(&d) {
                        eprintln!("bench-report: {path}: unknown driver {d}");
                        continue;
                    }
                    let m = metrics.entry(r.metric.clone()).or_insert_with(|| {
                        order.push(r.metric.clone());
                        Metric {
                            name: r.metric.clone(),
                            group: r.group.clone(),
                            suite: r.suite.clone(),
                            unit: r.unit.clone(),
                            better: r.better,
                            what: r.what.clone(),
                            rust: Figures::default(),
                            upstream: Figures::default(),
                            ratio: None,
                            ratio_best: None,
                        }
                    });
                    let f = if d == "rust" {
                        &mut m.rust
                    } else {
                        &mut m.upstream
                    };
                    f.samples.extend(r.samples);
                    f.per_rep.extend(r.per_rep);
                }
                None => {}
            }
        }
    }

    let mut incomplete = false;
    let mut list = Vec::new();
    for name in order {
        let mut m = metrics
            .remove(&name)
            .expect("every ordered metric was inserted");
        m.rust.summary = summary(&m.rust.samples);
        m.upstream.summary = summary(&m.upstream.samples);
        m.ratio = match (&m.rust.summary, &m.upstream.summary) {
            (Some(r), Some(u)) => nvgrace_bench::ratio(m.better, r.median, u.median),
            _ => {
                incomplete = true;
                None
            }
        };
        // Best: the highest rate, the lowest time.
        let best = |s: &Summary| match m.better {
            Better::Higher => s.max,
            Better::Lower => s.min,
        };
        m.ratio_best = match (&m.rust.summary, &m.upstream.summary) {
            (Some(r), Some(u)) => nvgrace_bench::ratio(m.better, best(r), best(u)),
            _ => None,
        };
        list.push(m);
    }
    let report = Report {
        meta,
        ratio_definition: "upstream time / Rust time of the medians (for GiB/s: Rust / upstream); \
                           ready_overhead_*: upstream overhead / Rust overhead; above 1: Rust faster; \
                           ratio_best: the same of the best samples (lowest time, highest rate)",
        guests,
        metrics: list,
        errors,
    };
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    if let Err(e) = std::fs::write(&out, json + "\n") {
        eprintln!("bench-report: {out}: {e}");
        std::process::exit(1);
    }
    print!("{}", table(&report));
    if incomplete || !report.errors.is_empty() {
        std::process::exit(1);
    }
}
