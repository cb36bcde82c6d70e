//! GGUF files (llama.cpp, Ollama): recognising one, reading its header with candle's reader,
//! typed access to its metadata with errors that name the file and key, and loading the
//! model it holds: config (`config/gguf.rs`), tokenizer (`tokenizer/gguf.rs`) and weights
//! dequantised to the compute dtype (`gguf/tensors.rs`).

mod tensors;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device};

use crate::config::ModelConfig;
use crate::decoder::Decoder;
use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

pub use tensors::{gguf_tensor_name, SUPPORTED_QUANT_TYPES};

/// The four bytes every GGUF file starts with.
const MAGIC: &[u8; 4] = b"GGUF";

/// Whether `path` names a GGUF file: a file ending in `.gguf`, or any file that starts with
/// the GGUF magic. A `.gguf` file that is truncated or corrupt still counts, so that it gets
/// GGUF's errors rather than "not a model directory".
pub fn is_gguf(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return true;
    }
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == MAGIC)
}

/// The error for a GGUF file where a model folder is needed (the training commands read
/// `config.json` and safetensors), saying how to make one; `None` when `dir` is not GGUF.
pub fn folder_needed(dir: &Path) -> Option<ModelError> {
    is_gguf(dir).then(|| ModelError::Config {
        path: dir.to_path_buf(),
        message: format!(
            "a GGUF file, where this needs a Hugging Face model folder (config.json and \
             safetensors weights); make one with `cai convert --model {} --output DIR` and \
             pass DIR",
            dir.display()
        ),
    })
}

/// An opened GGUF file: its parsed header (metadata and tensor directory) and a reader for
/// the tensor data.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: Mutex<BufReader<File>>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("metadata", &self.content.metadata.len())
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

/// A model read from a GGUF file.
#[derive(Debug)]
pub struct GgufModel {
    /// The decoder's config, from the `{arch}.*` metadata and the tensor directory.
    pub config: ModelConfig,
    /// The tokenizer, from `tokenizer.ggml.*` and `tokenizer.chat_template`.
    pub tokenizer: Tokenizer,
    /// The weights, dequantised to the compute dtype.
    pub decoder: Decoder,
}

impl GgufFile {
    /// Open `path` and read its header. A file that is not GGUF, truncated or corrupt, or
    /// that holds a tensor type candle cannot read, is an error naming the file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| header_error(path, &e))?;
        check_tensor_extents(path, &content, &mut reader)?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader: Mutex::new(reader),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header.
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// `general.architecture` (`llama`, `qwen2`, `gpt2`, …).
    pub fn architecture(&self) -> Result<&str> {
        self.required_str("general.architecture")
    }

    /// An error about this file.
    pub(crate) fn error(&self, message: impl Into<String>) -> ModelError {
        ModelError::Config {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// A metadata value, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// An unsigned integer (any integer type, non-negative), if present.
    pub fn u64(&self, key: &str) -> Result<Option<u64>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let n = match value {
            Value::U8(v) => Some(*v as u64),
            Value::U16(v) => Some(*v as u64),
            Value::U32(v) => Some(*v as u64),
            Value::U64(v) => Some(*v),
            Value::I8(v) => u64::try_from(*v).ok(),
            Value::I16(v) => u64::try_from(*v).ok(),
            Value::I32(v) => u64::try_from(*v).ok(),
            Value::I64(v) => u64::try_from(*v).ok(),
            _ => None,
        };
        n.map(Some).ok_or_else(|| {
            self.error(format!(
                "metadata `{key}` is {}, expected a non-negative integer",
                describe(value)
            ))
        })
    }

    /// A size or count that must be present.
    pub fn required_usize(&self, key: &str) -> Result<usize> {
        let n = self.u64(key)?.ok_or_else(|| self.missing(key))?;
        usize::try_from(n).map_err(|_| self.error(format!("metadata `{key}` ({n}) is too large")))
    }

    /// An optional size or count.
    pub fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.u64(key)?
            .map(|n| {
                usize::try_from(n)
                    .map_err(|_| self.error(format!("metadata `{key}` ({n}) is too large")))
            })
            .transpose()
    }

    /// A token id, if present.
    pub fn token_id(&self, key: &str) -> Result<Option<u32>> {
        self.u64(key)?
            .map(|n| {
                u32::try_from(n)
                    .map_err(|_| self.error(format!("metadata `{key}` ({n}) is not a token id")))
            })
            .transpose()
    }

    /// A float (f32 or f64), if present.
    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v as f64)),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(other) => Err(self.error(format!(
                "metadata `{key}` is {}, expected a float",
                describe(other)
            ))),
        }
    }

    /// A boolean, if present.
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(v)) => Ok(Some(*v)),
            Some(other) => Err(self.error(format!(
                "metadata `{key}` is {}, expected a bool",
                describe(other)
            ))),
        }
    }

    /// A string, if present.
    pub fn str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(format!(
                "metadata `{key}` is {}, expected a string",
                describe(other)
            ))),
        }
    }

    /// A string that must be present.
    pub fn required_str(&self, key: &str) -> Result<&str> {
        self.str(key)?.ok_or_else(|| self.missing(key))
    }

    /// An array of strings, if present.
    pub fn str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        self.array(key, "strings", |v| match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// An array of floats, if present.
    pub fn f32_array(&self, key: &str) -> Result<Option<Vec<f32>>> {
        self.array(key, "floats", |v| match v {
            Value::F32(x) => Some(*x),
            Value::F64(x) => Some(*x as f32),
            _ => None,
        })
    }

    /// An array of integers, if present.
    pub fn i64_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        self.array(key, "integers", |v| match v {
            Value::I8(x) => Some(*x as i64),
            Value::I16(x) => Some(*x as i64),
            Value::I32(x) => Some(*x as i64),
            Value::I64(x) => Some(*x),
            Value::U8(x) => Some(*x as i64),
            Value::U16(x) => Some(*x as i64),
            Value::U32(x) => Some(*x as i64),
            Value::U64(x) => i64::try_from(*x).ok(),
            _ => None,
        })
    }

    fn array<'a, T>(
        &'a self,
        key: &str,
        what: &str,
        item: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = value else {
            return Err(self.error(format!(
                "metadata `{key}` is {}, expected an array of {what}",
                describe(value)
            )));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                item(v).ok_or_else(|| {
                    self.error(format!(
                        "metadata `{key}`[{i}] is {}, expected one of an array of {what}",
                        describe(v)
                    ))
                })
            })
            .collect::<Result<Vec<T>>>()
            .map(Some)
    }

    fn missing(&self, key: &str) -> ModelError {
        self.error(format!(
            "metadata `{key}` is missing; the file was not written by a llama.cpp converter \
             cai knows (convert the original Hugging Face model instead)"
        ))
    }
}

/// Load the model of a GGUF file: config, tokenizer and weights in `dtype` on `device`.
pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<GgufModel> {
    let file = GgufFile::open(path)?;
    let config = ModelConfig::from_gguf(&file)?;
    let tokenizer =
        Tokenizer::from_gguf(&file)?.with_model_max_length(config.max_position_embeddings);
    tokenizer.check_fits(config.vocab_size, path)?;
    crate::memory::check(device, config.memory_bytes(dtype), || {
        format!(
            "{}: {} in {}",
            path.display(),
            config.describe(),
            crate::weights::dtype_short_name(dtype)
        )
    })?;
    let decoder = tensors::load_decoder(&file, config.clone(), dtype, device)?;
    Ok(GgufModel {
        config,
        tokenizer,
        decoder,
    })
}

/// Fail at once, naming the first tensor that does not fit, when the file is shorter than
/// its tensor directory says (a download cut short), instead of after reading the rest.
fn check_tensor_extents(
    path: &Path,
    content: &Content,
    reader: &mut BufReader<File>,
) -> Result<()> {
    use std::io::Seek;
    let len = reader
        .seek(std::io::SeekFrom::End(0))
        .map_err(|e| ModelError::io(path, e))?;
    let mut tensors: Vec<_> = content.tensor_infos.iter().collect();
    tensors.sort_by_key(|(_, info)| info.offset);
    for (name, info) in tensors {
        let (elems, block) = (info.shape.elem_count(), info.ggml_dtype.block_size());
        let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
        let end = content
            .tensor_data_offset
            .saturating_add(info.offset)
            .saturating_add(bytes);
        if end > len {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                message: format!(
                    "the file is truncated or corrupt: tensor '{name}' ends at byte {end} but                      the file has {len} bytes; download or convert it again"
                ),
            });
        }
    }
    Ok(())
}

/// A header that candle could not read, explained: an unknown tensor type gets its ggml
/// name and the list of types cai reads; anything else is a truncated or corrupt file.
fn header_error(path: &Path, e: &candle_core::Error) -> ModelError {
    // The first line only: with RUST_BACKTRACE set, candle appends a backtrace.
    let full = e.to_string();
    let text = full.lines().next().unwrap_or_default().trim();
    let message = match text
        .strip_prefix("unknown dtype for tensor ")
        .and_then(|n| n.parse::<u32>().ok())
    {
        Some(code) => format!(
            "a tensor is stored as {} (ggml type {code}), a quantisation type cai cannot \
             dequantise; cai reads {}. Re-quantise the model with llama.cpp's \
             `llama-quantize` to one of these, or use the original Hugging Face model",
            ggml_type_name(code),
            SUPPORTED_QUANT_TYPES.join(", ")
        ),
        None if text.contains("magic") => format!(
            "not a GGUF file ({text}): a GGUF file starts with the bytes \"GGUF\"; pass a \
             .gguf file from llama.cpp or a model directory"
        ),
        None => format!(
            "not a readable GGUF file ({text}): it is truncated or corrupt; download or \
             convert it again"
        ),
    };
    ModelError::Config {
        path: path.to_path_buf(),
        message,
    }
}

/// ggml's name of a tensor type code (those candle does not read included).
fn ggml_type_name(code: u32) -> String {
    let name = match code {
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("type {code}"),
    };
    name.to_string()
}

/// A metadata value's type, for messages.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::Array(items) => format!("an array of {} items", items.len()),
        other => format!("a {:?}", other.value_type()).to_lowercase(),
    }
}
