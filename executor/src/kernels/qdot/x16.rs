//! Q4_1 and Q8_0 weights interleaved in groups of 16 rows, and the kernels that multiply
//! them.
//!
//! A group's block `b` is 256 bytes: tile row `r < 4` holds, for each of the 16 weight rows
//! `n`, the row's bytes `4r..4r + 4` of block `b` at `64r + 4n` (low nibbles: values
//! `4r..4r + 4`, high nibbles: values `16 + 4r..20 + 4r`). Unpacked, its eight 64-byte rows
//! are the layout that `vpdpbusd` reads against four broadcast activation bytes (and that
//! AMX's `tdpbsud` reads against sixteen activation rows): four consecutive values of each of
//! 16 weight rows, so that a lane holds one weight row's sum and no horizontal sum is needed.
//! The 16 rows' scales and minimums of a block lie side by side, one vector. Q8_0 blocks are
//! held the same way, unpacked: 512 bytes of signed values per block of a group.
//!
//! Every kernel here computes each output the same way, so the results are the same bits on
//! every path and whatever the batch: per block in order, `acc = fma(d_w · d_x, Σ q_w q_x,
//! acc)` with the exact integer sum, the minimum terms `mins = fma(m_w, s_x, mins)` alike,
//! and the output `acc + mins` (Q8_0 has no minimums: the output is `acc`).

use super::quads::Quad;
use super::{Isa, QRow, Weights, QK};

/// Weight rows per group.
pub(crate) const ROWS: usize = 16;
/// Packed bytes of one Q4_1 block of a group.
const PACKED: usize = 256;
/// Bytes of one Q8_0 block of a group.
const BYTES_Q8: usize = 512;

/// For each block of each group: `(source block, destination block, row n in the group)` of
/// `rows` rows (a multiple of [`ROWS`]) of `nb` blocks, the source row-major.
fn group_blocks(rows: usize, nb: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..rows / ROWS).flat_map(move |g| {
        (0..nb).flat_map(move |b| (0..ROWS).map(move |n| ((g * ROWS + n) * nb + b, g * nb + b, n)))
    })
}

/// Interleaves row-major Q4_1 blocks (`d`, `m` per block, 16 bytes of nibbles each) of
/// `rows` rows of `nb` blocks, `rows` a multiple of [`ROWS`].
pub(crate) fn interleave(d: &[f32], m: &[f32], qs: &[u8], rows: usize, nb: usize) -> Weights {
    debug_assert!(rows.is_multiple_of(ROWS) && d.len() == rows * nb);
    let mut out = (
        vec![0f32; d.len()],
        vec![0f32; m.len()],
        vec![0u8; qs.len()],
    );
    for (src, dst, n) in group_blocks(rows, nb) {
        out.0[dst * ROWS + n] = d[src];
        out.1[dst * ROWS + n] = m[src];
        for r in 0..4 {
            let at = dst * PACKED + 64 * r + 4 * n;
            out.2[at..at + 4].copy_from_slice(&qs[src * 16 + 4 * r..src * 16 + 4 * r + 4]);
        }
    }
    let (d, m, qs) = out;
    Weights::Q4_1x16 { d, m, qs }
}

/// Interleaves row-major Q8_0 blocks (`d` per block, 32 signed values each) of `rows` rows
/// of `nb` blocks, `rows` a multiple of [`ROWS`]: tile row `r < 8` of block `b` holds each
/// weight row's values `4r..4r + 4` at `64r + 4n`.
pub(crate) fn interleave_q8(d: &[f32], qs: &[i8], rows: usize, nb: usize) -> Weights {
    debug_assert!(rows.is_multiple_of(ROWS) && d.len() == rows * nb);
    let (mut od, mut oq) = (vec![0f32; d.len()], vec![0i8; qs.len()]);
    for (src, dst, n) in group_blocks(rows, nb) {
        od[dst * ROWS + n] = d[src];
        for r in 0..8 {
            let at = dst * BYTES_Q8 + 64 * r + 4 * n;
            oq[at..at + 4].copy_from_slice(&qs[src * QK + 4 * r..src * QK + 4 * r + 4]);
        }
    }
    Weights::Q8_0x16 { d: od, qs: oq }
}

/// Row `n` of interleaved Q8_0 weights (of `nb` blocks) as f32: `q · d`.
pub(crate) fn expand_row_q8(d: &[f32], qs: &[i8], n: usize, nb: usize, out: &mut [f32]) {
    let (g, n) = (n / ROWS, n % ROWS);
    for (b, y) in out.chunks_exact_mut(QK).enumerate() {
        let blk = g * nb + b;
        let bd = d[blk * ROWS + n];
        for r in 0..8 {
            for j in 0..4 {
                y[4 * r + j] = qs[blk * BYTES_Q8 + 64 * r + 4 * n + j] as f32 * bd;
            }
        }
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

/// One group of 16 weight rows: per block its bytes, scales and (Q4_1) minimums.
#[derive(Clone, Copy)]
pub(crate) enum Group<'a> {
    Q4 {
        qs: &'a [[u8; PACKED]],
        d: &'a [[f32; ROWS]],
        m: &'a [[f32; ROWS]],
    },
    Q8 {
        qs: &'a [[i8; BYTES_Q8]],
        d: &'a [[f32; ROWS]],
    },
}

impl<'a> Group<'a> {
    /// Group `g` of interleaved weights of `nb` blocks per row.
    fn of(w: &'a Weights, g: usize, nb: usize) -> Self {
        let (b0, b1) = (g * nb, (g + 1) * nb);
        match w {
            Weights::Q4_1x16 { d, m, qs } => Group::Q4 {
                qs: qs[b0 * PACKED..b1 * PACKED].as_chunks().0,
                d: d[b0 * ROWS..b1 * ROWS].as_chunks().0,
                m: m[b0 * ROWS..b1 * ROWS].as_chunks().0,
            },
            Weights::Q8_0x16 { d, qs } => Group::Q8 {
                qs: qs[b0 * BYTES_Q8..b1 * BYTES_Q8].as_chunks().0,
                d: d[b0 * ROWS..b1 * ROWS].as_chunks().0,
            },
            _ => unreachable!("only interleaved weights reach these kernels"),
        }
    }

    /// Blocks per row.
    fn blocks(self) -> usize {
        match self {
            Group::Q4 { d, .. } | Group::Q8 { d, .. } => d.len(),
        }
    }
}

/// `y[i * ld + r] = w_{n0 + r} · x_i` for the `rows` (a multiple of 16) weight rows from `n0`
/// (a multiple of 16) and all rows `x` (see [`super::QuantRows::rows`]; `quads`, the same
/// rows' whole fours packed, from [`super::QuantRows::quads`]), under one dispatch for all of
/// its groups.
#[allow(clippy::too_many_arguments)]
pub(crate) fn task(
    isa: Isa,
    w: &Weights,
    inp: usize,
    x: &[QRow<'_>],
    quads: &[Quad],
    n0: usize,
    y: &mut [f32],
    ld: usize,
) {
    debug_assert!(
        quads.is_empty() || quads.len() == x.len() / 4 * (inp / QK),
        "quads are the whole fours of exactly the rows `x`"
    );
    let job = Job {
        w,
        nb: inp / QK,
        g0: n0 / ROWS,
        x,
        quads,
        y,
        ld,
    };
    match isa {
        Isa::Scalar => job.run(Scalar),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2(v3) => v3.vectorize(x86::On(job, v3)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512(v4) => v4.vectorize(x86::On(job, v4)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni(v4, vnni) => vnni.run(v4, job),
    }
}

/// A kernel of one instruction set: one group against `NX` activation rows.
trait GroupKernel: Copy {
    fn group<const NX: usize>(self, g: Group<'_>, xs: &[QRow<'_>; NX]) -> [[f32; ROWS]; NX];

    /// One group against four rows `xs`, whose blocks `quad` also holds packed (the vector
    /// kernels read those; the reference reads the rows).
    fn four(self, g: Group<'_>, xs: &[QRow<'_>; 4], quad: &[Quad]) -> [[f32; ROWS]; 4] {
        let _ = quad;
        self.group::<4>(g, xs)
    }
}

/// The reference kernel's [`GroupKernel`].
#[derive(Clone, Copy)]
struct Scalar;

impl GroupKernel for Scalar {
    #[inline(always)]
    fn group<const NX: usize>(self, g: Group<'_>, xs: &[QRow<'_>; NX]) -> [[f32; ROWS]; NX] {
        scalar::<NX>(g, xs)
    }
}

/// One task: its groups (from `g0`, as many as `y` holds) against all activation rows `x`.
struct Job<'a> {
    w: &'a Weights,
    nb: usize,
    g0: usize,
    x: &'a [QRow<'a>],
    quads: &'a [Quad],
    y: &'a mut [f32],
    ld: usize,
}

impl Job<'_> {
    /// Every group against the rows four at a time, then the rest.
    #[inline(always)]
    fn run<K: GroupKernel>(self, kern: K) {
        let Job {
            w,
            nb,
            g0,
            x,
            quads,
            y,
            ld,
        } = self;
        let m = x.len();
        let (fours, rest) = x.as_chunks::<4>();
        for t in 0..y.len() / m / ROWS {
            let g = Group::of(w, g0 + t, nb);
            for (c, xs) in fours.iter().enumerate() {
                let out = match quads.get(c * nb..(c + 1) * nb) {
                    Some(quad) => kern.four(g, xs, quad),
                    None => kern.group::<4>(g, xs),
                };
                put(y, 4 * c * ld + t * ROWS, ld, out);
            }
            let at = 4 * fours.len() * ld + t * ROWS;
            match rest {
                [a, b, c] => put(y, at, ld, kern.group::<3>(g, &[*a, *b, *c])),
                [a, b] => put(y, at, ld, kern.group::<2>(g, &[*a, *b])),
                [a] => put(y, at, ld, kern.group::<1>(g, &[*a])),
                _ => {}
            }
        }
    }
}

/// Writes `NX` rows of 16 outputs at `y[at + j * ld..]`.
#[inline(always)]
fn put<const NX: usize>(y: &mut [f32], at: usize, ld: usize, out: [[f32; ROWS]; NX]) {
    for (j, o) in out.iter().enumerate() {
        y[at + j * ld..at + j * ld + ROWS].copy_from_slice(o);
    }
}

/// The reference kernel.
fn scalar<const NX: usize>(g: Group<'_>, xs: &[QRow<'_>; NX]) -> [[f32; ROWS]; NX] {
    let mut acc = [[0f32; ROWS]; NX];
    let mut mins = [[0f32; ROWS]; NX];
    let (d, nb) = match g {
        Group::Q4 { d, .. } | Group::Q8 { d, .. } => (d, d.len()),
    };
    for b in 0..nb {
        for (j, x) in xs.iter().enumerate() {
            let xq = &x.qs[b * QK..(b + 1) * QK];
            for n in 0..ROWS {
                let mut sum = 0i32;
                match g {
                    Group::Q4 { qs, m, .. } => {
                        for r in 0..4 {
                            for t in 0..4 {
                                let byte = qs[b][64 * r + 4 * n + t];
                                sum += i32::from(byte & 0x0f) * i32::from(xq[4 * r + t])
                                    + i32::from(byte >> 4) * i32::from(xq[16 + 4 * r + t]);
                            }
                        }
                        mins[j][n] = m[b][n].mul_add(x.s[b], mins[j][n]);
                    }
                    Group::Q8 { qs, .. } => {
                        for r in 0..8 {
                            for t in 0..4 {
                                sum +=
                                    i32::from(qs[b][64 * r + 4 * n + t]) * i32::from(xq[4 * r + t]);
                            }
                        }
                    }
                }
                let scale = d[b][n] * x.d[b];
                acc[j][n] = scale.mul_add(sum as f32, acc[j][n]);
            }
        }
    }
    match g {
        Group::Q4 { .. } => {
            std::array::from_fn(|j| std::array::from_fn(|n| acc[j][n] + mins[j][n]))
        }
        Group::Q8 { .. } => acc,
    }
}

/// The vector kernels: a lane per weight row.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::{__m256, __m256i, __m512, __m512i};

    use pulp::cast;
    use pulp::x86::{V3, V4};

    use super::super::super::intrinsics::vnni::{Vnni, VnniJob};
    use super::super::avx512::Bw;
    use super::{Group, GroupKernel, Job, QRow, Quad, PACKED, QK, ROWS};

    impl GroupKernel for V3 {
        #[inline(always)]
        fn group<const NX: usize>(self, g: Group<'_>, xs: &[QRow<'_>; NX]) -> [[f32; ROWS]; NX] {
            avx2::<NX>(self, g, rows(xs, g.blocks()))
        }

        #[inline(always)]
        fn four(self, g: Group<'_>, _xs: &[QRow<'_>; 4], quad: &[Quad]) -> [[f32; ROWS]; 4] {
            avx2::<4>(self, g, Quads(quad))
        }
    }

    impl GroupKernel for V4 {
        #[inline(always)]
        fn group<const NX: usize>(self, g: Group<'_>, xs: &[QRow<'_>; NX]) -> [[f32; ROWS]; NX] {
            avx512::<NX>(self, Bw, g, rows(xs, g.blocks()))
        }

        #[inline(always)]
        fn four(self, g: Group<'_>, _xs: &[QRow<'_>; 4], quad: &[Quad]) -> [[f32; ROWS]; 4] {
            avx512::<4>(self, Bw, g, Quads(quad))
        }
    }

    /// AVX-512 with VNNI's `vpdpbusd`.
    #[derive(Clone, Copy)]
    struct WithVnni(V4, Vnni);

    impl GroupKernel for WithVnni {
        #[inline(always)]
        fn group<const NX: usize>(self, g: Group<'_>, xs: &[QRow<'_>; NX]) -> [[f32; ROWS]; NX] {
            avx512::<NX>(self.0, self.1, g, rows(xs, g.blocks()))
        }

        #[inline(always)]
        fn four(self, g: Group<'_>, _xs: &[QRow<'_>; 4], quad: &[Quad]) -> [[f32; ROWS]; 4] {
            avx512::<4>(self.0, self.1, g, Quads(quad))
        }
    }

    /// The job as a struct for `vectorize` (a closure may not inline into the function compiled
    /// for the instruction set).
    pub(super) struct On<'a, K>(pub(super) Job<'a>, pub(super) K);

    impl<K: GroupKernel> pulp::NullaryFnOnce for On<'_, K> {
        type Output = ();

        #[inline(always)]
        fn call(self) {
            self.0.run(self.1);
        }
    }

    impl VnniJob for Job<'_> {
        #[inline(always)]
        fn call(self, simd: V4, vnni: Vnni) {
            self.run(WithVnni(simd, vnni));
        }
    }

    /// How a kernel adds four u8 × i8 products per i32 lane to an accumulator: AVX-512BW's
    /// `vpmaddubsw` + `vpmaddwd`, or VNNI's `vpdpbusd`; the same exact integers.
    pub(crate) trait Dot4: Copy {
        fn dot4(self, simd: V4, acc: __m512i, w_u8: __m512i, x_i8: __m512i) -> __m512i;
        /// Four i8 × i8 products per lane, plus [`Self::i8_bias`] times the four `x`.
        fn dot4_i8(self, simd: V4, acc: __m512i, w_i8: __m512i, x_i8: __m512i) -> __m512i;
        /// The offset [`Self::dot4_i8`] adds to each weight (128 where it makes the weights
        /// unsigned), which the caller takes back off with the block's exact `Σ x`.
        fn i8_bias(self) -> i32;
    }

    impl Dot4 for Bw {
        #[inline(always)]
        fn dot4(self, simd: V4, acc: __m512i, w_u8: __m512i, x_i8: __m512i) -> __m512i {
            let ones = simd.avx512f._mm512_set1_epi16(1);
            let p16 = simd.avx512bw._mm512_maddubs_epi16(w_u8, x_i8);
            simd.avx512f
                ._mm512_add_epi32(acc, simd.avx512bw._mm512_madd_epi16(p16, ones))
        }

        /// `|w|` times `x` with `w`'s sign: no pair of products reaches `vpmaddubsw`'s
        /// saturation (2 · 128 · 127 < 2^15).
        #[inline(always)]
        fn dot4_i8(self, simd: V4, acc: __m512i, w_i8: __m512i, x_i8: __m512i) -> __m512i {
            let neg = simd.avx512bw._mm512_movepi8_mask(w_i8);
            let zero = simd.avx512f._mm512_setzero_si512();
            let sx = simd.avx512bw._mm512_mask_sub_epi8(x_i8, neg, zero, x_i8);
            self.dot4(simd, acc, simd.avx512bw._mm512_abs_epi8(w_i8), sx)
        }

        #[inline(always)]
        fn i8_bias(self) -> i32 {
            0
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

    /// An activation row's first `nb` blocks, each slice exactly `nb` long, so that the
    /// kernels' per-block reads need no bounds checks (nor reloads of the row's slices).
    #[derive(Clone, Copy)]
    struct XBlocks<'a> {
        qs: &'a [[i8; QK]],
        d: &'a [f32],
        s: &'a [f32],
        sum: &'a [i32],
    }

    impl<'a> XBlocks<'a> {
        #[inline(always)]
        fn of(x: &QRow<'a>, nb: usize) -> Self {
            Self::of_blocks(
                Self {
                    qs: x.qs.as_chunks::<QK>().0,
                    d: x.d,
                    s: x.s,
                    sum: x.sum,
                },
                nb,
            )
        }

        #[inline(always)]
        fn of_blocks(x: Self, nb: usize) -> Self {
            Self {
                qs: &x.qs[..nb],
                d: &x.d[..nb],
                s: &x.s[..nb],
                sum: &x.sum[..nb],
            }
        }
    }

    /// `NX` rows' blocks `b` as the kernels read them: from the rows themselves or packed in
    /// [`Quad`]s.
    trait Acts<const NX: usize>: Copy {
        /// The same, each part exactly `nb` blocks long (so that reads need no bounds checks).
        fn fit(self, nb: usize) -> Self;
        /// Row `j`'s block `b` as eight four-byte words (tile row `r`'s four values).
        fn words(self, b: usize, j: usize) -> [i32; 8];
        /// Row `j`'s block scale.
        fn d(self, b: usize, j: usize) -> f32;
        /// Row `j`'s `d · Σq`.
        fn s(self, b: usize, j: usize) -> f32;
        /// Row `j`'s exact `Σq`.
        fn sum(self, b: usize, j: usize) -> i32;
    }

    /// The rows `xs`' first `nb` blocks.
    #[inline(always)]
    fn rows<'a, const NX: usize>(xs: &[QRow<'a>; NX], nb: usize) -> [XBlocks<'a>; NX] {
        std::array::from_fn(|j| XBlocks::of(&xs[j], nb))
    }

    impl<const NX: usize> Acts<NX> for [XBlocks<'_>; NX] {
        #[inline(always)]
        fn fit(self, nb: usize) -> Self {
            self.map(|x| XBlocks::of_blocks(x, nb))
        }

        #[inline(always)]
        fn words(self, b: usize, j: usize) -> [i32; 8] {
            cast(self[j].qs[b])
        }

        #[inline(always)]
        fn d(self, b: usize, j: usize) -> f32 {
            self[j].d[b]
        }

        #[inline(always)]
        fn s(self, b: usize, j: usize) -> f32 {
            self[j].s[b]
        }

        #[inline(always)]
        fn sum(self, b: usize, j: usize) -> i32 {
            self[j].sum[b]
        }
    }

    /// Four rows' blocks packed side by side: one pointer for the four rows.
    #[derive(Clone, Copy)]
    struct Quads<'a>(&'a [Quad]);

    impl Acts<4> for Quads<'_> {
        #[inline(always)]
        fn fit(self, nb: usize) -> Self {
            Quads(&self.0[..nb])
        }

        #[inline(always)]
        fn words(self, b: usize, j: usize) -> [i32; 8] {
            self.0[b].words[j]
        }

        #[inline(always)]
        fn d(self, b: usize, j: usize) -> f32 {
            self.0[b].d[j]
        }

        #[inline(always)]
        fn s(self, b: usize, j: usize) -> f32 {
            self.0[b].s[j]
        }

        #[inline(always)]
        fn sum(self, b: usize, j: usize) -> i32 {
            self.0[b].sum[j]
        }
    }

    /// `acc += (d_w ⊙ d_x) ⊙ sums` (a function, not a closure: a closure is compiled apart
    /// from the instruction set it is called under).
    #[inline(always)]
    fn scaled(simd: V4, acc: &mut __m512, wd: __m512, xd: f32, sums: __m512i) {
        let f = simd.avx512f;
        let scale = f._mm512_mul_ps(wd, f._mm512_set1_ps(xd));
        *acc = f._mm512_fmadd_ps(scale, f._mm512_cvtepi32_ps(sums), *acc);
    }

    /// The AVX-512 kernel: a lane per weight row.
    #[inline(always)]
    fn avx512<const NX: usize>(
        simd: V4,
        dot: impl Dot4,
        g: Group<'_>,
        xa: impl Acts<NX>,
    ) -> [[f32; ROWS]; NX] {
        let f = simd.avx512f;
        let mut acc = [f._mm512_setzero_ps(); NX];
        match g {
            Group::Q4 { qs, d, m } => {
                let nb = qs.len();
                let (d, m) = (&d[..nb], &m[..nb]);
                let xa = xa.fit(nb);
                let mut mins = [f._mm512_setzero_ps(); NX];
                for b in 0..nb {
                    let w = unpack_v4(simd, &qs[b]);
                    let (wd, wm): (__m512, __m512) = (cast(d[b]), cast(m[b]));
                    for j in 0..NX {
                        let xw = xa.words(b, j);
                        // Two chains of four, added exactly.
                        let mut s = [f._mm512_setzero_si512(); 2];
                        for r in 0..8 {
                            s[r % 2] = dot.dot4(simd, s[r % 2], w[r], f._mm512_set1_epi32(xw[r]));
                        }
                        scaled(
                            simd,
                            &mut acc[j],
                            wd,
                            xa.d(b, j),
                            f._mm512_add_epi32(s[0], s[1]),
                        );
                        mins[j] = f._mm512_fmadd_ps(wm, f._mm512_set1_ps(xa.s(b, j)), mins[j]);
                    }
                }
                std::array::from_fn(|j| cast(f._mm512_add_ps(acc[j], mins[j])))
            }
            Group::Q8 { qs, d } => {
                let bias = dot.i8_bias();
                let nb = qs.len();
                let d = &d[..nb];
                let xa = xa.fit(nb);
                for b in 0..nb {
                    let rows: &[[i8; 64]] = qs[b].as_chunks().0;
                    let w: [__m512i; 8] = std::array::from_fn(|r| cast(rows[r]));
                    let wd: __m512 = cast(d[b]);
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let xw = xa.words(b, j);
                        let mut s = [f._mm512_setzero_si512(); 2];
                        for r in 0..8 {
                            let xv = f._mm512_set1_epi32(xw[r]);
                            s[r % 2] = dot.dot4_i8(simd, s[r % 2], w[r], xv);
                        }
                        let offset = f._mm512_set1_epi32(bias * xa.sum(b, j));
                        let sums = f._mm512_sub_epi32(f._mm512_add_epi32(s[0], s[1]), offset);
                        scaled(simd, acc, wd, xa.d(b, j), sums);
                    }
                }
                std::array::from_fn(|j| cast(acc[j]))
            }
        }
    }

    /// The AVX2 kernel: a lane per weight row, the group in two halves of eight.
    #[inline(always)]
    fn avx2<const NX: usize>(simd: V3, g: Group<'_>, xa: impl Acts<NX>) -> [[f32; ROWS]; NX] {
        let (a, a2, fma) = (simd.avx, simd.avx2, simd.fma);
        let mask = a._mm256_set1_epi8(0x0f);
        let ones = a._mm256_set1_epi16(1);
        let mut acc = [[a._mm256_setzero_ps(); 2]; NX];
        let mut mins = [[a._mm256_setzero_ps(); 2]; NX];
        let nb = g.blocks();
        let xa = xa.fit(nb);
        for b in 0..nb {
            // Each tile row's two halves as u8 (Q8_0: `|w|`, with `w` kept for its signs).
            let mut w = [[a._mm256_setzero_si256(); 2]; 8];
            let mut signs = [[a._mm256_setzero_si256(); 2]; 8];
            let (d, m) = match g {
                Group::Q4 { qs, d, m } => {
                    let halves: &[[u8; 32]] = qs[b].as_chunks().0;
                    for r in 0..4 {
                        for h in 0..2 {
                            let v: __m256i = cast(halves[2 * r + h]);
                            w[r][h] = a2._mm256_and_si256(v, mask);
                            w[r + 4][h] = a2._mm256_and_si256(a2._mm256_srli_epi16::<4>(v), mask);
                        }
                    }
                    (d, Some(m))
                }
                Group::Q8 { qs, d } => {
                    let halves: &[[i8; 32]] = qs[b].as_chunks().0;
                    for r in 0..8 {
                        for h in 0..2 {
                            signs[r][h] = cast(halves[2 * r + h]);
                            w[r][h] = a2._mm256_abs_epi8(signs[r][h]);
                        }
                    }
                    (d, None)
                }
            };
            let wd: [__m256; 2] = cast(d[b]);
            for j in 0..NX {
                let xw = xa.words(b, j);
                let mut s = [a._mm256_setzero_si256(); 2];
                for (r, wr) in w.iter().enumerate() {
                    let xv = a._mm256_set1_epi32(xw[r]);
                    for h in 0..2 {
                        let x = match m {
                            Some(_) => xv,
                            None => a2._mm256_sign_epi8(xv, signs[r][h]),
                        };
                        let p = a2._mm256_madd_epi16(a2._mm256_maddubs_epi16(wr[h], x), ones);
                        s[h] = a2._mm256_add_epi32(s[h], p);
                    }
                }
                let xd = a._mm256_set1_ps(xa.d(b, j));
                for h in 0..2 {
                    let scale = a._mm256_mul_ps(wd[h], xd);
                    acc[j][h] = fma._mm256_fmadd_ps(scale, a._mm256_cvtepi32_ps(s[h]), acc[j][h]);
                }
                if let Some(m) = m {
                    let wm: [__m256; 2] = cast(m[b]);
                    let xsum = a._mm256_set1_ps(xa.s(b, j));
                    for h in 0..2 {
                        mins[j][h] = fma._mm256_fmadd_ps(wm[h], xsum, mins[j][h]);
                    }
                }
            }
        }
        let q4 = matches!(g, Group::Q4 { .. });
        std::array::from_fn(|j| {
            let halves: [[f32; 8]; 2] = std::array::from_fn(|h| {
                cast(if q4 {
                    a._mm256_add_ps(acc[j][h], mins[j][h])
                } else {
                    acc[j][h]
                })
            });
            std::array::from_fn(|n| halves[n / 8][n % 8])
        })
    }
}
