//! Byte-level BPE training for tokenizers of models made from scratch: GPT-2's pre-tokenizer or
//! Qwen2's (which transformers rebuilds from the vocabulary alone for `qwen2` models).

use std::path::Path;

use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, TokenizerBuilder};

use super::specials::Specials;
use super::{tokenizer_error, Tokenizer, ENDOFTEXT};
use crate::{ModelError, Result};

/// How a trained byte-level BPE splits text before merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BpeStyle {
    /// GPT-2's byte-level regex (runs of digits stay together).
    Gpt2,
    /// Qwen2's pipeline: NFC, then Qwen's split regex (every digit on its own), then byte-level
    /// without a regex. transformers rebuilds exactly this pipeline for `qwen2` models from the
    /// vocabulary alone, so their tokenizers must be trained with it.
    Qwen,
}

/// Qwen2's pre-tokenization regex, as in its published `tokenizer.json`.
const QWEN_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl BpeStyle {
    /// The style transformers expects for an architecture's tokenizer.
    pub fn for_architecture(arch: crate::config::Architecture) -> Self {
        use crate::config::Architecture as A;
        match arch {
            A::Qwen2 | A::Qwen3 => Self::Qwen,
            A::Llama | A::Mistral | A::Gpt2 => Self::Gpt2,
        }
    }

    fn normalizer(self) -> Option<NormalizerWrapper> {
        match self {
            Self::Gpt2 => None,
            Self::Qwen => Some(tokenizers::normalizers::unicode::NFC.into()),
        }
    }

    fn pre_tokenizer(self) -> std::result::Result<PreTokenizerWrapper, String> {
        use tokenizers::pre_tokenizers::sequence::Sequence;
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::SplitDelimiterBehavior;
        Ok(match self {
            Self::Gpt2 => ByteLevel::new(false, true, true).into(),
            Self::Qwen => {
                let split = Split::new(
                    SplitPattern::Regex(QWEN_SPLIT.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| e.to_string())?;
                Sequence::new(vec![
                    split.into(),
                    ByteLevel::new(false, true, false).into(),
                ])
                .into()
            }
        })
    }
}

impl Tokenizer {
    /// Train a GPT-2-style byte-level BPE on the UTF-8 text file `corpus`.
    ///
    /// The 256 byte symbols are all in the vocabulary, so every string is encodable; merges
    /// need a pair seen at least twice, so a small corpus gives fewer than `vocab_size` tokens.
    /// `<|endoftext|>` is id 0 and serves as bos (added to every encoding), eos and pad.
    pub fn train_bpe(corpus: &Path, vocab_size: usize) -> Result<Tokenizer> {
        Self::train_bpe_with(corpus, vocab_size, BpeStyle::Gpt2)
    }

    /// [`Tokenizer::train_bpe`] with a chosen pre-tokenization (see [`BpeStyle`]).
    pub fn train_bpe_with(corpus: &Path, vocab_size: usize, style: BpeStyle) -> Result<Tokenizer> {
        let text = std::fs::read_to_string(corpus).map_err(|e| ModelError::io(corpus, e))?;
        if text.trim().is_empty() {
            return Err(tokenizer_error(corpus, "the training corpus is empty"));
        }
        let min_vocab = ByteLevel::alphabet().len() + 1;
        if vocab_size < min_vocab {
            return Err(tokenizer_error(
                corpus,
                format!("vocab_size {vocab_size} is below {min_vocab} (256 bytes + {ENDOFTEXT})"),
            ));
        }
        let train_error =
            |e: tokenizers::Error| tokenizer_error(corpus, format!("BPE training failed: {e}"));
        let add_bos = TemplateProcessing::builder()
            .try_single(format!("{ENDOFTEXT} $A"))
            .and_then(|b| b.try_pair(format!("{ENDOFTEXT} $A $B:1")))
            .map_err(|e| tokenizer_error(corpus, e))?
            .special_tokens(vec![(ENDOFTEXT, 0)])
            .build()
            .map_err(|e| tokenizer_error(corpus, e.to_string()))?;
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![AddedToken::from(ENDOFTEXT, true)])
            .build();
        let mut bpe = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new()
        .with_model(BPE::default())
        .with_normalizer(style.normalizer())
        .with_pre_tokenizer(Some(
            style
                .pre_tokenizer()
                .map_err(|e| tokenizer_error(corpus, e))?,
        ))
        .with_post_processor(Some(add_bos.into()))
        .with_decoder(Some(ByteLevel::default().into()))
        .build()
        .map_err(train_error)?;
        bpe.train(&mut trainer, text.split_inclusive('\n'))
            .map_err(train_error)?;
        let specials = Specials {
            bos_token: Some(ENDOFTEXT.into()),
            eos_token: Some(ENDOFTEXT.into()),
            pad_token: Some(ENDOFTEXT.into()),
            add_bos: Some(true),
            ..Specials::default()
        };
        Self::assemble(bpe.into(), corpus.to_path_buf(), specials)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::tokenizer::tests::trained;

    #[test]
    fn trained_bpe_round_trips_any_text() {
        let tmp = tempfile::tempdir().unwrap();
        let tok = trained(tmp.path());
        assert_eq!(tok.token_to_id(ENDOFTEXT), Some(0));
        assert_eq!(
            (tok.bos_id(), tok.eos_ids(), tok.pad_id()),
            (Some(0), &[0][..], 0)
        );
        assert!(
            tok.vocab_size() > 257 && tok.vocab_size() <= 300,
            "{}",
            tok.vocab_size()
        );
        for text in [
            "The assistant is helpful.",
            "héllo wörld — 日本語 🙂\n\ttabs",
        ] {
            let ids = tok.encode(text, false).unwrap();
            assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
            assert_eq!(tok.decode(&ids).unwrap(), text);
        }
        let common = tok.encode(" assistant", false).unwrap();
        assert!(
            common.len() < " assistant".len(),
            "merges were learned: {common:?}"
        );
        assert_eq!(tok.decode_token(0).as_deref(), Some(ENDOFTEXT));
        assert_eq!(tok.decode_token(1_000_000), None);
    }

    #[test]
    fn empty_absent_and_too_small_corpora_are_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty.txt");
        fs::write(&empty, "\n  \n").unwrap();
        let err = Tokenizer::train_bpe(&empty, 300).unwrap_err().to_string();
        assert!(err.contains("empty.txt") && err.contains("empty"), "{err}");
        let err = Tokenizer::train_bpe(&tmp.path().join("absent.txt"), 300)
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.txt"), "{err}");
        fs::write(&empty, "some text").unwrap();
        assert!(Tokenizer::train_bpe(&empty, 100)
            .unwrap_err()
            .to_string()
            .contains("below 257"));
    }
}
