//! Tests of GGUF loading on tiny files written here with candle's GGUF writer: llama-,
//! qwen2- and gpt2-style metadata, both tokenizer kinds, every quantisation type, bad files.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::json;

use super::*;
use crate::config::{Architecture, ModelConfig, PositionEncoding};
use crate::weights::random_decoder;

/// Ids of the byte-level test vocabulary: three control tokens, then the 256 byte
/// characters in byte order, then the merges' results.
const ENDOFTEXT: u32 = 0;
const IM_START: u32 = 1;
const IM_END: u32 = 2;
const FIRST_BYTE: u32 = 3;
const TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

fn strings<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(items.iter().map(|s| string(s.as_ref())).collect())
}

/// GPT-2's byte characters in byte order.
fn byte_chars() -> Vec<String> {
    let mut out = Vec::new();
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        out.push(if printable {
            char::from(b).to_string()
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap().to_string()
        });
    }
    out
}

/// A byte-level (`gpt2`) tokenizer's metadata: 262 tokens, merges making "hi", "Ġh", "Ġhi".
fn byte_level_tokenizer(pre: &str) -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    tokens.extend(byte_chars());
    tokens.extend(["hi", "Ġh", "Ġhi"].map(String::from));
    let mut types = vec![Value::I32(3); 3];
    types.extend(vec![Value::I32(1); tokens.len() - 3]);
    vec![
        ("tokenizer.ggml.model".into(), string("gpt2")),
        ("tokenizer.ggml.pre".into(), string(pre)),
        ("tokenizer.ggml.tokens".into(), strings(&tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.merges".into(),
            strings(&["Ġ h", "h i", "Ġh i"]),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(IM_START)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(IM_END)),
        (
            "tokenizer.ggml.padding_token_id".into(),
            Value::U32(ENDOFTEXT),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.chat_template".into(), string(TEMPLATE)),
    ]
}

/// A SentencePiece (`llama`) tokenizer's metadata: `<unk> <s> </s>`, the 256 byte tokens,
/// then pieces with scores (no merges: they come from the scores).
fn sentencepiece_tokenizer() -> (Vec<(String, Value)>, usize) {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut types = vec![Value::I32(2), Value::I32(3), Value::I32(3)];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(Value::I32(6));
        scores.push(0.0);
    }
    for (piece, score) in [
        ("▁", -1.0),
        ("h", -2.0),
        ("i", -3.0),
        ("▁h", -4.0),
        ("▁hi", -5.0),
        ("hi", -6.0),
    ] {
        tokens.push(piece.into());
        types.push(Value::I32(1));
        scores.push(score);
    }
    let n = tokens.len();
    let meta = vec![
        ("tokenizer.ggml.model".into(), string("llama")),
        ("tokenizer.ggml.tokens".into(), strings(&tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
    ];
    (meta, n)
}

/// A tiny config (hidden 256, so K-quant blocks of 256 fit the rows).
fn tiny_config(arch: Architecture, vocab: usize, tied: bool) -> ModelConfig {
    let value = if arch == Architecture::Gpt2 {
        json!({"model_type": "gpt2", "vocab_size": vocab, "n_embd": 256, "n_layer": 1,
               "n_head": 4, "n_inner": 256, "n_positions": 64, "layer_norm_epsilon": 1e-5})
    } else {
        json!({"model_type": arch.model_type(), "vocab_size": vocab, "hidden_size": 256,
               "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 96,
               "rms_norm_eps": 1e-5, "rope_theta": 50000.0, "tie_word_embeddings": tied})
    };
    ModelConfig::from_json(&value, Path::new("test")).unwrap()
}

/// The architecture's metadata for `config`.
fn model_metadata(config: &ModelConfig) -> Vec<(String, Value)> {
    let arch = config.architecture.model_type();
    let k = |s: &str| format!("{arch}.{s}");
    let mut meta = vec![
        ("general.architecture".into(), string(arch)),
        (k("embedding_length"), Value::U32(config.hidden_size as u32)),
        (k("block_count"), Value::U32(config.num_layers as u32)),
        (
            k("feed_forward_length"),
            Value::U32(config.intermediate_size as u32),
        ),
        (
            k("attention.head_count"),
            Value::U32(config.num_heads as u32),
        ),
        (
            k("context_length"),
            Value::U32(config.max_position_embeddings as u32),
        ),
    ];
    if config.architecture == Architecture::Gpt2 {
        meta.push((
            k("attention.layer_norm_epsilon"),
            Value::F32(config.norm_eps as f32),
        ));
    } else {
        meta.push((
            k("attention.head_count_kv"),
            Value::U32(config.num_kv_heads as u32),
        ));
        meta.push((
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(config.norm_eps as f32),
        ));
        meta.push((
            k("rope.dimension_count"),
            Value::U32(config.head_dim as u32),
        ));
        meta.push((
            k("attention.key_length"),
            Value::U32(config.head_dim as u32),
        ));
        if let PositionEncoding::Rope { theta, .. } = config.positions {
            meta.push((k("rope.freq_base"), Value::F32(theta as f32)));
        }
    }
    meta
}

/// llama.cpp's permutation of Llama q/k rows (`convert_hf_to_gguf.py`'s `permute`).
fn permute_rope(t: &Tensor, heads: usize) -> Tensor {
    let dims = t.dims().to_vec();
    let mut split = vec![heads, 2, dims[0] / heads / 2];
    split.extend(&dims[1..]);
    t.reshape(split)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape(dims)
        .unwrap()
}

/// A random decoder of `config` written as a GGUF file with `metadata`, its matrices
/// quantised to `quant` (vectors stay F32, as llama.cpp keeps them). Returns the weights
/// the file holds, dequantised, under their Hugging Face names in memory layout.
fn write_model(
    path: &Path,
    config: &ModelConfig,
    quant: GgmlDType,
    metadata: &[(String, Value)],
) -> Vec<(String, Tensor)> {
    let decoder = random_decoder(config.clone(), 7, DType::F32, &Device::Cpu).unwrap();
    let arch = config.architecture;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut expected = Vec::new();
    for (spec, t) in decoder.params() {
        let name = gguf_tensor_name(&spec.name, arch).unwrap();
        let dtype = if t.rank() == 2 { quant } else { GgmlDType::F32 };
        let q = QTensor::quantize(&t, dtype).unwrap();
        expected.push((spec.name.clone(), q.dequantize(&Device::Cpu).unwrap()));
        let stored = match arch {
            Architecture::Llama if name.contains("attn_q.") => permute_rope(&t, config.num_heads),
            Architecture::Llama if name.contains("attn_k.") => {
                permute_rope(&t, config.num_kv_heads)
            }
            _ => t,
        };
        tensors.push((name, QTensor::quantize(&stored, dtype).unwrap()));
    }
    let mut file = fs::File::create(path).unwrap();
    let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(&mut file, &meta, &refs).unwrap();
    expected
}

fn llama_file(dir: &Path, quant: GgmlDType) -> (PathBuf, Vec<(String, Tensor)>) {
    let path = dir.join("tiny-llama.gguf");
    let config = tiny_config(Architecture::Llama, 262, true);
    let mut meta = model_metadata(&config);
    meta.extend(byte_level_tokenizer("smollm"));
    let expected = write_model(&path, &config, quant, &meta);
    (path, expected)
}

fn assert_weights(model: &GgufModel, expected: &[(String, Tensor)]) {
    let loaded: std::collections::HashMap<String, Tensor> = model
        .decoder
        .params()
        .into_iter()
        .map(|(s, t)| (s.name, t))
        .collect();
    assert_eq!(loaded.len(), expected.len());
    for (name, want) in expected {
        let got = &loaded[name];
        assert_eq!(got.dims(), want.dims(), "{name}");
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "{name} differs from the dequantised tensor");
    }
}

#[test]
fn a_llama_file_gives_its_config_weights_tokenizer_and_template() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, expected) = llama_file(tmp.path(), GgmlDType::Q4_1);
    assert!(is_gguf(&path));
    let model = load(&path, DType::F32, &Device::Cpu).unwrap();
    let c = &model.config;
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_layers
        ),
        (262, 256, 256, 1)
    );
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 64));
    assert_eq!(c.max_position_embeddings, 96);
    assert!(c.tie_word_embeddings && !c.qkv_bias);
    assert_eq!(
        c.positions,
        PositionEncoding::Rope {
            theta: 50000.0,
            scaling: None
        }
    );
    assert!((c.norm_eps - 1e-5).abs() < 1e-9);
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.as_slice()),
        (Some(IM_START), &[IM_END][..])
    );
    assert_weights(&model, &expected);

    let tok = &model.tokenizer;
    let h = FIRST_BYTE + b'h' as u32;
    let hi = FIRST_BYTE + 256;
    let space_hi = FIRST_BYTE + 258;
    assert_eq!(tok.encode("hi hi", false).unwrap(), [hi, space_hi]);
    assert_eq!(tok.encode("h", false).unwrap(), [h]);
    // smollm splits every digit off; multi-byte characters go byte by byte.
    let digit = |d: u8| FIRST_BYTE + d as u32;
    assert_eq!(tok.encode("12", false).unwrap(), [digit(b'1'), digit(b'2')]);
    assert_eq!(
        tok.encode("é", false).unwrap(),
        [FIRST_BYTE + 0xC3, FIRST_BYTE + 0xA9]
    );
    assert_eq!(
        tok.encode("<|im_start|>hi<|im_end|>", false).unwrap(),
        [IM_START, hi, IM_END]
    );
    assert_eq!(
        tok.decode(&[IM_START, hi, space_hi, IM_END]).unwrap(),
        "hi hi"
    );
    assert!(!tok.add_bos_token());
    assert_eq!(
        (tok.bos_id(), tok.eos_ids(), tok.pad_id()),
        (Some(IM_START), &[IM_END][..], ENDOFTEXT)
    );
    let rendered = tok
        .render_dialogue(
            &[cai_core::dialogue::Message::user("hi")],
            true,
            crate::tokenizer::DialogueFormat::Auto,
        )
        .unwrap();
    assert_eq!(
        rendered,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn every_listed_quantisation_type_dequantises() {
    let tmp = tempfile::tempdir().unwrap();
    for quant in [
        GgmlDType::F32,
        GgmlDType::F16,
        GgmlDType::BF16,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ] {
        let (path, expected) = llama_file(tmp.path(), quant);
        let model =
            load(&path, DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{quant:?}: {e}"));
        assert_weights(&model, &expected);
        // The quantised weights stay close to the originals (a wrong block layout would not).
        let original = random_decoder(model.config.clone(), 7, DType::F32, &Device::Cpu).unwrap();
        let (a, b) = (&original.params()[1].1, &model.decoder.params()[1].1);
        let err = ((a - b)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            / a.sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap())
        .sqrt();
        assert!(err < 0.5, "{quant:?}: relative error {err}");
    }
}

#[test]
fn a_qwen2_file_has_biases_and_no_rope_permutation() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("qwen.gguf");
    let config = tiny_config(Architecture::Qwen2, 262, false);
    let mut meta = model_metadata(&config);
    meta.extend(byte_level_tokenizer("qwen2"));
    let expected = write_model(&path, &config, GgmlDType::Q8_0, &meta);
    let model = load(&path, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.config.architecture, Architecture::Qwen2);
    assert!(model.config.qkv_bias && !model.config.tie_word_embeddings);
    assert_weights(&model, &expected);
    // Qwen2's split keeps single digits too, and "hi hi" as two words.
    let tok = &model.tokenizer;
    assert_eq!(
        tok.encode("hi hi", false).unwrap(),
        [FIRST_BYTE + 256, FIRST_BYTE + 258]
    );
}

#[test]
fn a_gpt2_file_maps_its_fused_attention_and_learned_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("gpt2.gguf");
    let config = tiny_config(Architecture::Gpt2, 262, true);
    let mut meta = model_metadata(&config);
    meta.extend(byte_level_tokenizer("gpt-2"));
    let expected = write_model(&path, &config, GgmlDType::Q5_0, &meta);
    let model = load(&path, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.config.architecture, Architecture::Gpt2);
    assert_eq!(model.config.positions, PositionEncoding::Learned);
    assert_eq!(model.config.max_position_embeddings, 64);
    assert_weights(&model, &expected);
    // GPT-2's own regex keeps digits together: "12" has no merge, so two byte tokens.
    assert_eq!(
        model.tokenizer.encode("hi", false).unwrap(),
        [FIRST_BYTE + 256]
    );
}

#[test]
fn a_sentencepiece_tokenizer_is_rebuilt_from_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sp.gguf");
    let (tok_meta, n) = sentencepiece_tokenizer();
    let config = tiny_config(Architecture::Llama, n, true);
    let mut meta = model_metadata(&config);
    meta.extend(tok_meta);
    write_model(&path, &config, GgmlDType::F16, &meta);
    let model = load(&path, DType::F32, &Device::Cpu).unwrap();
    let tok = &model.tokenizer;
    let piece = |p: &str| tok.token_to_id(p).unwrap();
    // "▁" is prepended to the first word; "▁hi" is one piece; a word without a leading
    // space ("hi" after "▁hi") merges by score; "é" falls back to its two bytes.
    assert_eq!(tok.encode("hi", false).unwrap(), [piece("▁hi")]);
    assert_eq!(
        tok.encode("hi hié", true).unwrap(),
        [1, piece("▁hi"), piece("▁hi"), 3 + 0xC3, 3 + 0xA9]
    );
    assert!(
        tok.add_bos_token(),
        "SentencePiece files without the flag add bos"
    );
    assert_eq!(
        tok.decode(&tok.encode("hi hié", true).unwrap()).unwrap(),
        "hi hié"
    );
    assert_eq!((tok.bos_id(), tok.eos_ids()), (Some(1), &[2][..]));
    assert!(tok.chat_template().is_none());
}

/// The error of loading `path`, as text.
fn load_error(path: &Path) -> String {
    let err = load(path, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    err
}

#[test]
fn truncated_and_corrupt_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = llama_file(tmp.path(), GgmlDType::Q8_0);
    let bytes = fs::read(&path).unwrap();
    for cut in [bytes.len() / 2, 2_000, 10] {
        let short = tmp.path().join(format!("cut-{cut}.gguf"));
        fs::write(&short, &bytes[..cut]).unwrap();
        let err = load_error(&short);
        assert!(err.contains("truncated or corrupt"), "{cut}: {err}");
    }
    let bad = tmp.path().join("bad-magic.gguf");
    let mut corrupt = bytes.clone();
    corrupt[..4].copy_from_slice(b"GGML");
    fs::write(&bad, corrupt).unwrap();
    let err = load_error(&bad);
    assert!(err.contains("not a GGUF file"), "{err}");
}

#[test]
fn an_unsupported_quantisation_type_is_named_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = llama_file(tmp.path(), GgmlDType::Q8_0);
    let mut bytes = fs::read(&path).unwrap();
    // Rewrite the embedding's type to IQ2_XXS (16): its name, 2 dims, then the type.
    let name = b"token_embd.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    let type_at = at + name.len() + 4 + 2 * 8;
    bytes[type_at..type_at + 4].copy_from_slice(&16u32.to_le_bytes());
    fs::write(&path, bytes).unwrap();
    let err = load_error(&path);
    assert!(
        err.contains("IQ2_XXS") && err.contains("llama-quantize"),
        "{err}"
    );
}

#[test]
fn an_unsupported_architecture_or_tokenizer_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_config(Architecture::Llama, 262, true);
    let path = tmp.path().join("mamba.gguf");
    let mut meta = model_metadata(&config);
    meta[0].1 = string("mamba");
    meta.extend(byte_level_tokenizer("smollm"));
    write_model(&path, &config, GgmlDType::F32, &meta);
    let err = load_error(&path);
    assert!(
        err.contains("mamba") && err.contains("llama, qwen2, qwen3, gpt2"),
        "{err}"
    );

    let path = tmp.path().join("bert-tokenizer.gguf");
    let mut meta = model_metadata(&config);
    meta.extend(byte_level_tokenizer("smollm"));
    meta.iter_mut()
        .find(|(k, _)| k == "tokenizer.ggml.model")
        .unwrap()
        .1 = string("bert");
    write_model(&path, &config, GgmlDType::F32, &meta);
    let err = load_error(&path);
    assert!(
        err.contains("\"bert\"") && err.contains("gpt2, llama"),
        "{err}"
    );
}

#[test]
fn local_model_loads_a_gguf_file_and_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = llama_file(tmp.path(), GgmlDType::Q8_0);
    let spec = path.display().to_string();
    assert_eq!(crate::hub::resolve_model_dir(&spec).unwrap(), path);
    let model = crate::local::LocalModel::load(&spec, &Default::default()).unwrap();
    assert_eq!(model.dir(), path);
    let req = cai_core::GenerateRequest::new("hi", 3, cai_core::Sampling::greedy());
    use cai_core::LanguageModel;
    let out = model.generate(&[req]).unwrap();
    assert!(!out[0].token_ids.is_empty());
}

#[test]
fn a_gguf_file_where_a_folder_is_needed_points_to_cai_convert() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = llama_file(tmp.path(), GgmlDType::Q8_0);
    let errors = [
        ModelConfig::from_file(&path.join("config.json")).unwrap_err(),
        Tokenizer::from_dir(&path).unwrap_err(),
        crate::checkpoint::Checkpoint::open_dir(&path).unwrap_err(),
    ];
    for err in errors.map(|e| e.to_string()) {
        assert!(
            err.contains(&path.display().to_string()) && err.contains("cai convert --model"),
            "{err}"
        );
    }
}

#[test]
fn a_file_shorter_than_its_tensor_directory_fails_before_reading_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = llama_file(tmp.path(), GgmlDType::F32);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err = GgufFile::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("truncated") && err.contains("ends at byte"),
        "{err}"
    );
}
