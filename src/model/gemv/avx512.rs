//! AVX-512 kernels: bf16 weights with `vdpbf16ps` (bf16 products, f32 sums; needs AVX512-BF16),
//! f32 weights with plain AVX-512 FMAs.
//!
//! Each tile multiplies R weight rows by MB rows of x: per step of K it loads R weight vectors and
//! MB x vectors and issues R*MB dot-product instructions into separate accumulators. The K tail
//! is read with masked loads (zeros beyond K). All pointers are in elements.

use std::arch::x86_64::*;

use super::{Product, ROWS};

/// `x` rows per kernel tile (with `ROWS` weight rows: `ROWS * XROWS` accumulators).
const XROWS: usize = 4;

/// Dispatches the tiles for weight rows `r0..r1` (bf16).
///
/// # Safety
/// As for [`super::rows`]: `p` satisfies [`Product`]'s invariants, `r0 <= r1 <= p.n`, and the CPU
/// has the features this function is compiled for.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn bf16_rows(p: &Product, r0: usize, r1: usize) {
    let mut r = r0;
    // SAFETY (all tile calls): r + R <= r1 <= n and m0 + MB <= m, as the tiles require.
    unsafe {
        while r + ROWS <= r1 {
            bf16_x_tiles::<ROWS>(p, r);
            r += ROWS;
        }
        while r < r1 {
            bf16_x_tiles::<1>(p, r);
            r += 1;
        }
    }
}

/// Weight rows `r..r+R` against every row of x.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn bf16_x_tiles<const R: usize>(p: &Product, r: usize) {
    let mut m0 = 0;
    // SAFETY: see bf16_rows.
    unsafe {
        while m0 + XROWS <= p.m {
            bf16_tile::<R, XROWS>(p, r, m0);
            m0 += XROWS;
        }
        match p.m - m0 {
            0 => {}
            1 => bf16_tile::<R, 1>(p, r, m0),
            2 => bf16_tile::<R, 2>(p, r, m0),
            3 => bf16_tile::<R, 3>(p, r, m0),
            _ => unreachable!("XROWS is 4"),
        }
    }
}

/// `out[m0..m0+MB, r..r+R]` (bf16).
///
/// # Safety
/// `p` as for [`run`]; `r + R <= p.n`; `m0 + MB <= p.m`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn bf16_tile<const R: usize, const MB: usize>(p: &Product, r: usize, m0: usize) {
    let (x, w, k) = (p.x as *const u16, p.w as *const u16, p.k);
    let mut acc = [[_mm512_setzero_ps(); R]; MB];
    let full = k - k % 32;
    // SAFETY: every load reads 32 elements at kk < full <= k (or, masked, only the ones below k)
    // of a row inside x (rows m0..m0+MB < m) or w (rows r..r+R < n).
    unsafe {
        let mut kk = 0;
        while kk < full {
            let mut wv = [_mm512_setzero_si512(); R];
            for (i, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(w.add((r + i) * k + kk) as *const __m512i);
            }
            if m0 == 0 {
                // Later tiles of x find these rows in L1.
                super::prefetch_rows::<R>(p.w, 2 * k, r, 2 * kk);
            }
            for (j, a) in acc.iter_mut().enumerate() {
                let xv: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                    x.add((m0 + j) * k + kk) as *const __m512i,
                ));
                for (i, ai) in a.iter_mut().enumerate() {
                    *ai =
                        _mm512_dpbf16_ps(*ai, xv, std::mem::transmute::<__m512i, __m512bh>(wv[i]));
                }
            }
            kk += 32;
        }
        if full < k {
            let mask: __mmask32 = (1u32 << (k - full)) - 1;
            let mut wv = [_mm512_setzero_si512(); R];
            for (i, v) in wv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_epi16(mask, w.add((r + i) * k + full) as *const i16);
            }
            for (j, a) in acc.iter_mut().enumerate() {
                let xv: __m512bh = std::mem::transmute(_mm512_maskz_loadu_epi16(
                    mask,
                    x.add((m0 + j) * k + full) as *const i16,
                ));
                for (i, ai) in a.iter_mut().enumerate() {
                    *ai =
                        _mm512_dpbf16_ps(*ai, xv, std::mem::transmute::<__m512i, __m512bh>(wv[i]));
                }
            }
        }
        let (bias, out) = (p.bias as *const u16, p.out as *mut u16);
        for (j, a) in acc.iter().enumerate() {
            for (i, ai) in a.iter().enumerate() {
                let mut s = _mm512_reduce_add_ps(*ai);
                if !bias.is_null() {
                    s += half::bf16::from_bits(*bias.add(r + i)).to_f32();
                }
                *out.add((m0 + j) * p.n + r + i) = half::bf16::from_f32(s).to_bits();
            }
        }
    }
}

/// Dispatches the tiles for weight rows `r0..r1` (f32).
///
/// # Safety
/// As for [`super::rows`]: `p` satisfies [`Product`]'s invariants, `r0 <= r1 <= p.n`, and the CPU
/// has the features this function is compiled for.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn f32_rows(p: &Product, r0: usize, r1: usize) {
    let mut r = r0;
    // SAFETY (all tile calls): r + R <= r1 <= n and m0 + MB <= m, as the tiles require.
    unsafe {
        while r + ROWS <= r1 {
            f32_x_tiles::<ROWS>(p, r);
            r += ROWS;
        }
        while r < r1 {
            f32_x_tiles::<1>(p, r);
            r += 1;
        }
    }
}

/// Weight rows `r..r+R` against every row of x.
#[target_feature(enable = "avx512f")]
unsafe fn f32_x_tiles<const R: usize>(p: &Product, r: usize) {
    let mut m0 = 0;
    // SAFETY: see f32_rows.
    unsafe {
        while m0 + XROWS <= p.m {
            f32_tile::<R, XROWS>(p, r, m0);
            m0 += XROWS;
        }
        match p.m - m0 {
            0 => {}
            1 => f32_tile::<R, 1>(p, r, m0),
            2 => f32_tile::<R, 2>(p, r, m0),
            3 => f32_tile::<R, 3>(p, r, m0),
            _ => unreachable!("XROWS is 4"),
        }
    }
}

/// `out[m0..m0+MB, r..r+R]` (f32).
///
/// # Safety
/// `p` as for [`run`]; `r + R <= p.n`; `m0 + MB <= p.m`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn f32_tile<const R: usize, const MB: usize>(p: &Product, r: usize, m0: usize) {
    let (x, w, k) = (p.x as *const f32, p.w as *const f32, p.k);
    let mut acc = [[_mm512_setzero_ps(); R]; MB];
    let full = k - k % 16;
    // SAFETY: every load reads 16 elements at kk < full <= k (or, masked, only the ones below k)
    // of a row inside x (rows m0..m0+MB < m) or w (rows r..r+R < n).
    unsafe {
        let mut kk = 0;
        while kk < full {
            let mut wv = [_mm512_setzero_ps(); R];
            for (i, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(w.add((r + i) * k + kk));
            }
            if m0 == 0 {
                super::prefetch_rows::<R>(p.w, 4 * k, r, 4 * kk);
            }
            for (j, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(x.add((m0 + j) * k + kk));
                for (i, ai) in a.iter_mut().enumerate() {
                    *ai = _mm512_fmadd_ps(xv, wv[i], *ai);
                }
            }
            kk += 16;
        }
        if full < k {
            let mask: __mmask16 = (1u16 << (k - full)) - 1;
            let mut wv = [_mm512_setzero_ps(); R];
            for (i, v) in wv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask, w.add((r + i) * k + full));
            }
            for (j, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, x.add((m0 + j) * k + full));
                for (i, ai) in a.iter_mut().enumerate() {
                    *ai = _mm512_fmadd_ps(xv, wv[i], *ai);
                }
            }
        }
        let (bias, out) = (p.bias as *const f32, p.out as *mut f32);
        if R == 4 && MB == 4 {
            // A full tile: its 16 sums in one register (lane 4j + i holds x row j · weight
            // row i), so row j's four outputs leave as one 128-bit store.
            let mut sums = reduce16(|j, i| acc[j][i]);
            if !bias.is_null() {
                sums = _mm512_add_ps(sums, _mm512_broadcast_f32x4(_mm_loadu_ps(bias.add(r))));
            }
            let row = |j: usize| out.add((m0 + j) * p.n + r);
            _mm_storeu_ps(row(0), _mm512_extractf32x4_ps::<0>(sums));
            _mm_storeu_ps(row(1), _mm512_extractf32x4_ps::<1>(sums));
            _mm_storeu_ps(row(2), _mm512_extractf32x4_ps::<2>(sums));
            _mm_storeu_ps(row(3), _mm512_extractf32x4_ps::<3>(sums));
            return;
        }
        if R == 4 {
            // A partial tile (fewer x rows: an expert's few tokens, a single-row decode): each x
            // row's four sums in one 128-bit register.
            for (j, a) in acc.iter().enumerate() {
                let mut sums = reduce4(a[0], a[1], a[2], a[3]);
                if !bias.is_null() {
                    sums = _mm_add_ps(sums, _mm_loadu_ps(bias.add(r)));
                }
                _mm_storeu_ps(out.add((m0 + j) * p.n + r), sums);
            }
            return;
        }
        for (j, a) in acc.iter().enumerate() {
            for (i, ai) in a.iter().enumerate() {
                let mut s = _mm512_reduce_add_ps(*ai);
                if !bias.is_null() {
                    s += *bias.add(r + i);
                }
                *out.add((m0 + j) * p.n + r + i) = s;
            }
        }
    }
}

/// The horizontal sums of 16 registers `v(j, i)` (j, i < 4) in one: lane `4j + i` holds the sum
/// of `v(j, i)`'s lanes. A transposing tree of 45 shuffles and adds instead of 16 separate
/// reductions (~8 each), which at the tiny model's K = 32..256 cost as much as the products.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(v: impl Fn(usize, usize) -> __m512) -> __m512 {
    // 16 → 8: each 128-bit block of s1[q] holds partial sums [a, b, a, b] of a = v[2q],
    // b = v[2q + 1] (v numbered 4j + i).
    let s1: [__m512; 8] = std::array::from_fn(|q| {
        let (a, b) = (
            v((2 * q) / 4, (2 * q) % 4),
            v((2 * q + 1) / 4, (2 * q + 1) % 4),
        );
        _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
    });
    // 8 → 4: each block of s2[j] holds partials [v[4j], v[4j + 1], v[4j + 2], v[4j + 3]].
    let s2: [__m512; 4] = std::array::from_fn(|j| {
        let (c, d) = (s1[2 * j], s1[2 * j + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(c, d),
            _mm512_shuffle_ps::<0xEE>(c, d),
        )
    });
    // 4 → 2 → 1 across blocks: block j of the result sums s2[j]'s four blocks.
    let pair = |a: __m512, b: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    };
    pair(pair(s2[0], s2[1]), pair(s2[2], s2[3]))
}

/// The horizontal sums of four registers: lane i of the result is the sum of the lanes of the
/// i-th. 13 shuffles and adds instead of four separate reductions (~8 each).
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
    // Each 128-bit block of `ab` holds partials [a, b, a, b], of `cd` [c, d, c, d].
    let ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    let cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    // Each block: partials [a, b, c, d]; then the four blocks folded into one.
    let abcd = _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(ab, cd),
        _mm512_shuffle_ps::<0xEE>(ab, cd),
    );
    let half = _mm256_add_ps(
        _mm512_castps512_ps256(abcd),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(abcd))),
    );
    _mm_add_ps(
        _mm256_castps256_ps128(half),
        _mm256_extractf128_ps::<1>(half),
    )
}
