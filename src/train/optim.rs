//! AdamW written out on tensors, so that its state can be saved and resumed exactly (tch's
//! optimiser keeps its moments out of reach), plus global gradient-norm clipping and the
//! warm-up + cosine learning-rate schedule. SFT and GRPO share it.
//!
//! One step, as PyTorch's `torch.optim.AdamW` computes it (t counts from 1):
//!
//! ```text
//! m ← β1·m + (1-β1)·g            v ← β2·v + (1-β2)·g²
//! p ← p·(1 - lr·λ)                                (decoupled weight decay, matrices only)
//! p ← p - lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + ε)
//! ```

use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::recipe::OptimizerSection;

/// One trainable tensor and its moments.
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    m: Tensor,
    v: Tensor,
    /// Decoupled weight decay applies (matrices; not norms or biases).
    decay: bool,
}

impl Param {
    /// The AdamW update of [`AdamW::step`] as one loop over the elements when the parameter, its
    /// gradient and both moments are contiguous f32 CPU tensors (training runs in f32): the same
    /// f32 operations in the same order, without a dozen tensor ops per parameter (a model has
    /// hundreds of small parameters; the ops cost more than the arithmetic). False where it does
    /// not apply, and nothing was changed.
    fn step_in_place(&mut self, g: &Tensor, o: &Hyper, lr: f64, bc1: f64, bc2_sqrt: f64) -> bool {
        let n = self.tensor.numel();
        let all = [&self.tensor, g, &self.m, &self.v];
        if all.iter().any(|t| {
            t.device() != tch::Device::Cpu
                || t.kind() != Kind::Float
                || !t.is_contiguous()
                || t.numel() != n
        }) {
            return false;
        }
        let (b1, b2) = (o.beta1 as f32, o.beta2 as f32);
        let (c1, c2) = ((1.0 - o.beta1) as f32, (1.0 - o.beta2) as f32);
        let decay =
            (self.decay && o.weight_decay > 0.0).then_some((1.0 - lr * o.weight_decay) as f32);
        let (bc2, eps, step) = (bc2_sqrt as f32, o.eps as f32, (-lr / bc1) as f32);
        // SAFETY: four distinct contiguous f32 CPU tensors of n elements (a parameter, its
        // gradient and its two moments never share storage); the optimiser step runs while no
        // forward or backward pass does, so nothing else reads or writes them meanwhile. Writing
        // the parameter's data directly does not bump its autograd version counter, which only
        // matters to graphs that saved it — none is alive between steps.
        let (p, g, m, v) = unsafe {
            (
                std::slice::from_raw_parts_mut(self.tensor.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts(g.data_ptr() as *const f32, n),
                std::slice::from_raw_parts_mut(self.m.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts_mut(self.v.data_ptr() as *mut f32, n),
            )
        };
        let k = Consts {
            b1,
            b2,
            c1,
            c2,
            decay,
            bc2,
            eps,
            step,
        };
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                unsafe { adamw_avx512(p, g, m, v, &k) };
                return true;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                unsafe { adamw_avx2(p, g, m, v, &k) };
                return true;
            }
        }
        adamw_elements(p, g, m, v, &k);
        true
    }
}

/// The per-element constants of one AdamW step, in f32.
struct Consts {
    b1: f32,
    b2: f32,
    c1: f32,
    c2: f32,
    decay: Option<f32>,
    bc2: f32,
    eps: f32,
    step: f32,
}

/// One AdamW step over the elements (each operation rounded to f32, as the tensor version).
#[inline(always)]
fn adamw_elements(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &Consts) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = *m * k.b1 + g * k.c1;
        *v = *v * k.b2 + g * g * k.c2;
        if let Some(d) = k.decay {
            *p *= d;
        }
        let denom = v.sqrt() / k.bc2 + k.eps;
        *p += *m / denom * k.step;
    }
}

/// [`adamw_elements`] compiled for AVX-512 (the same operations, sixteen lanes at a time).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn adamw_avx512(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &Consts) {
    adamw_elements(p, g, m, v, k)
}

/// [`adamw_elements`] compiled for AVX2 (eight lanes at a time). Without FMA: Rust never fuses a
/// product and a sum on its own, so every lane rounds as the tensor version does.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn adamw_avx2(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &Consts) {
    adamw_elements(p, g, m, v, k)
}

/// AdamW's constants, copied out for [`Param::step_in_place`].
struct Hyper {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

/// The elements of a defined, contiguous f32 CPU tensor.
///
/// # Safety
/// Nothing may write the tensor's storage while the slice lives.
unsafe fn f32_data(t: &Tensor) -> Option<&[f32]> {
    if !t.defined()
        || t.device() != tch::Device::Cpu
        || t.kind() != Kind::Float
        || !t.is_contiguous()
    {
        return None;
    }
    let n = t.numel();
    if n == 0 {
        return Some(&[]);
    }
    // SAFETY: as documented; a contiguous f32 tensor holds n elements from its data pointer.
    Some(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, n) })
}

pub struct AdamW {
    pub params: Vec<Param>,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps taken (the bias corrections' t).
    pub t: u64,
}

impl AdamW {
    /// Over `named` tensors that require grad (others are skipped), sorted by name.
    pub fn new(named: HashMap<String, Tensor>, cfg: &OptimizerSection) -> Self {
        let mut params: Vec<Param> = named
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, tensor)| {
                let m = tensor.zeros_like().detach();
                let v = tensor.zeros_like().detach();
                let decay = tensor.dim() >= 2;
                Param {
                    name,
                    tensor,
                    m,
                    v,
                    decay,
                }
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            params,
            lr: cfg.lr,
            beta1: cfg.betas[0],
            beta2: cfg.betas[1],
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            t: 0,
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// The global L2 norm of all gradients (undefined gradients count as zero).
    pub fn grad_norm(&self) -> f64 {
        let _g = tch::no_grad_guard();
        let mut sq = 0.0f64;
        for p in &self.params {
            let g = p.tensor.grad();
            // SAFETY: read at once; nothing writes the gradient meanwhile.
            if let Some(gs) = unsafe { f32_data(&g) } {
                sq += sum_squares(gs);
                continue;
            }
            if g.defined() {
                sq += g
                    .to_kind(Kind::Double)
                    .square()
                    .sum(Kind::Double)
                    .double_value(&[]);
            }
        }
        sq.sqrt()
    }

    /// Scales every gradient so that the global norm is at most `max` (as PyTorch's
    /// `clip_grad_norm_`: by `max / (norm + 1e-6)` when that is below 1). Returns the norm before.
    pub fn clip_grad_norm(&mut self, max: f64) -> f64 {
        let norm = self.grad_norm();
        if max > 0.0 && norm.is_finite() {
            let coef = max / (norm + 1e-6);
            if coef < 1.0 {
                let _g = tch::no_grad_guard();
                for p in &mut self.params {
                    let mut g = p.tensor.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
        }
        norm
    }

    /// One AdamW update at learning rate `lr`. Parameters without a gradient are left alone.
    pub fn step(&mut self, lr: f64) {
        let _g = tch::no_grad_guard();
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let hyper = Hyper {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        };
        for p in &mut self.params {
            let g = p.tensor.grad();
            if !g.defined() {
                continue;
            }
            if p.step_in_place(&g, &hyper, lr, bc1, bc2_sqrt) {
                continue;
            }
            let _ = p.m.g_mul_scalar_(self.beta1);
            let _ = p.m.g_add_(&(&g * (1.0 - self.beta1)));
            let _ = p.v.g_mul_scalar_(self.beta2);
            let _ = p.v.g_add_(&(g.square() * (1.0 - self.beta2)));
            if p.decay && self.weight_decay > 0.0 {
                let _ = p.tensor.g_mul_scalar_(1.0 - lr * self.weight_decay);
            }
            let denom = p.v.sqrt() / bc2_sqrt + self.eps;
            let update = (&p.m / denom) * (-lr / bc1);
            let _ = p.tensor.g_add_(&update);
        }
    }

    /// The moments as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`), for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.params.len() * 2);
        for p in &self.params {
            out.push((format!("exp_avg.{}", p.name), p.m.shallow_clone()));
            out.push((format!("exp_avg_sq.{}", p.name), p.v.shallow_clone()));
        }
        out
    }

    /// Restores the moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(&mut self, mut state: HashMap<String, Tensor>, t: u64) -> Result<(), String> {
        let _g = tch::no_grad_guard();
        for p in &mut self.params {
            for (prefix, dst) in [("exp_avg", &mut p.m), ("exp_avg_sq", &mut p.v)] {
                let key = format!("{prefix}.{}", p.name);
                let src = state
                    .remove(&key)
                    .ok_or_else(|| format!("optimizer state has no {key}"))?;
                if src.size() != dst.size() {
                    return Err(format!(
                        "optimizer state {key}: shape {:?}, expected {:?}",
                        src.size(),
                        dst.size()
                    ));
                }
                dst.copy_(&src.to_kind(dst.kind()).to_device(dst.device()));
            }
        }
        self.t = t;
        Ok(())
    }
}

/// Linear warm-up over `warmup` steps, then a cosine from `lr` down to `lr·min_ratio` at `total`.
/// `step` counts from 0 (the learning rate of the first update is `lr / warmup`).
pub fn lr_at(step: u64, total: u64, cfg: &OptimizerSection) -> f64 {
    let lr = cfg.lr;
    if step < cfg.warmup_steps {
        return lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let span = total.saturating_sub(cfg.warmup_steps).max(1) as f64;
    let progress = ((step - cfg.warmup_steps) as f64 / span).min(1.0);
    let min = lr * cfg.min_lr_ratio;
    min + (lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Σ x² in f64 with eight running sums (one serial chain of adds would bound it by the add
/// latency: ~2 ms for the tiny benchmark's 1.7 M gradients, on the critical path of each step).
fn sum_squares(x: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v as f64) * (v as f64);
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum();
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(lr: f64, wd: f64) -> OptimizerSection {
        OptimizerSection {
            lr,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: wd,
            warmup_steps: 2,
            min_lr_ratio: 0.1,
            grad_clip: 1.0,
        }
    }

    fn param(values: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values)
            .view(shape)
            .set_requires_grad(true)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.detach().flatten(0, -1)).unwrap()
    }

    #[test]
    fn two_steps_match_hand_computed_adamw() {
        // p = [[1, -2]], loss = sum(p * [3, 0.5]) so g = [3, 0.5]; lr 0.1, wd 0.01.
        let p = param(&[1.0, -2.0], &[1, 2]);
        let mut opt = AdamW::new(
            HashMap::from([("w".to_string(), p.shallow_clone())]),
            &cfg(0.1, 0.01),
        );
        let c = Tensor::from_slice(&[3.0f32, 0.5]).view([1, 2]);
        (&p * &c).sum(Kind::Float).backward();
        opt.step(0.1);
        // Step 1: m = 0.1g, v = 0.001g², m̂ = g, v̂ = g², update = g/(|g| + 1e-8) ≈ sign(g) = 1.
        // p = p·(1 - 0.1·0.01) - 0.1·1 → 1·0.999 - 0.1 = 0.899; -2·0.999 - 0.1 = -2.098.
        let got = values(&p);
        assert!((got[0] - 0.899).abs() < 1e-6, "{got:?}");
        assert!((got[1] - (-2.098)).abs() < 1e-6, "{got:?}");

        // Step 2 with the same gradient: m = 0.19g, v = 0.001999g², bias corrections 0.19 and
        // 0.001999, so m̂/sqrt(v̂) = 1 again (up to ε): p = p·0.999 - 0.1.
        opt.zero_grad();
        (&p * &c).sum(Kind::Float).backward();
        opt.step(0.1);
        let got = values(&p);
        assert!((got[0] - (0.899 * 0.999 - 0.1)).abs() < 1e-6, "{got:?}");
        assert!((got[1] - (-2.098 * 0.999 - 0.1)).abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn different_gradients_give_the_textbook_numbers() {
        // A vector (no weight decay): g1 = 2, g2 = -1 on p = 0.5, lr 0.01, β = (0.9, 0.999).
        let p = param(&[0.5], &[1]);
        let mut opt = AdamW::new(
            HashMap::from([("b".to_string(), p.shallow_clone())]),
            &cfg(0.01, 0.5),
        );
        (&p * 2.0).sum(Kind::Float).backward();
        opt.step(0.01);
        // m1 = 0.2, v1 = 0.004, m̂ = 2, v̂ = 4 → p = 0.5 - 0.01·2/(2+1e-8) = 0.49
        assert!((values(&p)[0] - 0.49).abs() < 1e-7);
        opt.zero_grad();
        (&p * -1.0).sum(Kind::Float).backward();
        opt.step(0.01);
        // m2 = 0.9·0.2 - 0.1 = 0.08, v2 = 0.999·0.004 + 0.001 = 0.004996
        // m̂ = 0.08/0.19, v̂ = 0.004996/0.001999; p = 0.49 - 0.01·m̂/(sqrt(v̂)+1e-8)
        let m_hat = 0.08f64 / 0.19;
        let v_hat = 0.004996f64 / (1.0 - 0.999f64 * 0.999);
        let expect = 0.49 - 0.01 * m_hat / (v_hat.sqrt() + 1e-8);
        assert!(
            (values(&p)[0] as f64 - expect).abs() < 1e-6,
            "{} vs {expect}",
            values(&p)[0]
        );
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let p = param(&[0.0, 0.0], &[2]);
        let mut opt = AdamW::new(
            HashMap::from([("b".to_string(), p.shallow_clone())]),
            &cfg(0.1, 0.0),
        );
        (&p * Tensor::from_slice(&[3.0f32, 4.0]))
            .sum(Kind::Float)
            .backward();
        let before = opt.clip_grad_norm(1.0);
        assert!((before - 5.0).abs() < 1e-9);
        let g = values(&p.grad());
        assert!(
            (g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6,
            "{g:?}"
        );
        assert!((opt.grad_norm() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn frozen_tensors_are_not_optimised() {
        let frozen = Tensor::from_slice(&[1.0f32]);
        let p = param(&[1.0], &[1]);
        let opt = AdamW::new(
            HashMap::from([("f".to_string(), frozen), ("p".to_string(), p)]),
            &cfg(0.1, 0.0),
        );
        let names: Vec<&str> = opt.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["p"]);
    }

    #[test]
    fn state_round_trips() {
        let p = param(&[1.0, 2.0], &[2]);
        let mut a = AdamW::new(
            HashMap::from([("b".to_string(), p.shallow_clone())]),
            &cfg(0.1, 0.0),
        );
        (&p * 3.0).sum(Kind::Float).backward();
        a.step(0.1);
        let q = param(&[1.0, 2.0], &[2]);
        let mut b = AdamW::new(HashMap::from([("b".to_string(), q)]), &cfg(0.1, 0.0));
        let state: HashMap<String, Tensor> = a.state_tensors().into_iter().collect();
        b.load_state(state, a.t).unwrap();
        assert_eq!(b.t, 1);
        assert!(b.params[0].m.equal(&a.params[0].m));
        assert!(b.params[0].v.equal(&a.params[0].v));
        let e = b.load_state(HashMap::new(), 1).unwrap_err();
        assert_eq!(e, "optimizer state has no exp_avg.b");
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let c = cfg(1.0, 0.0);
        assert!((lr_at(0, 12, &c) - 0.5).abs() < 1e-12);
        assert!((lr_at(1, 12, &c) - 1.0).abs() < 1e-12);
        assert!(
            (lr_at(2, 12, &c) - 1.0).abs() < 1e-12,
            "cosine starts at the peak"
        );
        // Half-way through the cosine: the mean of peak and floor.
        assert!((lr_at(7, 12, &c) - 0.55).abs() < 1e-12);
        assert!((lr_at(12, 12, &c) - 0.1).abs() < 1e-12);
    }
}
