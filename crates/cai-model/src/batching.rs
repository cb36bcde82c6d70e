//! Splitting many requests into forward passes: longest first, so rows of similar length share
//! a batch and padding stays small, within a row limit and a padded-token limit.

/// Batch limits of the local engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Most rows in one forward pass.
    pub max_batch: usize,
    /// Most padded tokens (rows × longest row) in one prefill or scoring pass.
    pub max_batch_tokens: usize,
}

impl Default for EngineLimits {
    /// 32 rows; 4,096 tokens keeps each pass's activations small enough for the allocator to
    /// reuse (larger passes spend their time faulting in fresh pages) without starving the
    /// matmuls of rows.
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_batch_tokens: 4096,
        }
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
        };
        let plan = plan_batches(lens.len(), |i| lens[i], limits);
        assert_eq!(plan, vec![vec![1, 3], vec![2, 4], vec![0]]);
        let tight = EngineLimits {
            max_batch: 8,
            max_batch_tokens: 150,
        };
        assert_eq!(
            plan_batches(lens.len(), |i| lens[i], tight),
            vec![vec![1], vec![3, 2], vec![4, 0]]
        );
    }
}
