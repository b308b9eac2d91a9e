//! AVX2 + FMA + F16C kernels for the K formats (Q4_K, Q6_K; layouts in [`super::kblocks`]): the
//! stored quants widened to f32 in registers, f32 FMAs, as in [`super::x86`] for Q8_0 / Q4_0.
//!
//! Unpacking: 8 quant bytes at a time go to 8 i32 lanes (`vpmovzxbd` straight from memory); a
//! mask or a shift picks the nibble (and, for Q6_K, the two high bits from `qh`), then one
//! conversion to f32. Nothing is requantized and x stays f32.
//!
//! The scales are applied where each costs least:
//! - Q4_K, `Σ w·x = Σ_s (d·sc_s·Σ_{e∈s} q·x − dmin·m_s·Σ_{e∈s} x)` over its eight 32-weight
//!   sub-blocks `s`. Per (weight row, x row) pair, `Σ q·x` of a sub-block runs in a block
//!   accumulator and is scaled once by `d·sc_s` (one FMA per 32 weights); the min term needs the
//!   per-sub-block sums of x, which every product computes once ([`Operands`]), and costs one
//!   FMA per super-block: the eight `dmin·m_s` lanes times the eight sums, added lane-wise into
//!   the running sum that is reduced at the end.
//! - Q6_K, with one scale per 16 weights: each widened vector is dequantized once,
//!   `(q − 32)·(d·sc)` (the exact stored value), and then serves every x row of the tile.
//!
//! Order: [`GROUP`] weight rows at a time against all of x, in tiles of R weight rows × MB x rows
//! (4 × 1, 2 × 2, 1 × 2, 1 × 1) whose R·MB sums stay in registers over the whole row; a tile
//! loads each x vector once for its R rows and each weight vector once for its MB x rows. x is
//! read in its own row-major layout (a K super-block's 256 values are contiguous in each row).

use std::arch::x86_64::*;
use std::ops::Range;

use super::format::{Format, BLOCK, SUPER_BLOCK};
use super::kblocks::{k_scales_mins, Q4_K_BYTES, Q6_K_BYTES};
use super::x86::{hsum, sum32};
use super::Job;

/// Weight rows multiplied by all of x before the next rows are read.
const GROUP: usize = super::ROW_TILE;
// `rows_of` splits a group into two 2-row tiles for x-row pairs.
const _: () = assert!(GROUP == 4);

/// Where tiles read their operands.
struct Operands {
    /// The matrix.
    w: *const u8,
    row_bytes: usize,
    /// x, row-major `[m, k]`.
    x: *const f32,
    /// Q4_K only (else empty): `sums[i·k/32 + s] = Σ x[i, 32s..32s + 32]`.
    sums: Vec<f32>,
    m: usize,
    k: usize,
    /// Super-blocks per row.
    nb: usize,
}

impl Operands {
    fn new<F: KFormat>(job: &Job) -> Self {
        let (m, k) = (job.x.m, job.x.k);
        let x = job.x.x;
        // Once per call, for all m rows: m·k additions, next to the m·k·rows FMAs of the product.
        let sums = if F::SUMS {
            x.chunks_exact(BLOCK).map(sum32).collect()
        } else {
            Vec::new()
        };
        Self {
            w: job.w.bytes.as_ptr(),
            row_bytes: k / SUPER_BLOCK * F::BYTES,
            x: x.as_ptr(),
            sums,
            m,
            k,
            nb: k / SUPER_BLOCK,
        }
    }

    /// Super-block `b` of weight row `r`.
    ///
    /// # Safety
    /// `r < n`, `b < nb`.
    unsafe fn block<F: KFormat>(&self, r: usize, b: usize) -> *const u8 {
        // SAFETY: inside the matrix, by the caller's bounds.
        unsafe { self.w.add(r * self.row_bytes + b * F::BYTES) }
    }

    /// x row `i`, values `256b + e..256b + e + 8`.
    ///
    /// # Safety
    /// `i < m`, `b < nb`, `e + 8 <= 256`; the CPU has AVX.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn x(&self, i: usize, b: usize, e: usize) -> __m256 {
        // SAFETY: inside x's m·k values by the caller's bounds.
        unsafe { _mm256_loadu_ps(self.x.add(i * self.k + b * SUPER_BLOCK + e)) }
    }

    /// The eight sub-block sums of x row `i`'s super-block `b` (Q4_K).
    ///
    /// # Safety
    /// `i < m`, `b < nb`, the sums exist; the CPU has AVX.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sums8(&self, i: usize, b: usize) -> __m256 {
        // SAFETY: 8 of the m·k/32 sums, by the caller's bounds.
        unsafe {
            _mm256_loadu_ps(
                self.sums
                    .as_ptr()
                    .add(i * (self.k / BLOCK) + b * (SUPER_BLOCK / BLOCK)),
            )
        }
    }
}

/// A K format's tile: `x[i..i + MB] · W[r..r + R]` over the whole row, as R·MB eight-lane sums.
trait KFormat {
    /// Bytes per super-block.
    const BYTES: usize;
    /// Whether the tiles read [`Operands::sums`].
    const SUMS: bool;

    /// # Safety
    /// Weight rows `r..r + R` inside `0..n`, x rows `i..i + MB` inside `0..m`; the CPU has AVX2,
    /// FMA and F16C.
    unsafe fn tile<const R: usize, const MB: usize>(
        o: &Operands,
        r: usize,
        i: usize,
    ) -> [[__m256; MB]; R];
}

struct Q4K;
struct Q6K;

/// 8 bytes at `p` as 8 u32 lanes.
///
/// # Safety
/// `p` addresses 8 readable bytes; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_u8(p: *const u8) -> __m256i {
    // SAFETY: the caller's; `_mm_loadl_epi64` reads exactly 8 bytes, unaligned.
    unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)) }
}

/// The f16 at `p`, in all 8 lanes.
///
/// # Safety
/// `p` addresses 2 readable bytes; the CPU has F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half(p: *const u8) -> __m256 {
    // SAFETY: the caller's; an unaligned 2-byte read.
    let bits = unsafe { (p as *const i16).read_unaligned() };
    _mm256_cvtph_ps(_mm_set1_epi16(bits))
}

impl KFormat for Q4K {
    const BYTES: usize = Q4_K_BYTES;
    const SUMS: bool = true;

    #[inline(never)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const R: usize, const MB: usize>(
        o: &Operands,
        r: usize,
        i: usize,
    ) -> [[__m256; MB]; R] {
        let mut acc = [[_mm256_setzero_ps(); MB]; R];
        let low4 = _mm256_set1_epi32(0x0f);
        // SAFETY (every read): rows r..r + R < n, x rows i..i + MB < m and b < nb (the caller's);
        // offsets inside a 144-byte super-block and its 256 x values.
        unsafe {
            for b in 0..o.nb {
                let blocks: [*const u8; R] = std::array::from_fn(|a| o.block::<Self>(r + a, b));
                // Per row: d·sc_s for the eight sub-blocks (read back one at a time) and the min
                // term, straight into the running sums.
                let mut dsc = [[0.0f32; 8]; R];
                for (a, &p) in blocks.iter().enumerate() {
                    let (d, dmin) = (half(p), half(p.add(2)));
                    let (sc, mn) = k_scales_mins(std::slice::from_raw_parts(p.add(4), 12));
                    let widen = |v: [u8; 8]| {
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi64x(
                            0,
                            i64::from_le_bytes(v),
                        )))
                    };
                    _mm256_storeu_ps(dsc[a].as_mut_ptr(), _mm256_mul_ps(widen(sc), d));
                    let dmins = _mm256_mul_ps(widen(mn), dmin);
                    for (j, s) in acc[a].iter_mut().enumerate() {
                        *s = _mm256_fnmadd_ps(dmins, o.sums8(i + j, b), *s);
                    }
                }
                for s in 0..SUPER_BLOCK / BLOCK {
                    let mut bacc = [[_mm256_setzero_ps(); MB]; R];
                    for c in 0..4 {
                        let xs: [__m256; MB] =
                            std::array::from_fn(|j| o.x(i + j, b, BLOCK * s + 8 * c));
                        for (a, &p) in blocks.iter().enumerate() {
                            let bytes = widen_u8(p.add(16 + 32 * (s / 2) + 8 * c));
                            let q = if s % 2 == 0 {
                                _mm256_and_si256(bytes, low4)
                            } else {
                                // A byte in an i32 lane: its high nibble, alone.
                                _mm256_srli_epi32::<4>(bytes)
                            };
                            let q = _mm256_cvtepi32_ps(q);
                            for (ba, &x) in bacc[a].iter_mut().zip(&xs) {
                                *ba = _mm256_fmadd_ps(x, q, *ba);
                            }
                        }
                    }
                    for (acc_a, (bacc_a, dsc_a)) in acc.iter_mut().zip(bacc.iter().zip(&dsc)) {
                        let scale = _mm256_set1_ps(dsc_a[s]);
                        for (v, &ba) in acc_a.iter_mut().zip(bacc_a) {
                            *v = _mm256_fmadd_ps(ba, scale, *v);
                        }
                    }
                }
            }
        }
        acc
    }
}

impl KFormat for Q6K {
    const BYTES: usize = Q6_K_BYTES;
    const SUMS: bool = false;

    #[inline(never)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const R: usize, const MB: usize>(
        o: &Operands,
        r: usize,
        i: usize,
    ) -> [[__m256; MB]; R] {
        let mut acc = [[_mm256_setzero_ps(); MB]; R];
        // SAFETY (every read): rows r..r + R < n, x rows i..i + MB < m and b < nb (the caller's);
        // offsets inside a 210-byte super-block and its 256 x values.
        unsafe {
            for b in 0..o.nb {
                let blocks: [*const u8; R] = std::array::from_fn(|a| o.block::<Self>(r + a, b));
                // d·scale for the sixteen 16-weight groups, exact (an i8 times an f16).
                let mut dsc = [[0.0f32; 16]; R];
                for (a, &p) in blocks.iter().enumerate() {
                    let d = half(p.add(208));
                    for h in 0..2 {
                        let sc = _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                            p.add(192 + 8 * h) as *const __m128i
                        ));
                        let v = _mm256_mul_ps(_mm256_cvtepi32_ps(sc), d);
                        _mm256_storeu_ps(dsc[a].as_mut_ptr().add(8 * h), v);
                    }
                }
                for n in 0..2 {
                    for quarter in 0..4 {
                        for c in 0..4 {
                            let e = 128 * n + 32 * quarter + 8 * c;
                            let xs: [__m256; MB] = std::array::from_fn(|j| o.x(i + j, b, e));
                            for (a, &p) in blocks.iter().enumerate() {
                                let q = q6_k_quants(p, n, quarter, c);
                                let w = _mm256_mul_ps(q, _mm256_set1_ps(dsc[a][e / 16]));
                                for (v, &x) in acc[a].iter_mut().zip(&xs) {
                                    *v = _mm256_fmadd_ps(x, w, *v);
                                }
                            }
                        }
                    }
                }
            }
        }
        acc
    }
}

/// Weights `128n + 32·quarter + 8c ..` (8 of them) of the Q6_K super-block at `p` as f32
/// `q − 32`, before their scale (n < 2, quarter < 4, c < 4). Also the prefill dequantizer's.
///
/// # Safety
/// `p` addresses a whole 210-byte super-block; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6_k_quants(p: *const u8, n: usize, quarter: usize, c: usize) -> __m256 {
    // SAFETY: ql bytes 64n + 32·(quarter mod 2) + 8c.. and qh bytes 128 + 32n + 8c.. lie inside
    // the super-block.
    let (lo, hi) = unsafe {
        (
            widen_u8(p.add(64 * n + 32 * (quarter % 2) + 8 * c)),
            widen_u8(p.add(128 + 32 * n + 8 * c)),
        )
    };
    let lo = if quarter < 2 {
        _mm256_and_si256(lo, _mm256_set1_epi32(0x0f))
    } else {
        _mm256_srli_epi32::<4>(lo)
    };
    // Bits 2·quarter, 2·quarter + 1 of qh, moved to bits 4 and 5.
    let hi = match quarter {
        0 => _mm256_slli_epi32::<4>(hi),
        1 => _mm256_slli_epi32::<2>(hi),
        2 => hi,
        _ => _mm256_srli_epi32::<2>(hi),
    };
    let q = _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi32(0x30)));
    _mm256_cvtepi32_ps(_mm256_sub_epi32(q, _mm256_set1_epi32(32)))
}

/// Weight rows `rows` against every x row.
///
/// # Safety
/// `job` meets [`Job`]'s invariants, `rows` lies inside `0..n`, the outputs of those rows are this
/// call's alone to write, the matrix is Q4_K or Q6_K, and the CPU has AVX2, FMA and F16C.
pub(super) unsafe fn rows(job: &Job, rows: Range<usize>) {
    // SAFETY: forwarded.
    unsafe {
        match job.w.format {
            Format::Q4_K => rows_of::<Q4K>(job, rows),
            Format::Q6_K => rows_of::<Q6K>(job, rows),
            Format::Q8_0 | Format::Q4_0 => unreachable!("the 32-weight formats run in x86"),
        }
    }
}

/// # Safety
/// As for [`rows`], with `F` matching the matrix's format.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_of<F: KFormat>(job: &Job, rows: Range<usize>) {
    let o = Operands::new::<F>(job);
    let mut r = rows.start;
    // SAFETY (every tile): its weight rows lie inside r..r + GROUP (or r..r + 1) inside `rows`,
    // its x rows inside 0..m; `put` writes only those outputs.
    unsafe {
        while r + GROUP <= rows.end {
            let mut i = 0;
            while i + 2 <= o.m {
                put(job, r, i, F::tile::<2, 2>(&o, r, i));
                put(job, r + 2, i, F::tile::<2, 2>(&o, r + 2, i));
                i += 2;
            }
            if i < o.m {
                put(job, r, i, F::tile::<GROUP, 1>(&o, r, i));
            }
            r += GROUP;
        }
        while r < rows.end {
            let mut i = 0;
            while i + 2 <= o.m {
                put(job, r, i, F::tile::<1, 2>(&o, r, i));
                i += 2;
            }
            if i < o.m {
                put(job, r, i, F::tile::<1, 1>(&o, r, i));
            }
            r += 1;
        }
    }
}

/// Writes a tile's sums (plus the bias) to `out[i + j, r + a]`.
///
/// # Safety
/// The tile's rows and x rows are inside the matrix and x and are this call's to write; the CPU
/// has AVX.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn put<const R: usize, const MB: usize>(
    job: &Job,
    r: usize,
    i: usize,
    acc: [[__m256; MB]; R],
) {
    for (a, acc_a) in acc.iter().enumerate() {
        for (j, &v) in acc_a.iter().enumerate() {
            // SAFETY: the caller's.
            unsafe { job.store(i + j, r + a, hsum(v) + job.bias(r + a)) };
        }
    }
}
