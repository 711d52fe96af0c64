//! Training curves as a small self-contained SVG: loss per epoch on the
//! left, validation ranking metrics per epoch on the right.

use std::fmt::Write;

use crate::records::EpochRecord;

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 300.0;
/// Room around a panel for the title, the tick labels and the axis label.
const MARGIN: f64 = 70.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// One line of a panel.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// The SVG text of `curves.svg` for the epochs in `records`.
pub fn render(records: &[EpochRecord]) -> String {
    let epochs = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter_map(|r| f(r).map(|y| (r.epoch as f64, y)))
            .collect()
    };
    let losses = vec![
        Series {
            label: "train loss".into(),
            points: epochs(&|r| Some(r.train_loss)),
        },
        Series {
            label: "valid loss".into(),
            points: epochs(&|r| Some(r.valid.loss)),
        },
    ];
    let mut ranking = Vec::new();
    if let Some(first) = records.iter().find_map(|r| r.valid.ranking.as_ref()) {
        for (i, at) in first.at.iter().enumerate().take(1) {
            let k = at.k;
            ranking.push(Series {
                label: format!("NDCG@{k}"),
                points: epochs(&|r| r.valid.ranking.as_ref().map(|m| m.at[i].ndcg)),
            });
            ranking.push(Series {
                label: format!("HR@{k}"),
                points: epochs(&|r| r.valid.ranking.as_ref().map(|m| m.at[i].hr)),
            });
        }
        ranking.push(Series {
            label: "MRR".into(),
            points: epochs(&|r| r.valid.ranking.as_ref().map(|m| m.mrr)),
        });
    }
    let panels = if ranking.is_empty() { 1.0 } else { 2.0 };
    let width = panels * (PANEL_W + MARGIN) + MARGIN;
    let height = PANEL_H + 2.0 * MARGIN;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let best = records
        .iter()
        .rev()
        .find(|r| r.best)
        .map(|r| r.epoch as f64);
    panel(&mut svg, MARGIN, "Loss per epoch", &losses, best);
    if !ranking.is_empty() {
        let title = "Validation ranking (all items)";
        panel(&mut svg, 2.0 * MARGIN + PANEL_W, title, &ranking, best);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Draws one panel with its axes, ticks, lines, legend and a dashed line at
/// the best epoch, at `left`.
fn panel(svg: &mut String, left: f64, title: &str, series: &[Series], best: Option<f64>) {
    let top = MARGIN;
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    // Metrics and losses are never negative: keep the axis at 0 or above.
    (y0, y1) = ((y0 - pad).max(0.0_f64.min(y0)), y1 + pad);
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * PANEL_W;
    let sy = |y: f64| top + PANEL_H - (y - y0) / (y1 - y0) * PANEL_H;

    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{title}</text>"#,
        left + PANEL_W / 2.0,
        top - 15.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (x, y) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>"#,
            sx(x),
            top + PANEL_H + 16.0,
            x
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 4.0,
            sy(y) + 4.0,
            tick(y, y1 - y0)
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            left + PANEL_W,
            sy(y),
            sy(y)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">epoch</text>"#,
        left + PANEL_W / 2.0,
        top + PANEL_H + 34.0
    );
    if let Some(x) = best.filter(|x| (x0..=x1).contains(x)) {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{1}" stroke="#888" stroke-dasharray="4 3"/>"##,
            sx(x),
            top + PANEL_H
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{}" fill="#666">best</text>"##,
            sx(x) + 3.0,
            top + PANEL_H - 6.0
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
    }
    let legend_x = left + PANEL_W - 130.0;
    let _ = writeln!(
        svg,
        r##"<rect x="{legend_x}" y="{}" width="122" height="{}" fill="white" fill-opacity="0.85" stroke="#ccc"/>"##,
        top + 6.0,
        16.0 * series.len() as f64 + 8.0
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let ly = top + 16.0 + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/>"#,
            legend_x + 6.0,
            legend_x + 26.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            legend_x + 31.0,
            ly + 4.0,
            s.label
        );
    }
}

/// A tick label with as many decimals as the axis range needs.
fn tick(v: f64, range: f64) -> String {
    let decimals = (2.0 - range.log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::Evaluation;
    use crate::metrics::RankingAccumulator;

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
            best,
        }
    }

    #[test]
    fn curves_have_a_line_per_series_and_mark_the_best_epoch() {
        let records = [
            record(1, 9.0, 30, true),
            record(2, 8.0, 5, true),
            record(3, 7.5, 8, false),
        ];
        let svg = render(&records);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // train loss, valid loss, NDCG@10, HR@10, MRR
        assert_eq!(svg.matches("<polyline").count(), 5);
        for label in [
            "train loss",
            "valid loss",
            "NDCG@10",
            "HR@10",
            "MRR",
            "best",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        // Three points per line.
        let first = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(first.split(' ').count(), 3);
    }

    #[test]
    fn loss_only_runs_get_one_panel() {
        let mut r = record(1, 9.0, 3, true);
        r.valid.ranking = None;
        let svg = render(&[r]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("Validation ranking"));
    }
}
