//! The lab's vocabulary: every word of every template (lexicon, request frames, answer
//! shapes, critiques, principles, the HHH context's header). The oracle maps free model
//! output onto it; `cai lab generate` reports its size.

use crate::context::HHH_HEADER;
use crate::critiques::{
    BENIGN_CRITIQUES, CRITIQUE_PRINCIPLES, EVASIVE_CRITIQUES, HARMFUL_CRITIQUES, HARMLESS_CRITIQUES,
};
use crate::lexicon::{self, OBJECTS, PEOPLE, PLACES, REASONS};
use crate::multiple_choice::{MC_HEADER, MC_PRINCIPLES};
use crate::requests;
use crate::responses::{COMPLIANCE_SHAPES, HARMLESS_HELPFUL_SHAPES, REFUSALS};
use crate::words::{template_words, Vocabulary};

/// Words the formats add around the templates.
const FORMAT_WORDS: &str = "Human Assistant CritiqueRequest Critique RevisionRequest Revision \
    The answer is A B your the owner them they";

/// Every template text of the lab that is not part of an action (frames, answer shapes,
/// critiques, principles, headers).
pub(crate) fn frame_texts() -> Vec<&'static str> {
    let mut texts: Vec<&'static str> = requests::templates().collect();
    texts.extend(COMPLIANCE_SHAPES);
    texts.extend(REFUSALS);
    texts.extend(HARMLESS_HELPFUL_SHAPES);
    texts.extend(HARMFUL_CRITIQUES);
    texts.extend(EVASIVE_CRITIQUES);
    texts.extend(HARMLESS_CRITIQUES);
    texts.extend(BENIGN_CRITIQUES);
    for p in &CRITIQUE_PRINCIPLES {
        texts.extend([p.critique_request, p.revision_request]);
    }
    texts.extend(MC_PRINCIPLES);
    texts.extend([MC_HEADER, HHH_HEADER, FORMAT_WORDS]);
    texts.extend(PLACES);
    texts.extend(REASONS);
    texts
}

/// Every template text of one action: verb, steps, concerns and alternatives.
pub(crate) fn action_texts(action: &lexicon::Action) -> Vec<&'static str> {
    let mut texts = vec![action.verb];
    for step in &action.steps {
        texts.extend(step.phrasings);
    }
    if let Some(harm) = &action.harm {
        texts.extend(harm.concerns);
        texts.extend(harm.alternatives);
    }
    texts
}

/// The lab's vocabulary.
pub fn lab_vocabulary() -> Vocabulary {
    let mut words: Vec<String> = frame_texts().into_iter().flat_map(template_words).collect();
    for action in lexicon::actions() {
        words.extend(action_texts(action).into_iter().flat_map(template_words));
    }
    words.extend(OBJECTS.iter().map(|o| o.noun.to_owned()));
    for person in PEOPLE {
        words.extend([person.noun, person.subject, person.object].map(str::to_owned));
    }
    Vocabulary::new(words)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::lexicon::actions;
    use crate::words::words;

    /// Where each word occurs: (action id or "frames", slot).
    fn occurrences() -> HashMap<String, Vec<(String, &'static str)>> {
        let mut at: HashMap<String, Vec<(String, &'static str)>> = HashMap::new();
        let mut add = |text: &str, owner: &str, slot: &'static str| {
            for w in template_words(text) {
                at.entry(w).or_default().push((owner.to_owned(), slot));
            }
        };
        for text in frame_texts() {
            add(text, "frames", "frames");
        }
        for action in actions() {
            add(action.verb, action.id, "verb");
            for (i, step) in action.steps.iter().enumerate() {
                let slot = ["step1", "step2", "step3"][i];
                step.phrasings.iter().for_each(|p| add(p, action.id, slot));
            }
            if let Some(harm) = &action.harm {
                harm.concerns
                    .iter()
                    .for_each(|p| add(p, action.id, "concern"));
                harm.alternatives
                    .iter()
                    .for_each(|p| add(p, action.id, "alternative"));
            }
        }
        for o in OBJECTS {
            add(o.noun, "objects", "objects");
        }
        for p in PEOPLE {
            add(p.noun, "people", "people");
        }
        at
    }

    #[test]
    fn every_key_belongs_to_one_slot_of_one_action() {
        let at = occurrences();
        let mut clashes = Vec::new();
        for action in actions() {
            let mut keys: Vec<(&str, &str)> = Vec::new();
            for step in &action.steps {
                keys.extend(step.keys.iter().map(|k| (*k, "step")));
            }
            if let Some(harm) = &action.harm {
                keys.extend(harm.concern_keys.iter().map(|k| (*k, "concern")));
                keys.extend(harm.alternative_keys.iter().map(|k| (*k, "alternative")));
            }
            for (key, slot) in keys {
                let places = at.get(key).unwrap_or_else(|| panic!("{key} is in no text"));
                for (owner, at_slot) in places {
                    if owner != action.id || !at_slot.starts_with(slot) {
                        clashes.push(format!(
                            "{}'s {slot} key {key:?} also occurs in {owner}'s {at_slot}",
                            action.id
                        ));
                    }
                }
            }
        }
        assert!(clashes.is_empty(), "{}", clashes.join("\n"));
    }

    #[test]
    fn every_phrasing_holds_its_keys() {
        for action in actions() {
            for step in &action.steps {
                for p in step.phrasings {
                    let ws = words(p);
                    for key in step.keys {
                        assert!(
                            ws.iter().any(|w| w == key),
                            "{}: {key} not in {p:?}",
                            action.id
                        );
                    }
                }
            }
            if let Some(harm) = &action.harm {
                for (keys, phrasings) in [
                    (harm.concern_keys, harm.concerns),
                    (harm.alternative_keys, harm.alternatives),
                ] {
                    for p in phrasings {
                        let ws = words(p);
                        assert!(keys.iter().any(|k| ws.iter().any(|w| w == k)), "{p:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_vocabulary_is_a_few_hundred_words() {
        let n = lab_vocabulary().len();
        assert!((300..700).contains(&n), "{n} words");
    }
}
