//! A reliability diagram as an SVG: observed frequency against mean prediction per bin (a
//! point sized by the bin's share of the items), the diagonal of perfect calibration, and the
//! share of items per bin as grey bars along the bottom.

use plotters::prelude::*;

/// Pixels of the square plot.
const SIZE: u32 = 480;

/// One bin of a reliability table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    /// Its edges on the prediction axis.
    pub lo: f64,
    /// Upper edge.
    pub hi: f64,
    /// Items that fell in it.
    pub count: usize,
    /// Their mean prediction and mean outcome (`None` for an empty bin).
    pub point: Option<(f64, f64)>,
}

/// The calibration of `n` items in `bins`, with its expected calibration error.
#[derive(Debug, Clone, PartialEq)]
pub struct Reliability {
    /// Items measured.
    pub n: usize,
    /// Expected calibration error.
    pub ece: f64,
    /// The bins, lowest first.
    pub bins: Vec<Bin>,
}

/// The diagram as SVG text; `title` goes above it, with the ECE.
pub fn reliability_svg(calibration: &Reliability, title: &str) -> Result<String, String> {
    let mut svg = String::new();
    draw(calibration, title, &mut svg).map_err(|e| format!("drawing the reliability plot: {e}"))?;
    Ok(svg)
}

fn draw(
    calibration: &Reliability,
    title: &str,
    svg: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (SIZE, SIZE)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "{title} (ECE {:.3}, n = {})",
        calibration.ece, calibration.n
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("predicted probability")
        .y_desc("observed frequency")
        .x_labels(6)
        .y_labels(6)
        .draw()?;
    let n = calibration.n.max(1) as f64;
    chart.draw_series(calibration.bins.iter().filter(|b| b.count > 0).map(|b| {
        let share = b.count as f64 / n;
        Rectangle::new(
            [(b.lo, 0.0), (b.hi, share.min(1.0))],
            RGBColor(200, 200, 200).filled(),
        )
    }))?;
    chart.draw_series(LineSeries::new(
        [(0.0, 0.0), (1.0, 1.0)],
        BLACK.stroke_width(1),
    ))?;
    let points: Vec<(f64, f64, f64)> = calibration
        .bins
        .iter()
        .filter_map(|b| {
            let share = b.count as f64 / n;
            let (predicted, observed) = b.point?;
            Some((predicted, observed, share))
        })
        .collect();
    chart.draw_series(LineSeries::new(
        points.iter().map(|&(x, y, _)| (x, y)),
        BLUE.stroke_width(2),
    ))?;
    chart.draw_series(points.iter().map(|&(x, y, share)| {
        let radius = (3.0 + 9.0 * share.sqrt()).round() as i32;
        Circle::new((x, y), radius, BLUE.filled())
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_has_a_point_per_non_empty_bin_and_the_ece_in_its_title() {
        // Predictions 0.1, 0.15 (outcomes 0, 0), 0.8 (1) and 0.9 (0) in ten bins.
        let bins = (0..10)
            .map(|b| Bin {
                lo: f64::from(b) / 10.0,
                hi: f64::from(b + 1) / 10.0,
                count: [0, 2, 0, 0, 0, 0, 0, 0, 1, 1][b as usize],
                point: match b {
                    1 => Some((0.125, 0.0)),
                    8 => Some((0.8, 1.0)),
                    9 => Some((0.9, 0.0)),
                    _ => None,
                },
            })
            .collect();
        let c = Reliability {
            n: 4,
            ece: 0.3375,
            bins,
        };
        let svg = reliability_svg(&c, "preference model").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.trim_end().ends_with("</svg>"));
        // Bins [0.1, 0.2): mean 0.125, observed 0; [0.8, 0.9): 0.8 vs 1; [0.9, 1]: 0.9 vs 0.
        // ECE = 2/4 · 0.125 + 1/4 · 0.2 + 1/4 · 0.9 = 0.3375.
        assert!(svg.contains("preference model (ECE 0.338, n = 4)"), "{svg}");
        // Three non-empty bins: [0.1, 0.2), [0.8, 0.9) and [0.9, 1.0].
        assert_eq!(svg.matches("<circle").count(), 3);
    }
}
