//! Training curves as SVG (or PNG), drawn with `plotters`: loss per epoch
//! on the left, validation ranking metrics per epoch on the right, the
//! most-popular baseline as dashed lines, the best epoch marked; or several
//! runs overlaid, one colour per run.
//!
//! Text is measured (and, in PNG, drawn) with DejaVu Sans, a Latin-1 subset
//! bundled in `assets/` (plotters' bitmap backend has no fonts of its own).
//!
//! Axes get 1-2-5 ticks (integer epochs on x), metric axes start at 0, and
//! each panel's legend sits beside its data area, never over the curves.

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use sasrec_model::EpochRecord;
use sasrec_model::RankingMetrics;

/// Width of a panel's data area with its axes, in pixels.
const CHART_W: u32 = 440;
/// Height of a panel.
const PANEL_H: u32 = 360;
/// Colours of the series (matplotlib's tab10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const GREY: RGBColor = RGBColor(120, 120, 120);

/// One line of a panel.
struct Curve {
    label: String,
    colour: RGBColor,
    /// (epoch, value); a baseline is a horizontal line (two points).
    points: Vec<(i32, f64)>,
    dashed: bool,
}

/// One chart: curves over epochs.
struct Panel {
    title: String,
    y_label: &'static str,
    /// Metric axes start at 0; a loss axis fits its data.
    from_zero: bool,
    curves: Vec<Curve>,
    /// Epoch to mark with a vertical dashed line.
    best: Option<i32>,
}

/// A run to overlay: its name and its epochs.
pub struct RunCurves<'a> {
    /// Shown in the legend.
    pub name: String,
    /// The run's epochs.
    pub records: &'a [EpochRecord],
    /// Its most-popular baseline on the validation users, if ranked.
    pub baseline: Option<&'a RankingMetrics>,
}

/// An image format the curves are drawn in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// Scalable vector graphics (text).
    Svg,
    /// A PNG bitmap.
    Png,
}

impl ImageFormat {
    /// The format a file name's extension says (`.svg`, `.png`), if any.
    pub fn from_path(path: &std::path::Path) -> Option<ImageFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "svg" => Some(ImageFormat::Svg),
            "png" => Some(ImageFormat::Png),
            _ => None,
        }
    }
}

/// `curves.svg` of one run: train and validation loss; validation NDCG@K,
/// HR@K (the first K) and MRR with the most-popular `baseline` as dashed
/// lines of the same colours; the best epoch marked.
pub fn render(records: &[EpochRecord], baseline: Option<&RankingMetrics>) -> Result<String> {
    let bytes = render_as(records, baseline, ImageFormat::Svg)?;
    Ok(String::from_utf8(bytes).expect("SVG is text"))
}

/// [`render`] in `format`: the file's bytes.
pub fn render_as(
    records: &[EpochRecord],
    baseline: Option<&RankingMetrics>,
    format: ImageFormat,
) -> Result<Vec<u8>> {
    let last = last_epoch(records);
    let best = records
        .iter()
        .rev()
        .find(|r| r.best)
        .map(|r| r.epoch as i32);
    let loss = Panel {
        title: "Loss".into(),
        y_label: "cross-entropy",
        from_zero: false,
        curves: vec![
            line("train loss", PALETTE[0], records, |r| Some(r.train_loss)),
            line("valid loss", PALETTE[1], records, |r| Some(r.valid.loss)),
        ],
        best,
    };
    let mut panels = vec![loss];
    if let Some(k) = first_k(records) {
        let metrics = ranking_metrics(k);
        let mut curves = Vec::new();
        for (i, (name, value)) in metrics.iter().enumerate() {
            let colour = PALETTE[2 + i];
            curves.push(line(name, colour, records, |r| {
                r.valid.ranking.as_ref().and_then(value)
            }));
            if let Some(b) = baseline.and_then(value) {
                curves.push(level(&format!("{name} most popular"), colour, b, last));
            }
        }
        panels.push(Panel {
            title: "Validation ranking (all items)".into(),
            y_label: "metric",
            from_zero: true,
            curves,
            best,
        });
    }
    draw(&panels, format)
}

/// Several runs overlaid, one colour per run: validation loss, and the
/// validation NDCG@K of the first K the runs share (HR@K when none has
/// NDCG) with each run's most-popular baseline dashed.
pub fn render_overlay(runs: &[RunCurves<'_>]) -> Result<String> {
    let bytes = render_overlay_as(runs, ImageFormat::Svg)?;
    Ok(String::from_utf8(bytes).expect("SVG is text"))
}

/// [`render_overlay`] in `format`: the file's bytes.
pub fn render_overlay_as(runs: &[RunCurves<'_>], format: ImageFormat) -> Result<Vec<u8>> {
    let colour = |i: usize| PALETTE[i % PALETTE.len()];
    let loss = Panel {
        title: "Validation loss".into(),
        y_label: "cross-entropy",
        from_zero: false,
        curves: runs
            .iter()
            .enumerate()
            .map(|(i, run)| line(&run.name, colour(i), run.records, |r| Some(r.valid.loss)))
            .collect(),
        best: None,
    };
    let mut panels = vec![loss];
    let k = runs.iter().filter_map(|r| first_k(r.records)).min();
    if let Some(k) = k {
        let (name, value) = &ranking_metrics(k)[0];
        let mut curves = Vec::new();
        let baselines: Vec<Option<f64>> = runs.iter().map(|r| r.baseline.and_then(value)).collect();
        // One baseline when the runs share it (the same data), else one each.
        let shared = baselines.windows(2).all(|w| w[0] == w[1]);
        for (i, run) in runs.iter().enumerate() {
            curves.push(line(&run.name, colour(i), run.records, |r| {
                r.valid.ranking.as_ref().and_then(value)
            }));
            let last = last_epoch(run.records);
            match baselines[i] {
                Some(b) if !shared => {
                    let label = format!("{} most popular", run.name);
                    curves.push(level(&label, colour(i), b, last));
                }
                _ => {}
            }
        }
        if let (true, Some(Some(b))) = (shared, baselines.first()) {
            let last = runs
                .iter()
                .map(|r| last_epoch(r.records))
                .max()
                .unwrap_or(1);
            curves.push(level("most popular", GREY, *b, last));
        }
        panels.push(Panel {
            title: format!("Validation {name} (all items)"),
            y_label: "metric",
            from_zero: true,
            curves,
            best: None,
        });
    }
    draw(&panels, format)
}

type MetricOf = Box<dyn Fn(&RankingMetrics) -> Option<f64>>;

/// NDCG@k, HR@k and MRR, with how to read each.
fn ranking_metrics(k: usize) -> [(String, MetricOf); 3] {
    [
        (format!("NDCG@{k}"), Box::new(move |m| m.ndcg(k))),
        (format!("HR@{k}"), Box::new(move |m| m.hr(k))),
        ("MRR".to_string(), Box::new(|m| Some(m.mrr))),
    ]
}

/// The first cut-off of the run's ranking metrics, if it has any.
fn first_k(records: &[EpochRecord]) -> Option<usize> {
    records
        .iter()
        .find_map(|r| r.valid.ranking.as_ref())
        .and_then(|m| m.at.first())
        .map(|at| at.k)
}

fn last_epoch(records: &[EpochRecord]) -> i32 {
    records.last().map_or(1, |r| r.epoch as i32)
}

fn line(
    label: &str,
    colour: RGBColor,
    records: &[EpochRecord],
    value: impl Fn(&EpochRecord) -> Option<f64>,
) -> Curve {
    Curve {
        label: label.to_string(),
        colour,
        points: records
            .iter()
            .filter_map(|r| value(r).map(|v| (r.epoch as i32, v)))
            .collect(),
        dashed: false,
    }
}

/// A dashed horizontal line at `value` from epoch 1 to `last`.
fn level(label: &str, colour: RGBColor, value: f64, last: i32) -> Curve {
    Curve {
        label: label.to_string(),
        colour,
        points: vec![(1, value), (last.max(2), value)],
        dashed: true,
    }
}

/// The bundled font, registered with plotters once as "sans-serif".
fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let font = include_bytes!("../assets/DejaVuSans-subset.ttf");
        plotters::style::register_font("sans-serif", FontStyle::Normal, font).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the bundled font does not load"))
    }
}

/// The panels side by side, each with its legend on its right, as the
/// bytes of a file in `format`.
fn draw(panels: &[Panel], format: ImageFormat) -> Result<Vec<u8>> {
    register_font()?;
    let legend_w = |p: &Panel| {
        let longest = p.curves.iter().map(|c| c.label.chars().count()).max();
        50 + 7 * longest.unwrap_or(0) as u32
    };
    let widths: Vec<u32> = panels.iter().map(|p| CHART_W + legend_w(p)).collect();
    let size = (widths.iter().sum::<u32>().max(1), PANEL_H);
    match format {
        ImageFormat::Svg => {
            let mut svg = String::new();
            draw_on(
                SVGBackend::with_string(&mut svg, size).into_drawing_area(),
                panels,
                &widths,
            )?;
            Ok(svg.into_bytes())
        }
        ImageFormat::Png => {
            let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
            draw_on(
                BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area(),
                panels,
                &widths,
            )?;
            let mut png = Vec::new();
            let mut encoder = png::Encoder::new(&mut png, size.0, size.1);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().context("encoding the PNG")?;
            writer.write_image_data(&rgb).context("encoding the PNG")?;
            writer.finish().context("encoding the PNG")?;
            Ok(png)
        }
    }
}

/// Draws the panels on `root`, `widths[i]` pixels for panel i and its legend.
fn draw_on<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Panel],
    widths: &[u32],
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_error)?;
    let mut rest = root;
    for (panel, width) in panels.iter().zip(widths) {
        let (area, right) = rest.split_horizontally(*width);
        let (chart, legend) = area.split_horizontally(CHART_W);
        draw_panel(panel, &chart)?;
        draw_legend(panel, &legend)?;
        rest = right;
    }
    rest.present().map_err(plot_error)?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(panel: &Panel, area: &DrawingArea<DB, Shift>) -> Result<()> {
    let points = || panel.curves.iter().flat_map(|c| c.points.iter());
    let x_max = points().map(|p| p.0).max().unwrap_or(1).max(2);
    let (mut y0, mut y1) = points().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    if y0 > y1 {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3 * y1.abs().max(1.0));
    // Losses and metrics are never negative: no axis below 0.
    let y0 = if panel.from_zero {
        0.0
    } else {
        (y0 - pad).max(0.0)
    };
    let y1 = y1 + pad;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1..x_max, y0..y1)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(panel.y_label)
        .x_labels(10)
        .y_labels(8)
        .y_label_formatter(&|v| tick(*v))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(WHITE)
        .draw()
        .map_err(plot_error)?;
    if let Some(best) = panel.best {
        let style = GREY.stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new([(best, y0), (best, y1)], 4, 3, style))
            .map_err(plot_error)?;
    }
    for curve in &panel.curves {
        let style = curve.colour.stroke_width(2);
        let points = curve.points.iter().copied();
        if curve.dashed {
            chart.draw_series(DashedLineSeries::new(points, 6, 4, style))
        } else {
            chart.draw_series(LineSeries::new(points, style))
        }
        .map_err(plot_error)?;
    }
    Ok(())
}

/// The legend in its own area beside the chart: a sample of each line and
/// its label.
fn draw_legend<DB: DrawingBackend>(panel: &Panel, area: &DrawingArea<DB, Shift>) -> Result<()> {
    let mut y = 50;
    for curve in &panel.curves {
        let style = curve.colour.stroke_width(2);
        if curve.dashed {
            area.draw(&DashedPathElement::new([(4, y), (34, y)], 5, 3, style))
        } else {
            area.draw(&PathElement::new([(4, y), (34, y)], style))
        }
        .map_err(plot_error)?;
        let text = Text::new(curve.label.clone(), (40, y - 7), ("sans-serif", 13));
        area.draw(&text).map_err(plot_error)?;
        y += 20;
    }
    if panel.best.is_some() {
        area.draw(&DashedPathElement::new([(4, y), (34, y)], 4, 3, GREY))
            .map_err(plot_error)?;
        let text = Text::new("best epoch", (40, y - 7), ("sans-serif", 13));
        area.draw(&text).map_err(plot_error)?;
    }
    Ok(())
}

/// A tick label: the value rounded to 6 significant digits, shortest form
/// (0.02, not 0.020000000000000004).
fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let digits = 5 - v.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits.clamp(-300, 300));
    format!("{}", (v * scale).round() / scale)
}

fn plot_error<E: std::error::Error + Send + Sync>(
    err: plotters::drawing::DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow!("drawing the curves: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sasrec_model::Evaluation;
    use sasrec_model::metrics::RankingAccumulator;

    fn record(epoch: usize, loss: f64, rank: usize, best: bool) -> EpochRecord {
        let mut acc = RankingAccumulator::new(&[10]);
        acc.add(rank);
        EpochRecord {
            epoch,
            step: epoch as u64 * 5,
            train_loss: loss,
            valid: Evaluation {
                loss: loss + 0.5,
                targets: 10,
                ranking: Some(acc.finish()),
            },
            tokens_per_s: 1000.0,
            seconds: 1.0,
            valid_seconds: 0.5,
            ended_at: 1.7e9 + epoch as f64,
            best,
        }
    }

    /// The `points` of every solid line with `n` points, by stroke colour.
    fn lines(svg: &str, n: usize) -> Vec<String> {
        svg.split("<polyline")
            .skip(1)
            .filter(|p| {
                let points = p
                    .split("points=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                points.split_whitespace().count() == n
            })
            .map(|p| {
                p.split("stroke=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn curves_have_a_line_per_series_a_baseline_and_the_best_epoch() {
        let records = [
            record(1, 9.0, 30, true),
            record(2, 8.0, 5, true),
            record(3, 7.5, 8, false),
        ];
        let mut baseline = RankingAccumulator::new(&[10]);
        baseline.add(12);
        let svg = render(&records, Some(&baseline.finish())).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // train loss, valid loss, NDCG@10, HR@10, MRR: three epochs each.
        assert_eq!(lines(&svg, 3).len(), 5);
        for label in [
            "train loss",
            "valid loss",
            "NDCG@10",
            "HR@10 most popular",
            "MRR",
            "best epoch",
        ] {
            assert!(svg.contains(&format!(">\n{label}\n<")), "{label} missing");
        }
    }

    #[test]
    fn loss_only_runs_get_one_panel() {
        let mut r = record(1, 9.0, 3, true);
        r.valid.ranking = None;
        let svg = render(&[r], None).unwrap();
        assert!(!svg.contains("Validation ranking"));
        assert!(svg.contains(">\nvalid loss\n<"));
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(tick(0.020000000000000004), "0.02");
        assert_eq!(tick(9.124), "9.124");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(150.0), "150");
    }

    #[test]
    fn overlays_draw_one_series_per_run_in_its_colour() {
        let a = [
            record(1, 9.0, 30, true),
            record(2, 8.0, 5, true),
            record(3, 7.0, 5, false),
        ];
        let b = [
            record(1, 8.0, 3, true),
            record(2, 7.0, 1, true),
            record(3, 6.0, 2, true),
        ];
        let runs = [
            RunCurves {
                name: "lr=0.1".into(),
                records: &a,
                baseline: None,
            },
            RunCurves {
                name: "lr=0.01".into(),
                records: &b,
                baseline: None,
            },
        ];
        let svg = render_overlay(&runs).unwrap();
        let mut colours = lines(&svg, 3);
        colours.sort();
        // Two panels (loss, NDCG@10), one line per run in each.
        assert_eq!(colours.len(), 4, "{colours:?}");
        colours.dedup();
        assert_eq!(colours.len(), 2);
        assert!(svg.contains(">\nlr=0.1\n<") && svg.contains(">\nlr=0.01\n<"));
        assert!(svg.contains("Validation NDCG@10"));
    }
}
