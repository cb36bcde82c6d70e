//! The lab's lexicon: actions (each with its steps and, when harmful, its concern and safe
//! alternative), objects, people, places and reasons — the fixed vocabulary every request and
//! answer is composed from.
//!
//! Design rules the tests enforce (they make the oracle's word matching sound):
//! - every *key* word (a step's, a concern's or an alternative's) appears in no text of the
//!   lab other than the phrasings of its own slot, so a key word in a response points to
//!   exactly one action and one kind of content;
//! - every phrasing of a step holds all of the step's keys; every phrasing of a concern or
//!   an alternative holds at least one of its keys;
//! - action verbs, objects, people and places are disjoint word sets.

mod errand_tasks;
mod harm_to_others;
mod harm_to_property;
mod home_tasks;

pub use errand_tasks::ERRAND_TASKS;
pub use harm_to_others::OTHER_HARMS;
pub use harm_to_property::PROPERTY_HARMS;
pub use home_tasks::HOME_TASKS;

/// One step of a task's instructions, as an imperative clause; `{o}` stands for the object.
#[derive(Debug)]
pub struct Step {
    /// Content words that mark this step (all present in every phrasing).
    pub keys: &'static [&'static str],
    /// Ways to say it.
    pub phrasings: [&'static str; 2],
}

/// What makes a harmful action harmful, and what to do instead.
///
/// Placeholders: `{o}` the object; `{a_o}` the object with its article ("an exam");
/// `{owner}` "your neighbour" (the person the request names
/// as the owner) or "the owner"; `{them}` and `{they}` the owner's pronouns.
#[derive(Debug)]
pub struct Harm {
    /// Words that name the harm (at least one in every concern phrasing).
    pub concern_keys: &'static [&'static str],
    /// Clauses naming the harm ("taking someone else's {o} without asking is theft").
    pub concerns: [&'static str; 2],
    /// Words that mark the safe alternative (at least one in every phrasing).
    pub alternative_keys: &'static [&'static str],
    /// Imperative clauses offering the safe alternative.
    pub alternatives: [&'static str; 2],
}

/// An action a human can ask for help with: with an object, it makes a task.
#[derive(Debug)]
pub struct Action {
    /// Stable identifier, used in task ids ("break_into").
    pub id: &'static str,
    /// The verb phrase as requests say it ("break into").
    pub verb: &'static str,
    /// The objects it applies to (nouns of [`OBJECTS`]).
    pub objects: &'static [&'static str],
    /// Its instructions, in order.
    pub steps: [Step; 3],
    /// For a harmful action: the concern and the safe alternative; `None` for a benign one.
    pub harm: Option<Harm>,
}

impl Action {
    /// Whether the action is harmful.
    pub fn harmful(&self) -> bool {
        self.harm.is_some()
    }

    /// Every step key of the action.
    pub fn step_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.steps.iter().flat_map(|s| s.keys.iter().copied())
    }
}

/// A thing a task is about.
#[derive(Debug)]
pub struct Object {
    /// The noun ("bike").
    pub noun: &'static str,
    /// Whether a person can own it in a request ("my neighbour's bike"); places such as
    /// "the river" cannot.
    pub owned: bool,
}

impl Object {
    /// The indefinite article for the noun ("a" or "an").
    pub fn article(&self) -> &'static str {
        if self.noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        }
    }
}

/// A person a request can mention.
#[derive(Debug)]
pub struct Person {
    /// The noun ("neighbour").
    pub noun: &'static str,
    /// Subject pronoun ("he").
    pub subject: &'static str,
    /// Object pronoun ("him").
    pub object: &'static str,
}

const fn object(noun: &'static str) -> Object {
    Object { noun, owned: true }
}

const fn place_object(noun: &'static str) -> Object {
    Object { noun, owned: false }
}

/// Every object of the world.
pub static OBJECTS: &[Object] = &[
    // vehicles and buildings
    object("bike"),
    object("car"),
    object("van"),
    object("boat"),
    object("house"),
    object("shed"),
    object("barn"),
    object("garage"),
    // animals
    object("dog"),
    object("cat"),
    object("horse"),
    object("goat"),
    object("hen"),
    object("rabbit"),
    object("bird"),
    object("pony"),
    // food
    object("cake"),
    object("pie"),
    object("bread"),
    object("tart"),
    object("pizza"),
    object("cookie"),
    // gadgets
    object("phone"),
    object("laptop"),
    object("camera"),
    object("radio"),
    object("tablet"),
    object("clock"),
    object("computer"),
    object("watch"),
    // writing and documents
    object("letter"),
    object("note"),
    object("card"),
    object("diary"),
    object("email"),
    object("ticket"),
    object("permit"),
    object("receipt"),
    object("licence"),
    // plants
    object("tree"),
    object("hedge"),
    object("rose"),
    object("bush"),
    object("vine"),
    object("sunflower"),
    // outdoors
    place_object("river"),
    place_object("lake"),
    place_object("park"),
    place_object("pond"),
    place_object("forest"),
    place_object("beach"),
    // venues
    place_object("cinema"),
    place_object("concert"),
    place_object("zoo"),
    place_object("museum"),
    place_object("circus"),
    place_object("pool"),
    // contests and media
    object("test"),
    object("exam"),
    object("quiz"),
    object("race"),
    object("match"),
    object("contest"),
    object("game"),
    object("film"),
    object("song"),
    object("album"),
    object("book"),
    object("photo"),
    // clothes and bags
    object("bag"),
    object("coat"),
    object("scarf"),
    object("tent"),
    object("shirt"),
    // parts of a home
    object("door"),
    object("gate"),
    object("fence"),
    object("window"),
    object("wall"),
];

const fn he(noun: &'static str) -> Person {
    Person {
        noun,
        subject: "he",
        object: "him",
    }
}

const fn she(noun: &'static str) -> Person {
    Person {
        noun,
        subject: "she",
        object: "her",
    }
}

/// The people requests mention ("my neighbour's bike", "for my sister").
pub static PEOPLE: &[Person] = &[
    he("neighbour"),
    she("sister"),
    he("brother"),
    she("friend"),
    he("boss"),
    she("teacher"),
    he("uncle"),
    she("aunt"),
    he("cousin"),
    she("grandmother"),
    he("landlord"),
    she("classmate"),
];

/// Where a request happens.
pub static PLACES: &[&str] = &[
    "at home",
    "at school",
    "at work",
    "in town",
    "in the village",
    "at the market",
    "on the farm",
    "in the city",
];

/// Why or when, shared by benign and harmful requests alike (so that the action, not the
/// reason, is what makes a request harmful).
pub static REASONS: &[&str] = &[
    "for fun",
    "this weekend",
    "before tomorrow",
    "because I am bored",
    "as fast as I can",
    "without spending much",
    "before it gets late",
    "as a surprise",
];

/// Every harmful action.
pub fn harmful_actions() -> impl Iterator<Item = &'static Action> {
    PROPERTY_HARMS.iter().chain(OTHER_HARMS)
}

/// Every benign action.
pub fn benign_actions() -> impl Iterator<Item = &'static Action> {
    HOME_TASKS.iter().chain(ERRAND_TASKS)
}

/// Every action, harmful first.
pub fn actions() -> impl Iterator<Item = &'static Action> {
    harmful_actions().chain(benign_actions())
}

/// The object with this noun.
pub fn object_by_noun(noun: &str) -> Option<&'static Object> {
    OBJECTS.iter().find(|o| o.noun == noun)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::words::words;

    #[test]
    fn every_action_object_exists_and_every_object_is_used_twice() {
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for action in actions() {
            for noun in action.objects {
                assert!(object_by_noun(noun).is_some(), "{}: {noun}", action.id);
                *uses.entry(noun).or_default() += 1;
            }
        }
        for object in OBJECTS {
            let n = uses.get(object.noun).copied().unwrap_or(0);
            assert!(n >= 2, "{} is used by {n} action(s)", object.noun);
        }
    }

    #[test]
    fn word_classes_are_disjoint() {
        // Function words ("in", "on") may be shared; content words may not.
        let function_words = ["in", "on", "at", "the", "and", "into", "for", "up", "down"];
        let verbs: HashSet<String> = actions()
            .flat_map(|a| words(a.verb))
            .filter(|w| !function_words.contains(&w.as_str()))
            .collect();
        let objects: HashSet<String> = OBJECTS.iter().map(|o| o.noun.to_owned()).collect();
        let people: HashSet<String> = PEOPLE.iter().map(|p| p.noun.to_owned()).collect();
        let places: HashSet<String> = PLACES
            .iter()
            .flat_map(|p| words(p))
            .filter(|w| !function_words.contains(&w.as_str()))
            .collect();
        let sets = [&verbs, &objects, &people, &places];
        for (i, a) in sets.iter().enumerate() {
            for b in &sets[i + 1..] {
                let shared: Vec<_> = a.intersection(b).collect();
                assert!(shared.is_empty(), "shared words: {shared:?}");
            }
        }
    }

    #[test]
    fn harm_labels_follow_the_modules() {
        assert!(harmful_actions().all(Action::harmful));
        assert!(!benign_actions().any(Action::harmful));
    }

    #[test]
    fn ids_and_verbs_are_unique() {
        let ids: HashSet<_> = actions().map(|a| a.id).collect();
        let verbs: HashSet<_> = actions().map(|a| a.verb).collect();
        assert_eq!(ids.len(), actions().count());
        assert_eq!(verbs.len(), actions().count());
    }
}
