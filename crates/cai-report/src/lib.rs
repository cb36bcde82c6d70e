//! cai-report: every figure cai draws and the run report, each a function from plain data
//! (numbers, labels, records) to SVG or HTML text. Low in the stack: it knows nothing of models
//! or training, so any crate can draw with it and callers pass the data they hold.
#![deny(missing_docs)]
