//! The AVX-512 integer kernels: two 32-value blocks per instruction, each block's integer sums
//! scaled in f32 by the weight and activation scales, one output row at a time against up to
//! four activation rows. The integer sums come from a [`PairDot`]: AVX-512BW here, VNNI in
//! [`super::super::intrinsics::vnni`]; both give the same exact integers and so the same results.

use std::arch::x86_64::{__m256i, __m512, __m512i};

use pulp::cast;
use pulp::x86::V4;

use super::{QRow, Weights, QK};

/// How a kernel forms `Σ q_w q_x` of two blocks (u8 weights, i8 activations): lanes 0..8 the
/// first block's partial sums, 8..16 the second's, as f32 (exact: far below 2^24).
pub(crate) trait PairDot: Copy {
    fn pair_sums(self, simd: V4, w_u8: __m512i, x_i8: __m512i) -> __m512;
}

/// AVX-512BW: `vpmaddubsw` into i16 pairs (no saturation: a pair of u8 × i8 products of 4- or
/// 8-bit weights stays below 2^15), then `vpmaddwd` by ones.
#[derive(Clone, Copy)]
pub(crate) struct Bw;

impl PairDot for Bw {
    #[inline(always)]
    fn pair_sums(self, simd: V4, w_u8: __m512i, x_i8: __m512i) -> __m512 {
        let ones = simd.avx512f._mm512_set1_epi16(1);
        let p16 = simd.avx512bw._mm512_maddubs_epi16(w_u8, x_i8);
        simd.avx512f
            ._mm512_cvtepi32_ps(simd.avx512bw._mm512_madd_epi16(p16, ones))
    }
}

/// `[a × 8, b × 8]`.
#[inline(always)]
fn two_scales(simd: V4, a: f32, b: f32) -> __m512 {
    simd.avx512f._mm512_mask_blend_ps(
        0xff00,
        simd.avx512f._mm512_set1_ps(a),
        simd.avx512f._mm512_set1_ps(b),
    )
}

/// `[a × 4, b × 4, c × 4, d × 4]` of four half-block scales.
#[inline(always)]
fn four_scales(v: &[f32]) -> __m512 {
    let (a, b, c, d) = (v[0], v[1], v[2], v[3]);
    cast([a, a, a, a, b, b, b, b, c, c, c, c, d, d, d, d])
}

/// The 32 bytes of two Q4_1 blocks as 64 nibbles in block order.
#[inline(always)]
fn nibbles(simd: V4, q: [u8; 32]) -> __m512i {
    let v = cast::<_, __m256i>(q);
    let hi = simd.avx2._mm256_srli_epi16::<4>(v);
    let first = simd.avx2._mm256_permute2x128_si256::<0x20>(v, hi);
    let second = simd.avx2._mm256_permute2x128_si256::<0x31>(v, hi);
    let both = simd
        .avx512f
        ._mm512_inserti64x4::<1>(simd.avx512f._mm512_castsi256_si512(first), second);
    simd.avx512f
        ._mm512_and_si512(both, simd.avx512f._mm512_set1_epi8(0x0f))
}

/// `Σ_b m_b s_b` over whole pairs of blocks, in the order the scalar kernel adds them; the
/// rows' sums interleaved, so that their chains of additions overlap.
#[inline(always)]
fn minimums<const NX: usize>(m: &[f32], xs: &[QRow<'_>; NX], pairs: usize) -> [f32; NX] {
    let m = m[..2 * pairs].as_chunks::<2>().0;
    let s: [&[[f32; 2]]; NX] = std::array::from_fn(|j| xs[j].s[..2 * pairs].as_chunks().0);
    let mut t = [0f32; NX];
    for (p, mp) in m.iter().enumerate() {
        for j in 0..NX {
            let sp = s[j][p];
            t[j] += mp[0] * sp[0] + mp[1] * sp[1];
        }
    }
    t
}

/// Weight row `n` (of `nb` blocks) against the activation rows `xs`.
#[inline(always)]
pub(crate) fn row<const NX: usize>(
    simd: V4,
    dot: impl PairDot,
    w: &Weights,
    n: usize,
    nb: usize,
    xs: &[QRow<'_>; NX],
) -> [f32; NX] {
    let pairs = nb / 2;
    let k0 = n * nb;
    // Each activation row as whole block pairs and their scale vectors, sized once.
    let xq: [&[[i8; 64]]; NX] = std::array::from_fn(|j| xs[j].qs[..pairs * 64].as_chunks().0);
    let xd: [&[[f32; 16]]; NX] = std::array::from_fn(|j| xs[j].d2[..pairs * 16].as_chunks().0);
    let mut acc = [simd.avx512f._mm512_setzero_ps(); NX];
    // `acc[j] += (ws ⊙ scales of x_j's pair p) ⊙ sums`.
    macro_rules! scaled {
        ($j:expr, $ws:expr, $p:expr, $sums:expr) => {{
            let scale = simd.avx512f._mm512_mul_ps($ws, cast(xd[$j][$p]));
            acc[$j] = simd.avx512f._mm512_fmadd_ps(scale, $sums, acc[$j]);
        }};
    }
    let mut mins = [0f32; NX];
    match w {
        Weights::Q4_1 { d, m, qs } => {
            let wq2 = qs[k0 * 16..(k0 + 2 * pairs) * 16].as_chunks::<32>().0;
            let wd = &d[k0..k0 + 2 * pairs];
            for p in 0..pairs {
                let wq = nibbles(simd, wq2[p]);
                let ws = two_scales(simd, wd[2 * p], wd[2 * p + 1]);
                for j in 0..NX {
                    let sums = dot.pair_sums(simd, wq, cast(xq[j][p]));
                    scaled!(j, ws, p, sums);
                }
            }
            mins = minimums(&m[k0..], xs, pairs);
        }
        Weights::U8 { d, m, qs } => {
            let wq2 = qs[k0 * QK..(k0 + 2 * pairs) * QK].as_chunks::<64>().0;
            let wd = &d[k0..k0 + 2 * pairs];
            for p in 0..pairs {
                let wq = cast::<_, __m512i>(wq2[p]);
                let ws = two_scales(simd, wd[2 * p], wd[2 * p + 1]);
                for j in 0..NX {
                    let sums = dot.pair_sums(simd, wq, cast(xq[j][p]));
                    scaled!(j, ws, p, sums);
                }
            }
            mins = minimums(&m[k0..], xs, pairs);
        }
        Weights::Q8_0 { d, qs } => {
            let wq2 = qs[k0 * QK..(k0 + 2 * pairs) * QK].as_chunks::<64>().0;
            let wd = &d[k0..k0 + 2 * pairs];
            let zero = simd.avx512f._mm512_setzero_si512();
            for p in 0..pairs {
                // u8 × i8 products: |w| times x with w's sign.
                let wq = cast::<_, __m512i>(wq2[p]);
                let aw = simd.avx512bw._mm512_abs_epi8(wq);
                let neg = simd.avx512bw._mm512_movepi8_mask(wq);
                let ws = two_scales(simd, wd[2 * p], wd[2 * p + 1]);
                for j in 0..NX {
                    let xv = cast::<_, __m512i>(xq[j][p]);
                    let sx = simd.avx512bw._mm512_mask_sub_epi8(xv, neg, zero, xv);
                    let sums = dot.pair_sums(simd, aw, sx);
                    scaled!(j, ws, p, sums);
                }
            }
        }
        Weights::Q8_16 { d, qs } => {
            let wq2 = qs[k0 * QK..(k0 + 2 * pairs) * QK].as_chunks::<64>().0;
            let zero = simd.avx512f._mm512_setzero_si512();
            for p in 0..pairs {
                let wq = cast::<_, __m512i>(wq2[p]);
                let aw = simd.avx512bw._mm512_abs_epi8(wq);
                let neg = simd.avx512bw._mm512_movepi8_mask(wq);
                // Four lanes per 16 values, each with its scale.
                let k = k0 + 2 * p;
                let ws = four_scales(&d[2 * k..2 * k + 4]);
                for j in 0..NX {
                    let xv = cast::<_, __m512i>(xq[j][p]);
                    let sx = simd.avx512bw._mm512_mask_sub_epi8(xv, neg, zero, xv);
                    let sums = dot.pair_sums(simd, aw, sx);
                    scaled!(j, ws, p, sums);
                }
            }
        }
        Weights::U8_16 { d, m, qs } => {
            let wq2 = qs[k0 * QK..(k0 + 2 * pairs) * QK].as_chunks::<64>().0;
            for p in 0..pairs {
                let wq = cast::<_, __m512i>(wq2[p]);
                let k = k0 + 2 * p;
                let ws = four_scales(&d[2 * k..2 * k + 4]);
                for j in 0..NX {
                    let sums = dot.pair_sums(simd, wq, cast(xq[j][p]));
                    scaled!(j, ws, p, sums);
                }
            }
            let ms = m[2 * k0..2 * (k0 + 2 * pairs)].as_chunks::<4>().0;
            for (p, ms) in ms.iter().enumerate() {
                for j in 0..NX {
                    let s = &xs[j].s16[4 * p..4 * p + 4];
                    mins[j] += ms[0] * s[0] + ms[1] * s[1] + ms[2] * s[2] + ms[3] * s[3];
                }
            }
        }
        Weights::F32(_)
        | Weights::F16(_)
        | Weights::BF16(_)
        | Weights::Q4_1x16 { .. }
        | Weights::Q8_0x16 { .. } => {}
    }
    let mut out: [f32; NX] = std::array::from_fn(|j| simd.avx512f._mm512_reduce_add_ps(acc[j]));
    if nb % 2 == 1 {
        // The odd last block through the scalar kernel.
        let last: [QRow<'_>; NX] = std::array::from_fn(|j| QRow {
            qs: &xs[j].qs[(nb - 1) * QK..],
            d: &xs[j].d[nb - 1..],
            s: &xs[j].s[nb - 1..],
            s16: &xs[j].s16[2 * (nb - 1)..],
            sum: &xs[j].sum[nb - 1..],
            d2: &[],
        });
        let one = super::scalar::row::<NX>(w, n * nb + nb - 1, 1, &last);
        for j in 0..NX {
            out[j] += one[j];
        }
    }
    for j in 0..NX {
        out[j] += mins[j];
    }
    out
}
