//! Importers for the published constitution files: Anthropic's critique/revision object and
//! multiple-choice list, and Hugging Face's `{"constitutions", "system_chat"}` object. Request
//! texts are normalised to bare text (Anthropic's carry transcript markers).

use std::path::Path;

use serde_json::{Map, Value};

use super::{ChoicePrinciple, Constitution, CritiquePrinciple};
use crate::critique::{bare_request, CRITIQUE, CRITIQUE_REQUEST, REVISION, REVISION_REQUEST};
use crate::few_shot;
use crate::Error;

/// A constitution from a parsed JSON file, its shape detected.
pub(super) fn from_json(value: &Value, path: &Path) -> Result<Constitution, Error> {
    match value {
        Value::Object(object) if object.contains_key("constitutions") => hugging_face(object, path),
        Value::Object(object) => anthropic_critiques(object, path),
        Value::Array(items) => anthropic_choices(items, path),
        _ => Err(Error::file(
            path,
            "expected a JSON object (Anthropic's critique/revision principles, or Hugging Face's \
             {\"constitutions\": …}) or a list of multiple-choice principles",
        )),
    }
}

/// The string at `object[key]`; `at` names the object in errors.
fn string<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    at: &str,
    path: &Path,
) -> Result<&'a str, Error> {
    let field = if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    };
    match object.get(key) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(Error::field(path, field, "expected a string")),
        None => Err(Error::field(path, field, "missing; expected a string")),
    }
}

/// Anthropic's `{name: {"prompt": [critique request], "edit_request": revision request}}`.
/// A `prompt` list of several requests gives one principle per request (`name/1`, `name/2`,
/// …), each with the same revision request.
fn anthropic_critiques(object: &Map<String, Value>, path: &Path) -> Result<Constitution, Error> {
    if object.is_empty() {
        return Err(Error::file(
            path,
            "the object is empty; expected critique/revision principles {name: {\"prompt\": \
             [..], \"edit_request\": ..}}",
        ));
    }
    let mut principles = Vec::new();
    for (name, entry) in object {
        let Value::Object(entry) = entry else {
            return Err(Error::field(
                path,
                name.clone(),
                "expected an object with \"prompt\" (a list of critique requests) and \
                 \"edit_request\" (the revision request)",
            ));
        };
        let requests: Vec<&str> = match entry.get("prompt") {
            Some(Value::String(text)) => vec![text],
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str().ok_or_else(|| {
                        Error::field(path, format!("{name}.prompt"), "expected a list of strings")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(Error::field(
                    path,
                    format!("{name}.prompt"),
                    "expected a list of critique request strings",
                ))
            }
            None => {
                return Err(Error::field(
                    path,
                    format!("{name}.prompt"),
                    "missing; expected a list of critique request strings",
                ))
            }
        };
        if requests.is_empty() {
            return Err(Error::field(
                path,
                format!("{name}.prompt"),
                "the list is empty; expected a critique request",
            ));
        }
        let revision = string(entry, "edit_request", name, path)?;
        let revision_request = bare_request(revision, REVISION_REQUEST, REVISION);
        for (i, request) in requests.iter().enumerate() {
            let id = if requests.len() == 1 {
                name.clone()
            } else {
                format!("{name}/{}", i + 1)
            };
            principles.push(CritiquePrinciple {
                id,
                critique_request: bare_request(request, CRITIQUE_REQUEST, CRITIQUE),
                revision_request: revision_request.clone(),
            });
        }
    }
    Ok(Constitution {
        critique_revision: principles,
        ..Constitution::default()
    })
}

/// Anthropic's multiple-choice principles: strings ending in `Options:`, which is dropped.
/// Ids are `mc-0`, `mc-1`, … in file order. A list of critique transcripts (the few-shot
/// file given as a constitution) is an error that says so.
fn anthropic_choices(items: &[Value], path: &Path) -> Result<Constitution, Error> {
    if items.is_empty() {
        return Err(Error::file(
            path,
            "the list is empty; expected multiple-choice principles (strings ending in \
             \"Options:\")",
        ));
    }
    let multiple_choice = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let text = item.as_str().ok_or_else(|| {
                Error::field(
                    path,
                    format!("[{i}]"),
                    "expected a string (a multiple-choice principle)",
                )
            })?;
            if text.contains("\n\nCritiqueRequest:") {
                return Err(Error::field(
                    path,
                    format!("[{i}]"),
                    "is a critique/revision transcript (Anthropic's few-shot file), not a \
                     multiple-choice principle; pass the file to --few-shot",
                ));
            }
            let text = text.trim();
            let question = text.strip_suffix("Options:").unwrap_or(text).trim_end();
            Ok(ChoicePrinciple {
                id: format!("mc-{i}"),
                question: question.to_owned(),
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Constitution {
        multiple_choice,
        ..Constitution::default()
    })
}

/// Hugging Face's `{"constitutions": [{"critic", "revision"}], "system_chat": [[messages]]}`.
/// Ids are `critique-0`, `critique-1`, … in file order; `system_chat` becomes the few-shot
/// examples.
fn hugging_face(object: &Map<String, Value>, path: &Path) -> Result<Constitution, Error> {
    let Value::Array(entries) = &object["constitutions"] else {
        return Err(Error::field(
            path,
            "constitutions",
            "expected a list of {\"critic\", \"revision\"} objects",
        ));
    };
    if entries.is_empty() {
        return Err(Error::field(
            path,
            "constitutions",
            "the list is empty; expected at least one {\"critic\", \"revision\"} object",
        ));
    }
    let critique_revision = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = format!("constitutions[{i}]");
            let Value::Object(entry) = entry else {
                return Err(Error::field(
                    path,
                    at,
                    "expected an object with \"critic\" and \"revision\"",
                ));
            };
            Ok(CritiquePrinciple {
                id: format!("critique-{i}"),
                critique_request: bare_request(
                    string(entry, "critic", &at, path)?,
                    CRITIQUE_REQUEST,
                    CRITIQUE,
                ),
                revision_request: bare_request(
                    string(entry, "revision", &at, path)?,
                    REVISION_REQUEST,
                    REVISION,
                ),
            })
        })
        .collect::<Result<_, Error>>()?;
    let few_shot = match object.get("system_chat") {
        Some(value) => few_shot::from_system_chat(value, path, "system_chat")?,
        None => Vec::new(),
    };
    Ok(Constitution {
        critique_revision,
        multiple_choice: Vec::new(),
        few_shot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn import(value: Value) -> Result<Constitution, Error> {
        from_json(&value, Path::new("c.json"))
    }

    #[test]
    fn anthropic_critiques_lose_their_markers() {
        let c = import(json!({
            "harmful1": {
                "prompt": ["\n\nCritiqueRequest: Is it harmful?\n\nCritique:"],
                "edit_request": "\n\nRevisionRequest: Make it harmless.\n\nRevision:"
            },
            "two": {"prompt": ["A?", "B?"], "edit_request": "Fix."}
        }))
        .unwrap();
        let got: Vec<(&str, &str, &str)> = c
            .critique_revision
            .iter()
            .map(|p| {
                (
                    p.id.as_str(),
                    p.critique_request.as_str(),
                    p.revision_request.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("harmful1", "Is it harmful?", "Make it harmless."),
                ("two/1", "A?", "Fix."),
                ("two/2", "B?", "Fix."),
            ]
        );
        assert!(c.multiple_choice.is_empty());
    }

    #[test]
    fn anthropic_choices_drop_options() {
        let c = import(json!(["Which is kinder?\nOptions:", "Which is safer?"])).unwrap();
        let got: Vec<(&str, &str)> = c
            .multiple_choice
            .iter()
            .map(|p| (p.id.as_str(), p.question.as_str()))
            .collect();
        assert_eq!(
            got,
            [("mc-0", "Which is kinder?"), ("mc-1", "Which is safer?")]
        );
    }

    #[test]
    fn hugging_face_constitution_and_system_chat() {
        let chat = json!([[
            {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"},
            {"role": "user", "content": "Harmful?"}, {"role": "assistant", "content": "Yes"},
            {"role": "user", "content": "Fix it"}, {"role": "assistant", "content": "Fixed"}
        ]]);
        let c = import(json!({
            "constitutions": [{"critic": "Harmful?", "revision": "Fix it"}],
            "system_chat": chat
        }))
        .unwrap();
        assert_eq!(c.critique_revision[0].id, "critique-0");
        assert_eq!(c.critique_revision[0].revision_request, "Fix it");
        assert_eq!(c.few_shot.len(), 1);
        assert_eq!(c.few_shot[0].rounds[0].revision, "Fixed");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                json!({"h": {"prompt": ["A?"]}}),
                "c.json: h.edit_request: missing",
            ),
            (
                json!({"h": {"edit_request": "x"}}),
                "c.json: h.prompt: missing",
            ),
            (
                json!({"h": {"prompt": [], "edit_request": "x"}}),
                "h.prompt: the list is empty",
            ),
            (json!({"h": "text"}), "c.json: h: expected an object"),
            (json!({}), "c.json: the object is empty"),
            (json!([]), "c.json: the list is empty"),
            (json!(["ok", 3]), "c.json: [1]: expected a string"),
            (
                json!({"constitutions": []}),
                "constitutions: the list is empty",
            ),
            (
                json!({"constitutions": [{"critic": "x"}]}),
                "constitutions[0].revision: missing",
            ),
            (json!(7), "expected a JSON object"),
            (
                json!(["\n\nHuman: Q\n\nAssistant: A\n\nCritiqueRequest: r\n\nCritique: c"]),
                "c.json: [0]: is a critique/revision transcript (Anthropic's few-shot file)",
            ),
        ];
        for (value, expected) in cases {
            let err = import(value.clone()).unwrap_err().to_string();
            assert!(err.contains(expected), "{value}: {err}");
        }
    }
}
