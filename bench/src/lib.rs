// SPDX-License-Identifier: GPL-2.0

//! What the guest benchmark program (`nvgrace-bench`, run in the rig's guest) and the host report
//! (`bench-report`) share: the records the guest prints on the console, the statistics, and the
//! reading of the kernel's page-table dump that tells at which order the faults mapped memory.
//!
//! See Documentation/performance.md for what is measured and how to read the results.

use serde::Deserialize;
use serde::Serialize;
use serde_json::Map;
use serde_json::Value;

pub mod flr;
pub mod ptdump;
pub mod sweep;

/// Prefix of a console line that carries one metric's [`Record`] as JSON.
pub const RECORD_TAG: &str = "@@bench ";
/// Prefix of a console line that carries the guest's [`Env`] as JSON.
pub const ENV_TAG: &str = "@@bench-env ";
/// Prefix of a console line that carries a metric that could not be measured ([`BenchError`]).
pub const ERROR_TAG: &str = "@@bench-error ";
/// Prefix of a console line that carries a metric this guest leaves out by design
/// ([`Skipped`]), e.g. the PUD fault-in runs on arm64: not an error, not a measurement.
pub const SKIP_TAG: &str = "@@bench-skipped ";

/// Which way a metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// A rate (GiB/s): higher is better.
    Higher,
    /// A time (µs, ms): lower is better.
    Lower,
}

/// One metric measured in one guest boot: its samples (one per repetition, after the warm-up).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The guest run it comes from (`usemem`, `resmem`: see `nvgrace-bench --help`).
    pub suite: String,
    /// The driver build measured (`rust`, `upstream`); when absent, the build of the run's
    /// [`Env`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Unique name, e.g. `fault_usemem_1g_aligned`. Names starting with `ready_` are readiness
    /// metrics.
    pub metric: String,
    /// The section of the table it belongs to (`fault-in`, `read/write`, `latency`, ...).
    pub group: String,
    /// Unit of the samples: `GiB/s`, `us` or `ms`.
    pub unit: String,
    /// Whether higher or lower samples are better.
    pub better: Better,
    /// What one sample is, in a sentence.
    pub what: String,
    /// One value per repetition, in `unit`.
    pub samples: Vec<f64>,
    /// Per-repetition details (fault counts, page-table entries, readiness polls), if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_rep: Vec<Value>,
}

/// A metric that could not be measured, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchError {
    /// The guest run.
    pub suite: String,
    /// The metric's name.
    pub metric: String,
    /// The error.
    pub error: String,
}

/// A metric this guest cannot have (its kernel or architecture lacks what it measures), and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The guest run.
    pub suite: String,
    /// The metric's name, as it would be named where it runs (`fault_usemem_pud_aligned`).
    pub metric: String,
    /// Why this guest leaves it out.
    pub reason: String,
}

/// The guest and the run's settings, printed once per guest run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Env {
    /// The guest run (`usemem`, `resmem`).
    pub suite: String,
    /// The driver build the rig bound (`RIG_DRIVER`: `rust`, `upstream`, or `none` when the
    /// program binds the builds itself; then every record names its build).
    pub driver: String,
    /// The GPU model's variant (`RIG_GPU`).
    pub gpu: String,
    /// The memory size in the `_DSD`, bytes (`RIG_MEM_SIZE`).
    pub mem_size: u64,
    /// Measured repetitions per metric.
    pub reps: usize,
    /// Unmeasured repetitions before them.
    pub warmup: usize,
    /// Anything else worth recording: kernel release, command line, clock source, THP mode,
    /// CPUs, memory, the module's srcversion.
    pub guest: Map<String, Value>,
}

/// Minimum, median and maximum of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Smallest sample.
    pub min: f64,
    /// Median (the mean of the two middle samples for an even count).
    pub median: f64,
    /// Largest sample.
    pub max: f64,
}

/// The [`Summary`] of `samples`; `None` when there are none (or any is NaN).
pub fn summary(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some(Summary {
        min: s[0],
        median,
        max: s[n - 1],
    })
}

/// The ratio of two medians, above 1 when the Rust driver is faster: upstream time / Rust time,
/// that is `upstream / rust` for times and overheads, `rust / upstream` for rates. `None` when
/// the denominator is not positive.
pub fn ratio(better: Better, rust: f64, upstream: f64) -> Option<f64> {
    let (num, den) = match better {
        Better::Lower => (upstream, rust),
        Better::Higher => (rust, upstream),
    };
    (den > 0.0).then(|| num / den)
}

/// Parses one console line into what it carries, if it is a bench line. Serial consoles end
/// lines with `\r\n`, and kernel messages may precede the tag on the same line.
pub enum Line {
    /// An [`ENV_TAG`] line.
    Env(Env),
    /// A [`RECORD_TAG`] line.
    Record(Record),
    /// An [`ERROR_TAG`] line.
    Error(BenchError),
    /// A [`SKIP_TAG`] line.
    Skipped(Skipped),
}

impl Line {
    /// The bench content of `line`, or `None` (also for a line whose JSON does not parse, e.g.
    /// one a kernel message cut in two; the report then lists the metric as missing).
    pub fn parse(line: &str) -> Option<Line> {
        let line = line.trim_end_matches(['\r', '\n']);
        // The other tags first: they all begin with `@@bench`, and a record is what is left.
        if let Some(i) = line.find(ENV_TAG) {
            return serde_json::from_str(&line[i + ENV_TAG.len()..])
                .ok()
                .map(Line::Env);
        }
        if let Some(i) = line.find(ERROR_TAG) {
            return serde_json::from_str(&line[i + ERROR_TAG.len()..])
                .ok()
                .map(Line::Error);
        }
        if let Some(i) = line.find(SKIP_TAG) {
            return serde_json::from_str(&line[i + SKIP_TAG.len()..])
                .ok()
                .map(Line::Skipped);
        }
        let i = line.find(RECORD_TAG)?;
        serde_json::from_str(&line[i + RECORD_TAG.len()..])
            .ok()
            .map(Line::Record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_odd_even_empty() {
        let s = summary(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = summary(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert!(summary(&[]).is_none());
        assert!(summary(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn ratio_is_upstream_time_over_rust_time() {
        // Times: Rust 2 ms, upstream 4 ms: Rust twice as fast.
        assert_eq!(ratio(Better::Lower, 2.0, 4.0), Some(2.0));
        // Rates: Rust 4 GiB/s, upstream 2 GiB/s: Rust twice as fast.
        assert_eq!(ratio(Better::Higher, 4.0, 2.0), Some(2.0));
        assert_eq!(ratio(Better::Lower, 0.0, 4.0), None);
    }

    #[test]
    fn lines_round_trip() {
        let r = Record {
            suite: "usemem".into(),
            driver: None,
            metric: "lat_bar0_read".into(),
            group: "latency".into(),
            unit: "us".into(),
            better: Better::Lower,
            what: "x".into(),
            samples: vec![1.0, 2.0],
            per_rep: vec![],
        };
        let text = format!(
            "[   12.3] noise {RECORD_TAG}{}\r\n",
            serde_json::to_string(&r).unwrap()
        );
        match Line::parse(&text) {
            Some(Line::Record(p)) => assert_eq!(p.samples, r.samples),
            _ => panic!("record not parsed"),
        }
        let e = format!(
            "{ERROR_TAG}{}",
            serde_json::to_string(&BenchError {
                suite: "s".into(),
                metric: "m".into(),
                error: "e".into()
            })
            .unwrap()
        );
        assert!(matches!(Line::parse(&e), Some(Line::Error(_))));
        let s = Skipped {
            suite: "usemem".into(),
            metric: "fault_usemem_pud_aligned".into(),
            reason: "no PUD".into(),
        };
        let text = format!("{SKIP_TAG}{}\r\n", serde_json::to_string(&s).unwrap());
        match Line::parse(&text) {
            Some(Line::Skipped(p)) => assert_eq!(p, s),
            _ => panic!("skipped metric not parsed"),
        }
        let env = format!(
            "{ENV_TAG}{}",
            serde_json::to_string(&Env::default()).unwrap()
        );
        assert!(matches!(Line::parse(&env), Some(Line::Env(_))));
        assert!(Line::parse("@@bench {broken").is_none());
        assert!(Line::parse("ordinary console output").is_none());
    }
}
