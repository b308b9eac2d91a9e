//! Linear layers whose weights are stored block-quantized in llama.cpp's layouts (`--quant q8_0 |
//! q4_0`, or a GGUF file's own Q8_0 / Q4_0 / Q4_K / Q6_K tensors): the tensor side of
//! [`super::quant`].
//!
//! The stored bytes are the model. Activations stay f32: a decode product (a few rows) runs the
//! quantized kernels on libtorch's threads; a longer one (prefill) runs our float kernels
//! ([`super::tiled`]), which dequantize the weight a panel at a time into L1 (where the CPU has no
//! AVX2, a cache-sized tile of rows at a time for libtorch's f32 GEMM). Either way every weight
//! is exactly its stored value, so what the inspectors show is the quantized model itself.
//! [`Prefill::Int8`] (`--prefill int8`) trades that for speed on the prompt alone: its products
//! against 4- and 6-bit weights round the activations to 8 bits, as llama.cpp does.

use std::ops::Range;

use tch::{Device, Kind, Tensor};

use super::block_store::{BlockStore, WeightBytes};
use super::gemv;
use super::quant::float_gemm::Weights;
use super::quant::{self, int8, Activations, Format, QuantMatrix};
use super::tiled::{self, OutPtr};
use super::ModelError;

/// Rows of `x` up to which the decode kernels run; beyond, the prefill products win (they widen
/// each weight once for all rows, where the kernels' cost grows with each row).
const MAX_ROWS: usize = 16;

/// Bytes of f32 weights one step of a long product dequantizes: a few MB, which stays in the
/// last-level cache until the GEMM reads it. Measured on the 1.5B shape's 64-token prefill
/// (Xeon, AVX-512, one thread): 8 MB and at least 128 rows prefill at 37.4 tok/s (Q4_0), 1 MB
/// and 16 rows at 33.1, a whole layer (64 MB) at 33.1. Small tiles lose to the GEMM's cost per
/// call (29 rows of the MLP's down projection ran libtorch's GEMM at 60% of its speed on 512).
const PREFILL_TILE_BYTES: usize = 8 << 20;

/// Rows per step at least, however long the rows (see [`PREFILL_TILE_BYTES`]).
const PREFILL_TILE_MIN_ROWS: usize = 128;

/// A quantized `[n, k]` weight (nn.Linear's layout), owning its bytes.
pub struct QuantWeight {
    format: Format,
    n: usize,
    k: usize,
    bytes: WeightBytes,
}

impl QuantWeight {
    /// Quantizes a float `[n, k]` weight (any float kind, any device) row by row.
    pub fn quantize(w: &Tensor, format: Format, name: &str) -> Result<Self, ModelError> {
        let bad = |msg: String| ModelError::WrongShape {
            name: name.into(),
            msg,
        };
        let (n, k) = w.size2().map_err(|_| {
            bad(format!(
                "a quantized weight must be a matrix, got shape {:?}",
                w.size()
            ))
        })?;
        let (n, k) = (n as usize, k as usize);
        let cannot =
            |e: quant::QuantError| bad(format!("cannot quantize to {}: {e}", format.name()));
        let row_bytes = format.row_bytes(k).map_err(cannot)?;
        if format.is_k() {
            return Err(cannot(quant::QuantError::NoQuantizer(format)));
        }
        let w = w.detach().to_device(Device::Cpu).contiguous();
        let mut bytes = vec![0u8; n * row_bytes];
        match w.kind() {
            Kind::BFloat16 => quantize_rows::<half::bf16>(&w, format, k, &mut bytes),
            Kind::Half => quantize_rows::<half::f16>(&w, format, k, &mut bytes),
            Kind::Float => quantize_rows::<f32>(&w, format, k, &mut bytes),
            _ => quantize_rows::<f32>(&w.to_kind(Kind::Float), format, k, &mut bytes),
        }
        Self::from_bytes(format, n, k, bytes, name)
    }

    /// Wraps stored blocks (a GGUF tensor's data): `n` rows of `k / format.block_len()` blocks.
    pub fn from_bytes(
        format: Format,
        n: usize,
        k: usize,
        bytes: Vec<u8>,
        name: &str,
    ) -> Result<Self, ModelError> {
        QuantMatrix::new(format, n, k, &bytes).map_err(|e| ModelError::WrongShape {
            name: name.into(),
            msg: format!("{} [{n}, {k}]: {e}", format.name()),
        })?;
        Ok(Self {
            format,
            n,
            k,
            bytes: WeightBytes::Own(bytes),
        })
    }

    /// The same weight with its bytes moved into `store`'s shared chunks (what the loader does
    /// with every matrix: see [`BlockStore`] for why).
    pub fn kept_in(self, store: &BlockStore) -> Self {
        Self {
            bytes: store.keep(&self.bytes),
            ..self
        }
    }

    fn matrix(&self) -> QuantMatrix<'_> {
        QuantMatrix::new(self.format, self.n, self.k, &self.bytes).expect("checked when built")
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// `[n, k]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.n, self.k]
    }

    /// Bytes the weight occupies (and a decode step reads).
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// `x.linear(W, bias)` with `x` of any float kind on the CPU; the result has `x`'s kind.
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let bias = bias.map(|b| b.to_kind(Kind::Float).contiguous());
        tiled::as_f32_rows(x, self.n, self.k, |xf, m| {
            if m <= MAX_ROWS {
                self.decode(xf, m, bias.as_ref())
            } else {
                self.prefill(xf, m, bias.as_ref())
            }
        })
    }

    /// The quantized kernels over `m` rows of contiguous f32 `x`: `[m, n]` f32.
    fn decode(&self, x: &Tensor, m: usize, bias: Option<&Tensor>) -> Tensor {
        // SAFETY (both slices): contiguous f32 CPU tensors owned by this call; nothing writes them.
        let xs: &[f32] = unsafe { gemv::cpu_slice(x) }.expect("contiguous f32 CPU activations");
        let bs: Option<&[f32]> = bias.map(|b| unsafe { gemv::cpu_slice(b) }.expect("f32 bias"));
        let acts = Activations::new(xs, m, self.k).expect("x's rows are k long");
        let w = self.matrix();
        quant::check(&w, &acts, bs).expect("shapes checked when loaded");
        let out = Tensor::empty([m as i64, self.n as i64], (Kind::Float, Device::Cpu));
        let dst = OutPtr(out.data_ptr() as *mut f32);
        let rows = |r: Range<usize>| {
            // SAFETY: `out` is a fresh [m, n] f32 tensor alive until this product returns; the
            // shapes were checked above; `parallel_rows` hands each row range to one thread, and
            // the kernel writes only the columns of its rows.
            unsafe { quant::matvec_rows(&w, &acts, bs, dst.get(), r) }
        };
        gemv::parallel_rows(self.n, self.bytes.len(), &rows);
        out
    }

    /// A long product (prefill) over `m` rows of contiguous f32 `x`: `[m, n]` f32. With
    /// `--prefill int8`, 4- and 6-bit weights run the integer kernels where the CPU has AVX2
    /// (llama.cpp's way, and under half the float path's time); otherwise our float kernels
    /// where the CPU has AVX2, libtorch's GEMM elsewhere.
    fn prefill(&self, x: &Tensor, m: usize, bias: Option<&Tensor>) -> Tensor {
        if let Some(kernel) = integer_prefill(self.format) {
            return self.prefill_int8(kernel, x, m, bias);
        }
        match tiled::kernel() {
            Some(kernel) => tiled::product(kernel, Weights::Quant(self.matrix()), x, m, bias),
            None => self.prefill_float(x, m, bias),
        }
    }

    /// [`prefill`](Self::prefill) by 8-bit integer dot products (`quant::int8`): x rounded to
    /// 8 bits per block of 32, as llama.cpp does, the weights as stored.
    fn prefill_int8(
        &self,
        kernel: int8::Kernel,
        x: &Tensor,
        m: usize,
        bias: Option<&Tensor>,
    ) -> Tensor {
        // SAFETY (both slices): contiguous f32 CPU tensors owned by this call; nothing writes them.
        let xs: &[f32] = unsafe { gemv::cpu_slice(x) }.expect("contiguous f32 CPU activations");
        let bs: Option<&[f32]> = bias.map(|b| unsafe { gemv::cpu_slice(b) }.expect("f32 bias"));
        let xq = int8::QuantizedX::new(xs, m, self.k);
        let w = self.matrix();
        tiled::transposed_product(self.n, xq.padded_m(), m, 1, self.k, &|rows, out_t| {
            // SAFETY: `out_t` is `transposed_product`'s [n, mp] output, and these rows are this
            // call's alone.
            unsafe { int8::rows_on(kernel, &w, &xq, bs, out_t, rows) }
        })
        .contiguous()
    }

    /// [`prefill`](Self::prefill) in f32 where our kernels do not run: the weight dequantized a
    /// tile of rows at a time into one buffer that stays in cache, each tile multiplied by
    /// libtorch's f32 GEMM while it is still there (a whole layer in f32, 55 MB for one MLP
    /// matrix of the 1.5B model, would go out to memory and back instead).
    fn prefill_float(&self, x: &Tensor, m: usize, bias: Option<&Tensor>) -> Tensor {
        let tile = (PREFILL_TILE_BYTES / (self.k * 4))
            .max(PREFILL_TILE_MIN_ROWS)
            .min(self.n.max(1));
        let f32_cpu = (Kind::Float, Device::Cpu);
        // Computed transposed, so that each tile's results are whole rows of the output.
        let y_t = Tensor::empty([self.n as i64, m as i64], f32_cpu);
        let buf = Tensor::empty([tile as i64, self.k as i64], f32_cpu);
        let x_t = x.tr();
        for r0 in (0..self.n).step_by(tile) {
            let len = tile.min(self.n - r0);
            // SAFETY: `buf` is a fresh [tile, k] f32 tensor that nothing else uses, and
            // `len <= tile` rows of it are written.
            unsafe { self.dequantize_rows(r0..r0 + len, buf.data_ptr() as *mut f32) };
            let w = buf.narrow(0, 0, len as i64);
            let _ = w.mm_out(&y_t.narrow(0, r0 as i64, len as i64), &x_t);
        }
        let y = y_t.tr();
        match bias {
            Some(b) => y + b,
            None => y.contiguous(),
        }
    }

    /// Dequantizes weight rows `rows` into `dst` (row `rows.start` first), rows in parallel.
    ///
    /// # Safety
    /// `dst` points to `rows.len() · k` writable f32s that nothing else reads or writes meanwhile.
    unsafe fn dequantize_rows(&self, rows: Range<usize>, dst: *mut f32) {
        let dst = OutPtr(dst);
        let w = self.matrix();
        let first = rows.start;
        let part = |r: Range<usize>| {
            let (row0, len) = (r.start, r.len());
            // SAFETY: each call gets rows no other call gets, inside the caller's buffer.
            let o = unsafe {
                std::slice::from_raw_parts_mut(dst.get().add((row0 - first) * self.k), len * self.k)
            };
            let bytes = &w.bytes()[row0 * self.row_bytes()..(row0 + len) * self.row_bytes()];
            quant::dequantize_fast(self.format, bytes, o).expect("whole rows");
        };
        // Worth a second thread by the f32 bytes written, not the blocks read.
        let (n, bytes) = (rows.len(), rows.len() * self.k * 4);
        gemv::parallel_rows(n, bytes, &|r: Range<usize>| {
            part(r.start + first..r.end + first)
        });
    }

    fn row_bytes(&self) -> usize {
        self.bytes.len() / self.n.max(1)
    }
}

/// Quantizes the `[n, k]` rows of contiguous CPU `w` (of kind `T`) into `out` (n rows of
/// `format.row_bytes(k)`), rows in parallel, each widened to f32 one at a time: a 16-bit matrix is
/// never held whole in f32 (the head of a 100k vocabulary would be 0.8 GB more at the peak).
fn quantize_rows<T: gemv::Scalar>(w: &Tensor, format: Format, k: usize, out: &mut [u8]) {
    // SAFETY: `w` is a contiguous CPU tensor of `T` (made so by the caller) that nothing writes.
    let src: &[T] = unsafe { gemv::cpu_slice(w) }.expect("contiguous CPU weight of its own kind");
    let n = src.len() / k.max(1);
    let row_bytes = out.len() / n.max(1);
    let dst = BytePtr(out.as_mut_ptr());
    let rows = |r: Range<usize>| {
        let mut row = vec![0f32; k];
        for i in r {
            for (v, x) in row.iter_mut().zip(&src[i * k..(i + 1) * k]) {
                *v = x.to_f32();
            }
            // SAFETY: each call gets rows no other call gets, inside `out`.
            let o =
                unsafe { std::slice::from_raw_parts_mut(dst.get().add(i * row_bytes), row_bytes) };
            quant::quantize_row(format, &row, o).expect("sizes and format checked by the caller");
        }
    };
    gemv::parallel_rows(n, n * k * 4, &rows);
}

/// How long products (a prompt's rows) against 4- and 6-bit weights are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefill {
    /// In f32 against the dequantized weights: the stored model exactly, as decode computes it
    /// (what the inspectors and the parity tests expect). The default.
    Exact,
    /// llama.cpp's way: the prompt's activations rounded to 8 bits per block of 32 and
    /// multiplied by integer dot products (`quant::int8`), where the CPU has AVX2; about twice
    /// as fast, and the prompt's log-probabilities move by a few hundredths of a nat.
    Int8,
}

impl Prefill {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exact" => Some(Prefill::Exact),
            "int8" => Some(Prefill::Int8),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Prefill::Exact => "exact",
            Prefill::Int8 => "int8",
        }
    }
}

/// The process's prefill (`--prefill`): whether it is [`Prefill::Int8`].
static INT8_PREFILL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    /// Set while [`with_prefill`] runs its closure on this thread.
    static PREFILL_HERE: std::cell::Cell<Option<Prefill>> = const { std::cell::Cell::new(None) };
}

/// Sets how every long product of this process is computed (`--prefill`).
pub fn set_prefill(p: Prefill) {
    INT8_PREFILL.store(p == Prefill::Int8, std::sync::atomic::Ordering::Relaxed);
}

/// The prefill this thread computes with now.
pub fn prefill_mode() -> Prefill {
    PREFILL_HERE
        .get()
        .unwrap_or(if INT8_PREFILL.load(std::sync::atomic::Ordering::Relaxed) {
            Prefill::Int8
        } else {
            Prefill::Exact
        })
}

/// Runs `f` with the long products on this thread computed as `p` says, whatever the process's
/// setting: for comparing the two on one model while other threads run (tests). A forward pass
/// runs its products on the thread that calls it, so this covers a whole generation.
pub fn with_prefill<R>(p: Prefill, f: impl FnOnce() -> R) -> R {
    // Restored on unwind too: a failed test must not leave its thread changed for the next.
    struct Restore(Option<Prefill>);
    impl Drop for Restore {
        fn drop(&mut self) {
            PREFILL_HERE.set(self.0);
        }
    }
    let _restore = Restore(PREFILL_HERE.replace(Some(p)));
    f()
}

/// The integer kernel a long product against `format` runs, if any: with [`Prefill::Int8`],
/// for Q4_0, Q4_K and Q6_K (Q8_0's float prefill keeps up), where the CPU has AVX2.
fn integer_prefill(format: Format) -> Option<int8::Kernel> {
    int8::unit_len(format)?;
    match prefill_mode() {
        Prefill::Exact => None,
        Prefill::Int8 => int8::Kernel::detect(),
    }
}

/// The quantized output's base pointer, shared by the threads that write its disjoint rows.
#[derive(Clone, Copy)]
struct BytePtr(*mut u8);

impl BytePtr {
    fn get(self) -> *mut u8 {
        self.0
    }
}

// SAFETY: every thread writes a disjoint set of rows through it (see `quantize_rows`).
unsafe impl Sync for BytePtr {}
unsafe impl Send for BytePtr {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path (kernels for few rows; for many, our float kernels, the integer ones, and
    /// dequantize + libtorch's GEMM) against an independent reference: the dequantized weight
    /// (`quant::dequantize_row`, checked against gguf-py) through libtorch's f32 linear, in f32
    /// and bf16 activations. At k = 8192 a long product takes two tiles of rows (256 and 44) on
    /// the libtorch path and 32 panels of columns on ours, at k = 96 one.
    #[test]
    fn forward_matches_the_dequantized_weight() {
        tch::manual_seed(3);
        let _g = tch::no_grad_guard();
        let cases = [Format::Q8_0, Format::Q4_0]
            .into_iter()
            .flat_map(|f| [(f, 70i64, 96i64), (f, 300, 8192)]);
        for (format, n, k) in cases {
            let w = Tensor::randn([n, k], (Kind::Float, Device::Cpu));
            let q = QuantWeight::quantize(&w, format, "w").unwrap();
            let mut deq = vec![0f32; (n * k) as usize];
            quant::dequantize_row(format, &q.bytes, &mut deq).unwrap();
            let reference_w = Tensor::from_slice(&deq).view([n, k]);
            let bias = Tensor::randn([n], (Kind::Float, Device::Cpu));
            for rows in [1i64, 3, 16, 17, 40] {
                for kind in [Kind::Float, Kind::BFloat16] {
                    let x = Tensor::randn([rows, k], (Kind::Float, Device::Cpu)).to_kind(kind);
                    let want = x
                        .to_kind(Kind::Float)
                        .linear(&reference_w, Some(&bias.to_kind(kind).to_kind(Kind::Float)));
                    // f32: summation order only, which grows with the sum of the terms'
                    // magnitudes (a wrong block would be off by whole terms, thousands of
                    // times more); bf16: one rounding of the output (half an ulp, 2^-9
                    // relative) on top.
                    let magnitudes = x
                        .to_kind(Kind::Float)
                        .abs()
                        .linear::<Tensor>(&reference_w.abs(), None);
                    let rel = if kind == Kind::Float {
                        0.0
                    } else {
                        1.0 / 256.0
                    };
                    let exact_tol = want.abs() * rel + magnitudes * 1e-5 + 1e-5;
                    for mode in [Prefill::Exact, Prefill::Int8] {
                        let y = with_prefill(mode, || q.forward(&x, Some(&bias.to_kind(kind))));
                        assert_eq!(y.size(), [rows, n]);
                        assert_eq!(y.kind(), kind);
                        let tol = &exact_tol + rounding(mode, &q, &x);
                        let err = (y.to_kind(Kind::Float) - &want).abs();
                        let bad = err.gt_tensor(&tol).sum(Kind::Int64).int64_value(&[]);
                        assert_eq!(
                            bad,
                            0,
                            "{format:?} rows={rows} {kind:?} {mode:?}: max err {}",
                            err.max().double_value(&[])
                        );
                    }
                    // The libtorch GEMM path, which CPUs without AVX2 take for a long product.
                    if rows as usize > MAX_ROWS {
                        let xf = x.to_kind(Kind::Float).contiguous();
                        let b = bias.to_kind(kind).to_kind(Kind::Float);
                        let y = q.prefill_float(&xf, rows as usize, Some(&b));
                        let err = (y - &want).abs();
                        let bad = err.gt_tensor(&exact_tol).sum(Kind::Int64).int64_value(&[]);
                        assert_eq!(bad, 0, "{format:?} rows={rows} {kind:?}: libtorch path");
                    }
                }
            }
        }
    }

    /// What the integer prefill may add to the exact product's error, `[rows, n]` (x's
    /// rounding to 8 bits: `quant::int8`'s own tests check it to this bound); zero where
    /// `forward` takes an exact path in `mode`.
    fn rounding(mode: Prefill, q: &QuantWeight, x: &Tensor) -> Tensor {
        let (rows, n) = (x.size()[0], q.n as i64);
        let integer = with_prefill(mode, || integer_prefill(q.format)).is_some();
        if rows as usize <= MAX_ROWS || !integer {
            return Tensor::zeros([rows, n], (Kind::Float, Device::Cpu));
        }
        let xs = Vec::<f32>::try_from(x.to_kind(Kind::Float).flatten(0, -1)).unwrap();
        let tol = quant::int8_tests::rounding_tolerance(&q.matrix(), &xs, rows as usize);
        Tensor::from_slice(&tol)
            .view([rows, n])
            .to_kind(Kind::Float)
    }

    /// The K formats, which only GGUF files bring: random super-blocks (every quant and scale
    /// byte; finite f16 scales) through both paths against the dequantized weight in libtorch.
    #[test]
    fn k_formats_forward_matches_the_dequantized_weight() {
        tch::manual_seed(4);
        let _g = tch::no_grad_guard();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut byte = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        for format in [Format::Q4_K, Format::Q6_K] {
            let (n, k) = (70usize, 512usize);
            let mut bytes: Vec<u8> = (0..n * format.row_bytes(k).unwrap())
                .map(|_| byte())
                .collect();
            for block in bytes.chunks_exact_mut(format.block_bytes()) {
                let at: &[usize] = if format == Format::Q4_K {
                    &[0, 2]
                } else {
                    &[208]
                };
                for &p in at {
                    let d = (f32::from(byte()) - 128.0) / 16384.0;
                    block[p..p + 2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
                }
            }
            let mut deq = vec![0f32; n * k];
            quant::dequantize_row(format, &bytes, &mut deq).unwrap();
            let reference_w = Tensor::from_slice(&deq).view([n as i64, k as i64]);
            let q = QuantWeight::from_bytes(format, n, k, bytes, "w").unwrap();
            assert_eq!(q.shape(), [n, k]);
            let bias = Tensor::randn([n as i64], (Kind::Float, Device::Cpu));
            for rows in [1i64, 2, 5, 16, 17, 40] {
                let x = Tensor::randn([rows, k as i64], (Kind::Float, Device::Cpu));
                let want = x.linear(&reference_w, Some(&bias));
                let exact_tol = want.abs() * 1e-5 + 1e-3;
                for mode in [Prefill::Exact, Prefill::Int8] {
                    let y = with_prefill(mode, || q.forward(&x, Some(&bias)));
                    let tol = &exact_tol + rounding(mode, &q, &x);
                    let err = (&y - &want).abs();
                    let bad = err.gt_tensor(&tol).sum(Kind::Int64).int64_value(&[]);
                    assert_eq!(
                        bad,
                        0,
                        "{format:?} rows={rows} {mode:?}: max err {}",
                        err.max().double_value(&[])
                    );
                }
            }
        }
    }

    /// Quantizing at load widens a 16-bit matrix a row at a time, on several threads: the bytes
    /// must be exactly what the reference quantizer (checked against gguf-py) gives for the whole
    /// matrix widened to f32 at once.
    #[test]
    fn quantizing_a_16_bit_matrix_row_by_row_gives_the_reference_bytes() {
        tch::manual_seed(5);
        let w = Tensor::randn([300, 1024], (Kind::Float, Device::Cpu));
        for kind in [Kind::BFloat16, Kind::Half, Kind::Float] {
            let w = w.to_kind(kind);
            let values = Vec::<f32>::try_from(w.to_kind(Kind::Float).reshape([-1])).unwrap();
            for format in [Format::Q8_0, Format::Q4_0] {
                let q = QuantWeight::quantize(&w, format, "w").unwrap();
                let want = quant::quantize(format, &values).unwrap();
                assert!(*q.bytes == want[..], "{kind:?} {format:?}");
            }
        }
        let e = QuantWeight::quantize(&w, Format::Q4_K, "model.layers.0.mlp.up_proj.weight")
            .err()
            .expect("no K quantizer");
        assert!(
            e.to_string().contains("up_proj") && e.to_string().contains("Q4_K"),
            "{e}"
        );
    }

    #[test]
    fn refuses_rows_that_are_not_whole_blocks() {
        let w = Tensor::randn([4, 40], (Kind::Float, Device::Cpu));
        let e = QuantWeight::quantize(&w, Format::Q8_0, "model.layers.0.mlp.up_proj.weight")
            .err()
            .expect("k = 40 is not a multiple of 32");
        assert!(
            e.to_string().contains("model.layers.0.mlp.up_proj.weight"),
            "{e}"
        );
    }
}
