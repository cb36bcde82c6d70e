//! Progress of a training run on stderr: a bar over optimiser steps whose message shows the
//! latest loss, learning rate, gradient norm and throughput.

use cai_train::{MetricRecord, Split};
use indicatif::{ProgressBar, ProgressStyle};

/// The latest numbers, shown as the progress bar's message.
pub struct ShownMetrics {
    /// The bar's label ("sft").
    label: &'static str,
    /// Whether the first record has turned the spinner into a bar.
    pub started: bool,
    train: String,
    eval: Option<String>,
}

impl ShownMetrics {
    /// Nothing shown yet; the bar will be labelled `label`.
    pub fn new(label: &'static str) -> Self {
        Self {
            label,
            started: false,
            train: String::new(),
            eval: None,
        }
    }

    /// Turn the loading spinner into a bar over steps at the first record, then show each.
    pub fn update(&mut self, bar: &ProgressBar, record: &MetricRecord, total_steps: u64) {
        if !self.started {
            self.started = true;
            bar.disable_steady_tick();
            bar.set_style(steps_style(self.label));
            bar.set_length(total_steps);
        }
        match record.split {
            Split::Train => {
                bar.set_position(record.step);
                let mut text = format!("loss {:.4}", record.loss);
                if let Some(lr) = record.lr {
                    text += &format!(" lr {lr:.2e}");
                }
                if let Some(norm) = record.grad_norm {
                    text += &format!(" grad {norm:.3}");
                }
                if let Some(speed) = record.tokens_per_s {
                    text += &format!(" {speed:.0} tok/s");
                }
                self.train = text + &extras(record);
            }
            Split::Eval => self.eval = Some(format!("eval {:.4}{}", record.loss, extras(record))),
        }
        let message = match &self.eval {
            Some(eval) => format!("{} {eval}", self.train),
            None => self.train.clone(),
        };
        // Without a terminal the bar is hidden; -v then logs each record instead.
        if bar.is_hidden() {
            tracing::info!(step = record.step, split = ?record.split, "{message}");
        }
        bar.set_message(message);
    }
}

/// A method's own numbers (distillation's `agreement`), as ` name value` pairs.
fn extras(record: &MetricRecord) -> String {
    record
        .extra
        .iter()
        .filter_map(|(name, value)| value.as_f64().map(|v| format!(" {name} {v:.3}")))
        .collect()
}

/// A bar over optimiser steps, the latest metrics as its message.
fn steps_style(label: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{label} [{{bar:30.cyan/blue}}] {{pos}}/{{len}} {{msg}} eta {{eta}}"
    ))
    .expect("a valid progress template")
    .progress_chars("=> ")
}
