//! Integer prefill: long products (a prompt's rows) against 4- and 6-bit weights as 8-bit integer
//! dot products, as llama.cpp computes them, where the float path would widen every weight to f32
//! for libtorch's GEMM first.
//!
//! Every weight of Q4_0, Q4_K and Q6_K is `w = s·q − o` over a *unit* of L consecutive weights of
//! a row, with one `(s, o)` per unit and `q` a small unsigned integer:
//! - Q4_0 (L = 32): `q` the nibble, `s = d`, `o = 8·d`;
//! - Q4_K (L = 32, a sub-block): `q` the nibble, `s = d·sc`, `o = dmin·m`;
//! - Q6_K (L = 16, a sub-block): `q` the 6-bit value, `s = d·scale`, `o = 32·d·scale`.
//!
//! x is rounded to 8 bits per block of 32 (`x ≈ x̂ = dx·qx`, `dx = max|x|/127`, llama.cpp's
//! Q8_0), with the sums of x̂ over each 16 and 32 kept beside. A unit then contributes
//! `Σ w·x̂ = (s·dx)·Σ q·qx − o·Σ x̂`: one integer dot product (`vpdpbusd` on AVX-512 VNNI,
//! `vpmaddubsw` + `vpmaddwd` on AVX2), one conversion and two FMAs. The only rounding beyond
//! f32's is x's, at most `dx/2` per value, so the result differs from the float product by at
//! most `Σ |w|·dx/2` (the tests check that bound against the exact product). The offset term
//! takes the sums of x̂, not of x, as llama.cpp's K-quant dot products do: the error is then
//! `Σ w·(x̂ − x)`, weighted by the centred weights; exact sums of x would weight it by the
//! unsigned `s·q` instead, which measured 2–3 times further from the exact product on the
//! built-in model's layers.
//!
//! Layout, for the kernels' sake: weight rows are unpacked a few at a time into one byte per
//! weight ([`Unpacked`]); x ([`QuantizedX`]) is stored four bytes of a row at a time with the
//! rows interleaved, so that one vector holds the same four positions of 16 (AVX-512) or 8
//! (AVX2) x rows, and a weight's four bytes, broadcast, meet them all in one instruction. The
//! sums for x row `i` then land in lane `i`: the output is computed transposed, `[n, mp]`.

use super::format::{Format, BLOCK, SUPER_BLOCK};
use super::kblocks::{half_at, k_scales_mins, Q4_K_BYTES, Q6_K_BYTES};

/// x rows per kernel pass; [`QuantizedX`] pads m to a multiple of it.
pub const X_TILE: usize = 32;

/// Bytes of one group of four x values across a tile's rows: what separates one group's bytes
/// from the next in [`QuantizedX::q`].
pub(super) const GROUP_BYTES: usize = X_TILE * 4;

/// Weights per unit of `format`, where the integer path covers it (not Q8_0: its signed
/// quants times 8-bit x overflow AVX2's 16-bit pair sums, and its float prefill is fast enough).
pub fn unit_len(format: Format) -> Option<usize> {
    match format {
        Format::Q4_0 | Format::Q4_K => Some(32),
        Format::Q6_K => Some(16),
        Format::Q8_0 => None,
    }
}

/// `x[m, k]` rounded to 8 bits per block of 32, laid out for the kernels, with the sums of the
/// rounded values.
#[derive(Debug)]
pub struct QuantizedX {
    /// m padded to a multiple of [`X_TILE`]; the padding rows are zero.
    pub(super) mp: usize,
    pub(super) k: usize,
    /// `qx[i, e]` at [`q_at(i, e)`](Self::q_at): tiles of [`X_TILE`] rows, each tile the k/4
    /// groups of four in order, each group the tile's rows in order (four bytes each).
    pub(super) q: Vec<u8>,
    /// `d[b·mp + i]`: block b's scale in row i.
    pub(super) d: Vec<f32>,
    /// `sums16[h·mp + i] = Σ x̂[i, 16h..16h + 16]`, x̂ = dx·qx the rounded x.
    pub(super) sums16: Vec<f32>,
    /// `sums32[b·mp + i] = Σ x̂[i, 32b..32b + 32]`.
    pub(super) sums32: Vec<f32>,
}

impl QuantizedX {
    /// `x` is `m` rows of `k` (a multiple of 32), row-major.
    pub fn new(x: &[f32], m: usize, k: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if super::Isa::Avx2.runs_here() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { Self::new_avx2(x, m, k) };
        }
        Self::new_portable(x, m, k)
    }

    /// [`new`](Self::new) without SIMD: the reference the AVX2 rounding is tested against.
    pub(super) fn new_portable(x: &[f32], m: usize, k: usize) -> Self {
        Self::build(x, m, k, |block| {
            let (d, q) = round_block(block);
            let groups = std::array::from_fn(|g| q[4 * g..4 * g + 4].try_into().unwrap());
            let sum = |q: &[u8]| q.iter().map(|&v| i32::from(v as i8)).sum::<i32>() as f32 * d;
            (d, groups, sum(&q[..16]), sum(&q[16..]))
        })
    }

    /// [`build`](Self::build) with each block rounded by AVX2 (the portable loop calls `rintf`
    /// per value and finds the maximum one value at a time: as costly as the kernels).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn new_avx2(x: &[f32], m: usize, k: usize) -> Self {
        Self::build(x, m, k, |block| {
            // SAFETY: 32 values; the CPU has AVX2 and FMA (the caller's).
            let (d, groups, lo, hi) = unsafe { super::int8_x86::round_block(block.as_ptr()) };
            (d, groups.map(i32::to_le_bytes), lo, hi)
        })
    }

    /// Lays out the blocks `round` makes: `(d, q in groups of four, Σ x̂ of 0..16, Σ x̂ of 16..32)`.
    #[inline(always)]
    fn build(
        x: &[f32],
        m: usize,
        k: usize,
        round: impl Fn(&[f32; BLOCK]) -> (f32, [[u8; 4]; 8], f32, f32),
    ) -> Self {
        assert!(
            k.is_multiple_of(BLOCK) && x.len() == m * k,
            "x is m rows of whole blocks"
        );
        let mp = m.next_multiple_of(X_TILE);
        let nb = k / BLOCK;
        let mut out = Self {
            mp,
            k,
            q: vec![0; mp * k],
            d: vec![0.0; nb * mp],
            sums16: vec![0.0; 2 * nb * mp],
            sums32: vec![0.0; nb * mp],
        };
        for i in 0..m {
            for b in 0..nb {
                let block: &[f32; BLOCK] = x[i * k + b * BLOCK..][..BLOCK].try_into().unwrap();
                let (d, groups, lo, hi) = round(block);
                out.d[b * mp + i] = d;
                for (g, four) in groups.iter().enumerate() {
                    let at = out.q_at(i, b * BLOCK + 4 * g);
                    out.q[at..at + 4].copy_from_slice(four);
                }
                out.sums16[2 * b * mp + i] = lo;
                out.sums16[(2 * b + 1) * mp + i] = hi;
                out.sums32[b * mp + i] = lo + hi;
            }
        }
        out
    }

    /// Where `qx[i, e]` is in [`q`](Self::q). A kernel pass over a tile reads one group of
    /// four of every row in one run of [`GROUP_BYTES`], and the groups one after another: x
    /// streams through the caches in order, however many rows the prompt has.
    #[inline(always)]
    pub(super) fn q_at(&self, i: usize, e: usize) -> usize {
        ((i / X_TILE * (self.k / 4) + e / 4) * X_TILE + i % X_TILE) * 4 + e % 4
    }

    /// Rows the output has: m padded to [`X_TILE`].
    pub fn padded_m(&self) -> usize {
        self.mp
    }
}

/// llama.cpp's Q8_0 rounding of one block, with the scale kept in f32: `d = max|x|/127`,
/// `q = round(x/d)`.
#[inline(always)]
fn round_block(x: &[f32; BLOCK]) -> (f32, [u8; BLOCK]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; BLOCK];
    for (o, v) in q.iter_mut().zip(x) {
        *o = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8 as u8;
    }
    (d, q)
}

/// A few weight rows unpacked to one byte per weight, with each unit's `(s, o)`.
#[derive(Debug, Default)]
pub(super) struct Unpacked {
    pub(super) k: usize,
    /// Weights per unit.
    pub(super) l: usize,
    /// `q[a·k + e]`: row a's weight e, 0..64.
    pub(super) q: Vec<u8>,
    /// `s[a·(k/l) + u]`, and `o` alike.
    pub(super) s: Vec<f32>,
    pub(super) o: Vec<f32>,
}

impl Unpacked {
    /// Rows `rows` (each `row_bytes` long) of a `format` matrix with rows of `k` weights.
    pub(super) fn fill(&mut self, format: Format, k: usize, rows: &[u8], row_bytes: usize) {
        #[cfg(target_arch = "x86_64")]
        if super::Isa::Avx2.runs_here() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { self.fill_avx2(format, k, rows, row_bytes) };
        }
        self.unpack(format, k, rows, row_bytes)
    }

    /// [`unpack`](Self::unpack) compiled for AVX2: the nibble loops vectorize 32 bytes wide.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fill_avx2(&mut self, format: Format, k: usize, rows: &[u8], row_bytes: usize) {
        self.unpack(format, k, rows, row_bytes)
    }

    #[inline(always)]
    fn unpack(&mut self, format: Format, k: usize, rows: &[u8], row_bytes: usize) {
        let l = unit_len(format).expect("an integer-path format");
        let count = rows.len() / row_bytes;
        self.k = k;
        self.l = l;
        self.q.resize(count * k, 0);
        self.s.resize(count * k / l, 0.0);
        self.o.resize(count * k / l, 0.0);
        let units = k / l;
        for (a, row) in rows.chunks_exact(row_bytes).enumerate() {
            let q = &mut self.q[a * k..(a + 1) * k];
            let s = &mut self.s[a * units..(a + 1) * units];
            let o = &mut self.o[a * units..(a + 1) * units];
            match format {
                Format::Q4_0 => unpack_q4_0(row, q, s, o),
                Format::Q4_K => unpack_q4_k(row, q, s, o),
                Format::Q6_K => unpack_q6_k(row, q, s, o),
                Format::Q8_0 => unreachable!("checked by unit_len"),
            }
        }
    }

    pub(super) fn rows(&self) -> usize {
        self.q.len() / self.k.max(1)
    }
}

#[inline(always)]
fn unpack_q4_0(row: &[u8], q: &mut [u8], s: &mut [f32], o: &mut [f32]) {
    let blocks = row.chunks_exact(Format::Q4_0.block_bytes());
    for (((block, q), s), o) in blocks.zip(q.chunks_exact_mut(BLOCK)).zip(s).zip(o) {
        let d = half_at(block, 0);
        (*s, *o) = (d, 8.0 * d);
        split_nibbles::<16, 32>(block[2..18].try_into().unwrap(), q.try_into().unwrap());
    }
}

/// Low nibbles of `bytes` then their high nibbles. Fixed sizes, so that the loop vectorizes.
#[inline(always)]
fn split_nibbles<const N: usize, const N2: usize>(bytes: &[u8; N], q: &mut [u8; N2]) {
    for j in 0..N {
        q[j] = bytes[j] & 0x0f;
        q[j + N] = bytes[j] >> 4;
    }
}

#[inline(always)]
fn unpack_q4_k(row: &[u8], q: &mut [u8], s: &mut [f32], o: &mut [f32]) {
    let supers = row
        .chunks_exact(Q4_K_BYTES)
        .zip(q.chunks_exact_mut(SUPER_BLOCK));
    for (n, (b, q)) in supers.enumerate() {
        let (d, dmin) = (half_at(b, 0), half_at(b, 2));
        let (sc, m) = k_scales_mins(&b[4..16]);
        for j in 0..8 {
            // The reference dequantizer's factors, so that s·q − o is its weight.
            s[8 * n + j] = d * f32::from(sc[j]);
            o[8 * n + j] = dmin * f32::from(m[j]);
        }
        for (bytes, q) in b[16..].chunks_exact(32).zip(q.chunks_exact_mut(64)) {
            split_nibbles::<32, 64>(bytes.try_into().unwrap(), q.try_into().unwrap());
        }
    }
}

#[inline(always)]
fn unpack_q6_k(row: &[u8], q: &mut [u8], s: &mut [f32], o: &mut [f32]) {
    let supers = row
        .chunks_exact(Q6_K_BYTES)
        .zip(q.chunks_exact_mut(SUPER_BLOCK));
    for (n, (b, q)) in supers.enumerate() {
        let d = half_at(b, 208);
        for (j, &scale) in b[192..208].iter().enumerate() {
            let ds = d * f32::from(scale as i8);
            s[16 * n + j] = ds;
            o[16 * n + j] = 32.0 * ds;
        }
        // kblocks' layout: per 128-weight half, quarter k of weight l takes the low or high
        // nibble of ql[32·(k mod 2) + l] and bits 2k, 2k + 1 of qh[l].
        for half in 0..2 {
            let ql: &[u8; 64] = b[64 * half..64 * half + 64].try_into().unwrap();
            let qh: &[u8; 32] = b[128 + 32 * half..160 + 32 * half].try_into().unwrap();
            let q: &mut [u8; 128] = (&mut q[128 * half..128 * half + 128]).try_into().unwrap();
            for l in 0..32 {
                q[l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
                q[l + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
                q[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                q[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
    }
}

/// The portable product, the kernels' reference: the same operations in the same order, so
/// their results agree bit for bit. Writes `out_t[a·mp + i]` for every unpacked row `a` and every
/// x row `i` (padding included), plus `bias[a]`.
pub(super) fn rows_scalar(w: &Unpacked, x: &QuantizedX, bias: &[f32], out_t: &mut [f32]) {
    let (k, l, mp) = (w.k, w.l, x.mp);
    let units = k / l;
    for a in 0..w.rows() {
        for i in 0..mp {
            let mut acc = 0.0f32;
            for u in 0..units {
                let e0 = u * l;
                let b = e0 / BLOCK;
                let mut dot = 0i32;
                for e in e0..e0 + l {
                    let qx = x.q[x.q_at(i, e)] as i8;
                    dot += i32::from(w.q[a * k + e]) * i32::from(qx);
                }
                let sum = if l == BLOCK {
                    x.sums32[b * mp + i]
                } else {
                    x.sums16[(e0 / 16) * mp + i]
                };
                acc = (dot as f32).mul_add(x.d[b * mp + i] * w.s[a * units + u], acc);
                acc = (-sum).mul_add(w.o[a * units + u], acc);
            }
            out_t[a * mp + i] = acc + bias[a];
        }
    }
}

/// The kernels of the integer path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 with VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later).
    Vnni,
    /// AVX2 (Haswell, Zen and later; AVX-512 CPUs without VNNI; `THINKBENCH_ISA=avx2`).
    Avx2,
    /// [`rows_scalar`]: the reference, for tests (too slow to beat the float path).
    Portable,
}

impl Kernel {
    /// The fastest this CPU runs, or `None` where the float prefill is faster.
    pub fn detect() -> Option<Kernel> {
        match super::Isa::detect() {
            #[cfg(target_arch = "x86_64")]
            super::Isa::Avx512 if super::int8_x86::vnni_here() => Some(Kernel::Vnni),
            super::Isa::Avx512 | super::Isa::Avx2 => Some(Kernel::Avx2),
            super::Isa::Scalar => None,
        }
    }

    /// Whether this CPU can run it.
    pub fn runs_here(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => super::Isa::Avx512.runs_here() && super::int8_x86::vnni_here(),
            Kernel::Avx2 => super::Isa::Avx2.runs_here(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Vnni => false,
        }
    }
}

/// `out_t[r·mp + i] = Σ_e W[r, e]·x[i, e] (+ bias[r])` for weight rows `rows`, x rounded as
/// [`QuantizedX`] says; `mp` is x's padded row count, and the padding rows' results are
/// written too (as the bias alone).
///
/// # Safety
/// `out_t` addresses `w.n() · x.padded_m()` writable f32s that overlap no input, and no other
/// thread reads or writes rows `rows` of it while this runs.
///
/// # Panics
/// If the format has no integer path, the shapes disagree, or the CPU cannot run `kernel`.
pub unsafe fn rows_on(
    kernel: Kernel,
    w: &super::QuantMatrix,
    x: &QuantizedX,
    bias: Option<&[f32]>,
    out_t: *mut f32,
    rows: std::ops::Range<usize>,
) {
    assert!(
        unit_len(w.format()).is_some(),
        "{} has no integer path",
        w.format().name()
    );
    assert!(w.k() == x.k && rows.end <= w.n(), "shapes");
    assert!(bias.is_none_or(|b| b.len() == w.n()), "bias length");
    assert!(kernel.runs_here(), "this CPU cannot run {kernel:?}");
    let row_bytes = w.bytes().len() / w.n().max(1);
    let mut unpacked = Unpacked::default();
    let mut r = rows.start;
    while r < rows.end {
        let len = GROUP.min(rows.end - r);
        unpacked.fill(
            w.format(),
            w.k(),
            &w.bytes()[r * row_bytes..(r + len) * row_bytes],
            row_bytes,
        );
        let bias = bias.map_or(&NO_BIAS[..len], |b| &b[r..r + len]);
        // SAFETY: rows r..r + len of the output are this call's (the caller's contract).
        let out = unsafe { out_t.add(r * x.mp) };
        match kernel {
            Kernel::Portable => {
                // SAFETY: as above; `len · mp` values.
                let out = unsafe { std::slice::from_raw_parts_mut(out, len * x.mp) };
                rows_scalar(&unpacked, x, bias, out);
            }
            // SAFETY: as above, and the CPU runs the kernel (asserted).
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => unsafe { super::int8_x86::vnni(&unpacked, x, bias, out) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { super::int8_x86::avx2(&unpacked, x, bias, out) },
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Vnni | Kernel::Avx2 => unreachable!("runs_here is false"),
        }
        r += len;
    }
}

/// The bias of a product that has none, for a group of rows.
static NO_BIAS: [f32; GROUP] = [0.0; GROUP];

/// Weight rows unpacked at a time: the AVX-512 tile's height (the AVX2 tile takes them in pairs).
#[cfg(target_arch = "x86_64")]
const GROUP: usize = super::int8_x86::ROWS;
#[cfg(not(target_arch = "x86_64"))]
const GROUP: usize = 4;
