// SPDX-License-Identifier: GPL-2.0

//! The host side of `make bench`: reads the console logs of the guest runs (`nvgrace-bench`
//! under `scripts/vm-run`, one log per boot, any number of rounds), sets each metric of the Rust
//! driver against the upstream driver's, writes the JSON file and prints the table.
//!
//! ```text
//! bench-report --out FILE [--plot DIR] [--meta KEY=VALUE]... LOG...
//! ```
//!
//! `--plot DIR`: the readiness sweep (suite `readiness`), if the logs have it, drawn as
//! DIR/readiness-sweep.png (the BAR0 path) and DIR/readiness-sweep-cxl.png (the CXL path), with
//! the text in DejaVu Sans (`$BENCH_FONT`, default Debian's fonts-dejavu-core file). The sweep's
//! goals are judged, and its plots drawn, on the overhead counted from readiness (FLR + delay,
//! `nvgrace_bench::flr`); its table also shows the one counted from the reset ioctl's start.
//!
//! Samples of the same driver and metric from several boots (rounds) are pooled. The ratio is
//! upstream time / Rust time of the medians (for rates: Rust rate / upstream rate), so above 1
//! means the Rust driver is faster; for the `ready_overhead_*` metrics it is upstream overhead /
//! Rust overhead. Exits non-zero when a log has errors or a metric lacks one driver's figures,
//! after writing what there is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use nvgrace_bench::summary;
use nvgrace_bench::sweep;
use nvgrace_bench::BenchError;
use nvgrace_bench::Better;
use nvgrace_bench::Env;
use nvgrace_bench::Line;
use nvgrace_bench::Skipped;
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
    /// Metrics the guests left out by design (e.g. the PUD runs on arm64), once each.
    skipped: Vec<Skipped>,
}

/// The font of the plots' text when `$BENCH_FONT` is not set (Debian's fonts-dejavu-core).
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The sweeps: metric prefix, PNG name, title.
const SWEEPS: [(&str, &str, &str); 2] = [
    (
        "sweep",
        "readiness-sweep.png",
        "Readiness wait after VFIO_DEVICE_RESET, BAR0 path (GH200 model, QEMU TCG)",
    ),
    (
        "sweep_cxl",
        "readiness-sweep-cxl.png",
        "Readiness wait after VFIO_DEVICE_RESET, CXL DVSEC path (QEMU TCG)",
    ),
];

/// The points of the sweep whose metrics are named `<prefix>_<kind>_<D>ms`, by delay (`kind`:
/// `sweep::FROM_FLR` or `sweep::FROM_IOCTL`).
fn sweep_points(r: &Report, prefix: &str, kind: &str) -> Vec<sweep::Point> {
    let mut v: Vec<sweep::Point> = r
        .metrics
        .iter()
        .filter_map(|m| {
            Some(sweep::Point {
                delay_ms: sweep::delay_of(prefix, kind, &m.name)?,
                rust: m.rust.samples.clone(),
                upstream: m.upstream.samples.clone(),
            })
        })
        .collect();
    v.sort_by(|a, b| a.delay_ms.total_cmp(&b.delay_ms));
    v
}

/// The sweep's table and its goals (`sweep::verdict`), judged on the overhead counted from the
/// FLR (`points`); `old` holds the same delays' overheads counted from the ioctl's start, and
/// `detail(delay, key, driver)` the range of a per-repetition detail of a delay's reset metric
/// (`polls`, `flr_after_ioctl_ms`). Returns the text and whether both goals hold.
fn sweep_table(
    points: &[sweep::Point],
    old: &[sweep::Point],
    detail: &dyn Fn(f64, &str, &str) -> String,
) -> (String, bool) {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Overhead from readiness: first access - max(FLR + delay, end of the reset ioctl), the \
         FLR placed on the guest's clock from the model's log (early by one BAR0 read's travel, \
         so never understated; never before the ioctl's start); the goals are judged on it. From the ioctl: first access - \
         max(delay, reset ioctl) counted from the ioctl's start, which also charges the driver \
         with the FLR's distance from that start (FLR after ioctl start, vfio-pci-core's config \
         saves, not the driver's). Medians of the repetitions; the last four columns give their \
         range.\n"
    );
    let _ = writeln!(
        t,
        "| delay (ms) | Rust overhead from readiness (ms) | goal (ms) | upstream overhead from readiness (ms) \
         | Rust overhead from ioctl (ms) | upstream overhead from ioctl (ms) \
         | Rust FLR after ioctl start (ms) | upstream FLR after ioctl start (ms) | Rust polls | upstream polls |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    let old_median = |delay: f64, f: fn(&sweep::Point) -> &Vec<f64>| {
        old.iter()
            .find(|p| p.delay_ms == delay)
            .map_or("-".into(), |p| num(sweep::median(f(p))))
    };
    for p in points {
        let (r, u) = (sweep::median(&p.rust), sweep::median(&p.upstream));
        let goal = sweep::goal_ms(p.delay_ms);
        let _ = writeln!(
            t,
            "| {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.delay_ms,
            num(r),
            if r <= goal { "" } else { " (over)" },
            num(goal),
            num(u),
            old_median(p.delay_ms, |p| &p.rust),
            old_median(p.delay_ms, |p| &p.upstream),
            detail(p.delay_ms, "flr_after_ioctl_ms", "rust"),
            detail(p.delay_ms, "flr_after_ioctl_ms", "upstream"),
            detail(p.delay_ms, "polls", "rust"),
            detail(p.delay_ms, "polls", "upstream")
        );
    }
    let v = sweep::verdict(points);
    let o = sweep::verdict(old);
    let _ = writeln!(
        t,
        "\nMean of the median overheads from readiness over the sweep: Rust {} ms, upstream {} ms: \
         {:.1} times less (goal: {}). Rust within the goal at {} of {} delays. \
         (From the ioctl: Rust {} ms, upstream {} ms, {:.1} times less, within the goal at {} of {}.)",
        num(v.mean_rust),
        num(v.mean_upstream),
        v.factor,
        sweep::FACTOR_GOAL,
        v.within,
        v.points,
        num(o.mean_rust),
        num(o.mean_upstream),
        o.factor,
        o.within,
        o.points
    );
    (t, v.met())
}

/// Prints the sweeps' tables and, with `plot`, draws them.
fn sweeps(r: &Report, plot: Option<&str>) -> Result<(), String> {
    for (prefix, png, title) in SWEEPS {
        let points = sweep_points(r, prefix, sweep::FROM_FLR);
        let old = sweep_points(r, prefix, sweep::FROM_IOCTL);
        if points.is_empty() {
            if !old.is_empty() {
                println!(
                    "\n{title}: no {prefix}_{}_* metrics (a run before the model logged times): not judged.",
                    sweep::FROM_FLR
                );
            }
            continue;
        }
        let detail = |delay: f64, key: &str, driver: &str| {
            r.metrics
                .iter()
                .find(|m| m.name == format!("{prefix}_reset_to_read_{delay}ms"))
                .map_or("-".into(), |m| {
                    per_rep_range(
                        if driver == "rust" {
                            &m.rust
                        } else {
                            &m.upstream
                        },
                        key,
                    )
                })
        };
        let (text, ok) = sweep_table(&points, &old, &detail);
        println!("\n{title}:\n\n{text}");
        // Every repetition's round trip of the start mark, all delays.
        let mark = |f: fn(&Metric) -> &Figures| {
            let all = Figures {
                per_rep: r
                    .metrics
                    .iter()
                    .filter(|m| m.name.starts_with(&format!("{prefix}_reset_to_read_")))
                    .flat_map(|m| f(m).per_rep.iter().cloned())
                    .collect(),
                ..Figures::default()
            };
            per_rep_range(&all, "mark_read_ms")
        };
        println!(
            "The start mark's BAR0 read took Rust {} ms, upstream {} ms (round trip): the FLR is \
             placed early, and the overhead from readiness overstated, by less than that.\n",
            mark(|m| &m.rust),
            mark(|m| &m.upstream)
        );
        if !ok {
            println!("Readiness goal NOT met on this sweep ({prefix}).");
        }
        if let Some(dir) = plot {
            let font = std::env::var("BENCH_FONT").unwrap_or_else(|_| DEFAULT_FONT.into());
            let out = Path::new(dir).join(png);
            sweep::plot(&points, title, Path::new(&font), &out)?;
            println!("Plot: {}", out.display());
        }
    }
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: bench-report --out FILE [--plot DIR] [--meta KEY=VALUE]... LOG...");
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

/// The spread of a driver's counts: (max - min) / median, in %.
fn spread(f: &Figures) -> String {
    match &f.summary {
        Some(s) if s.median > 0.0 => format!("{:.2} %", (s.max - s.min) / s.median * 100.0),
        _ => "-".into(),
    }
}

/// The instruction counts of the `-icount` boots (group `counts`), with their spread.
fn counts_table(t: &mut String, r: &Report) {
    let counts: Vec<&Metric> = r.metrics.iter().filter(|m| m.group == "counts").collect();
    if counts.is_empty() {
        return;
    }
    let _ = writeln!(
        t,
        "\nGuest instructions per operation (QEMU -icount shift=0: independent of the host's load): \
         median, and the spread (max - min) / median over the repetitions; ratio = upstream / Rust \
         (>= 1: Rust executes no more instructions)\n"
    );
    let _ = writeln!(
        t,
        "| metric | unit | Rust | spread | upstream | spread | ratio | ratio of best |\n|---|---|---|---|---|---|---|---|"
    );
    let fmt = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
    let med = |f: &Figures| f.summary.map_or("missing".into(), |s| num(s.median));
    for m in counts {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            m.name,
            m.unit,
            med(&m.rust),
            spread(&m.rust),
            med(&m.upstream),
            spread(&m.upstream),
            fmt(m.ratio),
            fmt(m.ratio_best)
        );
    }
}

/// Each driver metric next to its ceiling, the run with the same working set and access pattern
/// and no driver, as a fraction of it (1.00: as fast as the ceiling; cost of the ceiling / cost
/// of the metric, so higher is better for times and counts alike), per build (each ceiling is
/// measured in that build's turn). The pairs: usemem pread/pwrite and memcpy of the same sizes
/// between populated buffers (`ceiling_memcpy_*`), and the kernel's own copy path on a tmpfs
/// file (`ceiling_tmpfs_*`); usemem fault-in and the touch of the same 1 GiB mapping once it is
/// populated (`touch_usemem_mapped`: what is left of a fault-in when the faults cost nothing).
/// `suffix` is "" for times, "_insns" for counts.
fn ceiling_table(t: &mut String, r: &Report, suffix: &str) {
    let get = |name: String| r.metrics.iter().find(|m| m.name == name);
    let frac = |m: &Metric, c: &Metric, f: fn(&Metric) -> &Figures| -> Option<f64> {
        let (d, c) = (f(m).summary?.median, f(c).summary?.median);
        match m.better {
            Better::Higher => Some(d / c),
            Better::Lower => Some(c / d),
        }
        .filter(|x| x.is_finite())
    };
    let mut rows: Vec<(&Metric, &Metric)> = Vec::new();
    for tag in ["4k", "64k", "1m"] {
        for (op, dir) in [("pread", "in"), ("pwrite", "out")] {
            if let Some(m) = get(format!("rw_usemem_{op}_{tag}{suffix}")) {
                for c in [
                    get(format!("ceiling_memcpy_{dir}_{tag}{suffix}")),
                    get(format!("ceiling_tmpfs_{op}_{tag}{suffix}")),
                ]
                .into_iter()
                .flatten()
                {
                    rows.push((m, c));
                }
            }
        }
    }
    if let Some(c) = get(format!("touch_usemem_mapped{suffix}")) {
        for m in r.metrics.iter().filter(|m| {
            m.name.starts_with("fault_usemem_") && m.name.ends_with(suffix) && m.group == c.group
        }) {
            rows.push((m, c));
        }
    }
    if rows.is_empty() {
        return;
    }
    let what = if suffix.is_empty() {
        "medians of the times"
    } else {
        "instruction counts"
    };
    let _ = writeln!(
        t,
        "\nFraction of the ceiling ({what}): the ceiling's cost / the metric's, each build against \
         the ceiling measured in its own turn (1.00: no slower than the same pattern without a driver)\n"
    );
    let _ = writeln!(
        t,
        "| metric | ceiling | Rust | upstream |\n|---|---|---|---|"
    );
    let fmt = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
    for (m, c) in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} |",
            m.name,
            c.name,
            fmt(frac(m, c, |m| &m.rust)),
            fmt(frac(m, c, |m| &m.upstream))
        );
    }
}

/// The per-repetition details hold a fault count (`faults`).
fn has_faults(f: &Figures) -> bool {
    f.per_rep.iter().any(|v| v.get("faults").is_some())
}

fn table(r: &Report) -> String {
    let mut t = String::new();
    let timed: Vec<&Metric> = r.metrics.iter().filter(|m| m.group != "counts").collect();
    if !timed.is_empty() {
        let _ = writeln!(
            t,
            "min / **median** / max over all repetitions; ratio = upstream time / Rust time of the medians \
             (>1: Rust faster; ready_overhead_*: upstream overhead / Rust overhead)\n"
        );
        let _ = writeln!(
            t,
            "| group | metric | unit | Rust | upstream | ratio | ratio of best |\n|---|---|---|---|---|---|---|"
        );
    }
    let fmt = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
    for m in timed {
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
    ceiling_table(&mut t, r, "");
    counts_table(&mut t, r);
    ceiling_table(&mut t, r, "_insns");
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
        .filter(|m| {
            m.group == "fault-in"
                || m.name.starts_with("ceiling_fault")
                || (m.group == "counts" && (has_faults(&m.rust) || has_faults(&m.upstream)))
        })
        .collect();
    if !faults.is_empty() {
        let _ = writeln!(
            t,
            "\nFaults per repetition (ru_minflt) and the entries mapping the range afterwards \
             (PUD / PMD / PTE, from the kernel's page-table dump of the process; - where the guest \
             has none: arm64 dumps only the kernel's tables):\n"
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
            "\nReadiness polls per reset (C2C status reads in the model's access log), the reset ioctl's duration and the FLR's distance from its start (ms):\n"
        );
        let _ = writeln!(
            t,
            "| metric | Rust polls | Rust reset ioctl | Rust FLR after ioctl start | upstream polls | upstream reset ioctl | upstream FLR after ioctl start |\n|---|---|---|---|---|---|---|"
        );
        for m in ready {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} |",
                m.name,
                per_rep_range(&m.rust, "polls"),
                per_rep_range(&m.rust, "reset_ioctl_ms"),
                per_rep_range(&m.rust, "flr_after_ioctl_ms"),
                per_rep_range(&m.upstream, "polls"),
                per_rep_range(&m.upstream, "reset_ioctl_ms"),
                per_rep_range(&m.upstream, "flr_after_ioctl_ms")
            );
        }
    }
    for s in &r.skipped {
        let _ = writeln!(
            t,
            "\nLeft out on this guest (not measured, not an error): {} ({}): {}",
            s.metric, s.suite, s.reason
        );
    }
    for e in &r.errors {
        let _ = writeln!(t, "\nNOT MEASURED: {} ({}): {}", e.metric, e.suite, e.error);
    }
    t
}

fn main() {
    let mut out = None;
    let mut plot = None;
    let mut meta = Map::new();
    let mut logs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = Some(args.next().unwrap_or_else(|| usage())),
            "--plot" => plot = Some(args.next().unwrap_or_else(|| usage())),
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
    let mut skipped: Vec<Skipped> = Vec::new();
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
                // Every boot (round) of a suite says it again.
                Some(Line::Skipped(s)) if !skipped.contains(&s) => skipped.push(s),
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
                Some(Line::Skipped(_)) | None => {}
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
        skipped,
    };
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    if let Err(e) = std::fs::write(&out, json + "\n") {
        eprintln!("bench-report: {out}: {e}");
        std::process::exit(1);
    }
    print!("{}", table(&report));
    let plotted = sweeps(&report, plot.as_deref());
    if let Err(e) = &plotted {
        eprintln!("bench-report: plot: {e}");
    }
    if plotted.is_err() || incomplete || !report.errors.is_empty() {
        std::process::exit(1);
    }
}
