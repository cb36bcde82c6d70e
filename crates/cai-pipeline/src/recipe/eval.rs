//! The `[eval]` table of a recipe: the snapshots measured and the measures (`[eval.lab]`,
//! `[eval.elo]`, `[eval.safety]`).

use serde::{Deserialize, Serialize};

use super::*;

/// `[eval]`: the snapshots measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalStage {
    /// Snapshots: base, prompted (the base with `data.context`), distilled, sl-cai, rl-cai;
    /// those whose stage is left out are skipped.
    #[serde(default = "all_snapshots")]
    pub snapshots: Vec<Snapshot>,
    /// Also measure the RL run's intermediate checkpoints (the Elo line).
    #[serde(default = "yes")]
    pub rl_checkpoints: bool,
    /// The lab's oracle measures (`cai lab eval`) on the held-out prompts of a lab world.
    pub lab: Option<LabEval>,
    /// Elo of the snapshots under a judge (`cai eval elo`) on the `eval_red_team`
    /// (harmlessness) and `eval_helpful` (helpfulness) prompt sets.
    pub elo: Option<EloEval>,
    /// Attack success and over-refusal of the snapshots under fixed judges (`cai eval
    /// safety`). Left out of the stage's config when absent, so that recipes without it keep
    /// their fingerprints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<SafetyEval>,
}

/// `[eval.safety]`: `cai eval safety` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyEval {
    /// The judges, each a `--judge` value of `cai eval safety` (κ compares the first two):
    /// `refusal`, `classifier:TEMPLATE@MODEL`, `llm:URL[#MODEL]`, `pm:DIR`, `oracle`, or `pm`
    /// (the train-pm stage's model).
    pub judges: Vec<String>,
    /// The red-team prompts, whose harmful answers are attack successes.
    #[serde(default = "eval_red_team")]
    pub red_team: PromptSet,
    /// The prompts that should be answered, whose refusals are over-refusals: the shipped
    /// `over-refusal` set, or a prompt set of `[data]`.
    #[serde(default)]
    pub benign: BenignSet,
    /// At most this many prompts of each set, spread over it.
    pub samples: Option<usize>,
    /// Most new tokens per answer.
    pub max_new_tokens: Option<usize>,
    /// Bootstrap resamples for the 95 % intervals.
    pub bootstrap: Option<u64>,
    /// Further `cai eval safety` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[eval.safety] benign`: the shipped over-refusal set or a prompt set of `[data]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BenignSet {
    /// cai's over-refusal set (`datasets/over-refusal/`): safe prompts that look unsafe, with
    /// unsafe contrast prompts.
    #[default]
    OverRefusal,
    /// A prompt set of `[data]`.
    Data(PromptSet),
}

impl BenignSet {
    /// The name as a recipe writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::OverRefusal => crate::eval::safety::sets::OVER_REFUSAL_NAME,
            Self::Data(set) => set.name(),
        }
    }
}

impl TryFrom<String> for BenignSet {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        if name == Self::OverRefusal.name() {
            return Ok(Self::OverRefusal);
        }
        PromptSet::ALL
            .into_iter()
            .find(|set| set.name() == name)
            .map(Self::Data)
            .ok_or_else(|| {
                format!(
                    "`{name}` is not a benign set; expected over-refusal (the set cai ships) \
                     or a prompt set of [data]: red_team, helpful, eval_red_team, eval_helpful"
                )
            })
    }
}

impl From<BenignSet> for String {
    fn from(set: BenignSet) -> Self {
        set.name().to_owned()
    }
}

/// `[eval.elo]`: `cai eval elo` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EloEval {
    /// The judge: `oracle` (the lab's), `pm` (the train-pm stage's model), `feedback` (the
    /// feedback model's multiple-choice answers), or any `--judge` value of `cai eval elo`.
    pub judge: String,
    /// At most this many prompts of each set.
    pub samples: Option<usize>,
    /// Bootstrap resamples for the 95 % intervals.
    pub bootstrap: Option<u64>,
    /// Most new tokens per answer.
    pub max_new_tokens: Option<usize>,
    /// Further `cai eval elo` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A model snapshot the eval stage measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Snapshot {
    /// The base model.
    Base,
    /// The base model with the context in front.
    Prompted,
    /// The context-distilled model.
    Distilled,
    /// The SL-CAI model.
    SlCai,
    /// The RL-CAI model.
    RlCai,
}

impl Snapshot {
    /// The snapshot's name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Prompted => "prompted",
            Self::Distilled => "distilled",
            Self::SlCai => "sl-cai",
            Self::RlCai => "rl-cai",
        }
    }

    /// The stage that makes the snapshot's model, if any.
    pub fn stage(self) -> Option<Stage> {
        match self {
            Self::Base | Self::Prompted => None,
            Self::Distilled => Some(Stage::Distill),
            Self::SlCai => Some(Stage::Sft),
            Self::RlCai => Some(Stage::Rl),
        }
    }
}

/// `[eval.lab]`: `cai lab eval` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabEval {
    /// The world whose held-out prompts are used.
    #[serde(default)]
    pub world_seed: u64,
    /// At most this many items per measure.
    pub max_items: Option<usize>,
}
