//! The element type of the host K/V pools (`--kv-cache-dtype`).
//!
//! f16 and bf16 halve the pool's memory. With them the attention also computes the way ggml's
//! CPU backend does with its default f16 cache: the query is rounded to the cache type before
//! its dot products with the keys, and the softmax weights are rounded before they weight the
//! values (ggml converts the right-hand operand of a product to the left's type). That keeps
//! greedy output close to llama.cpp's on the same file.

use half::{bf16, f16};

use crate::error::{ExecutorError, Result};

/// Element type of the K/V cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    /// 4 bytes per value, the computation's own precision.
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl KvDtype {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 | KvDtype::Bf16 => 2,
        }
    }

    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::Bf16 => "bf16",
        }
    }

    /// `x` rounded to this type (the identity for f32).
    #[inline(always)]
    pub(crate) fn round(self, x: f32) -> f32 {
        match self {
            KvDtype::F32 => x,
            KvDtype::F16 => f16::from_f32(x).to_f32(),
            KvDtype::Bf16 => bf16::from_f32(x).to_f32(),
        }
    }

    /// Each value of `v` rounded to this type in place, as [`KvDtype::round`] rounds it, a
    /// run at a time through `half`'s slice conversions (its vector instructions where the
    /// CPU has them; one value at a time, each conversion is a call).
    pub(crate) fn round_slice(self, v: &mut [f32]) {
        match self {
            KvDtype::F32 => {}
            KvDtype::F16 => round_runs::<f16>(v),
            KvDtype::Bf16 => round_runs::<bf16>(v),
        }
    }
}

/// `v` rounded in place to the half type `H`, through a buffer of `H` a run at a time.
fn round_runs<H: Copy + Default>(v: &mut [f32])
where
    [H]: half::slice::HalfFloatSliceExt,
{
    use half::slice::HalfFloatSliceExt;
    const RUN: usize = 64;
    let mut buf = [H::default(); RUN];
    for run in v.chunks_mut(RUN) {
        let b = &mut buf[..run.len()];
        b.convert_from_f32_slice(run);
        b.convert_to_f32_slice(run);
    }
}

impl std::str::FromStr for KvDtype {
    type Err = ExecutorError;

    /// `f32`/`float32`, `f16`/`float16`/`half`, `bf16`/`bfloat16`.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(KvDtype::F32),
            "f16" | "float16" | "fp16" | "half" => Ok(KvDtype::F16),
            "bf16" | "bfloat16" => Ok(KvDtype::Bf16),
            _ => Err(ExecutorError::Unsupported(format!(
                "KV cache dtype {s:?} (supported: f16, bf16, f32)"
            ))),
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Plain values that travel as little-endian bytes.
trait LeBytes: bytemuck::Pod {
    fn le(self) -> Self;
}

impl LeBytes for f32 {
    fn le(self) -> Self {
        f32::from_bits(self.to_bits().to_le())
    }
}

impl LeBytes for u16 {
    fn le(self) -> Self {
        self.to_le()
    }
}

/// Appends `v` as little-endian bytes.
fn extend_le<T: LeBytes>(out: &mut Vec<u8>, v: &[T]) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(v));
    } else {
        for x in v {
            out.extend_from_slice(bytemuck::bytes_of(&x.le()));
        }
    }
}

/// Fills `dst` from little-endian bytes (exactly `dst`'s size).
fn store_le<T: LeBytes>(dst: &mut [T], bytes: &[u8]) {
    bytemuck::cast_slice_mut::<T, u8>(dst).copy_from_slice(bytes);
    if !cfg!(target_endian = "little") {
        for x in dst {
            *x = x.le();
        }
    }
}

/// One layer's K or V pool: `[num_slots][width]` values of one [`KvDtype`].
///
/// Half-width pools hold the raw bits (`u16`): a zeroed `Vec<u16>` comes from the allocator's
/// zeroed pages, so an unused pool costs address space, not resident memory.
#[derive(Debug, Clone)]
pub(crate) enum KvPool {
    F32(Vec<f32>),
    F16(Vec<u16>),
    Bf16(Vec<u16>),
}

impl KvPool {
    /// A zeroed pool of `len` values.
    pub(crate) fn zeros(dtype: KvDtype, len: usize) -> Self {
        match dtype {
            KvDtype::F32 => KvPool::F32(vec![0.0; len]),
            KvDtype::F16 => KvPool::F16(vec![0; len]),
            KvDtype::Bf16 => KvPool::Bf16(vec![0; len]),
        }
    }

    /// Values stored.
    pub(crate) fn len(&self) -> usize {
        match self {
            KvPool::F32(v) => v.len(),
            KvPool::F16(v) | KvPool::Bf16(v) => v.len(),
        }
    }

    /// Stores `src` at value offset `off`.
    pub(crate) fn write(&mut self, off: usize, src: &[f32]) {
        use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
        let end = off + src.len();
        match self {
            KvPool::F32(v) => v[off..end].copy_from_slice(src),
            KvPool::F16(v) => v[off..end]
                .reinterpret_cast_mut::<f16>()
                .convert_from_f32_slice(src),
            KvPool::Bf16(v) => v[off..end]
                .reinterpret_cast_mut::<bf16>()
                .convert_from_f32_slice(src),
        }
    }

    /// Appends `len` stored values at offset `off` to `out` as little-endian bytes of the
    /// pool's type (one copy on little-endian machines).
    pub(crate) fn read_raw(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        match self {
            KvPool::F32(v) => extend_le(out, &v[off..off + len]),
            KvPool::F16(v) | KvPool::Bf16(v) => extend_le(out, &v[off..off + len]),
        }
    }

    /// Stores values given as little-endian bytes of the pool's type at offset `off`.
    pub(crate) fn write_raw(&mut self, off: usize, bytes: &[u8]) {
        match self {
            KvPool::F32(v) => store_le(&mut v[off..off + bytes.len() / 4], bytes),
            KvPool::F16(v) | KvPool::Bf16(v) => store_le(&mut v[off..off + bytes.len() / 2], bytes),
        }
    }

    /// Reads `dst.len()` values at offset `off` as f32.
    pub(crate) fn read(&self, off: usize, dst: &mut [f32]) {
        // One "slot" 0 with a zero-width row: its only column run starts at `off`.
        let len = dst.len();
        self.read_cols(&[0], 0, off, len, dst);
    }

    /// Reads `len` values at column `col` of each slot's row (`width` values from
    /// `slot * width`) into consecutive `len`-value rows of `dst`, as f32: one KV head's keys
    /// or values of a whole context in one call, converted with the CPU's vector instructions.
    pub(crate) fn read_cols(
        &self,
        slots: &[u32],
        width: usize,
        col: usize,
        len: usize,
        dst: &mut [f32],
    ) {
        let cols = Cols {
            slots,
            ahead: &[],
            width,
            col,
            len,
        };
        #[cfg(target_arch = "x86_64")]
        if let KvPool::F16(_) = self {
            if let Some(v4) = pulp::x86::V4::try_new() {
                return v4.vectorize(widen::x86::Read(self, v4, cols, dst));
            }
            if let Some(v3) = pulp::x86::V3::try_new() {
                return v3.vectorize(widen::x86::Read(self, v3, cols, dst));
            }
        }
        self.read_cols_with(widen::Plain, cols, dst);
    }

    /// [`KvPool::read_cols`] with the f16 widening kernel `kernel`, for callers already
    /// running under its instruction set.
    #[inline(always)]
    pub(crate) fn read_cols_with<W: Widen>(&self, kernel: W, cols: Cols<'_>, dst: &mut [f32]) {
        let len = cols.len;
        let rows = dst[..cols.slots.len() * len]
            .chunks_exact_mut(len)
            .zip(cols.slots);
        let src = |s: u32| s as usize * cols.width + cols.col;
        // The slot `PREFETCH_ROWS` rows on, in this read or after it.
        let later = |i: usize| {
            let j = i + PREFETCH_ROWS;
            cols.slots
                .get(j)
                .or_else(|| cols.ahead.get(j - cols.slots.len()))
        };
        let soon = |i: usize| later(i).map(|&s| src(s)..src(s) + len);
        match self {
            KvPool::F32(v) => {
                for (i, (d, &s)) in rows.enumerate() {
                    prefetch_rows(v, soon(i));
                    d.copy_from_slice(&v[src(s)..src(s) + len]);
                }
            }
            KvPool::F16(v) => {
                for (i, (d, &s)) in rows.enumerate() {
                    prefetch_rows(v, soon(i));
                    kernel.row(&v[src(s)..src(s) + len], d);
                }
            }
            KvPool::Bf16(v) => {
                for (i, (d, &s)) in rows.enumerate() {
                    prefetch_rows(v, soon(i));
                    for (o, &b) in d.iter_mut().zip(&v[src(s)..src(s) + len]) {
                        *o = f32::from_bits(u32::from(b) << 16);
                    }
                }
            }
        }
    }
}

/// Prefetches `v[at]`, if there is such a range.
#[inline(always)]
fn prefetch_rows<T>(v: &[T], at: Option<std::ops::Range<usize>>) {
    if let Some(row) = at.and_then(|at| v.get(at)) {
        crate::kernels::prefetch(row);
    }
}

/// Which values [`KvPool::read_cols_with`] reads: `len` values at column `col` of each slot's
/// row (`width` values from `slot * width`).
#[derive(Clone, Copy)]
pub(crate) struct Cols<'a> {
    pub slots: &'a [u32],
    /// The slots that follow `slots` in the reader's context (empty if none): their rows are
    /// prefetched [`PREFETCH_ROWS`] ahead of their use.
    pub ahead: &'a [u32],
    pub width: usize,
    pub col: usize,
    pub len: usize,
}

pub(crate) use widen::{Plain, Widen};

/// How many rows ahead of its use [`KvPool::read_cols_with`] prefetches a row: enough to
/// cover the memory's latency, few enough to keep the lines in flight within what the core
/// tracks.
const PREFETCH_ROWS: usize = 16;

/// f16 → f32 of whole rows (exact, as every f16 is an f32), per instruction set.
mod widen {
    use half::f16;

    /// An f16 widening kernel of one instruction set.
    pub(crate) trait Widen: Copy {
        fn row(self, src: &[u16], dst: &mut [f32]);
    }

    /// The plain conversion, for CPUs without AVX2.
    #[derive(Clone, Copy)]
    pub(crate) struct Plain;

    impl Widen for Plain {
        #[inline(always)]
        fn row(self, src: &[u16], dst: &mut [f32]) {
            scalar(src, dst);
        }
    }

    /// The plain conversion (tails and CPUs without AVX2).
    #[inline(always)]
    pub(super) fn scalar(src: &[u16], dst: &mut [f32]) {
        for (o, &h) in dst.iter_mut().zip(src) {
            *o = f16::from_bits(h).to_f32();
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub(crate) mod x86 {
        use std::arch::x86_64::{__m128i, __m256, __m256i, __m512};

        use pulp::cast;
        use pulp::x86::{V3, V4};

        use super::super::{Cols, KvPool};
        use super::Widen;

        impl Widen for V4 {
            #[inline(always)]
            fn row(self, src: &[u16], dst: &mut [f32]) {
                row_v4(self, src, dst);
            }
        }

        impl Widen for V3 {
            #[inline(always)]
            fn row(self, src: &[u16], dst: &mut [f32]) {
                row_v3(self, src, dst);
            }
        }

        // The dispatched read as a struct with a plain call: a closure's shim may not inline
        // into the function compiled for the instruction set, and each intrinsic would be a
        // call.
        pub(crate) struct Read<'a, K>(pub &'a KvPool, pub K, pub Cols<'a>, pub &'a mut [f32]);

        impl<K: Widen> pulp::NullaryFnOnce for Read<'_, K> {
            type Output = ();

            #[inline(always)]
            fn call(self) {
                self.0.read_cols_with(self.1, self.2, self.3);
            }
        }

        /// 16 values per `vcvtph2ps`.
        #[inline(always)]
        pub(crate) fn row_v4(simd: V4, src: &[u16], dst: &mut [f32]) {
            let (s16, s_tail) = src.as_chunks::<16>();
            let (d16, d_tail) = dst.as_chunks_mut::<16>();
            for (s, d) in s16.iter().zip(d16.iter_mut()) {
                let v: __m512 = simd.avx512f._mm512_cvtph_ps(cast::<[u16; 16], __m256i>(*s));
                *d = cast(v);
            }
            super::scalar(s_tail, d_tail);
        }

        /// 8 values at a time with integer instructions (AVX2 has no f16 conversion in this
        /// instruction set): the exponent and mantissa bits shifted into place and rescaled
        /// by 2^112, which is exact for normal and subnormal halves; infinities and NaNs keep
        /// an all-ones exponent.
        #[inline(always)]
        pub(crate) fn row_v3(simd: V3, src: &[u16], dst: &mut [f32]) {
            let (s8, s_tail) = src.as_chunks::<8>();
            let (d8, d_tail) = dst.as_chunks_mut::<8>();
            let (a, a2) = (simd.avx, simd.avx2);
            let scale = a._mm256_set1_ps(f32::from_bits(0x7780_0000)); // 2^112
            let magnitude = a._mm256_set1_epi32(0x7fff);
            let sign = a._mm256_set1_epi32(0x8000);
            let exp = a._mm256_set1_epi32(0x7c00);
            let inf = a._mm256_set1_epi32(0x7f80_0000);
            for (s, d) in s8.iter().zip(d8.iter_mut()) {
                let h = a2._mm256_cvtepu16_epi32(cast::<[u16; 8], __m128i>(*s));
                let body = a2._mm256_slli_epi32::<13>(a2._mm256_and_si256(h, magnitude));
                let f = a._mm256_mul_ps(a._mm256_castsi256_ps(body), scale);
                let special = a2._mm256_cmpeq_epi32(a2._mm256_and_si256(h, exp), exp);
                let f = a._mm256_or_ps(f, a._mm256_castsi256_ps(a2._mm256_and_si256(special, inf)));
                let s = a2._mm256_slli_epi32::<16>(a2._mm256_and_si256(h, sign));
                let v: __m256 = a._mm256_or_ps(f, a._mm256_castsi256_ps(s));
                *d = cast(v);
            }
            super::scalar(s_tail, d_tail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f16 bit pattern widens to the half crate's value under each kernel the CPU runs
    /// (NaNs to a NaN with the same sign).
    #[test]
    fn f16_widening_is_exact_for_every_half() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let want: Vec<f32> = all.iter().map(|&h| f16::from_bits(h).to_f32()).collect();
        let check = |got: &[f32], kernel: &str| {
            for ((&g, &w), &h) in got.iter().zip(&want).zip(&all) {
                let same = if w.is_nan() {
                    g.is_nan() && g.is_sign_negative() == w.is_sign_negative()
                } else {
                    g.to_bits() == w.to_bits()
                };
                assert!(same, "{kernel}: {h:#06x} gave {g} for {w}");
            }
        };
        let mut got = vec![0f32; all.len()];
        widen::scalar(&all, &mut got);
        check(&got, "scalar");
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(v3) = pulp::x86::V3::try_new() {
                got.fill(0.0);
                v3.vectorize(|| widen::x86::row_v3(v3, &all[1..], &mut got[1..]));
                got[0] = 0.0;
                check(&got, "avx2");
            }
            if let Some(v4) = pulp::x86::V4::try_new() {
                got.fill(0.0);
                v4.vectorize(|| widen::x86::row_v4(v4, &all[3..], &mut got[3..]));
                got[..3].copy_from_slice(&want[..3]);
                check(&got, "avx512");
            }
        }
    }

    /// Rounding a slice gives each value's own rounding: ties, subnormals, overflow, signs,
    /// and runs that end mid-buffer.
    #[test]
    fn rounding_a_slice_rounds_each_value_alone() {
        let mut v: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) * 0.0137).collect();
        // Exact ties between two halves (1 + 2^-11), tiny and huge values.
        v.extend([
            1.0 + 2f32.powi(-11),
            -(1.0 + 3.0 * 2f32.powi(-11)),
            1e-7,
            -3e-8,
            7e4,
            -1e6,
        ]);
        v.extend([f32::INFINITY, f32::MIN_POSITIVE, 0.0, -0.0]);
        for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Bf16] {
            for len in [v.len(), 70, 64, 1] {
                let mut got = v[..len].to_vec();
                dtype.round_slice(&mut got);
                let want: Vec<u32> = v[..len].iter().map(|&x| dtype.round(x).to_bits()).collect();
                let got: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "{dtype} len {len}");
            }
        }
    }

    #[test]
    fn pools_round_trip_through_their_type() {
        let src: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) * 0.337).collect();
        for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Bf16] {
            let mut pool = KvPool::zeros(dtype, 100);
            assert_eq!(pool.len(), 100);
            pool.write(30, &src);
            let mut back = vec![0f32; 40];
            pool.read(30, &mut back);
            for (b, s) in back.iter().zip(&src) {
                assert_eq!(*b, dtype.round(*s), "{dtype}");
            }
            let mut zero = vec![1f32; 30];
            pool.read(0, &mut zero);
            assert!(zero.iter().all(|&z| z == 0.0));
            // Rows by slot, in runs and out of order: the same values as row by row.
            let slots = [3u32, 4, 5, 1, 9, 8];
            let mut rows = vec![0f32; slots.len() * 10];
            pool.read_cols(&slots, 10, 0, 10, &mut rows);
            for (k, &s) in slots.iter().enumerate() {
                let mut one = vec![0f32; 10];
                pool.read(s as usize * 10, &mut one);
                assert_eq!(rows[k * 10..(k + 1) * 10], one[..], "{dtype} slot {s}");
            }
        }
        // One KV head's columns of chosen slots: the same values as each row read whole.
        for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Bf16] {
            let mut pool = KvPool::zeros(dtype, 100);
            pool.write(
                0,
                &(0..100).map(|i| i as f32 * 0.71 - 30.0).collect::<Vec<_>>(),
            );
            let slots = [7u32, 2, 5];
            let mut cols = vec![0f32; 12];
            pool.read_cols(&slots, 10, 3, 4, &mut cols);
            for (k, &s) in slots.iter().enumerate() {
                let mut row = vec![0f32; 10];
                pool.read(s as usize * 10, &mut row);
                assert_eq!(cols[k * 4..k * 4 + 4], row[3..7], "{dtype} slot {s}");
            }
        }
        assert_eq!("half".parse::<KvDtype>().ok(), Some(KvDtype::F16));
        assert_eq!("BF16".parse::<KvDtype>().ok(), Some(KvDtype::Bf16));
        assert!("fp8_e5m2".parse::<KvDtype>().is_err());
    }
}
