//! The process's memory allocator: mimalloc, for Rust's allocations and, through its `override`
//! feature, for everything else in the process. `override` defines `malloc`, `free`,
//! `posix_memalign` and the rest in the executable, and the dynamic linker binds libtorch's calls
//! to them, so tensor buffers come from mimalloc too.
//!
//! Why: libtorch allocates every tensor's buffer with `posix_memalign`, and a decode step or a
//! training pass on a small model allocates and frees hundreds of buffers of a few KB to a few
//! MB. On the GRPO benchmark (`scripts/bench_grpo.sh`) glibc's allocator spent 6–9% of the time
//! in `_int_malloc`, `malloc_consolidate` and `unlink_chunk`, plus page faults on memory it had
//! handed back to the system between steps; mimalloc's size-class pages serve those requests
//! from thread-local free lists.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc.h, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the process instead of returning it to the system. A training step
/// allocates and frees the same activation and gradient buffers on each worker, step after step;
/// by default mimalloc gives freed memory back after 10 ms and every step then faults it in again
/// (zeroed pages, about 5% of a step on the tiny benchmark). The peak is unchanged; only the
/// return of memory between steps is skipped. For long-lived loops (training), not the workbench,
/// which should give memory back when a generation ends.
pub fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's runtime options (a plain integer it reads when deciding
    // whether to purge); -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

#[cfg(test)]
mod tests {
    /// The point of the override: libtorch's tensor buffers (allocated in C++ with
    /// `posix_memalign`) live in mimalloc's heap. If linking ever stopped binding libtorch to
    /// mimalloc, this fails rather than the speed quietly dropping.
    #[test]
    fn libtorch_tensor_buffers_come_from_mimalloc() {
        for n in [16i64, 100_000, 4_000_000] {
            let t = tch::Tensor::zeros([n], (tch::Kind::Float, tch::Device::Cpu));
            // SAFETY: only asks mimalloc whether the address lies in memory it manages.
            let ours = unsafe { libmimalloc_sys::mi_is_in_heap_region(t.data_ptr()) };
            assert!(ours, "a tensor of {n} floats was not allocated by mimalloc");
        }
        // On the heap on purpose (an array would sit on the stack): Rust's own allocations too.
        #[allow(clippy::useless_vec)]
        let local = vec![0u8; 64];
        // SAFETY: as above.
        assert!(unsafe { libmimalloc_sys::mi_is_in_heap_region(local.as_ptr().cast()) });
    }
}
