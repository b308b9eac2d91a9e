//! Where the x86 block kernels (AVX2 and AVX-512) ask the cache early for weights: one plan for
//! both, since both walk a matrix in the same groups of rows and blocks.

use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
use std::ops::Range;

/// Weight rows a pass multiplies by all of x before the next rows are read.
const GROUP: usize = super::ROW_TILE;

/// How far ahead of the block in use, in bytes of its row, long rows are prefetched.
const PREFETCH: usize = 1024;

/// Groups of rows up to this size are prefetched linearly (see [`Prefetch::plan`]).
const LINEAR_GROUP_BYTES: usize = 16 << 10;

/// A block format's size, as the prefetch plan needs it.
pub(super) trait BlockBytes {
    /// Bytes per block.
    const BYTES: usize;
}

/// Whether rows of `row_bytes` are short enough to be prefetched linearly (see [`Prefetch::plan`]).
pub(super) fn linear(row_bytes: usize) -> bool {
    GROUP * row_bytes <= LINEAR_GROUP_BYTES
}

/// The addresses a pass over R rows prefetches at block `b`: `first + b·step + (s mod R)·apart +
/// (s div R)·line` (bytes into the matrix, `wrap_by` more from block `wrap_block` on) for
/// `s < count`, with `count` as many as the pass reads lines per block (one more, for blocks
/// that straddle lines), or R times the lines of one row's block, whichever is more
/// ([`Prefetch::count`]). So a long-row pass hints every row's lines of a block, also where a
/// block is longer than a line (the K formats' 144- and 210-byte super-blocks).
#[derive(Clone, Copy)]
pub(super) struct Prefetch {
    first: usize,
    step: usize,
    apart: usize,
    line: usize,
    wrap_block: usize,
    wrap_by: usize,
}

impl Prefetch {
    /// The plan for a pass over rows `r..r + R` of a matrix with `row_bytes` per row, by row
    /// length (`linear`, from [`linear`]):
    /// - short rows (a group up to [`LINEAR_GROUP_BYTES`]): the same rows of the next group,
    ///   linearly, at the pace of this pass. Hardware prefetchers follow R interleaved streams
    ///   badly when each lasts only a row of a couple of KiB (measured: 4 streams over 1.6 KiB
    ///   rows read at two thirds of the rate of 9.5 KiB rows, and at the full rate this way);
    /// - long rows: each row [`PREFETCH`] bytes ahead, which the hardware mostly does already,
    ///   and past a row's end the same row of the next group, so its stream starts warm.
    pub(super) fn plan<B: BlockBytes, const R: usize>(
        linear: bool,
        row_bytes: usize,
        r: usize,
    ) -> Prefetch {
        if linear {
            // One run of lines: (s mod R)·64 + (s div R)·R·64 = s·64.
            Prefetch {
                first: (r + GROUP) * row_bytes,
                step: R * B::BYTES,
                apart: 64,
                line: R * 64,
                wrap_block: usize::MAX,
                wrap_by: 0,
            }
        } else {
            Prefetch {
                first: r * row_bytes + PREFETCH,
                step: B::BYTES,
                apart: row_bytes,
                line: 64,
                wrap_block: row_bytes.saturating_sub(PREFETCH).div_ceil(B::BYTES),
                wrap_by: (GROUP - 1) * row_bytes,
            }
        }
    }

    pub(super) const fn count<B: BlockBytes, const R: usize>() -> usize {
        let lines = (R * B::BYTES).div_ceil(64) + 1;
        // Blocks of up to a line (Q8_0, Q4_0): R, one line per row; a K super-block: its lines in
        // each of the R rows. `line` steps within a row, so these never reach past its block.
        let per_row = R * B::BYTES.div_ceil(64);
        if lines > per_row {
            lines
        } else {
            per_row
        }
    }

    /// `blocks` cut where the addresses wrap, each part with its own plan, so that a loop over
    /// a part computes its addresses without a branch.
    pub(super) fn parts(self, blocks: Range<usize>) -> [(Range<usize>, Prefetch); 2] {
        let cut = self.wrap_block.clamp(blocks.start, blocks.end);
        let wrapped = Prefetch {
            first: self.first + self.wrap_by,
            ..self
        };
        [(blocks.start..cut, self), (cut..blocks.end, wrapped)]
    }

    /// Hints the lines for block `b` of the matrix at `w`.
    #[inline]
    pub(super) fn hint<B: BlockBytes, const R: usize>(&self, w: *const u8, b: usize) {
        let at = w.wrapping_add(self.first + b * self.step);
        for s in 0..Self::count::<B, R>() {
            let offset = s % R * self.apart + s / R * self.line;
            // A hint, never a read: an address past the matrix is harmless, hence wrapping_add.
            // SAFETY: prefetching reads nothing and faults on no address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(offset) as *const i8) };
        }
    }
}
