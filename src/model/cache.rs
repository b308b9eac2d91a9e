//! The KV cache. Standard attention caches K and V per KV head; MLA caches only what the
//! architecture needs — the normalised latent `c_kv` (kv_lora_rank) and the rotated shared rope
//! key (qk_rope_head_dim), 576 numbers per token per layer for DeepSeek-V3 instead of 40 960 for
//! expanded keys and values. Buffers grow by doubling and are written in place.
//!
//! Rows of one batch may hold sequences of different lengths (continuous batching: a request
//! joins a running batch with its own prompt). They are stored right-aligned: every row appends at
//! the same column, and a shorter row's first columns are padding that attention masks out and
//! that does not count towards its positions.

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

    /// The filled part, `None` before the first append.
    fn filled(&self) -> Option<Tensor> {
        self.buf.as_ref().map(|b| b.narrow(self.dim, 0, self.len))
    }

    /// Holds `t` (filled to its full length along the growth dimension) with room to grow.
    fn adopt(&mut self, t: &Tensor) {
        let len = t.size()[self.dim as usize];
        let mut shape = t.size();
        shape[self.dim as usize] = (len * 2).max(64);
        let fresh = Tensor::zeros(shape.as_slice(), (t.kind(), t.device()));
        fresh.narrow(self.dim, 0, len).copy_(t);
        self.buf = Some(fresh);
        self.len = len;
    }

    /// Stacks `other`'s rows under this buffer's, both right-aligned to `len` columns (the
    /// columns in front of a shorter buffer's contents are zeros: padding).
    fn stack(&mut self, other: &GrowBuf, len: i64) {
        let (Some(a), Some(b)) = (self.filled(), other.filled()) else {
            if self.buf.is_none() {
                if let Some(b) = other.filled() {
                    self.adopt(&Self::pad_front(&b, self.dim, len));
                }
            }
            return;
        };
        let a = Self::pad_front(&a, self.dim, len);
        let b = Self::pad_front(&b, self.dim, len);
        self.adopt(&Tensor::cat(&[a, b], 0));
    }

    fn pad_front(t: &Tensor, dim: i64, len: i64) -> Tensor {
        let have = t.size()[dim as usize];
        if have == len {
            return t.shallow_clone();
        }
        let mut shape = t.size();
        shape[dim as usize] = len;
        let out = Tensor::zeros(shape.as_slice(), (t.kind(), t.device()));
        out.narrow(dim, len - have, have).copy_(t);
        out
    }

    /// Keeps the rows `rows` (in that order) and drops the first `skip` columns.
    fn select(&mut self, rows: &Tensor, skip: i64) {
        if let Some(f) = self.filled() {
            let kept = f.index_select(0, rows);
            self.adopt(&kept.narrow(self.dim, skip, self.len - skip));
        }
    }

    /// Repeats the (batch-1) contents `n` times along dim 0, e.g. one prompt for G rollouts.
    pub fn repeat_batch(&mut self, n: i64) {
        if let Some(filled) = self.filled() {
            let mut reps = vec![1i64; filled.dim()];
            reps[0] = n;
            // Held with headroom, so the next appends do not reallocate at once.
            self.adopt(&filled.repeat(reps.as_slice()));
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
    /// Leading padding columns per row; empty when no row has any (every row is `len` long).
    pad: Vec<i64>,
}

impl KvCache {
    pub fn new(layers: Vec<LayerCache>) -> Self {
        Self {
            layers,
            len: 0,
            pad: Vec::new(),
        }
    }

    /// Declares the leading padding of each row of an empty cache, before a prefill of
    /// left-padded prompts of different lengths.
    pub fn set_padding(&mut self, pad: Vec<i64>) {
        debug_assert!(
            self.len == 0,
            "padding is declared before the first forward pass"
        );
        self.pad = if pad.iter().all(|&p| p == 0) {
            Vec::new()
        } else {
            pad
        };
    }

    /// Leading padding columns of each row, or an empty slice when there are none.
    pub fn padding(&self) -> &[i64] {
        &self.pad
    }

    /// Rows held (0 before the first forward pass).
    pub fn rows(&self) -> usize {
        if !self.pad.is_empty() {
            return self.pad.len();
        }
        self.first_filled().map_or(0, |t| t.size()[0] as usize)
    }

    /// The first layer's first buffer, filled part (its rows and device are every buffer's).
    fn first_filled(&self) -> Option<Tensor> {
        self.layers.first().and_then(|l| match l {
            LayerCache::Standard { k, .. } => k.filled(),
            LayerCache::Latent { ckv, .. } => ckv.filled(),
        })
    }

    fn bufs(&mut self) -> Vec<&mut GrowBuf> {
        self.layers
            .iter_mut()
            .flat_map(|l| match l {
                LayerCache::Standard { k, v } => [k, v],
                LayerCache::Latent { ckv, k_pe } => [ckv, k_pe],
            })
            .collect()
    }

    /// Adds `other`'s rows after this cache's (a request joining a running batch). The shorter
    /// side gets padding in front so both end at the same column.
    pub fn append_rows(&mut self, mut other: KvCache) {
        let (mine, theirs) = (self.rows(), other.rows());
        if theirs == 0 {
            return;
        }
        if mine == 0 {
            *self = other;
            return;
        }
        let len = self.len.max(other.len);
        let full = |pad: &[i64], rows: usize, len_own: i64| -> Vec<i64> {
            let shift = len - len_own;
            if pad.is_empty() {
                vec![shift; rows]
            } else {
                pad.iter().map(|p| p + shift).collect()
            }
        };
        let mut pad = full(&self.pad, mine, self.len);
        pad.extend(full(&other.pad, theirs, other.len));
        for (a, b) in self.bufs().into_iter().zip(other.bufs()) {
            a.stack(b, len);
        }
        self.len = len;
        self.pad = if pad.iter().all(|&p| p == 0) {
            Vec::new()
        } else {
            pad
        };
    }

    /// Keeps only the rows `keep` (indices into the current rows, in the order given): finished
    /// requests leave the batch. Columns that became padding in every remaining row are dropped.
    pub fn keep_rows(&mut self, keep: &[usize]) {
        let rows = self.rows();
        if keep.len() == rows && keep.iter().enumerate().all(|(i, &r)| i == r) {
            return;
        }
        let pad: Vec<i64> = if self.pad.is_empty() {
            vec![0; keep.len()]
        } else {
            keep.iter().map(|&r| self.pad[r]).collect()
        };
        let skip = pad.iter().copied().min().unwrap_or(0);
        if keep.is_empty() {
            let layers = std::mem::take(&mut self.layers);
            *self = KvCache::new(
                layers
                    .into_iter()
                    .map(|l| match l {
                        LayerCache::Standard { k, v } => LayerCache::Standard {
                            k: GrowBuf::new(k.dim),
                            v: GrowBuf::new(v.dim),
                        },
                        LayerCache::Latent { ckv, k_pe } => LayerCache::Latent {
                            ckv: GrowBuf::new(ckv.dim),
                            k_pe: GrowBuf::new(k_pe.dim),
                        },
                    })
                    .collect(),
            );
            return;
        }
        let index: Vec<i64> = keep.iter().map(|&r| r as i64).collect();
        let device = self.first_filled().map_or(tch::Device::Cpu, |t| t.device());
        let index = Tensor::from_slice(&index).to_device(device);
        for b in self.bufs() {
            b.select(&index, skip);
        }
        self.len -= skip;
        self.pad = if pad.iter().all(|&p| p == skip) {
            Vec::new()
        } else {
            pad.iter().map(|p| p - skip).collect()
        };
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
    /// Only for caches without padding (a single sequence, or rows of one prompt).
    pub fn truncate(&mut self, len: i64) {
        debug_assert!(self.pad.is_empty(), "truncating a ragged batch");
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
        if let [p] = self.pad[..] {
            self.pad = vec![p; n as usize];
        }
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
