//! Long products (a prompt's rows) by our float kernels, `quant::float_gemm`: the tensor side,
//! shared by block-quantized layers ([`super::qlinear`]) and 16-bit ones ([`super::layers`]).
//! Every weight is widened exactly and every sum is f32, as libtorch's GEMM would compute it on a
//! widened copy, but a panel at a time in L1 and at 1.2–1.7 times its speed at a prompt's shapes
//! (`cargo bench --bench gemv -- 8`).

use std::ops::Range;

use tch::{Device, Kind, Tensor};

use super::gemv;
use super::quant::float_gemm::{self, Kernel, PackedX, Weights};

/// The kernel this CPU runs, or `None` where libtorch's GEMM is the float path (no AVX2).
pub fn kernel() -> Option<Kernel> {
    Kernel::detect()
}

/// `x · Wᵀ (+ bias)` for `m` rows of contiguous f32 CPU `x` (`[m, k]`): `[m, n]` f32.
pub fn product(kernel: Kernel, w: Weights, x: &Tensor, m: usize, bias: Option<&Tensor>) -> Tensor {
    let (n, k) = (w.n(), w.k());
    // SAFETY: a contiguous f32 CPU tensor the caller owns; nothing writes it meanwhile.
    let xs: &[f32] = unsafe { gemv::cpu_slice(x) }.expect("contiguous f32 CPU activations");
    let xp = PackedX::new(xs, m, k);
    let y = transposed_product(
        n,
        xp.padded_m(),
        m,
        float_gemm::GROUP,
        k,
        &|groups, out_t| {
            // SAFETY: `out_t` is `transposed_product`'s [n, mp] output, and these groups' rows are
            // this call's alone.
            unsafe { float_gemm::rows_on(kernel, &w, &xp, out_t, groups) }
        },
    );
    match bias {
        Some(b) => y + b.to_kind(Kind::Float),
        None => y.contiguous(),
    }
}

/// The prefill kernels' common frame: they compute `x · Wᵀ` transposed (one lane per x row), with
/// x's rows padded to `mp`. Allocates the `[n, mp]` output, has `fill` write it (called with
/// ranges of `unit`-row groups, each on one of libtorch's threads, and the output's base), and
/// returns its first `m` columns as an `[m, n]` view.
pub(super) fn transposed_product(
    n: usize,
    mp: usize,
    m: usize,
    unit: usize,
    k: usize,
    fill: &(dyn Fn(Range<usize>, *mut f32) + Sync),
) -> Tensor {
    let y_t = Tensor::empty([n as i64, mp as i64], (Kind::Float, Device::Cpu));
    let dst = OutPtr(y_t.data_ptr() as *mut f32);
    // Worth a second thread by the work, which the f32 weight's size stands for here (a 4-bit
    // k/v projection is under the threshold by its stored bytes, and ran on one thread).
    gemv::parallel_rows(n.div_ceil(unit), n * k * 4, &|g| fill(g, dst.get()));
    y_t.narrow(1, 0, m as i64).tr()
}

/// `x.linear(weight, bias)` for a bf16 or f16 CPU weight by [`product`], the result in `x`'s
/// kind; `None` for other weights, or where no kernel runs.
pub fn try_linear_16bit(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Option<Tensor> {
    // The kind first: every prompt-sized f32 product asks, and should learn "no" in one call.
    if !matches!(weight.kind(), Kind::BFloat16 | Kind::Half) {
        return None;
    }
    let kernel = kernel()?;
    let (n, k) = weight.size2().ok()?;
    let (n, k) = (n as usize, k as usize);
    if weight.device() != Device::Cpu
        || x.device() != Device::Cpu
        || !weight.is_contiguous()
        || x.size().last() != Some(&(k as i64))
    {
        return None;
    }
    let ptr = weight.data_ptr();
    // SAFETY: a contiguous CPU tensor of n·k elements of the matched kind, alive (borrowed) for
    // the whole product, which only reads it.
    let w = match weight.kind() {
        Kind::BFloat16 => Weights::Bf16 {
            w: unsafe { std::slice::from_raw_parts(ptr as *const half::bf16, n * k) },
            n,
            k,
        },
        Kind::Half => Weights::F16 {
            w: unsafe { std::slice::from_raw_parts(ptr as *const half::f16, n * k) },
            n,
            k,
        },
        _ => return None,
    };
    Some(as_f32_rows(x, n, k, |xf, m| {
        product(kernel, w, xf, m, bias)
    }))
}

/// `f` over `x` (any leading shape, rows of `k`, any float kind) as `m` contiguous f32 rows
/// `[m, k]`; its `[m, n]` f32 result goes back to `x`'s leading shape and kind.
pub(super) fn as_f32_rows(
    x: &Tensor,
    n: usize,
    k: usize,
    f: impl FnOnce(&Tensor, usize) -> Tensor,
) -> Tensor {
    let kind = x.kind();
    let mut shape = x.size();
    let xf = x.to_kind(Kind::Float).contiguous();
    let m = xf.numel() / k.max(1);
    *shape.last_mut().expect("x has a last dimension") = n as i64;
    let y = f(&xf.view([m as i64, k as i64]), m);
    y.view(shape.as_slice()).to_kind(kind)
}

/// The output's base pointer, shared by the threads that write its disjoint rows.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub(super) *mut f32);

impl OutPtr {
    /// The pointer (a method, so that a closure captures the whole `OutPtr`, which is `Sync`).
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: every thread writes a disjoint set of rows through it (see the callers).
unsafe impl Sync for OutPtr {}
unsafe impl Send for OutPtr {}
