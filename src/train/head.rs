//! The LM head a slice of positions at a time, for the trainers (GRPO and SFT).
//!
//! The logits are a training step's largest tensor: with a 152k-entry vocabulary one micro-batch
//! of 8 × 1024 tokens holds 5 GB of them, and the log-softmax, its gradient and the entropy as
//! much again each. The trainers therefore run the layers once, detach their output, compute the
//! head and the loss a slice of positions at a time — each slice's loss backpropagated at once
//! into the detached copy — and finally run the layers' backward once from the summed gradient.
//! Only one slice's logits are alive at a time, and since every loss here is a weighted sum over
//! positions, the result is the same as computing it whole.

use tch::{Kind, Tensor};

/// The head runs on at most this many logits at a time (positions × vocabulary, 128 MB in f32).
pub(crate) const HEAD_CHUNK_ELEMENTS: i64 = 1 << 25;

/// Positions `0..t` of a `[b,t]` batch as slices `(start, len)` of at most `budget` logits each.
pub(crate) fn head_chunks(b: i64, t: i64, vocab: i64, budget: i64) -> Vec<(i64, i64)> {
    let per = (budget / (b * vocab).max(1)).max(1);
    (0..t)
        .step_by(per as usize)
        .map(|s| (s, per.min(t - s)))
        .collect()
}

/// Positions `start..start+len` of `h [b,t,…]`. The whole tensor itself when the slice is all of
/// it: a narrow's backward would allocate and zero a gradient of `h`'s size only to copy into all
/// of it.
pub(crate) fn positions(h: &Tensor, (start, len): (i64, i64)) -> Tensor {
    if start == 0 && len == h.size()[1] {
        h.shallow_clone()
    } else {
        h.narrow(1, start, len)
    }
}

/// The layers' backward: `hidden` is the layers' output, `detached` its detached copy into which
/// the slices' losses were backpropagated. d(Σ hidden·g)/d(hidden) = g.
pub(crate) fn backward_into_layers(hidden: &Tensor, detached: &Tensor) {
    let grad = detached.grad();
    if grad.defined() && hidden.requires_grad() {
        (hidden * grad.to_kind(hidden.kind()))
            .sum(Kind::Float)
            .backward();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_every_position_once_within_the_budget() {
        for (b, t, vocab, budget) in [(8, 64, 1024, 1 << 25), (8, 100, 1000, 24_000), (3, 7, 5, 1)]
        {
            let chunks = head_chunks(b, t, vocab, budget);
            let mut next = 0;
            for &(start, len) in &chunks {
                assert_eq!(start, next);
                assert!(len >= 1);
                assert!(b * len * vocab <= budget.max(b * vocab));
                next = start + len;
            }
            assert_eq!(next, t);
        }
        assert_eq!(head_chunks(8, 100, 1000, 24_000).len(), 34);
    }
}
