//! Elo ratings from pairwise comparisons: Bradley–Terry maximum likelihood, p(i beats j) =
//! σ(θᵢ − θⱼ), over every comparison — soft outcomes allowed, a comparison with score p for
//! i counting p wins for i and 1 − p for j — solved by Newton's method with a small Gaussian
//! prior on each strength so that a perfect separation still has a finite answer; scaled to
//! Elo points (400 / ln 10 per logit) and anchored so that a reference player is at 0; and
//! bootstrap intervals from resampling prompts with replacement.

use cai_core::rng::{derive_seed_u64, rng_from_seed};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{PipelineError, Result};

/// Elo points per logit of strength: a 400-point gap is 10:1 odds.
pub const ELO_PER_LOGIT: f64 = 400.0 / std::f64::consts::LN_10;

/// `elo` rounded to a whole number for tables, without a "-0".
pub fn whole_elo(elo: f64) -> f64 {
    let r = elo.round();
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// One comparison between players `a` and `b` (indices): `score_a` is 1 if `a` won, 0 if
/// `b` did, 0.5 for a tie, or a judge's probability that `a` is better.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The first player.
    pub a: usize,
    /// The second player.
    pub b: usize,
    /// The first player's score in [0, 1].
    pub score_a: f64,
}

/// How ratings are fitted and their intervals found; saved beside the ratings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EloSettings {
    /// Strength of the Gaussian prior on each logit strength, λ in −λ/2·Σθ²: 0.01 is a
    /// standard deviation of 10 logits (≈1,737 Elo), which moves well-measured ratings by
    /// far less than their intervals but keeps a player that won every comparison finite.
    pub prior: f64,
    /// Bootstrap resamples of the prompts for the intervals (0: no intervals).
    pub bootstrap: usize,
    /// Coverage of the intervals (0.95: the 2.5th and 97.5th percentiles).
    pub confidence: f64,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for EloSettings {
    fn default() -> Self {
        Self {
            prior: 0.01,
            bootstrap: 1000,
            confidence: 0.95,
            seed: 0,
        }
    }
}

impl EloSettings {
    /// Check the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.prior.is_finite() && self.prior > 0.0) {
            return Err(PipelineError::Config(format!(
                "Elo prior {}: expected a number > 0 (e.g. 0.01); without a prior a player \
                 that wins every comparison has no finite rating",
                self.prior
            )));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(PipelineError::Config(format!(
                "confidence {}: expected a number in (0, 1), e.g. 0.95",
                self.confidence
            )));
        }
        Ok(())
    }
}

/// The sufficient statistics of a set of comparisons between `n` players: for each ordered
/// pair, the first player's summed score, and for each pair the number of comparisons.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    n: usize,
    /// `wins[i * n + j]`: i's summed score against j.
    wins: Vec<f64>,
    /// `games[i * n + j]` (= `games[j * n + i]`): comparisons of i and j.
    games: Vec<f64>,
}

impl Tally {
    /// No comparisons yet between `n` players.
    pub fn new(n: usize) -> Self {
        Self {
            n,
            wins: vec![0.0; n * n],
            games: vec![0.0; n * n],
        }
    }

    /// Count `outcome` `weight` times (a bootstrap draws a prompt several times).
    pub fn add(&mut self, outcome: &Outcome, weight: f64) -> Result<()> {
        let Outcome { a, b, score_a } = *outcome;
        if a >= self.n || b >= self.n || a == b {
            return Err(PipelineError::Config(format!(
                "a comparison of players {a} and {b}: expected two different players below {}",
                self.n
            )));
        }
        if !(0.0..=1.0).contains(&score_a) {
            return Err(PipelineError::Config(format!(
                "a comparison of players {a} and {b} with score {score_a}: expected a score in \
                 [0, 1]"
            )));
        }
        let n = self.n;
        self.wins[a * n + b] += weight * score_a;
        self.wins[b * n + a] += weight * (1.0 - score_a);
        self.games[a * n + b] += weight;
        self.games[b * n + a] += weight;
        Ok(())
    }

    /// Players.
    pub fn players(&self) -> usize {
        self.n
    }

    /// Comparisons player `i` took part in.
    pub fn games_of(&self, i: usize) -> f64 {
        (0..self.n).map(|j| self.games[i * self.n + j]).sum()
    }

    /// Player `i`'s summed score.
    pub fn score_of(&self, i: usize) -> f64 {
        (0..self.n).map(|j| self.wins[i * self.n + j]).sum()
    }
}

/// log σ(x) without overflow.
fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

/// σ(x) without overflow.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The log-posterior of strengths `theta`: the Bradley–Terry log-likelihood of the tally
/// minus the prior's λ/2·Σθ².
fn objective(tally: &Tally, theta: &[f64], prior: f64) -> f64 {
    let n = tally.n;
    let mut f = -0.5 * prior * theta.iter().map(|t| t * t).sum::<f64>();
    for i in 0..n {
        for j in 0..n {
            let w = tally.wins[i * n + j];
            if w > 0.0 {
                f += w * log_sigmoid(theta[i] - theta[j]);
            }
        }
    }
    f
}

/// The maximum-posterior logit strengths of the tally's players (not anchored: the prior
/// centres them near 0).
///
/// Newton's method on the concave log-posterior: the gradient is
/// gᵢ = Σⱼ (wᵢⱼ − nᵢⱼ·σ(θᵢ − θⱼ)) − λθᵢ, the negated Hessian is the comparison graph's
/// Laplacian weighted by nᵢⱼ·σ(1 − σ), plus λI (positive definite for λ > 0); steps are
/// halved until the objective rises, so every iteration improves it.
pub fn fit_strengths(tally: &Tally, prior: f64) -> Result<Vec<f64>> {
    if !(prior.is_finite() && prior > 0.0) {
        return Err(PipelineError::Config(format!(
            "Elo prior {prior}: expected a number > 0"
        )));
    }
    let n = tally.n;
    let mut theta = vec![0.0; n];
    let scale = 1.0 + tally.games.iter().sum::<f64>();
    for _ in 0..200 {
        let mut grad: Vec<f64> = theta.iter().map(|t| -prior * t).collect();
        // The negated Hessian, row-major.
        let mut hess = vec![0.0; n * n];
        for i in 0..n {
            hess[i * n + i] += prior;
            for j in 0..n {
                let games = tally.games[i * n + j];
                if i == j || games == 0.0 {
                    continue;
                }
                let p = sigmoid(theta[i] - theta[j]);
                grad[i] += tally.wins[i * n + j] - games * p;
                let curvature = games * p * (1.0 - p);
                hess[i * n + i] += curvature;
                hess[i * n + j] -= curvature;
            }
        }
        if grad.iter().all(|g| g.abs() <= 1e-12 * scale) {
            break;
        }
        let step = solve_positive_definite(hess, grad.clone(), n);
        let before = objective(tally, &theta, prior);
        let slope: f64 = grad.iter().zip(&step).map(|(g, s)| g * s).sum();
        let mut alpha = 1.0;
        loop {
            let trial: Vec<f64> = theta
                .iter()
                .zip(&step)
                .map(|(t, s)| t + alpha * s)
                .collect();
            if objective(tally, &trial, prior) >= before + 1e-4 * alpha * slope || alpha < 1e-10 {
                theta = trial;
                break;
            }
            alpha *= 0.5;
        }
        if alpha * step.iter().fold(0.0f64, |m, s| m.max(s.abs())) < 1e-13 {
            break;
        }
    }
    Ok(theta)
}

/// x with A·x = b for a symmetric positive definite `n`×`n` matrix A (row-major), by
/// Cholesky decomposition.
fn solve_positive_definite(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    // A = L·Lᵀ, L stored in the lower triangle of `a`.
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        let d = d.max(f64::MIN_POSITIVE).sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    for i in 0..n {
        for k in 0..i {
            b[i] -= a[i * n + k] * b[k];
        }
        b[i] /= a[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            b[i] -= a[k * n + i] * b[k];
        }
        b[i] /= a[i * n + i];
    }
    b
}

/// Elo ratings of the tally's players, with player `reference` at 0.
pub fn elo_from_tally(tally: &Tally, reference: usize, prior: f64) -> Result<Vec<f64>> {
    if reference >= tally.n {
        return Err(PipelineError::Config(format!(
            "reference player {reference}: expected one of the {} players",
            tally.n
        )));
    }
    let theta = fit_strengths(tally, prior)?;
    Ok(theta
        .iter()
        .map(|t| (t - theta[reference]) * ELO_PER_LOGIT)
        .collect())
}

/// One player's rating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// Elo, the reference player at 0.
    pub elo: f64,
    /// Lower end of the bootstrap interval (`None` without a bootstrap).
    pub lo: Option<f64>,
    /// Upper end of the bootstrap interval.
    pub hi: Option<f64>,
    /// Comparisons the player took part in.
    pub comparisons: usize,
    /// The player's mean score in them (its win rate, ties counting half).
    pub win_rate: Option<f64>,
}

/// Ratings of `players` players from comparisons grouped by prompt (`groups[k]` holds every
/// comparison made on prompt k): the fit on all of them, and intervals from
/// `settings.bootstrap` resamples that draw as many prompts as there are, with replacement.
pub fn elo_ratings(
    players: usize,
    groups: &[Vec<Outcome>],
    reference: usize,
    settings: &EloSettings,
) -> Result<Vec<Rating>> {
    settings.validate()?;
    let tally_of = |weights: &[f64]| -> Result<Tally> {
        let mut tally = Tally::new(players);
        for (group, &w) in groups.iter().zip(weights) {
            if w > 0.0 {
                for outcome in group {
                    tally.add(outcome, w)?;
                }
            }
        }
        Ok(tally)
    };
    let all = tally_of(&vec![1.0; groups.len()])?;
    let elo = elo_from_tally(&all, reference, settings.prior)?;
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(settings.bootstrap); players];
    if !groups.is_empty() {
        for r in 0..settings.bootstrap {
            let mut rng = rng_from_seed(derive_seed_u64(settings.seed, &[r as u64]));
            let mut weights = vec![0.0; groups.len()];
            for _ in 0..groups.len() {
                weights[rng.random_range(0..groups.len())] += 1.0;
            }
            let resampled = elo_from_tally(&tally_of(&weights)?, reference, settings.prior)?;
            for (player, x) in resampled.into_iter().enumerate() {
                draws[player].push(x);
            }
        }
    }
    let tail = (1.0 - settings.confidence) / 2.0;
    Ok(elo
        .into_iter()
        .zip(draws)
        .enumerate()
        .map(|(i, (elo, mut draws))| {
            draws.sort_by(f64::total_cmp);
            let games = all.games_of(i);
            Rating {
                elo,
                lo: quantile(&draws, tail),
                hi: quantile(&draws, 1.0 - tail),
                comparisons: games.round() as usize,
                win_rate: (games > 0.0).then(|| all.score_of(i) / games),
            }
        })
        .collect())
}

/// The `q`-quantile of sorted values, interpolating linearly between order statistics
/// (`None` for no values).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let at = q.clamp(0.0, 1.0) * last as f64;
    let (i, frac) = (at.floor() as usize, at.fract());
    let next = sorted[(i + 1).min(last)];
    Some(sorted[i] + frac * (next - sorted[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prior too small to move the hand-computed answers by 0.01 Elo.
    const TINY: f64 = 1e-9;

    fn outcomes(a: usize, b: usize, scores: &[f64]) -> Vec<Outcome> {
        scores
            .iter()
            .map(|&score_a| Outcome { a, b, score_a })
            .collect()
    }

    fn tally(n: usize, outcomes: &[Outcome]) -> Tally {
        let mut t = Tally::new(n);
        for o in outcomes {
            t.add(o, 1.0).unwrap();
        }
        t
    }

    fn close(found: f64, expected: f64, tolerance: f64) {
        assert!(
            (found - expected).abs() <= tolerance,
            "{found} != {expected} ± {tolerance}"
        );
    }

    #[test]
    fn a_75_percent_win_rate_is_190_8_elo() {
        // σ(d) = 0.75 ⇒ d = ln 3 logits = 400·log10(3) = 190.85 Elo.
        let games = outcomes(0, 1, &[1.0, 1.0, 1.0, 0.0]);
        let elo = elo_from_tally(&tally(2, &games), 1, TINY).unwrap();
        close(elo[0], 400.0 * 3f64.log10(), 0.01);
        close(elo[0], 190.85, 0.01);
        assert_eq!(elo[1], 0.0);
        // Soft outcomes: four comparisons each judged 0.75 say the same.
        let soft = outcomes(0, 1, &[0.75; 4]);
        close(
            elo_from_tally(&tally(2, &soft), 1, TINY).unwrap()[0],
            190.85,
            0.01,
        );
        // The reference decides the zero: player 0 as reference puts player 1 at -190.85.
        close(
            elo_from_tally(&tally(2, &games), 0, TINY).unwrap()[1],
            -190.85,
            0.01,
        );
    }

    #[test]
    fn gaps_add_along_a_chain() {
        // 0 beats 1 three times in four, 1 beats 2 three times in four, 0 and 2 never meet:
        // each pair's gap is ln 3, so 0 is 2·190.85 = 381.70 above 2.
        let mut games = outcomes(0, 1, &[1.0, 1.0, 1.0, 0.0]);
        games.extend(outcomes(1, 2, &[1.0, 0.0, 1.0, 1.0]));
        let elo = elo_from_tally(&tally(3, &games), 2, TINY).unwrap();
        close(elo[0], 381.70, 0.01);
        close(elo[1], 190.85, 0.01);
        // Ties and equal records: everyone at 0.
        let even = outcomes(0, 1, &[0.5, 1.0, 0.0]);
        let elo = elo_from_tally(&tally(2, &even), 0, TINY).unwrap();
        close(elo[1], 0.0, 1e-9);
    }

    #[test]
    fn a_perfect_record_stays_finite_and_the_prior_shrinks() {
        let games = outcomes(0, 1, &[1.0; 10]);
        let t = tally(2, &games);
        let elo = elo_from_tally(&t, 1, 0.01).unwrap()[0];
        assert!(elo.is_finite() && elo > 1000.0, "{elo}");
        // A stronger prior pulls the gap in; a weaker one lets it grow.
        let strong = elo_from_tally(&t, 1, 1.0).unwrap()[0];
        let weak = elo_from_tally(&t, 1, 1e-4).unwrap()[0];
        assert!(strong < elo && elo < weak, "{strong} {elo} {weak}");
        // At the optimum the gradient vanishes: 10·(1 − σ(d)) = λ·d/2 for d = θ₀ − θ₁.
        let d = elo / ELO_PER_LOGIT;
        close(10.0 * (1.0 - sigmoid(d)), 0.01 * d / 2.0, 1e-9);
    }

    #[test]
    fn bad_comparisons_are_refused() {
        let mut t = Tally::new(2);
        assert!(t
            .add(
                &Outcome {
                    a: 0,
                    b: 0,
                    score_a: 1.0
                },
                1.0
            )
            .is_err());
        assert!(t
            .add(
                &Outcome {
                    a: 0,
                    b: 2,
                    score_a: 1.0
                },
                1.0
            )
            .is_err());
        assert!(t
            .add(
                &Outcome {
                    a: 0,
                    b: 1,
                    score_a: 1.5
                },
                1.0
            )
            .is_err());
        assert!(fit_strengths(&t, 0.0).is_err());
        assert!(elo_from_tally(&t, 2, 0.01).is_err());
    }

    #[test]
    fn known_strengths_are_recovered_from_simulated_games() {
        // Four players of known Elo play every pair 600 times (one prompt per round robin);
        // the fit must land within 30 Elo of each, and the 95 % intervals must hold the
        // truth for most players.
        let truth = [0.0, 120.0, -200.0, 350.0];
        let mut rng = rng_from_seed(7);
        let mut groups = Vec::new();
        for _ in 0..600 {
            let mut group = Vec::new();
            for a in 0..4 {
                for b in a + 1..4 {
                    let p = sigmoid((truth[a] - truth[b]) / ELO_PER_LOGIT);
                    let won = rng.random_bool(p);
                    group.push(Outcome {
                        a,
                        b,
                        score_a: f64::from(u8::from(won)),
                    });
                }
            }
            groups.push(group);
        }
        let settings = EloSettings {
            bootstrap: 200,
            seed: 3,
            ..EloSettings::default()
        };
        let ratings = elo_ratings(4, &groups, 0, &settings).unwrap();
        let mut covered = 0;
        for (rating, &t) in ratings.iter().zip(&truth) {
            close(rating.elo, t, 30.0);
            let (lo, hi) = (rating.lo.unwrap(), rating.hi.unwrap());
            assert!(lo <= rating.elo && rating.elo <= hi, "{rating:?}");
            covered += usize::from(lo <= t && t <= hi);
            assert_eq!(rating.comparisons, 1800);
        }
        assert!(covered >= 3, "{ratings:?}");
        // The reference's interval is a point at 0; the others have width.
        assert_eq!((ratings[0].lo, ratings[0].hi), (Some(0.0), Some(0.0)));
        assert!(ratings[3].hi.unwrap() - ratings[3].lo.unwrap() > 10.0);
        // Seeded: the same settings give the same intervals.
        assert_eq!(elo_ratings(4, &groups, 0, &settings).unwrap(), ratings);
    }

    #[test]
    fn tables_show_no_negative_zero() {
        assert_eq!(format!("{:.0}", whole_elo(-0.3)), "0");
        assert_eq!(format!("{:.0}", whole_elo(-0.6)), "-1");
        assert_eq!(format!("{:.0}", whole_elo(190.85)), "191");
    }

    #[test]
    fn quantiles_interpolate() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&xs, 0.5), Some(3.0));
        assert_eq!(quantile(&xs, 0.0), Some(1.0));
        assert_eq!(quantile(&xs, 1.0), Some(5.0));
        close(quantile(&xs, 0.1).unwrap(), 1.4, 1e-12);
        assert_eq!(quantile(&[], 0.5), None);
    }
}
