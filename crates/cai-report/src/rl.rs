//! Plots of an RL run as SVG: the preference model's reward against KL(policy ‖ reference)
//! (the CAI and RLHF papers' reward-versus-KL curve), and reward and KL over the steps.

use plotters::prelude::*;

/// Steps in each running mean of the drawn lines (raw values are drawn as faint points).
const WINDOW: usize = 5;

/// One logged RL step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RlPoint {
    /// The step.
    pub step: f64,
    /// Mean KL(policy ‖ reference) of its responses, nats.
    pub kl: f64,
    /// Mean preference-model reward of its responses.
    pub reward: f64,
}

/// Trailing running mean over `WINDOW` values.
fn smooth(values: &[f64]) -> Vec<f64> {
    (0..values.len())
        .map(|i| {
            let from = i.saturating_sub(WINDOW - 1);
            values[from..=i].iter().sum::<f64>() / (i + 1 - from) as f64
        })
        .collect()
}

fn range(values: impl Iterator<Item = f64> + Clone) -> std::ops::Range<f64> {
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad)..(hi + pad)
}

/// The reward-versus-KL curve (left) and reward and KL over steps (right) as one SVG.
pub fn rl_curves_svg(points: &[RlPoint], title: &str) -> Result<String, String> {
    let mut svg = String::new();
    draw(points, title, &mut svg).map_err(|e| format!("drawing the RL curves: {e}"))?;
    Ok(svg)
}

fn draw(pts: &[RlPoint], title: &str, svg: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 18))?;
    let (left, right) = root.split_horizontally(480);
    let steps: Vec<f64> = pts.iter().map(|p| p.step).collect();
    let kl: Vec<f64> = pts.iter().map(|p| p.kl).collect();
    let reward: Vec<f64> = pts.iter().map(|p| p.reward).collect();
    let (kl_s, reward_s) = (smooth(&kl), smooth(&reward));

    let mut chart = ChartBuilder::on(&left)
        .caption("reward against KL", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(range(kl.iter().copied()), range(reward.iter().copied()))?;
    chart
        .configure_mesh()
        .x_desc("KL(policy ‖ reference), nats per response")
        .y_desc("preference-model reward")
        .x_labels(6)
        .y_labels(6)
        .draw()?;
    chart.draw_series(
        kl.iter()
            .zip(&reward)
            .map(|(&x, &y)| Circle::new((x, y), 2, RGBColor(150, 170, 220).filled())),
    )?;
    chart.draw_series(LineSeries::new(
        kl_s.iter().copied().zip(reward_s.iter().copied()),
        RGBColor(30, 70, 170).stroke_width(2),
    ))?;
    // Label the smoothed curve with its step at a few places.
    let n = pts.len();
    let marks: Vec<usize> = if n == 0 {
        Vec::new()
    } else {
        let mut m: Vec<usize> = (0..5).map(|i| i * (n - 1) / 4).collect();
        m.dedup();
        m
    };
    chart.draw_series(marks.iter().map(|&i| {
        EmptyElement::at((kl_s[i], reward_s[i]))
            + Circle::new((0, 0), 4, RGBColor(30, 70, 170).filled())
            + Text::new(
                format!("step {}", steps[i]),
                (6, -14),
                ("sans-serif", 12).into_font(),
            )
    }))?;

    let mut chart = ChartBuilder::on(&right)
        .caption("over training", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .right_y_label_area_size(56)
        .build_cartesian_2d(range(steps.iter().copied()), range(reward.iter().copied()))?
        .set_secondary_coord(range(steps.iter().copied()), range(kl.iter().copied()));
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("reward")
        .x_labels(6)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(6)
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("KL")
        .y_labels(6)
        .draw()?;
    let blue = RGBColor(30, 70, 170);
    let orange = RGBColor(220, 110, 20);
    chart
        .draw_series(LineSeries::new(
            steps.iter().copied().zip(reward_s.iter().copied()),
            blue.stroke_width(2),
        ))?
        .label("reward")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], blue.stroke_width(2)));
    chart
        .draw_secondary_series(LineSeries::new(
            steps.iter().copied().zip(kl_s.iter().copied()),
            orange.stroke_width(2),
        ))?
        .label("KL")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], orange.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_is_a_trailing_mean() {
        assert_eq!(smooth(&[1.0, 3.0, 5.0]), [1.0, 2.0, 3.0]);
        let long: Vec<f64> = (0..7).map(f64::from).collect();
        // The 7th value averages steps 2..=6.
        assert_eq!(smooth(&long)[6], 4.0);
    }

    #[test]
    fn the_svg_draws_a_point_per_step_and_labels_the_curve() {
        let points: Vec<RlPoint> = (1..=10)
            .map(|s| RlPoint {
                step: f64::from(s),
                kl: f64::from(s) * 0.1,
                reward: f64::from(s).ln(),
            })
            .collect();
        let svg = rl_curves_svg(&points, "PPO on the lab").unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("PPO on the lab"));
        for label in ["step 1\n", "step 3\n", "step 10\n"] {
            assert!(svg.contains(label), "no label {label:?}");
        }
        // 10 faint points and 5 step marks.
        assert_eq!(svg.matches("<circle").count(), 15);
    }
}
