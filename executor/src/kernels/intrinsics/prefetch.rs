//! Software prefetch: a hint that brings memory about to be read into the cache.
//!
//! A decode row reads its context's keys and values from the pools: short runs (one KV head's
//! values of a slot) at a stride, between which the attention computes. The hardware's own
//! prefetchers follow such a pattern only partly, so the reader asks for the rows a little
//! ahead of their use.

/// Asks the CPU to bring the cache lines that hold `data` into the first-level cache. It
/// changes nothing a program can observe but timing.
#[inline(always)]
pub(crate) fn prefetch<T>(data: &[T]) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let bytes = std::mem::size_of_val(data);
    let p = data.as_ptr().cast::<i8>();
    // One address per 64-byte line from the first byte on, and the last byte: together they
    // touch every line the slice spans.
    let last = bytes.checked_sub(1).into_iter();
    for off in (0..bytes).step_by(64).chain(last) {
        // SAFETY: a prefetch never faults and writes nothing, whatever the address (here one
        // inside `data`); the SSE instructions it needs are part of x86-64's baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
    }
}
