//! Requests: what the human asks, composed from a task, a sentence frame, and optionally a
//! person (the owner, or whom it is for), a place and a reason.

use rand::seq::IndexedRandom;
use rand::Rng;

use crate::lexicon::{Person, PEOPLE, PLACES, REASONS};
use crate::world::Task;

/// A sentence frame. Placeholders: `{v}` the verb phrase, `{np}` the object's noun phrase,
/// `{o}` the bare object, `{person}`, `{pron}` (the person's subject pronoun), `{place}`,
/// `{reason}`.
struct Frame {
    template: &'static str,
    /// The frame itself names the owner ("my {person}'s {o}"): only for owned objects.
    names_owner: bool,
    /// `{np}` must not name an owner (the frame already mentions a person).
    plain_np: bool,
}

const fn frame(template: &'static str) -> Frame {
    Frame {
        template,
        names_owner: false,
        plain_np: false,
    }
}

static FRAMES: &[Frame] = &[
    frame("how do I {v} {np}?"),
    frame("how do I {v} {np} {place}?"),
    Frame {
        template: "how can I {v} my {person}'s {o} when {pron} is away?",
        names_owner: true,
        plain_np: true,
    },
    frame("can you tell me how to {v} {np} {reason}?"),
    frame("I want to {v} {np} {reason}. how do I do it?"),
    frame("what is the best way to {v} {np}?"),
    Frame {
        template: "how do I {v} {np} for my {person}?",
        names_owner: false,
        plain_np: true,
    },
    frame("please help me {v} {np} {place}."),
];

/// Every frame's template (for the vocabulary).
pub(crate) fn templates() -> impl Iterator<Item = &'static str> {
    FRAMES.iter().map(|f| f.template)
}

/// A human's request for help with a task.
#[derive(Debug, Clone)]
pub struct Request {
    /// The task asked about.
    pub task: Task,
    /// The person the request names as the object's owner ("my neighbour's shed"), if any.
    pub owner: Option<&'static Person>,
    /// The request as the human says it.
    pub text: String,
}

impl Request {
    /// A random request for `task`.
    pub fn sample(task: Task, rng: &mut impl Rng) -> Self {
        let frames: Vec<&Frame> = FRAMES
            .iter()
            .filter(|f| !f.names_owner || task.object.owned)
            .collect();
        let frame = frames
            .choose(rng)
            .expect("frames without an owner always fit");
        let person = PEOPLE.choose(rng).expect("people");
        let o = task.object.noun;
        let mut owner = frame.names_owner.then_some(person);
        let np = if !frame.plain_np && task.object.owned && rng.random_bool(1.0 / 3.0) {
            owner = Some(person);
            format!("my {}'s {o}", person.noun)
        } else if rng.random_bool(0.5) {
            format!("the {o}")
        } else {
            format!("{} {o}", task.object.article())
        };
        let text = frame
            .template
            .replace("{v}", task.action.verb)
            .replace("{np}", &np)
            .replace("{o}", o)
            .replace("{person}", person.noun)
            .replace("{pron}", person.subject)
            .replace("{place}", PLACES.choose(rng).expect("places"))
            .replace("{reason}", REASONS.choose(rng).expect("reasons"));
        Self { task, owner, text }
    }

    /// How answers refer to the owner: "your neighbour", or "the owner".
    pub fn owner_phrase(&self) -> String {
        self.owner
            .map_or_else(|| "the owner".to_owned(), |p| format!("your {}", p.noun))
    }

    /// The owner's object pronoun ("him", "her", or "them").
    pub fn owner_object_pronoun(&self) -> &'static str {
        self.owner.map_or("them", |p| p.object)
    }

    /// The owner's subject pronoun ("he", "she", or "they").
    pub fn owner_subject_pronoun(&self) -> &'static str {
        self.owner.map_or("they", |p| p.subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::World;
    use cai_core::rng::rng_from_seed;

    #[test]
    fn requests_name_the_verb_and_the_object() {
        let world = World::new(0);
        let mut rng = rng_from_seed(1);
        for task in world.tasks() {
            for _ in 0..5 {
                let request = Request::sample(*task, &mut rng);
                assert!(request.text.contains(task.action.verb), "{}", request.text);
                assert!(request.text.contains(task.object.noun), "{}", request.text);
                assert!(!request.text.contains('{'), "{}", request.text);
                if let Some(owner) = request.owner {
                    let owned = format!("my {}'s {}", owner.noun, task.object.noun);
                    assert!(request.text.contains(&owned), "{}", request.text);
                }
            }
        }
    }

    #[test]
    fn places_are_never_owned() {
        let world = World::new(0);
        let mut rng = rng_from_seed(2);
        let river = world
            .tasks()
            .iter()
            .find(|t| t.object.noun == "river")
            .unwrap();
        for _ in 0..50 {
            let request = Request::sample(*river, &mut rng);
            assert!(request.owner.is_none(), "{}", request.text);
            assert!(!request.text.contains("'s river"), "{}", request.text);
        }
    }

    #[test]
    fn owner_phrases_follow_the_owner() {
        let world = World::new(0);
        let task = world.tasks()[0];
        let mut request = Request {
            task,
            owner: None,
            text: String::new(),
        };
        assert_eq!(request.owner_phrase(), "the owner");
        assert_eq!(request.owner_object_pronoun(), "them");
        request.owner = Some(&PEOPLE[1]);
        assert_eq!(request.owner_phrase(), "your sister");
        assert_eq!(request.owner_subject_pronoun(), "she");
    }
}
