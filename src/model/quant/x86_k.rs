//! AVX2 + FMA + F16C kernels for the K formats (Q4_K, Q6_K; layouts in [`super::kblocks`]): the
//! stored quants widened to f32 in registers, f32 FMAs, x stays f32, as in [`super::x86`] for
//! Q8_0 / Q4_0, whose loops (groups of rows, K chunks, tiles, x staging, prefetch) these share
//! through [`Kernel`]: a super-block is one of their blocks ([`Kernel::LEN`] = 256).
//!
//! Quants go to f32 eight at a time: 8 bytes to 8 i32 lanes (`vpmovzxbd` / `vpmovsxbd` straight
//! from memory), then one conversion. As for Q8_0 / Q4_0, the scales are applied in one of two
//! ways by tile, the same split (`MB >= 3` dequantizes):
//! - one or two x rows, by sums: per 32 (Q4_K) or 16 (Q6_K) weights and (weight row, x row)
//!   pair, `Σ q·x` in a block accumulator, then one FMA by the sub-block's `d·sc`. Q4_K's min
//!   term, `−dmin·m_s·Σ_{e∈s} x`, takes one FMA per super-block and pair: the eight `dmin·m`
//!   lanes times the eight staged sums of x (`Operands::neg_sums8`), added lane-wise into the
//!   running sum that is reduced at the end.
//! - three x rows and more, by dequantized weights: each vector is turned once into the exact
//!   stored weights, then serves every x row (one FMA per x row). Q4_K: `q·(d·sc) − dmin·m` in
//!   one FMA, from one widening for two sub-blocks (a byte's low nibble is sub-block `2j`, its
//!   high nibble `2j + 1`), the same value as the reference dequantizer: `d·sc`, `q·d·sc` and
//!   `dmin·m` are exact in f32 (an f16 times at most 10 bits), so the only rounding is the
//!   subtraction's, once, in both. Q6_K: `(q − 32)·(d·sc)`, exact (at most 24 significant bits).
//!
//! Q6_K's 6-bit quants are assembled once per super-block and weight row as bytes `q − 32`, 32
//! at a time, from its `ql` and `qh` bytes by 16-bit shifts and byte masks ([`q6_k_unpack`]),
//! onto the stack, from where they are widened like Q8_0's. Scales are unpacked once per
//! super-block and weight row onto the stack too (Q4_K's by the word arithmetic shared with the
//! AVX-512 kernels, [`k_scales_mins`]), from where each sub-block reads its own as a broadcast.

use std::arch::x86_64::*;
use std::ops::Range;

use super::format::{Format, SUPER_BLOCK};
use super::kblocks::k_scales_mins;
use super::prefetch::BlockBytes;
use super::x86::{in_memory, scale, widen_i8, widen_u8, Kernel, Operands, X_BLOCKS};

pub(super) struct Q4K;
pub(super) struct Q6K;

impl BlockBytes for Q4K {
    const BYTES: usize = Format::Q4_K.block_bytes();
}

impl BlockBytes for Q6K {
    const BYTES: usize = Format::Q6_K.block_bytes();
}

impl Q4K {
    /// A super-block's eight `d·sc` (as f32, into `dsc`) and eight `dmin·m` (returned, lane by
    /// lane).
    ///
    /// # Safety
    /// `block` addresses a whole Q4_K super-block; the CPU has AVX2 and F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(block: *const u8, dsc: &mut [f32; 8]) -> __m256 {
        // SAFETY: `d` at bytes 0..2, `dmin` at 2..4, the packed scales at 4..16.
        let (d, dmin, (sc, mn)) = unsafe {
            (
                scale(block),
                scale(block.add(2)),
                k_scales_mins(std::slice::from_raw_parts(block.add(4), 12)),
            )
        };
        let widen = |v: [u8; 8]| {
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi64x(
                0,
                i64::from_le_bytes(v),
            )))
        };
        // SAFETY: 8 f32s into `dsc`'s 8.
        unsafe { _mm256_storeu_ps(dsc.as_mut_ptr(), _mm256_mul_ps(widen(sc), d)) };
        _mm256_mul_ps(widen(mn), dmin)
    }

    /// The low and high nibbles of the 8 quant bytes at `p`, as f32: 8 quants of sub-block `2j`
    /// and the same 8 of sub-block `2j + 1`.
    ///
    /// # Safety
    /// `p` addresses 8 readable bytes; the CPU has AVX2.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles(p: *const u8) -> (__m256, __m256) {
        // SAFETY: the caller's.
        let bytes = unsafe { widen_u8(p) };
        let lo = _mm256_and_si256(bytes, _mm256_set1_epi32(0x0f));
        // A byte in an i32 lane shifted down by 4: its high nibble alone.
        let hi = _mm256_srli_epi32::<4>(bytes);
        (_mm256_cvtepi32_ps(lo), _mm256_cvtepi32_ps(hi))
    }

    /// [`Kernel::add_tile`] by block sums (one or two x rows; see the module's doc).
    ///
    /// # Safety
    /// As for [`Kernel::add_tile`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn add_sums<const R: usize, const MB: usize, const PF: bool>(
        o: &Operands,
        acc: &mut [[__m256; MB]; R],
        r: usize,
        i: usize,
        blocks: Range<usize>,
    ) {
        let plan = o.prefetch_plan::<Self, R>(r);
        let mut dsc = [[0.0f32; 8]; R];
        // SAFETY (every read): rows r..r + R < n, x rows i..i + MB < m and b < nb (the
        // caller's); offsets inside a 144-byte super-block and its 256 x values.
        unsafe {
            for (part, prefetch) in plan.parts(blocks) {
                for b in part {
                    if PF {
                        prefetch.hint::<Self, R>(o.w, b);
                    }
                    let sbs: [*const u8; R] = std::array::from_fn(|a| o.block::<Self>(r + a, b));
                    for ((acc_a, &p), dsc_a) in acc.iter_mut().zip(&sbs).zip(&mut dsc) {
                        let mins = Self::scales(p, dsc_a);
                        for (j, s) in acc_a.iter_mut().enumerate() {
                            *s = _mm256_fmadd_ps(mins, o.neg_sums8(i + j, b), *s);
                        }
                    }
                    in_memory(&mut dsc);
                    // Quant bytes 32j..32j + 32: sub-block 2j in their low nibbles, 2j + 1 in
                    // their high ones, each summed apart before its scale.
                    for j in 0..4 {
                        let xb = X_BLOCKS * b + 2 * j;
                        let mut bacc = [[[_mm256_setzero_ps(); MB]; 2]; R];
                        for c in 0..4 {
                            for (ba, &p) in bacc.iter_mut().zip(&sbs) {
                                let (lo, hi) = Self::nibbles(p.add(16 + 32 * j + 8 * c));
                                for (h, q) in [lo, hi].into_iter().enumerate() {
                                    for (e, v) in ba[h].iter_mut().enumerate() {
                                        let x = o.x(i + e, xb + h, c);
                                        *v = if c == 0 {
                                            _mm256_mul_ps(x, q)
                                        } else {
                                            _mm256_fmadd_ps(x, q, *v)
                                        };
                                    }
                                }
                            }
                        }
                        for ((acc_a, ba), dsc_a) in acc.iter_mut().zip(&bacc).zip(&dsc) {
                            for (h, ba_h) in ba.iter().enumerate() {
                                let d = _mm256_set1_ps(dsc_a[2 * j + h]);
                                for (v, &bv) in acc_a.iter_mut().zip(ba_h) {
                                    *v = _mm256_fmadd_ps(bv, d, *v);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`Kernel::add_tile`] by dequantized weights (three x rows and more; see the module's doc).
    ///
    /// # Safety
    /// As for [`Kernel::add_tile`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn add_dq<const R: usize, const MB: usize, const PF: bool>(
        o: &Operands,
        acc: &mut [[__m256; MB]; R],
        r: usize,
        i: usize,
        blocks: Range<usize>,
    ) {
        let plan = o.prefetch_plan::<Self, R>(r);
        let (mut dsc, mut mins) = ([[0.0f32; 8]; R], [[0.0f32; 8]; R]);
        // SAFETY (every read): rows r..r + R < n, x rows i..i + MB < m and b < nb (the
        // caller's); offsets inside a 144-byte super-block and its 256 x values.
        unsafe {
            for (part, prefetch) in plan.parts(blocks) {
                for b in part {
                    if PF {
                        prefetch.hint::<Self, R>(o.w, b);
                    }
                    let sbs: [*const u8; R] = std::array::from_fn(|a| o.block::<Self>(r + a, b));
                    for a in 0..R {
                        let m = Self::scales(sbs[a], &mut dsc[a]);
                        _mm256_storeu_ps(mins[a].as_mut_ptr(), m);
                    }
                    in_memory(&mut dsc);
                    in_memory(&mut mins);
                    // Quant bytes 32j..32j + 32: sub-block 2j in their low nibbles, 2j + 1 in
                    // their high ones; x blocks 8b + 2j and 8b + 2j + 1.
                    for j in 0..4 {
                        let xb = X_BLOCKS * b + 2 * j;
                        for ((acc_a, &p), (dsc_a, mins_a)) in
                            acc.iter_mut().zip(&sbs).zip(dsc.iter().zip(&mins))
                        {
                            // The two sub-blocks' scales and mins, once for their 64 weights.
                            let [d_lo, d_hi, m_lo, m_hi] = [
                                dsc_a[2 * j],
                                dsc_a[2 * j + 1],
                                mins_a[2 * j],
                                mins_a[2 * j + 1],
                            ]
                            .map(|v| _mm256_set1_ps(v));
                            for c in 0..4 {
                                let (lo, hi) = Self::nibbles(p.add(16 + 32 * j + 8 * c));
                                let lo = _mm256_fmsub_ps(lo, d_lo, m_lo);
                                let hi = _mm256_fmsub_ps(hi, d_hi, m_hi);
                                for (e, v) in acc_a.iter_mut().enumerate() {
                                    *v = _mm256_fmadd_ps(o.x(i + e, xb, c), lo, *v);
                                    *v = _mm256_fmadd_ps(o.x(i + e, xb + 1, c), hi, *v);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Kernel for Q4K {
    const LEN: usize = SUPER_BLOCK;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn add_tile<const R: usize, const MB: usize, const PF: bool>(
        o: &Operands,
        acc: &mut [[__m256; MB]; R],
        r: usize,
        i: usize,
        blocks: Range<usize>,
    ) {
        // SAFETY: forwarded.
        unsafe {
            if MB >= 3 {
                Self::add_dq::<R, MB, PF>(o, acc, r, i, blocks)
            } else {
                Self::add_sums::<R, MB, PF>(o, acc, r, i, blocks)
            }
        }
    }
}

/// A Q6_K super-block's quants, `q − 32` as i8, in weight order (what [`q6_k_unpack`] writes).
pub(super) type Q6Quants = [i8; SUPER_BLOCK];

/// The 256 quants of the Q6_K super-block at `block` into `out`, as `q − 32`. Also the prefill
/// dequantizer's.
///
/// Each 128-weight half `n` is four runs of 32 bytes, one per quarter `k` (weights
/// `128n + 32k..`): low bits from the low (k < 2) or high nibble of `ql[64n + 32·(k mod 2)..]`,
/// high bits 2k, 2k + 1 of `qh[32n..]` moved to bits 4 and 5. The shifts are 16-bit (AVX2 has
/// no byte shifts), but the masks discard what they carry across bytes.
///
/// # Safety
/// `block` addresses a whole 210-byte super-block; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6_k_unpack(block: *const u8, out: &mut Q6Quants) {
    let (low4, bits45, offset) = (
        _mm256_set1_epi8(0x0f),
        _mm256_set1_epi8(0x30),
        _mm256_set1_epi8(32),
    );
    let quants = |low: __m256i, high: __m256i| {
        let q = _mm256_or_si256(_mm256_and_si256(low, low4), _mm256_and_si256(high, bits45));
        _mm256_sub_epi8(q, offset)
    };
    for n in 0..2 {
        // SAFETY: `ql[64n..64n + 64]` and `qh[32n..32n + 32]` lie inside the super-block, and
        // the four stores fill `out[128n..128n + 128]`.
        unsafe {
            let load = |at: usize| _mm256_loadu_si256(block.add(at) as *const __m256i);
            let (ql0, ql1, qh) = (load(64 * n), load(64 * n + 32), load(128 + 32 * n));
            let runs = [
                quants(ql0, _mm256_slli_epi16::<4>(qh)),
                quants(ql1, _mm256_slli_epi16::<2>(qh)),
                quants(_mm256_srli_epi16::<4>(ql0), qh),
                quants(_mm256_srli_epi16::<4>(ql1), _mm256_srli_epi16::<2>(qh)),
            ];
            for (k, run) in runs.into_iter().enumerate() {
                let at = out.as_mut_ptr().add(128 * n + 32 * k);
                _mm256_storeu_si256(at as *mut __m256i, run);
            }
        }
    }
}

impl Q6K {
    /// A super-block's sixteen `d·sc` (one per 16 weights) into `dsc`, exact (an i8 times an
    /// f16).
    ///
    /// # Safety
    /// `block` addresses a whole Q6_K super-block; the CPU has AVX2 and F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(block: *const u8, dsc: &mut [f32; 16]) {
        // SAFETY: the i8 scales at bytes 192..208, `d` at 208..210; 8 f32s twice into `dsc`.
        unsafe {
            let d = scale(block.add(208));
            for h in 0..2 {
                let v = _mm256_mul_ps(widen_i8(block.add(192 + 8 * h)), d);
                _mm256_storeu_ps(dsc.as_mut_ptr().add(8 * h), v);
            }
        }
    }
}

impl Kernel for Q6K {
    const LEN: usize = SUPER_BLOCK;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn add_tile<const R: usize, const MB: usize, const PF: bool>(
        o: &Operands,
        acc: &mut [[__m256; MB]; R],
        r: usize,
        i: usize,
        blocks: Range<usize>,
    ) {
        let plan = o.prefetch_plan::<Self, R>(r);
        let mut dsc = [[0.0f32; 16]; R];
        let mut quants: [Q6Quants; R] = [[0; SUPER_BLOCK]; R];
        // SAFETY (every read): rows r..r + R < n, x rows i..i + MB < m and b < nb (the
        // caller's); offsets inside a 210-byte super-block, its 256 quants and 256 x values.
        unsafe {
            for (part, prefetch) in plan.parts(blocks) {
                for b in part {
                    if PF {
                        prefetch.hint::<Self, R>(o.w, b);
                    }
                    for a in 0..R {
                        let p = o.block::<Self>(r + a, b);
                        Self::scales(p, &mut dsc[a]);
                        q6_k_unpack(p, &mut quants[a]);
                    }
                    in_memory(&mut dsc);
                    in_memory(&mut quants);
                    // 16-weight group g: weights 16g.., x block 8b + g/2, chunks 2(g mod 2)
                    // and 2(g mod 2) + 1, scale g.
                    for g in 0..SUPER_BLOCK / 16 {
                        let (xb, c) = (X_BLOCKS * b + g / 2, 2 * (g % 2));
                        for ((acc_a, q), dsc_a) in acc.iter_mut().zip(&quants).zip(&dsc) {
                            let q = q.as_ptr().add(16 * g) as *const u8;
                            let (q0, q1) = (widen_i8(q), widen_i8(q.add(8)));
                            let d = _mm256_set1_ps(dsc_a[g]);
                            if MB >= 3 {
                                let (w0, w1) = (_mm256_mul_ps(q0, d), _mm256_mul_ps(q1, d));
                                for (e, v) in acc_a.iter_mut().enumerate() {
                                    *v = _mm256_fmadd_ps(o.x(i + e, xb, c), w0, *v);
                                    *v = _mm256_fmadd_ps(o.x(i + e, xb, c + 1), w1, *v);
                                }
                            } else {
                                for (e, v) in acc_a.iter_mut().enumerate() {
                                    let sum = _mm256_mul_ps(o.x(i + e, xb, c), q0);
                                    let sum = _mm256_fmadd_ps(o.x(i + e, xb, c + 1), q1, sum);
                                    *v = _mm256_fmadd_ps(sum, d, *v);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
