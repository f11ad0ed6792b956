//! Vectorised `exp` for the host forward's softmax and SiLU.
//!
//! `exp(x) = 2^n · e^r` with `n = round(x / ln 2)` and `r = x − n ln 2` (ln 2 in two parts, so
//! that `r` is exact to f32 precision), `e^r` by its Taylor series to degree 7 on
//! `|r| ≤ ln 2 / 2` (truncation error below 2^-27, under an ulp), and the power of two applied
//! with `vscalefps`, which underflows to zero and overflows to infinity as `exp` does. The
//! scalar forms are the reference on CPUs without AVX-512.

use crate::kv_dtype::KvDtype;

/// Softmax of `p` in place, each weight then rounded to `dtype` (as [`KvDtype::round`]).
/// The exponentials are summed in f64 and their reciprocal taken there, as ggml's softmax
/// does.
pub(crate) fn softmax_rounded(p: &mut [f32], dtype: KvDtype) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v4) = pulp::x86::V4::try_new() {
        return v4.vectorize(x86::Softmax { simd: v4, p, dtype });
    }
    softmax_scalar(p, dtype);
}

/// The plain form of [`softmax_rounded`].
pub(crate) fn softmax_scalar(p: &mut [f32], dtype: KvDtype) {
    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for pi in p.iter_mut() {
        *pi = (*pi - max).exp();
        sum += f64::from(*pi);
    }
    let inv = (1.0 / sum) as f32;
    for pi in p.iter_mut() {
        *pi = dtype.round(*pi * inv);
    }
}

/// `out = silu(gate) · up` elementwise (`silu(g) = g / (1 + e^-g)`).
pub(crate) fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v4) = pulp::x86::V4::try_new() {
        return v4.vectorize(x86::SiluMul {
            simd: v4,
            gate,
            up,
            out,
        });
    }
    silu_mul_scalar(gate, up, out);
}

/// The plain form of [`silu_mul`].
pub(crate) fn silu_mul_scalar(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((a, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *a = g / (1.0 + (-g).exp()) * u;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{__m256, __m512, __m512d, __m512i};

    use pulp::cast;
    use pulp::x86::V4;

    use crate::kv_dtype::KvDtype;

    /// `e^x` for 16 lanes.
    #[inline(always)]
    pub(super) fn exp16(simd: V4, x: __m512) -> __m512 {
        let f = simd.avx512f;
        // Below −104 the result is zero in f32 anyway; the clamp keeps `n` in range.
        let x = f._mm512_max_ps(x, f._mm512_set1_ps(-104.0));
        let n = f._mm512_roundscale_ps::<0x08>(
            f._mm512_mul_ps(x, f._mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        // ln 2 = 0.693359375 (exact in f32, few bits) − 2.12194440e-4.
        let r = f._mm512_fnmadd_ps(n, f._mm512_set1_ps(0.693_359_4), x);
        let r = f._mm512_fnmadd_ps(n, f._mm512_set1_ps(-2.121_944_4e-4), r);
        let mut e = f._mm512_set1_ps(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            e = f._mm512_fmadd_ps(e, r, f._mm512_set1_ps(c));
        }
        f._mm512_scalef_ps(e, n)
    }

    /// 16 values rounded to `dtype` (round to nearest even, as the `half` crate rounds).
    #[inline(always)]
    fn round16(simd: V4, v: __m512, dtype: KvDtype) -> __m512 {
        let f = simd.avx512f;
        match dtype {
            KvDtype::F32 => v,
            KvDtype::F16 => f._mm512_cvtph_ps(f._mm512_cvtps_ph::<0x08>(v)),
            KvDtype::Bf16 => {
                let bits = cast::<__m512, __m512i>(v);
                let odd =
                    f._mm512_and_si512(f._mm512_srli_epi32::<16>(bits), f._mm512_set1_epi32(1));
                let rounded =
                    f._mm512_add_epi32(bits, f._mm512_add_epi32(odd, f._mm512_set1_epi32(0x7fff)));
                cast(f._mm512_and_si512(rounded, f._mm512_set1_epi32(-65536)))
            }
        }
    }

    /// Adds the 16 lanes of `e` to two f64 accumulators.
    #[inline(always)]
    fn add_f64(simd: V4, acc: &mut [__m512d; 2], e: __m512) {
        let f = simd.avx512f;
        let halves: [__m256; 2] = cast(e);
        acc[0] = f._mm512_add_pd(acc[0], f._mm512_cvtps_pd(halves[0]));
        acc[1] = f._mm512_add_pd(acc[1], f._mm512_cvtps_pd(halves[1]));
    }

    /// Up to 16 values, padded with `fill`.
    #[inline(always)]
    fn load_padded(v: &[f32], fill: f32) -> __m512 {
        let mut a = [fill; 16];
        a[..v.len()].copy_from_slice(v);
        cast(a)
    }

    /// Stores the first `out.len()` (at most 16) lanes of `v`.
    #[inline(always)]
    fn store_part(out: &mut [f32], v: __m512) {
        let a: [f32; 16] = cast(v);
        out.copy_from_slice(&a[..out.len()]);
    }

    pub(super) struct Softmax<'a> {
        pub simd: V4,
        pub p: &'a mut [f32],
        pub dtype: KvDtype,
    }

    impl pulp::NullaryFnOnce for Softmax<'_> {
        type Output = ();

        #[inline(always)]
        fn call(self) {
            let (simd, dtype) = (self.simd, self.dtype);
            let f = simd.avx512f;
            let (full, tail) = self.p.as_chunks_mut::<16>();
            let mut vmax = load_padded(tail, f32::NEG_INFINITY);
            for c in full.iter() {
                vmax = f._mm512_max_ps(vmax, cast(*c));
            }
            let max = f._mm512_set1_ps(f._mm512_reduce_max_ps(vmax));
            let mut vsum = [f._mm512_setzero_pd(); 2];
            for c in full.iter_mut() {
                let e = exp16(simd, f._mm512_sub_ps(cast(*c), max));
                add_f64(simd, &mut vsum, e);
                *c = cast(e);
            }
            if !tail.is_empty() {
                // Padding lanes are masked to zero, which adds nothing.
                let e = exp16(
                    simd,
                    f._mm512_sub_ps(load_padded(tail, f32::NEG_INFINITY), max),
                );
                let e = f._mm512_maskz_mov_ps(((1u32 << tail.len()) - 1) as u16, e);
                add_f64(simd, &mut vsum, e);
                store_part(tail, e);
            }
            let sum = f._mm512_reduce_add_pd(f._mm512_add_pd(vsum[0], vsum[1]));
            let inv = f._mm512_set1_ps((1.0 / sum) as f32);
            for c in full.iter_mut() {
                *c = cast(round16(simd, f._mm512_mul_ps(cast(*c), inv), dtype));
            }
            if !tail.is_empty() {
                let v = round16(simd, f._mm512_mul_ps(load_padded(tail, 0.0), inv), dtype);
                store_part(tail, v);
            }
        }
    }

    /// `silu(g) · u` for 16 lanes.
    #[inline(always)]
    fn silu16(simd: V4, g: __m512, u: __m512) -> __m512 {
        let f = simd.avx512f;
        let e = exp16(simd, f._mm512_sub_ps(f._mm512_setzero_ps(), g));
        f._mm512_mul_ps(
            f._mm512_div_ps(g, f._mm512_add_ps(f._mm512_set1_ps(1.0), e)),
            u,
        )
    }

    pub(super) struct SiluMul<'a> {
        pub simd: V4,
        pub gate: &'a [f32],
        pub up: &'a [f32],
        pub out: &'a mut [f32],
    }

    impl pulp::NullaryFnOnce for SiluMul<'_> {
        type Output = ();

        #[inline(always)]
        fn call(self) {
            let simd = self.simd;
            let n = self.out.len().min(self.gate.len()).min(self.up.len());
            let (g16, gt) = self.gate[..n].as_chunks::<16>();
            let (u16, ut) = self.up[..n].as_chunks::<16>();
            let (o16, ot) = self.out[..n].as_chunks_mut::<16>();
            for ((o, g), u) in o16.iter_mut().zip(g16).zip(u16) {
                *o = cast(silu16(simd, cast(*g), cast(*u)));
            }
            if !ot.is_empty() {
                store_part(ot, silu16(simd, load_padded(gt, 0.0), load_padded(ut, 0.0)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector `exp` stays within 2 ulp of the library's over the softmax range, and the
    /// rounded softmax weights equal the scalar path's or differ by one step of the type.
    #[test]
    fn vector_softmax_and_silu_track_the_scalar_forms() {
        let scores: Vec<f32> = (0..1037)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.037 - 20.0)
            .collect();
        for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Bf16] {
            let (mut a, mut b) = (scores.clone(), scores.clone());
            softmax_scalar(&mut a, dtype);
            softmax_rounded(&mut b, dtype);
            for (x, y) in a.iter().zip(&b) {
                let tol = match dtype {
                    KvDtype::F32 => 4e-6 * x.abs(),
                    KvDtype::F16 => (x.abs() / 1024.0).max(6e-8),
                    KvDtype::Bf16 => x.abs() / 128.0,
                };
                assert!((x - y).abs() <= tol.max(1e-30), "{dtype}: {x} vs {y}");
            }
            let total: f32 = b.iter().sum();
            assert!(
                (total - 1.0).abs() < 1e-2,
                "{dtype}: weights sum to {total}"
            );
        }
        let g: Vec<f32> = (0..203).map(|i| i as f32 * 0.13 - 13.0).collect();
        let u: Vec<f32> = (0..203).map(|i| 1.0 - i as f32 * 0.01).collect();
        let (mut a, mut b) = (vec![0f32; 203], vec![0f32; 203]);
        silu_mul_scalar(&g, &u, &mut a);
        silu_mul(&g, &u, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * (1.0 + x.abs()), "{x} vs {y}");
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(v4) = pulp::x86::V4::try_new() {
            let xs: Vec<f32> = (0..4096).map(|i| -100.0 + i as f32 * 0.0249).collect();
            for c in xs.chunks_exact(16) {
                let c: [f32; 16] = c.try_into().expect("16");
                let got: [f32; 16] = v4.vectorize(|| pulp::cast(x86::exp16(v4, pulp::cast(c))));
                for (x, y) in c.iter().zip(got) {
                    let want = x.exp();
                    let ulps = (want.to_bits() as i64 - y.to_bits() as i64).abs();
                    assert!(ulps <= 2, "exp({x}) = {y}, want {want} ({ulps} ulp)");
                }
            }
        }
    }
}
