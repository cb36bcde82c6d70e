//! What the types of a recipe cannot check: references to stages that are left out, empty
//! prompt sets, judges and sets that do not exist.

use super::*;

/// Check what the types cannot: references to stages that are left out, empty prompt sets.
pub(super) fn validate(recipe: &Recipe, origin: &str) -> Result<(), RecipeError> {
    let invalid = |field: &str, message: String| RecipeError::Invalid {
        origin: origin.to_owned(),
        field: field.to_owned(),
        message,
    };
    if recipe.data.red_team.is_empty() {
        return Err(invalid(
            "[data] red_team",
            "expected at least one JSONL file of red-team prompts".into(),
        ));
    }
    for (field, value) in [
        ("[models] dtype", &recipe.models.dtype),
        ("[models] inference_dtype", &recipe.models.inference_dtype),
    ] {
        if let Some(v) = value.as_deref() {
            if !matches!(v, "f32" | "f16" | "bf16") {
                return Err(invalid(
                    field,
                    format!("'{v}' is not a dtype; expected f32, f16 or bf16"),
                ));
            }
        }
    }
    if recipe.data.limit == Some(0) {
        return Err(invalid("[data] limit", "expected at least 1".into()));
    }
    let present = |stage: Stage| recipe.has_stage(stage);
    let check_model = |field: &str, model: ModelRef| match model.stage() {
        Some(stage) if !present(stage) => Err(invalid(
            field,
            format!("the model of the {stage} stage, but the recipe has no [{stage}] table"),
        )),
        _ => Ok(()),
    };
    let check_sets = |field: &str, sets: &[PromptSet]| {
        for set in sets {
            if recipe.data.files(*set).is_empty() {
                return Err(invalid(
                    field,
                    format!(
                        "prompt set `{}` but [data] {} is empty",
                        set.name(),
                        set.name()
                    ),
                ));
            }
        }
        Ok(())
    };
    if let Some(s) = &recipe.distill {
        check_model("[distill] model", s.model)?;
        check_sets("[distill] data", s.data.as_deref().unwrap_or_default())?;
        if recipe.data.context.is_none() {
            return Err(invalid(
                "[distill]",
                "context distillation needs [data] context (the text to distil)".into(),
            ));
        }
    }
    if let Some(s) = &recipe.critique {
        check_model("[critique] model", s.model)?;
    }
    if let Some(s) = &recipe.sft {
        check_model("[sft] model", s.model)?;
        if !present(Stage::Critique) {
            return Err(invalid(
                "[sft]",
                "SL-CAI fine-tunes on the critique stage's revisions; add [critique]".into(),
            ));
        }
    }
    if let Some(s) = &recipe.label {
        check_model("[label] policy", s.policy)?;
        check_model("[label] feedback", s.feedback)?;
        check_sets("[label] prompts", s.prompts.as_deref().unwrap_or_default())?;
        if s.context_b && recipe.data.context.is_none() {
            return Err(invalid(
                "[label] context_b",
                "needs [data] context (the second sample's context)".into(),
            ));
        }
    }
    if let Some(s) = &recipe.train_pm {
        check_model("[train-pm] model", s.model)?;
        if !present(Stage::Label) {
            return Err(invalid(
                "[train-pm]",
                "the preference model trains on the label stage's labels; add [label]".into(),
            ));
        }
    }
    if let Some(s) = &recipe.rl {
        check_model("[rl] policy", s.policy)?;
        check_sets("[rl] prompts", &s.prompts)?;
        check_sets(
            "[rl] helpful_prompts",
            s.helpful_prompts.as_deref().unwrap_or_default(),
        )?;
        if !["ppo", "rloo", "dpo"].contains(&s.algo.as_str()) {
            return Err(invalid(
                "[rl] algo",
                format!("`{}`: expected ppo, rloo or dpo", s.algo),
            ));
        }
        let needs = if s.algo == "dpo" {
            Stage::Label
        } else {
            Stage::TrainPm
        };
        if !present(needs) {
            return Err(invalid(
                "[rl]",
                format!("{} needs the [{needs}] stage", s.algo),
            ));
        }
    }
    if let Some(e) = &recipe.eval {
        if let Some(elo) = &e.elo {
            if recipe.data.eval_red_team.is_empty() || recipe.data.eval_helpful.is_empty() {
                return Err(invalid(
                    "[eval] elo",
                    "needs [data] eval_red_team and eval_helpful (the prompt sets rated)".into(),
                ));
            }
            if elo.judge == "pm" && !present(Stage::TrainPm) {
                return Err(invalid(
                    "[eval] elo.judge",
                    "`pm` is the train-pm stage's model, but the recipe has no [train-pm]".into(),
                ));
            }
        }
        if let Some(safety) = &e.safety {
            let measured = e
                .snapshots
                .iter()
                .any(|s| *s != Snapshot::Prompted && s.stage().is_none_or(present));
            if !measured {
                return Err(invalid(
                    "[eval.safety]",
                    "no snapshot with a model of its own to judge: [eval] snapshots lists none \
                     whose stage the recipe has (`prompted` is the base model with a context, \
                     which cai eval safety does not put in front of prompts)"
                        .into(),
                ));
            }
            check_sets("[eval.safety] red_team", &[safety.red_team])?;
            if let BenignSet::Data(set) = safety.benign {
                check_sets("[eval.safety] benign", &[set])?;
            }
            if safety.judges.is_empty() {
                return Err(invalid(
                    "[eval.safety] judges",
                    "expected at least one judge, e.g. [\"refusal\"]".into(),
                ));
            }
            for (i, judge) in safety.judges.iter().enumerate() {
                let field = format!("[eval.safety] judges[{i}]");
                check_safety_judge(judge).map_err(|m| invalid(&field, m))?;
                if judge == "pm" && !present(Stage::TrainPm) {
                    return Err(invalid(
                        &field,
                        "`pm` is the train-pm stage's model, but the recipe has no [train-pm]"
                            .into(),
                    ));
                }
                if safety.judges[..i].contains(judge) {
                    return Err(invalid(&field, format!("`{judge}` is given twice")));
                }
            }
            for (value, key) in [
                (safety.samples, "samples"),
                (safety.max_new_tokens, "max_new_tokens"),
            ] {
                if value == Some(0) {
                    return Err(invalid(
                        &format!("[eval.safety] {key}"),
                        "expected at least 1".into(),
                    ));
                }
            }
        }
        if e.snapshots.contains(&Snapshot::Prompted) && recipe.data.context.is_none() {
            return Err(invalid(
                "[eval] snapshots",
                "`prompted` needs [data] context".into(),
            ));
        }
    }
    Ok(())
}

/// The form of one `[eval.safety]` judge (what each names is checked when it runs): the
/// message says what was expected.
fn check_safety_judge(judge: &str) -> Result<(), String> {
    let nonempty = |rest: &str| !rest.trim().is_empty();
    let ok = match judge.split_once(':') {
        _ if ["refusal", "oracle", "pm"].contains(&judge) => true,
        _ if judge == "feedback" => {
            return Err(
                "`feedback`: the feedback model only compares two answers and gives no \
                 verdict on one, so it cannot judge attack success or over-refusal; use \
                 refusal, classifier:TEMPLATE@MODEL (which may name the feedback model) or \
                 llm:URL[#MODEL]"
                    .into(),
            )
        }
        Some(("classifier", rest)) => rest
            .split_once('@')
            .is_some_and(|(template, model)| nonempty(template) && nonempty(model)),
        Some(("llm", rest)) => rest.starts_with("http://") || rest.starts_with("https://"),
        Some(("pm", rest)) => nonempty(rest),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{judge}` is not a judge; expected refusal (the refusal-pattern baseline), \
             classifier:TEMPLATE@MODEL (TEMPLATE llama-guard-3, shieldgemma, wildguard, \
             harmbench or a template file), llm:http(s)://HOST:PORT/v1[#MODEL], pm (the \
             train-pm stage's model), pm:DIR or oracle (the lab's)"
        ))
    }
}
