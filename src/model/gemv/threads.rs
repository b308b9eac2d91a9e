//! Who runs a product's rows: libtorch's own OpenMP threads (found in the process with `dlsym`), or
//! a small pool of this module's helper threads. See the parent module's notes for why.

use std::cell::UnsafeCell;
use std::ffi::{c_uint, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::{OFF, ON, UNSET};

/// How long an idle helper of our own pool keeps looking for work before it parks.
pub(super) const SPIN: Duration = Duration::from_micros(500);

/// Calls `work` on `threads` threads (this one included) and returns when all have returned.
/// `work` hands out its own pieces (an atomic counter), so a thread that joins late or not at all
/// only leaves its share to the others.
pub(super) fn parallel(threading: Threading, threads: usize, work: &(dyn Fn() + Sync)) {
    match threading {
        Threading::OpenMp(parallel) => {
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
            pool.run(threads.min(pool.helpers.len() + 1), work);
        }
    }
}

/// Who runs the helper threads.
#[derive(Clone, Copy)]
pub(super) enum Threading {
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

pub(super) fn threading() -> Threading {
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
