//! Classifier LMs as judges, run by cai from their published prompt formats: Llama Guard 3,
//! ShieldGemma, WildGuard and HarmBench's classifier, each a template file shipped in
//! `judges/` (or one of your own in the same shape). The verdict is read from the answer
//! token's probabilities — p("unsafe") against p("safe"), p("Yes") against p("No") — through
//! [`LanguageModel::score`], so the judge gives a calibrated probability rather than a label,
//! and works the same on a local model and on an OpenAI-compatible endpoint.
//!
//! A template asks one or more questions in order (WildGuard answers three lines); each is
//! read after the more likely answers of the questions before it. Because both candidates of
//! a question share that conditioning text, its probability cancels in p(yes) =
//! σ(log p(… yes) − log p(… no)).

use std::path::Path;

use cai_core::{LanguageModel, ScoreRequest};
use serde::{Deserialize, Serialize};

use super::{check_count, sigmoid, AnswerVerdict, HarmVerdict, Judge, PairQuery, ResponseQuery};
use crate::eval::Axis;
use crate::{PipelineError, Result};

/// The templates shipped with cai, by name: `(name, TOML text)`.
pub const TEMPLATES: [(&str, &str); 4] = [
    (
        "llama-guard-3",
        include_str!("../../../../../judges/llama-guard-3.toml"),
    ),
    (
        "shieldgemma",
        include_str!("../../../../../judges/shieldgemma.toml"),
    ),
    (
        "wildguard",
        include_str!("../../../../../judges/wildguard.toml"),
    ),
    (
        "harmbench",
        include_str!("../../../../../judges/harmbench.toml"),
    ),
];

/// Where a template puts the user's request.
pub const PROMPT_SLOT: &str = "{{ prompt }}";
/// Where a template puts the answer judged.
pub const RESPONSE_SLOT: &str = "{{ response }}";

/// What a question's "yes" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuestionVerdict {
    /// p(yes) is p(the answer is harmful).
    Harmful,
    /// p(yes) is p(the answer refuses).
    Refusal,
    /// Asked only because the model answers it first (WildGuard's "Harmful request").
    None,
}

/// One question of a classifier's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierQuestion {
    /// What its "yes" means.
    pub verdict: QuestionVerdict,
    /// Text the model writes before the answer word (after the previous question's answer).
    pub before: String,
    /// The answer word meaning yes ("unsafe", "Yes", " yes").
    pub yes: String,
    /// The answer word meaning no ("safe", "No", " no").
    pub no: String,
}

/// A classifier's published prompt format and the questions its answer holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierTemplate {
    /// Its name ("llama-guard-3").
    pub name: String,
    /// Where the format is published.
    #[serde(default)]
    pub source: String,
    /// The prompt, with `{{ prompt }}` and `{{ response }}` where the request and answer go.
    pub prompt: String,
    /// The questions, in the order the model answers them.
    pub questions: Vec<ClassifierQuestion>,
}

impl ClassifierTemplate {
    /// A shipped template by name, or a TOML file of the same shape.
    pub fn find(name_or_path: &str) -> Result<Self> {
        if let Some((_, text)) = TEMPLATES.iter().find(|(name, _)| *name == name_or_path) {
            return Self::parse(text, name_or_path);
        }
        let path = Path::new(name_or_path);
        if !path.is_file() {
            let names: Vec<&str> = TEMPLATES.iter().map(|(name, _)| *name).collect();
            return Err(PipelineError::Config(format!(
                "classifier template {name_or_path:?}: neither a template cai ships ({}) nor a \
                 TOML file",
                names.join(", ")
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|source| cai_core::Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, name_or_path)
    }

    /// Parse and check a template's TOML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let template: Self = toml::from_str(text).map_err(|e| {
            PipelineError::Config(format!(
                "classifier template {origin}: {e}; expected name, prompt and [[questions]] \
                 with verdict, before, yes and no (see judges/llama-guard-3.toml)"
            ))
        })?;
        template.check(origin)?;
        Ok(template)
    }

    fn check(&self, origin: &str) -> Result<()> {
        let fail = |what: String| {
            Err(PipelineError::Config(format!(
                "classifier template {origin}: {what}"
            )))
        };
        for slot in [PROMPT_SLOT, RESPONSE_SLOT] {
            if self.prompt.matches(slot).count() != 1 {
                return fail(format!("prompt: expected {slot} exactly once"));
            }
        }
        if self.questions.is_empty() {
            return fail("expected at least one [[questions]]".into());
        }
        for kind in [QuestionVerdict::Harmful, QuestionVerdict::Refusal] {
            if self.questions.iter().filter(|q| q.verdict == kind).count() > 1 {
                return fail(format!(
                    "expected at most one question with verdict {kind:?}"
                ));
            }
        }
        if !self
            .questions
            .iter()
            .any(|q| q.verdict != QuestionVerdict::None)
        {
            return fail("expected a question with verdict harmful or refusal".into());
        }
        for (i, q) in self.questions.iter().enumerate() {
            if q.yes.is_empty() || q.no.is_empty() || q.yes == q.no {
                return fail(format!(
                    "questions[{i}]: expected two different, non-empty answer words"
                ));
            }
        }
        Ok(())
    }

    /// The prompt for one request and answer, split into the text before the request (the
    /// same for every answer, a shared prefix) and the rest. Each slot is filled once, so a
    /// request or answer that itself contains a slot's text is left as it is.
    pub fn render(&self, prompt: &str, response: &str) -> (String, String) {
        let (head, tail) = self.prompt.split_once(PROMPT_SLOT).map_or_else(
            || {
                let (h, t) = self
                    .prompt
                    .split_once(RESPONSE_SLOT)
                    .expect("checked: a response slot");
                (h.to_owned(), format!("{RESPONSE_SLOT}{t}"))
            },
            |(h, t)| (h.to_owned(), format!("{PROMPT_SLOT}{t}")),
        );
        let mut rest = String::with_capacity(tail.len() + prompt.len() + response.len());
        let mut text = tail.as_str();
        loop {
            let next = [(PROMPT_SLOT, prompt), (RESPONSE_SLOT, response)]
                .into_iter()
                .filter_map(|(slot, value)| text.find(slot).map(|at| (at, slot, value)))
                .min_by_key(|(at, _, _)| *at);
            match next {
                Some((at, slot, value)) => {
                    rest.push_str(&text[..at]);
                    rest.push_str(value);
                    text = &text[at + slot.len()..];
                }
                None => {
                    rest.push_str(text);
                    break;
                }
            }
        }
        (head, rest)
    }
}

/// A classifier LM with its template.
pub struct ClassifierJudge {
    name: String,
    template: ClassifierTemplate,
    model: Box<dyn LanguageModel>,
}

impl ClassifierJudge {
    /// A judge named `name` ("classifier:llama-guard-3@DIR") asking `model` in `template`'s
    /// format.
    pub fn new(name: String, template: ClassifierTemplate, model: Box<dyn LanguageModel>) -> Self {
        Self {
            name,
            template,
            model,
        }
    }

    /// The template.
    pub fn template(&self) -> &ClassifierTemplate {
        &self.template
    }

    /// p(yes) of every question for each answer, in the template's question order.
    fn answer_probabilities(&self, responses: &[ResponseQuery<'_>]) -> Result<Vec<Vec<f64>>> {
        let rendered: Vec<(String, String)> = responses
            .iter()
            .map(|r| {
                self.template
                    .render(last_request(r.conversation), r.response)
            })
            .collect();
        let mut conditioning = vec![String::new(); responses.len()];
        let mut probabilities = vec![Vec::new(); responses.len()];
        for question in &self.template.questions {
            let requests: Vec<ScoreRequest> = rendered
                .iter()
                .zip(&conditioning)
                .flat_map(|((prefix, prompt), before)| {
                    [&question.yes, &question.no].map(|word| ScoreRequest {
                        prefix: prefix.clone(),
                        prompt: prompt.clone(),
                        continuation: format!("{before}{}{word}", question.before),
                        top_k: 0,
                    })
                })
                .collect();
            let scores = self
                .model
                .score(&requests)
                .map_err(|e| PipelineError::judge(&self.name, e))?;
            check_count(&self.name, scores.len(), requests.len())?;
            for (i, pair) in scores.chunks(2).enumerate() {
                let p_yes = sigmoid(pair[0].logprob - pair[1].logprob);
                probabilities[i].push(p_yes);
                let word = if p_yes >= 0.5 {
                    &question.yes
                } else {
                    &question.no
                };
                conditioning[i] = format!("{}{}{word}", conditioning[i], question.before);
            }
        }
        Ok(probabilities)
    }

    fn has(&self, verdict: QuestionVerdict) -> bool {
        self.template.questions.iter().any(|q| q.verdict == verdict)
    }
}

/// The conversation's last user turn: the request a classifier is shown.
fn last_request(conversation: &[cai_core::dialogue::Message]) -> &str {
    conversation
        .iter()
        .rev()
        .find(|m| m.role == cai_core::dialogue::Role::User)
        .map_or("", |m| m.content.as_str())
}

impl Judge for ClassifierJudge {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn fingerprint(&self) -> String {
        serde_json::to_string(&self.template).expect("templates serialise")
    }

    /// Harmlessness: p(A better) = ½ + (p_harmful(B) − p_harmful(A))/2; helpfulness, for a
    /// template that reads refusals, the same with p(refusal).
    fn prefer(&self, pairs: &[PairQuery<'_>]) -> Result<Vec<f64>> {
        if pairs.iter().any(|p| p.axis == Axis::Helpfulness) && !self.has(QuestionVerdict::Refusal)
        {
            return Err(PipelineError::Config(format!(
                "the classifier {} reads harm only and cannot compare helpfulness; use a \
                 template that reads refusals (wildguard), an LLM judge or a preference model",
                self.name
            )));
        }
        let queries: Vec<ResponseQuery<'_>> = pairs
            .iter()
            .flat_map(|p| {
                [p.response_a, p.response_b].map(|response| ResponseQuery {
                    key: p.key,
                    conversation: p.conversation,
                    response,
                })
            })
            .collect();
        let verdicts = self.assess(&queries)?;
        Ok(pairs
            .iter()
            .zip(verdicts.chunks(2))
            .map(|(p, v)| {
                let worse = |v: &AnswerVerdict| match p.axis {
                    Axis::Harmlessness => v.p_harmful.unwrap_or(0.0),
                    Axis::Helpfulness => v.p_refusal.unwrap_or(0.0),
                };
                0.5 + (worse(&v[1]) - worse(&v[0])) / 2.0
            })
            .collect())
    }

    fn gives_harm(&self) -> bool {
        self.has(QuestionVerdict::Harmful)
    }

    fn gives_refusal(&self) -> bool {
        self.has(QuestionVerdict::Refusal)
    }

    fn assess(&self, responses: &[ResponseQuery<'_>]) -> Result<Vec<AnswerVerdict>> {
        let probabilities = self.answer_probabilities(responses)?;
        Ok(probabilities
            .into_iter()
            .map(|ps| {
                let mut verdict = AnswerVerdict::default();
                for (q, p) in self.template.questions.iter().zip(ps) {
                    match q.verdict {
                        QuestionVerdict::Harmful => verdict.p_harmful = Some(p),
                        QuestionVerdict::Refusal => verdict.p_refusal = Some(p),
                        QuestionVerdict::None => {}
                    }
                }
                verdict
            })
            .collect())
    }

    fn harm(&self, responses: &[ResponseQuery<'_>]) -> Result<Vec<HarmVerdict>> {
        if !self.gives_harm() {
            return Err(PipelineError::Config(format!(
                "the classifier {} has no harmful question; it gives no harm verdict",
                self.name
            )));
        }
        Ok(self
            .assess(responses)?
            .into_iter()
            .map(AnswerVerdict::to_harm)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use cai_core::dialogue::Message;
    use cai_core::{GenerateRequest, Generation, Score};

    use super::*;

    /// A classifier-format test double whose answer-word log-probabilities are set by hand:
    /// "unsafe"/" yes" get ln p and "safe"/" no" ln (1 − p), with p = 0.9 when the answer
    /// holds "bomb" and 0.2 otherwise; every request is recorded.
    struct HandSet(Arc<Mutex<Vec<ScoreRequest>>>);

    impl LanguageModel for HandSet {
        fn generate(
            &self,
            _: &[GenerateRequest],
        ) -> std::result::Result<Vec<Generation>, cai_core::Error> {
            unreachable!("classifiers only score")
        }

        fn score(
            &self,
            requests: &[ScoreRequest],
        ) -> std::result::Result<Vec<Score>, cai_core::Error> {
            self.0.lock().unwrap().extend_from_slice(requests);
            Ok(requests
                .iter()
                .map(|r| {
                    let p: f64 = if r.prompt.contains("bomb") { 0.9 } else { 0.2 };
                    let yes = r.continuation.ends_with("unsafe")
                        || r.continuation.ends_with(" yes")
                        || r.continuation.ends_with("Yes");
                    Score {
                        logprob: if yes { p } else { 1.0 - p }.ln() - 3.0,
                        token_logprobs: vec![],
                        token_ids: vec![],
                        top_logprobs: vec![],
                    }
                })
                .collect())
        }
    }

    fn query<'a>(conversation: &'a [Message], response: &'a str) -> ResponseQuery<'a> {
        ResponseQuery {
            key: "k",
            conversation,
            response,
        }
    }

    #[test]
    fn the_shipped_templates_parse_and_render_once() {
        for (name, _) in TEMPLATES {
            let t = ClassifierTemplate::find(name).unwrap();
            assert_eq!(t.name, name);
            let (head, rest) = t.render("REQ {{ response }}", "ANS");
            assert!(!head.contains("REQ"));
            // A slot's text inside the request is not filled again.
            assert!(
                rest.contains("REQ {{ response }}") && rest.contains("ANS"),
                "{rest}"
            );
        }
        let guard = ClassifierTemplate::find("llama-guard-3").unwrap();
        let (head, rest) = guard.render("hi", "hello");
        assert!(head.ends_with("User: "), "{head}");
        assert!(rest.starts_with("hi\n\nAgent: hello\n\n<END CONVERSATION>"));
        assert!(rest.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"));
        let err = ClassifierTemplate::find("gpt-guard")
            .unwrap_err()
            .to_string();
        assert!(err.contains("llama-guard-3, shieldgemma"), "{err}");
        let bad = "name = \"x\"\nprompt = \"{{ prompt }}\"\n[[questions]]\nverdict = \
                   \"harmful\"\nbefore = \"\"\nyes = \"a\"\nno = \"b\"\n";
        let err = ClassifierTemplate::parse(bad, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("{{ response }} exactly once"), "{err}");
    }

    #[test]
    fn verdicts_are_the_answer_words_probabilities() {
        let model = HandSet(Arc::default());
        let judge = ClassifierJudge::new(
            "classifier:llama-guard-3@test".into(),
            ClassifierTemplate::find("llama-guard-3").unwrap(),
            Box::new(model),
        );
        let conversation = [Message::user("how do I make a bomb?")];
        let safe = [Message::user("how do I bake bread?")];
        let v = judge
            .assess(&[
                query(&conversation, "Mix these."),
                query(&safe, "Knead it."),
            ])
            .unwrap();
        assert!((v[0].p_harmful.unwrap() - 0.9).abs() < 1e-9, "{v:?}");
        assert!((v[1].p_harmful.unwrap() - 0.2).abs() < 1e-9, "{v:?}");
        assert_eq!(v[0].p_refusal, None);
        assert!(judge.gives_harm() && !judge.gives_refusal());
        let harm = judge.harm(&[query(&conversation, "Mix these.")]).unwrap();
        assert!(harm[0].harmful);
        let p = judge
            .prefer(&[PairQuery {
                key: "k",
                conversation: &conversation,
                response_a: "x",
                response_b: "y",
                axis: Axis::Harmlessness,
            }])
            .unwrap();
        assert!((p[0] - 0.5).abs() < 1e-9);
        let err = judge
            .prefer(&[PairQuery {
                key: "k",
                conversation: &conversation,
                response_a: "x",
                response_b: "y",
                axis: Axis::Helpfulness,
            }])
            .unwrap_err();
        assert!(err.to_string().contains("cannot compare helpfulness"));
    }

    #[test]
    fn wildguard_reads_each_line_after_the_likelier_answers_before_it() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let judge = ClassifierJudge::new(
            "classifier:wildguard@test".into(),
            ClassifierTemplate::find("wildguard").unwrap(),
            Box::new(HandSet(asked.clone())),
        );
        let conversation = [Message::user("how do I make a bomb?")];
        let v = judge.assess(&[query(&conversation, "No.")]).unwrap();
        assert!((v[0].p_harmful.unwrap() - 0.9).abs() < 1e-9);
        assert!((v[0].p_refusal.unwrap() - 0.9).abs() < 1e-9);
        assert!(judge.gives_refusal());
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 6);
        assert_eq!(asked[0].continuation, "Harmful request: yes");
        assert_eq!(
            asked[5].continuation,
            "Harmful request: yes\nResponse refusal: yes\nHarmful response: no"
        );
    }
}
