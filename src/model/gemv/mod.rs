//! Matrix-vector products for decode: `x[M,K] · W[N,K]ᵀ (+ b)` with few rows `M`.
//!
//! Decoding one token runs every linear layer as a matrix-vector product, which is bound by memory
//! bandwidth. libtorch's bf16 path streams the weight at about half of what a CPU can read (see
//! `reference/cpu_facts.md`), and on CPUs without AVX512-BF16 it has no fast bf16 path at all, so
//! this module computes those products itself: each weight row is read once, several rows at a
//! time against the same `x` registers, with f32 sums and one rounding per output.
//!
//! Kernels, chosen once by what the CPU has ([`isa`]):
//! - AVX-512 with BF16 (Zen 4, Sapphire Rapids): bf16 weights with `vdpbf16ps`, f32 with AVX-512
//!   FMAs (`avx512.rs`);
//! - AVX2 + FMA + F16C (every x86-64 CPU of the last decade, AVX-512 ones included): bf16, f16
//!   and f32 weights widened to f32 in registers (`avx2.rs`); on AVX-512 machines this serves f16;
//! - anything else (aarch64, old x86): none; libtorch computes everything.
//!
//! GPU tensors, large `M` and anything autograd must see also go to libtorch: [`try_linear`]
//! returns `None`.
//!
//! Threads: by default the products run on libtorch's own OpenMP threads. The process already
//! has libgomp loaded (libtorch's OpenMP runtime), so `GOMP_parallel`, the call GCC compiles
//! `#pragma omp parallel` into, is looked up with `dlsym` and handed a closure: the very threads
//! that run libtorch's parallel ops run ours, so the two never compete for the cores, an OpenMP
//! worker still spinning after libtorch's last op picks up our product at once, and
//! `tch::set_num_threads` applies to both. Where no OpenMP runtime is found (or with
//! `THINKBENCH_GEMV_POOL=own`) a small pool of our own helper threads does the same job
//! (`threads.rs`). Either way rows are handed out in chunks from an atomic counter, so a thread
//! that starts late (not yet woken, or preempted by another process) leaves its share to the
//! others.
//!
//! No environment variable is needed. libgomp's default wait policy (its workers spin for about
//! 8 ms after each parallel region; it reads `OMP_WAIT_POLICY` / `GOMP_SPINCOUNT` when it is
//! loaded, before `main`, so only the environment that starts the process can change it) is what
//! makes handing it a product cheap: during decode its worker is nearly always still spinning.
//! `OMP_WAIT_POLICY=passive` measured slower here (a futex wake per product). One hazard, shared
//! with libtorch's own parallel ops: where the process gets only one core's worth of time (another
//! busy process in a different cgroup, as on a shared build machine), libgomp's spinning master
//! and worker can end up on the same core and each region then waits for a scheduler tick;
//! `OMP_WAIT_POLICY=passive` or `THINKBENCH_GEMV_POOL=own` (whose threads yield) avoid that.
//!
//! `THINKBENCH_GEMV=off` (or [`set_enabled`]) turns the kernels off, for comparisons;
//! `THINKBENCH_ISA=avx2` keeps an AVX-512 machine on the AVX2 kernels (to compare the two in one
//! run), here and in the block-quantized kernels of `quant/` alike ([`super::cpu`]).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod threads;

use std::ops::Range;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

pub use threads::{set_own_pool, threading_name};
use threads::{threading, Threading};

/// Largest number of rows `M` (product of the leading dimensions of `x`) handled here, per weight
/// dtype, from `cargo bench --bench gemv` (section 3) on a 2-core AVX512-BF16 EPYC: for bf16, at
/// M = 16 ours matched libtorch on 8960×1536 and beat it by a fifth on 1536×8960 (the products
/// turn compute-bound beyond that); libtorch's f32 path is slow at any M ≥ 2 (about 8 ms for
/// 8960×1536 against our 2.5 ms at M = 4) and ours still led at M = 64. f16 takes bf16's.
pub const MAX_ROWS_BF16: usize = 16;
pub const MAX_ROWS_F32: usize = 32;

/// Weights smaller than this are multiplied on the calling thread alone: waking a helper costs
/// more than it saves.
const PARALLEL_MIN_BYTES: usize = 256 * 1024;

/// Weight rows per kernel tile. The same `x` registers multiply `ROWS` weight rows at a time.
const ROWS: usize = 4;

/// How far ahead of the vector in use each weight row is prefetched, in bytes: the block kernels'
/// distance (`quant::prefetch`), and measured for these too (`cargo bench --bench gemv -- 4`,
/// the bf16 decode step on AVX-512: 24 GB/s without, 28-29.5 with anything from 512 B to 1.3 KB).
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 1024;

/// Asks the cache for the line [`PREFETCH_BYTES`] past byte `at` of each weight row `r..r + R`
/// (`row_bytes` each), or, once that is past a row's end, for the same place in that row of the
/// next tile (`R` rows on), so its stream starts warm rather than stalling at the jump: with
/// K = 1536, a bf16 row is 3 KB, and the hardware prefetcher alone lost a sixth of the bandwidth.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_rows<const R: usize>(w: *const u8, row_bytes: usize, r: usize, at: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let ahead = at + PREFETCH_BYTES;
    let ahead = if ahead >= row_bytes {
        ahead + (R - 1) * row_bytes
    } else {
        ahead
    };
    for i in 0..R {
        let line = w.wrapping_add((r + i) * row_bytes + ahead);
        // SAFETY: a hint reads nothing and faults on no address (hence wrapping_add: an address
        // past the matrix is harmless).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
    }
}

/// The vector instruction sets the kernels are written for, best first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Isa {
    /// AVX512F, AVX512BW and AVX512-BF16 (and, on every such CPU, AVX2 + FMA + F16C).
    Avx512Bf16,
    /// AVX2, FMA and F16C.
    Avx2,
    /// Neither: libtorch computes every product.
    None,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Bf16 => "avx512-bf16",
            Isa::Avx2 => "avx2",
            Isa::None => "none",
        }
    }
}

/// The kernels this CPU runs (checked once). `THINKBENCH_ISA=avx2` caps an AVX-512 machine at
/// the AVX2 kernels.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| detect(super::cpu::capped_at_avx2()))
}

#[cfg(target_arch = "x86_64")]
fn detect(cap_avx2: bool) -> Isa {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    let avx512 = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16");
    match (avx512 && avx2 && !cap_avx2, avx2) {
        (true, _) => Isa::Avx512Bf16,
        (false, true) => Isa::Avx2,
        _ => Isa::None,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect(_cap_avx2: bool) -> Isa {
    Isa::None
}

/// Whether this CPU runs any of the kernels.
pub fn cpu_supported() -> bool {
    isa() != Isa::None
}

/// `x.linear(weight, bias)` computed by this module's kernels, or `None` where they do not apply
/// and the caller should use libtorch.
///
/// Applies when: the CPU has one of the kernel sets ([`isa`]); all tensors are on the CPU;
/// `weight` is a contiguous `[N, K]` bf16, f16 or f32 matrix; `x` has the same dtype (any
/// strides), has `K` as its last dimension and at most [`max_rows`] rows; `bias`, if any, is a
/// contiguous `[N]` vector of the same dtype; and autograd does not need to record the product
/// (grad mode is off, or no input requires grad). The result has `x`'s dtype; sums are f32 and the
/// bias is added in f32 before the one rounding to the output dtype.
pub fn try_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Option<Tensor> {
    try_linear_on(x, weight, bias, threading(), isa())
}

fn try_linear_on(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    threading: Threading,
    isa: Isa,
) -> Option<Tensor> {
    if !enabled() || isa == Isa::None {
        return None;
    }
    let kind = weight.kind();
    let elem = Elem::of(kind)?;
    if x.kind() != kind || x.device() != Device::Cpu || weight.device() != Device::Cpu {
        return None;
    }
    let &[n, k] = weight.size().as_slice() else {
        return None;
    };
    let mut shape = x.size();
    let (&last, lead) = shape.split_last()?;
    if last != k || n <= 0 || k <= 0 {
        return None;
    }
    let m: i64 = lead.iter().product();
    if m <= 0 || m as usize > elem.max_rows() {
        return None;
    }
    if !weight.is_contiguous() {
        return None;
    }
    if let Some(b) = bias {
        if b.kind() != kind || b.device() != Device::Cpu || b.size() != [n] || !b.is_contiguous() {
            return None;
        }
    }
    if needs_graph(x, weight, bias) {
        return None;
    }
    // A strided x (a transposed attention output, say) is copied: at most MAX_ROWS × K elements,
    // next to nothing beside the weight.
    let x_copy;
    let x = if x.is_contiguous() {
        x
    } else {
        x_copy = x.contiguous();
        &x_copy
    };
    *shape.last_mut().expect("x has a last dimension") = n;
    let y = Tensor::empty(shape.as_slice(), (kind, Device::Cpu));
    let p = Product {
        elem,
        x: x.data_ptr() as *const u8,
        w: weight.data_ptr() as *const u8,
        bias: bias.map_or(std::ptr::null(), |b| b.data_ptr() as *const u8),
        out: y.data_ptr() as *mut u8,
        m: m as usize,
        n: n as usize,
        k: k as usize,
    };
    // SAFETY: the checks above establish what `Product` requires: the CPU has the features the
    // kernels are compiled for; `x` (M×K), `weight` (N×K), `bias` (N) and `y` (M×N, freshly
    // allocated, so aliasing none of the inputs) are contiguous CPU tensors of the element type
    // `elem`, so each data pointer addresses that many elements; and all four tensors are borrowed
    // or owned here until `run` returns, which is after every thread has finished with them.
    unsafe { run(&p, threading, isa) };
    Some(y)
}

/// An element type the kernels multiply: f32, bf16 or f16 (f32 sums, one rounding per output).
pub trait Scalar: Copy + Default + Send + Sync + 'static {
    const KIND: Kind;
    #[doc(hidden)]
    const ELEM: Elem;
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
}

impl Scalar for f32 {
    const KIND: Kind = Kind::Float;
    const ELEM: Elem = Elem::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl Scalar for half::bf16 {
    const KIND: Kind = Kind::BFloat16;
    const ELEM: Elem = Elem::Bf16;
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}

impl Scalar for half::f16 {
    const KIND: Kind = Kind::Half;
    const ELEM: Elem = Elem::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}

/// `out[m,n] = x[m,k] · w[n,k]ᵀ` on plain row-major slices, for callers that already hold their
/// rows on the CPU (the MoE experts of a few tokens). Same kernels, threading and results as
/// [`try_linear`]. The caller checks [`available`] first.
///
/// # Panics
/// If a slice is shorter than its shape says, or the kernels are not available.
pub fn product<T: Scalar>(x: &[T], w: &[T], out: &mut [T], m: usize, n: usize, k: usize) {
    assert!(available(), "gemv kernels unavailable");
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let p = Product {
        elem: T::ELEM,
        x: x.as_ptr() as *const u8,
        w: w.as_ptr() as *const u8,
        bias: std::ptr::null(),
        out: out.as_mut_ptr() as *mut u8,
        m,
        n,
        k,
    };
    // SAFETY: the slices hold at least m·k, n·k and m·n elements of the type `p.elem` names;
    // `out` is a unique borrow, so it aliases neither input; all three outlive `run`; and
    // `available()` established the CPU features.
    unsafe { run(&p, threading(), isa()) };
}

/// Whether [`product`] may run: the kernels are enabled and this CPU has them.
pub fn available() -> bool {
    enabled() && cpu_supported()
}

/// Largest number of rows [`product`] is meant for with elements `T` (beyond it libtorch's GEMM
/// wins).
pub fn max_rows<T: Scalar>() -> usize {
    T::ELEM.max_rows()
}

/// The elements of a contiguous CPU tensor of element type `T`, or `None` if it is not one.
///
/// # Safety
/// The returned slice aliases the tensor's storage: nothing may write that storage (through this
/// tensor or any other sharing it, on any thread) while the slice is alive.
pub unsafe fn cpu_slice<T: Scalar>(t: &Tensor) -> Option<&[T]> {
    if t.device() != Device::Cpu || t.kind() != T::KIND || !t.is_contiguous() {
        return None;
    }
    let n = t.numel();
    if n == 0 {
        return Some(&[]);
    }
    // SAFETY: a contiguous CPU tensor of `T` holds `numel` elements from `data_ptr`, alive while
    // `t` is borrowed; the caller guarantees nobody writes them meanwhile.
    Some(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, n) })
}

/// Whether autograd would record an op on these tensors: grad mode is on and one of them
/// requires grad (then the op must go through libtorch).
pub fn records_graph(tensors: &[&Tensor]) -> bool {
    tensors.iter().any(|t| t.requires_grad()) && grad_mode_enabled()
}

/// Turns the kernels on or off for the whole process (the default is on unless the environment
/// variable `THINKBENCH_GEMV` is `off` or `0`).
pub fn set_enabled(on: bool) {
    ENABLED.store(if on { ON } else { OFF }, Ordering::Relaxed);
}

/// Whether [`try_linear`] may use the kernels (ignoring the CPU check).
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = !matches!(std::env::var("THINKBENCH_GEMV").as_deref(), Ok("off" | "0"));
            // A concurrent `set_enabled` wins over the environment.
            let _ = ENABLED.compare_exchange(
                UNSET,
                if on { ON } else { OFF },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            ENABLED.load(Ordering::Relaxed) == ON
        }
    }
}

const UNSET: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;
static ENABLED: AtomicU8 = AtomicU8::new(UNSET);

/// True when autograd would record `x.linear(weight, bias)`: grad mode is on and an input
/// requires grad. The product must then go through libtorch so that backward works.
///
/// Grad mode is thread-local state that tch only reads inside its private `grad_set_enabled`; the
/// C API's `at_grad_set_enabled` sets it and returns the previous value, so reading it is a set
/// and (when it was on) an immediate restore on this thread — two calls of a few nanoseconds,
/// made only when some input requires grad (inference weights normally do not).
fn needs_graph(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> bool {
    let any =
        x.requires_grad() || weight.requires_grad() || bias.is_some_and(Tensor::requires_grad);
    any && grad_mode_enabled()
}

fn grad_mode_enabled() -> bool {
    // SAFETY: plain C calls with an int argument; they touch only this thread's grad mode, which
    // nothing else can observe between the two calls. -1 (an exception inside libtorch) counts as
    // enabled, which only makes us fall back to libtorch.
    unsafe {
        let prev = torch_sys::at_grad_set_enabled(0);
        if prev != 0 {
            torch_sys::at_grad_set_enabled(1);
        }
        prev != 0
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[doc(hidden)]
pub enum Elem {
    Bf16,
    F16,
    F32,
}

impl Elem {
    fn of(kind: Kind) -> Option<Self> {
        match kind {
            Kind::BFloat16 => Some(Elem::Bf16),
            Kind::Half => Some(Elem::F16),
            Kind::Float => Some(Elem::F32),
            _ => None,
        }
    }

    fn bytes(self) -> usize {
        match self {
            Elem::Bf16 | Elem::F16 => 2,
            Elem::F32 => 4,
        }
    }

    fn max_rows(self) -> usize {
        match self {
            Elem::Bf16 | Elem::F16 => MAX_ROWS_BF16,
            Elem::F32 => MAX_ROWS_F32,
        }
    }
}

/// One product `out[M,N] = x[M,K] · w[N,K]ᵀ + bias[N]`, as raw row-major pointers.
///
/// Invariants (established by [`try_linear`] before it builds one): `x`, `w`, `bias` (unless null)
/// and `out` point to `m*k`, `n*k`, `n` and `m*n` elements of `elem`; `out` aliases none of the
/// others; all stay valid and (except `out`) unmodified until [`run`] returns.
struct Product {
    elem: Elem,
    x: *const u8,
    w: *const u8,
    bias: *const u8,
    out: *mut u8,
    m: usize,
    n: usize,
    k: usize,
}

// SAFETY: threads only read through `x`, `w` and `bias`, and each writes a disjoint set of rows of
// `out` (chunks of the weight rows, handed out once each by an atomic counter).
unsafe impl Sync for Product {}

/// Which kernel computes a product, with what it prepared once for all threads.
#[cfg(target_arch = "x86_64")]
enum Kernel {
    Avx512Bf16,
    Avx512F32,
    Avx2(avx2::StagedX),
}

#[cfg(target_arch = "x86_64")]
impl Kernel {
    /// # Safety
    /// `p` satisfies [`Product`]'s invariants and this CPU has `isa`, which is not [`Isa::None`].
    unsafe fn for_product(p: &Product, isa: Isa) -> Self {
        match (isa, p.elem) {
            (Isa::Avx512Bf16, Elem::Bf16) => Kernel::Avx512Bf16,
            (Isa::Avx512Bf16, Elem::F32) => Kernel::Avx512F32,
            // SAFETY: forwarded.
            _ => Kernel::Avx2(unsafe { avx2::StagedX::new(p) }),
        }
    }

    /// Rows `r0..r1` of `p.out`.
    ///
    /// # Safety
    /// As for [`Kernel::for_product`], with the same `p`, and `r0 <= r1 <= p.n`.
    unsafe fn rows(&self, p: &Product, r0: usize, r1: usize) {
        // SAFETY: forwarded; the caller established the features each kernel is compiled for (an
        // AVX-512 BF16 CPU has AVX2, FMA and F16C too).
        unsafe {
            match self {
                Kernel::Avx512Bf16 => avx512::bf16_rows(p, r0, r1),
                Kernel::Avx512F32 => avx512::f32_rows(p, r0, r1),
                Kernel::Avx2(x) => avx2::rows(p, x, r0, r1),
            }
        }
    }
}

/// Off x86-64 [`isa`] is [`Isa::None`], so no product ever reaches a kernel.
#[cfg(not(target_arch = "x86_64"))]
struct Kernel;

#[cfg(not(target_arch = "x86_64"))]
impl Kernel {
    unsafe fn for_product(_p: &Product, _isa: Isa) -> Self {
        Kernel
    }

    unsafe fn rows(&self, p: &Product, r0: usize, r1: usize) {
        unreachable!("no kernels off x86-64 ({:?}, rows {r0}..{r1})", p.elem)
    }
}

/// Computes `p`, on several threads when it is large enough.
///
/// # Safety
/// `p` must satisfy the invariants documented on [`Product`], and this CPU must have `isa`, which
/// is not [`Isa::None`].
unsafe fn run(p: &Product, threading: Threading, isa: Isa) {
    // SAFETY: forwarded from the caller.
    let kernel = unsafe { Kernel::for_product(p, isa) };
    // SAFETY: forwarded from the caller; `rows_on` hands out each row of 0..n once.
    let rows = |r: Range<usize>| unsafe { kernel.rows(p, r.start, r.end) };
    rows_on(threading, p.n, p.n * p.k * p.elem.bytes(), &rows);
}

/// Calls `f` on disjoint chunks of the rows `0..n` that together cover them all, on libtorch's
/// threads (or this module's pool) when the weight they read (`weight_bytes`) is large enough to
/// be worth waking them. For kernels of other modules (quantized weights) that split a product by
/// output rows as these do.
pub fn parallel_rows(n: usize, weight_bytes: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    rows_on(threading(), n, weight_bytes, f)
}

fn rows_on(threading: Threading, n: usize, weight_bytes: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    // SAFETY: a plain C call without arguments.
    let torch_threads = unsafe { torch_sys::at_get_num_threads() }.max(1) as usize;
    let threads = if weight_bytes < PARALLEL_MIN_BYTES {
        1
    } else {
        torch_threads
    };
    if threads <= 1 {
        f(0..n);
        return;
    }
    // Chunks of about 1/12 of each thread's share (at least one tile of rows), so that a late or
    // preempted thread costs little, and few enough that the counter is not contended.
    let per_chunk = (n / (threads * 12)).max(ROWS).next_multiple_of(ROWS);
    let chunks = n.div_ceil(per_chunk);
    let next = AtomicUsize::new(0);
    let work = || loop {
        let c = next.fetch_add(1, Ordering::Relaxed);
        if c >= chunks {
            break;
        }
        let r0 = c * per_chunk;
        f(r0..(r0 + per_chunk).min(n));
    };
    threads::parallel(threading, threads, &work);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip() -> bool {
        if !cpu_supported() {
            eprintln!("NOTE: gemv tests skipped: this CPU has neither AVX2+FMA+F16C nor AVX-512");
            return true;
        }
        false
    }

    /// Independent reference: libtorch's f32 linear over the same (bf16-representable) values.
    fn reference(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        let bf = b.map(|b| b.to_kind(Kind::Float));
        x.to_kind(Kind::Float)
            .linear(&w.to_kind(Kind::Float), bf.as_ref())
    }

    /// The kernel sets this CPU runs: its best and each lesser one, so an AVX-512 machine tests
    /// the AVX2 kernels too.
    fn isas() -> Vec<Isa> {
        match isa() {
            Isa::Avx512Bf16 => vec![Isa::Avx512Bf16, Isa::Avx2],
            Isa::Avx2 => vec![Isa::Avx2],
            Isa::None => vec![],
        }
    }

    fn check(kind: Kind, lead: &[i64], n: i64, k: i64, with_bias: bool) {
        for isa in isas() {
            check_on(threading(), isa, kind, lead, n, k, with_bias)
        }
    }

    fn check_on(
        threading: Threading,
        isa: Isa,
        kind: Kind,
        lead: &[i64],
        n: i64,
        k: i64,
        with_bias: bool,
    ) {
        let mut xs = lead.to_vec();
        xs.push(k);
        let x = Tensor::randn(xs.as_slice(), (Kind::Float, Device::Cpu)).to_kind(kind);
        let w = (Tensor::randn([n, k], (Kind::Float, Device::Cpu)) * 0.1).to_kind(kind);
        let b = with_bias.then(|| Tensor::randn([n], (Kind::Float, Device::Cpu)).to_kind(kind));
        let y = try_linear_on(&x, &w, b.as_ref(), threading, isa).unwrap_or_else(|| {
            panic!("{isa:?} kernel not used for {kind:?} {lead:?} n={n} k={k} bias={with_bias}")
        });
        let r = reference(&x, &w, b.as_ref());
        let mut want_shape = lead.to_vec();
        want_shape.push(n);
        assert_eq!(y.size(), want_shape);
        assert_eq!(y.kind(), kind);
        let yf = y.to_kind(Kind::Float);
        // bf16 / f16 output: one rounding (relative 2^-8 / 2^-10 at most) plus f32
        // summation-order noise, which grows with sqrt(K) times the typical |x_i w_i|.
        let rel = match kind {
            Kind::BFloat16 => 1.0 / 256.0,
            Kind::Half => 1.0 / 1024.0,
            _ => 1e-6,
        };
        let scale = 0.1 * (k as f64).sqrt();
        let tol = r.abs() * rel + 1e-5 * scale + 1e-6;
        let err = (&yf - &r).abs();
        let bad = err.gt_tensor(&tol).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(
            bad,
            0,
            "{isa:?} {kind:?} {lead:?} n={n} k={k} bias={with_bias}: max err {} (max |ref| {})",
            err.max().double_value(&[]),
            r.abs().max().double_value(&[])
        );
    }

    #[test]
    fn bf16_matches_f32_reference_on_odd_shapes() {
        if skip() {
            return;
        }
        let _g = tch::no_grad_guard();
        for &n in &[1, 7, 33, 1000] {
            for &k in &[1, 31, 32, 33, 1536, 8960] {
                for lead in [&[1][..], &[1, 1], &[3], &[2, 3], &[16]] {
                    for bias in [false, true] {
                        check(Kind::BFloat16, lead, n, k, bias);
                    }
                }
            }
        }
    }

    #[test]
    fn f16_matches_f32_reference_on_odd_shapes() {
        if skip() {
            return;
        }
        let _g = tch::no_grad_guard();
        for &n in &[1, 7, 33, 1000] {
            for &k in &[1, 15, 16, 17, 33, 1536] {
                for lead in [&[1][..], &[3], &[2, 3], &[16]] {
                    for bias in [false, true] {
                        check(Kind::Half, lead, n, k, bias);
                    }
                }
            }
        }
    }

    #[test]
    fn strided_x_is_copied_and_matches() {
        if skip() {
            return;
        }
        let _g = tch::no_grad_guard();
        for kind in [Kind::BFloat16, Kind::Half, Kind::Float] {
            // x[3, 40] as the transpose of a [40, 3] tensor, and a column slice of a wider one.
            let xt = Tensor::randn([40, 3], (Kind::Float, Device::Cpu))
                .to_kind(kind)
                .tr();
            let xs = Tensor::randn([2, 80], (Kind::Float, Device::Cpu))
                .to_kind(kind)
                .narrow(1, 7, 40);
            let w = (Tensor::randn([9, 40], (Kind::Float, Device::Cpu)) * 0.1).to_kind(kind);
            for x in [xt, xs] {
                assert!(!x.is_contiguous());
                let y = try_linear(&x, &w, None).expect("kernel applies to strided x");
                let r = reference(&x, &w, None);
                let err = (y.to_kind(Kind::Float) - &r).abs().max().double_value(&[]);
                let tol = 1e-2 * r.abs().max().double_value(&[]).max(1.0);
                assert!(err <= tol, "{kind:?}: max err {err}");
            }
        }
    }

    #[test]
    fn f32_matches_reference_on_odd_shapes() {
        if skip() {
            return;
        }
        let _g = tch::no_grad_guard();
        for &n in &[1, 7, 33, 1000] {
            for &k in &[1, 15, 16, 17, 31, 33, 1536] {
                for lead in [&[1][..], &[1, 3], &[4], &[2, 16]] {
                    for bias in [false, true] {
                        check(Kind::Float, lead, n, k, bias);
                    }
                }
            }
        }
    }

    #[test]
    fn large_products_use_the_pool_and_match() {
        if skip() {
            return;
        }
        let _g = tch::no_grad_guard();
        // Above PARALLEL_MIN_BYTES, with a row count that is not a multiple of the chunking.
        check(Kind::BFloat16, &[1], 8963, 1536, true);
        check(Kind::BFloat16, &[1, 1], 1537, 8960, false);
        check(Kind::BFloat16, &[5], 4099, 1000, true);
        check(Kind::Float, &[1], 3001, 1536, true);
        check(Kind::Half, &[2], 3001, 1536, true);
        // Several threads at once: each has its own OpenMP team; one job runs on our pool and
        // the others run alone.
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    let _g = tch::no_grad_guard();
                    let threading = if t % 2 == 0 {
                        threading()
                    } else {
                        Threading::Own
                    };
                    for _ in 0..20 {
                        check_on(threading, isa(), Kind::BFloat16, &[1], 2051, 1536, false);
                    }
                });
            }
        });
    }

    #[test]
    fn own_pool_matches() {
        if skip() {
            return;
        }
        let _g = tch::no_grad_guard();
        for _ in 0..3 {
            for isa in isas() {
                check_on(Threading::Own, isa, Kind::BFloat16, &[1], 8963, 1536, true);
                check_on(Threading::Own, isa, Kind::BFloat16, &[3], 1537, 8960, false);
                check_on(Threading::Own, isa, Kind::Float, &[2], 3001, 1536, true);
            }
            // Let the helpers park, then wake them.
            std::thread::sleep(threads::SPIN * 3);
        }
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        let _g = tch::no_grad_guard();
        let opts = (Kind::BFloat16, Device::Cpu);
        let w = Tensor::randn([8, 16], opts);
        // Too many rows, wrong dtype mix (twice), transposed (non-contiguous) weight, an integer
        // weight, wrong bias.
        assert!(try_linear(
            &Tensor::randn([MAX_ROWS_BF16 as i64 + 1, 16], opts),
            &w,
            None
        )
        .is_none());
        assert!(try_linear(
            &Tensor::randn([1, 16], (Kind::Float, Device::Cpu)),
            &w,
            None
        )
        .is_none());
        assert!(try_linear(&Tensor::randn([1, 8], opts), &w.tr(), None).is_none());
        let h = (Kind::Half, Device::Cpu);
        assert!(try_linear(&Tensor::randn([1, 16], h), &w, None).is_none());
        let i = (Kind::Int, Device::Cpu);
        assert!(try_linear(&Tensor::ones([1, 16], i), &Tensor::ones([8, 16], i), None).is_none());
        assert!(try_linear(
            &Tensor::randn([1, 16], opts),
            &w,
            Some(&Tensor::randn([7], opts))
        )
        .is_none());
        assert!(try_linear(
            &Tensor::randn([1, 16], opts),
            &w,
            Some(&Tensor::randn([8], h))
        )
        .is_none());
        // Empty x.
        assert!(try_linear(&Tensor::randn([0, 16], opts), &w, None).is_none());
    }

    #[test]
    fn not_used_when_autograd_needs_the_graph() {
        if skip() {
            return;
        }
        let opts = (Kind::BFloat16, Device::Cpu);
        let x = Tensor::randn([1, 64], opts);
        let w = Tensor::randn([8, 64], opts).set_requires_grad(true);
        // Grad mode on and the weight requires grad: libtorch must run it.
        assert!(try_linear(&x, &w, None).is_none());
        // What the model's Linear does: fall back, and backward reaches the weight.
        let y = try_linear(&x, &w, None).unwrap_or_else(|| x.linear::<Tensor>(&w, None));
        assert!(y.requires_grad());
        y.to_kind(Kind::Float).sum(Kind::Float).backward();
        let g = w.grad();
        assert!(g.defined());
        let want = x.to_kind(Kind::Float).expand([8, 64], false);
        let diff = (g.to_kind(Kind::Float) - want)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-2, "weight grad off by {diff}");
        // Under no_grad the same call may use the kernel, and grad mode is left as it was.
        {
            let _g = tch::no_grad_guard();
            let y = try_linear(&x, &w, None).expect("kernel under no_grad");
            assert!(!y.requires_grad());
            assert!(!grad_mode_enabled());
        }
        assert!(grad_mode_enabled());
        // Nothing requires grad: the kernel applies even with grad mode on.
        let w2 = w.detach();
        assert!(try_linear(&x, &w2, None).is_some());
        assert!(grad_mode_enabled());
    }
}
