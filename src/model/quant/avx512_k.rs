//! AVX-512F kernels for the K formats (Q4_K, Q6_K; layouts in [`super::kblocks`]): the stored
//! quants widened to f32 in registers, f32 FMAs, x stays f32, as in [`super::avx512`] for Q8_0 /
//! Q4_0, whose loops (groups of rows, K chunks, tiles, x staging, prefetch) these share: a
//! super-block is one of its blocks ([`Kernel::LEN`] = 256).
//!
//! Each 16-lane vector of quants is dequantized once, to the exact stored weight, and then serves
//! every x row of the tile (one FMA per x row); how, per format:
//! - Q4_K, weight `d·sc·q − dmin·m` per 32-weight sub-block: 16 quant bytes zero-extended to i32
//!   lanes (`vpmovzxbd`) hold the low nibbles of one sub-block and the high nibbles of the next.
//!   Each nibble indexes, by `vpermps` (which reads only the low 4 bits of an index, so the low
//!   nibble needs no mask), a 16-entry table of the sub-block's weights, `q·(d·sc) − dmin·m` for
//!   q = 0..15, built by one FMA per sub-block and weight row: 32 weights, so the scale and the
//!   min cost half an operation per vector and x's sums are not needed. The table holds exactly
//!   the reference dequantizer's values: `d·sc`, `q·d·sc` and `dmin·m` are exact in f32 (an f16
//!   times at most 10 bits), so the only rounding is the subtraction's, once, in both.
//! - Q6_K, weight `d·sc·(q − 32)` per 16 weights with 6-bit `q`: the quants of a 128-weight half
//!   are assembled as bytes, 64 at a time, from its 64 `ql` bytes and 32 `qh` bytes (read twice
//!   into one register) by whole-register shifts, masks and one bit-select each (AVX-512F has no
//!   byte shifts, but the masks discard what 32-bit shifts carry across bytes). Then each 16
//!   bytes go to i32 lanes, to f32, and one FMA gives `q·(d·sc) − 32·(d·sc)`, exact (at most 24
//!   significant bits).
//!
//! Scales are unpacked once per super-block and weight row onto the stack (Q4_K's by the word
//! arithmetic shared with the AVX2 kernels, [`k_scales_mins`]), from where each sub-block reads
//! its own as a broadcast.
//!
//! Tried and measured no faster (one thread, Xeon with AVX-512, about 9 GB/s of weights either
//! way): Q6_K's quant bytes through a stack copy, widened from memory instead of extracted by
//! `vextracti32x4`; Q4_K's scale bytes unpacked in vector lanes instead of by word arithmetic.

use std::arch::x86_64::*;
use std::ops::Range;

use super::avx512::{Kernel, Operands};
use super::format::{Format, BLOCK, SUPER_BLOCK};
use super::kblocks::k_scales_mins;
use super::prefetch::BlockBytes;
use super::x86::in_memory;

/// 32-value x blocks per super-block.
const X_BLOCKS: usize = SUPER_BLOCK / BLOCK;

pub(super) struct Q4K;
pub(super) struct Q6K;

impl BlockBytes for Q4K {
    const BYTES: usize = Format::Q4_K.block_bytes();
}

impl BlockBytes for Q6K {
    const BYTES: usize = Format::Q6_K.block_bytes();
}

/// 16 bytes at `p`, each zero-extended to an i32 lane.
///
/// # Safety
/// `p` addresses 16 readable bytes; the CPU has AVX-512F.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn widen_u8(p: *const u8) -> __m512i {
    // SAFETY: the caller's; an unaligned 16-byte read.
    unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i)) }
}

/// The f16 at `p` as f32, in all 16 lanes.
///
/// # Safety
/// `p` addresses 2 readable bytes; the CPU has AVX-512F and F16C.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn half(p: *const u8) -> __m512 {
    // SAFETY: the caller's; an unaligned 2-byte read.
    let bits = unsafe { (p as *const i16).read_unaligned() };
    _mm512_cvtph_ps(_mm256_set1_epi16(bits))
}

impl Q4K {
    /// A super-block's eight `d·sc` (lanes 0..8) and eight `dmin·m` (lanes 8..16), into `out`.
    ///
    /// # Safety
    /// `block` addresses a whole Q4_K super-block; the CPU has AVX-512F and F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn scales(block: *const u8, out: &mut [f32; 16]) {
        // SAFETY: `d` at bytes 0..2, `dmin` at 2..4, the packed scales at 4..16.
        let (d, dmin, (sc, mn)) = unsafe {
            (
                half(block),
                half(block.add(2)),
                k_scales_mins(std::slice::from_raw_parts(block.add(4), 12)),
            )
        };
        let packed = _mm_set_epi64x(i64::from_le_bytes(mn), i64::from_le_bytes(sc));
        let factors = _mm512_mask_blend_ps(0xff00, d, dmin);
        let v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(packed)), factors);
        // SAFETY: 16 f32s into `out`'s 16.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
    }

    /// Sub-block `s`'s weights by quant: lane q holds `q·(d·sc) − dmin·m`, from [`scales`]'s
    /// output.
    ///
    /// [`scales`]: Self::scales
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    fn table(scales: &[f32; 16], s: usize) -> __m512 {
        let quants = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        let (dsc, min) = (_mm512_set1_ps(scales[s]), _mm512_set1_ps(scales[8 + s]));
        _mm512_fmsub_ps(quants, dsc, min)
    }
}

impl Kernel for Q4K {
    const LEN: usize = SUPER_BLOCK;

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn add_tile<const R: usize, const MB: usize, const PF: bool>(
        o: &Operands,
        acc: &mut [[__m512; MB]; R],
        r: usize,
        i: usize,
        blocks: Range<usize>,
    ) {
        let plan = o.prefetch_plan::<Self, R>(r);
        let mut scales = [[0.0f32; 16]; R];
        // SAFETY (every read): rows r..r + R < n, x rows i..i + MB < m and b < nb (the
        // caller's); offsets inside a 144-byte super-block and its 256 x values.
        unsafe {
            for (part, prefetch) in plan.parts(blocks) {
                for b in part {
                    if PF {
                        prefetch.hint::<Self, R>(o.w, b);
                    }
                    let sbs: [*const u8; R] = std::array::from_fn(|a| o.block::<Self>(r + a, b));
                    for (s, &p) in scales.iter_mut().zip(&sbs) {
                        Self::scales(p, s);
                    }
                    in_memory(&mut scales);
                    // Quant bytes 32j..32j + 32: sub-block 2j in their low nibbles, 2j + 1 in
                    // their high ones; x blocks 8b + 2j and 8b + 2j + 1.
                    for j in 0..4 {
                        let tables: [(__m512, __m512); R] = std::array::from_fn(|a| {
                            (
                                Self::table(&scales[a], 2 * j),
                                Self::table(&scales[a], 2 * j + 1),
                            )
                        });
                        let xb = X_BLOCKS * b + 2 * j;
                        for h in 0..2 {
                            let x: [(__m512, __m512); MB] = std::array::from_fn(|e| {
                                (o.x16(i + e, xb, h), o.x16(i + e, xb + 1, h))
                            });
                            for ((acc_a, &p), &(even, odd)) in acc.iter_mut().zip(&sbs).zip(&tables)
                            {
                                let q = widen_u8(p.add(16 + 32 * j + 16 * h));
                                let lo = _mm512_permutexvar_ps(q, even);
                                // A byte in an i32 lane shifted down by 4: its high nibble alone.
                                let hi = _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(q), odd);
                                for (s, (xlo, xhi)) in acc_a.iter_mut().zip(&x) {
                                    *s = _mm512_fmadd_ps(*xlo, lo, *s);
                                    *s = _mm512_fmadd_ps(*xhi, hi, *s);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Q6K {
    /// A super-block's sixteen `d·sc` into `dsc` and `−32·d·sc` into `offset`.
    ///
    /// # Safety
    /// `block` addresses a whole Q6_K super-block; the CPU has AVX-512F and F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn scales(block: *const u8, dsc: &mut [f32; 16], offset: &mut [f32; 16]) {
        // SAFETY: the i8 scales at bytes 192..208, `d` at 208..210; 16 f32s into each output.
        unsafe {
            let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(block.add(192) as *const __m128i));
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(sc), half(block.add(208)));
            _mm512_storeu_ps(dsc.as_mut_ptr(), v);
            _mm512_storeu_ps(offset.as_mut_ptr(), _mm512_mul_ps(v, _mm512_set1_ps(-32.0)));
        }
    }

    /// The 6-bit quants of 128-weight half `n` of the super-block at `block`, one per byte:
    /// weights `128n..128n + 64` and `128n + 64..128n + 128`.
    ///
    /// # Safety
    /// `block` addresses a whole Q6_K super-block, `n < 2`; the CPU has AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn quants(block: *const u8, n: usize) -> (__m512i, __m512i) {
        // SAFETY: `ql[64n..64n + 64]` and `qh[32n..32n + 32]`, inside the super-block.
        let (ql, qh) = unsafe {
            (
                _mm512_loadu_si512(block.add(64 * n) as *const _),
                _mm256_loadu_si256(block.add(128 + 32 * n) as *const __m256i),
            )
        };
        // Byte l of each 32-byte quarter k (weight 128n + 32k + l): low bits from `ql[l]` (k = 0)
        // or `ql[32 + l]` (k = 1), low or high nibble by k < 2; high bits 2k, 2k + 1 of `qh[l]`,
        // moved to bits 4 and 5. `qh` serves quarters 0 and 1 (2 and 3) from both halves of one
        // register, shifted by per-lane amounts.
        let qh = _mm512_broadcast_i64x4(qh);
        let (low4, bits45) = (
            _mm512_set1_epi32(0x0f0f_0f0f),
            _mm512_set1_epi32(0x3030_3030),
        );
        let up = _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 2, 2, 2);
        let down = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
        let high01 = _mm512_and_si512(_mm512_sllv_epi32(qh, up), bits45);
        let high23 = _mm512_and_si512(_mm512_srlv_epi32(qh, down), bits45);
        // 0xEA: (a & b) | c.
        let q01 = _mm512_ternarylogic_epi32::<0xEA>(ql, low4, high01);
        let q23 = _mm512_ternarylogic_epi32::<0xEA>(_mm512_srli_epi32::<4>(ql), low4, high23);
        (q01, q23)
    }

    /// Bytes `16g..16g + 16` of `v` (g < 4), as f32 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    fn widen_quarter(v: __m512i, g: usize) -> __m512 {
        let bytes = match g {
            0 => _mm512_castsi512_si128(v),
            1 => _mm512_extracti32x4_epi32::<1>(v),
            2 => _mm512_extracti32x4_epi32::<2>(v),
            _ => _mm512_extracti32x4_epi32::<3>(v),
        };
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes))
    }
}

impl Kernel for Q6K {
    const LEN: usize = SUPER_BLOCK;

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn add_tile<const R: usize, const MB: usize, const PF: bool>(
        o: &Operands,
        acc: &mut [[__m512; MB]; R],
        r: usize,
        i: usize,
        blocks: Range<usize>,
    ) {
        let plan = o.prefetch_plan::<Self, R>(r);
        let (mut dsc, mut offset) = ([[0.0f32; 16]; R], [[0.0f32; 16]; R]);
        // SAFETY (every read): rows r..r + R < n, x rows i..i + MB < m and b < nb (the
        // caller's); offsets inside a 210-byte super-block and its 256 x values.
        unsafe {
            for (part, prefetch) in plan.parts(blocks) {
                for b in part {
                    if PF {
                        prefetch.hint::<Self, R>(o.w, b);
                    }
                    let sbs: [*const u8; R] = std::array::from_fn(|a| o.block::<Self>(r + a, b));
                    for a in 0..R {
                        Self::scales(sbs[a], &mut dsc[a], &mut offset[a]);
                    }
                    in_memory(&mut dsc);
                    in_memory(&mut offset);
                    for n in 0..2 {
                        let q: [(__m512i, __m512i); R] =
                            std::array::from_fn(|a| Self::quants(sbs[a], n));
                        // 16-weight group g of the half: weights 128n + 16g.., scale 8n + g.
                        for g in 0..8 {
                            let x: [__m512; MB] = std::array::from_fn(|e| {
                                o.x16(i + e, X_BLOCKS * b + 4 * n + g / 2, g % 2)
                            });
                            for a in 0..R {
                                let quarter = if g < 4 { q[a].0 } else { q[a].1 };
                                let w = _mm512_fmadd_ps(
                                    Self::widen_quarter(quarter, g % 4),
                                    _mm512_set1_ps(dsc[a][8 * n + g]),
                                    _mm512_set1_ps(offset[a][8 * n + g]),
                                );
                                for (s, &xv) in acc[a].iter_mut().zip(&x) {
                                    *s = _mm512_fmadd_ps(xv, w, *s);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
