//! Building blocks shared by every architecture: RMSNorm, linear layers and the SwiGLU MLP.

use tch::{nn, Kind, Tensor};

use super::loader::Loader;
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
}

pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// `weight` is `[out, in]` as nn.Linear stores it.
    pub fn load(
        l: &Loader,
        p: nn::Path,
        input: usize,
        output: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let weight = l.weight(&p, "weight", &[output as i64, input as i64])?;
        let bias = if bias {
            Some(l.weight(&p, "bias", &[output as i64])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if let Some(y) = super::gemv::try_linear(x, &self.weight, self.bias.as_ref()) {
            return y;
        }
        x.linear(&self.weight, self.bias.as_ref())
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
    /// `[hidden, inter]`), for kernels that compute the MLP directly.
    pub fn weights(&self) -> [&Tensor; 3] {
        [
            &self.gate_proj.weight,
            &self.up_proj.weight,
            &self.down_proj.weight,
        ]
    }

    pub fn has_bias(&self) -> bool {
        self.gate_proj.bias.is_some()
            || self.up_proj.bias.is_some()
            || self.down_proj.bias.is_some()
    }
}
