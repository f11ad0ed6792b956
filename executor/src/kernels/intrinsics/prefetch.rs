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
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(data);
        let p = data.as_ptr().cast::<i8>();
        // Every line the slice touches: its first byte and then one per line up to its last.
        let first = p as usize;
        let last = first + bytes.saturating_sub(1);
        let mut line = first & !63;
        while bytes > 0 && line <= last {
            let at = p.wrapping_add(line.max(first) - first);
            // SAFETY: a prefetch never faults and writes nothing, whatever the address (here
            // one inside `data`); the SSE instructions it needs are part of x86-64's baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at) };
            line += 64;
        }
    }
}
