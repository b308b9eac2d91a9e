//! ggml tensor types to f32.
//!
//! Each block function takes exactly one block (`chunks_exact` guarantees its length) and writes
//! that block's weights in order. The layouts are ggml's (ggml-common.h): all multi-byte fields
//! little-endian, scales f16. Arithmetic is f32 in the order ggml's reference dequantizers use,
//! so results match them bit for bit.

use half::{bf16, f16};

use crate::model::quant::kblocks::{k_scale_min, q4_k, q6_k};

use super::error::DequantError;
use super::types::GgmlType;

/// Dequantizes `bytes` of type `ty` into `out`, which must hold exactly the weights those bytes
/// encode (`bytes.len() / type_size * block_size`).
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    check_lengths(ty, bytes.len(), out.len())?;
    match ty {
        GgmlType::F32 => elements(bytes, out, |b: &[u8; 4]| f32::from_le_bytes(*b)),
        GgmlType::F16 => elements(bytes, out, |b: &[u8; 2]| f16::from_le_bytes(*b).to_f32()),
        GgmlType::BF16 => elements(bytes, out, |b: &[u8; 2]| bf16::from_le_bytes(*b).to_f32()),
        GgmlType::Q4_0 => blocks(ty, bytes, out, q4_0),
        GgmlType::Q4_1 => blocks(ty, bytes, out, q4_1),
        GgmlType::Q5_0 => blocks(ty, bytes, out, q5_0),
        GgmlType::Q5_1 => blocks(ty, bytes, out, q5_1),
        GgmlType::Q8_0 => blocks(ty, bytes, out, q8_0),
        GgmlType::Q2_K => blocks(ty, bytes, out, q2_k),
        GgmlType::Q3_K => blocks(ty, bytes, out, q3_k),
        GgmlType::Q4_K => blocks(ty, bytes, out, q4_k),
        GgmlType::Q5_K => blocks(ty, bytes, out, q5_k),
        GgmlType::Q6_K => blocks(ty, bytes, out, q6_k),
        _ => return Err(DequantError::Unsupported(ty)),
    }
    Ok(())
}

fn check_lengths(ty: GgmlType, bytes: usize, values: usize) -> Result<(), DequantError> {
    if !ty.can_dequantize() {
        return Err(DequantError::Unsupported(ty));
    }
    // Both sizes are small constants (at most 256 and 210), so these casts are exact.
    let (block, type_size) = (ty.block_size() as usize, ty.type_size() as usize);
    let n_blocks = bytes / type_size;
    if !bytes.is_multiple_of(type_size) || n_blocks.checked_mul(block) != Some(values) {
        return Err(DequantError::Length { ty, bytes, values });
    }
    Ok(())
}

/// One value per element: the float types. Kept apart from `blocks` so the hot loop converts
/// directly instead of going through a block of one.
fn elements<const N: usize>(bytes: &[u8], out: &mut [f32], convert: impl Fn(&[u8; N]) -> f32) {
    for (b, o) in bytes.chunks_exact(N).zip(out.iter_mut()) {
        // chunks_exact(N) yields slices of length N, so the conversion cannot fail.
        if let Ok(b) = <&[u8; N]>::try_from(b) {
            *o = convert(b);
        }
    }
}

fn blocks(ty: GgmlType, bytes: &[u8], out: &mut [f32], block: impl Fn(&[u8], &mut [f32])) {
    let (block_size, type_size) = (ty.block_size() as usize, ty.type_size() as usize);
    for (b, o) in bytes
        .chunks_exact(type_size)
        .zip(out.chunks_exact_mut(block_size))
    {
        block(b, o);
    }
}

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The 32 fifth bits of a Q5 block: bit j belongs to weight j.
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

// --- 32-weight blocks. Weights 0..16 are the low nibbles of qs, 16..32 the high nibbles. ---

/// d: f16, qs: 16 bytes. x = (q - 8) * d.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let qs = &b[2..18];
    for (j, &q) in qs.iter().enumerate() {
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// d, m: f16, qs: 16 bytes. x = q * d + m.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let qs = &b[4..20];
    for (j, &q) in qs.iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The 5-bit quants of a Q5 block: nibble from qs, fifth bit from qh.
fn q5_quants(qh: u32, qs: &[u8]) -> impl Iterator<Item = (usize, u8, u8)> + '_ {
    qs.iter().enumerate().map(move |(j, &q)| {
        let lo = (q & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        (j, lo, hi)
    })
}

/// d: f16, qh: u32, qs: 16 bytes. x = (q - 16) * d.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (j, lo, hi) in q5_quants(u32_at(b, 2), &b[6..22]) {
        y[j] = (lo as i32 - 16) as f32 * d;
        y[j + 16] = (hi as i32 - 16) as f32 * d;
    }
}

/// d, m: f16, qh: u32, qs: 16 bytes. x = q * d + m.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for (j, lo, hi) in q5_quants(u32_at(b, 4), &b[8..24]) {
        y[j] = lo as f32 * d + m;
        y[j + 16] = hi as f32 * d + m;
    }
}

/// d: f16, qs: 32 i8. x = q * d.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (o, &q) in y.iter_mut().zip(&b[2..34]) {
        *o = (q as i8) as f32 * d;
    }
}

// --- 256-weight K-quant super-blocks, split into sub-blocks with their own scales. Q4_K and
// Q6_K, which thinkbench also runs as stored blocks, live in `model::quant::kblocks`. ---

/// scales: 16 bytes (low nibble scale, high nibble min, one per 16 weights), qs: 64 bytes of
/// 2-bit quants, d, dmin: f16. x = d * scale * q - dmin * min.
///
/// Each 32-byte half of qs holds 128 weights: bit pair 0 of its bytes is the first 32 weights,
/// pair 1 the next 32, and so on; every 16 weights take the next scale.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (half_at(b, 80), half_at(b, 82));
    let mut sub = 0; // index of the 16-weight sub-block, which is also the output position / 16
    for half in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for group in half.chunks_exact(16) {
                let sc = scales[sub];
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                for (o, &q) in y[sub * 16..sub * 16 + 16].iter_mut().zip(group) {
                    *o = dl * ((q >> shift) & 3) as f32 - ml;
                }
                sub += 1;
            }
        }
    }
}

/// Q3_K's sixteen 6-bit scales, packed in 12 bytes: the low 4 bits of scale j are a nibble of
/// bytes 0..8 (low nibbles for j < 8, high for the rest), its high 2 bits a bit pair of bytes 8..12.
fn q3_k_scale(packed: &[u8], j: usize) -> i32 {
    let low = if j < 8 {
        packed[j] & 0x0F
    } else {
        packed[j - 8] >> 4
    };
    let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// hmask: 32 bytes (the third bit of each quant), qs: 64 bytes of 2-bit quants, scales: 12
/// bytes, d: f16. x = d * (scale - 32) * (q - 4 unless the hmask bit is set).
fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs, scales) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = half_at(b, 108);
    let mut sub = 0;
    let mut bit = 0; // hmask bit for the current 32-weight run: one per (half, shift)
    for half in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for (g, group) in half.chunks_exact(16).enumerate() {
                let dl = d * q3_k_scale(scales, sub) as f32;
                let masks = &hmask[g * 16..g * 16 + 16];
                for ((o, &q), &m) in y[sub * 16..sub * 16 + 16].iter_mut().zip(group).zip(masks) {
                    let high_missing = if m & (1 << bit) != 0 { 0 } else { 4 };
                    *o = dl * (((q >> shift) & 3) as i32 - high_missing) as f32;
                }
                sub += 1;
            }
            bit += 1;
        }
    }
}

/// Q4_K plus qh: 32 bytes holding each weight's fifth bit; 64-weight run j uses bits 2j and 2j+1.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (j, (q, out)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = k_scale_min(scales, 2 * j);
        let (sc2, m2) = k_scale_min(scales, 2 * j + 1);
        let (d1, min1, d2, min2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        let (bit1, bit2) = (1u8 << (2 * j), 1u8 << (2 * j + 1));
        let (lo, hi) = out.split_at_mut(32);
        for (((a, b_), &q), &h) in lo.iter_mut().zip(hi.iter_mut()).zip(q).zip(qh) {
            let q1 = (q & 0x0F) + if h & bit1 != 0 { 16 } else { 0 };
            let q2 = (q >> 4) + if h & bit2 != 0 { 16 } else { 0 };
            *a = d1 * q1 as f32 - min1;
            *b_ = d2 * q2 as f32 - min2;
        }
    }
}
