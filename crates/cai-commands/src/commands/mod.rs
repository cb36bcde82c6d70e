//! One module per subcommand: its raw arguments, the validated config they become, and its run.

pub mod bench;
pub mod chat;
pub mod convert;
pub mod critique;
pub mod distill;
pub mod eval;
pub mod generate;
pub mod init_model;
pub mod lab;
pub mod label;
pub mod merge_lora;
pub mod pipeline;
pub mod rl;
pub mod score;
pub mod serve;
pub mod sft;
pub mod train_pm;
