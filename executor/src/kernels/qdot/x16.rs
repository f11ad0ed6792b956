//! Q4_1 weights interleaved in groups of 16 rows, and the kernels that multiply them.
//!
//! A group's block `b` is 256 bytes: tile row `r < 4` holds, for each of the 16 weight rows
//! `n`, the row's bytes `4r..4r + 4` of block `b` at `64r + 4n` (low nibbles: values
//! `4r..4r + 4`, high nibbles: values `16 + 4r..20 + 4r`). Unpacked, its eight 64-byte rows
//! are the layout that `vpdpbusd` reads against four broadcast activation bytes (and that
//! AMX's `tdpbsud` reads against sixteen activation rows): four consecutive values of each of
//! 16 weight rows, so that a lane holds one weight row's sum and no horizontal sum is needed. The 16 rows' scales and minimums of a block lie side by side, one vector.
//!
//! Every kernel here computes each output the same way, so the results are the same bits on
//! every path and whatever the batch: per block in order, `acc = fma(d_w · d_x, Σ q_w q_x,
//! acc)` with the exact integer sum, the minimum terms `mins = fma(m_w, s_x, mins)` alike,
//! and the output `acc + mins`.

use super::{Isa, QRow, QuantRows, Weights, QK};

/// Weight rows per group.
pub(crate) const ROWS: usize = 16;
/// Packed bytes of one block of a group.
const PACKED: usize = 256;

/// Interleaves row-major Q4_1 blocks (`d`, `m` per block, 16 bytes of nibbles each) of
/// `rows` rows of `nb` blocks, `rows` a multiple of [`ROWS`].
pub(crate) fn interleave(d: &[f32], m: &[f32], qs: &[u8], rows: usize, nb: usize) -> Weights {
    debug_assert!(rows.is_multiple_of(ROWS) && d.len() == rows * nb);
    let (mut od, mut om, mut oq) = (
        vec![0f32; d.len()],
        vec![0f32; m.len()],
        vec![0u8; qs.len()],
    );
    for g in 0..rows / ROWS {
        for b in 0..nb {
            let dst = g * nb + b;
            for n in 0..ROWS {
                let src = (g * ROWS + n) * nb + b;
                od[dst * ROWS + n] = d[src];
                om[dst * ROWS + n] = m[src];
                for r in 0..4 {
                    let at = dst * PACKED + 64 * r + 4 * n;
                    oq[at..at + 4].copy_from_slice(&qs[src * 16 + 4 * r..src * 16 + 4 * r + 4]);
                }
            }
        }
    }
    Weights::Q4_1x16 {
        d: od,
        m: om,
        qs: oq,
    }
}

/// Row `n` of interleaved weights (of `nb` blocks) as f32: `q · d + m`.
pub(crate) fn expand_row(d: &[f32], m: &[f32], qs: &[u8], n: usize, nb: usize, out: &mut [f32]) {
    let (g, n) = (n / ROWS, n % ROWS);
    for (b, y) in out.chunks_exact_mut(QK).enumerate() {
        let blk = g * nb + b;
        let (bd, bm) = (d[blk * ROWS + n], m[blk * ROWS + n]);
        for r in 0..4 {
            for j in 0..4 {
                let byte = qs[blk * PACKED + 64 * r + 4 * n + j];
                y[4 * r + j] = (byte & 0x0f) as f32 * bd + bm;
                y[16 + 4 * r + j] = (byte >> 4) as f32 * bd + bm;
            }
        }
    }
}

/// One group of 16 weight rows: per block its packed bytes, scales and minimums.
#[derive(Clone, Copy)]
pub(crate) struct Group<'a> {
    qs: &'a [[u8; PACKED]],
    d: &'a [[f32; ROWS]],
    m: &'a [[f32; ROWS]],
}

impl<'a> Group<'a> {
    /// Group `g` of interleaved weights of `nb` blocks per row.
    fn of(w: &'a Weights, g: usize, nb: usize) -> Self {
        let Weights::Q4_1x16 { d, m, qs } = w else {
            unreachable!("only interleaved weights reach these kernels")
        };
        Self {
            qs: qs[g * nb * PACKED..(g + 1) * nb * PACKED].as_chunks().0,
            d: d[g * nb * ROWS..(g + 1) * nb * ROWS].as_chunks().0,
            m: m[g * nb * ROWS..(g + 1) * nb * ROWS].as_chunks().0,
        }
    }
}

/// `y[i * ld + r] = w_{n0 + r} · x_i` for the `rows` (a multiple of 16) weight rows from `n0`
/// (a multiple of 16) and all `m` rows of `x`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn task(
    isa: Isa,
    w: &Weights,
    inp: usize,
    x: &QuantRows,
    m: usize,
    n0: usize,
    y: &mut [f32],
    ld: usize,
) {
    let nb = inp / QK;
    let groups = (n0 / ROWS..).take(y.len() / m / ROWS);
    for (t, g) in groups.enumerate() {
        let group = Group::of(w, g, nb);
        let mut i = 0;
        while i + 4 <= m {
            rows_times::<4>(isa, group, x, i, y, ld, t * ROWS);
            i += 4;
        }
        match m - i {
            3 => rows_times::<3>(isa, group, x, i, y, ld, t * ROWS),
            2 => rows_times::<2>(isa, group, x, i, y, ld, t * ROWS),
            1 => rows_times::<1>(isa, group, x, i, y, ld, t * ROWS),
            _ => {}
        }
    }
}

/// One group against the `NX` activation rows from `i0`, outputs at `y[(i0 + j) * ld + col0..]`.
fn rows_times<const NX: usize>(
    isa: Isa,
    g: Group<'_>,
    x: &QuantRows,
    i0: usize,
    y: &mut [f32],
    ld: usize,
    col0: usize,
) {
    let job = Job::<NX> {
        g,
        xs: std::array::from_fn(|j| x.row(i0 + j)),
        y,
        at: i0 * ld + col0,
        ld,
    };
    match isa {
        Isa::Scalar => {
            let out = scalar::<NX>(g, &job.xs);
            job.finish(out);
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2(v3) => v3.vectorize(x86::On(job, v3)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512(v4) => v4.vectorize(x86::On(job, v4)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni(v4, vnni) => vnni.run(v4, job),
    }
}

/// One group against `NX` activation rows.
struct Job<'a, const NX: usize> {
    g: Group<'a>,
    xs: [QRow<'a>; NX],
    y: &'a mut [f32],
    at: usize,
    ld: usize,
}

impl<const NX: usize> Job<'_, NX> {
    #[inline(always)]
    fn finish(self, out: [[f32; ROWS]; NX]) {
        for (j, o) in out.iter().enumerate() {
            let at = self.at + j * self.ld;
            self.y[at..at + ROWS].copy_from_slice(o);
        }
    }
}

/// The reference kernel.
fn scalar<const NX: usize>(g: Group<'_>, xs: &[QRow<'_>; NX]) -> [[f32; ROWS]; NX] {
    let mut acc = [[0f32; ROWS]; NX];
    let mut mins = [[0f32; ROWS]; NX];
    for (b, q) in g.qs.iter().enumerate() {
        for (j, x) in xs.iter().enumerate() {
            let xq = &x.qs[b * QK..(b + 1) * QK];
            for n in 0..ROWS {
                let mut sum = 0i32;
                for r in 0..4 {
                    for t in 0..4 {
                        let byte = q[64 * r + 4 * n + t];
                        sum += i32::from(byte & 0x0f) * i32::from(xq[4 * r + t])
                            + i32::from(byte >> 4) * i32::from(xq[16 + 4 * r + t]);
                    }
                }
                let scale = g.d[b][n] * x.d[b];
                acc[j][n] = scale.mul_add(sum as f32, acc[j][n]);
                mins[j][n] = g.m[b][n].mul_add(x.s[b], mins[j][n]);
            }
        }
    }
    std::array::from_fn(|j| std::array::from_fn(|n| acc[j][n] + mins[j][n]))
}

/// The vector kernels: a lane per weight row.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::{__m256, __m256i, __m512, __m512i};

    use pulp::cast;
    use pulp::x86::{V3, V4};

    use super::super::super::intrinsics::vnni::{Vnni, VnniJob};
    use super::super::avx512::Bw;
    use super::{Group, Job, QRow, PACKED, QK, ROWS};

    /// A group kernel of one instruction set.
    trait GroupKernel: Copy {
        fn group<const NX: usize>(self, g: Group<'_>, xs: &[QRow<'_>; NX]) -> [[f32; ROWS]; NX];
    }

    impl GroupKernel for V3 {
        #[inline(always)]
        fn group<const NX: usize>(self, g: Group<'_>, xs: &[QRow<'_>; NX]) -> [[f32; ROWS]; NX] {
            avx2::<NX>(self, g, xs)
        }
    }

    impl GroupKernel for V4 {
        #[inline(always)]
        fn group<const NX: usize>(self, g: Group<'_>, xs: &[QRow<'_>; NX]) -> [[f32; ROWS]; NX] {
            avx512::<NX>(self, Bw, g, xs)
        }
    }

    /// The job as a struct for `vectorize` (a closure may not inline into the function compiled
    /// for the instruction set).
    pub(super) struct On<'a, K, const NX: usize>(pub(super) Job<'a, NX>, pub(super) K);

    impl<K: GroupKernel, const NX: usize> pulp::NullaryFnOnce for On<'_, K, NX> {
        type Output = ();

        #[inline(always)]
        fn call(self) {
            let out = self.1.group::<NX>(self.0.g, &self.0.xs);
            self.0.finish(out);
        }
    }

    impl<const NX: usize> VnniJob for Job<'_, NX> {
        #[inline(always)]
        fn call(self, simd: V4, vnni: Vnni) {
            let out = avx512::<NX>(simd, vnni, self.g, &self.xs);
            self.finish(out);
        }
    }

    /// How a kernel adds four u8 × i8 products per i32 lane to an accumulator: AVX-512BW's
    /// `vpmaddubsw` + `vpmaddwd`, or VNNI's `vpdpbusd`; the same exact integers.
    pub(crate) trait Dot4: Copy {
        fn dot4(self, simd: V4, acc: __m512i, w_u8: __m512i, x_i8: __m512i) -> __m512i;
    }

    impl Dot4 for Bw {
        #[inline(always)]
        fn dot4(self, simd: V4, acc: __m512i, w_u8: __m512i, x_i8: __m512i) -> __m512i {
            let ones = simd.avx512f._mm512_set1_epi16(1);
            let p16 = simd.avx512bw._mm512_maddubs_epi16(w_u8, x_i8);
            simd.avx512f
                ._mm512_add_epi32(acc, simd.avx512bw._mm512_madd_epi16(p16, ones))
        }
    }

    /// A block's 256 packed bytes as its eight unpacked 64-byte tile rows.
    #[inline(always)]
    fn unpack_v4(simd: V4, q: &[u8; PACKED]) -> [__m512i; 8] {
        let f = simd.avx512f;
        let mask = f._mm512_set1_epi8(0x0f);
        let rows: &[[u8; 64]] = q.as_chunks().0;
        let mut out = [f._mm512_setzero_si512(); 8];
        for r in 0..4 {
            let v: __m512i = cast(rows[r]);
            out[r] = f._mm512_and_si512(v, mask);
            out[r + 4] = f._mm512_and_si512(simd.avx512bw._mm512_srli_epi16::<4>(v), mask);
        }
        out
    }

    /// Block `b` of an activation row as eight four-byte words (tile row `r`'s four values).
    #[inline(always)]
    fn words(x: &QRow<'_>, b: usize) -> [i32; 8] {
        let q: [i8; QK] = x.qs[b * QK..(b + 1) * QK]
            .try_into()
            .expect("a block of 32 values");
        cast(q)
    }

    /// The AVX-512 kernel: a lane per weight row.
    #[inline(always)]
    fn avx512<const NX: usize>(
        simd: V4,
        dot: impl Dot4,
        g: Group<'_>,
        xs: &[QRow<'_>; NX],
    ) -> [[f32; ROWS]; NX] {
        let f = simd.avx512f;
        let mut acc = [f._mm512_setzero_ps(); NX];
        let mut mins = [f._mm512_setzero_ps(); NX];
        for (b, q) in g.qs.iter().enumerate() {
            let w = unpack_v4(simd, q);
            let (wd, wm): (__m512, __m512) = (cast(g.d[b]), cast(g.m[b]));
            for j in 0..NX {
                let xw = words(&xs[j], b);
                // Two chains of four, added exactly.
                let mut s = [f._mm512_setzero_si512(); 2];
                for r in 0..8 {
                    s[r % 2] = dot.dot4(simd, s[r % 2], w[r], f._mm512_set1_epi32(xw[r]));
                }
                let sum = f._mm512_cvtepi32_ps(f._mm512_add_epi32(s[0], s[1]));
                let scale = f._mm512_mul_ps(wd, f._mm512_set1_ps(xs[j].d[b]));
                acc[j] = f._mm512_fmadd_ps(scale, sum, acc[j]);
                mins[j] = f._mm512_fmadd_ps(wm, f._mm512_set1_ps(xs[j].s[b]), mins[j]);
            }
        }
        std::array::from_fn(|j| cast(f._mm512_add_ps(acc[j], mins[j])))
    }

    /// The AVX2 kernel: a lane per weight row, the group in two halves of eight.
    #[inline(always)]
    fn avx2<const NX: usize>(simd: V3, g: Group<'_>, xs: &[QRow<'_>; NX]) -> [[f32; ROWS]; NX] {
        let (a, a2, fma) = (simd.avx, simd.avx2, simd.fma);
        let mask = a._mm256_set1_epi8(0x0f);
        let ones = a._mm256_set1_epi16(1);
        let mut acc = [[a._mm256_setzero_ps(); 2]; NX];
        let mut mins = [[a._mm256_setzero_ps(); 2]; NX];
        for (b, q) in g.qs.iter().enumerate() {
            let halves: &[[u8; 32]] = q.as_chunks().0;
            let mut w = [[a._mm256_setzero_si256(); 2]; 8];
            for r in 0..4 {
                for h in 0..2 {
                    let v: __m256i = cast(halves[2 * r + h]);
                    w[r][h] = a2._mm256_and_si256(v, mask);
                    w[r + 4][h] = a2._mm256_and_si256(a2._mm256_srli_epi16::<4>(v), mask);
                }
            }
            let wd: [__m256; 2] = cast(g.d[b]);
            let wm: [__m256; 2] = cast(g.m[b]);
            for j in 0..NX {
                let xw = words(&xs[j], b);
                let mut s = [a._mm256_setzero_si256(); 2];
                for (r, wr) in w.iter().enumerate() {
                    let xv = a._mm256_set1_epi32(xw[r]);
                    for h in 0..2 {
                        let p = a2._mm256_madd_epi16(a2._mm256_maddubs_epi16(wr[h], xv), ones);
                        s[h] = a2._mm256_add_epi32(s[h], p);
                    }
                }
                let xd = a._mm256_set1_ps(xs[j].d[b]);
                let xsum = a._mm256_set1_ps(xs[j].s[b]);
                for h in 0..2 {
                    let scale = a._mm256_mul_ps(wd[h], xd);
                    acc[j][h] = fma._mm256_fmadd_ps(scale, a._mm256_cvtepi32_ps(s[h]), acc[j][h]);
                    mins[j][h] = fma._mm256_fmadd_ps(wm[h], xsum, mins[j][h]);
                }
            }
        }
        std::array::from_fn(|j| {
            let lo: [f32; 8] = cast(a._mm256_add_ps(acc[j][0], mins[j][0]));
            let hi: [f32; 8] = cast(a._mm256_add_ps(acc[j][1], mins[j][1]));
            std::array::from_fn(|n| if n < 8 { lo[n] } else { hi[n - 8] })
        })
    }
}
