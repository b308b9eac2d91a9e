//! The portable kernel: for every CPU without the x86 one, and a check on it (the tests force it).
//!
//! Plain and direct, with no algebraic shortcuts: each block (a K format's 256-weight super-block)
//! is dequantized once by the format code (the values [`super::dequantize_row`] gives) and
//! multiplied with every x row's matching values.

use std::ops::Range;

use super::format::{dequantize_block, SUPER_BLOCK};
use super::Job;

/// x rows whose sums one pass over a weight row keeps on the stack.
const XROWS: usize = 16;

/// Weight rows `rows` against every x row.
///
/// # Safety
/// `job` meets [`Job`]'s invariants, `rows` lies inside `0..n`, and the outputs of those rows are
/// this call's alone to write.
pub(super) unsafe fn rows(job: &Job, rows: Range<usize>) {
    for r in rows {
        for i0 in (0..job.x.m).step_by(XROWS) {
            let i1 = (i0 + XROWS).min(job.x.m);
            let sums = row_sums(job, r, i0..i1);
            for (i, s) in (i0..i1).zip(sums) {
                // SAFETY: i < m and r is in the caller's range (this function's contract).
                unsafe { job.store(i, r, s + job.bias(r)) };
            }
        }
    }
}

/// `Σ_k x[i, k]·W[r, k]` for the x rows `xs` (at most [`XROWS`]).
fn row_sums(job: &Job, r: usize, xs: Range<usize>) -> [f32; XROWS] {
    let (format, k) = (job.w.format, job.x.k);
    // Eight running sums per x row, one per lane of a block's 8-value chunks: the
    // shape vector units (SSE2, NEON) multiply in, with no reassociation the compiler must not do.
    let mut lanes = [[0.0f32; 8]; XROWS];
    let len = format.block_len();
    let mut values = [0.0f32; SUPER_BLOCK];
    for (b, block) in job.w.row(r).chunks_exact(format.block_bytes()).enumerate() {
        let w = &mut values[..len];
        dequantize_block(format, block, w);
        for (acc, i) in lanes.iter_mut().zip(xs.clone()) {
            let x = &job.x.x[i * k + b * len..][..len];
            for (wc, xc) in w.chunks_exact(8).zip(x.chunks_exact(8)) {
                for ((a, w), x) in acc.iter_mut().zip(wc).zip(xc) {
                    *a += w * x;
                }
            }
        }
    }
    lanes.map(|l| l.iter().sum())
}
