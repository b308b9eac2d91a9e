//! Building blocks shared by every architecture: RMSNorm, linear layers and the SwiGLU MLP.

use tch::{nn, Device, Kind, Tensor};

use super::gemv::{self, Scalar};
use super::loader::Loader;
use super::qlinear::QuantWeight;
use super::tiled;
use super::ModelError;

/// RMSNorm exactly as transformers orders it: normalise in f32, cast back, then scale.
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn load(l: &Loader, p: nn::Path, dim: usize, eps: f64) -> Result<Self, ModelError> {
        Ok(Self {
            weight: l.weight(&p, "weight", &[dim as i64])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let direct = match x.kind() {
            Kind::Float => self.forward_direct::<f32>(x),
            Kind::BFloat16 => self.forward_direct::<half::bf16>(x),
            _ => None,
        };
        if let Some(y) = direct {
            return y;
        }
        if x.kind() == Kind::Float {
            // One fused libtorch op; in f32 it is the same computation as below.
            let dim = self.weight.size()[0];
            return Tensor::rms_norm(x, [dim], Some(&self.weight), self.eps);
        }
        let kind = x.kind();
        let xf = x.to_kind(Kind::Float);
        let var = xf.square().mean_dim(-1, true, Kind::Float);
        let normed = (xf * (var + self.eps).rsqrt()).to_kind(kind);
        &self.weight * normed
    }

    /// [`RmsNorm::forward`] as one loop per row on the CPU when autograd need not see it. On the
    /// CPU libtorch runs `rms_norm` as about seven small ops, and at decode sizes their overhead
    /// was a fifth of a GRPO rollout's time. Same rounding points as above: f32 statistics,
    /// `x·rstd` rounded to the input's kind, then the weight's product rounded again. `None`
    /// where it does not apply.
    fn forward_direct<T: Scalar>(&self, x: &Tensor) -> Option<Tensor> {
        // Decode-sized inputs (a batch of 8 rows of 1536 is 12k elements), where the ops'
        // overhead is the cost, or any size on one thread (GRPO's workers: their reference pass
        // normalises 500-token batches). From a few tens of thousands of elements on (a
        // 512-token prefill of the tiny MoE model), libtorch's threaded kernels measured faster.
        if x.device() != Device::Cpu
            || (x.numel() > 1 << 14 && tch::get_num_threads() > 1)
            || gemv::records_graph(&[x, &self.weight])
        {
            return None;
        }
        // A slice of a wider row (MLA's latent, split from the rope key) is copied first: one
        // small copy instead of the seven-op fallback.
        let x = &x.contiguous();
        // SAFETY: read-only views of contiguous CPU tensors of `T` (checked by `cpu_slice`);
        // nothing writes them during the forward pass.
        let (xs, w) = unsafe {
            (
                gemv::cpu_slice::<T>(x)?,
                gemv::cpu_slice::<T>(&self.weight)?,
            )
        };
        let d = w.len();
        if d == 0 || xs.len() % d != 0 {
            return None;
        }
        let out = Tensor::empty(x.size().as_slice(), (T::KIND, Device::Cpu));
        // SAFETY: `out` is fresh, contiguous, xs.len() elements of `T`, written only here.
        let o: &mut [T] =
            unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut T, xs.len()) };
        let eps = self.eps as f32;
        let round = T::KIND != Kind::Float;
        for (row, orow) in xs.chunks_exact(d).zip(o.chunks_exact_mut(d)) {
            // Sixteen partial sums so the loop vectorises.
            let mut lanes = [0f32; 16];
            let mut chunks = row.chunks_exact(16);
            for c in &mut chunks {
                for (l, v) in lanes.iter_mut().zip(c) {
                    let f = v.to_f32();
                    *l += f * f;
                }
            }
            let tail: f32 = chunks.remainder().iter().map(|v| v.to_f32().powi(2)).sum();
            let mean = (lanes.iter().sum::<f32>() + tail) / d as f32;
            let rstd = 1.0 / (mean + eps).sqrt();
            for ((y, v), g) in orow.iter_mut().zip(row).zip(w) {
                let normed = v.to_f32() * rstd;
                let normed = if round {
                    T::from_f32(normed).to_f32()
                } else {
                    normed
                };
                *y = T::from_f32(g.to_f32() * normed);
            }
        }
        Some(out)
    }
}

pub struct Linear {
    pub weight: Weight,
    pub bias: Option<Tensor>,
}

/// A linear layer's weight, `[out, in]` as nn.Linear stores it.
pub enum Weight {
    /// A tensor of the run's dtype, in the var store (trainable).
    Float(Tensor),
    /// Block-quantized bytes (`--quant`, or a quantized GGUF tensor); inference only.
    Quant(QuantWeight),
}

impl Linear {
    /// A layer that is quantized when the loader quantizes (`--quant`).
    pub fn load(
        l: &Loader,
        p: nn::Path,
        input: usize,
        output: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let weight = l.linear_weight(&p, "weight", &[output as i64, input as i64])?;
        Self::with_bias(l, p, output, bias, weight)
    }

    /// A layer that stays in floating point whatever the loader quantizes (MLA's `kv_b_proj`,
    /// which attention absorbs into its own products).
    pub fn load_float(
        l: &Loader,
        p: nn::Path,
        input: usize,
        output: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let weight = Weight::Float(l.weight(&p, "weight", &[output as i64, input as i64])?);
        Self::with_bias(l, p, output, bias, weight)
    }

    fn with_bias(
        l: &Loader,
        p: nn::Path,
        output: usize,
        bias: bool,
        weight: Weight,
    ) -> Result<Self, ModelError> {
        let bias = if bias {
            Some(l.weight(&p, "bias", &[output as i64])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        match &self.weight {
            Weight::Float(w) => linear(x, w, self.bias.as_ref()),
            Weight::Quant(q) => q.forward(x, self.bias.as_ref()),
        }
    }

    /// The weight tensor, unless the layer is quantized.
    pub fn float_weight(&self) -> Option<&Tensor> {
        match &self.weight {
            Weight::Float(w) => Some(w),
            Weight::Quant(_) => None,
        }
    }
}

/// `x.linear(weight, bias)` by the fastest path this machine has: the GEMV kernels for a few rows
/// (decode); for more rows of a bf16 or f16 weight, our float kernels ([`tiled`]: the weight
/// widened a panel at a time, 1.3–1.7× libtorch's bf16 GEMM even with AVX512-BF16, `cargo bench
/// --bench gemv -- 8`); where they do not run, libtorch's GEMM, in f32 over a widened copy of the
/// layer where its 16-bit GEMM is slow on this CPU (see [`widens_for_gemm`]).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    if let Some(y) = gemv::try_linear(x, weight, bias) {
        return y;
    }
    let plain = !gemv::records_graph(&[x, weight]) && x.kind() == weight.kind();
    if plain {
        if let Some(y) = tiled::try_linear_16bit(x, weight, bias) {
            return y;
        }
    }
    if plain && widens_for_gemm(weight) {
        let b = bias.map(|b| b.to_kind(Kind::Float));
        return x
            .to_kind(Kind::Float)
            .linear(&weight.to_kind(Kind::Float), b.as_ref())
            .to_kind(x.kind());
    }
    x.linear(weight, bias)
}

/// Whether a CPU product with this weight runs faster in f32 over a widened copy (made per call,
/// a layer at a time, so the model is never held at 32 bits) than in libtorch's 16-bit GEMM.
/// libtorch's bf16 GEMM is fast only with AVX512-BF16 (or AMX, which comes with it): without, it
/// ran 3× slower than f32 on an AVX2 EPYC (transformers' bf16 prefill 6.2 tok/s against f32 19
/// for the 1.5B shape, `reference/cpu_facts.md`). Its f16 GEMM is slow on every x86 CPU measured
/// (44 against 170 GFLOP/s in f32 on the AVX-512 one). The result is the same up to rounding: the
/// 16-bit GEMM sums in f32 too, and the output is rounded to the run's dtype once.
fn widens_for_gemm(weight: &Tensor) -> bool {
    if !cfg!(target_arch = "x86_64") || weight.device() != Device::Cpu {
        return false;
    }
    match weight.kind() {
        Kind::Half => true,
        Kind::BFloat16 => gemv::isa() != gemv::Isa::Avx512Bf16,
        _ => false,
    }
}

/// `down_proj(silu(gate_proj(x)) * up_proj(x))`: dense layers, experts and shared experts.
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub fn load(
        l: &Loader,
        p: nn::Path,
        hidden: usize,
        inter: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            gate_proj: Linear::load(l, &p / "gate_proj", hidden, inter, bias)?,
            up_proj: Linear::load(l, &p / "up_proj", hidden, inter, bias)?,
            down_proj: Linear::load(l, &p / "down_proj", inter, hidden, bias)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj
            .forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }

    /// The weights `[gate_proj, up_proj, down_proj]` (`[inter, hidden]`, `[inter, hidden]`,
    /// `[hidden, inter]`), for kernels that compute the MLP directly; `None` when quantized.
    pub fn weights(&self) -> Option<[&Tensor; 3]> {
        Some([
            self.gate_proj.float_weight()?,
            self.up_proj.float_weight()?,
            self.down_proj.float_weight()?,
        ])
    }

    pub fn has_bias(&self) -> bool {
        self.gate_proj.bias.is_some()
            || self.up_proj.bias.is_some()
            || self.down_proj.bias.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct loop against libtorch's own ops (grad mode on, so `forward` takes the libtorch
    /// path), in f32 and bf16, on rows whose length is not a multiple of the sixteen lanes.
    #[test]
    fn direct_rms_norm_matches_libtorch() {
        tch::manual_seed(7);
        for (kind, tol) in [(Kind::Float, 1e-6), (Kind::BFloat16, 1e-2)] {
            let dim = 72;
            let norm = RmsNorm {
                weight: (Tensor::rand([dim], (Kind::Float, Device::Cpu)) + 0.5).to_kind(kind),
                eps: 1e-6,
            };
            // A slice of wider rows, as MLA normalises its latent: not contiguous.
            let wide =
                (Tensor::randn([3, 5, dim + 16], (Kind::Float, Device::Cpu)) * 3.0).to_kind(kind);
            let x = wide.narrow(-1, 0, dim);
            assert!(!x.is_contiguous());
            let direct = tch::no_grad(|| norm.forward(&x));
            let reference = {
                let x = x.set_requires_grad(true);
                let y = norm.forward(&x);
                assert!(y.requires_grad(), "the reference must take libtorch's path");
                y.detach()
            };
            let diff = (direct.to_kind(Kind::Float) - reference.to_kind(Kind::Float))
                .abs()
                .max()
                .double_value(&[]);
            // bf16: at most one rounding step apart where the f32 sums differ in order.
            assert!(diff <= tol * 8.0, "{kind:?}: max difference {diff}");
            assert_eq!(direct.size(), reference.size());
        }
    }

    /// A long product (a prompt's rows) with 16-bit weights, by whichever path this CPU takes
    /// (our float kernels, libtorch's GEMM on a widened copy, or its bf16 GEMM), against libtorch's
    /// f32 linear over the same values widened: the same sums up to their order, then one
    /// rounding to the 16-bit kind. Rows of 3-D x and odd sizes, with and without a bias.
    #[test]
    fn long_16_bit_products_match_libtorch_in_f32() {
        tch::manual_seed(8);
        let _g = tch::no_grad_guard();
        let cpu = (Kind::Float, Device::Cpu);
        for (kind, ulp) in [(Kind::BFloat16, 1.0 / 128.0), (Kind::Half, 1.0 / 1024.0)] {
            for (n, k, rows) in [(29, 40, 17), (300, 520, 45)] {
                let w = Tensor::randn([n, k], cpu).to_kind(kind);
                let b = Tensor::randn([n], cpu).to_kind(kind);
                let x = Tensor::randn([1, rows, k], cpu).to_kind(kind);
                for bias in [None, Some(&b)] {
                    let got = linear(&x, &w, bias).to_kind(Kind::Float);
                    let wf = w.to_kind(Kind::Float);
                    let bf = bias.map(|b| b.to_kind(Kind::Float));
                    let want = x.to_kind(Kind::Float).linear(&wf, bf.as_ref());
                    let size = x
                        .to_kind(Kind::Float)
                        .abs()
                        .linear::<Tensor>(&wf.abs(), None);
                    let tol = want.abs() * ulp + size * (k as f64 * 1.2e-7) + 1e-6;
                    let bad = (&got - &want).abs().gt_tensor(&tol).sum(Kind::Int64);
                    assert_eq!(got.size(), [1, rows, n]);
                    assert_eq!(
                        bad.int64_value(&[]),
                        0,
                        "{kind:?} [{n}, {k}] × {rows} rows, bias {}: max error {}",
                        bias.is_some(),
                        (&got - &want).abs().max().double_value(&[])
                    );
                }
            }
        }
    }
}
