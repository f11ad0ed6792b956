//! CPU projection kernel for small row counts (decode batches): each weight row is streamed
//! once for all input rows, and output rows are split across the cores with rayon.
//! General GEMMs are inefficient at 2..16 rows; the burn matmul stays the reference path.
//!
//! Weights are kept in the most compact form that reproduces the f32 values *exactly*: when
//! every 32-value block of a matrix is a GGUF Q4_1 block (`q * d + m`, `q` in 0..16, `d`, `m`
//! f16) or a Q8_0 block (`q * d`, `q` an i8; Q4_0 and Q5_0 blocks are such blocks too, with
//! smaller `q`), the blocks are stored and expanded on the fly,
//! so a decode step reads 5.3x (Q4_1) or 3.6x (Q8_0) fewer bytes than with f32 weights and
//! computes with the very same weight values. Anything else stays f32.
//! Weights read from GGUF blocks take their kernel layout straight from the blocks
//! ([`HostLinear::from_ggml`], [`blocks`]): Q4_K as Q4_1 blocks with f32 scales, Q5_1 and Q5_K as
//! byte blocks with a minimum, Q6_K and Q3_K as i8 blocks with a scale per 16 values. A fused
//! projection (Q, K and V; gate and up) may hold tensors of different types, each its own
//! row range ("part").
//! The inner loops run under `pulp`'s runtime CPU-feature dispatch (AVX2 + FMA where present)
//! without any `unsafe` in this crate.

mod blocks;
mod expand;
#[cfg(target_arch = "x86_64")]
mod intrinsics;
mod qdot;
mod refit;
#[cfg(target_arch = "x86_64")]
mod x86;

use refit::compress;

#[cfg(target_arch = "x86_64")]
pub(crate) use intrinsics::prefetch::prefetch;

/// A cache hint; without x86's prefetch instruction, nothing.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn prefetch<T>(_: &[T]) {}

pub(crate) use blocks::convertible as ggml_convertible;

use std::sync::Arc;

use pulp::Arch;
use rayon::prelude::*;

/// Values per quantisation block.
const QK: usize = 32;
/// Output rows of the weight matrix handled by one rayon task.
const BLOCK: usize = 32;
/// Input rows per pass over the weights (larger batches are tiled).
const M_TILE: usize = 64;
/// Most rayon tasks of one call with several input rows: each task takes a run of whole
/// [`BLOCK`]s, so that a wide output (the LM head's 49,152 columns) does not make thousands
/// of tasks, each with a slice of every output row.
const MAX_TASKS: usize = 64;
/// Weight rows expanded to f32 at a time.
const GROUP: usize = 8;

#[derive(Debug)]
enum Weights {
    /// `[out][in]` row-major f32.
    F32(Vec<f32>),
    /// `[out][in]` row-major IEEE halves (GGUF F16, safetensors F16).
    F16(Vec<half::f16>),
    /// `[out][in]` row-major bfloat16 (GGUF BF16, safetensors BF16).
    BF16(Vec<half::bf16>),
    /// Per block: scale `d`, minimum `m`, 16 bytes of nibbles (low: value j, high: value j+16).
    Q4_1 {
        d: Vec<f32>,
        m: Vec<f32>,
        qs: Vec<u8>,
    },
    /// Q4_1 blocks of 16 rows interleaved ([`qdot::x16`]): per group of 16 rows and block,
    /// the rows' 16 scales, 16 minimums and 256 bytes of nibbles.
    Q4_1x16 {
        d: Vec<f32>,
        m: Vec<f32>,
        qs: Vec<u8>,
    },
    /// Q8_0 blocks of 16 rows interleaved ([`qdot::x16`]): per group of 16 rows and block,
    /// the rows' 16 scales and 512 signed quants.
    Q8_0x16 { d: Vec<f32>, qs: Vec<i8> },
    /// Per block: scale `d` and 32 signed quants.
    Q8_0 { d: Vec<f32>, qs: Vec<i8> },
    /// Per 16 values: scale `d` and 16 signed quants (Q6_K, Q3_K).
    Q8_16 { d: Vec<f32>, qs: Vec<i8> },
    /// Per block: scale `d`, minimum `m` and 32 unsigned quants, a byte each (Q5_1, Q5_K).
    U8 {
        d: Vec<f32>,
        m: Vec<f32>,
        qs: Vec<u8>,
    },
    /// Per 16 values: scale `d`, minimum `m` and 16 unsigned quants, a byte each (Q2_K).
    #[allow(non_camel_case_types)]
    U8_16 {
        d: Vec<f32>,
        m: Vec<f32>,
        qs: Vec<u8>,
    },
}

/// One row range of a projection, in one layout.
#[derive(Debug)]
struct Part {
    /// First output row.
    start: usize,
    /// Output rows.
    rows: usize,
    w: Weights,
}

/// A projection `y = x · Wᵀ` with `W` held row-major as `[out][in]` on the host.
#[derive(Debug, Clone)]
pub struct HostLinear {
    inp: usize,
    out: usize,
    /// Row ranges in order; every boundary between two is a multiple of [`BLOCK`], so each
    /// task's rows lie in one part.
    parts: Arc<[Part]>,
    /// Whether products run through the integer kernels (activations quantised to 8 bits)
    /// where the part's layout has one.
    integer: bool,
}

impl Weights {
    /// Writes row `n` (of width `inp`) as f32 into `out`.
    #[inline(always)]
    fn expand_row(&self, n: usize, inp: usize, out: &mut [f32]) {
        match self {
            Weights::F32(w) => out.copy_from_slice(&w[n * inp..(n + 1) * inp]),
            Weights::F16(w) => {
                for (y, v) in out.iter_mut().zip(&w[n * inp..(n + 1) * inp]) {
                    *y = v.to_f32();
                }
            }
            Weights::BF16(w) => {
                for (y, v) in out.iter_mut().zip(&w[n * inp..(n + 1) * inp]) {
                    *y = v.to_f32();
                }
            }
            Weights::Q4_1 { d, m, qs } => {
                let nb = inp / QK;
                let b0 = n * nb;
                let blocks = qs[b0 * 16..(b0 + nb) * 16].chunks_exact(16);
                let scales = d[b0..b0 + nb].iter().zip(&m[b0..b0 + nb]);
                for ((y, q), (&bd, &bm)) in out.chunks_exact_mut(QK).zip(blocks).zip(scales) {
                    let y =
                        <&mut [f32; QK]>::try_from(y).expect("chunks_exact_mut yields QK values");
                    let q = <&[u8; 16]>::try_from(q).expect("chunks_exact yields 16-byte blocks");
                    let mut v = [0f32; QK];
                    for j in 0..16 {
                        v[j] = (q[j] & 0x0f) as f32;
                    }
                    for j in 0..16 {
                        v[j + 16] = (q[j] >> 4) as f32;
                    }
                    for j in 0..QK {
                        y[j] = v[j] * bd + bm;
                    }
                }
            }
            Weights::Q4_1x16 { d, m, qs } => qdot::x16::expand_row(d, m, qs, n, inp / QK, out),
            Weights::Q8_0x16 { d, qs } => qdot::x16::expand_row_q8(d, qs, n, inp / QK, out),
            Weights::Q8_0 { d, qs } => {
                let nb = inp / QK;
                let b0 = n * nb;
                let blocks = qs[b0 * QK..(b0 + nb) * QK].chunks_exact(QK);
                for ((y, q), &bd) in out.chunks_exact_mut(QK).zip(blocks).zip(&d[b0..b0 + nb]) {
                    let y =
                        <&mut [f32; QK]>::try_from(y).expect("chunks_exact_mut yields QK values");
                    let q = <&[i8; QK]>::try_from(q).expect("chunks_exact yields QK-byte blocks");
                    for j in 0..QK {
                        y[j] = q[j] as f32 * bd;
                    }
                }
            }
            Weights::Q8_16 { d, qs } => {
                let row = &qs[n * inp..(n + 1) * inp];
                let scales = &d[n * inp / 16..(n + 1) * inp / 16];
                for ((y, q), &bd) in out
                    .chunks_exact_mut(16)
                    .zip(row.chunks_exact(16))
                    .zip(scales)
                {
                    for (y, &q) in y.iter_mut().zip(q) {
                        *y = q as f32 * bd;
                    }
                }
            }
            Weights::U8_16 { d, m, qs } => {
                let row = &qs[n * inp..(n + 1) * inp];
                let g0 = n * inp / 16;
                let scales = d[g0..].iter().zip(&m[g0..]);
                for ((y, q), (&bd, &bm)) in out
                    .chunks_exact_mut(16)
                    .zip(row.chunks_exact(16))
                    .zip(scales)
                {
                    for (y, &q) in y.iter_mut().zip(q) {
                        *y = q as f32 * bd + bm;
                    }
                }
            }
            Weights::U8 { d, m, qs } => {
                let b0 = n * inp / QK;
                let row = &qs[n * inp..(n + 1) * inp];
                let scales = d[b0..].iter().zip(&m[b0..]);
                for ((y, q), (&bd, &bm)) in out
                    .chunks_exact_mut(QK)
                    .zip(row.chunks_exact(QK))
                    .zip(scales)
                {
                    for (y, &q) in y.iter_mut().zip(q) {
                        *y = q as f32 * bd + bm;
                    }
                }
            }
        }
    }

    /// Appends `other`'s rows when it has the same layout; gives it back otherwise.
    fn append(&mut self, other: Weights) -> Result<(), Weights> {
        match (self, other) {
            (Weights::F32(a), Weights::F32(b)) => a.extend(b),
            (Weights::F16(a), Weights::F16(b)) => a.extend(b),
            (Weights::BF16(a), Weights::BF16(b)) => a.extend(b),
            (Weights::Q8_0 { d, qs }, Weights::Q8_0 { d: d2, qs: q2 })
            | (Weights::Q8_16 { d, qs }, Weights::Q8_16 { d: d2, qs: q2 }) => {
                d.extend(d2);
                qs.extend(q2);
            }
            (
                Weights::Q4_1 { d, m, qs },
                Weights::Q4_1 {
                    d: d2,
                    m: m2,
                    qs: q2,
                },
            )
            | (
                Weights::U8 { d, m, qs },
                Weights::U8 {
                    d: d2,
                    m: m2,
                    qs: q2,
                },
            )
            | (
                Weights::U8_16 { d, m, qs },
                Weights::U8_16 {
                    d: d2,
                    m: m2,
                    qs: q2,
                },
            ) => {
                d.extend(d2);
                m.extend(m2);
                qs.extend(q2);
            }
            (_, other) => return Err(other),
        }
        Ok(())
    }

    /// Values held.
    fn len(&self) -> usize {
        match self {
            Weights::F32(w) => w.len(),
            Weights::F16(w) => w.len(),
            Weights::BF16(w) => w.len(),
            Weights::Q4_1 { qs, .. } | Weights::Q4_1x16 { qs, .. } => qs.len() * 2,
            Weights::Q8_0 { qs, .. } | Weights::Q8_16 { qs, .. } | Weights::Q8_0x16 { qs, .. } => {
                qs.len()
            }
            Weights::U8 { qs, .. } | Weights::U8_16 { qs, .. } => qs.len(),
        }
    }

    /// Bytes of weight data read per use.
    fn bytes(&self) -> usize {
        match self {
            Weights::F32(w) => w.len() * 4,
            Weights::F16(w) => w.len() * 2,
            Weights::BF16(w) => w.len() * 2,
            Weights::Q4_1 { d, m, qs }
            | Weights::Q4_1x16 { d, m, qs }
            | Weights::U8 { d, m, qs }
            | Weights::U8_16 { d, m, qs } => (d.len() + m.len()) * 4 + qs.len(),
            Weights::Q8_0 { d, qs } | Weights::Q8_16 { d, qs } | Weights::Q8_0x16 { d, qs } => {
                d.len() * 4 + qs.len()
            }
        }
    }

    /// Whether the rows are interleaved in groups of 16 ([`qdot::x16`]'s kernels).
    fn interleaved(&self) -> bool {
        matches!(self, Weights::Q4_1x16 { .. } | Weights::Q8_0x16 { .. })
    }

    /// The layout's name.
    fn name(&self) -> &'static str {
        match self {
            Weights::F32(_) => "f32",
            Weights::F16(_) => "f16",
            Weights::BF16(_) => "bf16",
            Weights::Q4_1 { .. } => "q4_1",
            Weights::Q4_1x16 { .. } => "q4_1x16",
            Weights::Q8_0 { .. } => "q8_0",
            Weights::Q8_0x16 { .. } => "q8_0x16",
            Weights::Q8_16 { .. } => "q8_16",
            Weights::U8 { .. } => "u8",
            Weights::U8_16 { .. } => "u8_16",
        }
    }
}

/// [`expand::task`] for weights with an integer kernel: output rows `n0..` of every input row in
/// `chunk` (row-major `[x.len()][rows]`), from the quantised input rows `x`.
fn qtask(
    isa: qdot::Isa,
    w: &Weights,
    inp: usize,
    (x, quads): (&[qdot::QRow<'_>], &[qdot::quads::Quad]),
    n0: usize,
    chunk: &mut [f32],
) {
    let m = x.len();
    let rows = chunk.len() / m;
    if w.interleaved() {
        return qdot::x16::task(isa, w, inp, x, quads, n0, chunk, rows);
    }
    let mut i = 0;
    while i + 4 <= m {
        qdot::rows_times::<4>(isa, w, inp, n0, rows, x, i, chunk, rows, 0);
        i += 4;
    }
    match m - i {
        3 => qdot::rows_times::<3>(isa, w, inp, n0, rows, x, i, chunk, rows, 0),
        2 => qdot::rows_times::<2>(isa, w, inp, n0, rows, x, i, chunk, rows, 0),
        1 => qdot::rows_times::<1>(isa, w, inp, n0, rows, x, i, chunk, rows, 0),
        _ => {}
    }
}

impl HostLinear {
    /// Wraps `[out][in]` row-major weights (`w.len() == out * inp`), stored as Q4_1 or Q8_0
    /// blocks when that reproduces every value exactly, else as f32.
    pub fn new(inp: usize, out: usize, w: Vec<f32>) -> Option<Self> {
        (w.len() == inp * out).then(|| Self::of_parts(inp, vec![(out, compress(inp, w))]))?
    }

    /// The projection whose row ranges are, in order, GGUF tensors of `rows` rows each:
    /// `(type, rows, their blocks)` (Q, K and V of a fused projection, say), each in its
    /// kernel layout (see [`blocks`]). `None` when a type has no layout here, a size does not
    /// match, or a boundary between two tensors is not a multiple of 32 rows.
    pub(crate) fn from_ggml(
        inp: usize,
        tensors: &[(crate::gguf::GgmlType, usize, &[u8])],
    ) -> Option<Self> {
        let parts = tensors
            .iter()
            .map(|&(ty, rows, bytes)| Some((rows, blocks::from_ggml(ty, bytes, rows, inp)?)))
            .collect::<Option<Vec<_>>>()?;
        Self::of_parts(inp, parts)
    }

    /// Parts of `(rows, weights)` in order.
    /// Parts of `(rows, weights)` in order; neighbours in one layout become one part.
    fn of_parts(inp: usize, parts: Vec<(usize, Weights)>) -> Option<Self> {
        let mut start = 0;
        let mut out: Vec<Part> = Vec::with_capacity(parts.len());
        for (rows, w) in parts {
            if w.len() != rows * inp {
                return None;
            }
            let w = match out.last_mut() {
                Some(prev) => match prev.w.append(w) {
                    Ok(()) => {
                        prev.rows += rows;
                        start += rows;
                        continue;
                    }
                    // A new layout starts: the rows before it must fill whole tasks.
                    Err(w) if start.is_multiple_of(BLOCK) => w,
                    Err(_) => return None,
                },
                None => w,
            };
            out.push(Part { start, rows, w });
            start += rows;
        }
        for p in &mut out {
            // Q4_1 and Q8_0 rows in whole groups of 16 run interleaved (see `qdot::x16`).
            if !p.rows.is_multiple_of(qdot::x16::ROWS) {
                continue;
            }
            match &p.w {
                Weights::Q4_1 { d, m, qs } => {
                    p.w = qdot::x16::interleave(d, m, qs, p.rows, inp / QK);
                }
                Weights::Q8_0 { d, qs } => p.w = qdot::x16::interleave_q8(d, qs, p.rows, inp / QK),
                _ => {}
            }
        }
        Some(Self {
            inp,
            out: start,
            integer: out.iter().any(|p| qdot::supported(&p.w)),
            parts: out.into(),
        })
    }

    /// The part holding output row `n`, and `n` within it.
    fn part_of(&self, n: usize) -> (&Weights, usize) {
        let p = self
            .parts
            .iter()
            .find(|p| p.start <= n && n < p.start + p.rows)
            .unwrap_or(&self.parts[0]);
        (&p.w, n - p.start)
    }

    /// The same weights multiplied by expanding each block to f32 (exact products with the
    /// f32 inputs) instead of through the integer kernels.
    pub fn exact(mut self) -> Self {
        self.integer = false;
        self
    }

    /// The instruction set of the integer kernels on this CPU ("avx512bw", "avx2", "scalar"),
    /// if these weights use them.
    pub fn integer_kernel(&self) -> Option<&'static str> {
        self.integer.then(|| qdot::Isa::detect().name())
    }

    /// Input width.
    pub fn inp(&self) -> usize {
        self.inp
    }

    /// Output width.
    pub fn out(&self) -> usize {
        self.out
    }

    /// Storage layout of the weights ("f32", "q4_1", "q8_0", "q8_16", "u8"; parts of
    /// different layouts joined by "+").
    pub fn format(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for p in self.parts.iter() {
            if !names.contains(&p.w.name()) {
                names.push(p.w.name());
            }
        }
        names.join("+")
    }

    /// Weight row `n` (of width [`Self::inp`]) as f32, exactly as stored.
    pub(crate) fn row(&self, n: usize, out: &mut [f32]) {
        let (w, local) = self.part_of(n);
        w.expand_row(local, self.inp, out);
    }

    /// Bytes of weight data read per use of the whole matrix.
    pub fn weight_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.w.bytes()).sum()
    }

    /// `x: [m][in]` row-major -> `[m][out]` row-major.
    pub fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (inp, out) = (self.inp, self.out);
        debug_assert_eq!(x.len(), m * inp);
        if m == 0 || out == 0 {
            return Vec::new();
        }
        if m > M_TILE {
            // Tiles of input rows that stay in cache while the weights stream past.
            let mut y = Vec::with_capacity(m * out);
            for xs in x.chunks(M_TILE * inp) {
                y.extend(self.forward(xs, xs.len() / inp));
            }
            return y;
        }
        let integer = |w: &Weights| self.integer && qdot::supported(w);
        // The packed fours only where an interleaved part reads them.
        let pack = self
            .parts
            .iter()
            .any(|p| integer(&p.w) && p.w.interleaved());
        let xq = self
            .parts
            .iter()
            .any(|p| integer(&p.w))
            .then(|| qdot::QuantRows::new(x, inp, pack));
        let xrows = xq.as_ref().map(qdot::QuantRows::rows);
        let tile = Tile {
            isa: qdot::Isa::detect(),
            x,
            xq: xrows
                .as_deref()
                .zip(xq.as_ref().map(qdot::QuantRows::quads)),
            m,
        };
        let mut y = vec![0f32; m * out];
        if m == 1 {
            // One row: each task's outputs are one contiguous run of the output.
            y.par_chunks_mut(BLOCK)
                .enumerate()
                .for_each_init(Vec::new, |buf: &mut Vec<f32>, (bi, chunk)| {
                    self.tile(&tile, bi * BLOCK, chunk, buf)
                });
            return y;
        }
        // Each task owns a run of columns of every output row: it computes them BLOCK at a
        // time into a row-major `[m][BLOCK]` tile of its own and copies the tile's rows into
        // place, all on the pool (no tile of the whole output, no second pass).
        let span = BLOCK * out.div_ceil(BLOCK).div_ceil(MAX_TASKS);
        let mut runs: Vec<Vec<&mut [f32]>> = (0..out.div_ceil(span))
            .map(|_| Vec::with_capacity(m))
            .collect();
        for row in y.chunks_mut(out) {
            for (run, seg) in runs.iter_mut().zip(row.chunks_mut(span)) {
                run.push(seg);
            }
        }
        runs.into_par_iter().enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(t, buf): &mut (Vec<f32>, Vec<f32>), (ti, mut segs)| {
                let width = segs.first().map_or(0, |s| s.len());
                for c0 in (0..width).step_by(BLOCK) {
                    let cols = BLOCK.min(width - c0);
                    t.resize(m * cols, 0.0);
                    self.tile(&tile, ti * span + c0, &mut t[..m * cols], buf);
                    for (seg, row) in segs.iter_mut().zip(t.chunks_exact(cols)) {
                        seg[c0..c0 + cols].copy_from_slice(row);
                    }
                }
            },
        );
        y
    }

    /// Output columns `n..n + chunk.len() / m` (`n` a multiple of [`BLOCK`], within one part)
    /// of every input row into `chunk`, row-major `[m][cols]`; `buf` is the f32 path's
    /// scratch.
    fn tile(&self, t: &Tile<'_>, n: usize, chunk: &mut [f32], buf: &mut Vec<f32>) {
        let (w, n0) = self.part_of(n);
        match t.xq {
            Some(xq) if self.integer && qdot::supported(w) => {
                qtask(t.isa, w, self.inp, xq, n0, chunk)
            }
            _ => {
                buf.resize(GROUP * self.inp, 0.0);
                Arch::new().dispatch(expand::Task {
                    w,
                    inp: self.inp,
                    x: t.x,
                    m: t.m,
                    n0,
                    chunk,
                    buf: &mut buf[..],
                })
            }
        }
    }
}

/// One call's inputs, shared by its tasks: the f32 rows and, where some part has an integer
/// kernel, the same rows quantised (and their whole fours packed).
struct Tile<'a> {
    isa: qdot::Isa,
    x: &'a [f32],
    xq: Option<(&'a [qdot::QRow<'a>], &'a [qdot::quads::Quad])>,
    m: usize,
}

#[cfg(test)]
mod blocks_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod x16_tests;
