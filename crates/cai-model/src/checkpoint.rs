//! Safetensors checkpoints in Hugging Face layout: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, memory-mapped, validated, with errors that name the file
//! and tensor; and writing them back with `{"format": "pt"}` metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::SafeTensors;

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

    /// Load a tensor, check its shape, convert it to `dtype` on `device`.
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
    let text = std::fs::read_to_string(index_path).map_err(|e| ModelError::io(index_path, e))?;
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
/// expects. The file is written to a temporary name and renamed, so a crash never leaves a
/// half-written checkpoint under the real name.
pub fn save_safetensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.contiguous()?)))
        .collect::<std::result::Result<_, candle_core::Error>>()?;
    safetensors::serialize_to_file(
        contiguous.iter().map(|(k, t)| (k.as_str(), t)),
        Some(metadata),
        &tmp,
    )
    .map_err(|e| ModelError::Safetensors {
        path: tmp.clone(),
        message: format!("{e:?}"),
    })?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))?;
    Ok(())
}
