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

    /// Reads the rows of `slots` (each `width` values) into `dst` as f32, converting each run
    /// of consecutive slots (a prompt's slots usually are) in one call.
    pub(crate) fn read_rows(&self, slots: &[u32], width: usize, dst: &mut [f32]) {
        let mut i = 0;
        while i < slots.len() {
            let mut j = i + 1;
            while j < slots.len() && slots[j] == slots[j - 1].wrapping_add(1) {
                j += 1;
            }
            let off = slots[i] as usize * width;
            self.read(off, &mut dst[i * width..j * width]);
            i = j;
        }
    }

    /// Reads `dst.len()` values at offset `off` as f32.
    pub(crate) fn read(&self, off: usize, dst: &mut [f32]) {
        use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
        let end = off + dst.len();
        match self {
            KvPool::F32(v) => dst.copy_from_slice(&v[off..end]),
            KvPool::F16(v) => v[off..end]
                .reinterpret_cast::<f16>()
                .convert_to_f32_slice(dst),
            KvPool::Bf16(v) => v[off..end]
                .reinterpret_cast::<bf16>()
                .convert_to_f32_slice(dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            pool.read_rows(&slots, 10, &mut rows);
            for (k, &s) in slots.iter().enumerate() {
                let mut one = vec![0f32; 10];
                pool.read(s as usize * 10, &mut one);
                assert_eq!(rows[k * 10..(k + 1) * 10], one[..], "{dtype} slot {s}");
            }
        }
        assert_eq!("half".parse::<KvDtype>().ok(), Some(KvDtype::F16));
        assert_eq!("BF16".parse::<KvDtype>().ok(), Some(KvDtype::Bf16));
        assert!("fp8_e5m2".parse::<KvDtype>().is_err());
    }
}
