//! AVX2 expansion of quantised rows (the scalar loops in [`Weights::expand_row`] are not
//! vectorised by the compiler).

use pulp::x86::V3;
use pulp::{cast, f32x8, i32x8, i8x16, u32x8, u8x16};

use super::{Weights, QK};

#[inline(always)]
fn to_f32(simd: V3, v: u32x8) -> f32x8 {
    simd.convert_i32x8_to_f32x8(cast::<u32x8, i32x8>(v))
}

#[inline(always)]
fn store(y: &mut [f32], v: f32x8) {
    if let Ok(y) = <&mut [f32; 8]>::try_from(y) {
        *y = cast(v);
    }
}

/// Same values as [`Weights::expand_row`] (separate multiply and add, no fused rounding).
#[inline(always)]
pub(super) fn expand_row(simd: V3, w: &Weights, n: usize, inp: usize, out: &mut [f32]) {
    let nb = inp / QK;
    let b0 = n * nb;
    match w {
        Weights::F32(_)
        | Weights::F16(_)
        | Weights::BF16(_)
        | Weights::Q4_1x16 { .. }
        | Weights::Q8_0x16 { .. }
        | Weights::Q8_16 { .. }
        | Weights::U8 { .. }
        | Weights::U8_16 { .. } => w.expand_row(n, inp, out),
        Weights::Q4_1 { d, m, qs } => {
            let blocks = qs[b0 * 16..(b0 + nb) * 16].chunks_exact(16);
            let scales = d[b0..b0 + nb].iter().zip(&m[b0..b0 + nb]);
            let mask = simd.splat_u32x8(15);
            for ((y, q), (&bd, &bm)) in out.chunks_exact_mut(QK).zip(blocks).zip(scales) {
                let q = <[u8; 16]>::try_from(q).expect("chunks_exact yields 16-byte blocks");
                let mut upper = [0u8; 16];
                upper[..8].copy_from_slice(&q[8..]);
                let (vd, vm) = (simd.splat_f32x8(bd), simd.splat_f32x8(bm));
                for (half, bytes) in [q, upper].into_iter().enumerate() {
                    let b = simd.convert_u8x16_to_u32x8(cast::<[u8; 16], u8x16>(bytes));
                    let lo = to_f32(simd, simd.and_u32x8(b, mask));
                    let hi = to_f32(simd, simd.shr_const_u32x8::<4>(b));
                    let o = half * 8;
                    store(&mut y[o..o + 8], simd.add_f32x8(simd.mul_f32x8(lo, vd), vm));
                    store(
                        &mut y[16 + o..24 + o],
                        simd.add_f32x8(simd.mul_f32x8(hi, vd), vm),
                    );
                }
            }
        }
        Weights::Q8_0 { d, qs } => {
            let blocks = qs[b0 * QK..(b0 + nb) * QK].chunks_exact(8);
            for (c, (y, q)) in out.chunks_exact_mut(8).zip(blocks).enumerate() {
                let mut bytes = [0i8; 16];
                bytes[..8].copy_from_slice(q);
                let v = simd.convert_i8x16_to_i32x8(cast::<[i8; 16], i8x16>(bytes));
                let vd = simd.splat_f32x8(d[b0 + c / 4]);
                store(y, simd.mul_f32x8(simd.convert_i32x8_to_f32x8(v), vd));
            }
        }
    }
}
