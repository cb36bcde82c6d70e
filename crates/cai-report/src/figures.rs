//! The run report's figures as SVG text (plotters' SVG backend, no fonts needed): metric
//! curves over training steps, and measures of the snapshots against each other or against
//! size. A figure that cannot be drawn becomes a line of HTML saying why.

use plotters::prelude::*;

use crate::TABLEAU_10;

/// Width and height of a figure in pixels.
const WIDTH: u32 = 520;
const HEIGHT: u32 = 340;

/// Series take the first six colours of Tableau 10 in turn.
const SERIES_COLOURS: usize = 6;

/// A named series of (x, y) points.
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// Its points, in drawing order.
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

/// The corner of the plot where the legend covers the least of the lines (upper right on a
/// tie), and how much it covers there (points sampled along each line): each corner's box is
/// the outer 40 % of the x range and 35 % of the y range.
fn legend_corner(series: &[Series], x: (f64, f64), y: (f64, f64)) -> (SeriesLabelPosition, usize) {
    let fx = |v: f64| (v - x.0) / (x.1 - x.0).max(1e-12);
    let fy = |v: f64| (v - y.0) / (y.1 - y.0).max(1e-12);
    let mut samples = Vec::new();
    for s in series {
        samples.extend(s.points.first().map(|p| (fx(p.0), fy(p.1))));
        for w in s.points.windows(2) {
            let (a, b) = ((fx(w[0].0), fy(w[0].1)), (fx(w[1].0), fy(w[1].1)));
            samples.extend((1..=16).map(|k| {
                let t = f64::from(k) / 16.0;
                (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
            }));
        }
    }
    let in_box = |right: bool, upper: bool| {
        samples
            .iter()
            .filter(|&&(px, py)| {
                (if right { px > 0.6 } else { px < 0.4 })
                    && (if upper { py > 0.65 } else { py < 0.35 })
            })
            .count()
    };
    [
        (SeriesLabelPosition::UpperRight, in_box(true, true)),
        (SeriesLabelPosition::UpperLeft, in_box(false, true)),
        (SeriesLabelPosition::LowerRight, in_box(true, false)),
        (SeriesLabelPosition::LowerLeft, in_box(false, false)),
    ]
    .into_iter()
    .min_by_key(|(_, n)| *n)
    .unwrap_or((SeriesLabelPosition::UpperRight, 0))
}

/// Lines over a shared x axis (training curves): one colour per series, a legend.
pub fn lines(title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> String {
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
    let (y0, mut y1) = range(ys, 0.08);
    let x1 = x1.max(x0 + 1.0);
    // The legend goes in the corner the lines leave freest; when every corner is crossed, the
    // y axis grows at the top by the legend's height, and the legend sits there.
    let mut corner = legend_corner(series, (x0, x1), (y0, y1)).0;
    let has_legend = series.len() > 1 || series.iter().any(|s| !s.name.is_empty());
    if has_legend && legend_corner(series, (x0, x1), (y0, y1)).1 > 0 {
        let plot_height = f64::from(HEIGHT) - 80.0;
        let legend = (18.0 * series.len() as f64 + 20.0) / plot_height;
        y1 += (y1 - y0) * legend / (1.0 - legend);
        corner = SeriesLabelPosition::UpperRight;
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
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
    for (i, s) in series.iter().enumerate() {
        let colour = TABLEAU_10[i % SERIES_COLOURS];
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
    if has_legend {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .position(corner)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Width of the legend beside a figure against size.
const LEGEND_WIDTH: u32 = 120;

/// A measure against model size: one series per snapshot, a marker at every size whose shape
/// differs between series (so that coinciding series stay visible), lines between sizes, a
/// logarithmic x axis padded so that no marker sits on the frame, the y axis the whole of
/// [0, 1] (every plotted measure is a rate), and the legend beside the plot, where it hides
/// no point.
pub fn against_size(title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> String {
    let mut svg = String::new();
    match draw_against_size(title, x_desc, y_desc, series, &mut svg) {
        Ok(()) => svg,
        Err(e) => format!("<p>(figure {title}: {e})</p>"),
    }
}

/// The x range of a log axis holding `xs` (positive), padded by a quarter of a decade's
/// fraction on each side; a single size gets a factor of two either way.
fn log_range(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = xs
        .filter(|x| x.is_finite() && *x > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
    if !lo.is_finite() {
        return (0.1, 10.0);
    }
    if hi / lo < 1.5 {
        return (lo / 2.0, hi * 2.0);
    }
    let pad = (hi / lo).powf(0.08);
    (lo / pad, hi * pad)
}

/// Draw marker number `shape` (filled circle, triangle, cross, hollow square, hollow circle, in
/// turn) in `colour` at the
/// pixel `at` of `area`.
fn marker(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    shape: usize,
    at: (i32, i32),
    colour: RGBColor,
) -> Result<(), Box<dyn std::error::Error>> {
    // Filled markers first, then hollow ones larger than them, so that a later series at the
    // same value rings an earlier one instead of covering it.
    let hollow = colour.stroke_width(2);
    match shape % 5 {
        0 => area.draw(&Circle::new(at, 4, colour.filled()))?,
        1 => area.draw(&TriangleMarker::new(at, 6, colour.filled()))?,
        2 => area.draw(&Cross::new(at, 5, hollow))?,
        3 => area.draw(&Rectangle::new(
            [(at.0 - 6, at.1 - 6), (at.0 + 6, at.1 + 6)],
            hollow,
        ))?,
        _ => area.draw(&Circle::new(at, 10, hollow))?,
    }
    Ok(())
}

fn draw_against_size(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    svg: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (WIDTH + LEGEND_WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, legend) = root.split_horizontally(WIDTH);
    // The x axis is log10 of the size, ticked and labelled at each size measured.
    let (x0, x1) = log_range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let log = |x: f64| x.log10();
    let mut sizes: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(log(x0)..log(x1), -0.04..1.04)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(0)
        .y_labels(6)
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(230, 230, 230))
        .draw()?;
    for &x in &sizes {
        let (px, py) = chart.backend_coord(&(log(x), -0.04));
        root.draw(&PathElement::new([(px, py), (px, py + 5)], BLACK))?;
        root.draw(&Text::new(
            format!("{x:.1}"),
            (px - 9, py + 7),
            ("sans-serif", 12).into_font(),
        ))?;
    }
    for (i, s) in series.iter().enumerate() {
        let colour = TABLEAU_10[i % SERIES_COLOURS];
        if s.points.len() > 1 {
            chart.draw_series(LineSeries::new(
                s.points.iter().map(|&(x, y)| (log(x), y)),
                colour.stroke_width(2),
            ))?;
        }
        for p in &s.points {
            marker(&root, i, chart.backend_coord(&(log(p.0), p.1)), colour)?;
        }
    }
    // Colours and markers follow the series' order in every figure; a series with no point
    // here (a measure the snapshot lacks) is left out of this legend.
    let drawn = series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.points.is_empty());
    for (row, (i, s)) in drawn.enumerate() {
        let colour = TABLEAU_10[i % SERIES_COLOURS];
        let y = 48 + 22 * row as i32;
        legend.draw(&PathElement::new([(4, y), (28, y)], colour.stroke_width(2)))?;
        marker(&legend, i, (16, y), colour)?;
        legend.draw(&Text::new(
            s.name.clone(),
            (34, y - 7),
            ("sans-serif", 13).into_font(),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// A labelled point of a scatter plot.
pub struct Point {
    /// Its label beside it.
    pub label: String,
    /// Its x coordinate.
    pub x: f64,
    /// Its y coordinate.
    pub y: f64,
}

/// Labelled points on fixed [0, 1] axes, with a line through the points of `path` in order
/// (the RL checkpoints): the harmlessness-against-helpfulness view of the snapshots.
pub fn scatter(
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
        let colour = TABLEAU_10[i % SERIES_COLOURS];
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
    fn figures_against_size_name_every_series_beside_the_plot() {
        let series = |name: &str| Series {
            name: name.into(),
            points: vec![(1.6, 0.2), (5.2, 0.0)],
        };
        let svg = against_size(
            "harmful rate",
            "parameters",
            "rate",
            &[series("sl-cai"), series("rl-cai")],
        );
        assert!(
            svg.starts_with("<svg") && svg.contains("sl-cai") && svg.contains("rl-cai"),
            "{svg}"
        );
        assert!(
            svg.contains(&format!("width=\"{}\"", WIDTH + LEGEND_WIDTH)),
            "{svg}"
        );
    }

    #[test]
    fn legends_go_where_the_lines_are_not() {
        let falling = Series {
            name: "loss".into(),
            points: (0..10)
                .map(|i| (f64::from(i), 9.0 - f64::from(i)))
                .collect(),
        };
        let corner = legend_corner(&[falling], (0.0, 9.0), (0.0, 9.0));
        assert!(
            matches!(corner, (SeriesLabelPosition::UpperRight, 0)),
            "{corner:?}"
        );
        let rising = Series {
            name: "reward".into(),
            points: (0..10).map(|i| (f64::from(i), f64::from(i))).collect(),
        };
        let corner = legend_corner(&[rising], (0.0, 9.0), (0.0, 9.0));
        assert!(
            matches!(corner, (SeriesLabelPosition::UpperLeft, 0)),
            "{corner:?}"
        );
        // Two flat lines, low and high, cross every corner.
        let flat = |y: f64| Series {
            name: format!("{y}"),
            points: vec![(0.0, y), (9.0, y)],
        };
        let corner = legend_corner(&[flat(1.0), flat(8.0)], (0.0, 9.0), (0.0, 9.0));
        assert!(corner.1 > 0, "{corner:?}");
    }

    #[test]
    fn log_ranges_pad_both_ends() {
        let (lo, hi) = log_range([1.6, 5.2, 15.7].into_iter());
        assert!(lo < 1.6 && lo > 1.0 && hi > 15.7 && hi < 25.0, "{lo} {hi}");
        let (lo, hi) = log_range([5.2].into_iter());
        assert!(lo < 5.2 && hi > 5.2);
        assert_eq!(log_range([0.0, f64::NAN].into_iter()), (0.1, 10.0));
    }

    #[test]
    fn ranges_pad_flat_series() {
        let (lo, hi) = range([0.5, 0.5].into_iter(), 0.1);
        assert!(lo < 0.5 && hi > 0.5);
        assert_eq!(range(std::iter::empty(), 0.1), (0.0, 1.0));
    }
}
