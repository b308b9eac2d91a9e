//! DeepSeek-V3's auxiliary-loss-free load balancing, and expert-load statistics.
//!
//! Each MoE layer's router adds a per-expert bias `e_score_correction_bias` to its scores when it
//! *chooses* experts (the mixing weights ignore it). After every optimiser step, each routed
//! expert's bias moves by γ: up if the expert got fewer tokens than the mean in that step, down if
//! more. No loss term pulls on the model's weights; the bias alone evens the load out.
//!
//! Loads are counted through the model's routing probe: the same choices the forward pass made.

use std::collections::BTreeMap;

use serde::Serialize;
use tch::Tensor;

use crate::model::{Model, Probe};

/// Counts, per MoE layer, how many tokens each routed expert received. Rows flagged `false` in
/// `real` (padding) are not counted.
pub struct LoadCounter {
    n_experts: usize,
    /// One flag per flattened token row (batch then sequence) of the next forward pass; empty:
    /// count every row.
    pub real: Vec<bool>,
    /// How many tokens each counted row stands for (1; b where one prompt runs for b rows).
    pub repeat: u64,
    /// layer -> tokens per expert
    pub counts: BTreeMap<usize, Vec<u64>>,
}

impl LoadCounter {
    pub fn new(n_experts: usize) -> Self {
        Self {
            n_experts,
            real: Vec::new(),
            repeat: 1,
            counts: BTreeMap::new(),
        }
    }

    pub fn clear(&mut self) {
        self.counts.clear();
    }

    /// Adds another counter's counts.
    pub fn add(&mut self, layer: usize, experts: &[u32]) {
        let row = self
            .counts
            .entry(layer)
            .or_insert_with(|| vec![0; self.n_experts]);
        for &e in experts {
            if let Some(c) = row.get_mut(e as usize) {
                *c += 1;
            }
        }
    }
}

impl Probe for LoadCounter {
    fn wants_routing(&self) -> bool {
        true
    }

    fn routing(&mut self, layer: usize, tokens: usize, k: usize, experts: &[i64], _w: &[f32]) {
        let n = self.n_experts;
        let row = self.counts.entry(layer).or_insert_with(|| vec![0; n]);
        for t in 0..tokens {
            if !self.real.is_empty() && !self.real.get(t).copied().unwrap_or(false) {
                continue;
            }
            for &e in &experts[t * k..(t + 1) * k] {
                row[e as usize] += self.repeat;
            }
        }
    }
}

/// The bias change for each expert: +γ below the mean load, -γ above it, 0 at it.
pub fn bias_deltas(load: &[u64], gamma: f32) -> Vec<f32> {
    if load.is_empty() {
        return Vec::new();
    }
    let mean = load.iter().sum::<u64>() as f64 / load.len() as f64;
    load.iter()
        .map(|&l| {
            let l = l as f64;
            if l < mean {
                gamma
            } else if l > mean {
                -gamma
            } else {
                0.0
            }
        })
        .collect()
}

/// Nudges every MoE layer's router bias toward even load, from one step's counts.
pub fn nudge_biases(model: &Model, counts: &BTreeMap<usize, Vec<u64>>, gamma: f64) {
    if gamma == 0.0 {
        return;
    }
    let _g = tch::no_grad_guard();
    for router in model.routers() {
        // Softmax routers (DeepSeek-V2) have no bias.
        let (Some(bias), Some(load)) = (&router.selection_bias, counts.get(&router.layer)) else {
            continue;
        };
        let delta = Tensor::from_slice(&bias_deltas(load, gamma as f32))
            .to_kind(bias.kind())
            .to_device(bias.device());
        let mut b = bias.shallow_clone();
        let _ = b.g_add_(&delta);
    }
}

/// Load statistics of one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerLoad {
    pub layer: usize,
    /// Share of routed slots each expert received (sums to 1).
    pub share: Vec<f64>,
    /// Smallest load over the mean load (1 is perfectly even; 0 is an unused expert).
    pub min_over_mean: f64,
    /// Largest load over the mean, minus 1 (DeepSeek-V3's MaxVio).
    pub max_violation: f64,
}

/// Per-layer shares and balance figures from counts.
pub fn layer_loads(counts: &BTreeMap<usize, Vec<u64>>) -> Vec<LayerLoad> {
    counts
        .iter()
        .map(|(&layer, c)| {
            let total: u64 = c.iter().sum();
            let n = c.len().max(1) as f64;
            let share: Vec<f64> = c
                .iter()
                .map(|&x| {
                    if total > 0 {
                        x as f64 / total as f64
                    } else {
                        0.0
                    }
                })
                .collect();
            let mean = 1.0 / n;
            let min = share.iter().copied().fold(f64::INFINITY, f64::min);
            let max = share.iter().copied().fold(0.0, f64::max);
            LayerLoad {
                layer,
                share,
                min_over_mean: if total > 0 { min / mean } else { 0.0 },
                max_violation: if total > 0 { max / mean - 1.0 } else { 0.0 },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underloaded_experts_are_pushed_up_overloaded_down() {
        // mean = 10
        let d = bias_deltas(&[4, 10, 26, 0], 0.01);
        assert_eq!(d, vec![0.01, 0.0, -0.01, 0.01]);
    }

    #[test]
    fn counter_skips_padding_rows() {
        let mut c = LoadCounter::new(4);
        c.real = vec![true, false, true];
        // three tokens, k = 2
        c.routing(1, 3, 2, &[0, 1, 2, 3, 0, 3], &[1.0; 6]);
        assert_eq!(c.counts[&1], vec![2, 1, 0, 1]);
    }

    #[test]
    fn load_figures() {
        let counts = BTreeMap::from([(1usize, vec![10u64, 30, 40, 20])]);
        let l = &layer_loads(&counts)[0];
        assert_eq!(l.share, vec![0.1, 0.3, 0.4, 0.2]);
        assert!((l.min_over_mean - 0.4).abs() < 1e-12);
        assert!((l.max_violation - 0.6).abs() < 1e-12);
    }
}
