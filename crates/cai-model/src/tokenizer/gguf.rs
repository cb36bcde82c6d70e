//! Rebuilding a Hugging Face tokenizer from a GGUF file's `tokenizer.ggml.*` metadata: a
//! byte-level BPE (`gpt2`: vocabulary and merges, split by the `pre` type's regex) or a
//! SentencePiece BPE (`llama`: vocabulary and scores, byte fallback), the control and
//! user-defined tokens as added tokens, bos/eos/pad, `add_bos_token` and the chat template.
//! The shapes follow transformers' own GGUF tokenizer builder, so both give the same ids.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::specials::Specials;
use super::{tokenizer_error, Tokenizer};
use crate::gguf::GgufFile;
use crate::Result;

/// The `tokenizer.ggml.model` values cai rebuilds.
pub const GGUF_TOKENIZER_MODELS: &[&str] = &["gpt2", "llama"];

/// GGUF token types (llama.cpp's `llama_token_type`).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// Llama 3's split (llama.cpp pre types `llama-bpe`, `llama3`, `smaug-bpe`, …).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Single digits, then GPT-2's own regex (applied by ByteLevel).
const DIGITS_THEN_GPT2: &str = r"\p{N}";
/// Qwen2's split (pre types `qwen2`, `deepseek-r1-qwen`, `megrez`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o's split (pre types `gpt-4o`, `llama4`).
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex of a byte-level `tokenizer.ggml.pre` type, `None` for GPT-2's own
/// (ByteLevel's built-in regex).
fn pre_split(pre: &str) -> Option<&'static str> {
    Some(match pre {
        // llama.cpp splits every digit off first, then applies GPT-2's regex (as these
        // models' own tokenizer.json does with `Digits(individual_digits)`); transformers'
        // GGUF builder does not know these types and keeps runs of digits together.
        "smollm" | "starcoder" | "refact" | "codeshell" => DIGITS_THEN_GPT2,
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" | "pixtral" => {
            LLAMA3_SPLIT
        }
        "qwen2" | "deepseek-r1-qwen" | "megrez" => QWEN2_SPLIT,
        "gpt-4o" | "llama4" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// GPT-2's byte → printable character table (`bytes_to_unicode`).
fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        table[b as usize] = if printable {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("a valid code point")
        };
    }
    table
}

impl Tokenizer {
    /// Rebuild the tokenizer of a GGUF file (see the module doc). bos/eos/pad/unk come from
    /// `tokenizer.ggml.{bos,eos,padding,unknown}_token_id`; `tokenizer.ggml.add_bos_token`
    /// decides whether prompts start with bos (absent: yes for SentencePiece, no for BPE,
    /// as transformers and llama.cpp do); `tokenizer.chat_template` is the chat template.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        let path = file.path();
        let model = file.required_str("tokenizer.ggml.model")?;
        let tokens = file
            .str_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| file.error("metadata `tokenizer.ggml.tokens` is missing"))?;
        let types = file.i64_array("tokenizer.ggml.token_type")?;
        if let Some(types) = &types {
            if types.len() != tokens.len() {
                return Err(file.error(format!(
                    "metadata `tokenizer.ggml.token_type` has {} entries for {} tokens",
                    types.len(),
                    tokens.len()
                )));
            }
        }
        let token_of = |key: &str| -> Result<Option<String>> {
            match file.token_id(key)? {
                None => Ok(None),
                Some(id) => tokens
                    .get(id as usize)
                    .map(|t| Some(t.to_string()))
                    .ok_or_else(|| {
                        file.error(format!(
                            "metadata `{key}` is {id}, beyond the {} tokens",
                            tokens.len()
                        ))
                    }),
            }
        };
        let unk = token_of("tokenizer.ggml.unknown_token_id")?;
        let (json, add_bos_default) = match model {
            "gpt2" => {
                let pre = file.str("tokenizer.ggml.pre")?.unwrap_or("default");
                (
                    byte_level_json(file, &tokens, types.as_deref(), pre)?,
                    false,
                )
            }
            "llama" => {
                let prefix_space = file
                    .bool("tokenizer.ggml.add_space_prefix")?
                    .unwrap_or(true);
                (
                    sentencepiece_json(file, &tokens, types.as_deref(), unk, prefix_space)?,
                    true,
                )
            }
            other => {
                return Err(file.error(format!(
                    "metadata `tokenizer.ggml.model` is \"{other}\"; cai rebuilds the tokenizer \
                     models {}: use the original Hugging Face model (with its tokenizer.json) \
                     instead",
                    GGUF_TOKENIZER_MODELS.join(", ")
                )))
            }
        };
        let inner: tokenizers::Tokenizer = json.to_string().parse().map_err(|e| {
            tokenizer_error(
                path,
                format!("the tokenizer metadata does not build a tokenizer: {e}"),
            )
        })?;
        let eos_ids = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
            .into_iter()
            .map(|k| file.token_id(k))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let specials = Specials {
            bos_id: file.token_id("tokenizer.ggml.bos_token_id")?,
            eos_ids,
            pad_id: file.token_id("tokenizer.ggml.padding_token_id")?,
            add_bos: Some(
                file.bool("tokenizer.ggml.add_bos_token")?
                    .unwrap_or(add_bos_default),
            ),
            ..Specials::default()
        };
        let template = file.str("tokenizer.chat_template")?.map(str::to_owned);
        let tokenizer = Self::assemble(inner, path.to_path_buf(), specials)?;
        let tokenizer = tokenizer.set_chat_template(template);
        if let Some((_, Err(e))) = &tokenizer.chat_template {
            tracing::warn!(
                "{}: tokenizer.chat_template does not parse, only the transcript format will \
                 work: {e}",
                path.display()
            );
        }
        Ok(tokenizer)
    }
}

/// `tokenizer.json` of a byte-level BPE: tokens outside GPT-2's byte alphabet respelled in
/// it, merges from the file, control tokens (those spelled in the alphabet) special.
fn byte_level_json(
    file: &GgufFile,
    tokens: &[&str],
    types: Option<&[i64]>,
    pre: &str,
) -> Result<Value> {
    let alphabet = byte_alphabet();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let spelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            if in_alphabet(t) {
                t.to_string()
            } else {
                t.bytes().map(|b| alphabet[b as usize]).collect()
            }
        })
        .collect();
    let merges = file
        .str_array("tokenizer.ggml.merges")?
        .ok_or_else(|| {
            file.error("metadata `tokenizer.ggml.merges` is missing; a gpt2 tokenizer needs merges")
        })?
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| {
                    file.error(format!(
                        "metadata `tokenizer.ggml.merges`[{i}] is {m:?}, expected two tokens \
                     separated by a space"
                    ))
                })
        })
        .collect::<Result<Vec<Value>>>()?;
    let added = added_tokens(tokens, types, |t| in_alphabet(t));
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre_split(pre) {
        Some(regex) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            // After the digits alone, GPT-2's regex still splits the rest.
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
             "use_regex": regex == DIGITS_THEN_GPT2},
        ]}),
        None => byte_level.clone(),
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab_map(&spelled),
            "merges": merges,
        },
    }))
}

/// `tokenizer.json` of a SentencePiece BPE: the vocabulary as spelled (`▁` for a space),
/// merges from the file or else from the scores (transformers' `generate_merges`), byte
/// fallback, a `▁` prepended to the first word when `add_space_prefix`.
fn sentencepiece_json(
    file: &GgufFile,
    tokens: &[&str],
    types: Option<&[i64]>,
    unk: Option<String>,
    prefix_space: bool,
) -> Result<Value> {
    let merges: Vec<Value> = match file.str_array("tokenizer.ggml.merges")? {
        Some(merges) => merges
            .iter()
            .filter_map(|m| m.split_once(' '))
            .map(|(a, b)| json!([a, b]))
            .collect(),
        None => {
            let scores = file.f32_array("tokenizer.ggml.scores")?.ok_or_else(|| {
                file.error(
                    "metadata `tokenizer.ggml.scores` is missing; a llama (SentencePiece) \
                     tokenizer needs merges or scores",
                )
            })?;
            if scores.len() != tokens.len() {
                return Err(file.error(format!(
                    "metadata `tokenizer.ggml.scores` has {} entries for {} tokens",
                    scores.len(),
                    tokens.len()
                )));
            }
            merges_from_scores(tokens, &scores)
                .into_iter()
                .map(|(a, b)| json!([a, b]))
                .collect()
        }
    };
    let owned: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if prefix_space {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens(tokens, types, |_| true),
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Metaspace",
            "replacement": "\u{2581}",
            "prepend_scheme": if prefix_space { "first" } else { "never" },
            "split": false,
        },
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": true,
            "byte_fallback": true,
            "ignore_merges": false,
            "vocab": vocab_map(&owned),
            "merges": merges,
        },
    }))
}

/// token → id (a token listed twice keeps its last id, as a Python dict built in order does).
fn vocab_map(tokens: &[String]) -> Map<String, Value> {
    let mut vocab = Map::new();
    for (id, token) in tokens.iter().enumerate() {
        vocab.insert(token.clone(), json!(id));
    }
    vocab
}

/// The control tokens (special) and user-defined tokens (plain, matched whole) as
/// `added_tokens` entries; `keep` filters out control tokens the vocabulary cannot spell.
fn added_tokens(tokens: &[&str], types: Option<&[i64]>, keep: impl Fn(&str) -> bool) -> Vec<Value> {
    let Some(types) = types else {
        return Vec::new();
    };
    tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter_map(|(id, (token, &kind))| {
            let special = match kind {
                CONTROL if keep(token) => true,
                USER_DEFINED => false,
                _ => return None,
            };
            Some(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            }))
        })
        .collect()
}

/// BPE merges implied by a SentencePiece vocabulary and its scores, as transformers'
/// `generate_merges` makes them: every split of a token into two vocabulary pieces, ordered
/// by the merged token's score (highest first), then by the pieces' lengths (longest first).
fn merges_from_scores(tokens: &[&str], scores: &[f32]) -> Vec<(String, String)> {
    let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut score_of: Vec<(&str, f32)> = Vec::with_capacity(tokens.len());
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (token, &score) in tokens.iter().zip(scores) {
        match position.get(token) {
            Some(&p) => score_of[p].1 = score,
            None => {
                position.insert(token, score_of.len());
                score_of.push((token, score));
            }
        }
    }
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for (token, score) in score_of {
        let mut local: Vec<(&str, &str, f32)> = token
            .char_indices()
            .skip(1)
            .map(|(i, _)| token.split_at(i))
            .filter(|(l, r)| index.contains_key(l) && index.contains_key(r))
            .map(|(l, r)| (l, r, score))
            .collect();
        local.sort_by_key(|(l, r, _)| (index[l], index[r]));
        merges.extend(local);
    }
    // Python's `sorted(..., reverse=True)` is stable: equal keys keep their order.
    merges.sort_by(|a, b| {
        let key = |m: &(&str, &str, f32)| (m.2, m.0.chars().count(), m.1.chars().count());
        let (ka, kb) = (key(a), key(b));
        kb.0.partial_cmp(&ka.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(kb.1.cmp(&ka.1))
            .then(kb.2.cmp(&ka.2))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(
            (a[b'a' as usize], a[b' ' as usize], a[b'\n' as usize]),
            ('a', 'Ġ', 'Ċ')
        );
        assert_eq!((a[0], a[0xAD]), ('Ā', 'Ń'));
    }

    #[test]
    fn merges_from_scores_follow_the_merged_tokens_scores() {
        let tokens = ["a", "b", "c", "ab", "abc", "bc"];
        let scores = [0.0, 0.0, 0.0, -1.0, -3.0, -2.0];
        let merges = merges_from_scores(&tokens, &scores);
        let pairs: Vec<(&str, &str)> = merges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        // "ab" (−1) first, then "bc" (−2), then abc's two splits: the longer left piece first.
        assert_eq!(pairs, [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]);
    }
}
