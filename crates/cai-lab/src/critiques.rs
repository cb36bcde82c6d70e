//! Critiques and revisions: the lab constitution's critique/revision principles and the
//! dialogues in the paper's transcript format (`Human:`, `Assistant:`, `CritiqueRequest:`,
//! `Critique:`, `RevisionRequest:`, `Revision:`). A critique of a harmful answer names the
//! harm and its revision is harmless-helpful; a critique of a harmless answer says so and its
//! revision keeps the answer.

use cai_core::dialogue::{render_transcript, Message};
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::requests::Request;
use crate::responses::{self, ResponseKind};

/// One critique/revision principle of the lab constitution.
#[derive(Debug)]
pub struct CritiquePrinciple {
    /// Its name in the constitution file ("harmful0", as in Anthropic's file).
    pub id: &'static str,
    /// What the critique request asks.
    pub critique_request: &'static str,
    /// What the revision request asks.
    pub revision_request: &'static str,
}

impl CritiquePrinciple {
    /// The text appended after the answer: `"\n\nCritiqueRequest: …\n\nCritique:"`.
    pub fn critique_prompt(&self) -> String {
        format!(
            "\n\nCritiqueRequest: {}\n\nCritique:",
            self.critique_request
        )
    }

    /// The text appended after the critique: `"\n\nRevisionRequest: …\n\nRevision:"`.
    pub fn revision_prompt(&self) -> String {
        format!(
            "\n\nRevisionRequest: {}\n\nRevision:",
            self.revision_request
        )
    }
}

const fn principle(
    id: &'static str,
    critique_request: &'static str,
    revision_request: &'static str,
) -> CritiquePrinciple {
    CritiquePrinciple {
        id,
        critique_request,
        revision_request,
    }
}

/// The lab constitution's critique/revision principles, in the lab's words.
pub static CRITIQUE_PRINCIPLES: [CritiquePrinciple; 6] = [
    principle(
        "harmful0",
        "identify the ways in which the assistant's last response is harmful, unkind, \
         dangerous or against the law.",
        "please rewrite the assistant response to remove anything harmful, unkind, dangerous \
         or against the law.",
    ),
    principle(
        "harmful1",
        "explain how the last response could harm someone, or help the human do something \
         wrong.",
        "please rewrite the response so that it is safe, and offer a better way if you can.",
    ),
    principle(
        "harmful2",
        "is the last response harmful in any way? say how.",
        "rewrite the response so that it is harmless and still helpful.",
    ),
    principle(
        "harmful3",
        "what would a wise and kind person say is wrong with the last response?",
        "rewrite the response as a wise and kind person would.",
    ),
    principle(
        "harmful4",
        "point out anything in the last response that is dangerous or against the law.",
        "please remove anything dangerous or against the law from the response, and keep it \
         helpful.",
    ),
    principle(
        "harmful5",
        "does the last response help with a crime or with harm to someone? explain.",
        "rewrite the response so that it does not help with crime or harm, and say why.",
    ),
];

/// Critiques of a harmful answer: `{concern}`, `{v}`, `{o}`.
pub(crate) const HARMFUL_CRITIQUES: [&str; 3] = [
    "the response is harmful: {concern}.",
    "the assistant should not have helped, because {concern}.",
    "this answer helps the human {v} the {o}, which is harmful: {concern}.",
];

/// Critiques of an evasive answer to a harmful request.
pub(crate) const EVASIVE_CRITIQUES: [&str; 2] = [
    "the response is harmless, but it is evasive: it does not say why, and it offers no safe \
     way.",
    "the answer is safe but not helpful. it should explain the problem and offer a better idea.",
];

/// Critiques of a harmless-helpful answer.
pub(crate) const HARMLESS_CRITIQUES: [&str; 2] = [
    "the response is harmless and helpful: it says why, and it offers a safe way.",
    "nothing in the response is harmful. it explains the problem and offers a better idea.",
];

/// Critiques of a helpful answer to a benign request: `{v}`, `{o}`.
pub(crate) const BENIGN_CRITIQUES: [&str; 2] = [
    "the response is not harmful. it gives clear steps to {v} the {o}.",
    "nothing in this response is harmful, and it is helpful as it is.",
];

/// A critique of an answer of `kind` to `request`.
pub fn critique(request: &Request, kind: ResponseKind, rng: &mut impl Rng) -> String {
    let template = match kind {
        ResponseKind::Harmful => HARMFUL_CRITIQUES.choose(rng),
        ResponseKind::Evasive => EVASIVE_CRITIQUES.choose(rng),
        ResponseKind::HarmlessHelpful => HARMLESS_CRITIQUES.choose(rng),
        ResponseKind::Helpful | ResponseKind::OffTopic => BENIGN_CRITIQUES.choose(rng),
    }
    .expect("critique phrasings");
    let concern = responses::concern(request, rng).unwrap_or_default();
    template
        .replace("{concern}", &concern)
        .replace("{v}", request.task.action.verb)
        .replace("{o}", request.task.object.noun)
}

/// One round of critique and revision.
#[derive(Debug, Clone, Serialize)]
pub struct CritiqueRound {
    /// The principle's id.
    pub principle_id: &'static str,
    /// The critique request.
    pub critique_request: &'static str,
    /// The critique.
    pub critique: String,
    /// The revision request.
    pub revision_request: &'static str,
    /// The revised answer.
    pub revision: String,
}

/// A request, an initial answer, and rounds of critique and revision; each round critiques
/// the previous round's revision.
#[derive(Debug, Clone)]
pub struct CritiqueDialogue {
    /// The request.
    pub request: Request,
    /// What the initial answer does.
    pub initial_kind: ResponseKind,
    /// The initial answer.
    pub initial_response: String,
    /// The rounds.
    pub rounds: Vec<CritiqueRound>,
}

impl CritiqueDialogue {
    /// A dialogue with `rounds` rounds (at least one), principles drawn at random. For a
    /// harmful request the initial answer is of `initial_kind` (harmful, evasive or
    /// harmless-helpful); a benign request is answered helpfully.
    pub fn sample(
        request: Request,
        initial_kind: ResponseKind,
        rounds: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let initial_kind = if request.task.harmful() {
            initial_kind
        } else {
            ResponseKind::Helpful
        };
        let initial_response =
            responses::respond(initial_kind, &request, rng).expect("the kind fits the request");
        let mut kind = initial_kind;
        let mut answer = initial_response.clone();
        let mut done = Vec::with_capacity(rounds.max(1));
        for _ in 0..rounds.max(1) {
            let principle = CRITIQUE_PRINCIPLES.choose(rng).expect("principles");
            let critique = critique(&request, kind, rng);
            if matches!(kind, ResponseKind::Harmful | ResponseKind::Evasive) {
                answer = responses::harmless_helpful(&request, rng).expect("a harmful request");
                kind = ResponseKind::HarmlessHelpful;
            }
            done.push(CritiqueRound {
                principle_id: principle.id,
                critique_request: principle.critique_request,
                critique,
                revision_request: principle.revision_request,
                revision: answer.clone(),
            });
        }
        Self {
            request,
            initial_kind,
            initial_response,
            rounds: done,
        }
    }

    /// The dialogue as a transcript: the rounds follow the initial answer.
    pub fn text(&self) -> String {
        let mut text = render_transcript(
            &[
                Message::user(&self.request.text),
                Message::assistant(&self.initial_response),
            ],
            false,
        );
        for round in &self.rounds {
            let principle = principle_by_id(round.principle_id).expect("a lab principle");
            text.push_str(&principle.critique_prompt());
            text.push(' ');
            text.push_str(&round.critique);
            text.push_str(&principle.revision_prompt());
            text.push(' ');
            text.push_str(&round.revision);
        }
        text
    }
}

/// The principle with this id.
pub fn principle_by_id(id: &str) -> Option<&'static CritiquePrinciple> {
    CRITIQUE_PRINCIPLES.iter().find(|p| p.id == id)
}

/// The critique/revision principles in Anthropic's JSON shape:
/// `{name: {"prompt": ["\n\nCritiqueRequest: …\n\nCritique:"], "edit_request":
/// "\n\nRevisionRequest: …\n\nRevision:"}}`.
pub fn constitution_json() -> Value {
    let mut map = Map::new();
    for p in &CRITIQUE_PRINCIPLES {
        map.insert(
            p.id.to_owned(),
            json!({"prompt": [p.critique_prompt()], "edit_request": p.revision_prompt()}),
        );
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::World;
    use cai_core::dialogue::parse_transcript;
    use cai_core::rng::rng_from_seed;

    fn request(world: &World, id: &str) -> Request {
        let task = world.task(id).unwrap();
        Request::sample(task, &mut rng_from_seed(0))
    }

    #[test]
    fn harmful_answers_are_critiqued_and_revised_to_harmless_helpful() {
        let world = World::new(0);
        let request = request(&world, "steal:bike");
        let dialogue =
            CritiqueDialogue::sample(request, ResponseKind::Harmful, 2, &mut rng_from_seed(1));
        assert!(dialogue.rounds[0].critique.contains("theft"));
        let revision = &dialogue.rounds[0].revision;
        assert!(
            revision.contains("theft") && revision.contains("borrow"),
            "{revision}"
        );
        // The second round finds nothing harmful and keeps the revision.
        assert!(dialogue.rounds[1].critique.contains("harm"));
        assert!(!dialogue.rounds[1].critique.contains("theft"));
        assert_eq!(dialogue.rounds[1].revision, *revision);
    }

    #[test]
    fn benign_answers_are_kept() {
        let world = World::new(0);
        let request = request(&world, "bake:cake");
        let dialogue =
            CritiqueDialogue::sample(request, ResponseKind::Harmful, 1, &mut rng_from_seed(2));
        assert_eq!(dialogue.initial_kind, ResponseKind::Helpful);
        assert_eq!(dialogue.rounds[0].revision, dialogue.initial_response);
    }

    #[test]
    fn the_transcript_has_the_papers_turns_in_order() {
        let world = World::new(0);
        let request = request(&world, "burn:shed");
        let dialogue =
            CritiqueDialogue::sample(request, ResponseKind::Harmful, 1, &mut rng_from_seed(3));
        let text = dialogue.text();
        let markers = [
            "\n\nHuman: ",
            "\n\nAssistant: ",
            "\n\nCritiqueRequest: ",
            "\n\nCritique: ",
            "\n\nRevisionRequest: ",
            "\n\nRevision: ",
        ];
        let positions: Vec<usize> = markers.iter().map(|m| text.find(m).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(parse_transcript(&text).unwrap().len(), 2);
    }

    #[test]
    fn the_constitution_has_anthropics_shape() {
        let json = constitution_json();
        let map = json.as_object().unwrap();
        assert_eq!(map.len(), CRITIQUE_PRINCIPLES.len());
        for value in map.values() {
            let prompt = value["prompt"][0].as_str().unwrap();
            assert!(prompt.starts_with("\n\nCritiqueRequest: "));
            assert!(prompt.ends_with("\n\nCritique:"));
            let edit = value["edit_request"].as_str().unwrap();
            assert!(edit.starts_with("\n\nRevisionRequest: ") && edit.ends_with("\n\nRevision:"));
        }
    }
}
