//! The float prefill's product (`--prefill exact`, the default): a prompt's `x · Wᵀ` against a
//! block-quantized or 16-bit weight, every weight exactly its stored value and every sum in f32,
//! by our own tiled kernels instead of libtorch's GEMM on a dequantized (or widened) copy.
//!
//! Why not libtorch: at a prompt's shapes (tens to hundreds of rows of x) its f32 GEMM ran at
//! 155–230 GFLOP/s on two threads of an AVX-512 Xeon (M = 64, the 1.5B model's layers), well
//! below the cores' FMA rate, and the weight has to be widened to f32 in memory first for it.
//! The kernels here dequantize the weight a small panel at a time into L1 and keep their sums in
//! registers: 225–320 GFLOP/s on the same shapes, and 1.1–1.35× libtorch on AVX2 with its GEMM
//! capped at AVX2 too (`cargo bench --bench gemv -- 8`).
//!
//! The arithmetic is a plain f32 dot product per output, one fused multiply-add per weight in
//! order of k, so it differs from any other f32 product only by summation order; the portable
//! [`rows_scalar`] does the same operations in the same order, and the SIMD kernels agree with
//! it bit for bit.
//!
//! Layout: x is packed in tiles of [`X_TILE`] rows, column after column ([`PackedX`]), so that one
//! vector holds one column of 16 x rows; the weight is dequantized [`GROUP`] rows × [`CHUNK`]
//! columns at a time into a [`Panel`], and each of its values, broadcast, is multiplied into
//! every x row of a tile at once. A result lands in lane `i` for x row `i`: the output is
//! computed transposed, `[n, mp]`, as in [`super::int8`].

use std::ops::Range;

use super::{dequantize_fast, QuantMatrix};

/// x rows per tile (one AVX-512 vector; two AVX2 ones). [`PackedX`] pads m to a multiple of it.
pub const X_TILE: usize = 16;

/// Weight rows dequantized and multiplied together: the AVX-512 kernel's height (AVX2 takes
/// them six at a time). A caller splitting rows across threads cuts at multiples of it.
pub const GROUP: usize = 12;

/// Columns of the weight one panel holds: a multiple of every format's block (32, and 256 for
/// the K formats), and small enough that a panel (12 KB) stays in L1 beside the x it meets.
const CHUNK: usize = 256;

/// x rows one pass over a chunk of columns takes: their chunk of x (512 KB) stays in L2 while
/// every panel of the pass meets it. Longer prompts repeat the panels' dequantizing per block.
const M_BLOCK: usize = 512;

/// `x[m, k]` packed for the kernels: `data[(t·k + e)·16 + j] = x[16t + j, e]`, the padding rows 0.
#[derive(Debug)]
pub struct PackedX {
    /// m padded to a multiple of [`X_TILE`].
    pub(super) mp: usize,
    pub(super) k: usize,
    pub(super) data: Vec<f32>,
}

impl PackedX {
    /// `x` is `m` rows of `k`, row-major.
    pub fn new(x: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(x.len(), m * k, "x is m rows of k");
        let mp = m.next_multiple_of(X_TILE);
        let mut data = vec![0.0; mp * k];
        for (i, row) in x.chunks_exact(k.max(1)).enumerate() {
            let tile = &mut data[i / X_TILE * k * X_TILE..][..k * X_TILE];
            for (e, &v) in row.iter().enumerate() {
                tile[e * X_TILE + i % X_TILE] = v;
            }
        }
        Self { mp, k, data }
    }

    /// Rows the output has: m padded to [`X_TILE`].
    pub fn padded_m(&self) -> usize {
        self.mp
    }

    /// Tile `t`'s values from column `e` on.
    #[inline(always)]
    pub(super) fn at(&self, t: usize, e: usize) -> *const f32 {
        debug_assert!(t * X_TILE < self.mp && e <= self.k);
        // SAFETY: inside `data` (asserted above in debug builds; the callers loop within mp, k).
        unsafe { self.data.as_ptr().add((t * self.k + e) * X_TILE) }
    }
}

/// A weight `W[n, k]` (nn.Linear's layout) in any of the layouts the model keeps its matrices in.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    /// Block-quantized (llama.cpp's layouts).
    Quant(QuantMatrix<'a>),
    /// bf16 or f16, row-major (a 16-bit checkpoint's matrices, where libtorch's own 16-bit GEMM
    /// is slow).
    Bf16 {
        w: &'a [half::bf16],
        n: usize,
        k: usize,
    },
    F16 {
        w: &'a [half::f16],
        n: usize,
        k: usize,
    },
}

impl Weights<'_> {
    pub fn n(&self) -> usize {
        match *self {
            Weights::Quant(q) => q.n(),
            Weights::Bf16 { n, .. } | Weights::F16 { n, .. } => n,
        }
    }

    pub fn k(&self) -> usize {
        match *self {
            Weights::Quant(q) => q.k(),
            Weights::Bf16 { k, .. } | Weights::F16 { k, .. } => k,
        }
    }

    /// The stored bytes of row `r`'s columns `cols` (for a quantized weight, whole blocks).
    fn bytes(&self, r: usize, cols: Range<usize>) -> &[u8] {
        match *self {
            Weights::Quant(q) => {
                let (bl, bb) = (q.format().block_len(), q.format().block_bytes());
                &q.row(r)[cols.start / bl * bb..cols.end / bl * bb]
            }
            Weights::Bf16 { w, k, .. } => bytes_of_16(&w[r * k..][cols]),
            Weights::F16 { w, k, .. } => bytes_of_16(&w[r * k..][cols]),
        }
    }

    /// Row `r`'s columns `cols` in f32 into `out`.
    fn widen(&self, r: usize, cols: Range<usize>, out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        match *self {
            Weights::Quant(q) => dequantize_fast(q.format(), self.bytes(r, cols), out)
                .expect("whole blocks of a checked matrix"),
            // bf16 is f32's upper half: a shift, which this loop vectorizes.
            Weights::Bf16 { w, k, .. } => {
                for (o, v) in out.iter_mut().zip(&w[r * k..][cols]) {
                    *o = f32::from_bits(u32::from(v.to_bits()) << 16);
                }
            }
            Weights::F16 { w, k, .. } => w[r * k..][cols].convert_to_f32_slice(out),
        }
    }

    /// Asks the cache for rows `rows`, columns `cols`, which the next panel widens: the panels
    /// walk a dozen rows a short run each, too many streams at once for the hardware prefetcher
    /// to follow from memory (measured: bf16 panels 180–210 GFLOP/s without, 225–320 with).
    fn prefetch(&self, rows: Range<usize>, cols: Range<usize>) {
        #[cfg(target_arch = "x86_64")]
        for r in rows {
            let bytes = self.bytes(r, cols.clone());
            for line in (0..bytes.len()).step_by(64) {
                // SAFETY: a hint for an address inside `bytes`; it reads nothing.
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(line) as *const i8);
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (rows, cols);
    }
}

/// The bytes of 16-bit values (bf16 or f16).
fn bytes_of_16<T: Copy>(v: &[T]) -> &[u8] {
    assert_eq!(std::mem::size_of::<T>(), 2, "a 16-bit type");
    // SAFETY: a 16-bit plain-data type (bf16 or f16): its slice is 2·len initialized bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 2) }
}

/// [`GROUP`] weight rows × `len` columns in f32, row after row (`w[a·len + e]`); rows past the
/// matrix's end hold zeros.
#[derive(Debug, Default)]
pub(super) struct Panel {
    pub(super) w: Vec<f32>,
    pub(super) len: usize,
}

impl Panel {
    /// Widens rows `rows` (at most [`GROUP`]), columns `cols` of `w`.
    fn fill(&mut self, w: &Weights, rows: Range<usize>, cols: Range<usize>) {
        self.len = cols.len();
        self.w.resize(GROUP * self.len, 0.0);
        for (a, out) in self.w.chunks_exact_mut(self.len).enumerate() {
            match rows.start + a {
                r if r < rows.end => w.widen(r, cols.clone(), out),
                _ => out.fill(0.0),
            }
        }
    }
}

/// One kernel call: a panel against tiles `tiles` of x from the panel's first column, into
/// `out[a·stride + i]` (row `a` of the panel, x row `i`). With `first`, the sums start from 0;
/// otherwise from what `out` holds (the previous chunks' sums).
pub(super) struct Step<'a> {
    pub(super) panel: &'a Panel,
    pub(super) x: &'a PackedX,
    pub(super) col: usize,
    pub(super) tiles: Range<usize>,
    pub(super) out: *mut f32,
    pub(super) stride: usize,
    pub(super) first: bool,
}

/// The portable kernel, the SIMD ones' reference: the same fused multiply-adds in the same order.
///
/// # Safety
/// `step.out` addresses rows `0..GROUP` of `stride` values, columns of `step.tiles`' x rows.
pub(super) unsafe fn step_scalar(step: &Step) {
    let Step { panel, x, .. } = *step;
    for a in 0..GROUP {
        for i in step.tiles.start * X_TILE..step.tiles.end * X_TILE {
            // SAFETY: inside the caller's output (its contract).
            let o = unsafe { &mut *step.out.add(a * step.stride + i) };
            let mut acc = if step.first { 0.0 } else { *o };
            let xs = x.at(i / X_TILE, step.col);
            for e in 0..panel.len {
                // SAFETY: column col + e < k of tile i / 16 (the panel lies inside the matrix).
                let xv = unsafe { *xs.add(e * X_TILE + i % X_TILE) };
                acc = xv.mul_add(panel.w[a * panel.len + e], acc);
            }
            *o = acc;
        }
    }
}

/// The kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512F: 12 weight rows × 32 x rows in registers.
    Avx512,
    /// AVX2 + FMA: 6 weight rows × 16 x rows.
    Avx2,
    /// [`step_scalar`]: the reference, for tests.
    Portable,
}

impl Kernel {
    /// The fastest this CPU runs, or `None` where libtorch's GEMM is the better float path
    /// (CPUs without AVX2, where only the portable loop would run).
    pub fn detect() -> Option<Kernel> {
        match super::Isa::detect() {
            super::Isa::Avx512 => Some(Kernel::Avx512),
            super::Isa::Avx2 => Some(Kernel::Avx2),
            super::Isa::Scalar => None,
        }
    }

    /// Whether this CPU can run it.
    pub fn runs_here(self) -> bool {
        match self {
            Kernel::Avx512 => super::Isa::Avx512.runs_here(),
            Kernel::Avx2 => super::Isa::Avx2.runs_here(),
            Kernel::Portable => true,
        }
    }

    /// # Safety
    /// As [`step_scalar`], and the CPU runs `self`.
    unsafe fn step(self, step: &Step) {
        // SAFETY: the caller's.
        unsafe {
            match self {
                Kernel::Portable => step_scalar(step),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => super::float_gemm_x86::avx512(step),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => super::float_gemm_x86::avx2(step),
                #[cfg(not(target_arch = "x86_64"))]
                Kernel::Avx512 | Kernel::Avx2 => unreachable!("runs_here is false"),
            }
        }
    }
}

/// `out_t[r·mp + i] = Σ_e W[r, e]·x[i, e]` for the weight rows of groups `groups` (group g is
/// rows `g·GROUP..` up to n), for every x row `i` up to x's padded count `mp` (the padding rows'
/// results are 0).
///
/// # Safety
/// `out_t` addresses `w.n() · x.padded_m()` writable f32s that overlap no input, and no other
/// thread reads or writes these rows of it while this runs.
///
/// # Panics
/// If the shapes disagree or the CPU cannot run `kernel`.
pub unsafe fn rows_on(
    kernel: Kernel,
    w: &Weights,
    x: &PackedX,
    out_t: *mut f32,
    groups: Range<usize>,
) {
    assert!(w.k() == x.k, "shapes");
    assert!(
        groups.end * GROUP < w.n() + GROUP,
        "groups inside the matrix"
    );
    assert!(kernel.runs_here(), "this CPU cannot run {kernel:?}");
    let mp = x.mp;
    // The last group of the matrix may be short: its sums go to a scratch of whole rows, copied
    // out at the end.
    let rows_end = (groups.end * GROUP).min(w.n());
    let mut tail = Vec::new();
    if groups.end * GROUP > w.n() {
        tail.resize(GROUP * mp, 0.0f32);
    }
    let mut panel = Panel::default();
    for m0 in (0..mp / X_TILE).step_by(M_BLOCK / X_TILE) {
        let tiles = m0..(m0 + M_BLOCK / X_TILE).min(mp / X_TILE);
        for c0 in (0..w.k()).step_by(CHUNK) {
            let cols = c0..(c0 + CHUNK).min(w.k());
            for g in groups.clone() {
                let r0 = g * GROUP;
                let rows = r0..(r0 + GROUP).min(rows_end);
                panel.fill(w, rows.clone(), cols.clone());
                // The next panel's weights, while this one is multiplied.
                let next = if g + 1 < groups.end {
                    Some(((g + 1) * GROUP, cols.clone()))
                } else {
                    (cols.end < w.k()).then(|| {
                        (
                            groups.start * GROUP,
                            cols.end..(cols.end + CHUNK).min(w.k()),
                        )
                    })
                };
                if let Some((r, c)) = next {
                    w.prefetch(r..(r + GROUP).min(rows_end), c);
                }
                let out = if rows.len() < GROUP {
                    tail.as_mut_ptr()
                } else {
                    // SAFETY: rows r0..r0 + GROUP of the output are this call's.
                    unsafe { out_t.add(r0 * mp) }
                };
                let step = Step {
                    panel: &panel,
                    x,
                    col: c0,
                    tiles: tiles.clone(),
                    out,
                    stride: mp,
                    first: c0 == 0,
                };
                // SAFETY: `out` holds GROUP rows of mp (the caller's rows, or `tail`); the CPU
                // runs the kernel (asserted).
                unsafe { kernel.step(&step) };
            }
        }
    }
    if !tail.is_empty() {
        let r0 = (groups.end - 1) * GROUP;
        let valid = (rows_end - r0) * mp;
        // SAFETY: the short group's rows of the output are this call's.
        unsafe { std::ptr::copy_nonoverlapping(tail.as_ptr(), out_t.add(r0 * mp), valid) };
    }
}
