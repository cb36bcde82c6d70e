//! The local engine's limits ([`EngineLimits`]: rows and tokens per pass, the prefix-reuse
//! budget) and splitting many requests into forward passes: longest first, so rows of similar
//! length share a batch and padding stays small, within a row limit and a padded-token limit.

/// Batch limits of the local engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Most rows in one forward pass.
    pub max_batch: usize,
    /// Most padded tokens (rows × longest row) in one prefill or scoring pass.
    pub max_batch_tokens: usize,
    /// Bytes of finished rows' keys and values kept for jobs that continue them
    /// ([`crate::prefix_cache::PrefixCache`]); 0 turns prefix reuse off.
    pub kv_reuse_bytes: usize,
    /// Fewest prompt tokens a kept row must save (beyond a shared prefix) to be reused.
    pub kv_reuse_min_tokens: usize,
}

impl Default for EngineLimits {
    /// 32 rows; 4,096 tokens keeps each pass's activations small enough for the allocator to
    /// reuse (larger passes spend their time faulting in fresh pages) without starving the
    /// matmuls of rows. 512 MiB of reusable keys and values: 11,000 tokens of SmolLM2-135M
    /// (46 KB a token in f32), a critique round's transcripts many times over; reusing fewer
    /// than 16 tokens saves less than copying the entry costs.
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_batch_tokens: 4096,
            kv_reuse_bytes: 512 << 20,
            kv_reuse_min_tokens: 16,
        }
    }
}

/// The environment variable that sets [`EngineLimits::kv_reuse_bytes`] in MiB (0: off).
pub const KV_REUSE_ENV: &str = "CAI_KV_REUSE_MIB";

impl EngineLimits {
    /// These limits with [`KV_REUSE_ENV`] applied where it is set; a value that is not a whole
    /// number of MiB is an error naming the variable.
    pub fn with_env(self) -> crate::Result<Self> {
        match std::env::var(KV_REUSE_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(self),
            Ok(text) => self.with_kv_reuse_mib(&text),
            Err(std::env::VarError::NotUnicode(_)) => self.with_kv_reuse_mib("(not UTF-8)"),
        }
    }

    /// These limits with the reuse budget read from `text`, a whole number of MiB.
    fn with_kv_reuse_mib(self, text: &str) -> crate::Result<Self> {
        let mib: usize = text
            .trim()
            .parse()
            .map_err(|_| crate::ModelError::Setting {
                name: KV_REUSE_ENV,
                message: format!(
                "'{text}' is not a whole number of MiB; expected e.g. 512, or 0 to turn prefix \
                 reuse off"
            ),
            })?;
        let bytes = mib.checked_mul(1 << 20).ok_or(crate::ModelError::Setting {
            name: KV_REUSE_ENV,
            message: format!("{mib} MiB is more memory than this machine can address"),
        })?;
        Ok(Self {
            kv_reuse_bytes: bytes,
            ..self
        })
    }
}

/// Group item indices into batches. `len(i)` is item i's length in tokens.
pub fn plan_batches(
    n: usize,
    len: impl Fn(usize) -> usize,
    limits: EngineLimits,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(len(i)));
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in order {
        let fits = out.last().is_some_and(|c: &Vec<usize>| {
            let longest = len(c[0]).max(1);
            c.len() < limits.max_batch && (c.len() + 1) * longest <= limits.max_batch_tokens
        });
        match out.last_mut() {
            Some(c) if fits => c.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_first_within_both_limits() {
        let lens = [5, 100, 7, 60, 6];
        let limits = EngineLimits {
            max_batch: 2,
            max_batch_tokens: 200,
            ..EngineLimits::default()
        };
        let plan = plan_batches(lens.len(), |i| lens[i], limits);
        assert_eq!(plan, vec![vec![1, 3], vec![2, 4], vec![0]]);
        let tight = EngineLimits {
            max_batch: 8,
            max_batch_tokens: 150,
            ..EngineLimits::default()
        };
        assert_eq!(
            plan_batches(lens.len(), |i| lens[i], tight),
            vec![vec![1], vec![3, 2], vec![4, 0]]
        );
    }

    #[test]
    fn the_reuse_budget_reads_whole_mib_and_names_the_variable_otherwise() {
        let base = EngineLimits::default();
        assert_eq!(base.with_kv_reuse_mib("0").unwrap().kv_reuse_bytes, 0);
        assert_eq!(
            base.with_kv_reuse_mib(" 64 ").unwrap().kv_reuse_bytes,
            64 << 20
        );
        for bad in ["-1", "1.5", "lots", &usize::MAX.to_string()] {
            let err = base.with_kv_reuse_mib(bad).unwrap_err().to_string();
            assert!(err.contains(KV_REUSE_ENV), "{err}");
        }
    }
}
