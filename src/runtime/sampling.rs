//! Choosing the next token from raw logits, and describing the distribution it came from.
//!
//! Runs on a plain `&[f32]` row: the logits are copied off the device once per step, sampling is
//! seeded and portable (the same seed gives the same tokens on every machine), and nothing here
//! depends on libtorch's RNG.

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1.0 disables nucleus filtering.
    pub top_p: f32,
    /// 0 disables top-k filtering.
    pub top_k: usize,
    /// 0 disables min-p filtering.
    pub min_p: f32,
    /// 1.0 disables it; >1 discourages tokens already in the prompt or output (CTRL-style, as
    /// transformers applies it: positive logits are divided, negative ones multiplied).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    /// DeepSeek-R1's recommended settings.
    fn default() -> Self {
        Self {
            temperature: 0.6,
            top_p: 0.95,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            ..Self::default()
        }
    }
}

/// What the raw distribution said about the chosen token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenStats {
    pub logprob: f32,
    pub entropy: f32,
    pub top: Vec<(u32, f32)>,
}

/// log-softmax of `logits` (f64 accumulation), the chosen token's logprob, the entropy, and the
/// `k` best alternatives.
pub fn token_stats(logits: &[f32], chosen: u32, k: usize) -> TokenStats {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    // One pass of exponentials gives both the normaliser and the entropy:
    // H = -Σ p·(l - log Z) = log Z - Σ e·l / Σ e, with e = exp(l - max).
    let (mut sum, mut el) = (0.0f64, 0.0f64);
    for &l in logits {
        let d = l as f64 - max;
        let e = d.exp();
        sum += e;
        if e > 0.0 {
            el += e * d;
        }
    }
    let log_z = max + sum.ln();
    let entropy = sum.ln() - el / sum;
    let top = top_k_indices(logits, k)
        .into_iter()
        .map(|i| (i as u32, (logits[i] as f64 - log_z) as f32))
        .collect();
    TokenStats {
        logprob: (logits[chosen as usize] as f64 - log_z) as f32,
        entropy: entropy as f32,
        top,
    }
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
pub fn top_k_indices(values: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(values.len());
    if k == 0 {
        return Vec::new();
    }
    // One integer key per value: descending `total_cmp` order in the high half, the index in
    // the low half, so the keys are distinct and an unstable sort gives the one ordering
    // (largest first, ties by lower index) — a sampling step sorts the whole vocabulary.
    let mut keys: Vec<u64> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let b = v.to_bits() as i32;
            // f32::total_cmp's key: flip the magnitude bits of negatives.
            let ord = (b ^ ((((b >> 31) as u32) >> 1) as i32)) as u32 ^ 0x8000_0000;
            ((!ord as u64) << 32) | i as u64
        })
        .collect();
    if k < keys.len() {
        keys.select_nth_unstable(k - 1);
        keys.truncate(k);
    }
    keys.sort_unstable();
    keys.into_iter()
        .map(|key| (key & 0xffff_ffff) as usize)
        .collect()
}

/// The seed of row `row` of a batch drawn with `seed`; row 0 uses `seed` itself, so a batch of
/// one is the same as a single generation.
pub fn row_seed(seed: u64, row: usize) -> u64 {
    seed.wrapping_add((row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// A sampler for the `row`-th of several completions drawn together: each row gets its own
    /// stream so rows differ, and the whole batch is still reproducible from one seed.
    pub fn for_row(params: SamplingParams, row: usize) -> Self {
        Self {
            rng: StdRng::seed_from_u64(row_seed(params.seed, row)),
            params,
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token among the first `allowed` ids (ids past the tokenizer's vocabulary are
    /// padding rows of the embedding and never sampled). `history` feeds the repetition penalty.
    pub fn sample(&mut self, logits: &[f32], allowed: usize, history: &[u32]) -> u32 {
        let allowed = allowed.min(logits.len()).max(1);
        let mut l: Vec<f32> = logits[..allowed].to_vec();
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = vec![false; allowed];
            for &id in history {
                if (id as usize) < allowed && !seen[id as usize] {
                    seen[id as usize] = true;
                    let v = &mut l[id as usize];
                    *v = if *v > 0.0 {
                        *v / p.repetition_penalty
                    } else {
                        *v * p.repetition_penalty
                    };
                }
            }
        }
        if p.temperature <= 0.0 {
            return top_k_indices(&l, 1)[0] as u32;
        }
        // Candidates sorted by logit, best first; filters only ever cut the tail.
        let mut cand: Vec<usize> = if p.top_k > 0 {
            top_k_indices(&l, p.top_k)
        } else {
            top_k_indices(&l, allowed)
        };
        let inv_t = 1.0 / p.temperature as f64;
        let max = l[cand[0]] as f64;
        let mut probs: Vec<f64> = cand
            .iter()
            .map(|&i| ((l[i] as f64 - max) * inv_t).exp())
            .collect();
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= z);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (n, &q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p as f64 {
                    keep = n + 1;
                    break;
                }
            }
            cand.truncate(keep);
            probs.truncate(keep);
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            let keep = probs.iter().take_while(|&&q| q >= floor).count().max(1);
            cand.truncate(keep);
            probs.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut u = self.rng.random::<f64>() * total;
        for (n, &q) in probs.iter().enumerate() {
            if u < q {
                return cand[n] as u32;
            }
            u -= q;
        }
        cand[cand.len() - 1] as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_match_hand_computed_softmax() {
        // logits ln(1), ln(2), ln(5): probabilities 1/8, 2/8, 5/8
        let l = [0.0f32, 2f32.ln(), 5f32.ln()];
        let s = token_stats(&l, 1, 2);
        assert!((s.logprob - (0.25f32).ln()).abs() < 1e-6);
        let h = -(0.125f64 * 0.125f64.ln() + 0.25 * 0.25f64.ln() + 0.625 * 0.625f64.ln());
        assert!((s.entropy as f64 - h).abs() < 1e-6);
        assert_eq!(s.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2, 1]);
        assert!((s.top[0].1 - 0.625f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn top_k_indices_orders_like_a_stable_sort() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut v: Vec<f32> = (0..1000)
            .map(|_| (rng.random::<f32>() * 20.0 - 10.0).round() / 4.0)
            .collect();
        v.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            f32::MAX,
            -f32::MAX,
        ]);
        let mut want: Vec<usize> = (0..v.len()).collect();
        want.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
        for k in [1, 5, 64, v.len()] {
            assert_eq!(top_k_indices(&v, k), want[..k].to_vec(), "k = {k}");
        }
    }

    #[test]
    fn greedy_picks_argmax_and_respects_allowed() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 0.2, 9.0], 4, &[]), 3);
        assert_eq!(
            s.sample(&[0.1, 3.0, 0.2, 9.0], 3, &[]),
            1,
            "id 3 is past the tokenizer vocabulary"
        );
    }

    #[test]
    fn repetition_penalty_follows_transformers_rule() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        });
        // 3.0 -> 1.5 (seen, positive, divided) loses to 2.0
        assert_eq!(s.sample(&[3.0, 2.0], 2, &[0]), 1);
        // -1.0 -> -2.0 (seen, negative, multiplied) loses to -1.5
        assert_eq!(s.sample(&[-1.0, -1.5], 2, &[0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_filters_cut_the_tail() {
        let l: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 7,
        };
        let run = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..200).map(|_| s.sample(&l, 50, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(&p), run(&p));
        let best3 = top_k_indices(&l, 3);
        assert!(run(&SamplingParams {
            top_k: 3,
            ..p.clone()
        })
        .iter()
        .all(|t| best3.contains(&(*t as usize))));
        let best = top_k_indices(&l, 1)[0] as u32;
        assert!(run(&SamplingParams {
            top_p: 1e-6,
            ..p.clone()
        })
        .iter()
        .all(|&t| t == best));
        assert!(run(&SamplingParams {
            min_p: 0.999,
            ..p.clone()
        })
        .iter()
        .all(|&t| t == best));
        // unfiltered sampling at T=1 visits more than the top 3
        assert!(run(&p).iter().any(|t| !best3.contains(&(*t as usize))));
    }

    #[test]
    fn sampling_frequencies_follow_the_distribution() {
        let l = [0.0f32, 2f32.ln(), 5f32.ln()];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            seed: 1,
            ..SamplingParams::default()
        });
        let n = 20000;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[s.sample(&l, 3, &[]) as usize] += 1;
        }
        for (c, p) in counts.iter().zip([0.125, 0.25, 0.625]) {
            assert!((*c as f64 / n as f64 - p).abs() < 0.015, "{counts:?}");
        }
    }
}
