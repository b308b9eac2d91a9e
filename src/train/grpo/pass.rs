//! The update's passes over the rollouts: completions grouped by prompt into micro-batches, each
//! prompt run once with its cache repeated for its completions, the head and the loss a slice of
//! positions at a time, the reference policy's log-probs, and the pass with gradients.

use tch::{Device, Kind, Tensor};

use super::replay::{Mismatch, RolloutRouting, UpdateProbe};
use crate::model::{Model, Probe};
use crate::trace::LayerRouting;
use crate::train::balance::LoadCounter;
use crate::train::head::{backward_into_layers, head_chunks, positions};
use crate::train::loss::{clipped_tokens, token_loss, token_weights, LossConfig, Normaliser};

/// One sequence of the update: prompt then completion.
pub(super) struct Row {
    pub(super) ids: Vec<i64>,
    pub(super) prompt_len: usize,
    pub(super) completion_len: usize,
    pub(super) advantage: f64,
    /// Counted in the loss (false: a truncated completion under `mask_truncated`).
    pub(super) in_loss: bool,
    /// The rollout's experts per prompt token and per completion token (empty: dense model).
    pub(super) prompt_routing: Vec<Vec<LayerRouting>>,
    pub(super) routing: Vec<Vec<LayerRouting>>,
}

/// An MoE policy's use of the rollout's routing in the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RoutingUse {
    /// Experts per token.
    pub(super) k: usize,
    /// Replay the rollout's experts (else only compare).
    pub(super) replay: bool,
}

/// Completions of one prompt, right-padded, and what the update keeps for them across
/// iterations. The prompt is stored once: it runs once per pass and its cache is repeated for
/// the rows (see [`completion_hidden`]).
pub(super) struct MicroBatch {
    /// `[1,P]` the prompt every row continues.
    pub(super) prompt: Tensor,
    /// `[b,T]` completion token t (padding past the end); also the input that follows the prompt.
    pub(super) target: Tensor,
    /// `[b,T]` 1 for completion tokens (end-of-sentence included) that count in the loss.
    pub(super) mask: Tensor,
    /// `[b]`
    pub(super) adv: Tensor,
    /// One flag per `[b·T]` completion position: a real token (for expert-load counts).
    pub(super) real: Vec<bool>,
    /// The rollout policy's log-probs (iteration 0's, detached).
    pub(super) old: Option<Tensor>,
    /// The reference policy's log-probs (β > 0).
    pub(super) reference: Option<Tensor>,
    /// What the rollout routed (MoE policies), to compare with and, with `replay`, to reuse.
    pub(super) rollout: Option<RolloutRouting>,
    pub(super) replay: bool,
}

/// The rows as micro-batches of at most `size` completions of the same prompt (a group, or part
/// of one), longest first within each prompt so padding stays small.
pub(super) fn make_micro_batches(
    rows: &[Row],
    size: usize,
    pad: u32,
    device: Device,
    routing: Option<RoutingUse>,
) -> Vec<MicroBatch> {
    let mut by_prompt: Vec<(&[i64], Vec<&Row>)> = Vec::new();
    for r in rows {
        let prompt = &r.ids[..r.prompt_len];
        match by_prompt.iter_mut().find(|(p, _)| *p == prompt) {
            Some((_, members)) => members.push(r),
            None => by_prompt.push((prompt, vec![r])),
        }
    }
    let mut out = Vec::new();
    for (prompt, mut members) in by_prompt {
        members.sort_by_key(|r| std::cmp::Reverse(r.completion_len));
        for chunk in members.chunks(size.max(1)) {
            let b = chunk.len();
            let t = chunk
                .iter()
                .map(|r| r.completion_len)
                .max()
                .unwrap_or(1)
                .max(1);
            let mut real = vec![false; b * t];
            let mut target = vec![pad as i64; b * t];
            let mut mask = vec![0f32; b * t];
            let mut adv = vec![0f32; b];
            for (i, r) in chunk.iter().enumerate() {
                let n = r.completion_len;
                target[i * t..i * t + n].copy_from_slice(&r.ids[r.prompt_len..]);
                real[i * t..i * t + n].iter_mut().for_each(|x| *x = true);
                mask[i * t..i * t + n]
                    .iter_mut()
                    .for_each(|x| *x = f32::from(u8::from(r.in_loss)));
                adv[i] = r.advantage as f32;
            }
            let bt = [b as i64, t as i64];
            let rollout = routing.map(|u| {
                let completions: Vec<&[Vec<LayerRouting>]> =
                    chunk.iter().map(|r| r.routing.as_slice()).collect();
                RolloutRouting::of_rows(&chunk[0].prompt_routing, &completions, t, u.k)
            });
            out.push(MicroBatch {
                prompt: Tensor::from_slice(prompt)
                    .view([1, prompt.len() as i64])
                    .to_device(device),
                target: Tensor::from_slice(&target).view(bt).to_device(device),
                mask: Tensor::from_slice(&mask).view(bt).to_device(device),
                adv: Tensor::from_slice(&adv).to_device(device),
                real,
                old: None,
                reference: None,
                rollout,
                replay: routing.is_some_and(|u| u.replay),
            });
        }
    }
    out
}

/// What a pass records about its routing, all optional.
#[derive(Default)]
pub(super) struct Watch<'a> {
    /// Expert loads, counted as if every row had run its own prompt.
    pub(super) counter: Option<&'a mut LoadCounter>,
    /// The completion tokens' expert sets against the rollout's.
    pub(super) mismatch: Option<&'a mut Mismatch>,
    /// Told the completion tokens' experts as used (tests).
    pub(super) used: Option<&'a mut dyn Probe>,
}

/// The last hidden states (before the final norm) that predict each completion token,
/// `[b,T,hidden]`: the prompt's last position for token 0, completion token t − 1's for token t.
/// The prompt runs once (batch 1) and its cache is repeated for the b rows, so the shared
/// positions are computed, and backpropagated, once instead of b times. The micro-batch says
/// whether the rollout's experts are replayed.
pub(super) fn completion_hidden<'a>(model: &Model, mb: &'a MicroBatch, watch: Watch<'a>) -> Tensor {
    let (b, t) = mb.target.size2().expect("targets are [b,T]");
    let p = mb.prompt.size()[1];
    let mut cache = model.new_cache();
    let mut counter = watch.counter;
    if let Some(c) = counter.as_deref_mut() {
        c.real.clear();
        c.repeat = b as u64;
    }
    let rollout = mb.rollout.as_ref();
    let mut prompt_probe = UpdateProbe {
        counter: counter.as_deref_mut(),
        observer: None,
        rollout: rollout.map(|r| &r.prompt),
        replay: mb.replay,
        counted: None,
        mismatch: None,
    };
    let prompt = model.hidden(&mb.prompt, &mut cache, &mut prompt_probe);
    cache.repeat_batch(b);
    if let Some(c) = counter.as_deref_mut() {
        c.real = mb.real.clone();
        c.repeat = 1;
    }
    let mut completion_probe = UpdateProbe {
        counter,
        observer: watch.used,
        rollout: rollout.map(|r| &r.completion),
        replay: mb.replay,
        counted: Some(&mb.real),
        mismatch: watch.mismatch,
    };
    let completion = model.hidden(&mb.target, &mut cache, &mut completion_probe);
    let width = prompt.size()[2];
    let last = prompt.narrow(1, p - 1, 1).expand([b, 1, width], false);
    Tensor::cat(&[last, completion.narrow(1, 0, t - 1)], 1)
}

/// Per-token log-probabilities of completion tokens `start..start+len` under `model` (logits
/// divided by `temperature`), `[b,len]`, and the log-softmax rows `[b,len,V]` they were read
/// from. `h` is the micro-batch's [`completion_hidden`].
pub(super) fn slice_logprobs(
    model: &Model,
    h: &Tensor,
    mb: &MicroBatch,
    (start, len): (i64, i64),
    temperature: f64,
) -> (Tensor, Tensor) {
    let logits = model.logits(&positions(h, (start, len)));
    let rows = logits.to_kind(Kind::Float);
    // Dividing by 1 would still be a pass over the logits, forward and backward.
    let rows = if temperature == 1.0 {
        rows
    } else {
        rows / temperature
    };
    let lsm = rows.log_softmax(-1, Kind::Float);
    let target = mb.target.narrow(1, start, len);
    let logp = lsm.gather(2, &target.unsqueeze(-1), false).squeeze_dim(-1);
    (logp, lsm)
}

/// Per-token log-probabilities of all the completion tokens, `[b,T]` (no gradient).
pub(super) fn completion_logprobs(
    model: &Model,
    mb: &MicroBatch,
    temperature: f64,
    budget: i64,
) -> Tensor {
    let _g = tch::no_grad_guard();
    let h = completion_hidden(model, mb, Watch::default());
    let (b, t) = mb.target.size2().expect("targets are [b,T]");
    let parts: Vec<Tensor> = head_chunks(b, t, model.vocab_size() as i64, budget)
        .into_iter()
        .map(|c| slice_logprobs(model, &h, mb, c, temperature).0)
        .collect();
    Tensor::cat(&parts, 1)
}

/// Sums over one pass of the micro-batches.
#[derive(Debug, Clone, Default)]
pub(super) struct PassStats {
    pub(super) loss: f64,
    pub(super) entropy_sum: f64,
    pub(super) kl_sum: f64,
    pub(super) clip_low: f64,
    pub(super) clip_high: f64,
}

/// The reference policy's log-probs of each micro-batch's completion tokens.
pub(super) fn reference_pass(
    reference: &Model,
    mbs: &mut [MicroBatch],
    temperature: f64,
    budget: i64,
) {
    for mb in mbs {
        mb.reference = Some(completion_logprobs(reference, mb, temperature, budget));
    }
}

/// What a pass over the micro-batches optimises, and how.
#[derive(Debug, Clone, Copy)]
pub(super) struct Objective {
    pub(super) norm: Normaliser,
    pub(super) loss: LossConfig,
    /// The sampling temperature the logits are divided by.
    pub(super) temperature: f64,
    /// Most logits the head computes at once ([`crate::train::head::HEAD_CHUNK_ELEMENTS`]).
    pub(super) head_budget: i64,
}

/// One pass over micro-batches on `model`: forward with gradients, loss, backward (gradients add
/// up in the parameters' `.grad`). Iteration 0 records the rollout policy's log-probs, the
/// entropy, the KL and the expert load; every iteration adds its routing mismatch. The head and the loss run a slice of positions at a
/// time: each slice's loss is backpropagated at once into a detached copy of the hidden states,
/// and the layers' backward then runs once from the summed gradient.
pub(super) fn accumulate(
    model: &Model,
    mbs: &mut [MicroBatch],
    obj: &Objective,
    it: usize,
    counter: &mut LoadCounter,
    mismatch: &mut Mismatch,
) -> PassStats {
    let (cfg, temperature, budget) = (&obj.loss, obj.temperature, obj.head_budget);
    let mut p = PassStats::default();
    for mb in mbs.iter_mut() {
        let watch = Watch {
            counter: (it == 0).then_some(&mut *counter),
            mismatch: Some(&mut *mismatch),
            used: None,
        };
        let hidden = completion_hidden(model, mb, watch);
        let detached = hidden.detach().set_requires_grad(true);
        let weights = token_weights(&mb.mask, &obj.norm);
        let (b, t) = mb.target.size2().expect("targets are [b,T]");
        let mut olds = Vec::new();
        for (start, len) in head_chunks(b, t, model.vocab_size() as i64, budget) {
            let (logp, lsm) = slice_logprobs(model, &detached, mb, (start, len), temperature);
            let mask = mb.mask.narrow(1, start, len);
            let old = match &mb.old {
                Some(o) if it > 0 => o.narrow(1, start, len),
                _ => {
                    let _g = tch::no_grad_guard();
                    let ent = -(lsm.exp() * &lsm).sum_dim_intlist(-1, false, Kind::Float);
                    p.entropy_sum += (ent * &mask).sum(Kind::Double).double_value(&[]);
                    let old = logp.detach();
                    olds.push(old.shallow_clone());
                    old
                }
            };
            let reference = mb.reference.as_ref().map(|r| r.narrow(1, start, len));
            let tl = token_loss(&logp, &old, reference.as_ref(), &mb.adv, cfg);
            let share = (&tl.loss * weights.narrow(1, start, len)).sum(Kind::Float);
            share.backward();
            p.loss += share.double_value(&[]);
            let _g = tch::no_grad_guard();
            if let Some(kl) = &tl.kl {
                p.kl_sum += (kl * &mask).sum(Kind::Double).double_value(&[]);
            }
            let (lo, hi) = clipped_tokens(&tl.ratio, &mb.adv, &mask, cfg);
            p.clip_low += lo;
            p.clip_high += hi;
        }
        if !olds.is_empty() {
            mb.old = Some(Tensor::cat(&olds, 1));
        }
        backward_into_layers(&hidden, &detached);
    }
    p
}

impl PassStats {
    pub(super) fn add(&mut self, o: &PassStats) {
        self.loss += o.loss;
        self.entropy_sum += o.entropy_sum;
        self.kl_sum += o.kl_sum;
        self.clip_low += o.clip_low;
        self.clip_high += o.clip_high;
    }
}
