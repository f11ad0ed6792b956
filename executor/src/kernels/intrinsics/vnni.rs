//! The AVX-512 VNNI form of the integer kernels: `vpdpbusd` forms four products' sum per lane
//! in one instruction where AVX-512BW needs two.

use std::arch::x86_64::{
    __m512, __m512i, _mm512_cvtepi32_ps, _mm512_dpbusd_epi32, _mm512_setzero_si512,
};

use pulp::x86::V4;

use super::super::qdot::{avx512, x16};

/// Proof that this CPU runs AVX-512F/BW/CD/DQ/VL and VNNI: made only by [`Vnni::try_new`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vnni {
    _checked: (),
}

/// Work compiled for AVX-512 with VNNI: [`Vnni::run`] calls it from a function built for
/// those instruction sets, so that the kernels (`#[inline(always)]`) and their VNNI calls
/// inline into it.
pub(crate) trait VnniJob {
    fn call(self, simd: V4, vnni: Vnni);
}

impl Vnni {
    /// The token, if the CPU has every instruction set the VNNI kernels use.
    pub(crate) fn try_new() -> Option<Self> {
        let ok = V4::try_new().is_some() && std::arch::is_x86_feature_detected!("avx512vnni");
        ok.then_some(Self { _checked: () })
    }

    /// Runs `job` compiled for AVX-512 with VNNI.
    pub(crate) fn run(self, simd: V4, job: impl VnniJob) {
        // SAFETY: `self` exists only where `try_new` found AVX-512 (the V4 set) and VNNI, the
        // features `run_on` is compiled for.
        unsafe { run_on(self, simd, job) }
    }
}

impl avx512::PairDot for Vnni {
    #[inline(always)]
    fn pair_sums(self, _simd: V4, w_u8: __m512i, x_i8: __m512i) -> __m512 {
        // SAFETY: as in `run`: the token proves the CPU has AVX-512F and VNNI.
        unsafe { dot(w_u8, x_i8) }
    }
}

impl x16::x86::Dot4 for Vnni {
    #[inline(always)]
    fn dot4(self, _simd: V4, acc: __m512i, w_u8: __m512i, x_i8: __m512i) -> __m512i {
        // SAFETY: as in `run`.
        unsafe { dot_acc(acc, w_u8, x_i8) }
    }

    /// `w + 128` (the sign bit flipped) is `w` as an unsigned byte offset by 128.
    #[inline(always)]
    fn dot4_i8(self, simd: V4, acc: __m512i, w_i8: __m512i, x_i8: __m512i) -> __m512i {
        let f = simd.avx512f;
        let w_u8 = f._mm512_xor_si512(w_i8, f._mm512_set1_epi8(-128));
        self.dot4(simd, acc, w_u8, x_i8)
    }

    #[inline(always)]
    fn i8_bias(self) -> i32 {
        128
    }
}

/// Σ of four u8 × i8 products per i32 lane, as f32 (exact: far below 2^24).
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
fn dot(w_u8: __m512i, x_i8: __m512i) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w_u8, x_i8))
}

/// `acc` plus the sum of four u8 × i8 products per i32 lane.
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
fn dot_acc(acc: __m512i, w_u8: __m512i, x_i8: __m512i) -> __m512i {
    _mm512_dpbusd_epi32(acc, w_u8, x_i8)
}

/// The job compiled for AVX-512 with VNNI, so that the kernel and [`dot`] inline into it.
#[target_feature(
    enable = "sse3,ssse3,sse4.1,sse4.2,popcnt,avx,avx2,bmi1,bmi2,fma,lzcnt,avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx512vnni"
)]
fn run_on(vnni: Vnni, simd: V4, job: impl VnniJob) {
    job.call(simd, vnni);
}
