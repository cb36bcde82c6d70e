//! Reading a model's small files (configs, tokenizers, templates) with a size bound checked
//! as they are read, so a wrong file (gigabytes named `config.json`, or a device that never
//! ends) is an error naming it instead of an allocation that aborts the process.

use std::io::Read;
use std::path::Path;

/// The largest JSON config or template cai reads; real ones are kilobytes.
pub(crate) const CONFIG_LIMIT: u64 = 16 << 20;
/// The largest `tokenizer.json`; those of the largest vocabularies are tens of megabytes.
pub(crate) const TOKENIZER_LIMIT: u64 = 1 << 30;

/// The bytes of `path`, or an [`std::io::ErrorKind::InvalidData`] error when it holds more
/// than `limit` bytes (its size is checked first, and the read stops past the limit).
pub(crate) fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let too_big = |size: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the file holds {size}, but a file of this kind is at most {}; is it the right file?",
                crate::memory::gigabytes(limit as u128)
            ),
        )
    };
    if size > limit {
        return Err(too_big(crate::memory::gigabytes(size as u128)));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_big("more".into()));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub(crate) fn read_text(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_past_the_limit_are_refused_by_size_or_while_read() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.json");
        std::fs::write(&path, "{}").unwrap();
        assert_eq!(read_text(&path, 2).unwrap(), "{}");
        let err = read_text(&path, 1).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        // A device reports no size and never ends: the read stops past the limit.
        let err = read_bounded(Path::new("/dev/zero"), 1000).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }
}
