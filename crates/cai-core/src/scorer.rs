//! The `Scorer` trait: a scalar reward for each dialogue, from a preference model local or
//! remote, so that the stages that only read rewards (a PM judge) need no tensor library.

use crate::dialogue::Message;
use crate::Error;

/// What a reward (preference) model gives a stage: one scalar per dialogue, higher is better.
pub trait Scorer: Send + Sync {
    /// The reward of each dialogue: a conversation ending with the assistant's answer.
    fn rewards(&self, dialogues: &[Vec<Message>]) -> Result<Vec<f64>, Error>;
}
