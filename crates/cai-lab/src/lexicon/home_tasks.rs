//! Benign tasks around the home: cooking, repairs, animals and the garden, with their steps.

use super::{Action, Step};

const FOOD: &[&str] = &["cake", "pie", "bread", "tart", "pizza", "cookie"];

/// Benign actions at home.
pub static HOME_TASKS: &[Action] = &[
    Action {
        id: "bake",
        verb: "bake",
        objects: FOOD,
        steps: [
            Step {
                keys: &["stir", "flour", "butter"],
                phrasings: [
                    "stir flour, butter and sugar together",
                    "stir together flour, sugar and butter",
                ],
            },
            Step {
                keys: &["dough"],
                phrasings: [
                    "knead the dough and shape the {o}",
                    "roll out the dough and shape the {o}",
                ],
            },
            Step {
                keys: &["oven"],
                phrasings: [
                    "bake it in a hot oven",
                    "put it in a hot oven until it is golden",
                ],
            },
        ],
        harm: None,
    },
    Action {
        id: "serve",
        verb: "serve",
        objects: FOOD,
        steps: [
            Step {
                keys: &["slices", "knife"],
                phrasings: [
                    "cut the {o} into slices with a knife",
                    "use a knife to cut the {o} into slices",
                ],
            },
            Step {
                keys: &["plate"],
                phrasings: ["put each slice on a plate", "lay the slices on a plate"],
            },
            Step {
                keys: &["napkin", "fork"],
                phrasings: ["add a napkin and a fork", "set out a napkin and a fork"],
            },
        ],
        harm: None,
    },
    Action {
        id: "fix",
        verb: "fix",
        objects: &[
            "bike", "car", "phone", "radio", "clock", "laptop", "door", "gate", "watch",
        ],
        steps: [
            Step {
                keys: &["broken"],
                phrasings: ["find the broken part", "look for the part that is broken"],
            },
            Step {
                keys: &["screwdriver"],
                phrasings: [
                    "take it out with a screwdriver",
                    "use a screwdriver to take it out",
                ],
            },
            Step {
                keys: &["fit", "spare"],
                phrasings: [
                    "fit a spare part and check that it works",
                    "fit in a spare part and check it",
                ],
            },
        ],
        harm: None,
    },
    Action {
        id: "wash",
        verb: "wash",
        objects: &[
            "car", "van", "bike", "boat", "window", "dog", "coat", "tent", "scarf", "shirt",
        ],
        steps: [
            Step {
                keys: &["bucket", "warm"],
                phrasings: [
                    "fill a bucket with warm water",
                    "get a bucket of warm water",
                ],
            },
            Step {
                keys: &["soap", "sponge"],
                phrasings: [
                    "scrub the {o} with soap and a sponge",
                    "use soap and a sponge on the {o}",
                ],
            },
            Step {
                keys: &["rinse", "towel"],
                phrasings: [
                    "rinse it and dry it with a towel",
                    "rinse it well, then dry it with a towel",
                ],
            },
        ],
        harm: None,
    },
    Action {
        id: "paint",
        verb: "paint",
        objects: &[
            "fence", "door", "gate", "wall", "shed", "barn", "garage", "boat",
        ],
        steps: [
            Step {
                keys: &["sand", "smooth"],
                phrasings: [
                    "sand the {o} until it is smooth",
                    "sand the {o} to make it smooth",
                ],
            },
            Step {
                keys: &["primer", "layer"],
                phrasings: ["brush on a layer of primer", "start with a layer of primer"],
            },
            Step {
                keys: &["colour"],
                phrasings: [
                    "add the colour and let it dry",
                    "paint on the colour and let it dry",
                ],
            },
        ],
        harm: None,
    },
    Action {
        id: "feed",
        verb: "feed",
        objects: &[
            "dog", "cat", "horse", "goat", "hen", "rabbit", "bird", "pony",
        ],
        steps: [
            Step {
                keys: &["likes", "eat"],
                phrasings: [
                    "find out what the {o} likes to eat",
                    "ask what the {o} likes to eat",
                ],
            },
            Step {
                keys: &["bowl"],
                phrasings: ["put the food in a bowl", "fill a bowl with food"],
            },
            Step {
                keys: &["fresh"],
                phrasings: [
                    "give it fresh water every day",
                    "make sure it has fresh water",
                ],
            },
        ],
        harm: None,
    },
    Action {
        id: "plant",
        verb: "plant",
        objects: &["tree", "hedge", "rose", "bush", "vine", "sunflower"],
        steps: [
            Step {
                keys: &["dig", "hole", "sunny"],
                phrasings: [
                    "dig a deep hole in a sunny spot",
                    "find a sunny spot and dig a deep hole",
                ],
            },
            Step {
                keys: &["roots", "soil"],
                phrasings: [
                    "set the roots in and fill the hole with soil",
                    "put the roots in the hole and cover them with soil",
                ],
            },
            Step {
                keys: &["compost"],
                phrasings: [
                    "water it and add some compost",
                    "add some compost and water it well",
                ],
            },
        ],
        harm: None,
    },
    Action {
        id: "build",
        verb: "build",
        objects: &[
            "shed", "fence", "boat", "wall", "garage", "barn", "house", "gate",
        ],
        steps: [
            Step {
                keys: &["plan", "measure"],
                phrasings: [
                    "draw a plan and measure the space",
                    "measure the space and draw a plan",
                ],
            },
            Step {
                keys: &["wood", "size"],
                phrasings: ["cut the wood to size", "get wood and cut it to size"],
            },
            Step {
                keys: &["nails", "glue"],
                phrasings: [
                    "join the parts with nails and glue",
                    "use nails and glue to join the parts",
                ],
            },
        ],
        harm: None,
    },
];
