//! AVX2 + F16C and AVX-512 dequantization of whole rows, for the prefill paths: the float
//! kernels (`float_gemm`) widen a panel of a dozen rows × 256 columns into L1 at a time, and
//! the libtorch fallback (`qlinear`) a tile of a layer's rows. The values of
//! [`dequantize_row`](super::dequantize_row), bit for bit, 8 (AVX2) or 16 (AVX-512) at a time.
//!
//! Bit for bit because every value is formed by the same f32 operations in the same order as
//! the scalar reference (itself ggml's order, checked against gguf-py): `q·d` (Q8_0),
//! `(q − 8)·d` (Q4_0), `(d·sc)·q − dmin·m` as a multiply then a subtract, not an FMA (Q4_K), and
//! `(d·scale)·(q − 32)` (Q6_K). The scalar loops compile to SSE2 at best in a portable build and
//! convert f16 one value at a time, which made the widening half as costly as the GEMM itself.
//! AVX-512 halves the instructions again: into L1, with a 64-row prompt, the widening was a
//! sixth of the float kernels' time at 8 values an instruction (`perf`, a Q4_K_M prefill).

use std::arch::x86_64::*;

use super::format::{Format, BLOCK, SUPER_BLOCK};
use super::kblocks::k_scales_mins;
use super::x86::{scale, widen_i8, widen_u8};
use super::x86_k::{q6_k_unpack, Q6Quants};
use super::Isa;

/// `bytes` (whole blocks of `format`) into `out` (their weights), by `isa`'s instructions.
///
/// # Safety
/// `out.len()` is `bytes.len() / format.block_bytes() · format.block_len()`; `isa` is AVX2 or
/// AVX-512 and the CPU runs it.
pub(super) unsafe fn dequantize(isa: Isa, format: Format, bytes: &[u8], out: &mut [f32]) {
    // SAFETY: the caller's.
    unsafe {
        match isa {
            Isa::Avx512 => dequantize_avx512(format, bytes, out),
            Isa::Avx2 => dequantize_avx2(format, bytes, out),
            Isa::Scalar => unreachable!("the portable dequantizer is dequantize_row"),
        }
    }
}

/// [`dequantize`] by AVX2, FMA and F16C.
///
/// # Safety
/// As for [`dequantize`]; the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_avx2(format: Format, bytes: &[u8], out: &mut [f32]) {
    let blocks = bytes
        .chunks_exact(format.block_bytes())
        .zip(out.chunks_exact_mut(format.block_len()));
    // SAFETY (each block): `block` holds one whole block and `y` its block_len() weights.
    unsafe {
        match format {
            Format::Q8_0 => blocks.for_each(|(block, y)| q8_0(block.as_ptr(), y.as_mut_ptr())),
            Format::Q4_0 => blocks.for_each(|(block, y)| q4_0(block.as_ptr(), y.as_mut_ptr())),
            Format::Q4_K => blocks.for_each(|(block, y)| q4_k(block.as_ptr(), y.as_mut_ptr())),
            Format::Q6_K => blocks.for_each(|(block, y)| q6_k(block.as_ptr(), y.as_mut_ptr())),
        }
    }
}

/// [`dequantize`] by AVX-512F (the Q6_K unpacking by AVX2).
///
/// # Safety
/// As for [`dequantize`]; the CPU has AVX-512F, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn dequantize_avx512(format: Format, bytes: &[u8], out: &mut [f32]) {
    let blocks = bytes
        .chunks_exact(format.block_bytes())
        .zip(out.chunks_exact_mut(format.block_len()));
    // SAFETY (each block): `block` holds one whole block and `y` its block_len() weights.
    unsafe {
        match format {
            Format::Q8_0 => blocks.for_each(|(b, y)| avx512::q8_0(b.as_ptr(), y.as_mut_ptr())),
            Format::Q4_0 => blocks.for_each(|(b, y)| avx512::q4_0(b.as_ptr(), y.as_mut_ptr())),
            Format::Q4_K => blocks.for_each(|(b, y)| avx512::q4_k(b.as_ptr(), y.as_mut_ptr())),
            Format::Q6_K => blocks.for_each(|(b, y)| avx512::q6_k(b.as_ptr(), y.as_mut_ptr())),
        }
    }
}

/// Stores 8 values at `y + at`.
///
/// # Safety
/// `y + at .. y + at + 8` is writable; the CPU has AVX.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn put(y: *mut f32, at: usize, v: __m256) {
    // SAFETY: the caller's; an unaligned store.
    unsafe { _mm256_storeu_ps(y.add(at), v) }
}

/// One Q8_0 block (34 bytes at `p`: `d`, then 32 × i8) into `y[..32]`.
///
/// # Safety
/// As for [`dequantize`], for one block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0(p: *const u8, y: *mut f32) {
    // SAFETY: bytes 2 + 8c .. 10 + 8c are quants, and y has 32 values.
    unsafe {
        let d = scale(p);
        for c in 0..BLOCK / 8 {
            put(y, 8 * c, _mm256_mul_ps(widen_i8(p.add(2 + 8 * c)), d));
        }
    }
}

/// One Q4_0 block (18 bytes at `p`: `d`, then byte `j` holding element `j` in its low nibble and
/// `j + 16` in its high one) into `y[..32]`.
///
/// # Safety
/// As for [`dequantize`], for one block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0(p: *const u8, y: *mut f32) {
    let (low4, eight) = (_mm256_set1_epi32(0x0f), _mm256_set1_epi32(8));
    // SAFETY: bytes 2 + 8h .. 10 + 8h are quants, and y has 32 values.
    unsafe {
        let d = scale(p);
        for h in 0..2 {
            let bytes = widen_u8(p.add(2 + 8 * h));
            // q − 8 in integers (exact), then one rounding by d, as the reference.
            let lo = _mm256_sub_epi32(_mm256_and_si256(bytes, low4), eight);
            let hi = _mm256_sub_epi32(_mm256_srli_epi32::<4>(bytes), eight);
            put(y, 8 * h, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), d));
            put(y, 16 + 8 * h, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d));
        }
    }
}

/// One Q4_K super-block (144 bytes at `p`) into `y[..256]`.
///
/// # Safety
/// As for [`dequantize`], for one super-block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k(p: *const u8, y: *mut f32) {
    let low4 = _mm256_set1_epi32(0x0f);
    // SAFETY: d, dmin, the 12 scale bytes and the 128 quant bytes lie inside the super-block;
    // y has 256 values.
    unsafe {
        let (d, dmin) = (scale(p), scale(p.add(2)));
        let (sc, mn) = k_scales_mins(std::slice::from_raw_parts(p.add(4), 12));
        for s in 0..SUPER_BLOCK / BLOCK {
            // The reference's two products, each rounded once: d·sc and dmin·m.
            let d1 = _mm256_mul_ps(d, _mm256_set1_ps(f32::from(sc[s])));
            let m1 = _mm256_mul_ps(dmin, _mm256_set1_ps(f32::from(mn[s])));
            for c in 0..BLOCK / 8 {
                let bytes = widen_u8(p.add(16 + 32 * (s / 2) + 8 * c));
                let q = if s % 2 == 0 {
                    _mm256_and_si256(bytes, low4)
                } else {
                    _mm256_srli_epi32::<4>(bytes)
                };
                let w = _mm256_sub_ps(_mm256_mul_ps(d1, _mm256_cvtepi32_ps(q)), m1);
                put(y, BLOCK * s + 8 * c, w);
            }
        }
    }
}

/// One Q6_K super-block (210 bytes at `p`) into `y[..256]`.
///
/// # Safety
/// As for [`dequantize`], for one super-block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k(p: *const u8, y: *mut f32) {
    let mut quants: Q6Quants = [0; SUPER_BLOCK];
    // SAFETY: the quants, the scales (192..208) and d (208) lie inside the super-block; y has
    // 256 values, and `quants` 256 bytes.
    unsafe {
        q6_k_unpack(p, &mut quants);
        let d = scale(p.add(208));
        for e in (0..SUPER_BLOCK).step_by(8) {
            // Weights e..e + 8 share the scale of their 16-weight group.
            let sc = f32::from(*p.add(192 + e / 16) as i8);
            let dsc = _mm256_mul_ps(d, _mm256_set1_ps(sc));
            let q = widen_i8(quants.as_ptr().add(e) as *const u8);
            put(y, e, _mm256_mul_ps(dsc, q));
        }
    }
}

/// The same blocks 16 values at a time; each function's safety contract is its AVX2 twin's,
/// with AVX-512F.
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::format::{BLOCK, SUPER_BLOCK};
    use super::super::kblocks::k_scales_mins;
    use super::super::x86_k::{q6_k_unpack, Q6Quants};

    /// The f16 scale at `p`, in all 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn scale(p: *const u8) -> __m512 {
        // SAFETY: the caller's; an unaligned 2-byte read.
        let bits = unsafe { (p as *const i16).read_unaligned() };
        _mm512_cvtph_ps(_mm256_set1_epi16(bits))
    }

    /// 16 bytes at `p`, zero- or sign-extended to 32-bit lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn load16(p: *const u8, signed: bool) -> __m512i {
        // SAFETY: the caller's: 16 readable bytes.
        let v = unsafe { _mm_loadu_si128(p as *const __m128i) };
        if signed {
            _mm512_cvtepi8_epi32(v)
        } else {
            _mm512_cvtepu8_epi32(v)
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn put(y: *mut f32, at: usize, v: __m512) {
        // SAFETY: the caller's; an unaligned store of 16 values.
        unsafe { _mm512_storeu_ps(y.add(at), v) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn q8_0(p: *const u8, y: *mut f32) {
        // SAFETY: bytes 2 .. 34 are quants, and y has 32 values.
        unsafe {
            let d = scale(p);
            for h in 0..2 {
                let q = _mm512_cvtepi32_ps(load16(p.add(2 + 16 * h), true));
                put(y, 16 * h, _mm512_mul_ps(q, d));
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn q4_0(p: *const u8, y: *mut f32) {
        let (low4, eight) = (_mm512_set1_epi32(0x0f), _mm512_set1_epi32(8));
        // SAFETY: bytes 2 .. 18 are quants, and y has 32 values.
        unsafe {
            let d = scale(p);
            let bytes = load16(p.add(2), false);
            let lo = _mm512_sub_epi32(_mm512_and_si512(bytes, low4), eight);
            let hi = _mm512_sub_epi32(_mm512_srli_epi32::<4>(bytes), eight);
            put(y, 0, _mm512_mul_ps(_mm512_cvtepi32_ps(lo), d));
            put(y, 16, _mm512_mul_ps(_mm512_cvtepi32_ps(hi), d));
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn q4_k(p: *const u8, y: *mut f32) {
        let low4 = _mm512_set1_epi32(0x0f);
        // SAFETY: as the AVX2 q4_k: all reads inside the 144-byte super-block; y has 256 values.
        unsafe {
            let (d, dmin) = (scale(p), scale(p.add(2)));
            let (sc, mn) = k_scales_mins(std::slice::from_raw_parts(p.add(4), 12));
            // Sub-blocks 2j (low nibbles) and 2j + 1 (high nibbles) share 32 bytes.
            for j in 0..SUPER_BLOCK / BLOCK / 2 {
                let [(d_lo, m_lo), (d_hi, m_hi)] = [2 * j, 2 * j + 1].map(|s| {
                    (
                        _mm512_mul_ps(d, _mm512_set1_ps(f32::from(sc[s]))),
                        _mm512_mul_ps(dmin, _mm512_set1_ps(f32::from(mn[s]))),
                    )
                });
                for h in 0..2 {
                    let bytes = load16(p.add(16 + 32 * j + 16 * h), false);
                    let lo = _mm512_cvtepi32_ps(_mm512_and_si512(bytes, low4));
                    let hi = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(bytes));
                    let at = 2 * BLOCK * j + 16 * h;
                    put(y, at, _mm512_sub_ps(_mm512_mul_ps(d_lo, lo), m_lo));
                    put(y, at + BLOCK, _mm512_sub_ps(_mm512_mul_ps(d_hi, hi), m_hi));
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn q6_k(p: *const u8, y: *mut f32) {
        let mut quants: Q6Quants = [0; SUPER_BLOCK];
        // SAFETY: as the AVX2 q6_k.
        unsafe {
            q6_k_unpack(p, &mut quants);
            let d = scale(p.add(208));
            // Each 16 weights share a scale.
            for g in 0..SUPER_BLOCK / 16 {
                let sc = f32::from(*p.add(192 + g) as i8);
                let dsc = _mm512_mul_ps(d, _mm512_set1_ps(sc));
                let q = _mm512_cvtepi32_ps(load16(quants.as_ptr().add(16 * g) as *const u8, true));
                put(y, 16 * g, _mm512_mul_ps(dsc, q));
            }
        }
    }
}
