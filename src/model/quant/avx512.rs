//! AVX-512F kernels (x86-64) for Q8_0 and Q4_0: the weights widened to f32 in registers, f32
//! FMAs, as in the AVX2 kernels (`x86.rs`), but a 32-weight block is two 16-lane vectors whose
//! order is the block's own: x values 0..16 and 16..32.
//!
//! Widening, per block:
//! - Q8_0: quants 0..16 and 16..32, 16 bytes each, sign-extended to i32 lanes (`vpmovsxbd`
//!   straight from memory) and converted to f32.
//! - Q4_0: the 16 quant bytes zero-extended to i32 lanes once (`vpmovzxbd`); each lane's low
//!   nibble (element j) and, shifted down by 4, its high nibble (element j + 16) index a 16-entry
//!   f32 table by `vpermps`, which reads only the low 4 bits of each index. The table holds
//!   `q − 8` for q = 0..15 (or, dequantizing, `(q − 8)·d`: one multiply per block), so the nibble
//!   mask, the integer-to-float conversion and the −8 offset all come for free; x's block sums
//!   are not needed.
//!
//! The block scales: 16 blocks' f16 `d` at a time are fetched by one gather (the first 4 bytes of
//! each block), narrowed and converted to f32 in a vector, and kept on the stack, from where each
//! block reads its own as a broadcast memory operand (a load, no shuffle).
//!
//! Two ways to apply `d`, by tile (as in the AVX2 kernels):
//! - one or two x rows: per block, weight row and x row, `Σ x·q` in a block accumulator, then one
//!   FMA by `d`;
//! - three x rows and more: each block's weights are dequantized once and serve every x row.
//!
//! Order as in the AVX2 kernels: groups of [`GROUP`] weight rows; K in chunks whose x values (all
//! M rows) fit in half of L1; per chunk, tiles of the group's rows × up to 4 x rows with their
//! sums in registers (4 × 4 × 16 lanes, a quarter of what AVX2 would need); x staged block-major
//! (`x86::Staged`, shared with the AVX2 kernels); the weights of the next group prefetched by the
//! same plan.

use std::arch::x86_64::*;
use std::ops::Range;

use super::avx512_k::{Q4K, Q6K};
use super::format::Format;
use super::prefetch::{BlockBytes, Prefetch};
use super::{Job, BLOCK};

/// Weight rows multiplied by all of x before the next rows are read.
const GROUP: usize = super::ROW_TILE;

/// x rows per tile at most.
const X_TILE: usize = 4;

/// x values (all rows) per K chunk: half of L1, the rest for the weights and the stack.
const X_CHUNK_BYTES: usize = 16 << 10;

/// Blocks whose scales one gather fetches.
const SCALE_RUN: usize = 16;

/// How a format's block turns into f32 vectors: elements 0..16 and 16..32.
trait Blocks: BlockBytes {
    /// The block's weights without the scale: `q` (Q4_0: `q − 8`).
    ///
    /// # Safety
    /// `qs` addresses a block's 32 (Q8_0) or 16 (Q4_0) quant bytes; the CPU has AVX-512F.
    unsafe fn raw(qs: *const u8) -> (__m512, __m512);

    /// The block's weights: `q·d` (Q4_0: `(q − 8)·d`). Exact: an integer below 2^8 in
    /// magnitude times an f16 fits an f32.
    ///
    /// # Safety
    /// As for [`raw`](Self::raw).
    unsafe fn dequant(qs: *const u8, d: __m512) -> (__m512, __m512);
}

/// A format as the shared loops here see it: blocks of [`LEN`](Self::LEN) weights, and the
/// product of a few weight rows by a few x rows over a range of blocks. The 32-weight formats
/// implement it below, the K formats in `avx512_k`.
pub(super) trait Kernel: BlockBytes {
    /// Weights per block: 32, or a K super-block's 256.
    const LEN: usize;

    /// Adds `x[i..i + MB] · W[r..r + R]` over `blocks` to `acc[a][j]` (weight row `r + a`, x row
    /// `i + j`), as 16-lane sums. `PF`: the tile also prefetches, by
    /// [`Operands::prefetch_plan`].
    ///
    /// # Safety
    /// As for [`rows`], for weight rows `r..r + R` and x rows `i..i + MB` (inside `0..m`), and
    /// `blocks` inside `0..nb`.
    unsafe fn add_tile<const R: usize, const MB: usize, const PF: bool>(
        o: &Operands,
        acc: &mut [[__m512; MB]; R],
        r: usize,
        i: usize,
        blocks: Range<usize>,
    );
}

struct Q8;
struct Q4;

/// 16 signed bytes at `p` as f32.
///
/// # Safety
/// `p` addresses 16 readable bytes; the CPU has AVX-512F.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn widen_i8(p: *const u8) -> __m512 {
    // SAFETY: the caller's; an unaligned 16-byte read.
    let bytes = unsafe { _mm_loadu_si128(p as *const __m128i) };
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
}

impl BlockBytes for Q8 {
    const BYTES: usize = Format::Q8_0.block_bytes();
}

impl Blocks for Q8 {
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn raw(qs: *const u8) -> (__m512, __m512) {
        // SAFETY: bytes 0..16 and 16..32 are the block's 32 quants.
        unsafe { (widen_i8(qs), widen_i8(qs.add(16))) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn dequant(qs: *const u8, d: __m512) -> (__m512, __m512) {
        // SAFETY: forwarded.
        let (lo, hi) = unsafe { Self::raw(qs) };
        (_mm512_mul_ps(lo, d), _mm512_mul_ps(hi, d))
    }
}

impl Q4 {
    /// `q − 8` for q = 0..15, lane q.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    fn table() -> __m512 {
        _mm512_setr_ps(
            -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0,
        )
    }

    /// The block's weights looked up in `table` (lane q: the weight of quant q).
    ///
    /// # Safety
    /// `qs` addresses 16 readable bytes; the CPU has AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn lookup(qs: *const u8, table: __m512) -> (__m512, __m512) {
        // SAFETY: the caller's; an unaligned 16-byte read.
        let bytes = unsafe { _mm_loadu_si128(qs as *const __m128i) };
        // Byte j in lane j: its low nibble is element j, its high nibble element j + 16.
        // `vpermps` reads only bits 0..4 of each index, so the low nibble needs no mask, and a
        // zero-extended byte shifted down by 4 is its high nibble alone.
        let idx = _mm512_cvtepu8_epi32(bytes);
        let lo = _mm512_permutexvar_ps(idx, table);
        let hi = _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(idx), table);
        (lo, hi)
    }
}

impl BlockBytes for Q4 {
    const BYTES: usize = Format::Q4_0.block_bytes();
}

impl Blocks for Q4 {
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn raw(qs: *const u8) -> (__m512, __m512) {
        // SAFETY: forwarded.
        unsafe { Self::lookup(qs, Self::table()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn dequant(qs: *const u8, d: __m512) -> (__m512, __m512) {
        // SAFETY: forwarded.
        unsafe { Self::lookup(qs, _mm512_mul_ps(Self::table(), d)) }
    }
}

/// The f32 scales of `count` (at most [`SCALE_RUN`]) consecutive blocks from `first` into
/// `out[..count]`.
///
/// # Safety
/// `first` addresses `count` whole blocks of `B`; the CPU has AVX-512F.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn scales<B: Blocks>(first: *const u8, count: usize, out: &mut [f32; SCALE_RUN]) {
    debug_assert!(count <= SCALE_RUN);
    let mask: __mmask16 = if count >= SCALE_RUN {
        !0
    } else {
        (1 << count) - 1
    };
    // Lane l: the block's offset l·BYTES (at most 15·34, so well inside i32).
    let offsets = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(B::BYTES as i32),
    );
    // SAFETY: each active lane reads the first 4 bytes of one of the `count` blocks (the f16
    // scale and two quant bytes, all inside the block); masked-off lanes read nothing. The
    // store writes `count` lanes into `out`'s 16.
    unsafe {
        let words = _mm512_mask_i32gather_epi32::<1>(
            _mm512_setzero_si512(),
            mask,
            offsets,
            first as *const i32,
        );
        // The low 16 bits of each lane: the f16 scale (little-endian).
        let halves = _mm512_cvtepi32_epi16(words);
        _mm512_mask_storeu_ps(out.as_mut_ptr(), mask, _mm512_cvtph_ps(halves));
    }
}

/// Weight rows `rows` against every x row.
///
/// # Safety
/// `job` meets [`Job`]'s invariants, `rows` lies inside `0..n`, the outputs of those rows are this
/// call's alone to write, and the CPU has AVX-512F, AVX2, FMA and F16C.
pub(super) unsafe fn rows(job: &Job, rows: Range<usize>) {
    // SAFETY: forwarded.
    unsafe {
        match job.w.format {
            Format::Q8_0 => rows_of::<Q8>(job, rows),
            Format::Q4_0 => rows_of::<Q4>(job, rows),
            Format::Q4_K => rows_of::<Q4K>(job, rows),
            Format::Q6_K => rows_of::<Q6K>(job, rows),
        }
    }
}

/// # Safety
/// As for [`rows`], with `B` matching the matrix's format.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn rows_of<B: Kernel>(job: &Job, rows: Range<usize>) {
    let o = Operands::new::<B>(job);
    let mut acc = vec![_mm512_setzero_ps(); GROUP * o.m];
    let mut r = rows.start;
    // SAFETY (both calls): rows r..r + GROUP (resp. r + 1) lie inside rows, inside 0..n.
    unsafe {
        while r + GROUP <= rows.end {
            group::<B, GROUP>(job, &o, r, &mut acc);
            r += GROUP;
        }
        while r < rows.end {
            group::<B, 1>(job, &o, r, &mut acc);
            r += 1;
        }
    }
}

/// Weight rows `r..r + G` against every x row, K chunk by K chunk; `acc[a·m + i]` holds the
/// running sums of weight row `r + a` and x row `i` between chunks.
///
/// # Safety
/// As for [`rows`], for the rows `r..r + G`; `acc` has at least G·m elements.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn group<B: Kernel, const G: usize>(job: &Job, o: &Operands, r: usize, acc: &mut [__m512]) {
    let m = o.m;
    acc[..G * m].fill(_mm512_setzero_ps());
    let chunk = (X_CHUNK_BYTES / (m * B::LEN * 4)).max(1);
    for b0 in (0..o.nb).step_by(chunk) {
        let blocks = b0..(b0 + chunk).min(o.nb);
        let mut i = 0;
        // SAFETY: every call covers weight rows r..r + G and x rows inside 0..m; only the first
        // x tile prefetches.
        unsafe {
            while i + X_TILE <= m {
                if i == 0 {
                    tile::<B, G, X_TILE, true>(o, acc, r, i, blocks.clone());
                } else {
                    tile::<B, G, X_TILE, false>(o, acc, r, i, blocks.clone());
                }
                i += X_TILE;
            }
            let first = i == 0;
            match (m - i, first) {
                (0, _) => {}
                (1, true) => tile::<B, G, 1, true>(o, acc, r, i, blocks.clone()),
                (1, false) => tile::<B, G, 1, false>(o, acc, r, i, blocks.clone()),
                (2, true) => tile::<B, G, 2, true>(o, acc, r, i, blocks.clone()),
                (2, false) => tile::<B, G, 2, false>(o, acc, r, i, blocks.clone()),
                (3, true) => tile::<B, G, 3, true>(o, acc, r, i, blocks.clone()),
                (3, false) => tile::<B, G, 3, false>(o, acc, r, i, blocks.clone()),
                _ => unreachable!("x tiles of {X_TILE} rows"),
            }
        }
    }
    for a in 0..G {
        for (i, v) in acc[a * m..(a + 1) * m].iter().enumerate() {
            // SAFETY: r + a < n and i < m; the row is the caller's to write.
            unsafe { job.store(i, r + a, _mm512_reduce_add_ps(*v) + job.bias(r + a)) };
        }
    }
}

/// Adds `x[i..i + MB] · W[r..r + R]` over `blocks` to the running sums `sums[a·m + i + j]`, by
/// the format's [`Kernel::add_tile`]. `PF`: this tile also prefetches.
///
/// Kept out of line, with its sums copied into a local array, so that they stay in registers.
///
/// # Safety
/// As for [`rows`], for weight rows `r..r + R` and x rows `i..i + MB` (inside `0..m`); `sums`
/// has at least R·m elements.
#[inline(never)]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn tile<B: Kernel, const R: usize, const MB: usize, const PF: bool>(
    o: &Operands,
    sums: &mut [__m512],
    r: usize,
    i: usize,
    blocks: Range<usize>,
) {
    let m = o.m;
    let mut acc: [[__m512; MB]; R] =
        std::array::from_fn(|a| std::array::from_fn(|j| sums[a * m + i + j]));
    // SAFETY: forwarded.
    unsafe { B::add_tile::<R, MB, PF>(o, &mut acc, r, i, blocks) };
    for (a, acc_a) in acc.iter().enumerate() {
        sums[a * m + i..][..MB].copy_from_slice(acc_a);
    }
}

/// [`Kernel::add_tile`] for the 32-weight formats: from three x rows on by dequantized weights
/// (each widened once, then used by all MB x rows), else by block sums (then one FMA by `d` per
/// block and pair).
///
/// # Safety
/// As for [`Kernel::add_tile`].
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn add_blocks<B: Blocks, const R: usize, const MB: usize, const PF: bool>(
    o: &Operands,
    acc: &mut [[__m512; MB]; R],
    r: usize,
    i: usize,
    blocks: Range<usize>,
) {
    let dq = MB >= 3;
    let plan = o.prefetch_plan::<B, R>(r);
    let mut d = [[0.0f32; SCALE_RUN]; R];
    // SAFETY: rows r..r + R < n and i..i + MB < m (the caller's), blocks b < nb; each run's
    // scales are fetched before its blocks read them.
    unsafe {
        for (part, prefetch) in plan.parts(blocks) {
            let mut run = part.start;
            while run < part.end {
                let count = (part.end - run).min(SCALE_RUN);
                for (a, da) in d.iter_mut().enumerate() {
                    scales::<B>(o.block::<B>(r + a, run), count, da);
                }
                for b in run..run + count {
                    if PF {
                        prefetch.hint::<B, R>(o.w, b);
                    }
                    let x: [(__m512, __m512); MB] = std::array::from_fn(|j| o.x(i + j, b));
                    for (a, acc_a) in acc.iter_mut().enumerate() {
                        let qs = o.block::<B>(r + a, b).add(2);
                        let scale = _mm512_set1_ps(d[a][b - run]);
                        if dq {
                            let (lo, hi) = B::dequant(qs, scale);
                            for (s, (xlo, xhi)) in acc_a.iter_mut().zip(&x) {
                                *s = _mm512_fmadd_ps(*xlo, lo, *s);
                                *s = _mm512_fmadd_ps(*xhi, hi, *s);
                            }
                        } else {
                            let (lo, hi) = B::raw(qs);
                            for (s, (xlo, xhi)) in acc_a.iter_mut().zip(&x) {
                                let block = _mm512_fmadd_ps(*xhi, hi, _mm512_mul_ps(*xlo, lo));
                                *s = _mm512_fmadd_ps(block, scale, *s);
                            }
                        }
                    }
                }
                run += count;
            }
        }
    }
}

/// [`Kernel`] for a 32-weight format, by [`add_blocks`].
macro_rules! block_kernel {
    ($t:ty) => {
        impl Kernel for $t {
            const LEN: usize = BLOCK;

            #[inline]
            #[target_feature(enable = "avx512f,avx2,fma,f16c")]
            unsafe fn add_tile<const R: usize, const MB: usize, const PF: bool>(
                o: &Operands,
                acc: &mut [[__m512; MB]; R],
                r: usize,
                i: usize,
                blocks: Range<usize>,
            ) {
                // SAFETY: forwarded.
                unsafe { add_blocks::<Self, R, MB, PF>(o, acc, r, i, blocks) }
            }
        }
    };
}
block_kernel!(Q8);
block_kernel!(Q4);

/// Where tiles read their operands.
pub(super) struct Operands {
    /// The matrix.
    pub(super) w: *const u8,
    row_bytes: usize,
    /// `x86::Staged::xs`: x block-major, by 32-value blocks whatever the format's block.
    x: *const f32,
    m: usize,
    /// The format's blocks per row.
    nb: usize,
    /// Whether rows are short enough for linear prefetching.
    linear: bool,
}

impl Operands {
    fn new<B: Kernel>(job: &Job) -> Self {
        let nb = job.x.k / B::LEN;
        Self {
            w: job.w.bytes.as_ptr(),
            row_bytes: nb * B::BYTES,
            x: job.x.staged.xs.as_ptr(),
            m: job.x.m,
            nb,
            linear: super::prefetch::linear(nb * B::BYTES),
        }
    }

    /// Block `b` of weight row `r`.
    ///
    /// # Safety
    /// `r < n`, `b < nb`.
    pub(super) unsafe fn block<B: BlockBytes>(&self, r: usize, b: usize) -> *const u8 {
        // SAFETY: inside the matrix, by the caller's bounds.
        unsafe { self.w.add(r * self.row_bytes + b * B::BYTES) }
    }

    /// x row `i`'s 32-value block `b`: values 0..16 and 16..32.
    ///
    /// # Safety
    /// `i < m`, `b < k / 32`; the staged values exist; the CPU has AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn x(&self, i: usize, b: usize) -> (__m512, __m512) {
        // SAFETY: forwarded.
        unsafe { (self.x16(i, b, 0), self.x16(i, b, 1)) }
    }

    /// x row `i`'s 32-value block `b`: values `16h..16h + 16`.
    ///
    /// # Safety
    /// `i < m`, `b < k / 32`, `h < 2`; the staged values exist; the CPU has AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn x16(&self, i: usize, b: usize, h: usize) -> __m512 {
        // SAFETY: 16 of the 32 values of (b, i), inside the m·k staged values by the caller's
        // bounds.
        unsafe { _mm512_loadu_ps(self.x.add((b * self.m + i) * BLOCK + 16 * h)) }
    }

    /// The prefetch plan for a pass over rows `r..r + R` (see [`Prefetch::plan`]).
    pub(super) fn prefetch_plan<B: BlockBytes, const R: usize>(&self, r: usize) -> Prefetch {
        Prefetch::plan::<B, R>(self.linear, self.row_bytes, r)
    }
}
