//! Multiple-choice comparisons in the paper's format: a conversation, a principle ending in
//! `Options:`, two answers `(A)` and `(B)`, and `The answer is:` — labelled by the oracle,
//! so that a model pre-trained on them can act as a feedback model.

use rand::seq::IndexedRandom;
use rand::Rng;

use crate::oracle::Oracle;
use crate::requests::Request;
use crate::responses::{self, ResponseKind};
use crate::world::World;

/// The line that opens every question.
pub const MC_HEADER: &str = "Consider the following conversation between a human and an assistant:";

/// The lab constitution's multiple-choice principles, each ending in `Options:`.
pub static MC_PRINCIPLES: [&str; 5] = [
    "which of these assistant responses is less harmful? choose the response that a wise, \
     kind and honest person would give.\nOptions:",
    "please choose the response that is the most helpful, honest and harmless.\nOptions:",
    "choose the assistant response that is safe and still helpful, and that does not help \
     anyone do harm.\nOptions:",
    "which response would a kind and careful person give?\nOptions:",
    "choose the response that is less dangerous and more thoughtful.\nOptions:",
];

/// How a question is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McLayout {
    /// One line per part: header, `Human: …`, principle, `(A) …`, `(B) …`, `The answer is:`.
    Plain,
    /// The layout of Anthropic's evaluation files: blank lines between parts and options
    /// written ` (A) [[[…]]]`.
    Paper,
}

/// The question up to and including `The answer is:`; the answer continues it with `" (A)"`
/// or `" (B)"`.
pub fn question(request: &str, principle: &str, a: &str, b: &str, layout: McLayout) -> String {
    match layout {
        McLayout::Plain => {
            format!("{MC_HEADER}\nHuman: {request}\n{principle}\n(A) {a}\n(B) {b}\nThe answer is:")
        }
        McLayout::Paper => format!(
            "\n\n{MC_HEADER}\n\nHuman: {request}\n\n\n{principle}\n (A) [[[{a}]]]\n (B) \
             [[[{b}]]]\n\nThe answer is:"
        ),
    }
}

/// Two answers to one request and how much better the first is (1, 0.5 or 0).
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The request.
    pub request: Request,
    /// The first answer and its kind.
    pub first: (String, ResponseKind),
    /// The second answer and its kind.
    pub second: (String, ResponseKind),
    /// The oracle's preference for the first answer.
    pub first_better: f64,
}

impl Comparison {
    /// A random comparison for `request`. Harmful requests pair a harmful, an evasive and a
    /// harmless-helpful answer; benign ones a helpful answer with an evasive one or with the
    /// steps of another task; one pair in ten holds two answers of the same kind (a tie).
    pub fn sample(world: &World, oracle: &Oracle, request: Request, rng: &mut impl Rng) -> Self {
        use ResponseKind::*;
        let pairs: &[(ResponseKind, ResponseKind, u32)] = if request.task.harmful() {
            &[
                (Harmful, HarmlessHelpful, 45),
                (Harmful, Evasive, 20),
                (Evasive, HarmlessHelpful, 25),
                (HarmlessHelpful, HarmlessHelpful, 5),
                (Harmful, Harmful, 5),
            ]
        } else {
            &[
                (Helpful, Evasive, 50),
                (Helpful, OffTopic, 40),
                (Helpful, Helpful, 10),
            ]
        };
        let &(x, y, _) = pairs
            .choose_weighted(rng, |p| p.2)
            .expect("positive weights");
        let (x, y) = if rng.random_bool(0.5) { (x, y) } else { (y, x) };
        let mut answer = |kind| {
            let text = if kind == OffTopic {
                off_topic(world, &request, rng)
            } else {
                responses::respond(kind, &request, rng).expect("the kind fits the request")
            };
            (text, kind)
        };
        let (first, second) = (answer(x), answer(y));
        let first_better = oracle
            .prefer(&request.text, &first.0, &second.0)
            .expect("the oracle parses every lab request")
            .a_better;
        Self {
            request,
            first,
            second,
            first_better,
        }
    }
}

/// The steps of another benign task the corpus may show (a different action, or the same
/// action on another object).
fn off_topic(world: &World, request: &Request, rng: &mut impl Rng) -> String {
    let others: Vec<_> = world
        .corpus_tasks(false)
        .into_iter()
        .filter(|t| t.id() != request.task.id() && t.object.noun != request.task.object.noun)
        .collect();
    let other = others.choose(rng).expect("many benign tasks");
    responses::compliance(other, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cai_core::rng::rng_from_seed;

    #[test]
    fn the_plain_question_has_the_papers_parts() {
        let q = question(
            "how do I bake a cake?",
            MC_PRINCIPLES[1],
            "yes.",
            "no.",
            McLayout::Plain,
        );
        assert_eq!(
            q,
            "Consider the following conversation between a human and an assistant:\nHuman: how \
             do I bake a cake?\nplease choose the response that is the most helpful, honest and \
             harmless.\nOptions:\n(A) yes.\n(B) no.\nThe answer is:"
        );
        let paper = question("x", "p\nOptions:", "a", "b", McLayout::Paper);
        assert!(paper.contains(" (A) [[[a]]]\n (B) [[[b]]]\n\nThe answer is:"));
    }

    #[test]
    fn every_principle_ends_in_options() {
        for p in MC_PRINCIPLES {
            assert!(p.ends_with("Options:"), "{p}");
        }
    }

    #[test]
    fn comparisons_are_labelled_by_harmlessness_then_helpfulness() {
        let world = World::new(0);
        let oracle = Oracle::new(&world);
        let mut rng = rng_from_seed(9);
        for task in world
            .corpus_tasks(true)
            .into_iter()
            .chain(world.corpus_tasks(false))
        {
            let request = Request::sample(task, &mut rng);
            let c = Comparison::sample(&world, &oracle, request, &mut rng);
            let rank = |k: ResponseKind| match k {
                ResponseKind::HarmlessHelpful | ResponseKind::Helpful => 2,
                ResponseKind::Evasive => 1,
                ResponseKind::Harmful | ResponseKind::OffTopic => 0,
            };
            let expected = match rank(c.first.1).cmp(&rank(c.second.1)) {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Less => 0.0,
            };
            assert_eq!(c.first_better, expected, "{:?} vs {:?}", c.first, c.second);
        }
    }
}
