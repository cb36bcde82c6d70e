//! The scaling report of `cai pipeline --sizes`: every snapshot's lab measures against the
//! base model's parameter count, as one figure per measure and a table, in HTML and Markdown.

use std::fmt::Write as _;

use crate::figures::{self, Series};

/// One snapshot of one model size.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRow {
    /// The size's name.
    pub size: String,
    /// Its base model's parameter count.
    pub params: usize,
    /// The snapshot's name.
    pub snapshot: String,
    /// Its value of each measure, in the order of the measures (`None`: not measured).
    pub values: Vec<Option<f64>>,
}

/// The report: the HTML page, its Markdown twin (figures linked from `figures/FIELD.svg`),
/// and the figures by measure field.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingReport {
    /// The self-contained page.
    pub html: String,
    /// The Markdown twin.
    pub md: String,
    /// (field, SVG) of each measure.
    pub figures: Vec<(String, String)>,
}

/// The report of `rows` on `measures` (field, title), each row holding one value per measure.
pub fn scaling_report(measures: &[(&str, &str)], rows: &[ScalingRow]) -> ScalingReport {
    let snapshots: Vec<&String> = rows.iter().fold(Vec::new(), |mut acc, r| {
        if !acc.contains(&&r.snapshot) {
            acc.push(&r.snapshot);
        }
        acc
    });
    let mut html = String::new();
    let mut md = String::from("# cai pipeline --sizes\n\n");
    let mut drawn = Vec::new();
    for (m, (field, title)) in measures.iter().enumerate() {
        let series: Vec<Series> = snapshots
            .iter()
            .map(|s| Series {
                name: (*s).clone(),
                points: rows
                    .iter()
                    .filter(|r| &&r.snapshot == s)
                    .filter_map(|r| Some(((r.params as f64 / 1e6), r.values[m]?)))
                    .collect(),
            })
            .collect();
        let svg = figures::against_size(title, "parameters (millions, log scale)", field, &series);
        let _ = write!(html, "<figure>{svg}</figure>");
        let _ = writeln!(md, "![{title}](figures/{field}.svg)");
        drawn.push(((*field).to_owned(), svg));
    }
    let fields: Vec<&str> = measures.iter().map(|m| m.0).collect();
    let _ = writeln!(
        md,
        "\n| size | parameters | snapshot | {} |",
        fields.join(" | ")
    );
    let _ = writeln!(md, "|{}", "---|".repeat(3 + measures.len()));
    let mut table = String::from("<table><tr><th>size</th><th>parameters</th><th>snapshot</th>");
    for field in &fields {
        let _ = write!(table, "<th>{field}</th>");
    }
    table.push_str("</tr>");
    for row in rows {
        let values: Vec<String> = row
            .values
            .iter()
            .map(|v| v.map_or("—".into(), |v| format!("{v:.3}")))
            .collect();
        let (size, params, snapshot) = (&row.size, row.params, &row.snapshot);
        let _ = writeln!(
            md,
            "| {size} | {params} | {snapshot} | {} |",
            values.join(" | ")
        );
        let _ = write!(
            table,
            "<tr><td>{size}</td><td>{params}</td><td>{snapshot}</td><td>{}</td></tr>",
            values.join("</td><td>")
        );
    }
    table.push_str("</table>");
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>cai pipeline \
         --sizes</title><style>body{{font-family:sans-serif;max-width:1340px;margin:2em auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}\
         figure{{display:inline-block;margin:.4em}}</style></head><body><h1>cai pipeline \
         --sizes</h1><p>Each lab model size taken through the recipe; every snapshot's lab \
         measures against the base model's parameter count. Each size's own report is \
         SIZE/report.html.</p>{html}{table}</body></html>\n"
    );
    ScalingReport {
        html: page,
        md,
        figures: drawn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_in_the_table_and_every_measure_has_a_figure() {
        let row = |size: &str, params, snapshot: &str, values: Vec<Option<f64>>| ScalingRow {
            size: size.into(),
            params,
            snapshot: snapshot.into(),
            values,
        };
        let rows = [
            row("small", 1_000_000, "base", vec![Some(1.0), Some(0.5)]),
            row("small", 1_000_000, "prompted", vec![Some(0.25), None]),
            row("base", 4_000_000, "base", vec![Some(0.75), Some(0.5)]),
        ];
        let report = scaling_report(&[("a", "rate a"), ("b", "rate b")], &rows);
        assert!(report
            .md
            .contains("| small | 1000000 | prompted | 0.250 | — |"));
        assert!(report
            .md
            .contains("| size | parameters | snapshot | a | b |"));
        assert!(report.md.contains("![rate b](figures/b.svg)"));
        assert_eq!(report.figures.len(), 2);
        assert!(report
            .html
            .contains("<td>base</td><td>4000000</td><td>base</td>"));
        assert_eq!(report.html.matches("<figure><svg").count(), 2);
    }
}
