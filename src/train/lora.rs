//! LoRA adapters, merged into the weights: `W = W₀ + (α/r)·B·A` for every targeted linear layer,
//! with only A `[r, in]` and B `[out, r]` trained.
//!
//! The model code has no adapter hook (one model code path serves inference and training), so the
//! adapters live *in* the weights: the model always holds the merged `W`, rollouts and the loss
//! run the ordinary forward pass, and after backward the gradient of each targeted `W` is
//! projected onto the adapters by the chain rule — `∂L/∂A = (α/r)·Bᵀ·∂L/∂W`,
//! `∂L/∂B = (α/r)·∂L/∂W·Aᵀ` — exactly the gradients an unmerged LoRA gets. An update moves `W` by
//! the change of `(α/r)·B·A`. The reference policy is the base with the adapters off: the deltas
//! are subtracted for the reference pass and added back, so no second copy of the model is held.
//!
//! What this costs and saves against an unmerged LoRA: the same adapters, gradients and updates
//! (up to f32 rounding in the merged weights: training runs in f32); AdamW state only for A and B
//! and no reference copy (as LoRA); but a full-size gradient for each targeted weight during
//! backward (an unmerged LoRA needs none).
//!
//! Adapters are saved in the PEFT layout (`adapter_model.safetensors` with
//! `base_model.model.<module>.lora_A.weight` / `lora_B.weight`, and `adapter_config.json`), and
//! [`merge`] applies them to a base model (`thinkbench merge`).

use std::collections::HashMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tch::{Kind, Tensor};

use super::recipe::LoraSection;
use crate::model::Model;

/// One adapted weight.
pub struct Adapter {
    /// The weight's HF name, e.g. `model.layers.0.self_attn.q_b_proj.weight`.
    pub weight_name: String,
    /// The model's weight (shares storage with the var store).
    pub weight: Tensor,
    /// `[r, in]`
    pub a: Tensor,
    /// `[out, r]`
    pub b: Tensor,
}

impl Adapter {
    /// The module path (`model.layers.0.self_attn.q_b_proj`).
    pub fn module(&self) -> &str {
        self.weight_name
            .strip_suffix(".weight")
            .unwrap_or(&self.weight_name)
    }
}

pub struct Lora {
    pub adapters: Vec<Adapter>,
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
}

/// Whether `name` is the weight of one of the `targets` modules.
pub fn targeted(name: &str, targets: &[String]) -> bool {
    let Some(module) = name.strip_suffix(".weight") else {
        return false;
    };
    let last = module.rsplit('.').next().unwrap_or(module);
    targets.iter().any(|t| t == last)
}

impl Lora {
    /// Attaches fresh adapters to the targeted weights (A uniform in ±1/√in as PEFT's Kaiming
    /// init gives, from a seeded generator; B zero, so the model starts unchanged) and freezes
    /// every weight: targeted ones keep `requires_grad` only so that their gradient can be
    /// projected onto the adapters.
    pub fn attach(model: &Model, cfg: &LoraSection, seed: u64) -> Result<Self, String> {
        let mut names: Vec<(String, Tensor)> = model.vars.variables().into_iter().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rng = StdRng::seed_from_u64(seed ^ 0x10EA);
        let mut adapters = Vec::new();
        for (name, t) in names {
            let hit = targeted(&name, &cfg.target_modules) && t.dim() == 2;
            let _ = t.set_requires_grad(hit);
            if !hit {
                continue;
            }
            let (out, inp) = t.size2().expect("2-D");
            let bound = 1.0 / (inp as f64).sqrt();
            let a: Vec<f32> = (0..cfg.rank as i64 * inp)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            let a = Tensor::from_slice(&a)
                .view([cfg.rank as i64, inp])
                .to_device(t.device())
                .set_requires_grad(true);
            let b = Tensor::zeros([out, cfg.rank as i64], (Kind::Float, t.device()))
                .set_requires_grad(true);
            adapters.push(Adapter {
                weight_name: name,
                weight: t,
                a,
                b,
            });
        }
        if adapters.is_empty() {
            let mut modules: Vec<String> = model
                .vars
                .variables()
                .keys()
                .filter_map(|n| n.strip_suffix(".weight"))
                .filter_map(|m| m.rsplit('.').next())
                .map(str::to_string)
                .collect();
            modules.sort();
            modules.dedup();
            return Err(format!(
                "lora.target_modules: no weight matches {:?} (this model's modules: {})",
                cfg.target_modules,
                modules.join(", ")
            ));
        }
        Ok(Self {
            adapters,
            rank: cfg.rank,
            alpha: cfg.alpha,
            targets: cfg.target_modules.clone(),
        })
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// The trainable tensors, named `<weight>.lora_A` / `.lora_B` (for the optimiser).
    pub fn params(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for ad in &self.adapters {
            out.insert(format!("{}.lora_A", ad.module()), ad.a.shallow_clone());
            out.insert(format!("{}.lora_B", ad.module()), ad.b.shallow_clone());
        }
        out
    }

    /// Adds `sign·(α/r)·B·A` to every adapted weight.
    pub fn shift(&self, sign: f64) {
        let _g = tch::no_grad_guard();
        for ad in &self.adapters {
            let delta = ad.b.detach().matmul(&ad.a.detach()) * (sign * self.scale());
            let mut w = ad.weight.shallow_clone();
            let _ = w.g_add_(&delta.to_kind(w.kind()));
        }
    }

    /// Turns the weights' gradients into the adapters' (chain rule through W = W₀ + s·B·A) and
    /// clears the weights' own.
    pub fn project_gradients(&self) {
        let s = self.scale();
        let mut surrogate: Option<Tensor> = None;
        for ad in &self.adapters {
            let mut gw = ad.weight.grad();
            if !gw.defined() {
                continue;
            }
            let (ga, gb) = {
                let _g = tch::no_grad_guard();
                let gw = gw.to_kind(Kind::Float);
                (
                    ad.b.detach().tr().matmul(&gw) * s,
                    gw.matmul(&ad.a.detach().tr()) * s,
                )
            };
            // d/dA of Σ(gA·A) is gA: one small backward sets the adapters' gradients.
            let term = (&ad.a * ga).sum(Kind::Float) + (&ad.b * gb).sum(Kind::Float);
            surrogate = Some(match surrogate {
                Some(t) => t + term,
                None => term,
            });
            let _ = gw.zero_();
        }
        if let Some(t) = surrogate {
            t.backward();
        }
    }

    /// The adapters under their PEFT names.
    pub fn peft_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for ad in &self.adapters {
            let m = ad.module();
            out.push((
                format!("base_model.model.{m}.lora_A.weight"),
                ad.a.detach().shallow_clone(),
            ));
            out.push((
                format!("base_model.model.{m}.lora_B.weight"),
                ad.b.detach().shallow_clone(),
            ));
        }
        out
    }

    /// `adapter_config.json` as PEFT writes it.
    pub fn peft_config(&self, base: &str) -> serde_json::Value {
        json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": 0.0,
            "target_modules": self.targets,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
        })
    }

    /// Restores A and B from `adapter_model.safetensors` tensors (a resumed run).
    pub fn load_adapters(&self, mut tensors: HashMap<String, Tensor>) -> Result<(), String> {
        let _g = tch::no_grad_guard();
        for ad in &self.adapters {
            let m = ad.module();
            for (which, dst) in [("lora_A", &ad.a), ("lora_B", &ad.b)] {
                let key = format!("base_model.model.{m}.{which}.weight");
                let src = tensors
                    .remove(&key)
                    .ok_or_else(|| format!("adapter file has no {key}"))?;
                if src.size() != dst.size() {
                    return Err(format!(
                        "{key}: shape {:?}, expected {:?}",
                        src.size(),
                        dst.size()
                    ));
                }
                let mut d = dst.shallow_clone();
                d.copy_(&src.to_kind(d.kind()).to_device(d.device()));
            }
        }
        Ok(())
    }
}

/// `adapter_config.json`'s (r, lora_alpha).
pub fn read_config(dir: &Path) -> Result<(usize, f64), String> {
    let p = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
    let r = v["r"]
        .as_u64()
        .ok_or_else(|| format!("{}: no \"r\"", p.display()))? as usize;
    let alpha = v["lora_alpha"]
        .as_f64()
        .ok_or_else(|| format!("{}: no \"lora_alpha\"", p.display()))?;
    Ok((r, alpha))
}

/// Adds the adapters in `adapter` (a folder with `adapter_model.safetensors` and
/// `adapter_config.json`) to `model`'s weights: `W += (α/r)·B·A`. Returns how many weights changed.
pub fn merge(model: &Model, adapter: &Path) -> Result<usize, String> {
    let (r, alpha) = read_config(adapter)?;
    let scale = alpha / r as f64;
    let tensors = super::checkpoint::read_safetensors(&adapter.join("adapter_model.safetensors"))?;
    let vars = model.vars.variables();
    let _g = tch::no_grad_guard();
    let mut n = 0;
    let mut keys: Vec<&String> = tensors
        .keys()
        .filter(|k| k.ends_with(".lora_A.weight"))
        .collect();
    keys.sort();
    for ka in keys {
        let module = ka
            .strip_prefix("base_model.model.")
            .and_then(|k| k.strip_suffix(".lora_A.weight"))
            .ok_or_else(|| format!("unexpected adapter key {ka}"))?;
        let kb = format!("base_model.model.{module}.lora_B.weight");
        let b = tensors
            .get(&kb)
            .ok_or_else(|| format!("adapter has no {kb}"))?;
        let name = format!("{module}.weight");
        let w = vars
            .get(&name)
            .ok_or_else(|| format!("the model has no weight {name}"))?;
        let delta = b.matmul(&tensors[ka]) * scale;
        if delta.size() != w.size() {
            return Err(format!(
                "{name}: adapter gives {:?}, the weight is {:?}",
                delta.size(),
                w.size()
            ));
        }
        let mut w = w.shallow_clone();
        let _ = w.g_add_(&delta.to_kind(w.kind()).to_device(w.device()));
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_match_the_last_module_name() {
        let t = vec!["q_proj".to_string(), "down_proj".to_string()];
        assert!(targeted("model.layers.0.self_attn.q_proj.weight", &t));
        assert!(targeted(
            "model.layers.3.mlp.experts.7.down_proj.weight",
            &t
        ));
        assert!(!targeted("model.layers.0.self_attn.q_proj.bias", &t));
        assert!(!targeted("model.layers.0.self_attn.q_a_proj.weight", &t));
    }

    #[test]
    fn projected_gradients_equal_the_unmerged_lora_gradients() {
        // Unmerged: y = x·(W₀ + s·B·A)ᵀ with A, B leaves. Merged: y = x·Wᵀ with W a leaf holding
        // the same value; project ∂L/∂W. The two must give the same ∂L/∂A and ∂L/∂B.
        let s = 2.0;
        let w0 = Tensor::from_slice(&[0.1f32, -0.2, 0.3, 0.05, 0.4, -0.1]).view([2, 3]);
        let a = Tensor::from_slice(&[0.5f32, -1.0, 0.25]).view([1, 3]);
        let b = Tensor::from_slice(&[0.3f32, -0.7]).view([2, 1]);
        let x = Tensor::from_slice(&[1.0f32, 2.0, -1.0, 0.5, 0.0, 3.0]).view([2, 3]);
        let target = Tensor::from_slice(&[0.2f32, -0.4, 1.0, 0.1]).view([2, 2]);
        let loss_of = |w: &Tensor| (x.matmul(&w.tr()) - &target).square().sum(Kind::Float);

        let (a1, b1) = (
            a.copy().set_requires_grad(true),
            b.copy().set_requires_grad(true),
        );
        loss_of(&(&w0 + b1.matmul(&a1) * s)).backward();

        let w = (&w0 + b.matmul(&a) * s).set_requires_grad(true);
        let lora = Lora {
            adapters: vec![Adapter {
                weight_name: "m.weight".into(),
                weight: w.shallow_clone(),
                a: a.copy().set_requires_grad(true),
                b: b.copy().set_requires_grad(true),
            }],
            rank: 1,
            alpha: s,
            targets: vec!["m".into()],
        };
        loss_of(&w).backward();
        lora.project_gradients();
        let ad = &lora.adapters[0];
        assert!(ad.a.grad().allclose(&a1.grad(), 1e-6, 1e-6, false));
        assert!(ad.b.grad().allclose(&b1.grad(), 1e-6, 1e-6, false));
        assert_eq!(
            w.grad().abs().max().double_value(&[]),
            0.0,
            "W's own is cleared"
        );

        // shift(-1) takes the adapters out, shift(+1) puts them back.
        lora.shift(-1.0);
        assert!(w.allclose(&w0, 1e-6, 1e-6, false));
        lora.shift(1.0);
        assert!(w.allclose(&(&w0 + b.matmul(&a) * s), 1e-6, 1e-6, false));
    }
}
