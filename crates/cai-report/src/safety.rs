//! The safety analogue of the CAI paper's Elo plot, as SVG: attack success rate (y) against
//! over-refusal rate (x), one labelled point per snapshot with its bootstrap intervals as
//! error bars, one colour per judge. Lower left is better: safe without refusing.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::TABLEAU_10;

/// Pixels of the figure.
const SIZE: (u32, u32) = (760, 600);

/// A rate in [0, 1] with its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateInterval {
    /// The rate.
    pub rate: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

/// One snapshot under one judge.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyPoint {
    /// The snapshot's name (its label).
    pub snapshot: String,
    /// The judge (its colour and legend entry).
    pub judge: String,
    /// Over-refusal rate on safe prompts (x).
    pub over_refusal: RateInterval,
    /// Attack success rate on red-team prompts (y).
    pub asr: RateInterval,
}

/// The figure as SVG text: `judges` in legend and colour order, `points` the snapshots each
/// judge gave both rates for.
pub fn safety_svg(
    judges: &[String],
    points: &[SafetyPoint],
    title: &str,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, judges, points, title).map_err(|e| format!("drawing the safety plot: {e}"))?;
    }
    Ok(svg)
}

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    judges: &[String],
    points: &[SafetyPoint],
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
    for (j, judge) in judges.iter().enumerate() {
        let colour = TABLEAU_10[j % TABLEAU_10.len()];
        let mine: Vec<&SafetyPoint> = points.iter().filter(|p| &p.judge == judge).collect();
        if mine.is_empty() {
            continue;
        }
        let bar = colour.mix(0.6).stroke_width(1);
        for point in mine {
            let (name, x, y) = (&point.snapshot, point.over_refusal, point.asr);
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

    #[test]
    fn one_labelled_point_per_snapshot() {
        let rate = |r: f64| RateInterval {
            rate: r,
            low: r - 0.1,
            high: r + 0.1,
        };
        let point = |snapshot: &str, asr, over| SafetyPoint {
            snapshot: snapshot.into(),
            judge: "refusal".into(),
            asr: rate(asr),
            over_refusal: rate(over),
        };
        let points = [point("base", 0.8, 0.1), point("rl-cai", 0.2, 0.3)];
        let svg = safety_svg(&["refusal".into()], &points, "Safety").unwrap();
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
