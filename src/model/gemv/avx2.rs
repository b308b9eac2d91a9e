//! AVX2 + FMA (+ F16C) kernels, for the CPUs without AVX-512 (AMD before Zen 4, Intel's client
//! chips since Alder Lake) and for f16 weights everywhere: every weight dtype is widened to f32 in
//! registers and multiplied with f32 FMAs.
//!
//! `x` is staged once per product as f32 ([`StagedX`]), so the inner loop widens only the weight,
//! which is read once. Sixteen weights make one step: bf16 ones with one 256-bit load and two
//! unpacks against zero (a bf16 is the upper half of an f32), which leave the elements in the
//! order 0–3, 8–11 | 4–7, 12–15; the staged `x` is laid out in that same order, so no weight
//! shuffle is needed. f16 weights go through `vcvtph2ps`, f32 ones are loaded as they are. The K
//! tail (K mod 16) is summed in scalar code.
//!
//! Tiles: [`ROWS`] weight rows by up to [`XROWS`] x rows, one accumulator each; AVX2's 16 vector
//! registers hold the 8 accumulators, two widened weight vectors and the x operands.

use std::arch::x86_64::*;

use super::{Elem, Product, ROWS};

/// `x` rows per tile. With `ROWS` = 4 weight rows, 3 would need 12 accumulators plus the
/// operands, one register more than AVX2 has.
const XROWS: usize = 2;

/// Elements per step of K.
const STEP: usize = 16;

const fn elem_bytes<const E: u8>() -> usize {
    if E == F32 {
        4
    } else {
        2
    }
}

/// Element kinds as const-generic tags (an enum cannot be a const parameter on stable Rust).
const BF16: u8 = 0;
const F16: u8 = 1;
const F32: u8 = 2;

/// `x` as f32, in the lane order the weight kind's widening produces (see the module notes).
pub(super) struct StagedX {
    /// Empty for f32 `x`, which is used in place.
    buf: Vec<f32>,
}

impl StagedX {
    /// # Safety
    /// `p` satisfies [`Product`]'s invariants.
    pub(super) unsafe fn new(p: &Product) -> Self {
        let len = p.m * p.k;
        let mut buf = Vec::new();
        match p.elem {
            Elem::F32 => {}
            Elem::F16 => {
                // SAFETY: `x` holds m·k f16 values (the invariants).
                let x = unsafe { std::slice::from_raw_parts(p.x as *const half::f16, len) };
                buf.extend(x.iter().map(|v| v.to_f32()));
            }
            Elem::Bf16 => {
                // SAFETY: `x` holds m·k bf16 values (the invariants).
                let x = unsafe { std::slice::from_raw_parts(p.x as *const half::bf16, len) };
                buf.resize(len, 0.0);
                let full = p.k - p.k % STEP;
                for (row, out) in x.chunks_exact(p.k).zip(buf.chunks_exact_mut(p.k)) {
                    for c in (0..full).step_by(STEP) {
                        // Groups of four: 0, 2 | 1, 3 (the unpacks' order).
                        for (g, src) in [0, 2, 1, 3].into_iter().enumerate() {
                            for e in 0..4 {
                                out[c + 4 * g + e] = row[c + 4 * src + e].to_f32();
                            }
                        }
                    }
                    for c in full..p.k {
                        out[c] = row[c].to_f32();
                    }
                }
            }
        }
        Self { buf }
    }

    fn ptr(&self, p: &Product) -> *const f32 {
        if p.elem == Elem::F32 {
            p.x as *const f32
        } else {
            self.buf.as_ptr()
        }
    }
}

/// Weight rows `r0..r1` of `p.out`.
///
/// # Safety
/// `p` satisfies [`Product`]'s invariants, `x` was staged from it, `r0 <= r1 <= p.n`, and the
/// CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rows(p: &Product, x: &StagedX, r0: usize, r1: usize) {
    let x = x.ptr(p);
    // SAFETY: forwarded.
    unsafe {
        match p.elem {
            Elem::Bf16 => rows_of::<BF16>(p, x, r0, r1),
            Elem::F16 => rows_of::<F16>(p, x, r0, r1),
            Elem::F32 => rows_of::<F32>(p, x, r0, r1),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_of<const E: u8>(p: &Product, x: *const f32, r0: usize, r1: usize) {
    let mut r = r0;
    // SAFETY (all tile calls): r + R <= r1 <= n and m0 + MB <= m, as the tiles require.
    unsafe {
        while r + ROWS <= r1 {
            x_tiles::<E, ROWS>(p, x, r);
            r += ROWS;
        }
        while r < r1 {
            x_tiles::<E, 1>(p, x, r);
            r += 1;
        }
    }
}

/// Weight rows `r..r+R` against every row of x.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn x_tiles<const E: u8, const R: usize>(p: &Product, x: *const f32, r: usize) {
    let mut m0 = 0;
    // SAFETY: see rows_of.
    unsafe {
        while m0 + XROWS <= p.m {
            tile::<E, R, XROWS>(p, x, r, m0);
            m0 += XROWS;
        }
        if m0 < p.m {
            tile::<E, R, 1>(p, x, r, m0);
        }
    }
}

/// Sixteen weights from `w + at` (elements), widened to f32 in the lane order [`StagedX`] uses.
///
/// # Safety
/// Sixteen elements of kind `E` are readable at `w + at`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen16<const E: u8>(w: *const u8, at: usize) -> (__m256, __m256) {
    // SAFETY: forwarded.
    unsafe {
        match E {
            BF16 => {
                let v = _mm256_loadu_si256((w as *const u16).add(at) as *const __m256i);
                let z = _mm256_setzero_si256();
                (
                    _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, v)),
                    _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, v)),
                )
            }
            F16 => {
                let p = (w as *const u16).add(at);
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
                    _mm256_cvtph_ps(_mm_loadu_si128(p.add(8) as *const __m128i)),
                )
            }
            _ => {
                let p = (w as *const f32).add(at);
                (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
            }
        }
    }
}

/// Element `at` of `w` (kind `E`) as f32.
///
/// # Safety
/// Element `at` is readable.
#[inline]
unsafe fn load1<const E: u8>(w: *const u8, at: usize) -> f32 {
    // SAFETY: forwarded.
    unsafe {
        match E {
            BF16 => half::bf16::from_bits(*(w as *const u16).add(at)).to_f32(),
            F16 => half::f16::from_bits(*(w as *const u16).add(at)).to_f32(),
            _ => *(w as *const f32).add(at),
        }
    }
}

/// Writes `v`, rounded to kind `E`, as element `at` of `out`.
///
/// # Safety
/// Element `at` is writable.
#[inline]
unsafe fn store1<const E: u8>(out: *mut u8, at: usize, v: f32) {
    // SAFETY: forwarded.
    unsafe {
        match E {
            BF16 => *(out as *mut u16).add(at) = half::bf16::from_f32(v).to_bits(),
            F16 => *(out as *mut u16).add(at) = half::f16::from_f32(v).to_bits(),
            _ => *(out as *mut f32).add(at) = v,
        }
    }
}

/// `out[m0..m0+MB, r..r+R]`.
///
/// # Safety
/// `p` as for [`rows`], `x` its staged rows; `r + R <= p.n`; `m0 + MB <= p.m`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const E: u8, const R: usize, const MB: usize>(
    p: &Product,
    x: *const f32,
    r: usize,
    m0: usize,
) {
    let k = p.k;
    let full = k - k % STEP;
    let mut acc = [[_mm256_setzero_ps(); R]; MB];
    // SAFETY: every vector load reads 16 elements at kk + 16 <= full <= k of a row inside x
    // (rows m0..m0+MB < m, staged: m·k f32) or w (rows r..r+R < n); the scalar tail reads
    // elements below k of the same rows; outputs are inside `out` (m·n).
    unsafe {
        let mut kk = 0;
        while kk < full {
            for i in 0..R {
                // The next tile's row at the same offset, into L2: the hardware prefetcher
                // follows each row but stalls at every jump to a new one, which on short rows
                // (K = 1536: 3 KB) cost a third of the bandwidth.
                _mm_prefetch::<_MM_HINT_T1>(
                    p.w.wrapping_add(((r + R + i) * k + kk) * elem_bytes::<E>()) as *const i8,
                );
                let (lo, hi) = widen16::<E>(p.w, (r + i) * k + kk);
                for (j, a) in acc.iter_mut().enumerate() {
                    let xr = x.add((m0 + j) * k + kk);
                    a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xr), lo, a[i]);
                    a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xr.add(8)), hi, a[i]);
                }
            }
            kk += STEP;
        }
        for (j, a) in acc.iter().enumerate() {
            let mut sums = [0f32; R];
            if R == 4 {
                _mm_storeu_ps(sums.as_mut_ptr(), hsum4(a[0], a[1], a[2], a[3]));
            } else {
                for (s, v) in sums.iter_mut().zip(a) {
                    *s = hsum(*v);
                }
            }
            let xrow = x.add((m0 + j) * k);
            for (i, s) in sums.iter_mut().enumerate() {
                for t in full..k {
                    *s += *xrow.add(t) * load1::<E>(p.w, (r + i) * k + t);
                }
                if !p.bias.is_null() {
                    *s += load1::<E>(p.bias, r + i);
                }
                store1::<E>(p.out, (m0 + j) * p.n + r + i, *s);
            }
        }
    }
}

/// The sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The sums of four registers' lanes, lane i for the i-th: three horizontal adds and one across
/// the halves instead of four separate reductions.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    // [a01 a23 b01 b23 | a45 a67 b45 b67], likewise for c, d; then [a b c d | a b c d] partials.
    let abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_add_ps(
        _mm256_castps256_ps128(abcd),
        _mm256_extractf128_ps::<1>(abcd),
    )
}
