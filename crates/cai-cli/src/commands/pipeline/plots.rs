//! The report's figures as SVG text (plotters' SVG backend, no fonts needed): metric curves
//! over training steps, and measures of the snapshots against each other or against size.

use plotters::prelude::*;

/// Width and height of a figure in pixels.
const WIDTH: u32 = 520;
const HEIGHT: u32 = 340;

/// The colours of successive series.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A named series of (x, y) points.
pub(super) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The range of `values`, padded so a flat series still has height.
fn range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(1e-9);
    let margin = (span * pad).max(if hi == lo { lo.abs() * 0.1 + 0.05 } else { 0.0 });
    (lo - margin, hi + margin)
}

/// Lines over a shared x axis (training curves): one colour per series, a legend.
pub(super) fn lines(title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> String {
    let mut svg = String::new();
    let drawn = draw_lines(title, x_desc, y_desc, series, &mut svg);
    match drawn {
        Ok(()) => svg,
        Err(e) => format!("<p>(figure {title}: {e})</p>"),
    }
}

fn draw_lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    svg: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (x0, x1) = range(xs, 0.0);
    let (y0, y1) = range(ys, 0.08);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(6)
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(230, 230, 230))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let style = colour.stroke_width(2);
        if s.points.len() == 1 {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?
                .label(s.name.clone())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
        } else {
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
        }
    }
    if series.len() > 1 || series.iter().any(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// A labelled point of a scatter plot.
pub(super) struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
}

/// Labelled points on fixed [0, 1] axes, with a line through the points of `path` in order
/// (the RL checkpoints): the harmlessness-against-helpfulness view of the snapshots.
pub(super) fn scatter(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[Point],
    path: &[(f64, f64)],
) -> String {
    let mut svg = String::new();
    match draw_scatter(title, x_desc, y_desc, points, path, &mut svg) {
        Ok(()) => svg,
        Err(e) => format!("<p>(figure {title}: {e})</p>"),
    }
}

fn draw_scatter(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[Point],
    path: &[(f64, f64)],
    svg: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = range(points.iter().map(|p| p.x).chain([0.0, 1.0]), 0.06);
    let (y0, y1) = range(points.iter().map(|p| p.y).chain([0.0, 1.0]), 0.06);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(6)
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(230, 230, 230))
        .draw()?;
    if path.len() > 1 {
        chart.draw_series(LineSeries::new(
            path.iter().copied(),
            RGBColor(120, 120, 120).stroke_width(1),
        ))?;
    }
    for (i, p) in points.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        chart.draw_series(std::iter::once(Circle::new((p.x, p.y), 5, colour.filled())))?;
        // Labels alternate above and below so that close points stay readable.
        let dy = if i % 2 == 0 { -16 } else { 8 };
        chart.draw_series(std::iter::once(
            EmptyElement::at((p.x, p.y))
                + Text::new(
                    p.label.clone(),
                    (8, dy),
                    ("sans-serif", 13).into_font().color(&colour),
                ),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_svg_with_their_labels() {
        let svg = lines(
            "loss",
            "step",
            "loss",
            &[Series {
                name: "train".into(),
                points: vec![(1.0, 2.0), (2.0, 1.5)],
            }],
        );
        assert!(svg.starts_with("<svg") && svg.contains("train"), "{svg}");
        let svg = scatter(
            "snapshots",
            "helpful",
            "harmless",
            &[Point {
                label: "sl-cai".into(),
                x: 0.9,
                y: 1.0,
            }],
            &[],
        );
        assert!(svg.contains("sl-cai"), "{svg}");
    }

    #[test]
    fn ranges_pad_flat_series() {
        let (lo, hi) = range([0.5, 0.5].into_iter(), 0.1);
        assert!(lo < 0.5 && hi > 0.5);
        assert_eq!(range(std::iter::empty(), 0.1), (0.0, 1.0));
    }
}
