//! `cai convert` and GGUF models on the command line: a tiny GGUF file written here with
//! candle's GGUF writer loads wherever `--model` is taken, converts to a Hugging Face folder
//! that generates the same tokens, and a broken file is an error naming it.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::helpers::{assert_exit, read_jsonl, stderr, Workdir};

/// GGUF token types: ordinary and control.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;

/// GPT-2's byte characters in byte order.
fn byte_chars() -> Vec<String> {
    let mut extra = 0u32;
    (0..=255u8)
        .map(|b| {
            let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
            if printable {
                char::from(b).to_string()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap().to_string()
            }
        })
        .collect()
}

/// Deterministic small weights of `shape`, quantised to Q8_0 for matrices.
fn weights(seed: u64, shape: &[usize]) -> QTensor {
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.4
        })
        .collect();
    let t = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
    let dtype = if shape.len() == 2 {
        GgmlDType::Q8_0
    } else {
        GgmlDType::F32
    };
    QTensor::quantize(&t, dtype).unwrap()
}

/// A one-block Llama (hidden 32, 2 heads, 1 KV head) with a byte-level ChatML tokenizer.
pub fn write_tiny_gguf(path: &Path) {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    tokens.extend(byte_chars());
    let mut types = vec![Value::I32(CONTROL); 3];
    types.extend(vec![Value::I32(NORMAL); 256]);
    let s = |v: &str| Value::String(v.to_string());
    let template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", s("llama")),
        ("llama.embedding_length", Value::U32(32)),
        ("llama.block_count", Value::U32(1)),
        ("llama.feed_forward_length", Value::U32(64)),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.attention.head_count_kv", Value::U32(1)),
        ("llama.context_length", Value::U32(128)),
        ("llama.rope.dimension_count", Value::U32(16)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("smollm")),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().map(|t| s(t)).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.chat_template", s(template)),
    ];
    let vocab = tokens.len();
    let shapes: Vec<(String, Vec<usize>)> = [
        ("token_embd.weight", vec![vocab, 32]),
        ("output_norm.weight", vec![32]),
        ("blk.0.attn_norm.weight", vec![32]),
        ("blk.0.attn_q.weight", vec![32, 32]),
        ("blk.0.attn_k.weight", vec![16, 32]),
        ("blk.0.attn_v.weight", vec![16, 32]),
        ("blk.0.attn_output.weight", vec![32, 32]),
        ("blk.0.ffn_norm.weight", vec![32]),
        ("blk.0.ffn_gate.weight", vec![64, 32]),
        ("blk.0.ffn_up.weight", vec![64, 32]),
        ("blk.0.ffn_down.weight", vec![32, 64]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    let tensors: Vec<(String, QTensor)> = shapes
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| (name.clone(), weights(i as u64, shape)))
        .collect();
    let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &meta, &refs).unwrap();
}

/// Greedy completions of two chat prompts from `model`.
fn completions(w: &Workdir, model: &str, out: &str) -> Vec<(String, serde_json::Value)> {
    w.write(
        "chats.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi there\"}]}\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"Count: 1 2 3\"}]}\n",
    );
    w.cai_ok(&[
        "generate",
        "--model",
        model,
        "--input",
        "chats.jsonl",
        "--output",
        out,
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
    ]);
    read_jsonl(&w.path(out))
        .into_iter()
        .map(|r| {
            (
                r["completion"].as_str().unwrap().to_string(),
                r["token_ids"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_gguf_model_generates_and_converts_to_a_folder_that_generates_the_same() {
    let w = Workdir::new();
    write_tiny_gguf(&w.path("tiny.gguf"));
    let from_gguf = completions(&w, "tiny.gguf", "gguf.jsonl");
    assert!(from_gguf
        .iter()
        .all(|(_, ids)| !ids.as_array().unwrap().is_empty()));

    let out = w.cai_ok(&["convert", "--model", "tiny.gguf", "--output", "hf"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote hf"));
    let config: serde_json::Value = serde_json::from_str(&w.read("hf/config.json")).unwrap();
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["num_key_value_heads"], 1);
    assert_eq!(config["max_position_embeddings"], 128);
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["torch_dtype"], "float32");
    let tok: serde_json::Value = serde_json::from_str(&w.read("hf/tokenizer_config.json")).unwrap();
    assert!(tok["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
    assert_eq!(
        (&tok["eos_token"], &tok["add_bos_token"]),
        (&"<|im_end|>".into(), &false.into())
    );
    let generation: serde_json::Value =
        serde_json::from_str(&w.read("hf/generation_config.json")).unwrap();
    assert_eq!(
        (&generation["bos_token_id"], &generation["eos_token_id"]),
        (&1.into(), &2.into())
    );

    assert_eq!(completions(&w, "hf", "hf.jsonl"), from_gguf);

    let again = w.cai(&["convert", "--model", "tiny.gguf", "--output", "hf"]);
    assert!(assert_exit(&again, 2).contains("--overwrite"));
    w.cai_ok(&[
        "convert",
        "--model",
        "tiny.gguf",
        "--output",
        "hf",
        "--dtype",
        "bf16",
        "--overwrite",
    ]);
    let config: serde_json::Value = serde_json::from_str(&w.read("hf/config.json")).unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
}

#[test]
fn a_broken_gguf_file_is_an_error_naming_it_and_nothing_is_written() {
    let w = Workdir::new();
    write_tiny_gguf(&w.path("tiny.gguf"));
    let bytes = std::fs::read(w.path("tiny.gguf")).unwrap();
    std::fs::write(w.path("cut.gguf"), &bytes[..bytes.len() / 2]).unwrap();
    let mut corrupt = bytes.clone();
    corrupt[..4].copy_from_slice(b"XXXX");
    std::fs::write(w.path("corrupt.gguf"), corrupt).unwrap();
    w.write("p.jsonl", "{\"prompt\": \"hi\"}\n");
    for (file, why) in [
        ("cut.gguf", "truncated or corrupt"),
        ("corrupt.gguf", "not a GGUF file"),
    ] {
        let out = w.cai(&[
            "generate", "--model", file, "--input", "p.jsonl", "--output", "o.jsonl",
        ]);
        let err = assert_exit(&out, 1);
        assert!(err.contains(file) && err.contains(why), "{err}");
        let out = w.cai(&["convert", "--model", file, "--output", "hf"]);
        let err = assert_exit(&out, 1);
        assert!(err.contains(file) && err.contains(why), "{err}");
        assert!(!w.path("hf/config.json").exists());
        assert!(!w.path("o.jsonl").exists() || w.read("o.jsonl").is_empty());
    }
}

#[test]
fn convert_refuses_an_endpoint_and_its_own_input() {
    let w = Workdir::new();
    let out = w.cai(&[
        "convert",
        "--model",
        "http://127.0.0.1:9/v1",
        "--output",
        "hf",
    ]);
    assert!(
        stderr(&out).contains("does not hand out its weights"),
        "{}",
        stderr(&out)
    );
    assert_exit(&out, 2);
    let model: PathBuf = w.path("tiny.gguf");
    write_tiny_gguf(&model);
    let out = w.cai(&["convert", "--model", "tiny.gguf", "--output", "tiny.gguf"]);
    assert_exit(&out, 2);
}
