//! The AVX-512 VNNI form of the integer kernels: `vpdpbusd` forms each block's sums in one
//! instruction where AVX-512BW needs two. `pulp` has no VNNI intrinsics, so this module holds
//! the crate's only `unsafe` code, kept to two calls whose one condition, that the CPU has the
//! instruction sets they are compiled for, is checked when the [`Vnni`] token is made.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m512, __m512i, _mm512_cvtepi32_ps, _mm512_dpbusd_epi32, _mm512_setzero_si512,
};

use pulp::x86::V4;

use super::qdot::{avx512, Rows};

/// Proof that this CPU runs AVX-512F/BW/CD/DQ/VL and VNNI: made only by [`Vnni::try_new`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vnni {
    _checked: (),
}

impl Vnni {
    /// The token, if the CPU has every instruction set the VNNI kernels use.
    pub(crate) fn try_new() -> Option<Self> {
        let ok = V4::try_new().is_some() && std::arch::is_x86_feature_detected!("avx512vnni");
        ok.then_some(Self { _checked: () })
    }

    /// Runs [`super::qdot::rows_times`]'s job with the VNNI kernel.
    pub(crate) fn run<const NX: usize>(self, simd: V4, job: Rows<'_, NX>) {
        // SAFETY: `self` exists only where `try_new` found AVX-512 (the V4 set) and VNNI, the
        // features `rows` is compiled for.
        unsafe { rows(self, simd, job) }
    }
}

impl avx512::PairDot for Vnni {
    #[inline(always)]
    fn pair_sums(self, _simd: V4, w_u8: __m512i, x_i8: __m512i) -> __m512 {
        // SAFETY: as in `run`: the token proves the CPU has AVX-512F and VNNI.
        unsafe { dot(w_u8, x_i8) }
    }
}

/// Σ of four u8 × i8 products per i32 lane, as f32 (exact: far below 2^24).
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
fn dot(w_u8: __m512i, x_i8: __m512i) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w_u8, x_i8))
}

/// The row loop compiled for AVX-512 with VNNI, so that the kernel and [`dot`] inline into it.
#[target_feature(
    enable = "sse3,ssse3,sse4.1,sse4.2,popcnt,avx,avx2,bmi1,bmi2,fma,lzcnt,avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx512vnni"
)]
fn rows<const NX: usize>(vnni: Vnni, simd: V4, mut job: Rows<'_, NX>) {
    for r in 0..job.rows {
        let out = avx512::row::<NX>(simd, vnni, job.w, job.n0 + r, job.nb, &job.xs);
        job.put(r, out);
    }
}
