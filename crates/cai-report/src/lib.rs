//! cai-report: every figure cai draws and the run report, each a function from plain data
//! (numbers, labels, records) to SVG or HTML text. Low in the stack: it knows nothing of models
//! or training, so any crate can draw with it and callers pass the data they hold.
#![deny(missing_docs)]

pub mod document;
pub mod elo;
pub mod figures;
pub mod oracle_curve;
pub mod reliability;
pub mod rl;
pub mod safety;
pub mod scaling;

use plotters::style::RGBColor;

/// Tableau 10: the colours of successive snapshots and series, in order.
const TABLEAU_10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
