//! The GRPO objective on tensors: per-token clipped surrogate, the k3 KL estimate, and the three
//! ways of turning per-token losses into one number.
//!
//! Per completion token t of completion i (TRL's `_compute_loss`):
//!
//! ```text
//! ratio  = exp(logp − old_logp)
//! loss_t = −min(ratio·A_i, clip(ratio, 1 − ε_low, 1 + ε_high)·A_i)  +  β·k3
//! k3     = exp(ref_logp − logp) − (ref_logp − logp) − 1               (≥ 0, unbiased for KL(π‖π_ref))
//! ```
//!
//! Aggregation over the batch (m = completion mask, which includes the end-of-sentence token):
//!
//! - `grpo`:    mean over sequences of (Σ_t loss·m / Σ_t m)            — DeepSeekMath
//! - `dapo`:    Σ loss·m / Σ m over the whole batch                     — DAPO, TRL's default
//! - `dr_grpo`: Σ loss·m / (sequences · max_new_tokens)                 — Dr. GRPO
//!
//! A batch is processed in micro-batches; [`aggregate`] returns one micro-batch's share of the
//! batch loss (the denominators are the whole batch's), so the shares' gradients add up to the
//! gradient of the batch loss.
//!
//! With one update per batch of rollouts (μ = 1), `old_logp` is `logp` itself, so ratio ≡ 1, nothing
//! is clipped and the gradient is plain REINFORCE with the group advantage: −A·∇logp / normaliser.

use tch::{Kind, Tensor};

use super::recipe::LossAggregation;

/// What the objective needs besides the tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    pub epsilon_low: f64,
    pub epsilon_high: f64,
    pub beta: f64,
}

/// The denominators of the whole batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normaliser {
    pub aggregation: LossAggregation,
    /// Sequences in the batch.
    pub sequences: usize,
    /// Completion tokens (mask ones) in the batch.
    pub tokens: usize,
    /// max_new_tokens (Dr. GRPO's constant).
    pub max_len: usize,
}

/// The k3 estimate of KL(π‖π_ref) per token: `exp(ref − logp) − (ref − logp) − 1`.
pub fn k3(logp: &Tensor, ref_logp: &Tensor) -> Tensor {
    let d = ref_logp - logp;
    d.exp() - &d - 1.0
}

/// Per-token pieces of the objective.
pub struct TokenLoss {
    /// `[B,T]` loss per token (before masking).
    pub loss: Tensor,
    /// `[B,T]` π/π_old.
    pub ratio: Tensor,
    /// `[B,T]` k3 per token (when β > 0 and a reference is given).
    pub kl: Option<Tensor>,
}

/// Per-token clipped surrogate (+ β·k3). `logp`, `old_logp`, `ref_logp`: `[B,T]`;
/// `advantages`: `[B]`.
pub fn token_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    ref_logp: Option<&Tensor>,
    advantages: &Tensor,
    cfg: &LossConfig,
) -> TokenLoss {
    let ratio = (logp - old_logp).exp();
    let clipped = ratio.clamp(1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high);
    let a = advantages.unsqueeze(1);
    let surrogate = (&ratio * &a).minimum(&(clipped * &a));
    let mut loss = -surrogate;
    let kl = match ref_logp {
        Some(r) if cfg.beta != 0.0 => {
            let kl = k3(logp, r);
            loss += &kl * cfg.beta;
            Some(kl)
        }
        _ => None,
    };
    TokenLoss { loss, ratio, kl }
}

/// This micro-batch's share of the batch loss: `per_token` and `mask` are `[b,T]` (mask as
/// float 0/1).
pub fn aggregate(per_token: &Tensor, mask: &Tensor, n: &Normaliser) -> Tensor {
    (per_token * token_weights(mask, n)).sum(Kind::Float)
}

/// Each token's weight in the batch loss, `[b,T]`: every aggregation is a weighted sum of the
/// per-token losses, so the loss can be taken a slice of positions at a time. `grpo` averages
/// each sequence over its own tokens, then over the sequences; `dapo` averages over all the
/// batch's tokens; `dr_grpo` divides by the constant sequences × max_new_tokens.
pub fn token_weights(mask: &Tensor, n: &Normaliser) -> Tensor {
    match n.aggregation {
        LossAggregation::Grpo => {
            let lengths = mask.sum_dim_intlist(1, true, Kind::Float).clamp_min(1.0);
            mask / lengths / n.sequences.max(1) as f64
        }
        LossAggregation::Dapo => mask / n.tokens.max(1) as f64,
        LossAggregation::DrGrpo => mask / (n.sequences.max(1) * n.max_len.max(1)) as f64,
    }
}

/// Tokens clipped on each side, as TRL counts them: the low side where ratio < 1 − ε_low and
/// A < 0, the high side where ratio > 1 + ε_high and A > 0 (masked tokens only).
pub fn clipped_tokens(
    ratio: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    cfg: &LossConfig,
) -> (f64, f64) {
    let a = advantages.unsqueeze(1);
    let low = ratio.lt(1.0 - cfg.epsilon_low).logical_and(&a.lt(0.0));
    let high = ratio.gt(1.0 + cfg.epsilon_high).logical_and(&a.gt(0.0));
    let count = |t: Tensor| {
        (t.to_kind(Kind::Float) * mask)
            .sum(Kind::Double)
            .double_value(&[])
    };
    (count(low), count(high))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).view(shape)
    }

    fn cfg(lo: f64, hi: f64, beta: f64) -> LossConfig {
        LossConfig {
            epsilon_low: lo,
            epsilon_high: hi,
            beta,
        }
    }

    /// The loss of one token with the given ratio and advantage.
    fn one(ratio: f64, adv: f32, c: &LossConfig) -> f64 {
        let logp = t(&[ratio.ln() as f32], &[1, 1]);
        let old = t(&[0.0], &[1, 1]);
        token_loss(&logp, &old, None, &t(&[adv], &[1]), c)
            .loss
            .double_value(&[0, 0])
    }

    #[test]
    fn clipping_matches_the_hand_computed_examples() {
        let sym = cfg(0.2, 0.2, 0.0);
        // A = +1, ratio 1.5: min(1.5, 1.2) = 1.2, loss -1.2.
        assert!((one(1.5, 1.0, &sym) - -1.2).abs() < 1e-6);
        // Clip-higher ε_high = 0.28: -1.28.
        assert!((one(1.5, 1.0, &cfg(0.2, 0.28, 0.0)) - -1.28).abs() < 1e-6);
        // A = -1, ratio 0.5: min(-0.5, -0.8) = -0.8, loss 0.8.
        assert!((one(0.5, -1.0, &sym) - 0.8).abs() < 1e-6);
        // A = -1, ratio 1.5: min(-1.5, -1.2) = -1.5 (unclipped), loss 1.5.
        assert!((one(1.5, -1.0, &sym) - 1.5).abs() < 1e-6);
        // Inside the band nothing is clipped: ratio 1.1, A = 2 → -2.2.
        assert!((one(1.1, 2.0, &sym) - -2.2).abs() < 1e-5);
    }

    #[test]
    fn k3_matches_the_hand_computed_example() {
        // logp = -1.0, ref = -1.2: e^{-0.2} + 0.2 - 1 = 0.0187308.
        let kl = k3(&t(&[-1.0], &[1]), &t(&[-1.2], &[1])).double_value(&[0]);
        assert!((kl - 0.0187308).abs() < 1e-7, "{kl}");
        // Equal policies: 0.
        assert_eq!(
            k3(&t(&[-0.3], &[1]), &t(&[-0.3], &[1])).double_value(&[0]),
            0.0
        );
        // β·k3 is added to the token loss: ratio 1, A = 0 → loss = β·k3.
        let l = token_loss(
            &t(&[-1.0], &[1, 1]),
            &t(&[-1.0], &[1, 1]),
            Some(&t(&[-1.2], &[1, 1])),
            &t(&[0.0], &[1]),
            &cfg(0.2, 0.2, 0.04),
        );
        assert!((l.loss.double_value(&[0, 0]) - 0.04 * 0.0187308).abs() < 1e-8);
    }

    #[test]
    fn aggregations_by_hand() {
        // Two sequences: losses [1, 2] and [3, (pad 100)], mask [[1,1],[1,0]].
        let per = t(&[1.0, 2.0, 3.0, 100.0], &[2, 2]);
        let mask = t(&[1.0, 1.0, 1.0, 0.0], &[2, 2]);
        let n = |aggregation| Normaliser {
            aggregation,
            sequences: 2,
            tokens: 3,
            max_len: 4,
        };
        let v = |a| aggregate(&per, &mask, &n(a)).double_value(&[]);
        // grpo: mean(1.5, 3) = 2.25; dapo: 6/3 = 2; dr_grpo: 6/(2·4) = 0.75.
        assert!((v(LossAggregation::Grpo) - 2.25).abs() < 1e-6);
        assert!((v(LossAggregation::Dapo) - 2.0).abs() < 1e-6);
        assert!((v(LossAggregation::DrGrpo) - 0.75).abs() < 1e-6);
        // Micro-batch shares add up to the batch loss.
        let first = aggregate(
            &per.narrow(0, 0, 1),
            &mask.narrow(0, 0, 1),
            &n(LossAggregation::Grpo),
        );
        let second = aggregate(
            &per.narrow(0, 1, 1),
            &mask.narrow(0, 1, 1),
            &n(LossAggregation::Grpo),
        );
        assert!(((first + second).double_value(&[]) - 2.25).abs() < 1e-6);
    }

    #[test]
    fn with_ratio_one_the_gradient_is_reinforce() {
        // μ = 1: old = logp.detach(). d loss / d logp_t = -A_i · m_t / tokens (dapo).
        let logp = t(&[-0.5, -1.0, -2.0, -0.1], &[2, 2]).set_requires_grad(true);
        let old = logp.detach();
        let adv = t(&[0.8658754, -0.8658754], &[2]);
        let mask = t(&[1.0, 1.0, 1.0, 0.0], &[2, 2]);
        let c = cfg(0.2, 0.28, 0.0);
        let tl = token_loss(&logp, &old, None, &adv, &c);
        let n = Normaliser {
            aggregation: LossAggregation::Dapo,
            sequences: 2,
            tokens: 3,
            max_len: 4,
        };
        let loss = aggregate(&tl.loss, &mask, &n);
        // The value: -Σ A·m / 3 = -(2·0.8658754 - 0.8658754)/3.
        assert!((loss.double_value(&[]) - -(0.8658754 / 3.0)).abs() < 1e-6);
        loss.backward();
        let g: Vec<f32> = Vec::try_from(logp.grad().view([-1])).unwrap();
        let a = 0.8658754f32 / 3.0;
        let want = [-a, -a, a, 0.0];
        for (x, y) in g.iter().zip(want) {
            assert!((x - y).abs() < 1e-6, "{g:?}");
        }
        let (lo, hi) = clipped_tokens(&tl.ratio, &adv, &mask, &c);
        assert_eq!((lo, hi), (0.0, 0.0));
    }

    #[test]
    fn clip_counts_follow_trl() {
        // ratios 0.5 (A<0: low), 1.5 (A>0: high), 1.5 (A<0: neither), 0.5 (A>0: neither).
        let ratio = t(&[0.5, 1.5, 1.5, 0.5], &[4, 1]);
        let adv = t(&[-1.0, 1.0, -1.0, 1.0], &[4]);
        let mask = t(&[1.0; 4], &[4, 1]);
        assert_eq!(
            clipped_tokens(&ratio, &adv, &mask, &cfg(0.2, 0.28, 0.0)),
            (1.0, 1.0)
        );
        let mask = t(&[0.0, 1.0, 1.0, 1.0], &[4, 1]);
        assert_eq!(
            clipped_tokens(&ratio, &adv, &mask, &cfg(0.2, 0.28, 0.0)),
            (0.0, 1.0)
        );
    }
}
