//! The float prefill's kernels (see `float_gemm` for the layouts): AVX-512F and AVX2 + FMA.
//!
//! A tile is R weight rows × T vectors of x rows, its R·T sums in registers for a whole panel:
//! per column, T loads of x and R broadcasts of the panel's weights feed R·T fused
//! multiply-adds. Register budgets: AVX-512, 12 rows × 2 vectors (32 x rows): 24 sums, 2 x
//! and a broadcast of 32 registers; AVX2, 6 rows × 2 vectors (16 x rows): 12, 2 and 1 of 16.
//! Either way the loads (14 or 8) stay under the FMA count (24 or 12), so the FMA units, not
//! the load ports, set the pace.

use std::arch::x86_64::*;

use super::float_gemm::{Step, GROUP, X_TILE};

/// The AVX-512 kernel: tiles of x in pairs, an odd last one alone.
///
/// # Safety
/// As `float_gemm::step_scalar`, and the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn avx512(step: &Step) {
    let mut t = step.tiles.start;
    while t < step.tiles.end {
        // SAFETY: tiles t.. are inside the step's tiles; the rest is the caller's.
        unsafe {
            if t + 1 < step.tiles.end {
                tile512::<2>(step, t);
                t += 2;
            } else {
                tile512::<1>(step, t);
                t += 1;
            }
        }
    }
}

/// # Safety
/// As [`avx512`], with tiles `t..t + T` inside the step's.
#[inline(always)]
unsafe fn tile512<const T: usize>(step: &Step, t: usize) {
    let len = step.panel.len;
    let w = step.panel.w.as_ptr();
    let xs: [*const f32; T] = std::array::from_fn(|v| step.x.at(t + v, step.col));
    // SAFETY (every pointer below): x's tiles t..t + T from column col for `len` columns, the
    // panel's GROUP rows of `len`, and the output's GROUP rows at lanes of tiles t..t + T, all
    // inside their buffers by the caller's contract.
    unsafe {
        let out = |a: usize, v: usize| step.out.add(a * step.stride + (t + v) * X_TILE);
        let mut acc = [[_mm512_setzero_ps(); T]; GROUP];
        if !step.first {
            for (a, row) in acc.iter_mut().enumerate() {
                for (v, s) in row.iter_mut().enumerate() {
                    *s = _mm512_loadu_ps(out(a, v));
                }
            }
        }
        for e in 0..len {
            let x: [__m512; T] = std::array::from_fn(|v| _mm512_loadu_ps(xs[v].add(e * X_TILE)));
            for (a, row) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*w.add(a * len + e));
                for (s, xv) in row.iter_mut().zip(&x) {
                    *s = _mm512_fmadd_ps(*xv, b, *s);
                }
            }
        }
        for (a, row) in acc.iter().enumerate() {
            for (v, s) in row.iter().enumerate() {
                _mm512_storeu_ps(out(a, v), *s);
            }
        }
    }
}

/// Rows of the AVX2 tile: half a group.
const AVX2_ROWS: usize = GROUP / 2;

/// The AVX2 kernel: each tile of x (two vectors of 8 rows) against each half of the group.
///
/// # Safety
/// As `float_gemm::step_scalar`, and the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn avx2(step: &Step) {
    for t in step.tiles.clone() {
        for a0 in (0..GROUP).step_by(AVX2_ROWS) {
            // SAFETY: tile t is the step's, rows a0..a0 + 6 the panel's.
            unsafe { tile256(step, t, a0) };
        }
    }
}

/// # Safety
/// As [`avx2`], with tile `t` inside the step's and `a0 + AVX2_ROWS <= GROUP`.
#[inline(always)]
unsafe fn tile256(step: &Step, t: usize, a0: usize) {
    let len = step.panel.len;
    // SAFETY (every pointer below): as in `tile512`, for rows a0..a0 + 6 and one tile.
    unsafe {
        let w = step.panel.w.as_ptr().add(a0 * len);
        let xs = step.x.at(t, step.col);
        let out = |a: usize, v: usize| step.out.add((a0 + a) * step.stride + t * X_TILE + 8 * v);
        let mut acc = [[_mm256_setzero_ps(); 2]; AVX2_ROWS];
        if !step.first {
            for (a, row) in acc.iter_mut().enumerate() {
                for (v, s) in row.iter_mut().enumerate() {
                    *s = _mm256_loadu_ps(out(a, v));
                }
            }
        }
        for e in 0..len {
            let x = [
                _mm256_loadu_ps(xs.add(e * X_TILE)),
                _mm256_loadu_ps(xs.add(e * X_TILE + 8)),
            ];
            for (a, row) in acc.iter_mut().enumerate() {
                let b = _mm256_set1_ps(*w.add(a * len + e));
                for (s, xv) in row.iter_mut().zip(&x) {
                    *s = _mm256_fmadd_ps(*xv, b, *s);
                }
            }
        }
        for (a, row) in acc.iter().enumerate() {
            for (v, s) in row.iter().enumerate() {
                _mm256_storeu_ps(out(a, v), *s);
            }
        }
    }
}
