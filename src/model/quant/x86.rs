//! AVX2 + FMA + F16C kernels (x86-64): the weights widened to f32 in registers, f32 FMAs. One
//! set of loops for all four formats, through [`Kernel`]: Q8_0 and Q4_0 here, the K formats'
//! super-block arithmetic in `x86_k` (a super-block is one of their blocks).
//!
//! Widening: 8 quants at a time go from 8 bytes to 8 i32 lanes (`vpmovsxbd` / `vpmovzxbd`
//! straight from memory) and to f32. Q8_0's bytes 8h..8h+8 and 16+8h..24+8h (h = 0, 1) are x
//! chunks h and h + 2; Q4_0's bytes 8h..8h+8 hold both at once (low nibbles: chunk h, high
//! nibbles: chunk h + 2), so both formats go through one loop.
//!
//! Two ways to apply the block scale `d`, by tile:
//! - [`tile_sum`] (one or two x rows): per block and (weight row, x row) pair, `Σ x·q` in a block
//!   accumulator, then one FMA by `d`. Q4_0's `q − 8` is never formed: the accumulator starts at
//!   `−Σx` of the block in every lane, and its eight lanes add up to the `−8·Σx` that
//!   `Σ (q − 8)·x = Σ q·x − 8·Σ x` needs.
//! - [`tile_dq`] (three x rows and more): each widened weight vector is dequantized once, `q·d`
//!   (Q4_0: `q·d − 8·d` in one FMA), and then serves every x row.
//!
//! Order: a group of [`GROUP`] weight rows at a time; K in chunks whose x values (all M rows)
//! fit in half of L1; per chunk, tiles of R weight rows × MB x rows, whose R·MB sums stay in
//! registers over the chunk. So the weights are read once from memory, x once per group from
//! L2, and the per-row work is all in registers. x is staged block-major ([`Staged`]) and the
//! weights of the next group are prefetched ([`Operands::prefetch_plan`]).

use std::arch::x86_64::*;
use std::ops::Range;

use super::format::{Format, SUPER_BLOCK};
use super::prefetch::{BlockBytes, Prefetch};
use super::x86_k::{Q4K, Q6K};
use super::{Job, BLOCK};

/// Weight rows multiplied by all of x before the next rows are read.
const GROUP: usize = super::ROW_TILE;

/// 32-value x blocks per K super-block.
pub(super) const X_BLOCKS: usize = SUPER_BLOCK / BLOCK;

/// x as the kernels read it, made once per product by [`Activations`](super::Activations).
#[derive(Debug, Default)]
pub(super) struct Staged {
    /// Block-major: `xs[(b·m + i)·32 + e] = x[i, 32b + e]`. A block's values for all M rows
    /// are one contiguous run, so a tile's x reads are sequential and share few cache lines,
    /// where x rows K·4 bytes apart (a multiple of 2 KiB at the usual K) collide in L1's sets.
    /// (The AVX-512 kernels read it too.)
    pub(super) xs: Vec<f32>,
    /// `−Σ x[i, 32b..32b + 32]` at [`sum_at`](Self::sum_at)`(m, i, b)`: Q4_0's offset term and
    /// Q4_K's min term.
    neg_sums: Vec<f32>,
}

impl Staged {
    pub(super) fn new(x: &[f32], m: usize, k: usize) -> Self {
        let nb = k / BLOCK;
        let mut xs = Vec::with_capacity(m * k);
        let mut neg_sums = vec![0.0; m * nb.next_multiple_of(X_BLOCKS)];
        for b in 0..nb {
            for i in 0..m {
                let block = &x[i * k + b * BLOCK..][..BLOCK];
                xs.extend_from_slice(block);
                neg_sums[Self::sum_at(m, i, b)] = -sum32(block);
            }
        }
        Self { xs, neg_sums }
    }

    /// Where the sum of x row `i`'s block `b` is: by runs of a K super-block's eight blocks, row
    /// after row, so that Q4_K reads a super-block's eight as one vector (padded to whole runs).
    fn sum_at(m: usize, i: usize, b: usize) -> usize {
        (b / X_BLOCKS * m + i) * X_BLOCKS + b % X_BLOCKS
    }
}

/// The sum of 32 values in eight lanes, as the kernels add (a plain sum is one long chain of
/// dependent additions).
fn sum32(block: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    for chunk in block.chunks_exact(8) {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    lanes.iter().sum()
}

/// How a format's block turns into f32 vectors.
trait Blocks: BlockBytes {
    /// Whether the quants are stored offset by 8 (Q4_0), which the block accumulator's start
    /// value corrects.
    const OFFSET: bool;

    /// The quants of x chunks `h` and `h + 2` (h = 0 or 1) of the block whose quants start at
    /// `qs`, as f32 (Q4_0's without the −8).
    ///
    /// # Safety
    /// `qs` addresses a block's 32 (Q8_0) or 16 (Q4_0) quant bytes; the CPU has AVX2.
    unsafe fn pair(qs: *const u8, h: usize) -> (__m256, __m256);

    /// A vector from [`pair`](Self::pair) as weights: `q·d`, or Q4_0's `(q − 8)·d` as
    /// `q·d + offset` with `offset = −8·d`. Exact: an integer below 2^8 times an f16 fits an f32.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    unsafe fn dequant(w: __m256, d: __m256, offset: __m256) -> __m256;
}

struct Q8;
struct Q4;

impl BlockBytes for Q8 {
    const BYTES: usize = Format::Q8_0.block_bytes();
}

impl Blocks for Q8 {
    const OFFSET: bool = false;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pair(qs: *const u8, h: usize) -> (__m256, __m256) {
        // SAFETY: bytes 8h..8h+8 and 16+8h..24+8h lie inside the 32 quants (h <= 1).
        unsafe { (widen_i8(qs.add(8 * h)), widen_i8(qs.add(16 + 8 * h))) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dequant(w: __m256, d: __m256, _offset: __m256) -> __m256 {
        _mm256_mul_ps(w, d)
    }
}

impl BlockBytes for Q4 {
    const BYTES: usize = Format::Q4_0.block_bytes();
}

impl Blocks for Q4 {
    const OFFSET: bool = true;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pair(qs: *const u8, h: usize) -> (__m256, __m256) {
        // SAFETY: bytes 8h..8h+8 lie inside the 16 quant bytes (h <= 1).
        let bytes = unsafe { _mm256_cvtepu8_epi32(load8(qs.add(8 * h))) };
        let lo = _mm256_and_si256(bytes, _mm256_set1_epi32(0x0f));
        // A byte in an i32 lane: shifting right by 4 leaves its high nibble alone.
        let hi = _mm256_srli_epi32::<4>(bytes);
        (_mm256_cvtepi32_ps(lo), _mm256_cvtepi32_ps(hi))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dequant(w: __m256, d: __m256, offset: __m256) -> __m256 {
        _mm256_fmadd_ps(w, d, offset)
    }
}

/// 8 bytes at `p` into the low half of a register.
///
/// # Safety
/// `p` addresses 8 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load8(p: *const u8) -> __m128i {
    // SAFETY: the caller's; `_mm_loadl_epi64` reads exactly 8 bytes, unaligned.
    unsafe { _mm_loadl_epi64(p as *const __m128i) }
}

/// 8 bytes at `p` as 8 i32 lanes, zero-extended.
///
/// # Safety
/// `p` addresses 8 readable bytes; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn widen_u8(p: *const u8) -> __m256i {
    // SAFETY: the caller's.
    unsafe { _mm256_cvtepu8_epi32(load8(p)) }
}

/// 8 signed bytes at `p` as f32.
///
/// # Safety
/// `p` addresses 8 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn widen_i8(p: *const u8) -> __m256 {
    // SAFETY: the caller's.
    unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(load8(p))) }
}

/// The f16 scale at `p`, in all 8 lanes.
///
/// # Safety
/// `p` addresses 2 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scale(p: *const u8) -> __m256 {
    // SAFETY: the caller's; an unaligned 2-byte read.
    let bits = unsafe { (p as *const i16).read_unaligned() };
    _mm256_cvtph_ps(_mm_set1_epi16(bits))
}

/// The sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Keeps what `v` holds in memory: read back with constant indices (loops unrolled), the
/// values of a scale array stored just before would otherwise be forwarded into registers and
/// each broadcast made from its lane by one to three shuffles, all on the port that also widens
/// the quants; from memory a broadcast is a plain load (or an FMA's operand). (The AVX-512 K
/// kernels use it too.)
#[inline]
pub(super) fn in_memory<T>(v: &mut T) {
    std::hint::black_box(v);
}

/// A format as the shared loops here see it: blocks of [`LEN`](Self::LEN) weights, and the
/// product of a few weight rows by a few x rows over a range of blocks. Q8_0 and Q4_0 implement
/// it below (by [`tile_sum`] and [`tile_dq`]), the K formats in `x86_k`.
pub(super) trait Kernel: BlockBytes {
    /// Weights per block: 32, or a K super-block's 256.
    const LEN: usize;

    /// Adds `x[i..i + MB] · W[r..r + R]` over `blocks` to `acc[a][j]` (weight row `r + a`, x row
    /// `i + j`), as eight-lane sums. `PF`: the tile also prefetches, by
    /// [`Operands::prefetch_plan`]. The split of a group into tiles gives MB ≤ 2 tiles up to
    /// 2·R·MB = 8 registers of their own (block sums), and MB ≥ 3 tiles R·MB ≤ 8.
    ///
    /// # Safety
    /// As for [`rows`], for weight rows `r..r + R` and x rows `i..i + MB` (inside `0..m`), and
    /// `blocks` inside `0..nb`.
    unsafe fn add_tile<const R: usize, const MB: usize, const PF: bool>(
        o: &Operands,
        acc: &mut [[__m256; MB]; R],
        r: usize,
        i: usize,
        blocks: Range<usize>,
    );
}

/// [`Kernel`] for a 32-weight format: from three x rows on by dequantized weights
/// ([`tile_dq`]), else by block sums ([`tile_sum`]).
macro_rules! block_kernel {
    ($t:ty) => {
        impl Kernel for $t {
            const LEN: usize = BLOCK;

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
                        tile_dq::<Self, R, MB, PF>(o, acc, r, i, blocks)
                    } else {
                        tile_sum::<Self, R, MB, PF>(o, acc, r, i, blocks)
                    }
                }
            }
        }
    };
}
block_kernel!(Q8);
block_kernel!(Q4);

/// Weight rows `rows` against every x row.
///
/// # Safety
/// `job` meets [`Job`]'s invariants, `rows` lies inside `0..n`, the outputs of those rows are this
/// call's alone to write, and the CPU has AVX2, FMA and F16C.
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
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_of<B: Kernel>(job: &Job, rows: Range<usize>) {
    let o = Operands::new::<B>(job);
    let mut acc = vec![_mm256_setzero_ps(); GROUP * o.m];
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

/// Weight rows `r..r + G` against every x row. K is walked in chunks whose x values (all M rows)
/// fit in L1 together, and each chunk is multiplied by all G rows before the next: the weights
/// are read once, and so is x from L2, whatever M. `acc` holds the running sums between chunks,
/// `acc[a·m + i]` for weight row `r + a` and x row `i`.
///
/// # Safety
/// As for [`rows`], for the rows `r..r + G`; `acc` has at least G·m elements.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group<B: Kernel, const G: usize>(job: &Job, o: &Operands, r: usize, acc: &mut [__m256]) {
    let m = o.m;
    acc[..G * m].fill(_mm256_setzero_ps());
    let chunk = (X_CHUNK_BYTES / (m * B::LEN * 4)).max(1);
    for b0 in (0..o.nb).step_by(chunk) {
        let blocks = b0..(b0 + chunk).min(o.nb);
        let mut i = 0;
        // SAFETY: every call covers weight rows inside r..r + G (R divides G where it is called:
        // the guards) and x rows inside 0..m.
        unsafe {
            let two = G.is_multiple_of(2);
            while i + 4 <= m {
                if two {
                    split::<B, G, 2, 4>(o, acc, r, i, &blocks);
                } else {
                    split::<B, G, 1, 4>(o, acc, r, i, &blocks);
                }
                i += 4;
            }
            match m - i {
                0 => {}
                1 => split::<B, G, G, 1>(o, acc, r, i, &blocks),
                2 if two => split::<B, G, 2, 2>(o, acc, r, i, &blocks),
                2 => split::<B, G, 1, 2>(o, acc, r, i, &blocks),
                3 if two => split::<B, G, 2, 3>(o, acc, r, i, &blocks),
                3 => split::<B, G, 1, 3>(o, acc, r, i, &blocks),
                _ => unreachable!("x tiles of 4 rows"),
            }
        }
    }
    for a in 0..G {
        for (i, v) in acc[a * m..(a + 1) * m].iter().enumerate() {
            // SAFETY: r + a < n and i < m; the row is the caller's to write.
            unsafe { job.store(i, r + a, hsum(*v) + job.bias(r + a)) };
        }
    }
}

/// x values (all rows) per K chunk: half of L1, the rest for the weights and the stack.
const X_CHUNK_BYTES: usize = 16 << 10;

/// Weight rows `r..r + G` against x rows `i..i + MB` over `blocks`, in tiles of `R` weight rows.
/// The first x tile (`i == 0`) also prefetches.
///
/// # Safety
/// As for [`rows`], for weight rows `r..r + G` and x rows `i..i + MB` (inside `0..m`);
/// `R` divides `G`; `sums` has G·m elements.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn split<B: Kernel, const G: usize, const R: usize, const MB: usize>(
    o: &Operands,
    sums: &mut [__m256],
    r: usize,
    i: usize,
    blocks: &Range<usize>,
) {
    for t in (0..G).step_by(R) {
        let sums = &mut sums[t * o.m..];
        // SAFETY: rows r + t..r + t + R lie inside r..r + G, since R divides G. Whether the tile
        // prefetches is settled here, once, so that its loop is one straight path.
        unsafe {
            if i == 0 {
                tile::<B, R, MB, true>(o, sums, r + t, i, blocks.clone());
            } else {
                tile::<B, R, MB, false>(o, sums, r + t, i, blocks.clone());
            }
        }
    }
}

/// Adds `x[i..i + MB] · W[r..r + R]` over `blocks` to the running sums `sums[a·m + i + j]`, by
/// the format's [`Kernel::add_tile`]. `PF`: this tile also prefetches.
///
/// Kept out of line, with its sums copied into a local array, so that they stay in registers
/// (inlined into [`split`]'s dispatch, LLVM kept some of them on the stack).
///
/// # Safety
/// As for [`rows`], for weight rows `r..r + R` and x rows `i..i + MB` (inside `0..m`); `sums`
/// has at least R·m elements.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<B: Kernel, const R: usize, const MB: usize, const PF: bool>(
    o: &Operands,
    sums: &mut [__m256],
    r: usize,
    i: usize,
    blocks: Range<usize>,
) {
    let m = o.m;
    let mut acc: [[__m256; MB]; R] =
        std::array::from_fn(|a| std::array::from_fn(|j| sums[a * m + i + j]));
    // SAFETY: forwarded.
    unsafe { B::add_tile::<R, MB, PF>(o, &mut acc, r, i, blocks) };
    for (a, acc_a) in acc.iter().enumerate() {
        sums[a * m + i..][..MB].copy_from_slice(acc_a);
    }
}

/// Where tiles read their operands.
pub(super) struct Operands {
    /// The matrix.
    pub(super) w: *const u8,
    row_bytes: usize,
    /// [`Staged::xs`]: x block-major, by 32-value blocks whatever the format's block.
    x: *const f32,
    /// [`Staged::neg_sums`].
    sums: *const f32,
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
            sums: job.x.staged.neg_sums.as_ptr(),
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

    /// x row `i`, chunk `c` (8 values) of its 32-value block `b`.
    ///
    /// # Safety
    /// `i < m`, `b < k / 32`, `c < 4`; the CPU has AVX.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn x(&self, i: usize, b: usize, c: usize) -> __m256 {
        // SAFETY: 8 of the 32 values of (b, i), inside the m·k staged values by the caller's
        // bounds.
        unsafe { _mm256_loadu_ps(self.x.add((b * self.m + i) * BLOCK + 8 * c)) }
    }

    /// The negated sum of x row `i`'s 32-value block `b`, in all lanes (Q4_0).
    ///
    /// # Safety
    /// `i < m`, `b < k / 32`; the CPU has AVX.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn neg_sum(&self, i: usize, b: usize) -> __m256 {
        // SAFETY: by the caller's bounds, inside the staged sums.
        unsafe { _mm256_broadcast_ss(&*self.sums.add(Staged::sum_at(self.m, i, b))) }
    }

    /// The negated sums of x row `i`'s eight 32-value blocks `8s..8s + 8`, lane by lane (Q4_K's
    /// min term, per super-block `s`).
    ///
    /// # Safety
    /// `i < m`, `s < k / 256`; the CPU has AVX.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn neg_sums8(&self, i: usize, s: usize) -> __m256 {
        // SAFETY: by the caller's bounds, 8 consecutive staged sums.
        unsafe { _mm256_loadu_ps(self.sums.add(Staged::sum_at(self.m, i, X_BLOCKS * s))) }
    }

    /// The prefetch plan for a pass over rows `r..r + R` (see [`Prefetch::plan`]).
    pub(super) fn prefetch_plan<B: BlockBytes, const R: usize>(&self, r: usize) -> Prefetch {
        Prefetch::plan::<B, R>(self.linear, self.row_bytes, r)
    }
}

/// Adds `x[i..i + MB] · W[r..r + R]` over `blocks` to `acc`, by block sums: per block and
/// (weight row, x row) pair, `Σ x·q` in a block accumulator, then one FMA by `d`. Cheapest for
/// one or two x rows; needs 2·R·MB registers.
///
/// # Safety
/// As for [`Kernel::add_tile`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_sum<B: Blocks, const R: usize, const MB: usize, const PF: bool>(
    o: &Operands,
    acc: &mut [[__m256; MB]; R],
    r: usize,
    i: usize,
    blocks: Range<usize>,
) {
    let plan = o.prefetch_plan::<B, R>(r);
    // SAFETY: rows r..r + R < n and i..i + MB < m (the caller's), blocks b < nb.
    unsafe {
        for (blocks, prefetch) in plan.parts(blocks) {
            for b in blocks {
                // Q4_0's offset term starts each block accumulator; without one, the first
                // product does (a multiply, not an FMA onto a zero that takes a register).
                let start: [__m256; MB] = std::array::from_fn(|j| {
                    if B::OFFSET {
                        o.neg_sum(i + j, b)
                    } else {
                        _mm256_setzero_ps()
                    }
                });
                let mut bacc = [start; R];
                for h in 0..2 {
                    let xlo: [__m256; MB] = std::array::from_fn(|j| o.x(i + j, b, h));
                    let xhi: [__m256; MB] = std::array::from_fn(|j| o.x(i + j, b, h + 2));
                    for (a, ba) in bacc.iter_mut().enumerate() {
                        let (wlo, whi) = B::pair(o.block::<B>(r + a, b).add(2), h);
                        for j in 0..MB {
                            ba[j] = if h == 0 && !B::OFFSET {
                                _mm256_mul_ps(xlo[j], wlo)
                            } else {
                                _mm256_fmadd_ps(xlo[j], wlo, ba[j])
                            };
                            ba[j] = _mm256_fmadd_ps(xhi[j], whi, ba[j]);
                        }
                    }
                }
                if PF {
                    prefetch.hint::<B, R>(o.w, b);
                }
                for (a, (acc_a, ba)) in acc.iter_mut().zip(&bacc).enumerate() {
                    let d = scale(o.block::<B>(r + a, b));
                    for j in 0..MB {
                        acc_a[j] = _mm256_fmadd_ps(ba[j], d, acc_a[j]);
                    }
                }
            }
        }
    }
}

/// The same sums by dequantized weights: each widened weight vector is multiplied by `d` (Q4_0:
/// and offset by −8·d in the same FMA) once, then used by all MB x rows. One more operation per 8
/// weights than [`tile_sum`] but one fewer per block and x row, and only R·MB accumulators: the
/// better one from three x rows on.
///
/// # Safety
/// As for [`Kernel::add_tile`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_dq<B: Blocks, const R: usize, const MB: usize, const PF: bool>(
    o: &Operands,
    acc: &mut [[__m256; MB]; R],
    r: usize,
    i: usize,
    blocks: Range<usize>,
) {
    let plan = o.prefetch_plan::<B, R>(r);
    // SAFETY: rows r..r + R < n and i..i + MB < m (the caller's), blocks b < nb.
    unsafe {
        for (blocks, prefetch) in plan.parts(blocks) {
            for b in blocks {
                if PF {
                    prefetch.hint::<B, R>(o.w, b);
                }
                for (a, acc_a) in acc.iter_mut().enumerate() {
                    let block = o.block::<B>(r + a, b);
                    let d = scale(block);
                    let offset = _mm256_mul_ps(d, _mm256_set1_ps(-8.0));
                    for h in 0..2 {
                        let (wlo, whi) = B::pair(block.add(2), h);
                        let (wlo, whi) = (B::dequant(wlo, d, offset), B::dequant(whi, d, offset));
                        for (j, s) in acc_a.iter_mut().enumerate() {
                            *s = _mm256_fmadd_ps(o.x(i + j, b, h), wlo, *s);
                            *s = _mm256_fmadd_ps(o.x(i + j, b, h + 2), whi, *s);
                        }
                    }
                }
            }
        }
    }
}
