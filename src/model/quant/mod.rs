//! llama.cpp's Q8_0, Q4_0, Q4_K and Q6_K block-quantized weights, and decode products against them.
//!
//! The byte layouts are GGML's, so a GGUF tensor of any of these types is used as it is stored:
//! - Q8_0: blocks of 32 weights, an f16 scale `d` then 32 × i8 `q` (34 bytes); weight = `q·d`.
//! - Q4_0: blocks of 32 weights, an f16 scale `d` then 16 bytes; byte `j` holds element `j` in its
//!   low nibble and element `j + 16` in its high nibble (18 bytes); weight = `(q − 8)·d`.
//! - Q4_K and Q6_K (what llama.cpp's common `Q4_K_M` files hold): super-blocks of 256 weights in
//!   sub-blocks of 32 (Q4_K: a 6-bit scale and min each, 144 bytes) or 16 (Q6_K: an i8 scale
//!   each, 210 bytes); the layouts are in [`kblocks`].
//!
//! A matrix `W[N, K]` (nn.Linear's layout: N output rows of K inputs) is N rows of K /
//! [`Format::block_len`] blocks, so K must be a multiple of 32 (256 for the K formats).
//! [`quantize_row`] and [`dequantize_row`] reproduce the bytes and values of llama.cpp's
//! reference quantizers (checked against gguf-py's by the fixture tests); the K formats have no
//! quantizer here, only GGUF files bring them.
//!
//! Products: `out[i, r] = Σ_k x[i, k] · W[r, k] (+ bias[r])` for a few rows `x[i]` (decode). The
//! activations stay f32, the weights are widened to f32 in registers, and every sum is f32, so the
//! product shows the stored weights exactly as they are; nothing is requantized. [`Activations`]
//! is what every thread shares, prepared once per product; [`matvec_rows`] computes a range of
//! weight rows, for a caller that splits rows across threads (at multiples of [`ROW_TILE`]);
//! [`matvec`] does all rows on the calling thread.
//!
//! Kernels: AVX-512F on x86-64 CPUs that have it ([`Isa::Avx512`]), AVX2 + FMA + F16C on the
//! other x86-64 ones ([`Isa::Avx2`]), a portable scalar loop everywhere else ([`Isa::Scalar`]),
//! picked once by a cached CPU-feature check. `THINKBENCH_ISA=avx2` keeps an AVX-512 machine on
//! the AVX2 kernels (to compare the two in one run), as it does for `gemv/`.
//! Each ISA has one set of loops for all four formats (`x86` for AVX2, `avx512`), with the K
//! formats' super-block arithmetic apart (`x86_k`, `avx512_k`).
//!
//! [`int8`] is the one exception to "nothing is requantized": the integer prefill
//! (`--prefill int8`), which rounds a prompt's activations to 8 bits as llama.cpp does.

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_k;
pub mod float_gemm;
#[cfg(target_arch = "x86_64")]
mod float_gemm_x86;
mod format;
pub mod int8;
#[cfg(target_arch = "x86_64")]
mod int8_x86;
pub mod kblocks;
#[cfg(target_arch = "x86_64")]
mod prefetch;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_dequant;
#[cfg(target_arch = "x86_64")]
mod x86_k;

#[cfg(test)]
mod float_gemm_tests;
#[cfg(test)]
pub(crate) mod int8_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

pub use format::{dequantize_row, quantize, quantize_row, Format, BLOCK, SUPER_BLOCK};

/// Weight rows the kernels take together: a caller splitting rows across threads does best to
/// cut at multiples of this (rows left over at the end of a range run one by one).
pub const ROW_TILE: usize = 4;

/// What a quantized matrix, an activation batch or a buffer got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantError {
    /// A row length (K) that is not a whole number of the format's blocks (of `block` weights).
    NotWholeBlocks { k: usize, block: usize },
    /// A format with no quantizer (the K formats: they come only from GGUF files).
    NoQuantizer(Format),
    /// A buffer or shape whose size disagrees with the others.
    Size {
        what: &'static str,
        expected: usize,
        got: usize,
    },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotWholeBlocks { k, block } => {
                write!(
                    f,
                    "row length {k} is not a multiple of the block size {block}"
                )
            }
            Self::NoQuantizer(format) => write!(
                f,
                "{} has no quantizer here (K-format weights come only from GGUF files); \
                 use q8_0 or q4_0",
                format.name()
            ),
            Self::Size {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected {expected}, got {got}"),
        }
    }
}

impl std::error::Error for QuantError {}

/// A borrowed quantized matrix `W[N, K]`: N rows of K / `block_len` blocks, row after row.
#[derive(Clone, Copy, Debug)]
pub struct QuantMatrix<'a> {
    format: Format,
    n: usize,
    k: usize,
    bytes: &'a [u8],
}

impl<'a> QuantMatrix<'a> {
    /// Wraps `bytes` (a GGUF tensor's data, or [`quantize`]'s output) as an `n × k` matrix.
    pub fn new(format: Format, n: usize, k: usize, bytes: &'a [u8]) -> Result<Self, QuantError> {
        let expected = format.row_bytes(k)? * n;
        if bytes.len() != expected {
            return Err(QuantError::Size {
                what: "quantized matrix bytes",
                expected,
                got: bytes.len(),
            });
        }
        Ok(Self {
            format,
            n,
            k,
            bytes,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Rows (output features).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns (input features).
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The bytes of row `r`.
    ///
    /// # Panics
    /// If `r >= n`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let len = self.k / self.format.block_len() * self.format.block_bytes();
        &self.bytes[r * len..(r + 1) * len]
    }

    /// The whole matrix as f32, row-major `[N, K]` (for paths that want a plain tensor).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.n * self.k];
        dequantize_row(self.format, self.bytes, &mut out).expect("sizes checked by new");
        out
    }
}

/// The f32 activations `x[M, K]` of one product, prepared once and then read by every thread.
///
/// Besides `x` itself it holds, where the AVX2 and AVX-512 kernels run, their own copy of `x`
/// laid out block by block and the sums of its blocks (see `x86::Staged`).
#[derive(Debug)]
pub struct Activations<'a> {
    x: &'a [f32],
    m: usize,
    k: usize,
    /// Empty where neither the AVX2 nor the AVX-512 kernels run.
    #[cfg(target_arch = "x86_64")]
    staged: x86::Staged,
}

impl<'a> Activations<'a> {
    /// `x` is `m` rows of `k`, row-major.
    pub fn new(x: &'a [f32], m: usize, k: usize) -> Result<Self, QuantError> {
        // 32 divides every format's block; `check` asks for the weight's own block length.
        if !k.is_multiple_of(BLOCK) {
            return Err(QuantError::NotWholeBlocks { k, block: BLOCK });
        }
        if x.len() != m * k {
            return Err(QuantError::Size {
                what: "activations (m·k)",
                expected: m * k,
                got: x.len(),
            });
        }
        Ok(Self {
            x,
            m,
            k,
            #[cfg(target_arch = "x86_64")]
            staged: if Isa::Avx2.runs_here() {
                x86::Staged::new(x, m, k)
            } else {
                x86::Staged::default()
            },
        })
    }

    /// Rows of x.
    pub fn m(&self) -> usize {
        self.m
    }

    pub fn k(&self) -> usize {
        self.k
    }
}

/// [`dequantize_row`]'s values, bit for bit, with AVX2 where the CPU has it (the prefill path
/// widens every weight of a layer once per prompt; the portable loop would cost half as much as
/// the matrix product that follows). `bytes` are whole blocks, `out` their weights.
pub fn dequantize_fast(format: Format, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    dequantize_on(Isa::detect(), format, bytes, out)
}

/// [`dequantize_fast`] by `isa`'s instructions (the portable reference for `Scalar`).
///
/// # Panics
/// If this CPU cannot run `isa`.
pub(super) fn dequantize_on(
    isa: Isa,
    format: Format,
    bytes: &[u8],
    out: &mut [f32],
) -> Result<(), QuantError> {
    assert!(isa.runs_here(), "this CPU cannot run {isa:?}");
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        let expected = out.len() / format.block_len() * format.block_bytes();
        if !out.len().is_multiple_of(format.block_len()) || bytes.len() != expected {
            // The reference states the mismatch.
            return dequantize_row(format, bytes, out);
        }
        // SAFETY: whole blocks, `out` sized to them (checked above); the CPU runs `isa`.
        unsafe { x86_dequant::dequantize(isa, format, bytes, out) };
        return Ok(());
    }
    dequantize_row(format, bytes, out)
}

/// The instruction sets the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512F besides AVX2, FMA and F16C (Skylake-SP, Zen 4 and later).
    Avx512,
    /// x86-64 with AVX2, FMA and F16C (Haswell, Zen and later).
    Avx2,
    /// Portable Rust, for every other CPU.
    Scalar,
}

impl Isa {
    /// The best one this CPU runs, detected once per process; AVX2 at most where
    /// `THINKBENCH_ISA=avx2` is set.
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let cap = crate::model::cpu::capped_at_avx2();
            [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .filter(|&isa| !(cap && isa == Isa::Avx512))
                .find(|isa| isa.runs_here())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// Whether this CPU can run the kernels for `self`, whatever `THINKBENCH_ISA` says.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        let avx2 = || {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        };
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx2() && is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }
}

/// `out[i·n + r] = Σ_k x[i, k]·W[r, k] (+ bias[r])` for every row `r` of `w`, on this thread.
/// `out` is `[M, N]`, row-major.
pub fn matvec(
    w: &QuantMatrix,
    x: &Activations,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    check(w, x, bias)?;
    if out.len() != x.m * w.n {
        return Err(QuantError::Size {
            what: "output (m·n)",
            expected: x.m * w.n,
            got: out.len(),
        });
    }
    // SAFETY: `out` holds m·n elements and is borrowed exclusively for the call.
    unsafe { matvec_rows(w, x, bias, out.as_mut_ptr(), 0..w.n) };
    Ok(())
}

/// Checks that `w`, `x` and `bias` fit together, once per product (not per thread).
pub fn check(w: &QuantMatrix, x: &Activations, bias: Option<&[f32]>) -> Result<(), QuantError> {
    if x.k != w.k {
        return Err(QuantError::Size {
            what: "activations' row length (k)",
            expected: w.k,
            got: x.k,
        });
    }
    // Implied by the two row lengths being equal (`QuantMatrix::new` checked the weight's), but
    // the K kernels rely on it, so it is said here where every product passes.
    if !x.k.is_multiple_of(w.format.block_len()) {
        return Err(QuantError::NotWholeBlocks {
            k: x.k,
            block: w.format.block_len(),
        });
    }
    match bias {
        Some(b) if b.len() != w.n => Err(QuantError::Size {
            what: "bias (n)",
            expected: w.n,
            got: b.len(),
        }),
        _ => Ok(()),
    }
}

/// [`matvec`] for the weight rows in `rows` only: writes `out[i·n + r]` for every x row `i` and
/// every `r` in `rows`, and nothing else. A caller splits `0..n` into disjoint ranges, one per
/// thread, all sharing `w`, `x` and `bias` read-only. Uses [`Isa::detect`]'s kernels.
///
/// # Safety
/// `out` points to `m·n` writable f32s (`m = x.m()`, `n = w.n()`) that overlap none of the
/// inputs, and no other thread reads or writes the elements this call writes while it runs.
///
/// # Panics
/// If [`check`] fails or `rows` is not inside `0..n`.
pub unsafe fn matvec_rows(
    w: &QuantMatrix,
    x: &Activations,
    bias: Option<&[f32]>,
    out: *mut f32,
    rows: Range<usize>,
) {
    // SAFETY: forwarded from the caller; the detected ISA runs on this CPU.
    unsafe { matvec_rows_on(Isa::detect(), w, x, bias, out, rows) }
}

/// [`matvec_rows`] with a chosen instruction set (to compare kernels, or force the scalar one).
///
/// # Safety
/// As for [`matvec_rows`].
///
/// # Panics
/// As for [`matvec_rows`], and if this CPU cannot run `isa`.
pub unsafe fn matvec_rows_on(
    isa: Isa,
    w: &QuantMatrix,
    x: &Activations,
    bias: Option<&[f32]>,
    out: *mut f32,
    rows: Range<usize>,
) {
    if let Err(e) = check(w, x, bias) {
        panic!("quant::matvec_rows: {e}");
    }
    assert!(
        rows.start <= rows.end && rows.end <= w.n,
        "rows {rows:?} outside 0..{}",
        w.n
    );
    if x.m == 0 || rows.is_empty() {
        return;
    }
    let job = Job { w, x, bias, out };
    match isa {
        Isa::Scalar => {
            // SAFETY: forwarded from the caller; the shapes were checked above.
            unsafe { scalar::rows(&job, rows) }
        }
        Isa::Avx2 => {
            assert!(isa.runs_here(), "this CPU lacks AVX2, FMA or F16C");
            // SAFETY: forwarded from the caller; the shapes were checked above and the CPU has
            // the features the kernels are compiled for (asserted just now).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::rows(&job, rows)
            }
        }
        Isa::Avx512 => {
            assert!(
                isa.runs_here(),
                "this CPU lacks AVX-512F, AVX2, FMA or F16C"
            );
            // SAFETY: as for AVX2; the CPU has AVX-512F as well (asserted just now).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx512::rows(&job, rows)
            }
        }
    }
}

/// One product's operands, as the kernels take them. Invariants (checked by `matvec_rows_on`):
/// `x.k == w.k`, `bias` has `w.n` elements, `out` addresses `x.m · w.n` f32s.
struct Job<'a> {
    w: &'a QuantMatrix<'a>,
    x: &'a Activations<'a>,
    bias: Option<&'a [f32]>,
    out: *mut f32,
}

impl Job<'_> {
    fn bias(&self, r: usize) -> f32 {
        self.bias.map_or(0.0, |b| b[r])
    }

    /// Writes `out[i, r]`.
    ///
    /// # Safety
    /// `i < m`, `r < n`, and the element is this call's to write (see [`matvec_rows`]).
    unsafe fn store(&self, i: usize, r: usize, v: f32) {
        // SAFETY: in bounds by the caller's indices and the Job invariants.
        unsafe { *self.out.add(i * self.w.n + r) = v }
    }
}
