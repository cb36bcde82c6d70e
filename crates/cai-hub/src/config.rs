//! Where the Hub is and who we are: `HF_ENDPOINT`, the token, `HF_HUB_OFFLINE` and the cache
//! folder, read from the environment as `huggingface_hub` reads them.

use std::path::{Path, PathBuf};

/// The Hub used when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Settings of a [`crate::Hub`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Base URL of the Hub, without a trailing `/` (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The access token sent as `Authorization: Bearer`, if any.
    pub token: Option<String>,
    /// Where the token came from (`HF_TOKEN`, a file), for error messages.
    pub token_source: Option<String>,
    /// Never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// The hub cache folder (`models--org--name/...` live here); None when no folder is named
    /// by the environment (no `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME` or `HOME`).
    pub cache: Option<PathBuf>,
    /// Draw a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
}

impl HubConfig {
    /// The settings named by the environment:
    /// - endpoint: `HF_ENDPOINT`, else <https://huggingface.co>;
    /// - token: `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else the file named by
    ///   `HF_TOKEN_PATH`, else `$HF_HOME/token`, else `~/.cache/huggingface/token` (the file
    ///   `huggingface-cli login` writes);
    /// - offline: `HF_HUB_OFFLINE` set to `1`, `true`, `yes` or `on`;
    /// - cache: `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`,
    ///   else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// [`HubConfig::from_env`] over any variable lookup (tests pass a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let path = |name: &str| var(name).map(PathBuf::from);
        let home = path("HOME").or_else(|| path("USERPROFILE"));
        let hf_home = path("HF_HOME").or_else(|| {
            path("XDG_CACHE_HOME")
                .or_else(|| home.as_ref().map(|h| h.join(".cache")))
                .map(|c| c.join("huggingface"))
        });
        let cache = path("HF_HUB_CACHE")
            .or_else(|| path("HUGGINGFACE_HUB_CACHE"))
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")));
        let (token, token_source) = match var("HF_TOKEN")
            .map(|t| (t, "HF_TOKEN"))
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN").map(|t| (t, "HUGGING_FACE_HUB_TOKEN")))
        {
            Some((token, name)) => (Some(token.trim().to_owned()), Some(name.to_owned())),
            None => {
                let file = path("HF_TOKEN_PATH").or_else(|| hf_home.map(|h| h.join("token")));
                match file.as_deref().and_then(read_token_file) {
                    Some(token) => (Some(token), file.map(|f| f.display().to_string())),
                    None => (None, None),
                }
            }
        };
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            token,
            token_source,
            offline,
            cache,
            progress: true,
        }
    }
}

/// The token in a token file: its first non-blank line; None if there is none.
fn read_token_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> HubConfig {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_home() {
        let c = config(&[("HOME", "/home/u")]);
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(
            c.cache,
            Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
        );
        assert!(!c.offline);
        assert_eq!(c.token, None);
    }

    #[test]
    fn cache_variables_in_order_of_precedence() {
        let c = config(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(c.cache, Some(PathBuf::from("/x/huggingface/hub")));
        let c = config(&[("HOME", "/h"), ("HF_HOME", "/hf")]);
        assert_eq!(c.cache, Some(PathBuf::from("/hf/hub")));
        let c = config(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/old")]);
        assert_eq!(c.cache, Some(PathBuf::from("/old")));
        let c = config(&[("HF_HUB_CACHE", "/new"), ("HUGGINGFACE_HUB_CACHE", "/old")]);
        assert_eq!(c.cache, Some(PathBuf::from("/new")));
        assert_eq!(config(&[]).cache, None);
    }

    #[test]
    fn endpoint_and_offline() {
        let c = config(&[
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_HUB_OFFLINE", "1"),
        ]);
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert!(c.offline);
        assert!(config(&[("HF_HUB_OFFLINE", "TRUE")]).offline);
        assert!(!config(&[("HF_HUB_OFFLINE", "0")]).offline);
    }

    #[test]
    fn token_from_variable_then_files() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("hf");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("token"), "\n  hf_home_token \n").unwrap();
        let named = tmp.path().join("named");
        std::fs::write(&named, "hf_named\n").unwrap();
        let hf_home = home.to_str().unwrap();
        let c = config(&[("HF_HOME", hf_home)]);
        assert_eq!(c.token.as_deref(), Some("hf_home_token"));
        assert_eq!(
            c.token_source,
            Some(home.join("token").display().to_string())
        );
        let c = config(&[
            ("HF_HOME", hf_home),
            ("HF_TOKEN_PATH", named.to_str().unwrap()),
        ]);
        assert_eq!(c.token.as_deref(), Some("hf_named"));
        let c = config(&[("HF_HOME", hf_home), ("HF_TOKEN", "hf_var")]);
        assert_eq!(c.token.as_deref(), Some("hf_var"));
        assert_eq!(c.token_source.as_deref(), Some("HF_TOKEN"));
    }
}
