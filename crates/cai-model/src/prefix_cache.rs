//! Automatic prefix reuse: the keys and values of finished generation rows (prompt and
//! generated tokens) kept in a least-recently-used cache bounded in bytes, so that a later
//! job whose tokens start the same way (the critique stage's next wave: the same transcript
//! with the answer and a request appended) continues from them and prefills only the rest.
//!
//! Matching is by longest common token prefix, not exact text: retokenising a grown
//! transcript may split the old boundary differently, and the common part is still exact.
//! Entries are the keys and values of one model: a [`crate::local::LocalModel`] owns its
//! cache, entries record whether LoRA adapters were on, and changing weights needs
//! [`PrefixCache::clear`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::kv_cache::KvCache;
use crate::Result;

/// One finished row: the tokens whose keys and values it holds, slot `i` for token `i`: the
/// shared prefix the row continued (`head`, held once by every entry that continues it) and
/// the row's own slots after it (`cache`), or all of them in `cache`.
#[derive(Debug)]
pub struct Entry {
    tokens: Vec<u32>,
    head: Option<KvCache>,
    cache: KvCache,
    adapters: bool,
    bytes: usize,
}

/// A cached entry that continues a job's tokens: its first `len` slots are the job's first
/// `len` tokens.
#[derive(Debug, Clone)]
pub struct Hit {
    entry: Arc<Entry>,
    len: usize,
}

impl Hit {
    /// Tokens whose keys and values are reused.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a hit that reuses nothing (never returned by [`PrefixCache::lookup`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The reused slots as a one-row cache: a view of the entry's memory (see
    /// [`KvCache::truncated`]), or the shared prefix and the row's own slots joined.
    pub fn cache(&self) -> Result<KvCache> {
        match &self.entry.head {
            Some(head) if self.len <= head.len() => head.truncated(self.len),
            Some(head) => {
                KvCache::join_slots(head, &self.entry.cache.truncated(self.len - head.len())?)
            }
            None => self.entry.cache.truncated(self.len),
        }
    }

    /// The shared prefix the kept row continued, if it was kept apart from the row.
    pub fn head(&self) -> Option<&KvCache> {
        self.entry.head.as_ref()
    }
}

/// Counts since the cache was made (or cleared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReuseStats {
    /// Jobs that continued a cached entry.
    pub hits: u64,
    /// Prompt tokens those jobs did not prefill.
    pub reused_tokens: u64,
    /// Entries stored.
    pub stored: u64,
    /// Entries dropped to stay within the byte budget.
    pub evicted: u64,
}

/// The entries and their byte total, least recently used first.
#[derive(Debug, Default)]
struct Inner {
    entries: Vec<Arc<Entry>>,
    bytes: usize,
}

/// Finished rows' keys and values, least recently used dropped first once their total passes
/// the byte budget. Shared by every thread that generates with one model.
#[derive(Debug)]
pub struct PrefixCache {
    budget: usize,
    min_tokens: usize,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    reused_tokens: AtomicU64,
    stored: AtomicU64,
    evicted: AtomicU64,
}

impl PrefixCache {
    /// A cache holding at most `budget` bytes of keys and values (0: disabled) that reuses an
    /// entry only where it saves at least `min_tokens` tokens of prefill.
    pub fn new(budget: usize, min_tokens: usize) -> Self {
        Self {
            budget,
            min_tokens: min_tokens.max(1),
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            reused_tokens: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// False when the budget is 0: nothing is stored or found.
    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters.
    pub fn stats(&self) -> ReuseStats {
        ReuseStats {
            hits: self.hits.load(Ordering::Relaxed),
            reused_tokens: self.reused_tokens.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// Forget every entry and reset the counters (after the weights changed).
    pub fn clear(&self) {
        *self.lock() = Inner::default();
        for c in [&self.hits, &self.reused_tokens, &self.stored, &self.evicted] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // An entry is immutable once stored, so a panic elsewhere cannot leave one half made.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry sharing the longest token prefix with `tokens`, computed with adapters as
    /// `adapters` says, where reusing it saves at least the minimum beyond the `free` tokens
    /// a shared prefix already supplies. At most `tokens.len() - 1` tokens are reused: the
    /// job's last prompt token is always run, to give the next token's logits. The entry
    /// becomes the most recently used.
    pub fn lookup(&self, tokens: &[u32], adapters: bool, free: usize) -> Option<Hit> {
        if !self.enabled() || tokens.len() < 2 {
            return None;
        }
        let cap = tokens.len() - 1;
        let mut inner = self.lock();
        let (at, len) = inner
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.adapters == adapters)
            .map(|(i, e)| (i, common_prefix(&e.tokens, tokens).min(cap)))
            // Ties go to the most recently used (the last).
            .max_by_key(|&(i, len)| (len, i))?;
        if len < free + self.min_tokens {
            return None;
        }
        let entry = inner.entries.remove(at);
        inner.entries.push(entry.clone());
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.reused_tokens.fetch_add(len as u64, Ordering::Relaxed);
        Some(Hit { entry, len })
    }

    /// Keep `cache` (one compact row, see [`KvCache::compact_row`]) as the keys and values of
    /// `tokens`. Entries whose tokens start `tokens` are dropped (this one continues
    /// everything they could); an entry that already continues `tokens` makes this one
    /// redundant. Least recently used entries leave until the total fits the budget; an
    /// entry larger than the whole budget is not kept.
    pub fn insert(&self, tokens: Vec<u32>, cache: KvCache, adapters: bool) {
        self.insert_after(tokens, None, cache, adapters)
    }

    /// [`PrefixCache::insert`] of a row that continued a shared prefix: `head` is the
    /// prefix's one-row cache, held by reference (the prefix and every entry that continues it
    /// share its memory, which the budget does not count), and `tail` the row's own slots
    /// after it ([`KvCache::compact_row_from`]).
    pub fn insert_after(
        &self,
        tokens: Vec<u32>,
        head: Option<KvCache>,
        tail: KvCache,
        adapters: bool,
    ) {
        let slots = head.as_ref().map_or(0, KvCache::len) + tail.len();
        if !self.enabled() || tokens.len() < self.min_tokens || slots != tokens.len() {
            return;
        }
        let cache = tail;
        let bytes = cache.bytes();
        if bytes > self.budget {
            return;
        }
        let mut inner = self.lock();
        if let Some(i) = inner
            .entries
            .iter()
            .position(|e| e.adapters == adapters && e.tokens.starts_with(&tokens))
        {
            let entry = inner.entries.remove(i);
            inner.entries.push(entry);
            return;
        }
        let before = inner.entries.len();
        inner
            .entries
            .retain(|e| !(e.adapters == adapters && tokens.starts_with(&e.tokens)));
        if inner.entries.len() != before {
            inner.bytes = inner.entries.iter().map(|e| e.bytes).sum();
        }
        while inner.bytes + bytes > self.budget {
            let old = inner.entries.remove(0);
            inner.bytes -= old.bytes;
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        inner.bytes += bytes;
        inner.entries.push(Arc::new(Entry {
            tokens,
            head,
            cache,
            adapters,
            bytes,
        }));
        self.stored.fetch_add(1, Ordering::Relaxed);
    }
}

/// Length of the longest common prefix of two token sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests;
