//! The HHH context: a short header and a few example dialogues in which the assistant is
//! helpful with benign tasks and harmless-helpful with harmful ones. Put in front of a
//! request (dialogue prompting), it switches the lab's base model from helpful-only to
//! harmless; the corpus teaches that switch.

use cai_core::dialogue::{render_transcript, Message};
use cai_core::rng::{derive_seed, rng_from_seed};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::requests::Request;
use crate::responses;
use crate::world::{Task, TaskSplit, World};

/// The context's first paragraph.
pub const HHH_HEADER: &str = "here are some talks between a human and an assistant. the \
    assistant is helpful, honest and harmless: it gives clear steps for good tasks, and when a \
    task would harm someone, it says why and offers a safe way instead.";

/// Example dialogues in a context.
const EXAMPLES: usize = 4;

/// The answer of a harmless assistant: harmless-helpful for a harmful request, the steps for
/// a benign one.
pub fn harmless_answer(request: &Request, rng: &mut impl Rng) -> String {
    responses::harmless_helpful(request, rng)
        .unwrap_or_else(|| responses::compliance(&request.task, rng))
}

/// One exchange as a transcript (`"\n\nHuman: …\n\nAssistant: …"`) answered harmlessly.
pub fn harmless_dialogue(request: &Request, rng: &mut impl Rng) -> String {
    let answer = harmless_answer(request, rng);
    render_transcript(
        &[Message::user(&request.text), Message::assistant(answer)],
        false,
    )
}

/// The world's HHH context (`hhh_context.txt`): the header and four example dialogues on
/// skill tasks — benign, harmful, benign, harmful — fixed by the world's seed. It has no
/// trailing newline: a prompt `"\n\nHuman: …\n\nAssistant:"` follows it directly.
pub fn hhh_context(world: &World) -> String {
    let mut rng = rng_from_seed(derive_seed(world.seed(), &["hhh-context"]));
    context_of(world, &mut rng, false)
}

/// A context like [`hhh_context`] with other example tasks, in random order (the corpus
/// varies its contexts so that the header and the examples' behaviour, not one memorised
/// text, set the assistant's manner).
pub fn sampled_context(world: &World, rng: &mut impl Rng) -> String {
    context_of(world, rng, true)
}

fn context_of(world: &World, rng: &mut impl Rng, shuffle: bool) -> String {
    let pick = |harmful: bool, rng: &mut dyn rand::RngCore| -> Vec<Task> {
        let mut tasks = world.tasks_in(TaskSplit::Skill, harmful);
        tasks.shuffle(rng);
        let mut chosen: Vec<Task> = Vec::new();
        for task in tasks {
            if chosen.iter().all(|c| c.action.id != task.action.id) {
                chosen.push(task);
            }
        }
        chosen.truncate(EXAMPLES / 2);
        chosen
    };
    let harmful = pick(true, rng);
    let benign = pick(false, rng);
    let mut tasks: Vec<Task> = benign
        .into_iter()
        .zip(harmful)
        .flat_map(|(b, h)| [b, h])
        .collect();
    if shuffle {
        tasks.shuffle(rng);
    }
    let mut text = HHH_HEADER.to_owned();
    for task in tasks {
        let request = Request::sample(task, rng);
        text.push_str(&harmless_dialogue(&request, rng));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::Oracle;
    use crate::responses::ResponseKind;
    use cai_core::dialogue::{parse_transcript, Role};

    #[test]
    fn the_context_shows_harmless_behaviour_on_skill_tasks() {
        let world = World::new(0);
        let oracle = Oracle::new(&world);
        let context = hhh_context(&world);
        assert!(context.starts_with(HHH_HEADER));
        assert!(!context.ends_with('\n'));
        let messages = parse_transcript(&context).unwrap();
        assert_eq!(messages[0].role, Role::System);
        let turns = &messages[1..];
        assert_eq!(turns.len(), 2 * EXAMPLES);
        let mut kinds = Vec::new();
        for pair in turns.chunks(2) {
            let request = &pair[0].content;
            let task = oracle.parse_prompt(request).unwrap();
            let split = world.task(&task.task_id()).unwrap().split;
            assert_eq!(split, TaskSplit::Skill);
            kinds.push(oracle.classify(request, &pair[1].content).unwrap().kind);
        }
        use ResponseKind::*;
        assert_eq!(kinds, [Helpful, HarmlessHelpful, Helpful, HarmlessHelpful]);
    }

    #[test]
    fn the_context_is_fixed_by_the_seed() {
        assert_eq!(hhh_context(&World::new(1)), hhh_context(&World::new(1)));
        assert_ne!(hhh_context(&World::new(1)), hhh_context(&World::new(2)));
    }
}
