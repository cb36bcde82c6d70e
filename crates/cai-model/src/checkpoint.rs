//! Safetensors checkpoints in Hugging Face layout: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, memory-mapped, validated, with errors that name the file
//! and tensor; and writing them back with `{"format": "pt"}` metadata.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{SafeTensorError, SafeTensors, View};

use crate::atomic_file::write_atomic_with;
use crate::{ModelError, Result};

/// Name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The safetensors files of one model, opened and validated, with a name → file index.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field(
                "files",
                &self.files.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .field("tensors", &self.index.len())
            .finish()
    }
}

impl Checkpoint {
    /// Open the checkpoint of a model directory (single file or sharded).
    pub fn open_dir(dir: &Path) -> Result<Self> {
        if let Some(e) = crate::gguf::folder_needed(dir) {
            return Err(e);
        }
        let index_path = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        let paths: Vec<PathBuf> = if index_path.exists() {
            shard_files(&index_path)?
                .into_iter()
                .map(|f| dir.join(f))
                .collect()
        } else if single.exists() {
            vec![single]
        } else {
            return Err(ModelError::NotFound {
                spec: dir.display().to_string(),
                searched: format!(
                    "neither {SINGLE_FILE} nor {INDEX_FILE} is in {} (cai reads safetensors weights only)",
                    dir.display()
                ),
            });
        };
        Self::open_files(dir, &paths)
    }

    /// Open an explicit list of safetensors files.
    pub fn open_files(dir: &Path, paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
            // SAFETY: the file is opened read-only and we never hand out the map mutably; a
            // concurrent writer truncating it is the one case mmap cannot guard against, the
            // same trade-off every safetensors loader makes.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                message: describe_st_error(&e),
            })?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            files.push((path.clone(), mmap));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            index,
        })
    }

    /// The directory the checkpoint came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when the checkpoint holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.index.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Shape of a tensor without loading it.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let (path, st) = self.view_file(name)?;
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            message: describe_st_error(&e),
        })?;
        Ok(view.shape().to_vec())
    }

    /// Load a tensor, check its shape, its dtype (a float) and its values (finite, and
    /// within the range of `dtype`), and convert it to `dtype` on `device`.
    pub fn load(
        &self,
        name: &str,
        expected: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let (path, st) = self.view_file(name)?;
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            message: describe_st_error(&e),
        })?;
        if view.shape() != expected {
            return Err(ModelError::ShapeMismatch {
                path: path.to_path_buf(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        check_values(path, name, view.dtype(), view.data(), dtype)?;
        let t = view.load(device).map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            message: format!("tensor '{name}': {e}"),
        })?;
        Ok(t.to_dtype(dtype)?)
    }

    fn view_file(&self, name: &str) -> Result<(&Path, SafeTensors<'_>)> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.dir.clone(),
                name: name.to_string(),
            })?;
        let (path, mmap) = &self.files[i];
        // Already validated in `open_files`, so this cannot fail.
        let st = SafeTensors::deserialize(mmap).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            message: describe_st_error(&e),
        })?;
        Ok((path, st))
    }
}

fn shard_files(index_path: &Path) -> Result<Vec<String>> {
    let text = crate::read_limits::read_text(index_path, crate::read_limits::CONFIG_LIMIT)
        .map_err(|e| ModelError::io(index_path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: index_path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config {
            path: index_path.to_path_buf(),
            message: "missing object field `weight_map` (tensor name -> shard file)".into(),
        })?;
    let mut files: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| ModelError::Config {
            path: index_path.to_path_buf(),
            message: format!("weight_map[\"{tensor}\"] must be a file name string"),
        })?;
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    files.sort();
    Ok(files)
}

fn describe_st_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::MetadataIncompleteBuffer | E::InvalidHeaderLength => {
            format!("{e:?}: the file is truncated or not safetensors")
        }
        other => format!("{other:?}"),
    }
}

/// Write tensors to one safetensors file with the `{"format": "pt"}` metadata transformers
/// expects: the bytes `safetensors::serialize` would give, written tensor by tensor through
/// [`write_atomic_with`] (a temporary file with the umask's mode, synced and renamed), so a
/// crash never leaves a half-written checkpoint under the real name.
pub fn save_safetensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    }
    let st_error = |e: SafeTensorError| ModelError::Safetensors {
        path: path.to_path_buf(),
        message: format!("{e:?}"),
    };
    let mut contiguous: Vec<(&String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k, t.contiguous()?)))
        .collect::<std::result::Result<_, candle_core::Error>>()?;
    // safetensors' order: by descending dtype alignment, then by name.
    contiguous.sort_by(|(ln, lt), (rn, rt)| View::dtype(rt).cmp(&View::dtype(lt)).then(ln.cmp(rn)));
    let mut infos = Vec::with_capacity(contiguous.len());
    let mut offset = 0usize;
    for (name, t) in &contiguous {
        let n = View::data_len(t);
        infos.push((
            name.to_string(),
            TensorInfo {
                dtype: View::dtype(t),
                shape: t.dims().to_vec(),
                data_offsets: (offset, offset + n),
            },
        ));
        offset += n;
    }
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let header = Metadata::new(Some(metadata), infos).map_err(st_error)?;
    let mut header = serde_json::to_vec(&header).map_err(|e| ModelError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    header.resize(header.len().next_multiple_of(8), b' ');
    write_atomic_with(path, |out| {
        out.write_all(&(header.len() as u64).to_le_bytes())?;
        out.write_all(&header)?;
        for (_, t) in &contiguous {
            out.write_all(&View::data(t))?;
        }
        Ok(())
    })
}

/// Largest finite magnitude of each compute dtype.
fn dtype_limit(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => half::f16::MAX.to_f64(),
        DType::BF16 => half::bf16::MAX.to_f64(),
        DType::F32 => f32::MAX as f64,
        _ => f64::MAX,
    }
}

/// Refuse a tensor that is not a float, holds NaN or ±inf, or holds values `target` cannot
/// represent. One pass over the stored bytes (in parallel for large tensors).
fn check_values(
    path: &Path,
    name: &str,
    stored: safetensors::Dtype,
    bytes: &[u8],
    target: DType,
) -> Result<()> {
    use safetensors::Dtype as St;
    let (scan, size) = match stored {
        St::F32 => (
            scan_values(bytes, 4, |b| {
                f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64
            }),
            4,
        ),
        St::F16 => (
            scan_values(bytes, 2, |b| {
                half::f16::from_le_bytes([b[0], b[1]]).to_f64()
            }),
            2,
        ),
        St::BF16 => (
            scan_values(bytes, 2, |b| {
                half::bf16::from_le_bytes([b[0], b[1]]).to_f64()
            }),
            2,
        ),
        St::F64 => (
            scan_values(bytes, 8, |b| {
                f64::from_le_bytes(b.try_into().expect("8-byte chunks"))
            }),
            8,
        ),
        other => {
            return Err(ModelError::Dtype {
                path: path.to_path_buf(),
                name: name.to_string(),
                found: format!("{other:?}"),
            })
        }
    };
    let problem = if let Some((index, value)) = scan.first_non_finite {
        format!(
            "holds {} (first at element {index} of {}): the weights are damaged, or were \
             saved after training diverged; use an earlier checkpoint or a fresh copy of the model",
            if value.is_nan() {
                "NaN"
            } else {
                "an infinite value"
            },
            bytes.len() / size,
        )
    } else if scan.max_abs > dtype_limit(target) {
        format!(
            "holds values up to {:e}, beyond what {} can hold (±{:e}): they would become \
             infinite; load the model in bf16 or f32 (--dtype)",
            scan.max_abs,
            crate::weights::dtype_short_name(target),
            dtype_limit(target)
        )
    } else {
        return Ok(());
    };
    Err(ModelError::NonFinite {
        path: path.to_path_buf(),
        name: name.to_string(),
        problem,
    })
}

/// What one pass over a tensor's values found.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scan {
    /// The first element that is NaN or infinite, with its value.
    first_non_finite: Option<(usize, f64)>,
    /// The largest magnitude among the elements before it (all of them when finite).
    max_abs: f64,
}

/// Elements per parallel piece: large tensors are scanned on every core.
const SCAN_PIECE: usize = 1 << 18;

fn scan_values(bytes: &[u8], size: usize, value: impl Fn(&[u8]) -> f64 + Sync) -> Scan {
    use rayon::prelude::*;
    let piece = |(p, chunk): (usize, &[u8])| {
        let mut max_abs = 0f64;
        for (i, element) in chunk.chunks_exact(size).enumerate() {
            let v = value(element);
            if !v.is_finite() {
                return Scan {
                    first_non_finite: Some((p * SCAN_PIECE + i, v)),
                    max_abs,
                };
            }
            max_abs = max_abs.max(v.abs());
        }
        Scan {
            first_non_finite: None,
            max_abs,
        }
    };
    let merge = |a: Scan, b: Scan| Scan {
        first_non_finite: match (a.first_non_finite, b.first_non_finite) {
            (Some(x), Some(y)) => Some(if x.0 <= y.0 { x } else { y }),
            (x, y) => x.or(y),
        },
        max_abs: a.max_abs.max(b.max_abs),
    };
    let empty = Scan {
        first_non_finite: None,
        max_abs: 0.0,
    };
    if bytes.len() <= SCAN_PIECE * size {
        return piece((0, bytes));
    }
    bytes
        .par_chunks(SCAN_PIECE * size)
        .enumerate()
        .map(piece)
        .reduce(|| empty, merge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_bytes_are_those_of_safetensors_serialize() {
        let dev = Device::Cpu;
        let tensors: BTreeMap<String, Tensor> = [
            (
                "b.weight",
                Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev).unwrap(),
            ),
            (
                "a.bias",
                Tensor::new(&[0.5f32, -1.0], &dev)
                    .unwrap()
                    .to_dtype(DType::BF16)
                    .unwrap(),
            ),
            (
                "c",
                Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev)
                    .unwrap()
                    .t()
                    .unwrap(),
            ),
        ]
        .into_iter()
        .map(|(k, t)| (k.to_string(), t))
        .collect();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("w.safetensors");
        save_safetensors(&tensors, &path).unwrap();
        let contiguous: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.contiguous().unwrap()))
            .collect();
        let metadata: HashMap<String, String> = [("format".into(), "pt".into())].into();
        let expected = safetensors::serialize(
            contiguous.iter().map(|(k, t)| (k.as_str(), t)),
            Some(metadata),
        )
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn a_scan_finds_the_first_non_finite_element_in_any_piece() {
        let mut values = vec![0.5f32; 3 * SCAN_PIECE + 7];
        values[10] = -3.0;
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let f32_at = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64;
        let clean = scan_values(&bytes(&values), 4, f32_at);
        assert_eq!(clean.first_non_finite, None);
        assert_eq!(clean.max_abs, 3.0);
        values[2 * SCAN_PIECE + 5] = f32::INFINITY;
        values[SCAN_PIECE + 1] = f32::NAN;
        let bad = scan_values(&bytes(&values), 4, f32_at);
        let (index, value) = bad.first_non_finite.unwrap();
        assert_eq!(index, SCAN_PIECE + 1);
        assert!(value.is_nan());
    }
}
