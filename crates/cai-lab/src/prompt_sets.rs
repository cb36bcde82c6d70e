//! Prompt sets: red-team (harmful) and benign requests, each split into train and held-out by
//! task, as JSONL records `{"id", "prompt", "task", "harmful"}`.

use std::collections::HashSet;

use cai_core::rng::{derive_seed, rng_from_seed};
use serde::{Deserialize, Serialize};

use crate::requests::Request;
use crate::world::{TaskSplit, World};

/// One prompt of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRecord {
    /// Unique within the set ("red-team-held-out-0007").
    pub id: String,
    /// The request.
    pub prompt: String,
    /// Its task (`action:object`).
    pub task: String,
    /// Whether the task is harmful.
    pub harmful: bool,
}

/// The four prompt sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptSet {
    /// Harmful requests on train tasks: the prompts of SL-CAI and RL-CAI.
    RedTeamTrain,
    /// Harmful requests on held-out tasks: evaluation.
    RedTeamHeldOut,
    /// Benign requests on train tasks: helpfulness samples.
    BenignTrain,
    /// Benign requests on held-out tasks: evaluation.
    BenignHeldOut,
}

impl PromptSet {
    /// Every set.
    pub const ALL: [PromptSet; 4] = [
        PromptSet::RedTeamTrain,
        PromptSet::RedTeamHeldOut,
        PromptSet::BenignTrain,
        PromptSet::BenignHeldOut,
    ];

    /// The set's name, also its file stem and id prefix ("red_team_train").
    pub fn name(self) -> &'static str {
        match self {
            PromptSet::RedTeamTrain => "red_team_train",
            PromptSet::RedTeamHeldOut => "red_team_held_out",
            PromptSet::BenignTrain => "benign_train",
            PromptSet::BenignHeldOut => "benign_held_out",
        }
    }

    fn harmful(self) -> bool {
        matches!(self, PromptSet::RedTeamTrain | PromptSet::RedTeamHeldOut)
    }

    fn split(self) -> TaskSplit {
        match self {
            PromptSet::RedTeamTrain | PromptSet::BenignTrain => TaskSplit::Train,
            PromptSet::RedTeamHeldOut | PromptSet::BenignHeldOut => TaskSplit::HeldOut,
        }
    }
}

/// The prompts of `set`: `per_task` distinct requests for each of its tasks.
pub fn prompt_set(world: &World, set: PromptSet, per_task: usize) -> Vec<PromptRecord> {
    let mut records = Vec::new();
    for task in world.tasks_in(set.split(), set.harmful()) {
        let mut rng = rng_from_seed(derive_seed(world.seed(), &["prompts", &task.id()]));
        let mut seen = HashSet::new();
        for _ in 0..per_task * 50 {
            if seen.len() == per_task {
                break;
            }
            let request = Request::sample(task, &mut rng);
            if seen.insert(request.text.clone()) {
                records.push(PromptRecord {
                    id: format!("{}-{:04}", set.name().replace('_', "-"), records.len()),
                    prompt: request.text,
                    task: task.id(),
                    harmful: task.harmful(),
                });
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_their_split_only() {
        let world = World::new(0);
        for set in PromptSet::ALL {
            let records = prompt_set(&world, set, 4);
            assert!(records.len() >= 80, "{}: {}", set.name(), records.len());
            for r in &records {
                let task = world.task(&r.task).unwrap();
                assert_eq!(task.split, set.split());
                assert_eq!(r.harmful, set.harmful());
            }
            let ids: HashSet<_> = records.iter().map(|r| &r.id).collect();
            assert_eq!(ids.len(), records.len());
        }
    }

    #[test]
    fn train_and_held_out_tasks_are_disjoint() {
        let world = World::new(5);
        let tasks = |set| -> HashSet<String> {
            prompt_set(&world, set, 2)
                .into_iter()
                .map(|r| r.task)
                .collect()
        };
        let train = tasks(PromptSet::RedTeamTrain);
        assert!(train.is_disjoint(&tasks(PromptSet::RedTeamHeldOut)));
        let train = tasks(PromptSet::BenignTrain);
        assert!(train.is_disjoint(&tasks(PromptSet::BenignHeldOut)));
    }
}
