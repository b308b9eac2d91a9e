//! The one run-time setting shared by every CPU kernel family (`gemv/` and `quant/`):
//! `THINKBENCH_ISA=avx2` keeps an AVX-512 machine on the AVX2 kernels, so that one machine can
//! compare both in one run. Each family still detects the features its own kernels need.

use std::sync::OnceLock;

/// Whether `THINKBENCH_ISA=avx2` is set (read once per process).
pub fn capped_at_avx2() -> bool {
    static CAP: OnceLock<bool> = OnceLock::new();
    *CAP.get_or_init(|| matches!(std::env::var("THINKBENCH_ISA").as_deref(), Ok("avx2")))
}
