//! The one run-time setting shared by every CPU kernel family (`gemv/` and `quant/`):
//! `THINKBENCH_ISA=avx2` keeps an AVX-512 machine on the AVX2 kernels, so that one machine can
//! compare both in one run. Each family still detects the features its own kernels need.

use std::sync::OnceLock;

/// Whether `THINKBENCH_ISA=avx2` is set (read once per process).
pub fn capped_at_avx2() -> bool {
    static CAP: OnceLock<bool> = OnceLock::new();
    *CAP.get_or_init(|| matches!(std::env::var("THINKBENCH_ISA").as_deref(), Ok("avx2")))
}

/// With `THINKBENCH_ISA=avx2`, caps libtorch's own kernels and the BLAS and oneDNN it calls at
/// AVX2 as well, through their own variables (each unless already set), so that an AVX-512
/// machine stands in for an AVX2-only one as a whole: without, the cap would compare our AVX2
/// kernels against libtorch's AVX-512 GEMM, which no AVX2 machine has.
///
/// Call first thing in `main`, while the process has one thread and before any libtorch op.
pub fn cap_libraries_too() {
    if !capped_at_avx2() {
        return;
    }
    let caps = [
        ("ATEN_CPU_CAPABILITY", "avx2"),
        ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
        ("ONEDNN_MAX_CPU_ISA", "AVX2"),
    ];
    for (var, value) in caps {
        if std::env::var_os(var).is_none() {
            // The caller's promise: no other thread yet, so nothing reads the environment meanwhile.
            std::env::set_var(var, value);
        }
    }
}
