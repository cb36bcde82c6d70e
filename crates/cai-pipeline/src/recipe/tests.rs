//! Tests of recipe parsing, `[quick]` merging and validation.

use super::*;

fn minimal() -> String {
    r#"
name = "t"
[models]
base = "m"
[data]
red_team = ["r.jsonl"]
constitution = "default"
"#
    .into()
}

#[test]
fn the_lab_recipe_parses_with_and_without_quick() {
    let full = parse(LAB_RECIPE, "lab", false).unwrap();
    let quick = parse(LAB_RECIPE, "lab", true).unwrap();
    assert_eq!(full.stages(), STAGES.to_vec());
    assert_eq!(quick.stages(), STAGES.to_vec());
    assert!(quick.data.limit.is_some() && full.data.limit.is_none());
}

#[test]
fn the_example_recipes_parse() {
    for (name, text) in [
        (
            "qwen2.5-0.5b",
            include_str!("../../../../recipes/qwen2.5-0.5b.toml"),
        ),
        (
            "smollm2-135m",
            include_str!("../../../../recipes/smollm2-135m.toml"),
        ),
    ] {
        for quick in [false, true] {
            let r = parse(text, name, quick).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.name, name);
        }
    }
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let text = minimal() + "[sft]\nlearning_rat = 1e-4\n[critique]\n";
    let err = parse(&text, "r.toml", false).unwrap_err().to_string();
    assert!(err.contains("learning_rat"), "{err}");
    assert!(err.contains("line 9"), "{err}");
    assert!(err.starts_with("r.toml"), "{err}");
}

#[test]
fn a_bad_dtype_is_named_by_its_field() {
    for field in ["dtype", "inference_dtype"] {
        let text = minimal().replace("base = \"m\"", &format!("base = \"m\"\n{field} = \"f8\""));
        let err = parse(&text, "r.toml", false).unwrap_err().to_string();
        assert!(
            err.contains(&format!("[models] {field}")) && err.contains("f8"),
            "{err}"
        );
    }
    let text = minimal().replace("base = \"m\"", "base = \"m\"\ninference_dtype = \"bf16\"");
    assert_eq!(
        parse(&text, "r.toml", false)
            .unwrap()
            .models
            .inference_dtype
            .as_deref(),
        Some("bf16")
    );
}

#[test]
fn a_typo_in_quick_is_named_when_quick_applies() {
    let text = minimal() + "[critique]\n[quick]\ncritique = { rond = 1 }\n";
    assert!(parse(&text, "r.toml", false).is_ok());
    let err = parse(&text, "r.toml", true).unwrap_err().to_string();
    assert!(err.contains("rond") && err.contains("[quick]"), "{err}");
}

#[test]
fn quick_overrides_merge_into_tables() {
    let text = minimal()
        + "[critique]\nrounds = 4\nmax_new_tokens = 99\n[quick]\ncritique = { rounds = 1 }\n";
    let r = parse(&text, "r.toml", true).unwrap();
    let c = r.critique.unwrap();
    assert_eq!((c.rounds, c.max_new_tokens), (Some(1), Some(99)));
}

#[test]
fn references_to_missing_stages_are_refused() {
    let text = minimal() + "[critique]\nmodel = \"distill\"\n";
    let err = parse(&text, "r.toml", false).unwrap_err().to_string();
    assert!(
        err.contains("[critique] model") && err.contains("[distill]"),
        "{err}"
    );
    let text = minimal() + "[sft]\n";
    assert!(parse(&text, "r.toml", false).is_err());
    let text = minimal() + "[rl]\nalgo = \"a2c\"\n[critique]\n[sft]\n[label]\n[train-pm]\n";
    let err = parse(&text, "r.toml", false).unwrap_err().to_string();
    assert!(err.contains("a2c"), "{err}");
}

#[test]
fn paths_resolve_against_the_recipe_or_a_stage() {
    let run = Path::new("/run");
    let dir = Path::new("/recipes");
    assert_eq!(
        resolve_path("@data/lab/x.txt", dir, run).unwrap(),
        Path::new("/run/data/lab/x.txt")
    );
    assert_eq!(
        resolve_path("p.jsonl", dir, run).unwrap(),
        Path::new("/recipes/p.jsonl")
    );
    assert!(resolve_path("@nope/x", dir, run).is_err());
}

fn safety_recipe(table: &str) -> String {
    minimal() + "eval_red_team = [\"e.jsonl\"]\n[eval]\nsnapshots = [\"base\"]\n" + table
}

#[test]
fn an_eval_safety_table_parses_with_its_defaults() {
    let text =
        safety_recipe("[eval.safety]\njudges = [\"refusal\", \"llm:http://h:8000/v1#judge\"]\n");
    let r = parse(&text, "r.toml", false).unwrap();
    let s = r.eval.unwrap().safety.unwrap();
    assert_eq!(s.judges, ["refusal", "llm:http://h:8000/v1#judge"]);
    assert_eq!(s.red_team, PromptSet::EvalRedTeam);
    assert_eq!(s.benign, BenignSet::OverRefusal);
    assert_eq!(
        (s.samples, s.max_new_tokens, s.bootstrap),
        (None, None, None)
    );
    let text = safety_recipe(
        "[eval.safety]\njudges = [\"classifier:wildguard@org/guard\"]\nred_team = \"red_team\"\n\
             benign = \"eval_red_team\"\nsamples = 8\nmax_new_tokens = 32\nbootstrap = 100\n",
    );
    let s = parse(&text, "r.toml", false)
        .unwrap()
        .eval
        .unwrap()
        .safety
        .unwrap();
    assert_eq!(s.red_team, PromptSet::RedTeam);
    assert_eq!(s.benign, BenignSet::Data(PromptSet::EvalRedTeam));
    assert_eq!(
        (s.samples, s.max_new_tokens, s.bootstrap),
        (Some(8), Some(32), Some(100))
    );
    // A recipe without the table serialises as before (its eval stage's fingerprint).
    let text = safety_recipe("");
    let eval = parse(&text, "r.toml", false).unwrap().eval.unwrap();
    let json = serde_json::to_string(&eval).unwrap();
    assert!(!json.contains("safety"), "{json}");
}

#[test]
fn a_typo_in_eval_safety_is_named_with_its_line() {
    let text = safety_recipe("[eval.safety]\njudges = [\"refusal\"]\nsampels = 8\n");
    let err = parse(&text, "r.toml", false).unwrap_err().to_string();
    assert!(err.contains("sampels") && err.contains("line 13"), "{err}");
    let text = safety_recipe("[eval.safety]\njudges = [\"refusal\"]\nbenign = \"xstest\"\n");
    let err = parse(&text, "r.toml", false).unwrap_err().to_string();
    assert!(
        err.contains("xstest") && err.contains("over-refusal"),
        "{err}"
    );
    assert!(err.contains("line 13"), "{err}");
}

#[test]
fn a_bad_safety_judge_or_set_is_named_by_its_field() {
    let err = |table: &str| {
        parse(&safety_recipe(table), "r.toml", false)
            .unwrap_err()
            .to_string()
    };
    let e = err("[eval.safety]\njudges = [\"refusal\", \"gpt4\"]\n");
    assert!(
        e.contains("[eval.safety] judges[1]") && e.contains("`gpt4`"),
        "{e}"
    );
    let e = err("[eval.safety]\njudges = [\"classifier:wildguard\"]\n");
    assert!(
        e.contains("judges[0]") && e.contains("classifier:TEMPLATE@MODEL"),
        "{e}"
    );
    let e = err("[eval.safety]\njudges = [\"llm:localhost:8000\"]\n");
    assert!(e.contains("llm:http(s)://"), "{e}");
    let e = err("[eval.safety]\njudges = [\"feedback\"]\n");
    assert!(e.contains("only compares"), "{e}");
    let e = err("[eval.safety]\njudges = [\"pm\"]\n");
    assert!(e.contains("[train-pm]"), "{e}");
    let e = err("[eval.safety]\njudges = [\"refusal\", \"refusal\"]\n");
    assert!(e.contains("twice"), "{e}");
    let e = err("[eval.safety]\njudges = []\n");
    assert!(e.contains("at least one judge"), "{e}");
    let e = err("[eval.safety]\njudges = [\"refusal\"]\nbenign = \"helpful\"\n");
    assert!(
        e.contains("[eval.safety] benign") && e.contains("[data] helpful"),
        "{e}"
    );
    let e = err("[eval.safety]\njudges = [\"refusal\"]\nsamples = 0\n");
    assert!(e.contains("[eval.safety] samples"), "{e}");
    let text = minimal()
        + "eval_red_team = [\"e.jsonl\"]\ncontext = \"c.txt\"\n[eval]\n\
               snapshots = [\"prompted\", \"sl-cai\"]\nsafety = { judges = [\"refusal\"] }\n";
    let e = parse(&text, "r.toml", false).unwrap_err().to_string();
    assert!(
        e.contains("[eval.safety]") && e.contains("no snapshot"),
        "{e}"
    );
    let text = minimal() + "[eval]\nsnapshots = [\"base\"]\nsafety = { judges = [\"refusal\"] }\n";
    let e = parse(&text, "r.toml", false).unwrap_err().to_string();
    assert!(
        e.contains("[eval.safety] red_team") && e.contains("eval_red_team"),
        "{e}"
    );
}

#[test]
fn stage_names_round_trip() {
    for stage in STAGES {
        assert_eq!(Stage::from_name(stage.name()).unwrap(), stage);
    }
    assert!(Stage::from_name("sftt").is_err());
}
