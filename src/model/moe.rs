//! DeepSeekMoE: a router picks `top_k` routed experts per token, their outputs are mixed with the
//! router weights, and shared experts see every token.
//!
//! The router logits are computed in f32. DeepSeek-V3 scores with a sigmoid and adds
//! `e_score_correction_bias` only to choose experts (the weights come from the unbiased scores);
//! groups are ranked by the sum of their two best biased scores, and experts outside the best
//! `topk_group` groups are excluded (-inf), as transformers 5.24 does. DeepSeek-V2 scores with a
//! softmax and either takes the plain top-k (`greedy`) or ranks groups by their best score
//! (`group_limited_greedy`), then multiplies by `routed_scaling_factor` without renormalising.

use tch::{nn, Device, Kind, Tensor};

use super::config::{ModelConfig, MoeConfig, Routing};
use super::layers::{Linear, Mlp};
use super::loader::Loader;
use super::probe::Probe;
use super::ModelError;

pub struct Moe {
    cfg: MoeConfig,
    gate: Linear,
    /// Selection-only bias (V3); kept f32 whatever the run dtype.
    pub e_score_correction_bias: Option<Tensor>,
    experts: Vec<Mlp>,
    shared_experts: Option<Mlp>,
}

/// Experts chosen for one token (best first) and their mixing weights.
struct TokenChoice {
    experts: Vec<usize>,
    weights: Vec<f32>,
}

/// Indices of the `k` largest values, largest first; ties go to the lower index.
fn top_indices(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

impl Moe {
    pub fn load(l: &Loader, p: nn::Path, cfg: &ModelConfig) -> Result<Self, ModelError> {
        let moe = cfg.moe.clone().expect("MoE config present for MoE layers");
        let hidden = cfg.raw.hidden_size;
        let e = moe.n_routed_experts;
        let gp = &p / "gate";
        let gate = Linear {
            weight: l.weight(&gp, "weight", &[e as i64, hidden as i64])?,
            bias: None,
        };
        let e_score_correction_bias = match moe.routing {
            Routing::SigmoidNoAux => {
                Some(l.buffer_f32(&gp, "e_score_correction_bias", &[e as i64])?)
            }
            _ => None,
        };
        let experts = (0..e)
            .map(|i| {
                Mlp::load(
                    l,
                    &p / "experts" / i,
                    hidden,
                    moe.moe_intermediate_size,
                    false,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shared_experts = if moe.n_shared_experts > 0 {
            Some(Mlp::load(
                l,
                &p / "shared_experts",
                hidden,
                moe.moe_intermediate_size * moe.n_shared_experts,
                false,
            )?)
        } else {
            None
        };
        Ok(Self {
            cfg: moe,
            gate,
            e_score_correction_bias,
            experts,
            shared_experts,
        })
    }

    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    /// Picks experts for one token from its f32 router logits. Selection is discrete, so it runs
    /// on the CPU in plain Rust: a few comparisons instead of a score of tensor ops per layer.
    fn choose(&self, logits: &[f32], bias: &[f32]) -> TokenChoice {
        let c = &self.cfg;
        let per_group = c.n_routed_experts / c.n_group;
        // Keeps only the experts of the `topk_group` best groups (the others become -inf).
        let keep_best_groups = |scores: &[f32], group_score: &dyn Fn(&[f32]) -> f32| -> Vec<f32> {
            let groups: Vec<f32> = scores.chunks(per_group).map(group_score).collect();
            let kept = top_indices(&groups, c.topk_group);
            scores
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    if kept.contains(&(i / per_group)) {
                        s
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect()
        };
        match c.routing {
            Routing::SigmoidNoAux => {
                let scores: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
                let biased: Vec<f32> = scores.iter().zip(bias).map(|(s, b)| s + b).collect();
                let top2_sum = |g: &[f32]| top_indices(g, 2).iter().map(|&i| g[i]).sum::<f32>();
                let masked = keep_best_groups(&biased, &top2_sum);
                let experts = top_indices(&masked, c.top_k);
                let mut weights: Vec<f32> = experts.iter().map(|&e| scores[e]).collect();
                if c.norm_topk_prob {
                    let z: f32 = weights.iter().sum::<f32>() + 1e-20;
                    weights.iter_mut().for_each(|w| *w /= z);
                }
                weights
                    .iter_mut()
                    .for_each(|w| *w *= c.routed_scaling_factor as f32);
                TokenChoice { experts, weights }
            }
            Routing::SoftmaxGreedy | Routing::SoftmaxGroupLimited => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
                let z: f32 = exp.iter().sum();
                let probs: Vec<f32> = exp.iter().map(|e| e / z).collect();
                let candidates = if c.routing == Routing::SoftmaxGroupLimited {
                    keep_best_groups(&probs, &|g: &[f32]| {
                        g.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                    })
                } else {
                    probs.clone()
                };
                let experts = top_indices(&candidates, c.top_k);
                let weights = experts
                    .iter()
                    .map(|&e| probs[e] * c.routed_scaling_factor as f32)
                    .collect();
                TokenChoice { experts, weights }
            }
        }
    }

    /// The mixing weights as a differentiable function of the router logits, for training: the
    /// formula `choose` applies, on tensors, for the experts it picked.
    fn weights_with_grad(&self, logits: &Tensor, experts: &Tensor) -> Tensor {
        let c = &self.cfg;
        let w = match c.routing {
            Routing::SigmoidNoAux => {
                let w = logits.sigmoid().gather(1, experts, false);
                if c.norm_topk_prob {
                    &w / (w.sum_dim_intlist(-1, true, Kind::Float) + 1e-20)
                } else {
                    w
                }
            }
            _ => logits.softmax(-1, Kind::Float).gather(1, experts, false),
        };
        w * c.routed_scaling_factor
    }

    /// `x [B,S,hidden]`; reports the routing of decoder layer `layer` to `probe`.
    pub fn forward(&self, x: &Tensor, layer: usize, probe: &mut dyn Probe) -> Tensor {
        let size = x.size();
        let hidden = *size.last().expect("hidden dim");
        let xt = x.reshape([-1, hidden]);
        let t = xt.size()[0];
        let k = self.cfg.top_k;
        let e = self.experts.len();
        let logits = xt
            .to_kind(Kind::Float)
            .linear::<Tensor>(&self.gate.weight.to_kind(Kind::Float), None);
        let logits_cpu: Vec<f32> =
            Vec::try_from(logits.detach().to_device(Device::Cpu).reshape([-1]))
                .expect("f32 router logits");
        let bias: Vec<f32> = match &self.e_score_correction_bias {
            Some(b) => Vec::try_from(b.detach().to_device(Device::Cpu)).expect("f32 bias"),
            None => vec![0.0; e],
        };
        let choices: Vec<TokenChoice> = logits_cpu
            .chunks(e)
            .map(|row| self.choose(row, &bias))
            .collect();
        let flat_experts: Vec<i64> = choices
            .iter()
            .flat_map(|c| c.experts.iter().map(|&x| x as i64))
            .collect();
        let flat_weights: Vec<f32> = choices
            .iter()
            .flat_map(|c| c.weights.iter().copied())
            .collect();
        if probe.wants_routing() {
            probe.routing(layer, t as usize, k, &flat_experts, &flat_weights);
        }

        // Expert outputs are accumulated in f32, as transformers does.
        let mut y = if t == 1 && !logits.requires_grad() {
            // Decode: one token, weights as plain numbers.
            let mut acc: Option<Tensor> = None;
            for (&ex, &w) in choices[0].experts.iter().zip(&choices[0].weights) {
                let ye = self.experts[ex].forward(&xt).to_kind(Kind::Float) * w as f64;
                acc = Some(match acc {
                    Some(a) => a + ye,
                    None => ye,
                });
            }
            acc.expect("top_k >= 1").to_kind(x.kind())
        } else {
            let weights = if logits.requires_grad() {
                let idx = Tensor::from_slice(&flat_experts)
                    .view([t, k as i64])
                    .to_device(x.device());
                self.weights_with_grad(&logits, &idx).reshape([-1])
            } else {
                Tensor::from_slice(&flat_weights).to_device(x.device())
            };
            let mut slots_of: Vec<Vec<i64>> = vec![Vec::new(); e];
            for (slot, &ex) in flat_experts.iter().enumerate() {
                slots_of[ex as usize].push(slot as i64);
            }
            let mut out = Tensor::zeros([t, hidden], (Kind::Float, x.device()));
            for (ex, slots) in slots_of.iter().enumerate() {
                if slots.is_empty() {
                    continue;
                }
                let rows: Vec<i64> = slots.iter().map(|s| s / k as i64).collect();
                let rows = Tensor::from_slice(&rows).to_device(x.device());
                let slots = Tensor::from_slice(slots).to_device(x.device());
                let ye = self.experts[ex]
                    .forward(&xt.index_select(0, &rows))
                    .to_kind(Kind::Float)
                    * weights.index_select(0, &slots).unsqueeze(1);
                out = out.index_add(0, &rows, &ye);
            }
            out.to_kind(x.kind())
        };
        if let Some(shared) = &self.shared_experts {
            y = y + shared.forward(&xt);
        }
        y.view(size.as_slice())
    }
}
