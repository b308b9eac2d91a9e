//! The KV cache. Standard attention caches K and V per KV head; MLA caches only what the
//! architecture needs — the normalised latent `c_kv` (kv_lora_rank) and the rotated shared rope
//! key (qk_rope_head_dim), 576 numbers per token per layer for DeepSeek-V3 instead of 40 960 for
//! expanded keys and values. Buffers grow by doubling and are written in place.

use tch::Tensor;

/// A tensor that grows along one dimension; `view()` is the filled prefix.
pub struct GrowBuf {
    buf: Option<Tensor>,
    dim: i64,
    len: i64,
}

impl GrowBuf {
    pub fn new(dim: i64) -> Self {
        Self {
            buf: None,
            dim,
            len: 0,
        }
    }

    /// Appends `x` along the growth dimension and returns everything stored so far.
    pub fn append(&mut self, x: &Tensor) -> Tensor {
        let add = x.size()[self.dim as usize];
        let needed = self.len + add;
        let cap = self.buf.as_ref().map_or(0, |b| b.size()[self.dim as usize]);
        if needed > cap {
            let mut shape = x.size();
            shape[self.dim as usize] = (needed.max(64) as u64).next_power_of_two() as i64;
            let fresh = Tensor::zeros(shape.as_slice(), (x.kind(), x.device()));
            if let Some(old) = &self.buf {
                fresh
                    .narrow(self.dim, 0, self.len)
                    .copy_(&old.narrow(self.dim, 0, self.len));
            }
            self.buf = Some(fresh);
        }
        let buf = self.buf.as_ref().expect("allocated above");
        buf.narrow(self.dim, self.len, add).copy_(x);
        self.len = needed;
        buf.narrow(self.dim, 0, self.len)
    }

    pub fn truncate(&mut self, len: i64) {
        self.len = self.len.min(len);
    }

    /// Repeats the (batch-1) contents `n` times along dim 0, e.g. one prompt for G rollouts.
    pub fn repeat_batch(&mut self, n: i64) {
        if let Some(b) = &self.buf {
            let filled = b.narrow(self.dim, 0, self.len);
            let mut reps = vec![1i64; filled.dim()];
            reps[0] = n;
            let mut grown = filled.repeat(reps.as_slice());
            if self.len > 0 {
                // keep some headroom so the next appends do not reallocate at once
                let mut shape = grown.size();
                shape[self.dim as usize] = (self.len * 2).max(64);
                let fresh = Tensor::zeros(shape.as_slice(), (grown.kind(), grown.device()));
                fresh.narrow(self.dim, 0, self.len).copy_(&grown);
                grown = fresh;
            }
            self.buf = Some(grown);
        }
    }
}

pub enum LayerCache {
    /// `[batch, kv_heads, seq, head_dim]`
    Standard { k: GrowBuf, v: GrowBuf },
    /// latent `[batch, seq, kv_lora_rank]`, rope key `[batch, seq, qk_rope_head_dim]`
    Latent { ckv: GrowBuf, k_pe: GrowBuf },
}

pub struct KvCache {
    pub layers: Vec<LayerCache>,
    len: i64,
}

impl KvCache {
    pub fn new(layers: Vec<LayerCache>) -> Self {
        Self { layers, len: 0 }
    }

    /// Number of positions already processed.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn advance(&mut self, n: i64) {
        self.len += n;
    }

    /// Forgets everything after `len` positions (regenerate, branch from a shared prefix).
    pub fn truncate(&mut self, len: i64) {
        self.len = self.len.min(len);
        for l in &mut self.layers {
            match l {
                LayerCache::Standard { k, v } => {
                    k.truncate(len);
                    v.truncate(len);
                }
                LayerCache::Latent { ckv, k_pe } => {
                    ckv.truncate(len);
                    k_pe.truncate(len);
                }
            }
        }
    }

    /// Turns a batch-1 cache into `n` identical rows.
    pub fn repeat_batch(&mut self, n: i64) {
        for l in &mut self.layers {
            match l {
                LayerCache::Standard { k, v } => {
                    k.repeat_batch(n);
                    v.repeat_batch(n);
                }
                LayerCache::Latent { ckv, k_pe } => {
                    ckv.repeat_batch(n);
                    k_pe.repeat_batch(n);
                }
            }
        }
    }
}
