// SPDX-License-Identifier: GPL-2.0

//! The readiness sweep in the report: the overhead a driver adds to the wait for readiness after
//! a reset, at each readiness delay of the `readiness` suite, set against the goals of issue 18
//! (the Rust driver within max(5 ms, 1 % of the delay) at every delay, and its mean overhead at
//! least 20 times below upstream's) and drawn as a PNG. The goals are judged, and the plot
//! drawn, on the overhead counted from readiness itself, first access - max(FLR + delay, end of
//! the reset ioctl) ([`crate::flr`]); the report also shows the older figure counted from the
//! ioctl's start, first access - max(delay, reset ioctl), which charges the driver with the
//! time vfio-pci-core takes to issue the FLR.

use std::path::Path;

use plotters::prelude::*;

/// The goal for the Rust driver's overhead at a readiness delay of `delay_ms`: max(5 ms, 1 % of
/// the delay), in ms.
pub fn goal_ms(delay_ms: f64) -> f64 {
    (delay_ms / 100.0).max(5.0)
}

/// One point of the sweep: the delay and each driver's overhead samples (ms), counted from
/// the FLR.
#[derive(Clone, Debug, Default)]
pub struct Point {
    pub delay_ms: f64,
    pub rust: Vec<f64>,
    pub upstream: Vec<f64>,
}

/// The overhead counted from readiness, FLR + delay (`<prefix>_overhead_flr_<D>ms`): what the
/// goals are judged on.
pub const FROM_FLR: &str = "overhead_flr";
/// The overhead counted from the reset ioctl's start (`<prefix>_overhead_<D>ms`).
pub const FROM_IOCTL: &str = "overhead";

/// The delay a sweep metric `<prefix>_<kind>_<D>ms` measures, if `name` is one; `kind` is
/// [`FROM_FLR`] or [`FROM_IOCTL`].
pub fn delay_of(prefix: &str, kind: &str, name: &str) -> Option<f64> {
    name.strip_prefix(prefix)?
        .strip_prefix('_')?
        .strip_prefix(kind)?
        .strip_prefix('_')?
        .strip_suffix("ms")?
        .parse()
        .ok()
}

/// The sweep against the goals.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The delays at which the Rust driver's median overhead is within [`goal_ms`].
    pub within: usize,
    /// The points.
    pub points: usize,
    /// The mean over the points of each driver's median overhead, ms.
    pub mean_rust: f64,
    /// The same for upstream.
    pub mean_upstream: f64,
    /// `mean_upstream / mean_rust` (infinite when the Rust mean is 0).
    pub factor: f64,
}

/// How many times lower than upstream's the Rust driver's mean overhead must be.
pub const FACTOR_GOAL: f64 = 20.0;

impl Verdict {
    /// Both goals hold: within the goal at every point, and the mean [`FACTOR_GOAL`] times lower.
    pub fn met(&self) -> bool {
        self.within == self.points && self.factor >= FACTOR_GOAL
    }
}

/// Judges `points` (overheads counted from the FLR) against the goals.
pub fn verdict(points: &[Point]) -> Verdict {
    let mean = |f: fn(&Point) -> &Vec<f64>| {
        points.iter().map(|p| median(f(p))).sum::<f64>() / points.len().max(1) as f64
    };
    let (mean_rust, mean_upstream) = (mean(|p| &p.rust), mean(|p| &p.upstream));
    Verdict {
        within: points
            .iter()
            .filter(|p| median(&p.rust) <= goal_ms(p.delay_ms))
            .count(),
        points: points.len(),
        mean_rust,
        mean_upstream,
        factor: if mean_rust > 0.0 {
            mean_upstream / mean_rust
        } else {
            f64::INFINITY
        },
    }
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    crate::summary(v).map_or(0.0, |s| s.median)
}

/// Which driver's samples of a point.
type Samples = fn(&Point) -> &Vec<f64>;

/// Smallest overhead drawn: the y axis is logarithmic.
const FLOOR_MS: f64 = 0.1;

/// Draws the sweep: overhead counted from the FLR (ms, log scale) against the readiness delay,
/// every sample and the median of each driver, and the goal, into a PNG of 1000x600 pixels.
/// The text uses the TTF font at `font` (DejaVu Sans: Debian's fonts-dejavu-core).
pub fn plot(points: &[Point], title: &str, font: &Path, out: &Path) -> Result<(), String> {
    let bytes = std::fs::read(font).map_err(|e| format!("{}: {e}", font.display()))?;
    // The registry keeps the font for the process: leak it once per plot (two plots a run).
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{}: not a usable TTF font", font.display()))?;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::new(out, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let x_max = points
        .iter()
        .map(|p| p.delay_ms)
        .fold(0.0, f64::max)
        .max(1.0);
    let y_max = points
        .iter()
        .flat_map(|p| p.rust.iter().chain(&p.upstream))
        .copied()
        .fold(10.0, f64::max)
        * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max * 1.02, (FLOOR_MS..y_max).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("readiness delay after the FLR (ms)")
        .y_desc("overhead: first access - max(FLR + delay, reset ioctl end) (ms)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(&e))?;
    let clamp = |v: f64| v.max(FLOOR_MS);
    let goal: Vec<(f64, f64)> = (0..=60)
        .map(|i| x_max * f64::from(i) / 60.0)
        .map(|d| (d, goal_ms(d)))
        .collect();
    chart
        .draw_series(LineSeries::new(goal, BLACK.stroke_width(1)))
        .map_err(|e| err(&e))?
        .label("goal for Rust: max(5 ms, 1 % of the delay)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    let drivers: [(&str, RGBColor, Samples); 2] = [
        ("Rust", RGBColor(200, 60, 20), |p| &p.rust),
        ("upstream C", RGBColor(20, 90, 200), |p| &p.upstream),
    ];
    for (name, color, samples) in drivers {
        chart
            .draw_series(points.iter().flat_map(|p| {
                samples(p)
                    .iter()
                    .map(move |&v| Circle::new((p.delay_ms, clamp(v)), 2, color.mix(0.5).filled()))
            }))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .map(|p| (p.delay_ms, clamp(median(samples(p))))),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(format!("{name}: median (line), samples (dots)"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goal_is_5ms_or_one_percent() {
        assert_eq!(goal_ms(0.0), 5.0);
        assert_eq!(goal_ms(400.0), 5.0);
        assert_eq!(goal_ms(1000.0), 10.0);
        assert_eq!(goal_ms(3000.0), 30.0);
    }

    #[test]
    fn delay_from_metric_name() {
        let old = FROM_IOCTL;
        assert_eq!(
            delay_of("sweep", old, "sweep_overhead_1050ms"),
            Some(1050.0)
        );
        assert_eq!(delay_of("sweep", old, "sweep_cxl_overhead_1050ms"), None);
        assert_eq!(
            delay_of("sweep_cxl", old, "sweep_cxl_overhead_0ms"),
            Some(0.0)
        );
        assert_eq!(delay_of("sweep", old, "sweep_reset_to_read_50ms"), None);
        assert_eq!(delay_of("sweep", old, "sweep_overhead_flr_200ms"), None);
        let flr = FROM_FLR;
        assert_eq!(
            delay_of("sweep", flr, "sweep_overhead_flr_200ms"),
            Some(200.0)
        );
        assert_eq!(delay_of("sweep", flr, "sweep_overhead_200ms"), None);
        assert_eq!(delay_of("sweep", flr, "sweep_cxl_overhead_flr_200ms"), None);
        assert_eq!(
            delay_of("sweep_cxl", flr, "sweep_cxl_overhead_flr_0ms"),
            Some(0.0)
        );
        assert_eq!(delay_of("sweep", flr, "sweep_flr_after_ioctl"), None);
    }

    fn point(delay_ms: f64, rust: &[f64], upstream: &[f64]) -> Point {
        Point {
            delay_ms,
            rust: rust.to_vec(),
            upstream: upstream.to_vec(),
        }
    }

    #[test]
    fn verdict_judges_the_median_of_each_point() {
        // 200 ms: goal 5 ms, median 4.9 (one sample over); 2000 ms: goal 20 ms, median 19.
        let points = [
            point(200.0, &[4.0, 4.9, 9.0], &[300.0, 310.0, 320.0]),
            point(2000.0, &[19.0, 19.0, 25.0], &[500.0, 500.0, 500.0]),
        ];
        let v = verdict(&points);
        assert_eq!((v.within, v.points), (2, 2));
        assert!((v.mean_rust - 11.95).abs() < 1e-9, "{v:?}");
        assert!((v.mean_upstream - 405.0).abs() < 1e-9, "{v:?}");
        assert!(v.met(), "{v:?}");
        // Over the goal at one point: not met, whatever the factor.
        let over = [point(400.0, &[5.1], &[1000.0])];
        let v = verdict(&over);
        assert_eq!((v.within, v.points), (0, 1));
        assert!(!v.met());
        // Within the goal everywhere, but only 10 times below upstream.
        let close = [point(0.0, &[1.0], &[10.0])];
        assert!(!verdict(&close).met());
        assert_eq!(verdict(&[point(0.0, &[0.0], &[3.0])]).factor, f64::INFINITY);
    }

    #[test]
    fn plot_writes_a_png() {
        let font = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
        assert!(
            font.exists(),
            "the plots need DejaVu Sans (fonts-dejavu-core)"
        );
        let points: Vec<Point> = [0.0, 500.0, 1000.0]
            .iter()
            .map(|&d| Point {
                delay_ms: d,
                rust: vec![1.0, 2.0],
                upstream: vec![900.0, 50.0],
            })
            .collect();
        let out = std::env::temp_dir().join(format!("sweep-test-{}.png", std::process::id()));
        plot(&points, "test", font, &out).unwrap();
        let png = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
