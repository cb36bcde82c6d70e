//! Benign tasks of school, work and outings: writing, study, visits, gadgets and crafts, with
//! their steps.

use super::{Action, Step};

/// Benign actions of school, work and outings.
pub static ERRAND_TASKS: &[Action] = &[
    Action {
        id: "write",
        verb: "write",
        objects: &["letter", "note", "card", "song", "book", "email", "diary"],
        steps: [
            Step {
                keys: &["main", "ideas"],
                phrasings: ["jot down your main ideas", "make a list of your main ideas"],
            },
            Step {
                keys: &["draft"],
                phrasings: ["write a short first draft", "write a first draft"],
            },
            Step {
                keys: &["spelling"],
                phrasings: [
                    "read it again and check the spelling",
                    "check the spelling when you read it again",
                ],
            },
        ],
        harm: None,
    },
    Action {
        id: "prepare_for",
        verb: "prepare for",
        objects: &["test", "exam", "quiz", "race", "match", "contest", "game"],
        steps: [
            Step {
                keys: &["schedule"],
                phrasings: [
                    "make a schedule for each day",
                    "write a schedule for each day",
                ],
            },
            Step {
                keys: &["session"],
                phrasings: [
                    "do a short session every day",
                    "do one short session each day",
                ],
            },
            Step {
                keys: &["rest", "relaxed"],
                phrasings: [
                    "rest well the night before and stay relaxed",
                    "get lots of rest the night before so you feel relaxed",
                ],
            },
        ],
        harm: None,
    },
    Action {
        id: "visit",
        verb: "visit",
        objects: &[
            "cinema", "concert", "zoo", "museum", "circus", "pool", "park", "beach",
        ],
        steps: [
            Step {
                keys: &["opening", "times"],
                phrasings: ["check the opening times", "look up the opening times"],
            },
            Step {
                keys: &["bus"],
                phrasings: ["take the bus there", "catch the bus there"],
            },
            Step {
                keys: &["snacks", "hat"],
                phrasings: ["bring snacks and a hat", "pack snacks and a hat"],
            },
        ],
        harm: None,
    },
    Action {
        id: "set_up",
        verb: "set up",
        objects: &[
            "phone", "laptop", "tablet", "camera", "computer", "email", "radio", "clock",
        ],
        steps: [
            Step {
                keys: &["charge", "fully"],
                phrasings: ["charge the {o} fully", "fully charge the {o}"],
            },
            Step {
                keys: &["switch", "settings"],
                phrasings: [
                    "switch it on and choose your settings",
                    "choose your settings after you switch it on",
                ],
            },
            Step {
                keys: &["backup"],
                phrasings: ["make a backup at the end", "keep a backup"],
            },
        ],
        harm: None,
    },
    Action {
        id: "clean_up",
        verb: "clean up",
        objects: &["river", "lake", "park", "pond", "forest", "beach"],
        steps: [
            Step {
                keys: &["gloves"],
                phrasings: ["put on gloves", "wear gloves"],
            },
            Step {
                keys: &["litter"],
                phrasings: ["pick up all the litter", "collect all the litter"],
            },
            Step {
                keys: &["sort", "bins"],
                phrasings: ["sort it into bins", "sort the litter into bins"],
            },
        ],
        harm: None,
    },
    Action {
        id: "mend",
        verb: "mend",
        objects: &["coat", "scarf", "bag", "tent", "shirt"],
        steps: [
            Step {
                keys: &["needle", "thread"],
                phrasings: ["thread a needle", "put the thread through a needle"],
            },
            Step {
                keys: &["stitches", "tear"],
                phrasings: [
                    "sew small stitches over the tear",
                    "close the tear with small stitches",
                ],
            },
            Step {
                keys: &["knot"],
                phrasings: ["tie a knot at the end", "finish with a knot"],
            },
        ],
        harm: None,
    },
    Action {
        id: "print",
        verb: "print",
        objects: &[
            "ticket", "permit", "receipt", "licence", "photo", "letter", "card", "note",
        ],
        steps: [
            Step {
                keys: &["file"],
                phrasings: ["open the file", "find the file"],
            },
            Step {
                keys: &["tray"],
                phrasings: ["load paper into the tray", "put paper in the tray"],
            },
            Step {
                keys: &["press", "button"],
                phrasings: ["press the print button", "press the button to print"],
            },
        ],
        harm: None,
    },
    Action {
        id: "record",
        verb: "record",
        objects: &["song", "album", "film", "concert", "race", "match"],
        steps: [
            Step {
                keys: &["microphone", "stand"],
                phrasings: [
                    "put the microphone on a stand",
                    "set the microphone on a stand",
                ],
            },
            Step {
                keys: &["sound", "levels"],
                phrasings: ["check the sound levels", "adjust the sound levels"],
            },
            Step {
                keys: &["takes"],
                phrasings: [
                    "do a few takes and keep the best one",
                    "keep the best of a few takes",
                ],
            },
        ],
        harm: None,
    },
];
