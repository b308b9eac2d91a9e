//! llama.cpp's Q4_K and Q6_K super-blocks (ggml-common.h's `block_q4_K` / `block_q6_K`): their
//! layouts and dequantizers, the one implementation of them in thinkbench (the GGUF reader's
//! dequantizer calls these, and [`k_scale_min`] for Q5_K too).
//!
//! Both hold 256 weights. All multi-byte fields are little-endian; scales are f16.
//! - Q4_K (144 bytes): `d` (f16), `dmin` (f16), 12 bytes packing eight 6-bit (scale, min) pairs
//!   ([`k_scale_min`]), then 128 bytes of 4-bit quants. Bytes `32j..32j + 32` of the quants hold
//!   sub-block `2j` (weights `64j..64j + 32`) in their low nibbles and sub-block `2j + 1` in their
//!   high nibbles. Weight = `d·sc·q − dmin·m` with sub-block `s`'s `(sc, m)`.
//! - Q6_K (210 bytes): 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2 bits), 16 i8 scales
//!   (one per 16 weights), `d` (f16). Weight = `d·scale·(q − 32)`. Each 128-weight half `n` uses
//!   `ql[64n..64n + 64]` and `qh[32n..32n + 32]`: for `l < 32`, weight `128n + 32k + l` (quarter
//!   `k`) takes its low bits from the low (`k` < 2) or high nibble of `ql[64n + 32·(k mod 2) + l]`
//!   and its high bits from bits `2k, 2k + 1` of `qh[32n + l]`.
//!
//! Arithmetic is f32 in the order of ggml's reference dequantizers, so the values match gguf-py's
//! bit for bit (checked by the GGUF reader's fixture tests).

use half::f16;

/// Bytes of a Q4_K super-block.
pub const Q4_K_BYTES: usize = 2 + 2 + 12 + 128;
/// Bytes of a Q6_K super-block.
pub const Q6_K_BYTES: usize = 128 + 64 + 16 + 2;

#[inline]
pub(super) fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q4_K/Q5_K's eight 6-bit (scale, min) pairs, packed in 12 bytes. Pairs 0..4 are the low 6 bits
/// of bytes 0..4 (scales) and 4..8 (mins); pairs 4..8 take their low 4 bits from the nibbles of
/// bytes 8..12 (scale low, min high) and their high 2 bits from the top bits of bytes 0..4
/// (scales) and 4..8 (mins).
pub fn k_scale_min(packed: &[u8], j: usize) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

/// All eight (scale, min) pairs of [`k_scale_min`] at once, as bytes: word arithmetic on the 12
/// packed bytes read as three little-endian u32 (what the SIMD kernels use, once per super-block).
/// Inline: a call from a kernel would cost more than the arithmetic, and spill its vectors.
#[inline]
pub fn k_scales_mins(packed: &[u8]) -> ([u8; 8], [u8; 8]) {
    let word =
        |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (w0, w1, w2) = (word(0), word(4), word(8));
    let (low6, low4, top2) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x0303_0303);
    let sc_hi = (w2 & low4) | (((w0 >> 6) & top2) << 4);
    let m_hi = ((w2 >> 4) & low4) | (((w1 >> 6) & top2) << 4);
    let join = |lo: u32, hi: u32| {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&lo.to_le_bytes());
        out[4..].copy_from_slice(&hi.to_le_bytes());
        out
    };
    (join(w0 & low6, sc_hi), join(w1 & low6, m_hi))
}

/// One Q4_K super-block (`b`: 144 bytes) into `y` (256 weights).
pub fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (j, (q, out)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = k_scale_min(scales, 2 * j);
        let (sc2, m2) = k_scale_min(scales, 2 * j + 1);
        let (d1, min1, d2, min2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        let (lo, hi) = out.split_at_mut(32);
        for ((a, b_), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
            *a = d1 * f32::from(q & 0x0F) - min1;
            *b_ = d2 * f32::from(q >> 4) - min2;
        }
    }
}

/// One Q6_K super-block (`b`: 210 bytes) into `y` (256 weights).
pub fn q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half_at(b, 208);
    for n in 0..2 {
        let (ql, qh, sc, out) = (
            &ql[64 * n..],
            &qh[32 * n..],
            &scales[8 * n..],
            &mut y[128 * n..],
        );
        for l in 0..32 {
            let quants = [
                (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, q) in quants.into_iter().enumerate() {
                let scale = sc[l / 16 + 2 * k] as i8;
                out[l + 32 * k] = d * f32::from(scale) * (i32::from(q) - 32) as f32;
            }
        }
    }
}
