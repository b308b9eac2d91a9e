//! The block layouts, llama.cpp's reference quantizers for Q8_0 and Q4_0, and the dequantizers of
//! all four (the K super-blocks' own code is in [`super::kblocks`]).
//!
//! The quantizers follow ggml's `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref` step by step,
//! in f32, because the bytes must come out identical: the scale is rounded to f16 only when it
//! is stored, while the quants are computed with the reciprocal of the unrounded f32 scale.

use half::f16;

use super::QuantError;

/// Weights per block of Q8_0 and Q4_0 (the formats `--quant` writes), and per sub-block of the
/// K formats: the granularity of every scale the kernels apply.
pub const BLOCK: usize = 32;

/// Weights per K-format super-block.
pub const SUPER_BLOCK: usize = 256;

/// A block-quantized weight type, named as GGML names it.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// f16 scale + 32 × i8.
    Q8_0,
    /// f16 scale + 32 × 4-bit, offset by 8.
    Q4_0,
    /// 256 weights: f16 `d` and `dmin`, eight 6-bit (scale, min) pairs, 256 × 4-bit.
    Q4_K,
    /// 256 weights: 256 × 6-bit (4 + 2 bits), sixteen i8 scales, f16 `d`.
    Q6_K,
}

impl Format {
    /// Weights per block: 32, or 256 for the K formats' super-blocks. A row must hold a whole
    /// number of them.
    pub const fn block_len(self) -> usize {
        match self {
            Format::Q8_0 | Format::Q4_0 => BLOCK,
            Format::Q4_K | Format::Q6_K => SUPER_BLOCK,
        }
    }

    /// Bytes per block of [`block_len`](Self::block_len) weights.
    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Q8_0 => 2 + BLOCK,
            Format::Q4_0 => 2 + BLOCK / 2,
            Format::Q4_K => super::kblocks::Q4_K_BYTES,
            Format::Q6_K => super::kblocks::Q6_K_BYTES,
        }
    }

    /// Whether this is one of llama.cpp's K formats (256-weight super-blocks), which come only
    /// from GGUF files: there is no quantizer for them here.
    pub const fn is_k(self) -> bool {
        matches!(self, Format::Q4_K | Format::Q6_K)
    }

    /// Bytes of a row of `k` weights.
    pub fn row_bytes(self, k: usize) -> Result<usize, QuantError> {
        if !k.is_multiple_of(self.block_len()) {
            return Err(QuantError::NotWholeBlocks {
                k,
                block: self.block_len(),
            });
        }
        Ok(k / self.block_len() * self.block_bytes())
    }

    /// GGML's name for the type, as GGUF tools print it.
    pub const fn name(self) -> &'static str {
        match self {
            Format::Q8_0 => "Q8_0",
            Format::Q4_0 => "Q4_0",
            Format::Q4_K => "Q4_K",
            Format::Q6_K => "Q6_K",
        }
    }

    /// GGML's type number (`ggml_type`), as a GGUF tensor header stores it.
    pub const fn ggml_type(self) -> u32 {
        match self {
            Format::Q8_0 => 8,
            Format::Q4_0 => 2,
            Format::Q4_K => 12,
            Format::Q6_K => 14,
        }
    }

    /// The format with GGML type number `t`, if it is one of these.
    pub const fn from_ggml_type(t: u32) -> Option<Format> {
        match t {
            8 => Some(Format::Q8_0),
            2 => Some(Format::Q4_0),
            12 => Some(Format::Q4_K),
            14 => Some(Format::Q6_K),
            _ => None,
        }
    }
}

/// Quantizes `x` (any number of whole blocks: a row, or a whole row-major matrix) into `out`,
/// which must hold exactly `format.row_bytes(x.len())` bytes. Q8_0 and Q4_0 only: a K format is
/// [`QuantError::NoQuantizer`] (llama.cpp's K quantizers search for scales, and thinkbench only
/// runs K tensors that a GGUF file brings).
pub fn quantize_row(format: Format, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    if format.is_k() {
        return Err(QuantError::NoQuantizer(format));
    }
    check_sizes(format, x.len(), out.len())?;
    let blocks = x
        .chunks_exact(BLOCK)
        .zip(out.chunks_exact_mut(format.block_bytes()));
    for (xb, ob) in blocks {
        let xb: &[f32; BLOCK] = xb.try_into().expect("chunks_exact");
        match format {
            Format::Q8_0 => quantize_q8_0(xb, ob),
            Format::Q4_0 => quantize_q4_0(xb, ob),
            Format::Q4_K | Format::Q6_K => unreachable!("refused above"),
        }
    }
    Ok(())
}

/// [`quantize_row`] into a new buffer.
pub fn quantize(format: Format, x: &[f32]) -> Result<Vec<u8>, QuantError> {
    if format.is_k() {
        return Err(QuantError::NoQuantizer(format));
    }
    let mut out = vec![0; format.row_bytes(x.len())?];
    quantize_row(format, x, &mut out)?;
    Ok(out)
}

/// The values of the blocks in `bytes` (a row, or a whole matrix) into `out`, which must hold
/// [`Format::block_len`] elements per block.
pub fn dequantize_row(format: Format, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    check_sizes(format, out.len(), bytes.len())?;
    for (b, ob) in bytes
        .chunks_exact(format.block_bytes())
        .zip(out.chunks_exact_mut(format.block_len()))
    {
        dequantize_block(format, b, ob);
    }
    Ok(())
}

/// One block's weights into `out` (`block_len` of them), `block` being its `block_bytes`.
pub(super) fn dequantize_block(format: Format, block: &[u8], out: &mut [f32]) {
    match format {
        Format::Q8_0 | Format::Q4_0 => {
            let d = scale(block);
            for (o, q) in out.iter_mut().zip(quants(format, block)) {
                *o = q * d;
            }
        }
        Format::Q4_K => super::kblocks::q4_k(block, out),
        Format::Q6_K => super::kblocks::q6_k(block, out),
    }
}

/// A Q8_0 or Q4_0 block's scale `d`, as f32.
fn scale(block: &[u8]) -> f32 {
    f16::from_le_bytes([block[0], block[1]]).to_f32()
}

/// A Q8_0 or Q4_0 block's 32 quants as f32, in element order (Q4_0's already offset by −8): the
/// weights divided by `d`. Written as plain loops over the bytes, which compilers vectorize.
fn quants(format: Format, block: &[u8]) -> [f32; BLOCK] {
    let mut q = [0.0f32; BLOCK];
    match format {
        Format::Q8_0 => {
            for (v, &byte) in q.iter_mut().zip(&block[2..2 + BLOCK]) {
                *v = f32::from(byte as i8);
            }
        }
        Format::Q4_0 => {
            let (lo, hi) = q.split_at_mut(BLOCK / 2);
            for ((l, h), &byte) in lo.iter_mut().zip(hi).zip(&block[2..2 + BLOCK / 2]) {
                *l = f32::from(byte & 0x0f) - 8.0;
                *h = f32::from(byte >> 4) - 8.0;
            }
        }
        Format::Q4_K | Format::Q6_K => unreachable!("32-weight formats only"),
    }
    q
}

fn check_sizes(format: Format, values: usize, bytes: usize) -> Result<(), QuantError> {
    let expected = format.row_bytes(values)?;
    if bytes != expected {
        return Err(QuantError::Size {
            what: "quantized bytes for the values given",
            expected,
            got: bytes,
        });
    }
    Ok(())
}

/// `d = amax/127`, `q = round(x/d)` (half away from zero, as C's `roundf`).
fn quantize_q8_0(x: &[f32; BLOCK], out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (o, v) in out[2..].iter_mut().zip(x) {
        *o = (v * id).round() as i8 as u8;
    }
}

/// `d = m/−8` for the element `m` of largest magnitude (the first such, sign kept), so `m`
/// itself maps to −8; `q = min(15, trunc(x/d + 8.5))`.
fn quantize_q4_0(x: &[f32; BLOCK], out: &mut [u8]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    // An all-zero block gives d = 0/−8 = −0.0, stored as f16 0x8000, as in ggml.
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    // `as u8` truncates toward zero like C's float-to-int conversion (x/d + 8.5 > 0 always).
    let q = |v: f32| ((v * id + 8.5) as u8).min(15);
    let (lo, hi) = x.split_at(BLOCK / 2);
    for ((o, &a), &b) in out[2..].iter_mut().zip(lo).zip(hi) {
        *o = q(a) | (q(b) << 4);
    }
}
