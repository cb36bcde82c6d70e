//! A content-keyed, on-disk cache of verdicts: any judge wrapped in [`CachedJudge`] is asked
//! only about what it has not judged before — the same judge (name and fingerprint), the same
//! question, the same conversation and answers — so a rerun, or a new snapshot whose answers
//! repeat old ones, costs only what is new.
//!
//! The cache is one JSONL file of `{"key", "judge", "kind", "value"}`, appended one whole
//! line per verdict with a single write (several runs may share it); a line that does not
//! parse — one cut by a kill — is skipped and its verdict made again.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::{AnswerVerdict, HarmVerdict, Judge, PairQuery, ResponseQuery};
use crate::runner::Hasher;
use crate::Result;

/// Verdicts by key, backed by a JSONL file.
pub struct VerdictCache {
    path: PathBuf,
    entries: HashMap<String, Value>,
}

impl VerdictCache {
    /// Open (or start) the cache at `path`, creating its folder.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| cai_core::Error::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e).into()),
        };
        let entries = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|record| {
                let key = record.get("key")?.as_str()?.to_owned();
                Some((key, record.get("value")?.clone()))
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// Verdicts held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_value(self.entries.get(key)?.clone()).ok()
    }

    fn put(&mut self, key: String, judge: &str, kind: &str, value: Value) -> Result<()> {
        let mut line =
            json!({"key": key, "judge": judge, "kind": kind, "value": value}).to_string();
        line.push('\n');
        let io = |source| cai_core::Error::Io {
            path: self.path.clone(),
            source,
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(io)?;
        self.entries.insert(key, value);
        Ok(())
    }
}

/// How a cached judge's questions were answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Verdicts found in the cache.
    pub hits: usize,
    /// Verdicts the judge was asked for.
    pub misses: usize,
}

impl CacheStats {
    /// hits / (hits + misses); 0 when nothing was asked.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// A judge whose verdicts are kept in a [`VerdictCache`].
pub struct CachedJudge<'j> {
    inner: &'j dyn Judge,
    cache: Mutex<VerdictCache>,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

impl<'j> CachedJudge<'j> {
    /// `inner`, asked only about what `cache` lacks.
    pub fn new(inner: &'j dyn Judge, cache: VerdictCache) -> Self {
        Self {
            inner,
            cache: Mutex::new(cache),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
        }
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The key of one question: the judge, what is asked, and every text it sees.
    fn key(&self, kind: &str, texts: &[&str]) -> String {
        let halves = ["cai-verdict-a", "cai-verdict-b"].map(|salt| {
            let mut h = Hasher::default();
            h.field(salt)
                .field(&self.inner.name())
                .field(&self.inner.fingerprint())
                .field(kind);
            for text in texts {
                h.field(text);
            }
            h
        });
        format!("{}{}", halves[0].hex(), halves[1].hex())
    }

    /// Cached values for `keys`, asking `compute` for the missing ones (by index).
    fn cached<T: Serialize + DeserializeOwned + Clone>(
        &self,
        kind: &str,
        keys: Vec<String>,
        compute: impl FnOnce(&[usize]) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let mut found: Vec<Option<T>> = {
            let cache = self.cache.lock().expect("no panics while held");
            keys.iter().map(|k| cache.get(k)).collect()
        };
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        self.hits
            .fetch_add(keys.len() - missing.len(), Ordering::Relaxed);
        self.misses.fetch_add(missing.len(), Ordering::Relaxed);
        if !missing.is_empty() {
            let made = compute(&missing)?;
            super::check_count(&self.inner.name(), made.len(), missing.len())?;
            let mut cache = self.cache.lock().expect("no panics while held");
            let name = self.inner.name();
            for (&i, value) in missing.iter().zip(made) {
                let json = serde_json::to_value(&value).expect("verdicts serialise");
                cache.put(keys[i].clone(), &name, kind, json)?;
                found[i] = Some(value);
            }
        }
        Ok(found.into_iter().map(|v| v.expect("filled")).collect())
    }
}

fn conversation_text(query: &[cai_core::dialogue::Message]) -> String {
    serde_json::to_string(query).expect("messages serialise")
}

impl Judge for CachedJudge<'_> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }

    fn prefer(&self, pairs: &[PairQuery<'_>]) -> Result<Vec<f64>> {
        let keys = pairs
            .iter()
            .map(|p| {
                let c = conversation_text(p.conversation);
                self.key("prefer", &[p.axis.name(), &c, p.response_a, p.response_b])
            })
            .collect();
        self.cached("prefer", keys, |missing| {
            let asked: Vec<PairQuery<'_>> = missing.iter().map(|&i| pairs[i]).collect();
            self.inner.prefer(&asked)
        })
    }

    fn gives_harm(&self) -> bool {
        self.inner.gives_harm()
    }

    fn gives_refusal(&self) -> bool {
        self.inner.gives_refusal()
    }

    fn assess(&self, responses: &[ResponseQuery<'_>]) -> Result<Vec<AnswerVerdict>> {
        let keys = responses
            .iter()
            .map(|r| self.key("assess", &[&conversation_text(r.conversation), r.response]))
            .collect();
        self.cached("assess", keys, |missing| {
            let asked: Vec<ResponseQuery<'_>> = missing.iter().map(|&i| responses[i]).collect();
            self.inner.assess(&asked)
        })
    }

    fn harm(&self, responses: &[ResponseQuery<'_>]) -> Result<Vec<HarmVerdict>> {
        let keys = responses
            .iter()
            .map(|r| self.key("harm", &[&conversation_text(r.conversation), r.response]))
            .collect();
        self.cached("harm", keys, |missing| {
            let asked: Vec<ResponseQuery<'_>> = missing.iter().map(|&i| responses[i]).collect();
            self.inner.harm(&asked)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use cai_core::dialogue::Message;

    use super::*;
    use crate::eval::Axis;

    /// A judge that counts the answers it is asked about: p(harmful) is the answer's length
    /// over 10.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Judge for Counting {
        fn name(&self) -> String {
            "counting".into()
        }

        fn prefer(&self, pairs: &[PairQuery<'_>]) -> Result<Vec<f64>> {
            self.0.fetch_add(pairs.len(), Ordering::Relaxed);
            Ok(vec![0.25; pairs.len()])
        }

        fn assess(&self, responses: &[ResponseQuery<'_>]) -> Result<Vec<AnswerVerdict>> {
            self.0.fetch_add(responses.len(), Ordering::Relaxed);
            Ok(responses
                .iter()
                .map(|r| AnswerVerdict {
                    p_harmful: Some(r.response.len() as f64 / 10.0),
                    p_refusal: None,
                })
                .collect())
        }
    }

    #[test]
    fn a_rerun_asks_the_judge_nothing_and_new_answers_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache/verdicts.jsonl");
        let conversation = [Message::user("q?")];
        let q = |response| ResponseQuery {
            key: "k",
            conversation: &conversation,
            response,
        };
        let inner = Counting::default();
        let first = {
            let judge = CachedJudge::new(&inner, VerdictCache::open(&path).unwrap());
            let v = judge.assess(&[q("abc"), q("abcd"), q("abc")]).unwrap();
            assert_eq!(judge.stats(), CacheStats { hits: 0, misses: 3 });
            v
        };
        let asked = inner.0.load(Ordering::Relaxed);
        let judge = CachedJudge::new(&inner, VerdictCache::open(&path).unwrap());
        let again = judge.assess(&[q("abc"), q("abcd"), q("abc")]).unwrap();
        assert_eq!(again, first);
        assert_eq!(
            inner.0.load(Ordering::Relaxed),
            asked,
            "a rerun asks nothing"
        );
        assert_eq!(judge.stats().hit_rate(), 1.0);
        // Only the new answer is asked; a cut-off last line is skipped.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"key\": \"cut");
        std::fs::write(&path, text).unwrap();
        let judge = CachedJudge::new(&inner, VerdictCache::open(&path).unwrap());
        let v = judge.assess(&[q("abc"), q("abcdefgh")]).unwrap();
        assert_eq!(v[1].p_harmful, Some(0.8));
        assert_eq!(judge.stats(), CacheStats { hits: 1, misses: 1 });
        // Pairs are keyed by their axis and order.
        let pair = |a, b, axis| PairQuery {
            key: "k",
            conversation: &conversation,
            response_a: a,
            response_b: b,
            axis,
        };
        let before = inner.0.load(Ordering::Relaxed);
        judge
            .prefer(&[
                pair("x", "y", Axis::Harmlessness),
                pair("y", "x", Axis::Harmlessness),
                pair("x", "y", Axis::Helpfulness),
            ])
            .unwrap();
        judge.prefer(&[pair("x", "y", Axis::Harmlessness)]).unwrap();
        assert_eq!(inner.0.load(Ordering::Relaxed), before + 3);
    }
}
