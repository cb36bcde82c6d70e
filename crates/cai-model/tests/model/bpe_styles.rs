//! Trained tokenizers follow the architecture's pre-tokenization, so transformers (which
//! rebuilds Qwen2's pipeline from the vocabulary alone) encodes exactly as cai does. Found by
//! comparing with transformers: cai's Qwen2 tokenizers merged runs of digits, Qwen2 splits
//! every digit.

use cai_model::config::Architecture;
use cai_model::tokenizer::{BpeStyle, Tokenizer};

fn train(style: BpeStyle) -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "In 1000 years, 1000 people baked 1000 loaves for 42 friends.\n".repeat(50),
    )
    .unwrap();
    let tok = Tokenizer::train_bpe_with(&corpus, 400, style).unwrap();
    (dir, tok)
}

fn pieces(tok: &Tokenizer, text: &str) -> Vec<String> {
    tok.encode(text, false)
        .unwrap()
        .iter()
        .map(|&id| tok.decode(&[id]).unwrap())
        .collect()
}

#[test]
fn qwen_style_splits_every_digit_and_gpt2_style_merges_them() {
    let (_d, qwen) = train(BpeStyle::Qwen);
    let digits: Vec<String> = pieces(&qwen, "1000")
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .collect();
    assert_eq!(digits, vec!["1", "0", "0", "0"]);
    let (_d, gpt2) = train(BpeStyle::Gpt2);
    assert!(
        pieces(&gpt2, " 1000").len() < 4,
        "{:?}",
        pieces(&gpt2, " 1000")
    );
}

#[test]
fn the_saved_qwen_tokenizer_carries_qwens_normalizer_and_split() {
    let (dir, qwen) = train(BpeStyle::Qwen);
    let out = dir.path().join("saved");
    qwen.save(&out).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer.json")).unwrap())
            .unwrap();
    assert_eq!(json["normalizer"]["type"], "NFC");
    let text = json["pre_tokenizer"].to_string();
    assert!(
        text.contains("Split") && text.contains("\\\\p{N}"),
        "{text}"
    );
    let back = Tokenizer::from_dir(&out).unwrap();
    assert_eq!(
        back.encode("42, 1000 and 3.14", true).unwrap(),
        qwen.encode("42, 1000 and 3.14", true).unwrap()
    );
}

#[test]
fn the_style_follows_the_architecture() {
    assert_eq!(
        BpeStyle::for_architecture(Architecture::Qwen2),
        BpeStyle::Qwen
    );
    assert_eq!(
        BpeStyle::for_architecture(Architecture::Qwen3),
        BpeStyle::Qwen
    );
    assert_eq!(
        BpeStyle::for_architecture(Architecture::Llama),
        BpeStyle::Gpt2
    );
}
