//! Special tokens: what `tokenizer_config.json`, `generation_config.json` and `config.json`
//! state about bos, eos and pad, and settling those statements against the vocabulary.

use std::path::Path;

use cai_core::chat_template;
use serde_json::Value;

use super::{read_json, tokenizer_error};
use crate::{ModelError, Result};

/// Special tokens as the config files state them, before they are checked against the vocab.
#[derive(Default)]
pub(super) struct Specials {
    pub(super) bos_token: Option<String>,
    pub(super) eos_token: Option<String>,
    pub(super) pad_token: Option<String>,
    pub(super) bos_id: Option<u32>,
    pub(super) eos_ids: Vec<u32>,
    pub(super) pad_id: Option<u32>,
    /// `add_bos_token` if a file states it.
    pub(super) add_bos: Option<bool>,
}

/// The special tokens settled against the vocabulary.
pub(super) struct Resolved {
    /// The bos token and its id, if the model has one.
    pub(super) bos: Option<(String, u32)>,
    /// The token of `eos_ids[0]`.
    pub(super) eos_token: String,
    /// Every id that ends a generation; never empty.
    pub(super) eos_ids: Vec<u32>,
    /// The padding id (the first eos id unless the files name one in the vocabulary).
    pub(super) pad_id: u32,
    /// Whether prompts start with bos.
    pub(super) add_bos: bool,
}

impl Specials {
    /// Take `bos_token`, `eos_token`, `pad_token` (strings or `{"content": ...}` objects) and
    /// `add_bos_token` from a parsed `tokenizer_config.json`.
    pub(super) fn read_tokenizer_config(&mut self, config: &Value) {
        self.bos_token = chat_template::special_token(config, "bos_token");
        self.eos_token = chat_template::special_token(config, "eos_token");
        self.pad_token = chat_template::special_token(config, "pad_token");
        self.add_bos = config.get("add_bos_token").and_then(Value::as_bool);
    }

    /// Add `bos_token_id`, `eos_token_id` and `pad_token_id` from `generation_config.json`
    /// then `config.json` in `dir`, where present: the first bos and pad ids win, eos ids add up.
    pub(super) fn read_model_config_ids(&mut self, dir: &Path) -> Result<()> {
        for name in ["generation_config.json", "config.json"] {
            let path = dir.join(name);
            if let Some(config) = read_json(&path)? {
                let bos = config_ids(&config, "bos_token_id", &path)?;
                let pad = config_ids(&config, "pad_token_id", &path)?;
                self.bos_id = self.bos_id.or(bos.first().copied());
                self.pad_id = self.pad_id.or(pad.first().copied());
                self.eos_ids
                    .extend(config_ids(&config, "eos_token_id", &path)?);
            }
        }
        Ok(())
    }

    /// Check the stated special tokens against the vocabulary of `inner` and settle ids and
    /// defaults; `origin` names the tokenizer in errors.
    pub(super) fn resolve(self, inner: &tokenizers::Tokenizer, origin: &Path) -> Result<Resolved> {
        let id_of = |token: &str| {
            inner.token_to_id(token).ok_or_else(|| {
                tokenizer_error(
                    origin,
                    format!("special token '{token}' is not in the vocabulary"),
                )
            })
        };
        let bos_id = self
            .bos_token
            .as_deref()
            .map(id_of)
            .transpose()?
            .or(self.bos_id);
        let bos = bos_id.and_then(|id| Some((inner.id_to_token(id)?, id)));
        let mut eos_ids = self
            .eos_token
            .as_deref()
            .map(id_of)
            .transpose()?
            .into_iter()
            .collect::<Vec<_>>();
        for id in self.eos_ids {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        let Some(eos_token) = eos_ids.first().and_then(|&id| inner.id_to_token(id)) else {
            return Err(tokenizer_error(
                origin,
                "no end-of-sequence token: set eos_token in tokenizer_config.json or \
                 eos_token_id in generation_config.json",
            ));
        };
        let pad_id = self
            .pad_token
            .and_then(|token| inner.token_to_id(&token))
            .or(self.pad_id)
            .unwrap_or(eos_ids[0]);
        let post_processor_adds_bos = || {
            let ids = inner
                .encode("a", true)
                .map(|e| e.get_ids().first().copied());
            matches!(ids, Ok(first) if first == bos_id)
        };
        let add_bos = bos.is_some() && self.add_bos.unwrap_or_else(post_processor_adds_bos);
        Ok(Resolved {
            bos,
            eos_token,
            eos_ids,
            pad_id,
            add_bos,
        })
    }
}

/// A token-id field of a model config: absent or null, an id, or a list of ids.
fn config_ids(config: &Value, key: &str, path: &Path) -> Result<Vec<u32>> {
    let as_id = |v: &Value| v.as_u64().and_then(|id| u32::try_from(id).ok());
    let ids = match config.get(key) {
        None | Some(Value::Null) => Some(vec![]),
        Some(Value::Array(list)) => list.iter().map(as_id).collect(),
        Some(value) => as_id(value).map(|id| vec![id]),
    };
    ids.ok_or_else(|| ModelError::Config {
        path: path.to_path_buf(),
        message: format!("{key} must be a token id or a list of token ids"),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn config_ids_accept_an_id_a_list_or_null() {
        let config = json!({"a": 2, "b": [1, 2], "c": null, "d": "x"});
        let path = Path::new("config.json");
        assert_eq!(config_ids(&config, "a", path).unwrap(), [2]);
        assert_eq!(config_ids(&config, "b", path).unwrap(), [1, 2]);
        assert!(config_ids(&config, "c", path).unwrap().is_empty());
        assert!(config_ids(&config, "missing", path).unwrap().is_empty());
        assert!(config_ids(&config, "d", path).is_err());
    }
}
