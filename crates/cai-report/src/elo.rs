//! The CAI paper's main figure as an SVG: harmlessness Elo (y) against helpfulness Elo (x),
//! one labelled point per snapshot with its bootstrap intervals as error bars on both axes,
//! and a line through the checkpoints of each series — snapshots whose names differ only in
//! a trailing number (`rl-step-10`, `rl-step-20`, …), joined in step order.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::TABLEAU_10;

/// Pixels of the figure.
const SIZE: (u32, u32) = (760, 600);

/// A rating on one axis with its bootstrap interval, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    /// Elo, the reference player at 0.
    pub elo: f64,
    /// Lower end of the interval.
    pub lo: Option<f64>,
    /// Upper end of the interval.
    pub hi: Option<f64>,
}

/// One snapshot's place in the figure.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotPoint {
    /// The snapshot's name (its label).
    pub name: String,
    /// Its helpfulness rating (x).
    pub helpfulness: Rating,
    /// Its harmlessness rating (y).
    pub harmlessness: Rating,
}

/// A name split into its series stem and trailing step (`rl-step-20` → `rl-step-`, 20);
/// `None` for a name without a trailing number or with nothing before it.
pub fn checkpoint_step(name: &str) -> Option<(&str, u64)> {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() == name.len() || stem.is_empty() {
        return None;
    }
    Some((stem, name[stem.len()..].parse().ok()?))
}

/// The checkpoint series among `names`: each stem shared by at least two names, with the
/// indices of its names in step order; in order of first appearance.
pub fn checkpoint_series(names: &[String]) -> Vec<(String, Vec<usize>)> {
    let mut series: Vec<(String, Vec<(u64, usize)>)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let Some((stem, step)) = checkpoint_step(name) else {
            continue;
        };
        match series.iter_mut().find(|(s, _)| s == stem) {
            Some((_, members)) => members.push((step, i)),
            None => series.push((stem.to_owned(), vec![(step, i)])),
        }
    }
    series
        .into_iter()
        .filter(|(_, members)| members.len() >= 2)
        .map(|(stem, mut members)| {
            members.sort_unstable();
            (stem, members.into_iter().map(|(_, i)| i).collect())
        })
        .collect()
}

/// The figure as SVG text, titled `title`.
pub fn elo_svg(points: &[PlotPoint], title: &str) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, points, title).map_err(|e| format!("drawing the Elo plot: {e}"))?;
    }
    Ok(svg)
}

/// The range covering `values` (points and interval ends), padded by 12 % on each side and
/// at least 100 Elo wide.
fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let pad = ((hi - lo) * 0.12).max(50.0);
    (lo - pad)..(hi + pad)
}

/// The corner of the plot with the fewest points near it, for the legend.
fn legend_corner(
    points: &[PlotPoint],
    x: &std::ops::Range<f64>,
    y: &std::ops::Range<f64>,
) -> SeriesLabelPosition {
    let corners = [
        (SeriesLabelPosition::LowerRight, 1.0, 0.0),
        (SeriesLabelPosition::UpperLeft, 0.0, 1.0),
        (SeriesLabelPosition::UpperRight, 1.0, 1.0),
        (SeriesLabelPosition::LowerLeft, 0.0, 0.0),
    ];
    let crowding = |cx: f64, cy: f64| {
        points
            .iter()
            .filter(|p| {
                let u = (p.helpfulness.elo - x.start) / (x.end - x.start);
                let v = (p.harmlessness.elo - y.start) / (y.end - y.start);
                (u - cx).abs() < 0.4 && (v - cy).abs() < 0.35
            })
            .count()
    };
    corners
        .into_iter()
        .min_by_key(|&(_, cx, cy)| crowding(cx, cy))
        .map(|(corner, _, _)| corner)
        .expect("four corners")
}

fn ends(r: &Rating) -> [f64; 3] {
    [r.elo, r.lo.unwrap_or(r.elo), r.hi.unwrap_or(r.elo)]
}

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    points: &[PlotPoint],
    title: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let x_range = range(points.iter().flat_map(|p| ends(&p.helpfulness)));
    let y_range = range(points.iter().flat_map(|p| ends(&p.harmlessness)));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.clone(), y_range.clone())?;
    chart
        .configure_mesh()
        .x_desc("helpfulness Elo")
        .y_desc("harmlessness Elo")
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 12))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    // The reference's lines: 0 Elo on each axis.
    let grey = RGBColor(150, 150, 150).stroke_width(1);
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(x_range.start, 0.0), (x_range.end, 0.0)],
        grey,
    )))?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, y_range.start), (0.0, y_range.end)],
        grey,
    )))?;

    let names: Vec<String> = points.iter().map(|p| p.name.clone()).collect();
    let series = checkpoint_series(&names);
    let mut colour_of = vec![None; points.len()];
    let mut next = 0;
    for (stem, members) in &series {
        let colour = TABLEAU_10[next % TABLEAU_10.len()];
        next += 1;
        for &i in members {
            colour_of[i] = Some(colour);
        }
        let line = members
            .iter()
            .map(|&i| (points[i].helpfulness.elo, points[i].harmlessness.elo));
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))?
            .label(format!("{stem}* ({} checkpoints)", members.len()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    for (i, point) in points.iter().enumerate() {
        let in_series = colour_of[i].is_some();
        let colour = *colour_of[i].get_or_insert_with(|| {
            next += 1;
            TABLEAU_10[(next - 1) % TABLEAU_10.len()]
        });
        let (x, y) = (point.helpfulness.elo, point.harmlessness.elo);
        let bar = colour.mix(0.6).stroke_width(1);
        let cap_x = (x_range.end - x_range.start) * 0.008;
        let cap_y = (y_range.end - y_range.start) * 0.008;
        let mut bars = Vec::new();
        if let (Some(lo), Some(hi)) = (point.helpfulness.lo, point.helpfulness.hi) {
            bars.push(vec![(lo, y), (hi, y)]);
            bars.push(vec![(lo, y - cap_y), (lo, y + cap_y)]);
            bars.push(vec![(hi, y - cap_y), (hi, y + cap_y)]);
        }
        if let (Some(lo), Some(hi)) = (point.harmlessness.lo, point.harmlessness.hi) {
            bars.push(vec![(x, lo), (x, hi)]);
            bars.push(vec![(x - cap_x, lo), (x + cap_x, lo)]);
            bars.push(vec![(x - cap_x, hi), (x + cap_x, hi)]);
        }
        chart.draw_series(bars.into_iter().map(|b| PathElement::new(b, bar)))?;
        let marker = chart.draw_series(std::iter::once(Circle::new((x, y), 5, colour.filled())))?;
        if !in_series {
            marker
                .label(point.name.clone())
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, colour.filled()));
        }
        chart.draw_series(std::iter::once(
            EmptyElement::at((x, y))
                + Text::new(point.name.clone(), (8, -18), ("sans-serif", 13).into_font()),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(legend_corner(points, &x_range, &y_range))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rating(elo: f64, half: f64) -> Rating {
        Rating {
            elo,
            lo: Some(elo - half),
            hi: Some(elo + half),
        }
    }

    #[test]
    fn checkpoints_are_grouped_by_stem_in_step_order() {
        assert_eq!(checkpoint_step("rl-step-20"), Some(("rl-step-", 20)));
        assert_eq!(checkpoint_step("sl-cai"), None);
        assert_eq!(checkpoint_step("42"), None);
        let names: Vec<String> = [
            "base",
            "rl-step-20",
            "sl-cai",
            "rl-step-5",
            "rl-step-10",
            "v2",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            checkpoint_series(&names),
            vec![("rl-step-".to_owned(), vec![3, 4, 1])]
        );
    }

    #[test]
    fn the_svg_has_a_labelled_point_per_snapshot_and_a_line_through_the_series() {
        let points: Vec<PlotPoint> = [
            ("base", 0.0, 0.0),
            ("sl-cai", -20.0, 150.0),
            ("rl-step-10", -10.0, 200.0),
            ("rl-step-20", -30.0, 260.0),
        ]
        .iter()
        .map(|&(name, x, y)| PlotPoint {
            name: name.into(),
            helpfulness: rating(x, 30.0),
            harmlessness: rating(y, 40.0),
        })
        .collect();
        let svg = elo_svg(&points, "Harmlessness vs helpfulness Elo").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Harmlessness vs helpfulness Elo"));
        assert!(svg.contains("helpfulness Elo") && svg.contains("harmlessness Elo"));
        for name in ["base", "sl-cai", "rl-step-10", "rl-step-20"] {
            assert!(svg.contains(&format!("\n{name}\n</text>")), "label {name}");
        }
        assert!(svg.contains("rl-step-* (2 checkpoints)"));
        // A point per snapshot, and legend markers for the two snapshots outside the series.
        assert_eq!(svg.matches("<circle").count(), 4 + 2);
        // Every (finite) coordinate is a number: no NaN leaked into the drawing.
        assert!(!svg.contains("NaN"));
    }
}
