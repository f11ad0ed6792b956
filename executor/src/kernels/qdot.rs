//! Integer dot products of quantised weight rows with activations quantised to 8 bits.
//!
//! This is how ggml's CPU backend multiplies quantised weights: each 32-value block of an
//! activation row is quantised to `i8` with one scale (`d = max|x| / 127`, stored through f16
//! like ggml's `Q8_0`/`Q8_1` blocks, with `s = d · Σq` for the Q4_1 minimum term), and each
//! weight block is multiplied with it in integers, one float multiply-add per block:
//!
//! - Q4_1 · Q8_1: `d_w · d_x · Σ q_w q_x + m_w · s_x` (and the byte layouts `U8` alike, and
//!   `U8_16` with a scale and minimum per 16 values, against the activations' half-block sums)
//! - Q8_0 · Q8_0: `d_w · d_x · Σ q_w q_x` (and `Q8_16`, a weight scale per half block)
//!
//! The integer sums are exact, so the only error against the f32 product is the activation
//! rounding, the bound ggml accepts. Each output is a sum over its own row pair in a fixed
//! order, whatever the batch, so a row's result does not depend on the rows batched with it.
//! Kernels: AVX-512BW (two blocks per instruction), AVX2 (`vpmaddubsw` + `vpmaddwd`) and a
//! scalar reference, chosen at run time through `pulp`'s feature detection.

use super::{Weights, QK};

/// Activation rows quantised per 32-value block.
#[derive(Debug, Default)]
pub(crate) struct QuantRows {
    /// `[m][inp]` quantised values.
    qs: Vec<i8>,
    /// `[m][inp / 32]` block scales (f16-rounded, as ggml stores them).
    d: Vec<f32>,
    /// `[m][inp / 32]` `d · Σq` per block (f16-rounded), for the Q4_1 minimum term.
    s: Vec<f32>,
    /// `[m][inp / 32]` the exact `Σq` per block.
    sum: Vec<i32>,
    /// `[m][inp / 16]` `d · Σq` per half block (f16-rounded), for minimums per 16 values.
    s16: Vec<f32>,
    /// `[m][inp / 64][16]`: per pair of blocks, the first block's scale in lanes 0..8 and the
    /// second's in lanes 8..16, the layout of the AVX-512 kernels' per-block sums.
    d2: Vec<f32>,
    /// Whole fours of rows packed block by block, for the interleaved kernels.
    quads: Vec<quads::Quad>,
    inp: usize,
}

impl QuantRows {
    /// Quantises the `m` rows of `x` (`[m][inp]`, `inp` a multiple of 32), runs of
    /// [`QUANT_ROWS`] rows in parallel; with `pack`, also packs their whole fours for the
    /// interleaved kernels ([`Self::quads`]; empty without).
    pub(crate) fn new(x: &[f32], inp: usize, pack: bool) -> Self {
        use rayon::prelude::*;
        debug_assert!(inp.is_multiple_of(QK) && x.len().is_multiple_of(inp.max(1)));
        let blocks = x.len() / QK;
        let nb = inp / QK;
        // Per row: one scale vector per pair of blocks.
        let pairs = nb / 2 * 16;
        let rows = blocks.checked_div(nb).unwrap_or(0);
        let mut out = Self {
            qs: vec![0; x.len()],
            d: vec![0.0; blocks],
            s: vec![0.0; blocks],
            s16: vec![0.0; 2 * blocks],
            sum: vec![0; blocks],
            d2: vec![0.0; rows * pairs],
            quads: vec![quads::Quad::default(); if pack { quads::len(rows, nb) } else { 0 }],
            inp,
        };
        if blocks == 0 {
            return out;
        }
        let r = QUANT_ROWS;
        let mut runs = out.runs(r, nb);
        if runs.len() <= 1 {
            // A few rows (a decode step's): on this thread, no hand-over to the pool.
            if let Some(run) = runs.pop() {
                quantize_run(x, run, nb);
            }
        } else {
            runs.into_par_iter()
                .zip(x.par_chunks(r * inp))
                .for_each(|(run, x)| quantize_run(x, run, nb));
        }
        out
    }

    /// The whole fours of rows, `[rows / 4][inp / 32]` (see [`quads`]), if they were packed.
    pub(crate) fn quads(&self) -> &[quads::Quad] {
        &self.quads
    }

    /// The parts of each run of `r` rows (of `nb` blocks), to be filled.
    fn runs(&mut self, r: usize, nb: usize) -> Vec<Run<'_>> {
        let pairs = nb / 2 * 16;
        // `d2` is empty for rows of one block; its runs then are empty too.
        let mut d2 = self.d2.chunks_mut((r * pairs).max(1));
        // Runs are whole fours of rows (but the last): each packs its own.
        debug_assert!(r.is_multiple_of(quads::QUAD));
        let mut quads = self.quads.chunks_mut(quads::len(r, nb).max(1));
        self.qs
            .chunks_mut(r * self.inp)
            .zip(self.d.chunks_mut(r * nb))
            .zip(self.s.chunks_mut(r * nb))
            .zip(self.s16.chunks_mut(2 * r * nb))
            .zip(self.sum.chunks_mut(r * nb))
            .map(|((((qs, d), s), s16), sum)| Run {
                qs,
                d,
                s,
                s16,
                sum,
                d2: d2.next().unwrap_or_default(),
                quads: quads.next().unwrap_or_default(),
            })
            .collect()
    }

    /// Every row's parts, made once per projection for all of its tasks.
    pub(crate) fn rows(&self) -> Vec<QRow<'_>> {
        (0..self.qs.len() / self.inp.max(1))
            .map(|i| self.row(i))
            .collect()
    }

    fn row(&self, i: usize) -> QRow<'_> {
        let nb = self.inp / QK;
        QRow {
            qs: &self.qs[i * self.inp..(i + 1) * self.inp],
            d: &self.d[i * nb..(i + 1) * nb],
            s: &self.s[i * nb..(i + 1) * nb],
            s16: &self.s16[2 * i * nb..2 * (i + 1) * nb],
            sum: &self.sum[i * nb..(i + 1) * nb],
            d2: self
                .d2
                .get(i * (nb / 2) * 16..(i + 1) * (nb / 2) * 16)
                .unwrap_or(&[]),
        }
    }
}

/// Activation rows quantised per parallel task (fewer run on the calling thread alone).
const QUANT_ROWS: usize = 8;

/// One run of rows' parts of a [`QuantRows`].
struct Run<'a> {
    qs: &'a mut [i8],
    d: &'a mut [f32],
    s: &'a mut [f32],
    s16: &'a mut [f32],
    sum: &'a mut [i32],
    d2: &'a mut [f32],
    quads: &'a mut [quads::Quad],
}

/// Quantises the rows `x` (`nb` blocks each) into their parts of a [`QuantRows`].
fn quantize_run(x: &[f32], out: Run<'_>, nb: usize) {
    let mut scales = vec![(0f32, [0i32; 2]); out.d.len()];
    quantize_blocks(x, out.qs, &mut scales);
    for (i, &(d, halves)) in scales.iter().enumerate() {
        let sum = halves[0] + halves[1];
        out.sum[i] = sum;
        out.d[i] = d;
        out.s[i] = d * sum as f32;
        out.s16[2 * i] = d * halves[0] as f32;
        out.s16[2 * i + 1] = d * halves[1] as f32;
    }
    // Stored through f16, as ggml stores them; a slice at a time (the hardware
    // conversion on whole vectors, where one value at a time was a call each).
    for v in [&mut *out.d, &mut *out.s, &mut *out.s16] {
        crate::kv_dtype::KvDtype::F16.round_slice(v);
    }
    if nb >= 2 {
        let pairs = out.d.chunks_exact(nb).flat_map(|row| row.chunks_exact(2));
        for (pair, v) in pairs.zip(out.d2.chunks_exact_mut(16)) {
            for (l, o) in v.iter_mut().enumerate() {
                *o = pair[l / 8];
            }
        }
    }
    let parts = quads::Parts {
        qs: out.qs,
        d: out.d,
        s: out.s,
        sum: out.sum,
        nb,
    };
    quads::pack(&parts, out.quads);
}

/// Quantises each 32-value block of `x` into `qs`: `q = round(x / d)` (halves away from
/// zero) with `d = max|x| / 127`, giving per block `d` (not yet f16-rounded) and the sums of
/// its two halves of `q`. AVX-512 where the CPU has it, the same values either way.
pub(crate) fn quantize_blocks(x: &[f32], qs: &mut [i8], out: &mut [(f32, [i32; 2])]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v4) = pulp::x86::V4::try_new() {
        return v4.vectorize(QuantizeV4 {
            simd: v4,
            x,
            qs,
            out,
        });
    }
    quantize_scalar(x, qs, out);
}

/// The plain form of [`quantize_blocks`].
pub(crate) fn quantize_scalar(x: &[f32], qs: &mut [i8], out: &mut [(f32, [i32; 2])]) {
    let blocks = x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK));
    for ((v, q), o) in blocks.zip(out) {
        let amax = v.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut halves = [0i32; 2];
        for (j, (qi, &x)) in q.iter_mut().zip(v).enumerate() {
            let r = (x * id).round() as i8;
            *qi = r;
            halves[j / 16] += i32::from(r);
        }
        *o = (d, halves);
    }
}

/// [`quantize_blocks`] under AVX-512: a block is two vectors; rounding is truncation plus
/// one away from zero where the dropped fraction is at least a half, exactly `f32::round`.
#[cfg(target_arch = "x86_64")]
struct QuantizeV4<'a> {
    simd: pulp::x86::V4,
    x: &'a [f32],
    qs: &'a mut [i8],
    out: &'a mut [(f32, [i32; 2])],
}

#[cfg(target_arch = "x86_64")]
impl pulp::NullaryFnOnce for QuantizeV4<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        use std::arch::x86_64::{__m128i, __m512};
        let f = self.simd.avx512f;
        let (half, one, minus_one) = (
            f._mm512_set1_ps(0.5),
            f._mm512_set1_ps(1.0),
            f._mm512_set1_ps(-1.0),
        );
        let xs = self.x.as_chunks::<16>().0;
        let qs = self.qs.as_chunks_mut::<16>().0;
        for (b, o) in self.out.iter_mut().enumerate() {
            let v: [__m512; 2] = [pulp::cast(xs[2 * b]), pulp::cast(xs[2 * b + 1])];
            let amax = f._mm512_reduce_max_ps(
                f._mm512_max_ps(f._mm512_abs_ps(v[0]), f._mm512_abs_ps(v[1])),
            );
            let d = amax / 127.0;
            let id = f._mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            let mut halves = [0i32; 2];
            for h in 0..2 {
                let y = f._mm512_mul_ps(v[h], id);
                // Truncate (imm 0x0b: toward zero, no exceptions), then step away from zero.
                let t = f._mm512_roundscale_ps::<0x0b>(y);
                let up = f._mm512_cmp_ps_mask::<29>(f._mm512_abs_ps(f._mm512_sub_ps(y, t)), half); // >=
                let negative = f._mm512_cmp_ps_mask::<1>(y, f._mm512_setzero_ps()); // <
                let step = f._mm512_mask_blend_ps(negative, one, minus_one);
                let r = f._mm512_cvttps_epi32(f._mm512_mask_add_ps(t, up, t, step));
                halves[h] = f._mm512_reduce_add_epi32(r);
                qs[2 * b + h] = pulp::cast::<__m128i, [i8; 16]>(f._mm512_cvtepi32_epi8(r));
            }
            *o = (d, halves);
        }
    }
}

/// One quantised activation row.
#[derive(Clone, Copy)]
pub(crate) struct QRow<'a> {
    qs: &'a [i8],
    d: &'a [f32],
    s: &'a [f32],
    s16: &'a [f32],
    /// Exact `Σq` per block (read by the x86 kernels of signed interleaved weights).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    sum: &'a [i32],
    /// Block-pair scale vectors (see [`QuantRows`]), empty for a single block.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    d2: &'a [f32],
}

/// The instruction set the kernels run with, detected once per projection.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2(pulp::x86::V3),
    #[cfg(target_arch = "x86_64")]
    Avx512(pulp::x86::V4),
    /// AVX-512 with VNNI's `vpdpbusd` for the integer sums.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni(pulp::x86::V4, super::intrinsics::vnni::Vnni),
}

impl Isa {
    /// The widest kernel this CPU runs.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(v4) = pulp::x86::V4::try_new() {
                return match super::intrinsics::vnni::Vnni::try_new() {
                    Some(vnni) => Isa::Avx512Vnni(v4, vnni),
                    None => Isa::Avx512(v4),
                };
            }
            if let Some(v3) = pulp::x86::V3::try_new() {
                return Isa::Avx2(v3);
            }
        }
        Isa::Scalar
    }

    /// The kernel name, for logs and benchmarks.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(_) => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(_) => "avx512bw",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni(..) => "avx512vnni",
        }
    }
}

/// Whether `w` has an integer kernel.
pub(crate) fn supported(w: &Weights) -> bool {
    !matches!(w, Weights::F32(_) | Weights::F16(_) | Weights::BF16(_))
}

/// `y[(i0 + b) * ld + col0 + r] = w_{n0 + r} · x_{i0 + b}` for `rows` weight rows and `NX`
/// activation rows, under the instruction set `isa`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows_times<const NX: usize>(
    isa: Isa,
    w: &Weights,
    inp: usize,
    n0: usize,
    rows: usize,
    x: &[QRow<'_>],
    i0: usize,
    y: &mut [f32],
    ld: usize,
    col0: usize,
) {
    let job = Rows::<NX> {
        w,
        nb: inp / QK,
        n0,
        rows,
        xs: std::array::from_fn(|b| x[i0 + b]),
        y,
        at: i0 * ld + col0,
        ld,
    };
    match isa {
        Isa::Scalar => {
            let mut job = job;
            for r in 0..job.rows {
                let out = scalar::row::<NX>(job.w, job.n0 + r, job.nb, &job.xs);
                job.put(r, out);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2(v3) => v3.vectorize(RowsOn(job, v3)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512(v4) => v4.vectorize(RowsOn(job, v4)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni(v4, vnni) => vnni.run(v4, job),
    }
}

/// One call of [`rows_times`]: the weight rows `n0..n0 + rows` against `NX` activation rows.
pub(crate) struct Rows<'a, const NX: usize> {
    pub(crate) w: &'a Weights,
    pub(crate) nb: usize,
    pub(crate) n0: usize,
    pub(crate) rows: usize,
    pub(crate) xs: [QRow<'a>; NX],
    y: &'a mut [f32],
    /// Where output `(0, 0)` goes; activation row `b` is `b * ld` further.
    at: usize,
    ld: usize,
}

impl<const NX: usize> Rows<'_, NX> {
    /// Stores the outputs of weight row `n0 + r`.
    #[inline(always)]
    pub(crate) fn put(&mut self, r: usize, out: [f32; NX]) {
        for (b, v) in out.into_iter().enumerate() {
            self.y[self.at + b * self.ld + r] = v;
        }
    }
}

/// An integer kernel of one instruction set.
#[cfg(target_arch = "x86_64")]
trait RowKernel: Copy {
    fn row<const NX: usize>(
        self,
        w: &Weights,
        n: usize,
        nb: usize,
        xs: &[QRow<'_>; NX],
    ) -> [f32; NX];
}

#[cfg(target_arch = "x86_64")]
impl RowKernel for pulp::x86::V3 {
    #[inline(always)]
    fn row<const NX: usize>(
        self,
        w: &Weights,
        n: usize,
        nb: usize,
        xs: &[QRow<'_>; NX],
    ) -> [f32; NX] {
        avx2::row::<NX>(self, w, n, nb, xs)
    }
}

#[cfg(target_arch = "x86_64")]
impl RowKernel for pulp::x86::V4 {
    #[inline(always)]
    fn row<const NX: usize>(
        self,
        w: &Weights,
        n: usize,
        nb: usize,
        xs: &[QRow<'_>; NX],
    ) -> [f32; NX] {
        avx512::row::<NX>(self, avx512::Bw, w, n, nb, xs)
    }
}

// The dispatched job as a struct with a plain loop rather than a closure: a closure (or its
// `FnOnce` shim) is not always inlined into the function compiled for the instruction set,
// and then every intrinsic in it becomes a call (28x slower).
#[cfg(target_arch = "x86_64")]
struct RowsOn<'a, K, const NX: usize>(Rows<'a, NX>, K);

#[cfg(target_arch = "x86_64")]
impl<const NX: usize> Rows<'_, NX> {
    /// Every weight row of the job through `kernel`.
    #[inline(always)]
    fn run(mut self, kernel: impl RowKernel) {
        for r in 0..self.rows {
            let out = kernel.row::<NX>(self.w, self.n0 + r, self.nb, &self.xs);
            self.put(r, out);
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl<K: RowKernel, const NX: usize> pulp::NullaryFnOnce for RowsOn<'_, K, NX> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        self.0.run(self.1);
    }
}

/// The AVX-512 kernel with VNNI's integer sums.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct VnniRows(pulp::x86::V4, super::intrinsics::vnni::Vnni);

#[cfg(target_arch = "x86_64")]
impl RowKernel for VnniRows {
    #[inline(always)]
    fn row<const NX: usize>(
        self,
        w: &Weights,
        n: usize,
        nb: usize,
        xs: &[QRow<'_>; NX],
    ) -> [f32; NX] {
        avx512::row::<NX>(self.0, self.1, w, n, nb, xs)
    }
}

#[cfg(target_arch = "x86_64")]
impl<const NX: usize> super::intrinsics::vnni::VnniJob for Rows<'_, NX> {
    #[inline(always)]
    fn call(self, simd: pulp::x86::V4, vnni: super::intrinsics::vnni::Vnni) {
        self.run(VnniRows(simd, vnni));
    }
}

/// The reference kernel: the same integer sums and float terms in plain Rust.
mod scalar {
    use super::{QRow, Weights, QK};

    /// Σ a b over two i8 slices.
    fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        a.iter()
            .zip(b)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum()
    }

    /// Σ a b over u8 weights and i8 activations.
    fn dot_u8(a: &[u8], b: &[i8]) -> i32 {
        a.iter()
            .zip(b)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum()
    }

    pub(super) fn row<const NX: usize>(
        w: &Weights,
        n: usize,
        nb: usize,
        xs: &[QRow<'_>; NX],
    ) -> [f32; NX] {
        let mut acc = [0f32; NX];
        for b in 0..nb {
            let k = n * nb + b;
            for (a, x) in acc.iter_mut().zip(xs) {
                let xq = &x.qs[b * QK..(b + 1) * QK];
                *a += match w {
                    Weights::Q4_1 { d, m, qs } => {
                        let q = &qs[k * 16..(k + 1) * 16];
                        let sumi: i32 = (0..16)
                            .map(|j| {
                                i32::from(q[j] & 0x0f) * i32::from(xq[j])
                                    + i32::from(q[j] >> 4) * i32::from(xq[j + 16])
                            })
                            .sum();
                        d[k] * x.d[b] * sumi as f32 + m[k] * x.s[b]
                    }
                    Weights::Q8_0 { d, qs } => {
                        let q = &qs[k * QK..(k + 1) * QK];
                        d[k] * x.d[b] * dot_i8(q, xq) as f32
                    }
                    Weights::Q8_16 { d, qs } => {
                        let q = &qs[k * QK..(k + 1) * QK];
                        let lo = d[2 * k] * dot_i8(&q[..16], &xq[..16]) as f32;
                        let hi = d[2 * k + 1] * dot_i8(&q[16..], &xq[16..]) as f32;
                        x.d[b] * (lo + hi)
                    }
                    Weights::U8 { d, m, qs } => {
                        let q = &qs[k * QK..(k + 1) * QK];
                        d[k] * x.d[b] * dot_u8(q, xq) as f32 + m[k] * x.s[b]
                    }
                    Weights::U8_16 { d, m, qs } => {
                        let q = &qs[k * QK..(k + 1) * QK];
                        let lo = d[2 * k] * dot_u8(&q[..16], &xq[..16]) as f32;
                        let hi = d[2 * k + 1] * dot_u8(&q[16..], &xq[16..]) as f32;
                        x.d[b] * (lo + hi)
                            + m[2 * k] * x.s16[2 * b]
                            + m[2 * k + 1] * x.s16[2 * b + 1]
                    }
                    Weights::F32(_)
                    | Weights::F16(_)
                    | Weights::BF16(_)
                    | Weights::Q4_1x16 { .. }
                    | Weights::Q8_0x16 { .. } => 0.0,
                };
            }
        }
        acc
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{__m128i, __m256, __m256i};

    use pulp::cast;
    use pulp::x86::V3;

    use super::{QRow, Weights, QK};

    #[inline(always)]
    fn load32(simd: V3, q: &[i8]) -> __m256i {
        let _ = simd;
        let a: [i8; 32] = q[..32].try_into().expect("32-value block");
        cast(a)
    }

    #[inline(always)]
    fn load32u(q: &[u8]) -> __m256i {
        let a: [u8; 32] = q[..32].try_into().expect("32-value block");
        cast(a)
    }

    /// Σ over 8 lanes.
    #[inline(always)]
    pub(super) fn hsum(simd: V3, v: __m256) -> f32 {
        let lo = simd.avx._mm256_castps256_ps128(v);
        let hi = simd.avx._mm256_extractf128_ps::<1>(v);
        let s = simd.sse._mm_add_ps(lo, hi);
        let s = simd.sse3._mm_hadd_ps(s, s);
        let s = simd.sse3._mm_hadd_ps(s, s);
        cast::<_, [f32; 4]>(s)[0]
    }

    /// Σ q_w q_x of one block as 8 partial i32 sums, converted to f32 (exact: |sum| < 2^24).
    #[inline(always)]
    fn block_sums(simd: V3, w_u8: __m256i, x_i8: __m256i) -> __m256 {
        let ones = simd.avx._mm256_set1_epi16(1);
        let p16 = simd.avx2._mm256_maddubs_epi16(w_u8, x_i8);
        simd.avx
            ._mm256_cvtepi32_ps(simd.avx2._mm256_madd_epi16(p16, ones))
    }

    #[inline(always)]
    pub(super) fn row<const NX: usize>(
        simd: V3,
        w: &Weights,
        n: usize,
        nb: usize,
        xs: &[QRow<'_>; NX],
    ) -> [f32; NX] {
        let mut acc = [simd.avx._mm256_setzero_ps(); NX];
        let mut mins = [0f32; NX];
        match w {
            Weights::Q4_1 { d, m, qs } => {
                let mask = simd.avx._mm256_set1_epi8(0x0f);
                for b in 0..nb {
                    let k = n * nb + b;
                    let q: [u8; 16] = qs[k * 16..(k + 1) * 16].try_into().expect("16 bytes");
                    let lo = cast::<_, __m128i>(q);
                    let hi = simd.sse2._mm_srli_epi16::<4>(lo);
                    let wq = simd
                        .avx2
                        ._mm256_and_si256(simd.avx._mm256_set_m128i(hi, lo), mask);
                    for j in 0..NX {
                        let x = &xs[j];
                        let sums = block_sums(simd, wq, load32(simd, &x.qs[b * QK..]));
                        let scale = simd.avx._mm256_set1_ps(d[k] * x.d[b]);
                        acc[j] = simd.fma._mm256_fmadd_ps(scale, sums, acc[j]);
                        mins[j] += m[k] * x.s[b];
                    }
                }
            }
            Weights::U8_16 { d, m, qs } => {
                for b in 0..nb {
                    let k = n * nb + b;
                    let wq = load32u(&qs[k * QK..]);
                    for j in 0..NX {
                        let x = &xs[j];
                        let sums = block_sums(simd, wq, load32(simd, &x.qs[b * QK..]));
                        let scale = simd.avx._mm256_set_m128(
                            simd.sse._mm_set1_ps(d[2 * k + 1] * x.d[b]),
                            simd.sse._mm_set1_ps(d[2 * k] * x.d[b]),
                        );
                        acc[j] = simd.fma._mm256_fmadd_ps(scale, sums, acc[j]);
                        mins[j] += m[2 * k] * x.s16[2 * b] + m[2 * k + 1] * x.s16[2 * b + 1];
                    }
                }
            }
            Weights::Q8_0 { d, qs } => {
                for b in 0..nb {
                    let k = n * nb + b;
                    let wq = load32(simd, &qs[k * QK..]);
                    // u8 × i8 products: |w| times x with w's sign.
                    let aw = simd.avx2._mm256_abs_epi8(wq);
                    for j in 0..NX {
                        let x = &xs[j];
                        let sx = simd
                            .avx2
                            ._mm256_sign_epi8(load32(simd, &x.qs[b * QK..]), wq);
                        let sums = block_sums(simd, aw, sx);
                        let scale = simd.avx._mm256_set1_ps(d[k] * x.d[b]);
                        acc[j] = simd.fma._mm256_fmadd_ps(scale, sums, acc[j]);
                    }
                }
            }
            Weights::Q8_16 { d, qs } => {
                for b in 0..nb {
                    let k = n * nb + b;
                    let wq = load32(simd, &qs[k * QK..]);
                    let aw = simd.avx2._mm256_abs_epi8(wq);
                    for j in 0..NX {
                        let x = &xs[j];
                        let sx = simd
                            .avx2
                            ._mm256_sign_epi8(load32(simd, &x.qs[b * QK..]), wq);
                        let sums = block_sums(simd, aw, sx);
                        // Lanes 0..4 sum the first 16 values, 4..8 the last 16.
                        let scale = simd.avx._mm256_set_m128(
                            simd.sse._mm_set1_ps(d[2 * k + 1] * x.d[b]),
                            simd.sse._mm_set1_ps(d[2 * k] * x.d[b]),
                        );
                        acc[j] = simd.fma._mm256_fmadd_ps(scale, sums, acc[j]);
                    }
                }
            }
            Weights::U8 { d, m, qs } => {
                for b in 0..nb {
                    let k = n * nb + b;
                    let wq = load32u(&qs[k * QK..]);
                    for j in 0..NX {
                        let x = &xs[j];
                        let sums = block_sums(simd, wq, load32(simd, &x.qs[b * QK..]));
                        let scale = simd.avx._mm256_set1_ps(d[k] * x.d[b]);
                        acc[j] = simd.fma._mm256_fmadd_ps(scale, sums, acc[j]);
                        mins[j] += m[k] * x.s[b];
                    }
                }
            }
            Weights::F32(_)
            | Weights::F16(_)
            | Weights::BF16(_)
            | Weights::Q4_1x16 { .. }
            | Weights::Q8_0x16 { .. } => {}
        }
        std::array::from_fn(|j| hsum(simd, acc[j]) + mins[j])
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod quads;
pub(crate) mod x16;
