//! The integer prefill's kernels (see `int8` for the arithmetic and the layouts): AVX-512 VNNI
//! and AVX2, the same loops at two widths.
//!
//! A tile is R weight rows × a run of x rows whose sums sit in registers, one lane per x row:
//! per group of four weights, each row's four bytes are broadcast to every lane and multiplied
//! with the same four positions of every x row (`vpdpbusd`: unsigned weights × signed x, four
//! products added into each i32 lane; AVX2 needs `vpmaddubsw` then `vpmaddwd` for the same). At
//! the end of a unit the integer sums are converted and scaled into f32 accumulators, which stay
//! in registers across the whole row. Register budgets: AVX-512, 4 rows × 32 x rows (8 integer
//! and 8 float accumulators of 32); AVX2, 2 rows × 16 x rows (4 and 4 of 16).

use std::arch::x86_64::*;

use super::int8::{QuantizedX, Unpacked, GROUP_BYTES};
use super::BLOCK;

/// Weight rows unpacked and multiplied together (the AVX-512 tile's R).
pub(super) const ROWS: usize = 4;

/// Whether this CPU has what the VNNI kernel needs.
pub(super) fn vnni_here() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Where a unit's operands start.
struct Unit {
    /// x's quants of the unit's first group of four, for x row 0 of the tile.
    xq: *const u8,
    /// x's block scales and the unit's exact sums, for x row 0 of the tile.
    xd: *const f32,
    xs: *const f32,
    /// The weights' quants of the unit, row 0.
    wq: *const u8,
}

/// # Safety
/// `u < k/l`, `i0 < x.mp`, and the unpacked rows and x are those of one product.
#[inline(always)]
unsafe fn unit(w: &Unpacked, x: &QuantizedX, u: usize, i0: usize) -> Unit {
    let (l, mp) = (w.l, x.mp);
    let e0 = u * l;
    let b = e0 / BLOCK;
    // SAFETY (all four): inside the buffers, by the caller's bounds and the layouts in `int8`.
    unsafe {
        Unit {
            xq: x.q.as_ptr().add(x.q_at(i0, e0)),
            xd: x.d.as_ptr().add(b * mp + i0),
            xs: if l == BLOCK {
                x.sums32.as_ptr().add(b * mp + i0)
            } else {
                x.sums16.as_ptr().add((e0 / 16) * mp + i0)
            },
            wq: w.q.as_ptr().add(e0),
        }
    }
}

/// The four weights at `p`, as one i32.
///
/// # Safety
/// `p` addresses 4 readable bytes.
#[inline(always)]
unsafe fn four(p: *const u8) -> i32 {
    // SAFETY: the caller's; an unaligned read.
    unsafe { (p as *const i32).read_unaligned() }
}

/// Every unpacked row against every x row, into `out_t[a·mp + i]` (+ `bias[a]`).
///
/// # Safety
/// `out_t` addresses `w.rows() · x.mp` writable f32s; `w` holds 1 to [`ROWS`] rows of x's k;
/// `bias` has as many values; the CPU has AVX-512F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub(super) unsafe fn vnni(w: &Unpacked, x: &QuantizedX, bias: &[f32], out_t: *mut f32) {
    // SAFETY: forwarded.
    unsafe {
        match w.rows() {
            4 => vnni_tile::<4>(w, x, bias, out_t),
            3 => vnni_tile::<3>(w, x, bias, out_t),
            2 => vnni_tile::<2>(w, x, bias, out_t),
            1 => vnni_tile::<1>(w, x, bias, out_t),
            n => unreachable!("{n} rows in a tile"),
        }
    }
}

/// # Safety
/// As for [`vnni`], with `w.rows() == R`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn vnni_tile<const R: usize>(w: &Unpacked, x: &QuantizedX, bias: &[f32], out_t: *mut f32) {
    let (k, mp, units) = (w.k, x.mp, w.k / w.l);
    let step = GROUP_BYTES;
    for i0 in (0..mp).step_by(32) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for u in 0..units {
            // SAFETY: every read below lies inside the buffers (`unit`'s bounds: u < units,
            // i0 + 32 <= mp, and the unit's groups are the block's).
            unsafe {
                let p = unit(w, x, u, i0);
                let mut iacc = [[_mm512_setzero_si512(); 2]; R];
                for g in 0..w.l / 4 {
                    let xg = p.xq.add(g * step);
                    let xa = _mm512_loadu_si512(xg as *const __m512i);
                    let xb = _mm512_loadu_si512(xg.add(64) as *const __m512i);
                    for (a, ia) in iacc.iter_mut().enumerate() {
                        let wb = _mm512_set1_epi32(four(p.wq.add(a * k + 4 * g)));
                        ia[0] = _mm512_dpbusd_epi32(ia[0], wb, xa);
                        ia[1] = _mm512_dpbusd_epi32(ia[1], wb, xb);
                    }
                }
                let d = [_mm512_loadu_ps(p.xd), _mm512_loadu_ps(p.xd.add(16))];
                let sums = [_mm512_loadu_ps(p.xs), _mm512_loadu_ps(p.xs.add(16))];
                for (a, (acc, ia)) in acc.iter_mut().zip(&iacc).enumerate() {
                    let s = _mm512_set1_ps(*w.s.get_unchecked(a * units + u));
                    let o = _mm512_set1_ps(*w.o.get_unchecked(a * units + u));
                    for h in 0..2 {
                        let scaled = _mm512_mul_ps(d[h], s);
                        let t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[h]), scaled, acc[h]);
                        acc[h] = _mm512_fnmadd_ps(sums[h], o, t);
                    }
                }
            }
        }
        for (a, acc) in acc.iter().enumerate() {
            let b = _mm512_set1_ps(bias[a]);
            for (h, v) in acc.iter().enumerate() {
                // SAFETY: row a < R of the output, columns i0 + 16h .. + 16 < mp.
                unsafe { _mm512_storeu_ps(out_t.add(a * mp + i0 + 16 * h), _mm512_add_ps(*v, b)) };
            }
        }
    }
}

/// [`vnni`] on AVX2: `vpmaddubsw` (unsigned weights × signed x, pairs added in i16: at most
/// 2·63·127, no saturation for 6-bit weights), two groups' of those added, then `vpmaddwd` by
/// ones to i32 lanes.
///
/// # Safety
/// As for [`vnni`], the CPU having AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn avx2(w: &Unpacked, x: &QuantizedX, bias: &[f32], out_t: *mut f32) {
    let mp = x.mp;
    let mut a = 0;
    // SAFETY: forwarded, two rows (or the last one) at a time: the rows a.. of `w`, of
    // `bias`, and of the output.
    unsafe {
        while a + 2 <= w.rows() {
            avx2_tile::<2>(w, a, x, &bias[a..], out_t.add(a * mp));
            a += 2;
        }
        if a < w.rows() {
            avx2_tile::<1>(w, a, x, &bias[a..], out_t.add(a * mp));
        }
    }
}

/// Unpacked rows `a0..a0 + R`.
///
/// # Safety
/// As for [`avx2`], for those rows.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_tile<const R: usize>(
    w: &Unpacked,
    a0: usize,
    x: &QuantizedX,
    bias: &[f32],
    out_t: *mut f32,
) {
    let (k, mp, units) = (w.k, x.mp, w.k / w.l);
    let step = GROUP_BYTES;
    let ones = _mm256_set1_epi16(1);
    for i0 in (0..mp).step_by(16) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for u in 0..units {
            // SAFETY: as in `vnni_tile`, for rows a0..a0 + R and x rows i0..i0 + 16.
            unsafe {
                let p = unit(w, x, u, i0);
                let wq = p.wq.add(a0 * k);
                let mut iacc = [[_mm256_setzero_si256(); 2]; R];
                // Two groups' pair sums added in i16 before widening: at most 4·63·127 = 32004
                // for 6-bit weights, so nothing saturates, and half the widening work.
                for g in (0..w.l / 4).step_by(2) {
                    let x0 = p.xq.add(g * step);
                    let x1 = x0.add(step);
                    let xa = [x0, x1].map(|p| _mm256_loadu_si256(p as *const __m256i));
                    let xb = [x0, x1].map(|p| _mm256_loadu_si256(p.add(32) as *const __m256i));
                    for (a, ia) in iacc.iter_mut().enumerate() {
                        let wp = wq.add(a * k + 4 * g);
                        let wb = [
                            _mm256_set1_epi32(four(wp)),
                            _mm256_set1_epi32(four(wp.add(4))),
                        ];
                        let pair = |x: [__m256i; 2]| {
                            let s = _mm256_add_epi16(
                                _mm256_maddubs_epi16(wb[0], x[0]),
                                _mm256_maddubs_epi16(wb[1], x[1]),
                            );
                            _mm256_madd_epi16(s, ones)
                        };
                        ia[0] = _mm256_add_epi32(ia[0], pair(xa));
                        ia[1] = _mm256_add_epi32(ia[1], pair(xb));
                    }
                }
                let d = [_mm256_loadu_ps(p.xd), _mm256_loadu_ps(p.xd.add(8))];
                let sums = [_mm256_loadu_ps(p.xs), _mm256_loadu_ps(p.xs.add(8))];
                for (a, (acc, ia)) in acc.iter_mut().zip(&iacc).enumerate() {
                    let s = _mm256_set1_ps(*w.s.get_unchecked((a0 + a) * units + u));
                    let o = _mm256_set1_ps(*w.o.get_unchecked((a0 + a) * units + u));
                    for h in 0..2 {
                        let scaled = _mm256_mul_ps(d[h], s);
                        let t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[h]), scaled, acc[h]);
                        acc[h] = _mm256_fnmadd_ps(sums[h], o, t);
                    }
                }
            }
        }
        for (a, acc) in acc.iter().enumerate() {
            let b = _mm256_set1_ps(bias[a]);
            for (h, v) in acc.iter().enumerate() {
                // SAFETY: row a < R of this call's output rows, columns i0 + 8h .. + 8 < mp.
                unsafe { _mm256_storeu_ps(out_t.add(a * mp + i0 + 8 * h), _mm256_add_ps(*v, b)) };
            }
        }
    }
}

/// One block of 32 x values rounded as `int8::round_block` does: the scale `d`, the 32 quants in
/// element order (four per i32 lane: lane g holds elements 4g..4g + 4), and the sums of the
/// rounded values (`d·Σ q`) over elements 0..16 and 16..32.
///
/// # Safety
/// `x` addresses 32 readable f32s; the CPU has AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn round_block(x: *const f32) -> (f32, [i32; 8], f32, f32) {
    // SAFETY: the caller's; unaligned reads of 4 × 8 values.
    let v = unsafe { [0, 8, 16, 24].map(|o| _mm256_loadu_ps(x.add(o))) };
    let sign = _mm256_set1_ps(-0.0);
    let abs = v.map(|v| _mm256_andnot_ps(sign, v));
    let amax = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
    let amax = hmax(amax);
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    let q = v.map(|v| {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(v, id),
        );
        _mm256_cvtps_epi32(r)
    });
    // i32 → i16 → i8 packs work within 128-bit lanes; the permute puts the bytes in order.
    let packed = _mm256_packs_epi16(
        _mm256_packs_epi32(q[0], q[1]),
        _mm256_packs_epi32(q[2], q[3]),
    );
    let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let mut groups = [0i32; 8];
    // SAFETY: 32 bytes into the 8 i32s of `groups`.
    unsafe { _mm256_storeu_si256(groups.as_mut_ptr() as *mut __m256i, ordered) };
    // Integer sums (exact), scaled once: what the portable loop computes, bit for bit.
    let lo = hsum_i32(_mm256_add_epi32(q[0], q[1])) as f32 * d;
    let hi = hsum_i32(_mm256_add_epi32(q[2], q[3])) as f32 * d;
    (d, groups, lo, hi)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
}
