//! Routing replay and router drift for MoE policies.
//!
//! A rollout is sampled with one set of router decisions; the update re-scores the same tokens
//! with the current weights, in a different batch shape (and after μ > 1 iterations, with moved
//! weights), so some tokens go through other experts than the ones that produced them. The
//! share of completion tokens whose expert *set* differs is `router/mismatch`, per layer and
//! pooled. With `grpo.routing_replay = "rollout"` (R3, arXiv 2510.11370) the update and reference
//! passes use the rollout's experts instead (the model's probe hook
//! [`crate::model::Probe::replace_experts`]); the mixing weights stay the current router's
//! scores for those experts, so the router is still trained. The mismatch is measured either
//! way: with replay on it says how far the router has drifted from the choices being replayed.

use std::collections::BTreeMap;

use crate::model::Probe;
use crate::trace::LayerRouting;
use crate::train::balance::LoadCounter;

/// Per MoE layer, `tokens × k` expert ids in token order; -1 where a token has no recorded
/// routing (padding, or a token the rollout did not feed).
pub(crate) type LayerExperts = BTreeMap<usize, Vec<i64>>;

/// One token list's routing (per token, per layer) as [`LayerExperts`].
pub(crate) fn layer_experts(tokens: &[Vec<LayerRouting>], k: usize) -> LayerExperts {
    let mut out = LayerExperts::new();
    for (t, routing) in tokens.iter().enumerate() {
        for r in routing {
            let row = out
                .entry(r.layer)
                .or_insert_with(|| vec![-1; tokens.len() * k]);
            for (j, &e) in r.experts.iter().take(k).enumerate() {
                row[t * k + j] = i64::from(e);
            }
        }
    }
    out
}

/// What the rollout routed, for one micro-batch: the shared prompt (`[1,P]`) and the
/// completions (`[b,T]`, right-padded), as the update's two forward calls see them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RolloutRouting {
    pub prompt: LayerExperts,
    pub completion: LayerExperts,
}

impl RolloutRouting {
    /// The micro-batch's routing from its rows' (the prompt's from the first row: the rows of a
    /// micro-batch share one prompt and its prefill). `t` is the padded completion length.
    pub(crate) fn of_rows(
        prompt: &[Vec<LayerRouting>],
        completions: &[&[Vec<LayerRouting>]],
        t: usize,
        k: usize,
    ) -> Self {
        let mut completion = LayerExperts::new();
        for (i, tokens) in completions.iter().enumerate() {
            for (layer, ids) in layer_experts(tokens, k) {
                let row = completion
                    .entry(layer)
                    .or_insert_with(|| vec![-1; completions.len() * t * k]);
                row[i * t * k..i * t * k + ids.len()].copy_from_slice(&ids);
            }
        }
        Self {
            prompt: layer_experts(prompt, k),
            completion,
        }
    }
}

/// Per layer: (completion tokens whose expert set differed from the rollout's, tokens compared).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Mismatch {
    pub by_layer: BTreeMap<usize, (u64, u64)>,
}

impl Mismatch {
    pub(crate) fn add(&mut self, other: &Mismatch) {
        for (&layer, &(d, n)) in &other.by_layer {
            let e = self.by_layer.entry(layer).or_default();
            e.0 += d;
            e.1 += n;
        }
    }

    /// The share of compared tokens that differed, per layer.
    pub(crate) fn shares(&self) -> BTreeMap<usize, f64> {
        self.by_layer
            .iter()
            .filter(|(_, &(_, n))| n > 0)
            .map(|(&l, &(d, n))| (l, d as f64 / n as f64))
            .collect()
    }

    /// The share over all layers' compared tokens.
    pub(crate) fn pooled(&self) -> Option<f64> {
        let (d, n) = self
            .by_layer
            .values()
            .fold((0, 0), |(a, b), &(d, n)| (a + d, b + n));
        (n > 0).then(|| d as f64 / n as f64)
    }
}

/// Whether two slots of k experts hold the same set (order aside: the mixing is a weighted sum).
fn same_set(a: &[i64], b: &[i64]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

/// The probe of one forward call of the update: counts expert loads (optional), compares the
/// router's choices with the rollout's on the counted positions, and replays the rollout's.
pub(crate) struct UpdateProbe<'a> {
    pub counter: Option<&'a mut LoadCounter>,
    /// Also told the experts used (tests).
    pub observer: Option<&'a mut dyn Probe>,
    /// The rollout's experts for this call's tokens (none: nothing to compare or replay).
    pub rollout: Option<&'a LayerExperts>,
    /// Use the rollout's experts where it has them.
    pub replay: bool,
    /// Compare where `counted[token]` (completion tokens; none: compare nothing).
    pub counted: Option<&'a [bool]>,
    pub mismatch: Option<&'a mut Mismatch>,
}

impl Probe for UpdateProbe<'_> {
    fn wants_routing(&self) -> bool {
        self.counter.as_ref().is_some_and(|c| c.wants_routing())
            || self.observer.as_ref().is_some_and(|o| o.wants_routing())
    }

    fn routing(&mut self, layer: usize, tokens: usize, k: usize, experts: &[i64], weights: &[f32]) {
        if let Some(c) = self.counter.as_deref_mut() {
            c.routing(layer, tokens, k, experts, weights);
        }
        if let Some(o) = self.observer.as_deref_mut() {
            o.routing(layer, tokens, k, experts, weights);
        }
    }

    fn replace_experts(&mut self, layer: usize, k: usize, chosen: &[i64]) -> Option<Vec<i64>> {
        let rollout = self.rollout?.get(&layer)?;
        if rollout.len() != chosen.len() {
            // Not this call's tokens (a mis-built micro-batch): compare and replay nothing
            // rather than pair the wrong positions.
            debug_assert!(
                false,
                "rollout routing for {} slots, the pass has {}",
                rollout.len(),
                chosen.len()
            );
            return None;
        }
        if let (Some(counted), Some(m)) = (self.counted, self.mismatch.as_deref_mut()) {
            let e = m.by_layer.entry(layer).or_default();
            for (t, (mine, theirs)) in chosen.chunks(k).zip(rollout.chunks(k)).enumerate() {
                if counted.get(t).copied().unwrap_or(false) && theirs[0] >= 0 {
                    e.1 += 1;
                    e.0 += u64::from(!same_set(mine, theirs));
                }
            }
        }
        if !self.replay {
            return None;
        }
        Some(
            chosen
                .chunks(k)
                .zip(rollout.chunks(k))
                .flat_map(|(mine, theirs)| if theirs[0] >= 0 { theirs } else { mine })
                .copied()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(layer: usize, experts: &[u32]) -> LayerRouting {
        LayerRouting {
            layer,
            experts: experts.to_vec(),
            weights: vec![0.5; experts.len()],
        }
    }

    #[test]
    fn rows_are_laid_out_as_the_padded_batch() {
        let a = vec![vec![routed(1, &[3, 0])], vec![routed(1, &[2, 5])]];
        let b = vec![vec![routed(1, &[7, 6])]];
        let r = RolloutRouting::of_rows(&[], &[&a, &b], 3, 2);
        assert_eq!(
            r.completion[&1],
            vec![3, 0, 2, 5, -1, -1, 7, 6, -1, -1, -1, -1]
        );
        assert!(r.prompt.is_empty());
    }

    #[test]
    fn the_probe_counts_differing_sets_and_replays_where_it_has_routing() {
        let mut rollout = LayerExperts::new();
        rollout.insert(2, vec![1, 4, 0, 3, 6, 7, -1, -1]);
        let counted = [true, true, false, true];
        let mut m = Mismatch::default();
        let mut probe = UpdateProbe {
            counter: None,
            observer: None,
            rollout: Some(&rollout),
            replay: true,
            counted: Some(&counted),
            mismatch: Some(&mut m),
        };
        // Token 0: same set in another order; token 1: one expert differs; token 2: differs but
        // is not counted; token 3: no rollout routing (kept, not compared).
        let chosen = [4, 1, 0, 5, 7, 2, 3, 3];
        let used = probe.replace_experts(2, 2, &chosen).unwrap();
        assert_eq!(used, vec![1, 4, 0, 3, 6, 7, 3, 3]);
        assert_eq!(
            probe.replace_experts(1, 2, &chosen),
            None,
            "no routing for layer 1"
        );
        assert_eq!(m.by_layer[&2], (1, 2));
        assert_eq!(m.pooled(), Some(0.5));
        // Off: compared, not replayed.
        let mut m = Mismatch::default();
        let mut probe = UpdateProbe {
            counter: None,
            observer: None,
            rollout: Some(&rollout),
            replay: false,
            counted: Some(&counted),
            mismatch: Some(&mut m),
        };
        assert_eq!(probe.replace_experts(2, 2, &chosen), None);
        assert_eq!(m.shares()[&2], 0.5);
    }
}
