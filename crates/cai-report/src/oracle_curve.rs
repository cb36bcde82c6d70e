//! The oracle's view of an RL run as an SVG: the lab's ground-truth rates of each checkpoint
//! beside the preference model's reward at that step — the picture of over-optimisation
//! (Goodhart): the proxy reward climbs while the oracle's harmlessness or helpfulness falls.

use plotters::prelude::*;

/// One checkpoint of a run, as the oracle measured it.
#[derive(Debug, Clone, PartialEq)]
pub struct OraclePoint {
    /// The checkpoint's step (0: the starting policy).
    pub step: u64,
    /// Mean preference-model reward of the rollouts logged since the previous point.
    pub reward: Option<f64>,
    /// Share of red-team requests answered harmlessly and helpfully.
    pub harmless_helpful: f64,
    /// Share of red-team requests evaded.
    pub evasive: f64,
    /// Share of red-team requests answered harmfully.
    pub harmful: f64,
    /// Share of benign requests answered helpfully.
    pub helpful: f64,
}

/// The oracle's rates (left axis) and the PM reward (right axis) against the step.
pub fn oracle_curve_svg(points: &[OraclePoint], title: &str) -> Result<String, String> {
    let mut svg = String::new();
    draw(points, title, &mut svg).map_err(|e| format!("drawing the RL curve: {e}"))?;
    Ok(svg)
}

fn draw(
    points: &[OraclePoint],
    title: &str,
    svg: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (760, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_step = points.iter().map(|p| p.step).max().unwrap_or(1).max(1) as f64;
    let rewards: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| Some((p.step as f64, p.reward?)))
        .collect();
    let (lo, hi) = rewards
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, r)| {
            (lo.min(r), hi.max(r))
        });
    let (lo, hi) = if lo.is_finite() {
        let pad = ((hi - lo) * 0.1).max(1e-3);
        (lo - pad, hi + pad)
    } else {
        (0.0, 1.0)
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0f64..max_step, 0f64..1.02f64)?
        .set_secondary_coord(0f64..max_step, lo..hi);
    chart
        .configure_mesh()
        .x_desc("RL step")
        .y_desc("oracle rate")
        .x_labels(8)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(6)
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("preference-model reward")
        .y_labels(6)
        .draw()?;
    type Pick = fn(&OraclePoint) -> f64;
    let series: [(&str, Pick, RGBColor); 4] = [
        (
            "harmless & helpful (red-team)",
            |p| p.harmless_helpful,
            RGBColor(30, 140, 60),
        ),
        ("evasive (red-team)", |p| p.evasive, RGBColor(150, 150, 150)),
        ("harmful (red-team)", |p| p.harmful, RGBColor(200, 40, 40)),
        ("helpful (benign)", |p| p.helpful, RGBColor(30, 90, 200)),
    ];
    for (label, pick, color) in series {
        let line: Vec<(f64, f64)> = points.iter().map(|p| (p.step as f64, pick(p))).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    let black = RGBColor(20, 20, 20);
    chart
        .draw_secondary_series(DashedLineSeries::new(
            rewards.clone(),
            6,
            4,
            black.stroke_width(2),
        ))?
        .label("PM reward (right axis)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], black.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_has_every_series_and_a_point_per_checkpoint() {
        let points: Vec<OraclePoint> = (0..3)
            .map(|i| OraclePoint {
                step: i * 10,
                reward: Some(i as f64),
                harmless_helpful: 0.9,
                evasive: 0.1,
                harmful: 0.0,
                helpful: 0.9 - 0.1 * i as f64,
            })
            .collect();
        let svg = oracle_curve_svg(&points, "β = 0").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("β = 0"));
        for label in [
            "harmless &amp; helpful",
            "evasive",
            "harmful",
            "helpful (benign)",
            "PM reward",
        ] {
            assert!(svg.contains(label), "{label}");
        }
        // Four oracle series × three checkpoints.
        assert_eq!(svg.matches("<circle").count(), 12);
    }
}
