//! Matrix-vector products for decode: `x[M,K] · W[N,K]ᵀ (+ b)` with few rows `M`.
//!
//! Decoding one token runs every linear layer as a matrix-vector product, which is bound by memory
//! bandwidth. libtorch's bf16 path streams the weight at about half of what this machine can read
//! (see `reference/cpu_facts.md`), so on x86-64 CPUs with AVX512-BF16 this module computes those
//! products itself: each weight row is read once, several rows at a time against the same `x`
//! registers, with `vdpbf16ps` (bf16 products, f32 sums). f32 weights get the same treatment with
//! plain AVX-512 FMAs. Everything else (GPU tensors, f16, large `M`, anything autograd must see)
//! falls back to libtorch: [`try_linear`] returns `None`.
//!
//! Threads: by default the products run on libtorch's own OpenMP threads. The process already
//! has libgomp loaded (libtorch's OpenMP runtime), so `GOMP_parallel`, the call GCC compiles
//! `#pragma omp parallel` into, is looked up with `dlsym` and handed a closure: the very threads
//! that run libtorch's parallel ops run ours, so the two never compete for the cores, an OpenMP
//! worker still spinning after libtorch's last op picks up our product at once, and
//! `tch::set_num_threads` applies to both. Where no OpenMP runtime is found (or with
//! `THINKBENCH_GEMV_POOL=own`) a small pool of our own helper threads does the same job. Either
//! way rows are handed out in chunks from an atomic counter, so a thread that starts late (not
//! yet woken, or preempted by another process) leaves its share to the others.
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
//! `THINKBENCH_GEMV=off` (or [`set_enabled`]) turns the kernels off, for comparisons.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::UnsafeCell;
use std::ffi::{c_uint, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

/// Largest number of rows `M` (product of the leading dimensions of `x`) handled here, per weight
/// dtype, from `cargo bench --bench gemv` (section 3) on a 2-core AVX512-BF16 EPYC: for bf16, at
/// M = 16 ours matched libtorch on 8960×1536 and beat it by a fifth on 1536×8960 (the products
/// turn compute-bound beyond that); libtorch's f32 path is slow at any M ≥ 2 (about 8 ms for
/// 8960×1536 against our 2.5 ms at M = 4) and ours still led at M = 64.
pub const MAX_ROWS_BF16: usize = 16;
pub const MAX_ROWS_F32: usize = 32;

/// Weights smaller than this are multiplied on the calling thread alone: waking a helper costs
/// more than it saves.
const PARALLEL_MIN_BYTES: usize = 256 * 1024;

/// How long an idle helper of our own pool keeps looking for work before it parks.
const SPIN: Duration = Duration::from_micros(500);

/// Weight rows per kernel tile. The same `x` registers multiply `ROWS` weight rows at a time.
const ROWS: usize = 4;

/// `x` rows per kernel tile (with `ROWS` weight rows: `ROWS * XROWS` accumulators).
const XROWS: usize = 4;

/// `x.linear(weight, bias)` computed by this module's kernels, or `None` where they do not apply
/// and the caller should use libtorch.
///
/// Applies when: the CPU has AVX512F and AVX512-BF16; all tensors are on the CPU; `weight` is a
/// contiguous `[N, K]` bf16 or f32 matrix; `x` has the same dtype (any strides), has `K` as its
/// last dimension and at most [`MAX_ROWS_BF16`] / [`MAX_ROWS_F32`] rows; `bias`, if any, is a
/// contiguous `[N]` vector of the same dtype; and autograd does not need to record the product
/// (grad mode is off, or no input requires grad). The result has `x`'s dtype; sums are f32 and the
/// bias is added in f32 before the one rounding to the output dtype.
pub fn try_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Option<Tensor> {
    try_linear_on(x, weight, bias, threading())
}

fn try_linear_on(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    threading: Threading,
) -> Option<Tensor> {
    if !enabled() || !cpu_supported() {
        return None;
    }
    let kind = weight.kind();
    let (elem, max_rows) = match kind {
        Kind::BFloat16 => (Elem::Bf16, MAX_ROWS_BF16),
        Kind::Float => (Elem::F32, MAX_ROWS_F32),
        _ => return None,
    };
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
    if m <= 0 || m as usize > max_rows {
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
    unsafe { run(&p, threading) };
    Some(y)
}

/// An element type the kernels multiply: f32, or bf16 (f32 sums, one rounding per output).
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
    unsafe { run(&p, threading()) };
}

/// Whether [`product`] may run: the kernels are enabled and this CPU has them.
pub fn available() -> bool {
    enabled() && cpu_supported()
}

/// Largest number of rows [`product`] is meant for with elements `T` (beyond it libtorch's GEMM
/// wins).
pub fn max_rows<T: Scalar>() -> usize {
    match T::ELEM {
        Elem::Bf16 => MAX_ROWS_BF16,
        Elem::F32 => MAX_ROWS_F32,
    }
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

/// Whether this CPU can run the kernels (checked once).
pub fn cpu_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        return is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16");
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

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
    F32,
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

/// Computes `p`, on the pool when it is large enough.
///
/// # Safety
/// `p` must satisfy the invariants documented on [`Product`], and the CPU must support
/// AVX512F, AVX512BW and AVX512-BF16.
unsafe fn run(p: &Product, threading: Threading) {
    let elem_bytes = match p.elem {
        Elem::Bf16 => 2,
        Elem::F32 => 4,
    };
    // SAFETY: a plain C call without arguments.
    let torch_threads = unsafe { torch_sys::at_get_num_threads() }.max(1) as usize;
    let threads = if p.n * p.k * elem_bytes < PARALLEL_MIN_BYTES {
        1
    } else {
        torch_threads
    };
    if threads <= 1 {
        // SAFETY: forwarded from the caller.
        unsafe { rows(p, 0, p.n) };
        return;
    }
    // Chunks of about 1/12 of each thread's share (at least one tile of rows), so that a late or
    // preempted thread costs little, and few enough that the counter is not contended.
    let per_chunk = (p.n / (threads * 12)).max(ROWS).next_multiple_of(ROWS);
    let chunks = p.n.div_ceil(per_chunk);
    let next = AtomicUsize::new(0);
    let work = || loop {
        let c = next.fetch_add(1, Ordering::Relaxed);
        if c >= chunks {
            break;
        }
        let r0 = c * per_chunk;
        // SAFETY: forwarded from the caller; the counter gives each chunk of rows to one thread.
        unsafe { rows(p, r0, (r0 + per_chunk).min(p.n)) };
    };
    match threading {
        Threading::OpenMp(parallel) => {
            let work: &(dyn Fn() + Sync) = &work;
            // SAFETY: `GOMP_parallel` calls `omp_trampoline(data)` on `threads` threads (this one
            // included) and returns after all of them have returned, so `work`, borrowed here,
            // outlives every use. The work never unwinds (no panics in the kernels); if it did,
            // unwinding out of the `extern "C"` trampoline would abort rather than leave a thread
            // running on freed data.
            unsafe {
                parallel(
                    omp_trampoline,
                    &work as *const &(dyn Fn() + Sync) as *mut c_void,
                    threads as c_uint,
                    0,
                )
            };
        }
        Threading::Own => {
            let pool = pool();
            pool.run(threads.min(pool.helpers.len() + 1), &work);
        }
    }
}

/// Who runs the helper threads.
#[derive(Clone, Copy)]
enum Threading {
    /// libgomp's `GOMP_parallel`, found in the process (libtorch's own OpenMP runtime): the
    /// products run on the very threads that run libtorch's parallel ops, so the two never
    /// compete for cores, and `tch::set_num_threads` applies to both.
    OpenMp(GompParallel),
    /// This module's pool (no OpenMP runtime found, or `THINKBENCH_GEMV_POOL=own`).
    Own,
}

/// `void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)`:
/// the entry point GCC compiles `#pragma omp parallel` to (libgomp ≥ 4.9; Intel's and LLVM's
/// OpenMP runtimes export it too).
type GompParallel = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);

extern "C" fn omp_trampoline(data: *mut c_void) {
    // SAFETY: `data` is the `&&(dyn Fn() + Sync)` that `run` passed, alive until it returns.
    let work = unsafe { &*(data as *const &(dyn Fn() + Sync)) };
    work();
}

/// Which threads run the products: `"openmp"` (libtorch's OpenMP pool) or `"own"` (this
/// module's pool).
pub fn threading_name() -> &'static str {
    match threading() {
        Threading::OpenMp(_) => "openmp",
        Threading::Own => "own",
    }
}

fn threading() -> Threading {
    static OPENMP: OnceLock<Option<GompParallel>> = OnceLock::new();
    if OWN_POOL.load(Ordering::Relaxed) == UNSET {
        let own = matches!(std::env::var("THINKBENCH_GEMV_POOL").as_deref(), Ok("own"));
        let _ = OWN_POOL.compare_exchange(
            UNSET,
            if own { ON } else { OFF },
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    match OWN_POOL.load(Ordering::Relaxed) {
        ON => Threading::Own,
        _ => OPENMP
            .get_or_init(find_gomp_parallel)
            .map_or(Threading::Own, Threading::OpenMp),
    }
}

/// Runs the products on this module's own pool even where libtorch's OpenMP pool is available
/// (the default then comes from `THINKBENCH_GEMV_POOL=own`). For comparisons.
pub fn set_own_pool(own: bool) {
    OWN_POOL.store(if own { ON } else { OFF }, Ordering::Relaxed);
}

static OWN_POOL: AtomicU8 = AtomicU8::new(UNSET);

#[cfg(target_os = "linux")]
fn find_gomp_parallel() -> Option<GompParallel> {
    extern "C" {
        fn dlsym(handle: *mut c_void, symbol: *const std::ffi::c_char) -> *mut c_void;
    }
    // SAFETY: dlsym with RTLD_DEFAULT (null on Linux) only looks the name up among the libraries
    // already loaded; libtorch loads its OpenMP runtime at start-up. The symbol, when present, is
    // the function declared by `GompParallel`.
    unsafe {
        let f = dlsym(std::ptr::null_mut(), c"GOMP_parallel".as_ptr());
        (!f.is_null()).then(|| std::mem::transmute::<*mut c_void, GompParallel>(f))
    }
}

#[cfg(not(target_os = "linux"))]
fn find_gomp_parallel() -> Option<GompParallel> {
    None
}

/// Rows `r0..r1` of `p.out`.
///
/// # Safety
/// As for [`run`], and `r0 <= r1 <= p.n`.
unsafe fn rows(p: &Product, r0: usize, r1: usize) {
    // SAFETY: forwarded; the CPU features are guaranteed by the caller.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match p.elem {
            Elem::Bf16 => bf16_rows(p, r0, r1),
            Elem::F32 => f32_rows(p, r0, r1),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "cpu_supported() is false off x86-64 ({:?}, rows {r0}..{r1})",
        p.elem
    )
}

// ---------------------------------------------------------------------------------------------
// Kernels. Each tile multiplies R weight rows by MB rows of x: per step of K it loads R weight
// vectors and MB x vectors and issues R*MB dot-product instructions into separate accumulators.
// The K tail is read with masked loads (zeros beyond K). All pointers are in elements.

/// Dispatches the tiles for weight rows `r0..r1` (bf16).
///
/// # Safety
/// As for [`rows`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn bf16_rows(p: &Product, r0: usize, r1: usize) {
    let mut r = r0;
    // SAFETY (all tile calls): r + R <= r1 <= n and m0 + MB <= m, as the tiles require.
    unsafe {
        while r + ROWS <= r1 {
            bf16_x_tiles::<ROWS>(p, r);
            r += ROWS;
        }
        while r < r1 {
            bf16_x_tiles::<1>(p, r);
            r += 1;
        }
    }
}

/// Weight rows `r..r+R` against every row of x.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn bf16_x_tiles<const R: usize>(p: &Product, r: usize) {
    let mut m0 = 0;
    // SAFETY: see bf16_rows.
    unsafe {
        while m0 + XROWS <= p.m {
            bf16_tile::<R, XROWS>(p, r, m0);
            m0 += XROWS;
        }
        match p.m - m0 {
            0 => {}
            1 => bf16_tile::<R, 1>(p, r, m0),
            2 => bf16_tile::<R, 2>(p, r, m0),
            3 => bf16_tile::<R, 3>(p, r, m0),
            _ => unreachable!("XROWS is 4"),
        }
    }
}

/// `out[m0..m0+MB, r..r+R]` (bf16).
///
/// # Safety
/// `p` as for [`run`]; `r + R <= p.n`; `m0 + MB <= p.m`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn bf16_tile<const R: usize, const MB: usize>(p: &Product, r: usize, m0: usize) {
    let (x, w, k) = (p.x as *const u16, p.w as *const u16, p.k);
    let mut acc = [[_mm512_setzero_ps(); R]; MB];
    let full = k - k % 32;
    // SAFETY: every load reads 32 elements at kk < full <= k (or, masked, only the ones below k)
    // of a row inside x (rows m0..m0+MB < m) or w (rows r..r+R < n).
    unsafe {
        let mut kk = 0;
        while kk < full {
            let mut wv = [_mm512_setzero_si512(); R];
            for (i, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(w.add((r + i) * k + kk) as *const __m512i);
            }
            for (j, a) in acc.iter_mut().enumerate() {
                let xv: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                    x.add((m0 + j) * k + kk) as *const __m512i,
                ));
                for (i, ai) in a.iter_mut().enumerate() {
                    *ai =
                        _mm512_dpbf16_ps(*ai, xv, std::mem::transmute::<__m512i, __m512bh>(wv[i]));
                }
            }
            kk += 32;
        }
        if full < k {
            let mask: __mmask32 = (1u32 << (k - full)) - 1;
            let mut wv = [_mm512_setzero_si512(); R];
            for (i, v) in wv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_epi16(mask, w.add((r + i) * k + full) as *const i16);
            }
            for (j, a) in acc.iter_mut().enumerate() {
                let xv: __m512bh = std::mem::transmute(_mm512_maskz_loadu_epi16(
                    mask,
                    x.add((m0 + j) * k + full) as *const i16,
                ));
                for (i, ai) in a.iter_mut().enumerate() {
                    *ai =
                        _mm512_dpbf16_ps(*ai, xv, std::mem::transmute::<__m512i, __m512bh>(wv[i]));
                }
            }
        }
        let (bias, out) = (p.bias as *const u16, p.out as *mut u16);
        for (j, a) in acc.iter().enumerate() {
            for (i, ai) in a.iter().enumerate() {
                let mut s = _mm512_reduce_add_ps(*ai);
                if !bias.is_null() {
                    s += half::bf16::from_bits(*bias.add(r + i)).to_f32();
                }
                *out.add((m0 + j) * p.n + r + i) = half::bf16::from_f32(s).to_bits();
            }
        }
    }
}

/// Dispatches the tiles for weight rows `r0..r1` (f32).
///
/// # Safety
/// As for [`rows`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn f32_rows(p: &Product, r0: usize, r1: usize) {
    let mut r = r0;
    // SAFETY (all tile calls): r + R <= r1 <= n and m0 + MB <= m, as the tiles require.
    unsafe {
        while r + ROWS <= r1 {
            f32_x_tiles::<ROWS>(p, r);
            r += ROWS;
        }
        while r < r1 {
            f32_x_tiles::<1>(p, r);
            r += 1;
        }
    }
}

/// Weight rows `r..r+R` against every row of x.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn f32_x_tiles<const R: usize>(p: &Product, r: usize) {
    let mut m0 = 0;
    // SAFETY: see f32_rows.
    unsafe {
        while m0 + XROWS <= p.m {
            f32_tile::<R, XROWS>(p, r, m0);
            m0 += XROWS;
        }
        match p.m - m0 {
            0 => {}
            1 => f32_tile::<R, 1>(p, r, m0),
            2 => f32_tile::<R, 2>(p, r, m0),
            3 => f32_tile::<R, 3>(p, r, m0),
            _ => unreachable!("XROWS is 4"),
        }
    }
}

/// `out[m0..m0+MB, r..r+R]` (f32).
///
/// # Safety
/// `p` as for [`run`]; `r + R <= p.n`; `m0 + MB <= p.m`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn f32_tile<const R: usize, const MB: usize>(p: &Product, r: usize, m0: usize) {
    let (x, w, k) = (p.x as *const f32, p.w as *const f32, p.k);
    let mut acc = [[_mm512_setzero_ps(); R]; MB];
    let full = k - k % 16;
    // SAFETY: every load reads 16 elements at kk < full <= k (or, masked, only the ones below k)
    // of a row inside x (rows m0..m0+MB < m) or w (rows r..r+R < n).
    unsafe {
        let mut kk = 0;
        while kk < full {
            let mut wv = [_mm512_setzero_ps(); R];
            for (i, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(w.add((r + i) * k + kk));
            }
            for (j, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(x.add((m0 + j) * k + kk));
                for (i, ai) in a.iter_mut().enumerate() {
                    *ai = _mm512_fmadd_ps(xv, wv[i], *ai);
                }
            }
            kk += 16;
        }
        if full < k {
            let mask: __mmask16 = (1u16 << (k - full)) - 1;
            let mut wv = [_mm512_setzero_ps(); R];
            for (i, v) in wv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask, w.add((r + i) * k + full));
            }
            for (j, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, x.add((m0 + j) * k + full));
                for (i, ai) in a.iter_mut().enumerate() {
                    *ai = _mm512_fmadd_ps(xv, wv[i], *ai);
                }
            }
        }
        let (bias, out) = (p.bias as *const f32, p.out as *mut f32);
        if R == 4 && MB == 4 {
            // A full tile: its 16 sums in one register (lane 4j + i holds x row j · weight
            // row i), so row j's four outputs leave as one 128-bit store.
            let mut sums = reduce16(|j, i| acc[j][i]);
            if !bias.is_null() {
                sums = _mm512_add_ps(sums, _mm512_broadcast_f32x4(_mm_loadu_ps(bias.add(r))));
            }
            let row = |j: usize| out.add((m0 + j) * p.n + r);
            _mm_storeu_ps(row(0), _mm512_extractf32x4_ps::<0>(sums));
            _mm_storeu_ps(row(1), _mm512_extractf32x4_ps::<1>(sums));
            _mm_storeu_ps(row(2), _mm512_extractf32x4_ps::<2>(sums));
            _mm_storeu_ps(row(3), _mm512_extractf32x4_ps::<3>(sums));
            return;
        }
        if R == 4 {
            // A partial tile (fewer x rows: an expert's few tokens, a single-row decode): each x
            // row's four sums in one 128-bit register.
            for (j, a) in acc.iter().enumerate() {
                let mut sums = reduce4(a[0], a[1], a[2], a[3]);
                if !bias.is_null() {
                    sums = _mm_add_ps(sums, _mm_loadu_ps(bias.add(r)));
                }
                _mm_storeu_ps(out.add((m0 + j) * p.n + r), sums);
            }
            return;
        }
        for (j, a) in acc.iter().enumerate() {
            for (i, ai) in a.iter().enumerate() {
                let mut s = _mm512_reduce_add_ps(*ai);
                if !bias.is_null() {
                    s += *bias.add(r + i);
                }
                *out.add((m0 + j) * p.n + r + i) = s;
            }
        }
    }
}

/// The horizontal sums of 16 registers `v(j, i)` (j, i < 4) in one: lane `4j + i` holds the sum
/// of `v(j, i)`'s lanes. A transposing tree of 45 shuffles and adds instead of 16 separate
/// reductions (~8 each), which at the tiny model's K = 32..256 cost as much as the products.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(v: impl Fn(usize, usize) -> __m512) -> __m512 {
    // 16 → 8: each 128-bit block of s1[q] holds partial sums [a, b, a, b] of a = v[2q],
    // b = v[2q + 1] (v numbered 4j + i).
    let s1: [__m512; 8] = std::array::from_fn(|q| {
        let (a, b) = (
            v((2 * q) / 4, (2 * q) % 4),
            v((2 * q + 1) / 4, (2 * q + 1) % 4),
        );
        _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
    });
    // 8 → 4: each block of s2[j] holds partials [v[4j], v[4j + 1], v[4j + 2], v[4j + 3]].
    let s2: [__m512; 4] = std::array::from_fn(|j| {
        let (c, d) = (s1[2 * j], s1[2 * j + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(c, d),
            _mm512_shuffle_ps::<0xEE>(c, d),
        )
    });
    // 4 → 2 → 1 across blocks: block j of the result sums s2[j]'s four blocks.
    let pair = |a: __m512, b: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    };
    pair(pair(s2[0], s2[1]), pair(s2[2], s2[3]))
}

/// The horizontal sums of four registers: lane i of the result is the sum of the lanes of the
/// i-th. 13 shuffles and adds instead of four separate reductions (~8 each).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
    // Each 128-bit block of `ab` holds partials [a, b, a, b], of `cd` [c, d, c, d].
    let ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    let cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    // Each block: partials [a, b, c, d]; then the four blocks folded into one.
    let abcd = _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(ab, cd),
        _mm512_shuffle_ps::<0xEE>(ab, cd),
    );
    let half = _mm256_add_ps(
        _mm512_castps512_ps256(abcd),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(abcd))),
    );
    _mm_add_ps(
        _mm256_castps256_ps128(half),
        _mm256_extractf128_ps::<1>(half),
    )
}

// ---------------------------------------------------------------------------------------------
// The thread pool.
//
// One job at a time. A job is a `Fn()` that every participating thread calls; it loops taking
// chunks from an atomic counter until none are left, so participants may join late or not at all.
// `state` packs: bits 0..8 the number of helpers inside the job, bits 8..16 how many may join,
// bit 16 "open for joining", bits 17.. the job's epoch. A helper joins only an open job of the
// epoch it saw, by CAS (count + 1); the caller, once the counter is exhausted, closes the job and
// waits for the count to drop to zero before it returns, so no helper ever touches a finished job.

const COUNT_MASK: u64 = 0xff;
const MAX_SHIFT: u32 = 8;
const OPEN: u64 = 1 << 16;
const EPOCH_SHIFT: u32 = 17;

type Job = *const (dyn Fn() + Sync + 'static);

struct Shared {
    state: AtomicU64,
    /// Written by the caller only while no helper is in a job (count 0, closed); read by a helper
    /// only after it joined the job published with it (the CAS acquires the caller's release).
    job: UnsafeCell<Job>,
    /// `sleeping[i]`: helper i is parked (or about to); the caller must unpark it.
    sleeping: Vec<AtomicBool>,
}

// SAFETY: `job` is accessed under the protocol described above; everything else is atomic.
unsafe impl Sync for Shared {}

struct Pool {
    shared: &'static Shared,
    helpers: Vec<Thread>,
    /// One job at a time; a second concurrent caller computes on its own thread instead.
    busy: Mutex<()>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = cores.clamp(1, 16) - 1;
        let noop: &'static (dyn Fn() + Sync) = &|| {};
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            state: AtomicU64::new(0),
            job: UnsafeCell::new(noop as Job),
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }));
        let mut helpers = Vec::with_capacity(n);
        for i in 0..n {
            let spawned = std::thread::Builder::new()
                .name(format!("gemv-{i}"))
                .spawn(move || helper(shared, i));
            match spawned {
                Ok(h) => helpers.push(h.thread().clone()),
                Err(_) => break,
            }
        }
        Pool {
            shared,
            helpers,
            busy: Mutex::new(()),
        }
    })
}

impl Pool {
    /// Calls `work` on this thread and on up to `threads - 1` helpers; returns when all are done.
    fn run(&self, threads: usize, work: &(dyn Fn() + Sync)) {
        let _guard = match self.busy.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return work(),
        };
        let sh = self.shared;
        let joiners = (threads - 1).min(self.helpers.len()) as u64;
        // SAFETY: we hold `busy`, and the previous job ended with its count at zero and closed, so
        // no helper reads `job` now. The erased lifetime is sound because this function does not
        // return (nor unwind: `Close` below waits on drop) before every helper has left the job.
        unsafe {
            *sh.job.get() = std::mem::transmute::<*const (dyn Fn() + Sync + '_), Job>(work);
        }
        let epoch = (sh.state.load(Ordering::Relaxed) >> EPOCH_SHIFT) + 1;
        sh.state.store(
            (epoch << EPOCH_SHIFT) | OPEN | (joiners << MAX_SHIFT),
            Ordering::SeqCst,
        );
        for (i, s) in sh.sleeping.iter().enumerate().take(joiners as usize) {
            if s.swap(false, Ordering::SeqCst) {
                self.helpers[i].unpark();
            }
        }
        /// Closes the job and waits for the helpers in it, also if `work` unwinds.
        struct Close(&'static Shared);
        impl Drop for Close {
            fn drop(&mut self) {
                self.0.state.fetch_and(!OPEN, Ordering::AcqRel);
                let mut spins = 0u32;
                while self.0.state.load(Ordering::Acquire) & COUNT_MASK != 0 {
                    spins += 1;
                    if spins.is_multiple_of(256) {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        let _close = Close(sh);
        work();
    }
}

/// A helper thread's life: wait for a job, join it if there is room, run it, repeat.
fn helper(sh: &'static Shared, index: usize) {
    let mut seen = sh.state.load(Ordering::Acquire) >> EPOCH_SHIFT;
    loop {
        let s = wait_for_job(sh, index, seen);
        seen = s >> EPOCH_SHIFT;
        if join(sh, seen) {
            // SAFETY: joining acquired the state the caller released after writing `job`, and the
            // caller keeps the closure alive until we leave (count back down).
            let job = unsafe { &**sh.job.get() };
            job();
            sh.state.fetch_sub(1, Ordering::Release);
        }
    }
}

/// Spins (yielding now and then) and then parks until the epoch differs from `seen`.
fn wait_for_job(sh: &'static Shared, index: usize, seen: u64) -> u64 {
    let mut since = Instant::now();
    let mut spins = 0u32;
    loop {
        let s = sh.state.load(Ordering::Acquire);
        if s >> EPOCH_SHIFT != seen {
            return s;
        }
        spins += 1;
        if !spins.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        if since.elapsed() < SPIN {
            // Let a runnable OpenMP worker (or anything else) have this core.
            std::thread::yield_now();
            continue;
        }
        // Park. The SeqCst store and load pair with the caller's SeqCst state store and
        // `sleeping` swap: either we see the new job here, or the caller sees us asleep.
        sh.sleeping[index].store(true, Ordering::SeqCst);
        let s = sh.state.load(Ordering::SeqCst);
        if s >> EPOCH_SHIFT != seen {
            sh.sleeping[index].store(false, Ordering::Relaxed);
            return s;
        }
        std::thread::park();
        sh.sleeping[index].store(false, Ordering::Relaxed);
        since = Instant::now();
    }
}

/// Joins the job of `epoch` if it is still open and has room.
fn join(sh: &Shared, epoch: u64) -> bool {
    let mut s = sh.state.load(Ordering::Acquire);
    loop {
        let room = (s >> MAX_SHIFT) & COUNT_MASK;
        if s >> EPOCH_SHIFT != epoch || s & OPEN == 0 || s & COUNT_MASK >= room {
            return false;
        }
        match sh
            .state
            .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return true,
            Err(now) => s = now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip() -> bool {
        if !cpu_supported() {
            eprintln!("NOTE: gemv tests skipped: this CPU lacks avx512f/avx512bw/avx512bf16");
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

    fn check(kind: Kind, lead: &[i64], n: i64, k: i64, with_bias: bool) {
        check_on(threading(), kind, lead, n, k, with_bias)
    }

    fn check_on(threading: Threading, kind: Kind, lead: &[i64], n: i64, k: i64, with_bias: bool) {
        let mut xs = lead.to_vec();
        xs.push(k);
        let x = Tensor::randn(xs.as_slice(), (Kind::Float, Device::Cpu)).to_kind(kind);
        let w = (Tensor::randn([n, k], (Kind::Float, Device::Cpu)) * 0.1).to_kind(kind);
        let b = with_bias.then(|| Tensor::randn([n], (Kind::Float, Device::Cpu)).to_kind(kind));
        let y = try_linear_on(&x, &w, b.as_ref(), threading).unwrap_or_else(|| {
            panic!("kernel not used for {kind:?} {lead:?} n={n} k={k} bias={with_bias}")
        });
        let r = reference(&x, &w, b.as_ref());
        let mut want_shape = lead.to_vec();
        want_shape.push(n);
        assert_eq!(y.size(), want_shape);
        assert_eq!(y.kind(), kind);
        let yf = y.to_kind(Kind::Float);
        // bf16 output: one rounding (relative 2^-8) plus f32 summation-order noise, which grows
        // with sqrt(K) times the typical |x_i w_i|.
        let rel = if kind == Kind::BFloat16 {
            1.0 / 256.0
        } else {
            1e-6
        };
        let scale = 0.1 * (k as f64).sqrt();
        let tol = r.abs() * rel + 1e-5 * scale + 1e-6;
        let err = (&yf - &r).abs();
        let bad = err.gt_tensor(&tol).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(
            bad,
            0,
            "{kind:?} {lead:?} n={n} k={k} bias={with_bias}: max err {} (max |ref| {})",
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
    fn strided_x_is_copied_and_matches() {
        if skip() {
            return;
        }
        let _g = tch::no_grad_guard();
        for kind in [Kind::BFloat16, Kind::Float] {
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
                        check_on(threading, Kind::BFloat16, &[1], 2051, 1536, false);
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
            check_on(Threading::Own, Kind::BFloat16, &[1], 8963, 1536, true);
            check_on(Threading::Own, Kind::BFloat16, &[3], 1537, 8960, false);
            check_on(Threading::Own, Kind::Float, &[2], 3001, 1536, true);
            // Let the helpers park, then wake them.
            std::thread::sleep(SPIN * 3);
        }
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        let _g = tch::no_grad_guard();
        let opts = (Kind::BFloat16, Device::Cpu);
        let w = Tensor::randn([8, 16], opts);
        // Too many rows, wrong dtype mix, transposed (non-contiguous) weight, f16, wrong bias.
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
        assert!(try_linear(&Tensor::randn([1, 16], h), &Tensor::randn([8, 16], h), None).is_none());
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
