//! Rotary position embeddings: plain, linear, YaRN and Llama-3 frequency schedules, and the two
//! rotation layouts (halves for Llama/Qwen, interleaved pairs for DeepSeek).

use std::cell::RefCell;

use tch::{Device, Kind, Tensor};

use super::config::{yarn_get_mscale, RopeConfig, RopeScaling};
use super::gemv::{self, Scalar};

/// Inverse frequencies (length `dim / 2`) and the factor cos/sin are multiplied by.
pub fn inv_freq(rope: &RopeConfig, dim: usize) -> (Vec<f64>, f64) {
    let base = rope.theta;
    let plain: Vec<f64> = (0..dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64))
        .collect();
    match &rope.scaling {
        RopeScaling::None => (plain, 1.0),
        RopeScaling::Linear { factor } => (plain.iter().map(|f| f / factor).collect(), 1.0),
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings: orig,
            beta_fast,
            beta_slow,
            mscale,
            mscale_all_dim,
            attention_factor,
            truncate,
        } => {
            let attention = attention_factor.unwrap_or_else(|| match (mscale, mscale_all_dim) {
                (Some(m), Some(ma)) if *m != 0.0 && *ma != 0.0 => {
                    yarn_get_mscale(*factor, *m) / yarn_get_mscale(*factor, *ma)
                }
                _ => yarn_get_mscale(*factor, 1.0),
            });
            let d = dim as f64;
            let corr_dim =
                |n: f64| d * (orig / (n * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln());
            let (mut low, mut high) = (corr_dim(*beta_fast), corr_dim(*beta_slow));
            if *truncate {
                low = low.floor();
                high = high.ceil();
            }
            low = low.max(0.0);
            high = high.min(d - 1.0);
            if low == high {
                high += 0.001;
            }
            let freqs = plain
                .iter()
                .enumerate()
                .map(|(i, &extrapolated)| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let interpolated = extrapolated / factor;
                    // ramp = 0 keeps the high-frequency (extrapolated) dims, 1 interpolates.
                    interpolated * ramp + extrapolated * (1.0 - ramp)
                })
                .collect();
            (freqs, attention)
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: orig,
        } => {
            let low_wavelen = orig / low_freq_factor;
            let high_wavelen = orig / high_freq_factor;
            let freqs = plain
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (orig / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (freqs, 1.0)
        }
    }
}

/// cos/sin tables `[positions, dim]` (each frequency twice, halves layout), grown on demand.
pub struct Rotary {
    inv_freq: Vec<f64>,
    attention_factor: f64,
    interleaved: bool,
    device: Device,
    tables: RefCell<Option<(Tensor, Tensor, Kind)>>,
}

/// Where the new tokens of a forward pass sit: the `S` tokens of every row continue after
/// `start` cached columns, and in a ragged batch (rows of different lengths, see
/// [`super::cache::KvCache`]) each row's positions are its own, given per row and token.
pub struct Positions {
    pub start: i64,
    /// `[B, S]` positions (int64), when rows differ.
    pub per_row: Option<Tensor>,
    /// The per-row cos/sin tables, gathered by the first layer and reused by the others.
    tables: RefCell<Option<(Tensor, Tensor)>>,
}

impl Positions {
    /// Positions of `s` new tokens after a cache of `start` columns with `pad` leading padding
    /// columns per row (empty: none).
    pub fn after(start: i64, s: i64, pad: &[i64], device: Device) -> Self {
        let per_row = (!pad.is_empty()).then(|| {
            let steps = Tensor::arange(s, (Kind::Int64, device)).unsqueeze(0) + start;
            let pad = Tensor::from_slice(pad).to_device(device).unsqueeze(1);
            // Padding tokens of a left-padded prefill would sit before 0; they are masked anyway.
            (steps - pad).clamp_min(0)
        });
        Self {
            start,
            per_row,
            tables: RefCell::new(None),
        }
    }
}

impl Rotary {
    pub fn new(rope: &RopeConfig, dim: usize, interleaved: bool, device: Device) -> Self {
        let (inv_freq, attention_factor) = inv_freq(rope, dim);
        Self {
            inv_freq,
            attention_factor,
            interleaved,
            device,
            tables: RefCell::new(None),
        }
    }

    fn build(&self, len: i64, kind: Kind) -> (Tensor, Tensor) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len as usize * half * 2);
        let mut sin = Vec::with_capacity(len as usize * half * 2);
        for pos in 0..len {
            // Frequencies are rounded to f32 first, as transformers computes them.
            let angles: Vec<f64> = self
                .inv_freq
                .iter()
                .map(|&f| pos as f64 * (f as f32) as f64)
                .collect();
            for _ in 0..2 {
                cos.extend(
                    angles
                        .iter()
                        .map(|a| (a.cos() * self.attention_factor) as f32),
                );
                sin.extend(
                    angles
                        .iter()
                        .map(|a| (a.sin() * self.attention_factor) as f32),
                );
            }
        }
        let shape = [len, 2 * half as i64];
        let to = |v: Vec<f32>| {
            Tensor::from_slice(&v)
                .view(shape)
                .to_kind(kind)
                .to_device(self.device)
        };
        (to(cos), to(sin))
    }

    /// cos and sin for positions `start..start+len`, each `[len, dim]`.
    pub fn cos_sin(&self, start: i64, len: i64, kind: Kind) -> (Tensor, Tensor) {
        let needed = start + len;
        let mut tables = self.tables.borrow_mut();
        let fresh = match &*tables {
            Some((c, _, k)) => c.size()[0] < needed || *k != kind,
            None => true,
        };
        if fresh {
            let cap = (needed.max(256) as u64).next_power_of_two() as i64;
            let (c, s) = self.build(cap, kind);
            *tables = Some((c, s, kind));
        }
        let (c, s, _) = tables.as_ref().expect("tables were just built");
        (c.narrow(0, start, len), s.narrow(0, start, len))
    }

    /// cos and sin for `pos`: `[S, dim]` when every row starts at the same position, else
    /// `[B, 1, S, dim]` (broadcast over heads).
    pub fn cos_sin_for(&self, pos: &Positions, len: i64, kind: Kind) -> (Tensor, Tensor) {
        let Some(rows) = &pos.per_row else {
            return self.cos_sin(pos.start, len, kind);
        };
        if let Some((c, s)) = pos.tables.borrow().as_ref() {
            if c.kind() == kind {
                return (c.shallow_clone(), s.shallow_clone());
            }
        }
        let (cos, sin) = self.cos_sin(0, pos.start + len, kind);
        let (b, s) = rows.size2().expect("per-row positions are [batch, seq]");
        let flat = rows.view([-1]);
        let pick = |t: &Tensor| {
            let d = t.size()[1];
            t.index_select(0, &flat).view([b, 1, s, d])
        };
        let tables = (pick(&cos), pick(&sin));
        *pos.tables.borrow_mut() = Some((tables.0.shallow_clone(), tables.1.shallow_clone()));
        tables
    }

    /// Rotates `x [..., seq, dim]` by the positions `cos`/`sin` describe (`[seq, dim]`).
    /// Interleaved inputs are first permuted to halves layout, as transformers does; queries and
    /// keys get the same permutation, so attention scores are unchanged.
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let direct = match x.kind() {
            Kind::Float => self.apply_direct::<f32>(x, cos, sin),
            Kind::BFloat16 => self.apply_direct::<half::bf16>(x, cos, sin),
            _ => None,
        };
        if let Some(y) = direct {
            return y;
        }
        let x = if self.interleaved {
            let size = x.size();
            let d = *size.last().expect("rotary input has a last dim");
            let mut pairs = size.clone();
            pairs.pop();
            pairs.extend([d / 2, 2]);
            x.reshape(pairs.as_slice())
                .transpose(-1, -2)
                .reshape(size.as_slice())
        } else {
            x.shallow_clone()
        };
        let d = *x.size().last().expect("rotary input has a last dim");
        let x1 = x.narrow(-1, 0, d / 2);
        let x2 = x.narrow(-1, d / 2, d / 2);
        let rotated = Tensor::cat(&[-x2, x1], -1);
        &x * cos + rotated * sin
    }
}

impl Rotary {
    /// [`Rotary::apply`] as one loop on the CPU when autograd need not see it: the same
    /// products and sums, rounded as libtorch rounds them (`x·cos`, `rotated·sin`, their sum), on
    /// a strided `x` (a slice of the query projection) without copying it first. Replaces about
    /// ten small tensor ops per call. `None` where it does not apply.
    fn apply_direct<T: Scalar>(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Option<Tensor> {
        if x.device() != Device::Cpu || gemv::records_graph(&[x, cos, sin]) {
            return None;
        }
        let size = x.size();
        let stride = x.stride();
        let nd = size.len();
        if nd < 2 || stride[nd - 1] != 1 {
            return None;
        }
        let (seq, d) = (size[nd - 2] as usize, size[nd - 1] as usize);
        if d % 2 != 0 || cos.size() != [seq as i64, d as i64] || sin.size() != cos.size() {
            return None;
        }
        // Meant for decode-sized inputs, where the ops' overhead is the cost; a long prefill is
        // better served by libtorch's vectorised kernels.
        if x.numel() > 1 << 16 {
            return None;
        }
        // SAFETY: the tables are never written once built; they are contiguous [seq, d].
        let (c, s): (&[T], &[T]) = unsafe { (gemv::cpu_slice(cos)?, gemv::cpu_slice(sin)?) };
        if x.kind() != T::KIND {
            return None;
        }
        let out = Tensor::empty(size.as_slice(), (T::KIND, Device::Cpu));
        let rows: usize = size[..nd - 1].iter().product::<i64>() as usize;
        // SAFETY: `out` is fresh, contiguous, rows·d elements of `T`, written only here.
        let o: &mut [T] =
            unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut T, rows * d) };
        let base = x.data_ptr() as *const T;
        let half = d / 2;
        let mut xp = vec![0f32; d];
        let mut idx = vec![0i64; nd - 1];
        for r in 0..rows {
            // Element offset of row r of x (its leading indices, last index fastest).
            let off: i64 = idx.iter().zip(&stride).map(|(i, st)| i * st).sum();
            let pos = idx[nd - 2] as usize;
            // SAFETY: x is a CPU tensor of `T` (checked) with these sizes and strides, so every
            // element of the row lies in its storage; nothing writes it during the forward pass.
            let row = unsafe { std::slice::from_raw_parts(base.offset(off as isize), d) };
            if self.interleaved {
                for j in 0..half {
                    xp[j] = row[2 * j].to_f32();
                    xp[half + j] = row[2 * j + 1].to_f32();
                }
            } else {
                xp.iter_mut().zip(row).for_each(|(a, b)| *a = b.to_f32());
            }
            let (cr, sr) = (&c[pos * d..(pos + 1) * d], &s[pos * d..(pos + 1) * d]);
            let orow = &mut o[r * d..(r + 1) * d];
            for i in 0..d {
                let rot = if i < half {
                    -xp[i + half]
                } else {
                    xp[i - half]
                };
                let a = T::from_f32(xp[i] * cr[i].to_f32()).to_f32();
                let b = T::from_f32(rot * sr[i].to_f32()).to_f32();
                orow[i] = T::from_f32(a + b);
            }
            for k in (0..nd - 1).rev() {
                idx[k] += 1;
                if idx[k] < size[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-30)
    }

    /// Test vectors computed independently in deepseek_grpo_tech.md §A.5 (DeepSeek-V3 YaRN).
    #[test]
    fn yarn_matches_deepseek_v3_reference_values() {
        let rope = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Yarn {
                factor: 40.0,
                original_max_position_embeddings: 4096.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale: Some(1.0),
                mscale_all_dim: Some(1.0),
                attention_factor: None,
                truncate: true,
            },
        };
        let (f, att) = inv_freq(&rope, 64);
        assert_eq!(att, 1.0);
        for (i, want) in [
            (0, 1.0),
            (1, 0.7498942),
            (10, 0.05623413),
            (20, 7.905694e-4),
            (31, 3.333804e-6),
        ] {
            assert!(
                close(f[i], want, 1e-5),
                "inv_freq[{i}] = {} want {want}",
                f[i]
            );
        }
    }

    /// Test vectors from deepseek_grpo_tech.md §B.2 (Llama-3.1 scaling).
    #[test]
    fn llama3_matches_reference_values() {
        let rope = RopeConfig {
            theta: 500000.0,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
        };
        let (f, _) = inv_freq(&rope, 128);
        for (i, want) in [
            (0, 1.0),
            (20, 0.01656044),
            (40, 3.428102e-5),
            (45, 1.229764e-5),
            (50, 4.411535e-6),
            (63, 3.068926e-7),
        ] {
            assert!(
                close(f[i], want, 1e-5),
                "inv_freq[{i}] = {} want {want}",
                f[i]
            );
        }
    }

    /// Interleaved rotation equals the complex multiply (x_{2j} + i x_{2j+1}) e^{i θ_j} up to the
    /// halves permutation.
    #[test]
    fn interleaved_rotation_is_complex_multiply() {
        let rope = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::None,
        };
        let rot = Rotary::new(&rope, 4, true, Device::Cpu);
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 4]);
        let (c, s) = rot.cos_sin(3, 1, Kind::Float);
        let y: Vec<f32> = Vec::try_from(rot.apply(&x, &c, &s).view([-1])).unwrap();
        let th0 = 3.0f64;
        let th1 = 3.0f64 * (1.0 / 10000f64.powf(0.5));
        // permuted order: [re0, re1, im0, im1]
        let want = [
            1.0 * th0.cos() - 2.0 * th0.sin(),
            3.0 * th1.cos() - 4.0 * th1.sin(),
            2.0 * th0.cos() + 1.0 * th0.sin(),
            4.0 * th1.cos() + 3.0 * th1.sin(),
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{y:?} vs {want:?}");
        }
    }
}
