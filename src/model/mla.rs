//! Multi-head latent attention (DeepSeek-V2/V3).
//!
//! Keys and values are compressed into one latent `c_kv` per token plus one rope key shared by
//! every head; that is all the cache holds. Prefill expands the latent through `kv_b_proj` (cheap
//! for many queries at once); decode instead absorbs `kv_b_proj` into the query and the output
//! (DeepSeek's "absorb" form), so a step never re-expands the whole history. Both are the same
//! function up to rounding, which the KV-cache-equals-recompute test checks.

use tch::{nn, Device, Kind, Tensor};

use super::cache::{GrowBuf, LayerCache};
use super::config::ModelConfig;
use super::gemv::{self, Scalar};
use super::layers::{Linear, RmsNorm};
use super::loader::Loader;
use super::rope::{Positions, Rotary};
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
    /// `kv_b_proj`'s weight: loaded with [`Linear::load_float`], so never quantized.
    fn kv_b_proj_weight(&self) -> &Tensor {
        self.kv_b_proj
            .float_weight()
            .expect("kv_b_proj is loaded in floating point")
    }

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
            kv_b_proj: Linear::load_float(
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
        pos: &Positions,
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
        // Splits rather than pairs of `narrow`s: in training a narrow's backward allocates and
        // zeroes a gradient the size of the whole input; a split's is one concatenation.
        let q = q
            .view([b, s, self.heads, self.nope + self.rope])
            .transpose(1, 2) // [B,H,S,Dn+Dr]
            .split_with_sizes([self.nope, self.rope], -1);
        let (q_nope, q_pe) = (&q[0], &q[1]);

        let compressed = self
            .kv_a_proj_with_mqa
            .forward(x) // [B,S,C+Dr]: latent first, rope key last
            .split_with_sizes([self.rank, self.rope], -1);
        let ckv = self.kv_a_layernorm.forward(&compressed[0]);
        let k_pe = &compressed[1];

        let (cos, sin) = rot.cos_sin_for(pos, s, x.kind());
        let q_pe = rot.apply(q_pe, &cos, &sin);
        // [B,S,Dr], one key for all heads (per-row tables are [B,1,S,Dr]: give it that head axis).
        let k_pe = match pos.per_row {
            None => rot.apply(k_pe, &cos, &sin),
            Some(_) => rot.apply(&k_pe.unsqueeze(1), &cos, &sin).squeeze_dim(1),
        };

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
            self.absorbed(q_nope, &q_pe, &ckv_all, &pe_all, mask)
        } else {
            self.expanded(q_nope, &q_pe, &ckv_all, &pe_all, pos.start, mask)
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
            .transpose(1, 2)
            .split_with_sizes([self.nope, self.v_dim], -1);
        let (k_nope, v) = (&kv[0], &kv[1]);
        // Scores as two products (the shared rope key is multiplied once per batch row, not
        // expanded to every head and concatenated), masked, softmax, then V. bf16/f16 compute in
        // f32, as libtorch's SDPA does on the CPU.
        let (_, h, s, _) = q_nope.size4().expect("[B,H,S,Dn]");
        let kind = v.kind();
        let f = |x: &Tensor| {
            if kind == Kind::Float {
                x.shallow_clone()
            } else {
                x.to_kind(Kind::Float)
            }
        };
        let (q_nope, q_pe, k_nope, pe, v) = (f(q_nope), f(q_pe), f(k_nope), f(pe), f(v));
        let scores = q_nope.matmul(&k_nope.transpose(-1, -2))
            + q_pe
                .reshape([b, h * s, self.rope])
                .bmm(&pe.transpose(1, 2))
                .view([b, h, s, t]); // [B,H,S,T]
        let scores = scores * self.scale;
        let scores = match mask {
            // `mask`: true where query i may see key j.
            Some(m) => scores.masked_fill(&m.logical_not(), f64::NEG_INFINITY),
            None if s > 1 => {
                let future = Tensor::ones([s, t], (Kind::Bool, scores.device())).triu(start + 1);
                scores.masked_fill(&future, f64::NEG_INFINITY)
            }
            None => scores,
        };
        scores.softmax(-1, Kind::Float).matmul(&v).to_kind(kind)
    }

    /// One query position per row. `mask` (`[B,1,1,T]`, true where a key may be seen) is only
    /// there in a ragged batch, to hide the padding in front of shorter rows.
    fn absorbed(
        &self,
        q_nope: &Tensor,
        q_pe: &Tensor,
        ckv: &Tensor,
        pe: &Tensor,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let direct = match (mask, ckv.kind()) {
            (Some(_), _) => None,
            (None, Kind::Float) => self.absorbed_direct::<f32>(q_nope, q_pe, ckv, pe),
            (None, Kind::BFloat16) => self.absorbed_direct::<half::bf16>(q_nope, q_pe, ckv, pe),
            _ => None,
        };
        if let Some(out) = direct {
            return out;
        }
        // Every product is a `bmm` over heads or over the batch with the operands as stored (no
        // broadcast copies of the weight or of the cache): heads and query positions are folded
        // into rows.
        let (b, h, s, _) = q_nope.size4().expect("[B,H,S,Dn]");
        // kv_b_proj rows per head: [K_nope (Dn) | V (Dv)], each over the latent C.
        let w = self
            .kv_b_proj_weight()
            .view([self.heads, self.nope + self.v_dim, self.rank]);
        let w_uk = w.narrow(1, 0, self.nope); // [H,Dn,C]
        let w_uv = w.narrow(1, self.nope, self.v_dim); // [H,Dv,C]
        let q_lat = q_nope
            .transpose(0, 1)
            .reshape([h, b * s, self.nope])
            .bmm(&w_uk) // [H,B·S,C]
            .view([h, b, s, self.rank])
            .transpose(0, 1)
            .reshape([b, h * s, self.rank]); // [B,H·S,C]
        let scores = q_lat.bmm(&ckv.transpose(1, 2))
            + q_pe.reshape([b, h * s, self.rope]).bmm(&pe.transpose(1, 2)); // [B,H·S,T]
        let scores = match mask {
            Some(m) => {
                let t = ckv.size()[1];
                scores.masked_fill(&m.view([b, 1, t]).logical_not(), f64::NEG_INFINITY)
            }
            None => scores,
        };
        let probs = (scores * self.scale)
            .softmax(-1, Kind::Float)
            .to_kind(ckv.kind());
        let o_lat = probs.bmm(ckv); // [B,H·S,C]
        o_lat
            .view([b, h, s, self.rank])
            .transpose(0, 1)
            .reshape([h, b * s, self.rank])
            .bmm(&w_uv.transpose(1, 2)) // [H,B·S,Dv]
            .view([h, b, s, self.v_dim])
            .transpose(0, 1) // [B,H,S,Dv]
    }

    /// [`Mla::absorbed`] for one query position as plain loops on the CPU, when autograd need not
    /// see it and the work is small (a few rows over a short cache; long caches and big models go
    /// to libtorch's threaded `bmm`s). Each intermediate is rounded where the tensor version
    /// rounds it: the latent query, the two score terms and their sum, the scaled scores,
    /// the probabilities (softmax in f32), the latent output and the output. Replaces about twenty
    /// small tensor ops per layer and step. `None` where it does not apply.
    fn absorbed_direct<T: Scalar>(
        &self,
        q_nope: &Tensor,
        q_pe: &Tensor,
        ckv: &Tensor,
        pe: &Tensor,
    ) -> Option<Tensor> {
        // Measured on the tiny deepseek_v3 (2-core EPYC): ahead of the bmm path for one row
        // (about 10 µs a layer), behind it from 8 rows over an 80-token cache.
        const MAX_WORK: i64 = 1 << 16;
        let w = self.kv_b_proj_weight();
        let (b, h, s, dn) = q_nope.size4().ok()?;
        let (_, t, c) = ckv.size3().ok()?;
        let dr = self.rope;
        let dv = self.v_dim;
        if s != 1
            || !gemv::available()
            || b * h * t * (c + dr) > MAX_WORK
            || [q_nope, q_pe, ckv, pe, w]
                .iter()
                .any(|x| x.device() != Device::Cpu || x.kind() != T::KIND)
            || q_pe.size() != [b, h, 1, dr]
            || pe.size() != [b, t, dr]
            || gemv::records_graph(&[q_nope, q_pe, ckv, pe, w])
        {
            return None;
        }
        // Rows of the operands must be contiguous; batches and heads may be strided.
        let (qs, ps, cs, es) = (q_nope.stride(), q_pe.stride(), ckv.stride(), pe.stride());
        if qs[3] != 1 || ps[3] != 1 || cs[2] != 1 || cs[1] != c || es[2] != 1 || es[1] != dr {
            return None;
        }
        // SAFETY: kv_b_proj's weight is contiguous `[H·(Dn+Dv), C]` and not written during a
        // forward pass.
        let wk: &[T] = unsafe { gemv::cpu_slice(w) }?;
        let (h_, dn_, dv_, c_, t_, dr_) = (
            h as usize,
            dn as usize,
            dv as usize,
            c as usize,
            t as usize,
            dr as usize,
        );
        // Element views of the strided operands.
        // SAFETY: each is a CPU tensor of `T` (checked above) with the sizes and strides read
        // above; every index formed below stays inside them; nothing writes them meanwhile.
        let at = |x: &Tensor, off: i64, len: usize| -> &[T] {
            unsafe {
                std::slice::from_raw_parts((x.data_ptr() as *const T).offset(off as isize), len)
            }
        };
        // Output laid out `[B, 1, H, Dv]` and returned as the `[B,H,1,Dv]` view the caller
        // transposes back (so its reshape copies nothing).
        let out = Tensor::empty([b, 1, h, dv], (T::KIND, Device::Cpu));
        // SAFETY: fresh, contiguous, written only through this slice.
        let o: &mut [T] = unsafe {
            std::slice::from_raw_parts_mut(out.data_ptr() as *mut T, (b * h * dv) as usize)
        };
        let dims = HeadDims {
            dn: dn_,
            c: c_,
            t: t_,
            dr: dr_,
            scale: self.scale as f32,
        };
        let mut scratch = vec![0f32; 2 * c_ + t_ + dr_ + dn_];
        let mut keys = vec![0f32; t_ * c_];
        let mut pes = vec![0f32; t_ * dr_];
        for bi in 0..b {
            let kc = at(ckv, bi * cs[0], t_ * c_);
            keys.iter_mut().zip(kc).for_each(|(a, x)| *a = x.to_f32());
            let kp = at(pe, bi * es[0], t_ * dr_);
            pes.iter_mut().zip(kp).for_each(|(a, x)| *a = x.to_f32());
            for hi in 0..h_ {
                let qn = at(q_nope, bi * qs[0] + hi as i64 * qs[1], dn_);
                let qp = at(q_pe, bi * ps[0] + hi as i64 * ps[1], dr_);
                let wh = &wk[hi * (dn_ + dv_) * c_..(hi + 1) * (dn_ + dv_) * c_];
                let row = (bi as usize * h_ + hi) * dv_;
                absorbed_head_fast(
                    &dims,
                    qn,
                    qp,
                    wh,
                    &keys,
                    &pes,
                    &mut scratch,
                    &mut o[row..row + dv_],
                );
            }
        }
        Some(out.transpose(1, 2))
    }
}

struct HeadDims {
    dn: usize,
    c: usize,
    t: usize,
    dr: usize,
    scale: f32,
}

/// One head of [`Mla::absorbed_direct`]: `out[Dv]` from the head's query (`qn [Dn]`, rotated
/// `qp [Dr]`), its rows of kv_b_proj (`wh`: W_uk `[Dn, C]` then W_uv `[Dv, C]`), and the batch
/// row's cache as f32 (`keys [T, C]`, `pes [T, Dr]`), compiled for the best vector set the CPU
/// has so that the loops vectorise. The sums run in a fixed order (sixteen partial sums), so every
/// vector width gives the same result.
#[allow(clippy::too_many_arguments)]
fn absorbed_head_fast<T: Scalar>(
    d: &HeadDims,
    qn: &[T],
    qp: &[T],
    wh: &[T],
    keys: &[f32],
    pes: &[f32],
    scratch: &mut [f32],
    out: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx512<T: Scalar>(
            d: &HeadDims,
            qn: &[T],
            qp: &[T],
            wh: &[T],
            keys: &[f32],
            pes: &[f32],
            scratch: &mut [f32],
            out: &mut [T],
        ) {
            absorbed_head(d, qn, qp, wh, keys, pes, scratch, out)
        }
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx2<T: Scalar>(
            d: &HeadDims,
            qn: &[T],
            qp: &[T],
            wh: &[T],
            keys: &[f32],
            pes: &[f32],
            scratch: &mut [f32],
            out: &mut [T],
        ) {
            absorbed_head(d, qn, qp, wh, keys, pes, scratch, out)
        }
        match gemv::isa() {
            // SAFETY: `isa()` found AVX-512F on this CPU.
            gemv::Isa::Avx512Bf16 => {
                return unsafe { avx512(d, qn, qp, wh, keys, pes, scratch, out) }
            }
            // SAFETY: `isa()` found AVX2 and FMA on this CPU.
            gemv::Isa::Avx2 => return unsafe { avx2(d, qn, qp, wh, keys, pes, scratch, out) },
            gemv::Isa::None => {}
        }
    }
    absorbed_head(d, qn, qp, wh, keys, pes, scratch, out)
}

/// The body of [`absorbed_head_fast`], inlined into each of its compilations.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn absorbed_head<T: Scalar>(
    d: &HeadDims,
    qn: &[T],
    qp: &[T],
    wh: &[T],
    keys: &[f32],
    pes: &[f32],
    scratch: &mut [f32],
    out: &mut [T],
) {
    let r = |x: f32| T::from_f32(x).to_f32();
    let (q_lat, rest) = scratch.split_at_mut(d.c);
    let (o_lat, rest) = rest.split_at_mut(d.c);
    let (scores, rest) = rest.split_at_mut(d.t);
    let (qpf, rest) = rest.split_at_mut(d.dr);
    let qnf = &mut rest[..d.dn];
    qnf.iter_mut().zip(qn).for_each(|(a, x)| *a = x.to_f32());
    qpf.iter_mut().zip(qp).for_each(|(a, x)| *a = x.to_f32());
    // q_lat = q_nope · W_uk[h]   (W_uk[h] is [Dn, C])
    q_lat.iter_mut().for_each(|x| *x = 0.0);
    for (dd, &qd) in qnf.iter().enumerate() {
        for (a, w) in q_lat.iter_mut().zip(&wh[dd * d.c..(dd + 1) * d.c]) {
            *a += qd * w.to_f32();
        }
    }
    q_lat.iter_mut().for_each(|x| *x = r(*x));
    let mut max = f32::NEG_INFINITY;
    for (ti, sc) in scores.iter_mut().enumerate() {
        let a = r(dot(q_lat, &keys[ti * d.c..(ti + 1) * d.c]));
        let p = r(dot(qpf, &pes[ti * d.dr..(ti + 1) * d.dr]));
        *sc = r(r(a + p) * d.scale);
        max = max.max(*sc);
    }
    let mut z = 0f32;
    for sc in scores.iter_mut() {
        *sc = (*sc - max).exp();
        z += *sc;
    }
    scores.iter_mut().for_each(|p| *p = r(*p / z));
    // o_lat = probs · ckv
    o_lat.iter_mut().for_each(|x| *x = 0.0);
    for (ti, &p) in scores.iter().enumerate() {
        for (a, k) in o_lat.iter_mut().zip(&keys[ti * d.c..(ti + 1) * d.c]) {
            *a += p * k;
        }
    }
    o_lat.iter_mut().for_each(|x| *x = r(*x));
    // out = o_lat · W_uv[h]ᵀ   (W_uv[h] is [Dv, C])
    let wv = &wh[d.dn * d.c..];
    for (dvi, ov) in out.iter_mut().enumerate() {
        let wr = &wv[dvi * d.c..(dvi + 1) * d.c];
        let mut acc = [0f32; 16];
        let mut i = 0;
        while i + 16 <= d.c {
            for l in 0..16 {
                acc[l] += o_lat[i + l] * wr[i + l].to_f32();
            }
            i += 16;
        }
        let mut sum: f32 = acc.iter().sum();
        while i < d.c {
            sum += o_lat[i] * wr[i].to_f32();
            i += 1;
        }
        *ov = T::from_f32(sum);
    }
}

/// Dot product with sixteen running sums (so it vectorises), then the tail.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0f32; 16];
    let mut i = 0;
    while i + 16 <= n {
        for l in 0..16 {
            acc[l] += a[i + l] * b[i + l];
        }
        i += 16;
    }
    let mut sum: f32 = acc.iter().sum();
    while i < n {
        sum += a[i] * b[i];
        i += 1;
    }
    sum
}
