//! A report as HTML and Markdown side by side: headings, paragraphs, tables, inline SVG
//! figures (files beside the Markdown) and collapsed blocks of texts, and the self-contained
//! HTML page of a run's report.

use std::fmt::Write as _;

/// A report being built: HTML and Markdown side by side, and its figures.
pub struct Document {
    title: String,
    description: String,
    html: String,
    md: String,
    figures: Vec<(String, String)>,
}

impl Document {
    /// A report titled `title`, with `description` (may be empty) under the title.
    pub fn new(title: &str, description: &str) -> Self {
        let mut md = String::new();
        let _ = writeln!(md, "# {title}\n");
        if !description.is_empty() {
            let _ = writeln!(md, "{description}\n");
        }
        Self {
            title: title.to_owned(),
            description: description.to_owned(),
            html: String::new(),
            md,
            figures: Vec::new(),
        }
    }

    /// A section heading.
    pub fn heading(&mut self, text: &str) {
        let _ = writeln!(self.html, "<h2>{}</h2>", esc(text));
        let _ = writeln!(self.md, "\n## {text}\n");
    }

    /// A paragraph of text.
    pub fn para(&mut self, text: &str) {
        let _ = writeln!(self.html, "<p>{}</p>", esc(text));
        let _ = writeln!(self.md, "{text}\n");
    }

    /// A table of text cells under `head`.
    pub fn table(&mut self, head: &[&str], rows: &[Vec<String>]) {
        self.html.push_str("<table><thead><tr>");
        for h in head {
            let _ = write!(self.html, "<th>{}</th>", esc(h));
        }
        self.html.push_str("</tr></thead><tbody>\n");
        for row in rows {
            self.html.push_str("<tr>");
            for cell in row {
                let _ = write!(self.html, "<td>{}</td>", esc(cell));
            }
            self.html.push_str("</tr>\n");
        }
        self.html.push_str("</tbody></table>\n");
        let _ = writeln!(self.md, "| {} |", head.join(" | "));
        let _ = writeln!(self.md, "|{}", "---|".repeat(head.len()));
        for row in rows {
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(self.md, "| {} |", cells.join(" | "));
        }
        self.md.push('\n');
    }

    /// A figure: inline in the HTML, a file beside the Markdown.
    pub fn figure(&mut self, name: &str, svg: String) {
        let _ = writeln!(self.html, "<figure>{svg}</figure>");
        let _ = writeln!(self.md, "![{name}](figures/{name}.svg)\n");
        self.figures.push((name.to_owned(), svg));
    }

    /// Figures side by side (nothing for none).
    pub fn figures_row(&mut self, figures: Vec<(&str, String)>) {
        if figures.is_empty() {
            return;
        }
        self.html.push_str("<div class=\"row\">");
        let mut md = String::new();
        for (name, svg) in figures {
            let _ = write!(self.html, "<figure>{svg}</figure>");
            let _ = write!(md, "![{name}](figures/{name}.svg) ");
            self.figures.push((name.to_owned(), svg));
        }
        self.html.push_str("</div>\n");
        let _ = writeln!(self.md, "{}\n", md.trim_end());
    }

    /// A collapsed block of labelled texts.
    pub fn details(&mut self, summary: &str, parts: &[(String, String)]) {
        let _ = write!(self.html, "<details><summary>{}</summary>", esc(summary));
        let _ = writeln!(self.md, "<details><summary>{}</summary>\n", esc(summary));
        for (label, text) in parts {
            let _ = write!(
                self.html,
                "<div class=\"turn\"><span class=\"who\">{}</span><pre>{}</pre></div>",
                esc(label),
                esc(text.trim())
            );
            let _ = writeln!(self.md, "**{label}**\n\n```text\n{}\n```\n", text.trim());
        }
        self.html.push_str("</details>\n");
        self.md.push_str("</details>\n\n");
    }

    /// The Markdown twin (figures linked from `figures/NAME.svg`).
    pub fn markdown(&self) -> &str {
        &self.md
    }

    /// The figures by name, as SVG text, in order.
    pub fn figures(&self) -> &[(String, String)] {
        &self.figures
    }

    /// The self-contained HTML page of a run's report (inline CSS and SVG, nothing fetched):
    /// the title, a line naming the run directory and its stage time, then the sections.
    pub fn run_page(&self, run_dir: &str, stage_seconds: f64) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n\
             <p class=\"sub\">{} — run directory <code>{}</code>, {:.0} s of stage time</p>\n{}</body></html>\n",
            esc(&self.title),
            esc(&self.title),
            esc(&self.description),
            esc(run_dir),
            stage_seconds,
            self.html
        )
    }
}

/// HTML-escape text.
pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report's style sheet, inlined into the page.
const STYLE: &str = "
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1120px;margin:2em auto;padding:0 1.2em;color:#1f2328;line-height:1.45}
h1{margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
.sub{color:#57606a;margin-top:0}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #d0d7de;padding:.3em .65em;text-align:left;vertical-align:top}
th{background:#f6f8fa}tbody tr:nth-child(even){background:#fbfcfd}
td:not(:first-child){font-variant-numeric:tabular-nums}
.row{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:.6em 0;border:1px solid #d0d7de;border-radius:6px;padding:4px;background:#fff;display:inline-block}
details{border:1px solid #d0d7de;border-radius:6px;padding:.4em .8em;margin:.5em 0;background:#fafbfc}
summary{cursor:pointer;font-weight:600}
.turn{margin:.4em 0}.who{font-size:.8em;color:#57606a;text-transform:uppercase;letter-spacing:.04em}
pre{white-space:pre-wrap;word-break:break-word;background:#fff;border:1px solid #eaeef2;border-radius:4px;padding:.4em .6em;margin:.2em 0;font-size:.88em}
code{background:#f6f8fa;padding:.1em .3em;border-radius:3px;font-size:.88em}
.ok{color:#1a7f37}.bad{color:#cf222e}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn html_is_escaped_and_markdown_tables_escape_bars() {
        let mut doc = Document::new("run <1>", "");
        doc.heading("a & b");
        doc.table(&["x", "y"], &[vec!["1|2".into(), "<b>".into()]]);
        doc.figure("loss", "<svg></svg>".into());
        let page = doc.run_page("/tmp/r", 12.4);
        assert!(page.contains("<title>run &lt;1&gt;</title>"), "{page}");
        assert!(page.contains("<h2>a &amp; b</h2>"));
        assert!(page.contains("<td>&lt;b&gt;</td>"));
        assert!(page.contains("<code>/tmp/r</code>, 12 s of stage time"));
        assert!(page.contains("<figure><svg></svg></figure>"));
        let md = doc.markdown();
        assert!(md.starts_with("# run <1>\n\n\n## a & b"), "{md}");
        assert!(md.contains("| 1\\|2 | <b> |"), "{md}");
        assert!(md.contains("![loss](figures/loss.svg)"));
        assert_eq!(
            doc.figures(),
            [("loss".to_owned(), "<svg></svg>".to_owned())]
        );
    }
}
