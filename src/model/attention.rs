//! Grouped-query attention for Qwen2, Llama and Qwen3 (the R1 distills).

use tch::{nn, Kind, Tensor};

use super::cache::{GrowBuf, LayerCache};
use super::config::ModelConfig;
use super::layers::{Linear, RmsNorm};
use super::loader::Loader;
use super::rope::{Positions, Rotary};
use super::ModelError;

pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Qwen3 normalises each head's queries and keys before the rotation.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    rope_dim: i64,
    scale: f64,
}

impl Attention {
    pub fn load(l: &Loader, p: nn::Path, cfg: &ModelConfig) -> Result<Self, ModelError> {
        let hidden = cfg.raw.hidden_size;
        let (h, kvh, d) = (
            cfg.raw.num_attention_heads,
            cfg.num_kv_heads(),
            cfg.head_dim(),
        );
        let qk_norm = cfg.model_type == super::ModelType::Qwen3;
        let eps = cfg.raw.rms_norm_eps;
        Ok(Self {
            q_proj: Linear::load(l, &p / "q_proj", hidden, h * d, cfg.qkv_bias())?,
            k_proj: Linear::load(l, &p / "k_proj", hidden, kvh * d, cfg.qkv_bias())?,
            v_proj: Linear::load(l, &p / "v_proj", hidden, kvh * d, cfg.qkv_bias())?,
            o_proj: Linear::load(l, &p / "o_proj", h * d, hidden, cfg.o_bias())?,
            q_norm: if qk_norm {
                Some(RmsNorm::load(l, &p / "q_norm", d, eps)?)
            } else {
                None
            },
            k_norm: if qk_norm {
                Some(RmsNorm::load(l, &p / "k_norm", d, eps)?)
            } else {
                None
            },
            heads: h as i64,
            kv_heads: kvh as i64,
            head_dim: d as i64,
            rope_dim: cfg.rope_dim() as i64,
            scale: cfg.softmax_scale(),
        })
    }

    pub fn new_cache() -> LayerCache {
        LayerCache::Standard {
            k: GrowBuf::new(2),
            v: GrowBuf::new(2),
        }
    }

    fn rotate(&self, rot: &Rotary, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        if self.rope_dim == self.head_dim {
            rot.apply(x, cos, sin)
        } else {
            let pass = x.narrow(-1, self.rope_dim, self.head_dim - self.rope_dim);
            Tensor::cat(
                &[rot.apply(&x.narrow(-1, 0, self.rope_dim), cos, sin), pass],
                -1,
            )
        }
    }

    /// `x [B,S,hidden]` at positions `pos`; appends to `cache`.
    pub fn forward(
        &self,
        x: &Tensor,
        pos: &Positions,
        rot: &Rotary,
        cache: &mut LayerCache,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let (b, s, _) = x.size3().expect("attention input is [batch, seq, hidden]");
        let shape = |n: i64| [b, s, n, self.head_dim];
        let mut q = self.q_proj.forward(x).view(shape(self.heads));
        let mut k = self.k_proj.forward(x).view(shape(self.kv_heads));
        let v = self
            .v_proj
            .forward(x)
            .view(shape(self.kv_heads))
            .transpose(1, 2);
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q);
            k = kn.forward(&k);
        }
        let (cos, sin) = rot.cos_sin_for(pos, s, x.kind());
        let q = self.rotate(rot, &q.transpose(1, 2), &cos, &sin);
        let k = self.rotate(rot, &k.transpose(1, 2), &cos, &sin);
        let LayerCache::Standard { k: kc, v: vc } = cache else {
            unreachable!("standard attention has a standard cache")
        };
        let k_all = kc.append(&k);
        let v_all = vc.append(&v);
        let causal = s > 1 && pos.start == 0 && mask.is_none();
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &k_all,
            &v_all,
            mask,
            0.0,
            causal,
            self.scale,
            self.kv_heads != self.heads,
        );
        self.o_proj.forward(
            &out.transpose(1, 2)
                .reshape([b, s, self.heads * self.head_dim]),
        )
    }
}

/// Boolean mask: query i may attend key j iff j <= start + i, and in a ragged batch only from
/// its row's first real column (`pad`, leading padding per row; empty when there is none).
/// `[S, start+S]`, or `[B, 1, S, start+S]` with padding. `None` when the plain causal flag (no
/// cache) or no mask (one query) suffices.
pub fn causal_mask(start: i64, s: i64, pad: &[i64], device: tch::Device) -> Option<Tensor> {
    if pad.is_empty() && (s == 1 || start == 0) {
        return None;
    }
    let q = Tensor::arange(s, (Kind::Int64, device)).unsqueeze(1) + start;
    let k = Tensor::arange(start + s, (Kind::Int64, device)).unsqueeze(0);
    let causal = k.le_tensor(&q);
    if pad.is_empty() {
        return Some(causal);
    }
    let first = Tensor::from_slice(pad)
        .to_device(device)
        .view([pad.len() as i64, 1, 1, 1]);
    let real = k.view([1, 1, 1, start + s]).ge_tensor(&first);
    // A padding query (a left-padded prompt's front) sees itself, so that its row of scores is
    // not all masked (softmax would give NaN, which would reach real rows through its values).
    let itself = k.eq_tensor(&q).view([1, 1, s, start + s]);
    Some(
        causal
            .view([1, 1, s, start + s])
            .logical_and(&real)
            .logical_or(&itself),
    )
}
