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
pub mod scaling;
