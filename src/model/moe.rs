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
use super::gemv::{self, Scalar};
use super::layers::Mlp;
use super::loader::Loader;
use super::probe::Probe;
use super::ModelError;

pub struct Moe {
    cfg: MoeConfig,
    /// The router's weight `[E, hidden]`: routing stays in floating point whatever `--quant` says.
    gate: Tensor,
    /// Selection-only bias (V3); kept f32 whatever the run dtype.
    pub e_score_correction_bias: Option<Tensor>,
    /// The var-store names of `gate` and of the bias, as they were loaded.
    gate_name: String,
    bias_name: Option<String>,
    experts: Vec<Mlp>,
    shared_experts: Option<Mlp>,
}

/// One MoE layer's router, as the loader named and holds it. Training freezes its weight, or
/// nudges its bias toward even load, through these handles (the same tensors as in the var store,
/// so a change here is a change to the model).
pub struct Router {
    /// The decoder layer it routes for.
    pub layer: usize,
    /// The gate's weight `[E, hidden]`.
    pub weight: Tensor,
    /// Its name in the var store (`model.layers.L.mlp.gate.weight`).
    pub weight_name: String,
    /// DeepSeek-V3's selection-only bias `[E]`, f32, never trained by gradient; absent for softmax
    /// routers (DeepSeek-V2).
    pub selection_bias: Option<Tensor>,
    /// Its name in the var store (`model.layers.L.mlp.gate.e_score_correction_bias`).
    pub bias_name: Option<String>,
}

/// Experts chosen for one token (best first) and their mixing weights.
struct TokenChoice {
    experts: Vec<usize>,
    weights: Vec<f32>,
}

/// Indices of the `k` largest values, largest first; ties go to the lower index.
fn top_indices(values: &[f32], k: usize) -> Vec<usize> {
    // k passes of "largest not yet taken" (k is small: experts per token, groups kept): the
    // same order as a stable sort by descending value, without sorting everything.
    let k = k.min(values.len());
    let mut taken = vec![false; if values.len() > 128 { values.len() } else { 0 }];
    let mut mask = 0u128; // the taken set when there are at most 128 values
    let mut out = Vec::with_capacity(k);
    for _ in 0..k {
        let mut best: Option<usize> = None;
        for (i, v) in values.iter().enumerate() {
            let used = if taken.is_empty() {
                mask >> i & 1 == 1
            } else {
                taken[i]
            };
            if !used && best.is_none_or(|b| v.total_cmp(&values[b]).is_gt()) {
                best = Some(i);
            }
        }
        let b = best.expect("k <= len");
        if taken.is_empty() {
            mask |= 1 << b;
        } else {
            taken[b] = true;
        }
        out.push(b);
    }
    out
}

impl Moe {
    pub fn load(l: &Loader, p: nn::Path, cfg: &ModelConfig) -> Result<Self, ModelError> {
        let moe = cfg.moe.clone().expect("MoE config present for MoE layers");
        let hidden = cfg.raw.hidden_size;
        let e = moe.n_routed_experts;
        let gp = &p / "gate";
        let gate = l.weight(&gp, "weight", &[e as i64, hidden as i64])?;
        let gate_name = gp.path("weight");
        let (e_score_correction_bias, bias_name) = match moe.routing {
            Routing::SigmoidNoAux => (
                Some(l.buffer_f32(&gp, "e_score_correction_bias", &[e as i64])?),
                Some(gp.path("e_score_correction_bias")),
            ),
            _ => (None, None),
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
            gate_name,
            bias_name,
            experts,
            shared_experts,
        })
    }

    /// This layer's router: the tensors the forward pass routes with (shared with the var store).
    pub fn router(&self, layer: usize) -> Router {
        Router {
            layer,
            weight: self.gate.shallow_clone(),
            weight_name: self.gate_name.clone(),
            selection_bias: self
                .e_score_correction_bias
                .as_ref()
                .map(Tensor::shallow_clone),
            bias_name: self.bias_name.clone(),
        }
    }

    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    /// Picks experts for one token from its f32 router logits. Selection is discrete, so it runs
    /// on the CPU in plain Rust: a few comparisons instead of a score of tensor ops per layer.
    fn choose(&self, logits: &[f32], bias: &[f32]) -> TokenChoice {
        // Scored once: selection and weighting read the same scores.
        let scores = self.scores(logits);
        let experts = self.select(&scores, bias);
        let weights = self.weigh(&scores, &experts);
        TokenChoice { experts, weights }
    }

    /// The router's unbiased score of every expert: sigmoid (V3) or softmax (V2) of the logits.
    fn scores(&self, logits: &[f32]) -> Vec<f32> {
        match self.cfg.routing {
            Routing::SigmoidNoAux => logits.iter().map(|&l| sigmoid(l)).collect(),
            Routing::SoftmaxGreedy | Routing::SoftmaxGroupLimited => softmax(logits),
        }
    }

    /// The experts the router picks for one token from its [`Moe::scores`], best first.
    fn select(&self, scores: &[f32], bias: &[f32]) -> Vec<usize> {
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
                let biased: Vec<f32> = scores.iter().zip(bias).map(|(s, b)| s + b).collect();
                let top2_sum = |g: &[f32]| top_indices(g, 2).iter().map(|&i| g[i]).sum::<f32>();
                let masked = keep_best_groups(&biased, &top2_sum);
                top_indices(&masked, c.top_k)
            }
            Routing::SoftmaxGreedy | Routing::SoftmaxGroupLimited => {
                let candidates = if c.routing == Routing::SoftmaxGroupLimited {
                    keep_best_groups(scores, &|g: &[f32]| {
                        g.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                    })
                } else {
                    scores.to_vec()
                };
                top_indices(&candidates, c.top_k)
            }
        }
    }

    /// The mixing weights of `experts` for one token: the router's unbiased scores for them
    /// (renormalised where the model says so), times `routed_scaling_factor` — whoever picked
    /// the experts (the router itself, or a replay of another pass's choice).
    fn weigh(&self, scores: &[f32], experts: &[usize]) -> Vec<f32> {
        let c = &self.cfg;
        let scale = c.routed_scaling_factor as f32;
        let mut weights: Vec<f32> = experts.iter().map(|&e| scores[e]).collect();
        // V3 renormalises its sigmoid scores over the chosen experts; V2's softmax is not.
        if c.routing == Routing::SigmoidNoAux && c.norm_topk_prob {
            let z: f32 = weights.iter().sum::<f32>() + 1e-20;
            weights.iter_mut().for_each(|w| *w /= z);
        }
        weights.iter_mut().for_each(|w| *w *= scale);
        weights
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
        // Router logits in f32 (no conversions when the run is f32 already; a few tokens go
        // through the GEMV kernel).
        let logits = if xt.kind() == Kind::Float && self.gate.kind() == Kind::Float {
            super::layers::linear(&xt, &self.gate, None)
        } else {
            xt.to_kind(Kind::Float)
                .linear::<Tensor>(&self.gate.to_kind(Kind::Float), None)
        };
        let logits_cpu = host_f32(&logits);
        // The bias is read where it lives (no copy kept on the side: balance updates change it
        // in place between steps, and a cached copy would have to be invalidated).
        let bias: Vec<f32> = match &self.e_score_correction_bias {
            Some(b) => host_f32(b),
            None => vec![0.0; e],
        };
        let mut choices: Vec<TokenChoice> = logits_cpu
            .chunks(e)
            .map(|row| self.choose(row, &bias))
            .collect();
        let mut flat_experts: Vec<i64> = choices
            .iter()
            .flat_map(|c| c.experts.iter().map(|&x| x as i64))
            .collect();
        if let Some(replayed) = probe.replace_experts(layer, k, &flat_experts) {
            assert_eq!(
                replayed.len(),
                flat_experts.len(),
                "replayed experts: tokens × k"
            );
            assert!(
                replayed.iter().all(|&x| (0..e as i64).contains(&x)),
                "replayed experts must be ids below {e}"
            );
            for ((choice, row), ids) in choices
                .iter_mut()
                .zip(logits_cpu.chunks(e))
                .zip(replayed.chunks(k))
            {
                choice.experts = ids.iter().map(|&x| x as usize).collect();
                choice.weights = self.weigh(&self.scores(row), &choice.experts);
            }
            flat_experts = replayed;
        }
        let flat_weights: Vec<f32> = choices
            .iter()
            .flat_map(|c| c.weights.iter().copied())
            .collect();
        if probe.wants_routing() {
            probe.routing(layer, t as usize, k, &flat_experts, &flat_weights);
        }
        if !logits.requires_grad() {
            let direct = match xt.kind() {
                Kind::Float => self.experts_direct::<f32>(&xt, &choices),
                Kind::BFloat16 => self.experts_direct::<half::bf16>(&xt, &choices),
                _ => None,
            };
            if let Some(y) = direct {
                return y.view(size.as_slice());
            }
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
                Tensor::new()
            };
            // Slots grouped by expert (stable, so each expert keeps its tokens in order): one
            // gather of the rows, a contiguous slice of them per expert, one weighting and one
            // scatter-add — the per-row sums run in expert order, as one index_add per expert
            // would, with a fraction of the ops (and of the autograd nodes in training).
            let mut order: Vec<usize> = (0..flat_experts.len()).collect();
            order.sort_by_key(|&slot| flat_experts[slot]);
            let mut counts = vec![0i64; e];
            for &ex in &flat_experts {
                counts[ex as usize] += 1;
            }
            let rows: Vec<i64> = order.iter().map(|&slot| (slot / k) as i64).collect();
            let rows = Tensor::from_slice(&rows).to_device(x.device());
            let slot_weights = if weights.defined() {
                let slots: Vec<i64> = order.iter().map(|&slot| slot as i64).collect();
                weights.index_select(0, &Tensor::from_slice(&slots).to_device(x.device()))
            } else {
                let w: Vec<f32> = order.iter().map(|&slot| flat_weights[slot]).collect();
                Tensor::from_slice(&w).to_device(x.device())
            };
            // One split rather than a `narrow` per expert: in training each narrow's backward
            // would allocate and zero a gradient the size of all the gathered rows, and add them
            // up one by one; the split's backward is a single concatenation.
            let used: Vec<usize> = (0..e).filter(|&ex| counts[ex] > 0).collect();
            let sizes: Vec<i64> = used.iter().map(|&ex| counts[ex]).collect();
            let parts = xt.index_select(0, &rows).split_with_sizes(&sizes, 0);
            let outs: Vec<Tensor> = used
                .iter()
                .zip(&parts)
                .map(|(&ex, xe)| self.experts[ex].forward(xe))
                .collect();
            let ys = Tensor::cat(&outs, 0).to_kind(Kind::Float) * slot_weights.unsqueeze(1);
            let out =
                Tensor::zeros([t, hidden], (Kind::Float, x.device())).index_add(0, &rows, &ys);
            out.to_kind(x.kind())
        };
        if let Some(shared) = &self.shared_experts {
            // A new tensor, not `+=`: an in-place add would overwrite what autograd saved.
            #[allow(clippy::assign_op_pattern)]
            {
                y = y + shared.forward(&xt);
            }
        }
        y.view(size.as_slice())
    }

    /// The routed experts (and the shared ones) of a few tokens, computed directly by the GEMV
    /// kernels on the CPU when autograd need not see them: for each chosen expert its three
    /// products over just the tokens that chose it, with the same roundings as the libtorch path
    /// below (each product rounded to the run dtype, silu and the gate·up product rounded, the
    /// weighted sum accumulated in f32 in expert order, then rounded and the shared experts
    /// added). A handful of calls instead of a dozen tensor ops per expert. `None` where it does
    /// not apply (GPU tensors, many tokens, gradients needed, kernels off).
    fn experts_direct<T: Scalar>(&self, xt: &Tensor, choices: &[TokenChoice]) -> Option<Tensor> {
        let (t, hidden) = xt.size2().ok()?;
        let (t, hidden) = (t as usize, hidden as usize);
        if !gemv::available() || t == 0 || t > gemv::max_rows::<T>() || xt.device() != Device::Cpu {
            return None;
        }
        let mut rows_of: Vec<Vec<(usize, f32)>> = vec![Vec::new(); self.experts.len()];
        for (row, c) in choices.iter().enumerate() {
            for (&ex, &w) in c.experts.iter().zip(&c.weights) {
                rows_of[ex].push((row, w));
            }
        }
        let used: Vec<usize> = (0..rows_of.len())
            .filter(|&e| !rows_of[e].is_empty())
            .collect();
        let mlps = used
            .iter()
            .map(|&e| &self.experts[e])
            .chain(self.shared_experts.as_ref());
        let mut weights: Vec<&Tensor> = vec![xt];
        for m in mlps {
            if m.has_bias() {
                return None;
            }
            weights.extend(m.weights()?);
        }
        if gemv::records_graph(&weights) {
            return None;
        }
        let xt_c;
        let xt = if xt.is_contiguous() {
            xt
        } else {
            xt_c = xt.contiguous();
            &xt_c
        };
        // SAFETY (every cpu_slice below): the model's weights and this call's input are not
        // written while a forward pass runs (a model is used by one thread at a time, and the
        // optimiser and balance updates run between passes).
        let x: &[T] = unsafe { gemv::cpu_slice(xt) }?;
        let mut acc = vec![0f32; t * hidden];
        let mut xs: Vec<T> = Vec::new();
        let mut ys: Vec<T> = Vec::new();
        for &e in &used {
            let rows = &rows_of[e];
            xs.clear();
            for &(row, _) in rows {
                xs.extend_from_slice(&x[row * hidden..(row + 1) * hidden]);
            }
            ys.resize(rows.len() * hidden, T::default());
            mlp_rows::<T>(&self.experts[e], &xs, &mut ys, rows.len(), hidden)?;
            for (j, &(row, w)) in rows.iter().enumerate() {
                let a = &mut acc[row * hidden..(row + 1) * hidden];
                for (a, y) in a.iter_mut().zip(&ys[j * hidden..(j + 1) * hidden]) {
                    *a += y.to_f32() * w;
                }
            }
        }
        let out = Tensor::empty([t as i64, hidden as i64], (T::KIND, Device::Cpu));
        // SAFETY: `out` is a fresh contiguous CPU tensor of t·hidden elements of `T`, written
        // only through this slice, which ends before `out` is returned.
        let o: &mut [T] =
            unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut T, t * hidden) };
        match &self.shared_experts {
            Some(shared) => {
                ys.resize(t * hidden, T::default());
                mlp_rows::<T>(shared, x, &mut ys, t, hidden)?;
                for ((o, a), s) in o.iter_mut().zip(&acc).zip(&ys) {
                    *o = T::from_f32(T::from_f32(*a).to_f32() + s.to_f32());
                }
            }
            None => o
                .iter_mut()
                .zip(&acc)
                .for_each(|(o, a)| *o = T::from_f32(*a)),
        }
        Some(out)
    }
}

/// `down(silu(gate(x)) · up(x))` for `m` rows of `x` into `y` through the GEMV kernels, each
/// intermediate rounded to `T` as libtorch's ops round it.
fn mlp_rows<T: Scalar>(mlp: &Mlp, x: &[T], y: &mut [T], m: usize, hidden: usize) -> Option<()> {
    let [wg, wu, wd] = mlp.weights()?;
    let inter = wg.size()[0] as usize;
    // SAFETY: as in `experts_direct`.
    let (wg, wu, wd): (&[T], &[T], &[T]) = unsafe {
        (
            gemv::cpu_slice(wg)?,
            gemv::cpu_slice(wu)?,
            gemv::cpu_slice(wd)?,
        )
    };
    let mut g = vec![T::default(); m * inter];
    let mut u = vec![T::default(); m * inter];
    gemv::product(x, wg, &mut g, m, inter, hidden);
    gemv::product(x, wu, &mut u, m, inter, hidden);
    for (g, u) in g.iter_mut().zip(&u) {
        let a = g.to_f32();
        let silu = T::from_f32(a / (1.0 + (-a).exp()));
        *g = T::from_f32(silu.to_f32() * u.to_f32());
    }
    gemv::product(&g, wd, y, m, hidden, inter);
    Some(())
}

/// A float tensor's values as f32 on the host: read in place when it already is a contiguous f32
/// CPU tensor (no tensor ops), else converted and copied.
fn sigmoid(l: f32) -> f32 {
    1.0 / (1.0 + (-l).exp())
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let z: f32 = exp.iter().sum();
    exp.iter().map(|x| x / z).collect()
}

fn host_f32(t: &Tensor) -> Vec<f32> {
    // SAFETY: read at once and copied; nothing writes router logits or biases meanwhile.
    if let Some(v) = unsafe { gemv::cpu_slice::<f32>(t) } {
        return v.to_vec();
    }
    Vec::try_from(
        t.detach()
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
            .reshape([-1]),
    )
    .expect("f32 values")
}
