//! A hint to the CPU: read a cache line now that will be needed soon.
//!
//! Per-tag state (a decoder's tag table, the tag watch, the open windows)
//! is indexed by tag, and rows come in the order a plant's clock wrote them,
//! so at 20,000 tags almost every row's state is a cache miss. A loop over
//! a batch asks for the line of a row a few places ahead and handles the
//! current one while it arrives (see `docs/performance.md`).

/// How many rows ahead a batch loop prefetches: enough rows' work to cover
/// a memory load, few enough that the lines are still cached when used.
pub const AHEAD: usize = 8;

/// Starts loading the cache line holding `*p` into every cache level. A
/// prefetch never faults and changes nothing, whatever `p` is.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 (SSE, in the x86-64 baseline) only hints the
    // cache; it reads no memory the program sees and never faults.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
