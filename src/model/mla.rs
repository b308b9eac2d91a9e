//! Multi-head latent attention (DeepSeek-V2/V3).
//!
//! Keys and values are compressed into one latent `c_kv` per token plus one rope key shared by
//! every head; that is all the cache holds. Prefill expands the latent through `kv_b_proj` (cheap
//! for many queries at once); decode instead absorbs `kv_b_proj` into the query and the output
//! (DeepSeek's "absorb" form), so a step never re-expands the whole history. Both are the same
//! function up to rounding, which the KV-cache-equals-recompute test checks.

use tch::{nn, Kind, Tensor};

use super::cache::{GrowBuf, LayerCache};
use super::config::ModelConfig;
use super::layers::{Linear, RmsNorm};
use super::loader::Loader;
use super::rope::Rotary;
use super::ModelError;

enum QueryProj {
    Direct(Linear),
    LowRank {
        q_a_proj: Linear,
        q_a_layernorm: RmsNorm,
        q_b_proj: Linear,
    },
}

pub struct Mla {
    q: QueryProj,
    kv_a_proj_with_mqa: Linear,
    kv_a_layernorm: RmsNorm,
    kv_b_proj: Linear,
    o_proj: Linear,
    heads: i64,
    nope: i64,
    rope: i64,
    v_dim: i64,
    rank: i64,
    scale: f64,
}

impl Mla {
    pub fn load(l: &Loader, p: nn::Path, cfg: &ModelConfig) -> Result<Self, ModelError> {
        let mla = cfg
            .mla
            .as_ref()
            .expect("MLA config present for deepseek models");
        let hidden = cfg.raw.hidden_size;
        let h = cfg.raw.num_attention_heads;
        let bias = cfg.raw.attention_bias.unwrap_or(false);
        let q = match mla.q_lora_rank {
            None => QueryProj::Direct(Linear::load(
                l,
                &p / "q_proj",
                hidden,
                h * mla.q_head_dim(),
                false,
            )?),
            Some(r) => QueryProj::LowRank {
                q_a_proj: Linear::load(l, &p / "q_a_proj", hidden, r, bias)?,
                // transformers builds these two norms with the class default eps (1e-6).
                q_a_layernorm: RmsNorm::load(l, &p / "q_a_layernorm", r, 1e-6)?,
                q_b_proj: Linear::load(l, &p / "q_b_proj", r, h * mla.q_head_dim(), false)?,
            },
        };
        Ok(Self {
            q,
            kv_a_proj_with_mqa: Linear::load(
                l,
                &p / "kv_a_proj_with_mqa",
                hidden,
                mla.kv_lora_rank + mla.qk_rope_head_dim,
                bias,
            )?,
            kv_a_layernorm: RmsNorm::load(l, &p / "kv_a_layernorm", mla.kv_lora_rank, 1e-6)?,
            kv_b_proj: Linear::load(
                l,
                &p / "kv_b_proj",
                mla.kv_lora_rank,
                h * (mla.qk_nope_head_dim + mla.v_head_dim),
                false,
            )?,
            o_proj: Linear::load(l, &p / "o_proj", h * mla.v_head_dim, hidden, bias)?,
            heads: h as i64,
            nope: mla.qk_nope_head_dim as i64,
            rope: mla.qk_rope_head_dim as i64,
            v_dim: mla.v_head_dim as i64,
            rank: mla.kv_lora_rank as i64,
            scale: cfg.softmax_scale(),
        })
    }

    pub fn new_cache() -> LayerCache {
        LayerCache::Latent {
            ckv: GrowBuf::new(1),
            k_pe: GrowBuf::new(1),
        }
    }

    pub fn forward(
        &self,
        x: &Tensor,
        start: i64,
        rot: &Rotary,
        cache: &mut LayerCache,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let (b, s, _) = x.size3().expect("attention input is [batch, seq, hidden]");
        let q = match &self.q {
            QueryProj::Direct(p) => p.forward(x),
            QueryProj::LowRank {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => q_b_proj.forward(&q_a_layernorm.forward(&q_a_proj.forward(x))),
        };
        let q = q
            .view([b, s, self.heads, self.nope + self.rope])
            .transpose(1, 2); // [B,H,S,Dn+Dr]
        let q_nope = q.narrow(-1, 0, self.nope);
        let q_pe = q.narrow(-1, self.nope, self.rope);

        let compressed = self.kv_a_proj_with_mqa.forward(x); // [B,S,C+Dr]: latent first, rope key last
        let ckv = self
            .kv_a_layernorm
            .forward(&compressed.narrow(-1, 0, self.rank));
        let k_pe = compressed.narrow(-1, self.rank, self.rope);

        let (cos, sin) = rot.cos_sin(start, s, x.kind());
        let q_pe = rot.apply(&q_pe, &cos, &sin);
        let k_pe = rot.apply(&k_pe, &cos, &sin); // [B,S,Dr], one key for all heads

        let LayerCache::Latent {
            ckv: ckv_cache,
            k_pe: pe_cache,
        } = cache
        else {
            unreachable!("MLA has a latent cache")
        };
        let ckv_all = ckv_cache.append(&ckv); // [B,T,C]
        let pe_all = pe_cache.append(&k_pe); // [B,T,Dr]

        let out = if s == 1 {
            self.absorbed(&q_nope, &q_pe, &ckv_all, &pe_all)
        } else {
            self.expanded(&q_nope, &q_pe, &ckv_all, &pe_all, start, mask)
        }; // [B,H,S,Dv]
        self.o_proj
            .forward(&out.transpose(1, 2).reshape([b, s, self.heads * self.v_dim]))
    }

    fn expanded(
        &self,
        q_nope: &Tensor,
        q_pe: &Tensor,
        ckv: &Tensor,
        pe: &Tensor,
        start: i64,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let (b, t, _) = ckv.size3().expect("latent cache is [batch, seq, rank]");
        let kv = self
            .kv_b_proj
            .forward(ckv)
            .view([b, t, self.heads, self.nope + self.v_dim])
            .transpose(1, 2);
        let k_nope = kv.narrow(-1, 0, self.nope);
        let v = kv.narrow(-1, self.nope, self.v_dim);
        let k_pe = pe.unsqueeze(1).expand([b, self.heads, t, self.rope], false);
        let q = Tensor::cat(&[q_nope, q_pe], -1);
        let k = Tensor::cat(&[&k_nope, &k_pe], -1);
        let causal = start == 0 && mask.is_none() && q.size()[2] > 1;
        Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, causal, self.scale, false)
    }

    fn absorbed(&self, q_nope: &Tensor, q_pe: &Tensor, ckv: &Tensor, pe: &Tensor) -> Tensor {
        // kv_b_proj rows per head: [K_nope (Dn) | V (Dv)], each over the latent C.
        let w = self
            .kv_b_proj
            .weight
            .view([self.heads, self.nope + self.v_dim, self.rank]);
        let w_uk = w.narrow(1, 0, self.nope); // [H,Dn,C]
        let w_uv = w.narrow(1, self.nope, self.v_dim); // [H,Dv,C]
        let q_lat = q_nope.matmul(&w_uk); // [B,H,S,C]
        let ckv = ckv.unsqueeze(1); // [B,1,T,C]
        let scores =
            q_lat.matmul(&ckv.transpose(-1, -2)) + q_pe.matmul(&pe.unsqueeze(1).transpose(-1, -2));
        let probs = (scores * self.scale)
            .softmax(-1, Kind::Float)
            .to_kind(ckv.kind());
        let o_lat = probs.matmul(&ckv); // [B,H,S,C]
        o_lat.matmul(&w_uv.transpose(-1, -2)) // [B,H,S,Dv]
    }
}
