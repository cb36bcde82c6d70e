//! Tokenizers: Hugging Face `tokenizer.json` plus the special tokens and chat template that
//! `tokenizer_config.json`, `generation_config.json` and `config.json` add, and encoding,
//! decoding and dialogue rendering with them. Reading and settling the special tokens is in
//! `tokenizer/specials.rs`; byte-level BPE training for models made from scratch is in
//! `tokenizer/train.rs`, re-exported here.

mod gguf;
mod specials;
mod train;

use std::path::{Path, PathBuf};

use cai_core::chat_template::{self, ChatTemplate};
use cai_core::dialogue::{render_transcript, Message};
use serde_json::{json, Value};

use crate::{ModelError, Result};
use specials::Specials;

pub use train::BpeStyle;

/// The one special token of tokenizers trained by [`Tokenizer::train_bpe`] (GPT-2's).
const ENDOFTEXT: &str = "<|endoftext|>";

/// How a dialogue becomes the text a model continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialogueFormat {
    /// The paper's `"\n\nHuman: ...\n\nAssistant: ..."` transcript.
    Transcript,
    /// The tokenizer's Hugging Face chat template (an error if it has none).
    ChatTemplate,
    /// The chat template if the tokenizer has one, else the transcript.
    #[default]
    Auto,
}

/// A Hugging Face tokenizer with the special tokens and chat template of its model.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it came from (`tokenizer.json` or the training corpus), for error messages.
    origin: PathBuf,
    bos: Option<(String, u32)>,
    eos_token: String,
    eos_ids: Vec<u32>,
    pad_id: u32,
    add_bos: bool,
    vocab_size: usize,
    model_max_length: Option<usize>,
    /// The template's source and the parsed template, or why it does not parse.
    chat_template: Option<(String, std::result::Result<ChatTemplate, String>)>,
}

impl Tokenizer {
    /// Load the tokenizer of a Hugging Face model directory.
    ///
    /// Reads `tokenizer.json` (required); `tokenizer_config.json` if present for `bos_token`,
    /// `eos_token`, `pad_token` (strings or `{"content": ...}` objects), `add_bos_token`,
    /// `model_max_length` and `chat_template` (else `chat_template.jinja`); and
    /// `generation_config.json` then `config.json` for `bos_token_id`, `eos_token_id` (an id
    /// or a list) and `pad_token_id`. The eos ids are the union of all of these; pad falls
    /// back to the first eos id (also when `pad_token` is not in the vocabulary; a missing
    /// bos or eos token is an error). Without `add_bos_token`, bos is added exactly when the
    /// tokenizer's own post-processor adds it, as transformers does (Llama 3 yes, GPT-2 and
    /// Qwen no). Truncation and padding stored in `tokenizer.json` are switched off. A chat
    /// template that does not parse is logged and reported only when a dialogue is rendered
    /// with it, so the model still loads for the transcript format.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        if let Some(e) = crate::gguf::folder_needed(dir) {
            return Err(e);
        }
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(tokenizer_error(
                &path,
                "missing: a Hugging Face model directory needs tokenizer.json (the fast tokenizer)",
            ));
        }
        let inner = load_tokenizer_json(&path)?;
        let mut specials = Specials::default();
        let mut template = None;
        let mut model_max_length = None;
        let config_path = dir.join("tokenizer_config.json");
        if let Some(config) = read_json(&config_path)? {
            specials.read_tokenizer_config(&config);
            model_max_length = config
                .get("model_max_length")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok());
            template = chat_template::from_tokenizer_config(&config);
        }
        let jinja_path = dir.join("chat_template.jinja");
        if template.is_none() && jinja_path.is_file() {
            template = Some(
                crate::read_limits::read_text(&jinja_path, crate::read_limits::CONFIG_LIMIT)
                    .map_err(|e| ModelError::io(&jinja_path, e))?,
            );
        }
        specials.read_model_config_ids(dir)?;
        let tokenizer = Self::assemble(inner, path, specials)?;
        let tokenizer = Tokenizer {
            model_max_length,
            ..tokenizer
        }
        .set_chat_template(template);
        if let Some((_, Err(e))) = &tokenizer.chat_template {
            tracing::warn!(
                "{}: chat_template does not parse, only the transcript format will work: {e}",
                dir.display()
            );
        }
        Ok(tokenizer)
    }

    /// Load a bare `tokenizer.json` (for `cai init-model --tokenizer`), guessing the special
    /// tokens from the vocabulary: eos = every one of `<|endoftext|>`, `</s>`, `<|im_end|>`,
    /// `<eos>` present (the first found is the one saved as `eos_token`); bos = the first of
    /// `<s>`, `<|begin_of_text|>`, `<bos>`, else `<|endoftext|>` (GPT-2's convention); pad =
    /// eos. No chat template.
    pub fn from_tokenizer_json(path: &Path) -> Result<Tokenizer> {
        let inner = load_tokenizer_json(path)?;
        let present = |t: &&str| inner.token_to_id(t).is_some();
        let eos_tokens: Vec<&str> = [ENDOFTEXT, "</s>", "<|im_end|>", "<eos>"]
            .into_iter()
            .filter(present)
            .collect();
        let specials = Specials {
            bos_token: ["<s>", "<|begin_of_text|>", "<bos>", ENDOFTEXT]
                .into_iter()
                .find(present)
                .map(str::to_owned),
            eos_token: eos_tokens.first().map(|t| t.to_string()),
            eos_ids: eos_tokens
                .iter()
                .filter_map(|t| inner.token_to_id(t))
                .collect(),
            ..Specials::default()
        };
        Self::assemble(inner, path.to_path_buf(), specials)
    }

    /// Check the stated special tokens against the vocabulary and settle ids and defaults.
    fn assemble(
        mut inner: tokenizers::Tokenizer,
        origin: PathBuf,
        specials: Specials,
    ) -> Result<Tokenizer> {
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| tokenizer_error(&origin, e.to_string()))?;
        let resolved = specials.resolve(&inner, &origin)?;
        let vocab_size = inner
            .get_vocab(true)
            .into_values()
            .max()
            .map_or(0, |id| id as usize + 1);
        Ok(Tokenizer {
            inner,
            origin,
            bos: resolved.bos,
            eos_token: resolved.eos_token,
            eos_ids: resolved.eos_ids,
            pad_id: resolved.pad_id,
            add_bos: resolved.add_bos,
            vocab_size,
            model_max_length: None,
            chat_template: None,
        })
    }

    /// Replace (or with `None` remove) the chat template; `source` is Jinja as in
    /// `tokenizer_config.json`, seeing this tokenizer's `bos_token` and `eos_token`.
    pub fn with_chat_template(self, source: Option<String>) -> Result<Self> {
        let tokenizer = self.set_chat_template(source);
        match &tokenizer.chat_template {
            Some((_, Err(e))) => Err(tokenizer_error(
                &tokenizer.origin,
                format!("chat_template: {e}"),
            )),
            _ => Ok(tokenizer),
        }
    }

    /// Set the chat template, keeping a parse error to report when the template is used.
    fn set_chat_template(self, source: Option<String>) -> Self {
        let bos = self.bos_token().map(str::to_owned);
        let chat_template = source.map(|source| {
            let compiled = ChatTemplate::new(&source, bos, Some(self.eos_token.clone()));
            (source, compiled.map_err(|e| e.to_string()))
        });
        Tokenizer {
            chat_template,
            ..self
        }
    }

    /// Set the `model_max_length` written by [`Tokenizer::save`] (the model's context length).
    pub fn with_model_max_length(self, model_max_length: usize) -> Self {
        Tokenizer {
            model_max_length: Some(model_max_length),
            ..self
        }
    }

    /// Token ids of `text`, with the bos id in front if `add_bos` and the tokenizer has one
    /// (and the text does not already start with it, as a rendered chat template may).
    /// Special tokens written in the text (`<|im_start|>`) become their ids; the
    /// post-processor is never applied, so nothing else is added.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| tokenizer_error(&self.origin, e.to_string()))?;
        let ids = encoding.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 1);
        if let Some(bos) = self
            .bos_id()
            .filter(|&bos| add_bos && ids.first() != Some(&bos))
        {
            out.push(bos);
        }
        out.extend_from_slice(ids);
        Ok(out)
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| tokenizer_error(&self.origin, e.to_string()))
    }

    /// The text of one token on its own, special tokens included (for display: some decoders
    /// drop a leading space of the first token, so decode whole sequences for exact text).
    pub fn decode_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)?;
        self.inner.decode(&[id], false).ok()
    }

    /// The vocabulary entry of `id` as stored (byte-level tokens show `Ġ` for a space).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary entry.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// One more than the largest id the tokenizer can produce, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The beginning-of-sequence id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|(_, id)| *id)
    }

    /// The beginning-of-sequence token, if the model has one.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|(token, _)| token.as_str())
    }

    /// Whether prompts should start with bos (pass to [`Tokenizer::encode`]).
    pub fn add_bos_token(&self) -> bool {
        self.add_bos
    }

    /// Every id that ends a generation; never empty, the `eos_token`'s id first.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The end-of-sequence token (the one whose id is first in [`Tokenizer::eos_ids`]).
    pub fn eos_token(&self) -> Option<&str> {
        Some(&self.eos_token)
    }

    /// Whether `id` ends a generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// The padding id (the first eos id unless the model names one).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The chat template, if the model has one that parses.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template
            .as_ref()
            .and_then(|(_, template)| template.as_ref().ok())
    }

    /// Render a dialogue as text for the model (`add_generation_prompt` opens the assistant's
    /// turn). [`DialogueFormat::ChatTemplate`] without a template is an error, and so is any
    /// use of a template that does not parse.
    pub fn render_dialogue(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        format: DialogueFormat,
    ) -> Result<String> {
        let template = self.chat_template.as_ref().map(|(_, template)| template);
        match (format, template) {
            (DialogueFormat::Transcript, _) | (DialogueFormat::Auto, None) => {
                Ok(render_transcript(messages, add_generation_prompt))
            }
            (_, Some(Ok(template))) => Ok(template.render(messages, add_generation_prompt)?),
            (_, Some(Err(e))) => Err(tokenizer_error(
                &self.origin,
                format!("the chat_template does not parse ({e}); use the transcript format"),
            )),
            (DialogueFormat::ChatTemplate, None) => Err(tokenizer_error(
                &self.origin,
                "the chat template format was asked for but the tokenizer has no chat_template; \
                 use the transcript format or add a chat_template to tokenizer_config.json",
            )),
        }
    }

    /// Fail if the tokenizer can produce ids that a model with `model_vocab_size` embeddings
    /// (from `dir`'s `config.json`) cannot embed.
    pub fn check_fits(&self, model_vocab_size: usize, dir: &Path) -> Result<()> {
        if self.vocab_size <= model_vocab_size {
            return Ok(());
        }
        Err(tokenizer_error(
            dir,
            format!(
                "tokenizer has {} tokens but config.json vocab_size is {model_vocab_size}; \
                 use the tokenizer the model was made with",
                self.vocab_size
            ),
        ))
    }

    /// Write `tokenizer.json` and a `tokenizer_config.json` that transformers'
    /// `AutoTokenizer` loads (`PreTrainedTokenizerFast`) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let path = dir.join("tokenizer.json");
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| tokenizer_error(&path, e.to_string()))?;
        crate::write_atomic(&path, json.as_bytes())?;
        let mut config = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos_token(),
            "eos_token": self.eos_token,
            "pad_token": self.id_to_token(self.pad_id),
            "add_bos_token": self.add_bos,
            "add_eos_token": false,
            "clean_up_tokenization_spaces": false,
        });
        if let Some(n) = self.model_max_length {
            config["model_max_length"] = json!(n);
        }
        if let Some((source, _)) = &self.chat_template {
            config["chat_template"] = json!(source);
        }
        let path = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&config).expect("a JSON value serialises");
        crate::write_atomic(&path, text.as_bytes())
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("origin", &self.origin)
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos_ids", &self.eos_ids)
            .field("pad_id", &self.pad_id)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

/// A [`ModelError::Tokenizer`] about `path`.
fn tokenizer_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Tokenizer {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Parse a `tokenizer.json`.
fn load_tokenizer_json(path: &Path) -> Result<tokenizers::Tokenizer> {
    let bytes = crate::read_limits::read_bounded(path, crate::read_limits::TOKENIZER_LIMIT)
        .map_err(|e| ModelError::io(path, e))?;
    tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| {
        tokenizer_error(
            path,
            format!("not a valid Hugging Face tokenizer.json: {e}"),
        )
    })
}

/// A JSON file, or `None` if it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>> {
    match crate::read_limits::read_text(path, crate::read_limits::CONFIG_LIMIT) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ModelError::Config {
                path: path.to_path_buf(),
                message: format!("invalid JSON: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tokenizers::processors::PostProcessorWrapper;
    use tokenizers::AddedToken;

    const CORPUS: &str = "The assistant should be helpful, honest and harmless.\n\
        Human: How do I bake bread?\nAssistant: Mix flour, water, salt and yeast, then bake.\n\
        Critique: the answer is helpful and harmless.\n";

    /// A BPE trained on a few repeated lines written into `dir`.
    pub(super) fn trained(dir: &Path) -> Tokenizer {
        let corpus = dir.join("corpus.txt");
        fs::write(&corpus, CORPUS.repeat(20)).unwrap();
        Tokenizer::train_bpe(&corpus, 300).unwrap()
    }

    fn write_json(path: PathBuf, value: Value) {
        fs::write(path, value.to_string()).unwrap();
    }

    #[test]
    fn bos_is_prepended_once_and_only_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let tok = trained(tmp.path());
        assert!(tok.add_bos_token());
        let plain = tok.encode("Human: hi", false).unwrap();
        assert_ne!(plain[0], 0);
        assert_eq!(
            tok.encode("Human: hi", true).unwrap(),
            [&[0], &plain[..]].concat()
        );
        let with_marker = tok.encode("<|endoftext|>Human: hi", true).unwrap();
        assert_eq!(with_marker, [&[0], &plain[..]].concat());
        assert_eq!(tok.decode(&with_marker).unwrap(), "Human: hi");
    }

    #[test]
    fn save_then_from_dir_gives_the_same_tokenizer() {
        let tmp = tempfile::tempdir().unwrap();
        let template =
            "{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}{% endfor %}";
        let tok = trained(tmp.path())
            .with_chat_template(Some(template.into()))
            .unwrap();
        let out = tmp.path().join("model");
        tok.clone().with_model_max_length(128).save(&out).unwrap();
        let config: Value =
            serde_json::from_str(&fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
                .unwrap();
        assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");
        assert_eq!(
            (&config["eos_token"], &config["model_max_length"]),
            (&json!(ENDOFTEXT), &json!(128))
        );
        let back = Tokenizer::from_dir(&out).unwrap();
        let text = "Assistant: Mix flour — ünïcode.";
        assert_eq!(
            back.encode(text, true).unwrap(),
            tok.encode(text, true).unwrap()
        );
        assert_eq!(
            (back.bos_token(), back.eos_token()),
            (Some(ENDOFTEXT), Some(ENDOFTEXT))
        );
        assert_eq!(
            (back.eos_ids(), back.pad_id(), back.add_bos_token()),
            (&[0][..], 0, true)
        );
        assert_eq!(
            (back.vocab_size(), back.model_max_length),
            (tok.vocab_size(), Some(128))
        );
        let rendered = back
            .render_dialogue(&[Message::user("hi")], false, DialogueFormat::Auto)
            .unwrap();
        assert_eq!(rendered, "user: hi<|endoftext|>");
    }

    #[test]
    fn config_files_give_added_token_objects_and_eos_lists() {
        let tmp = tempfile::tempdir().unwrap();
        let mut tok = trained(tmp.path());
        tok.inner
            .add_special_tokens(&[AddedToken::from("<|im_end|>", true)]);
        let im_end = tok.token_to_id("<|im_end|>").unwrap();
        tok.save(tmp.path()).unwrap();
        let added = |t: &str| json!({"content": t, "special": true, "lstrip": false});
        write_json(
            tmp.path().join("tokenizer_config.json"),
            json!({
                "bos_token": added(ENDOFTEXT), "eos_token": added("<|im_end|>"), "pad_token": null,
            }),
        );
        write_json(
            tmp.path().join("generation_config.json"),
            json!({"eos_token_id": [0, im_end]}),
        );
        write_json(
            tmp.path().join("config.json"),
            json!({"eos_token_id": 0, "pad_token_id": null}),
        );
        let tok = Tokenizer::from_dir(tmp.path()).unwrap();
        assert_eq!(
            (tok.eos_ids(), tok.eos_token()),
            (&[im_end, 0][..], Some("<|im_end|>"))
        );
        assert!(tok.is_eos(0) && tok.is_eos(im_end) && !tok.is_eos(5));
        assert_eq!(tok.pad_id(), im_end);
        assert_eq!(tok.vocab_size(), im_end as usize + 1);
        assert!(tok.add_bos_token(), "the saved post-processor adds bos");
        assert_eq!(
            tok.encode("a<|im_end|>", false).unwrap().last(),
            Some(&im_end)
        );
        assert!(tok.chat_template().is_none());
    }

    #[test]
    fn dialogue_formats() {
        let tmp = tempfile::tempdir().unwrap();
        let dialogue = [Message::user("Hi"), Message::assistant("Hello!")];
        let render = |tok: &Tokenizer, format| tok.render_dialogue(&dialogue, true, format);
        let transcript = render_transcript(&dialogue, true);
        let tok = trained(tmp.path());
        assert_eq!(render(&tok, DialogueFormat::Auto).unwrap(), transcript);
        let err = render(&tok, DialogueFormat::ChatTemplate).unwrap_err();
        assert!(err.to_string().contains("no chat_template"), "{err}");

        let template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}\
                        {% if add_generation_prompt %}<assistant>{% endif %}";
        let tok = tok.with_chat_template(Some(template.into())).unwrap();
        let chat = render(&tok, DialogueFormat::ChatTemplate).unwrap();
        assert_eq!(chat, "<user>Hi<assistant>Hello!<assistant>");
        assert_eq!(render(&tok, DialogueFormat::Auto).unwrap(), chat);
        assert_eq!(
            render(&tok, DialogueFormat::Transcript).unwrap(),
            transcript
        );

        assert!(tok
            .clone()
            .with_chat_template(Some("{% if %}".into()))
            .is_err());
        tok.save(tmp.path()).unwrap();
        write_json(
            tmp.path().join("tokenizer_config.json"),
            json!({"chat_template": "{% if %}", "eos_token": ENDOFTEXT}),
        );
        let broken = Tokenizer::from_dir(tmp.path()).unwrap();
        assert!(broken.chat_template().is_none());
        let err = render(&broken, DialogueFormat::Auto).unwrap_err();
        assert!(err.to_string().contains("does not parse"), "{err}");
        assert_eq!(
            render(&broken, DialogueFormat::Transcript).unwrap(),
            transcript
        );
    }

    #[test]
    fn a_tokenizer_larger_than_the_model_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let tok = trained(tmp.path());
        tok.check_fits(tok.vocab_size(), tmp.path()).unwrap();
        let err = tok.check_fits(256, tmp.path()).unwrap_err().to_string();
        let expected = format!(
            "tokenizer has {} tokens but config.json vocab_size is 256",
            tok.vocab_size()
        );
        assert!(err.contains(&expected), "{err}");
    }

    #[test]
    fn a_bare_tokenizer_json_gets_guessed_special_tokens() {
        let tmp = tempfile::tempdir().unwrap();
        trained(tmp.path()).save(tmp.path()).unwrap();
        let tok = Tokenizer::from_tokenizer_json(&tmp.path().join("tokenizer.json")).unwrap();
        assert_eq!(
            (tok.bos_id(), tok.eos_ids(), tok.pad_id()),
            (Some(0), &[0][..], 0)
        );
        assert!(tok.add_bos_token(), "the trained post-processor adds bos");

        let mut gpt2_style = tok;
        gpt2_style
            .inner
            .with_post_processor(None::<PostProcessorWrapper>);
        gpt2_style.save(tmp.path()).unwrap();
        let tok = Tokenizer::from_tokenizer_json(&tmp.path().join("tokenizer.json")).unwrap();
        assert!(
            !tok.add_bos_token(),
            "like transformers, no bos without a post-processor"
        );
    }

    #[test]
    fn a_missing_tokenizer_json_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Tokenizer::from_dir(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("needs tokenizer.json"),
            "{err}"
        );
    }
}
