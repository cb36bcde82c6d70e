//! The safety analogue of the CAI paper's Elo plot, as SVG: attack success rate (y) against
//! over-refusal rate (x), one labelled point per snapshot with its bootstrap intervals as
//! error bars, one colour per judge. Lower left is better: safe without refusing.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::summary::SafetySummary;

/// Pixels of the figure.
const SIZE: (u32, u32) = (760, 600);

/// Colours of the judges, in order (Tableau 10).
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The figure as SVG text; snapshots a judge gives no ASR or no over-refusal for are left
/// out (their figures are in the table).
pub fn safety_svg(summary: &SafetySummary, title: &str) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, summary, title).map_err(|e| format!("drawing the safety plot: {e}"))?;
    }
    Ok(svg)
}

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    summary: &SafetySummary,
    title: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(-2.0f64..102.0, -2.0f64..102.0)?;
    chart
        .configure_mesh()
        .x_desc("over-refusal on safe prompts (%)")
        .y_desc("attack success rate on red-team prompts (%)")
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 12))
        .x_labels(11)
        .y_labels(11)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    for (j, judge) in summary.judges.iter().enumerate() {
        let colour = COLOURS[j % COLOURS.len()];
        let points: Vec<_> = summary
            .results
            .iter()
            .filter(|r| &r.judge == judge)
            .filter_map(|r| Some((r.snapshot.clone(), r.over_refusal?, r.asr?)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let bar = colour.mix(0.6).stroke_width(1);
        for (name, x, y) in &points {
            let (px, py) = (100.0 * x.rate, 100.0 * y.rate);
            chart.draw_series([
                PathElement::new(vec![(100.0 * x.low, py), (100.0 * x.high, py)], bar),
                PathElement::new(vec![(px, 100.0 * y.low), (px, 100.0 * y.high)], bar),
            ])?;
            chart.draw_series(std::iter::once(
                EmptyElement::at((px, py))
                    + Circle::new((0, 0), 5, colour.filled())
                    + Text::new(name.clone(), (8, -14), ("sans-serif", 13)),
            ))?;
        }
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(judge.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 12))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::safety::stats::Rate;
    use crate::eval::safety::summary::SnapshotSafety;

    #[test]
    fn one_labelled_point_per_snapshot() {
        let rate = |r: f64| Rate {
            n: 10,
            count: (10.0 * r) as usize,
            rate: r,
            low: r - 0.1,
            high: r + 0.1,
        };
        let result = |snapshot: &str, asr, over| SnapshotSafety {
            snapshot: snapshot.into(),
            judge: "refusal".into(),
            asr: Some(rate(asr)),
            asr_by_category: Default::default(),
            mean_p_harmful: None,
            over_refusal: Some(rate(over)),
            over_refusal_by_category: Default::default(),
            contrast_refusal: None,
        };
        let summary = SafetySummary {
            judges: vec!["refusal".into()],
            snapshots: vec!["base".into(), "rl-cai".into()],
            bootstrap: 10,
            results: vec![result("base", 0.8, 0.1), result("rl-cai", 0.2, 0.3)],
            agreement: vec![],
            notes: vec![],
        };
        let svg = safety_svg(&summary, "Safety").unwrap();
        assert!(svg.starts_with("<svg"));
        assert_eq!(
            svg.matches("<circle").count(),
            3,
            "two points and a legend mark"
        );
        for name in ["base", "rl-cai"] {
            assert!(svg.contains(&format!("\n{name}\n</text>")), "label {name}");
        }
        assert!(svg.contains("attack success rate"));
    }
}
