//! The f32 path of [`HostLinear`](super::HostLinear): weight rows expanded to f32 a group at
//! a time and multiplied with the f32 inputs in registers (exact products with the stored
//! values), for layouts without an integer kernel and for
//! [`HostLinear::exact`](super::HostLinear::exact).

use pulp::{Simd, WithSimd};

use super::{Weights, GROUP};

/// Dot products of `NW` weight rows (stride `inp` in `w`) with `NX` input rows (stride `inp`
/// in `x`), accumulated in registers: `out[a][b] = w_a · x_b`.
#[inline(always)]
fn micro<S: Simd, const NW: usize, const NX: usize>(
    simd: S,
    w: &[f32],
    x: &[f32],
    inp: usize,
) -> [[f32; NX]; NW] {
    let lanes = S::F32_LANES;
    let full = inp / lanes * lanes;
    let mut acc = [[simd.splat_f32s(0.0); NX]; NW];
    let wr: [&[f32]; NW] = std::array::from_fn(|a| &w[a * inp..a * inp + full]);
    let xr: [&[f32]; NX] = std::array::from_fn(|b| &x[b * inp..b * inp + full]);
    let n = full / lanes;
    // Equal, known lengths let the compiler drop the bounds checks in the loop.
    let wv: [&[S::f32s]; NW] = std::array::from_fn(|a| &S::as_simd_f32s(wr[a]).0[..n]);
    let xv: [&[S::f32s]; NX] = std::array::from_fn(|b| &S::as_simd_f32s(xr[b]).0[..n]);
    for k in 0..n {
        let xs: [S::f32s; NX] = std::array::from_fn(|b| xv[b][k]);
        for a in 0..NW {
            let wk = wv[a][k];
            for b in 0..NX {
                acc[a][b] = simd.mul_add_e_f32s(wk, xs[b], acc[a][b]);
            }
        }
    }
    let mut out = [[0f32; NX]; NW];
    for a in 0..NW {
        for b in 0..NX {
            let mut s = simd.reduce_sum_f32s(acc[a][b]);
            for k in full..inp {
                s += w[a * inp + k] * x[b * inp + k];
            }
            out[a][b] = s;
        }
    }
    out
}

// The operands of one micro-kernel sweep; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
/// `y[i * ld + col0 + r] = w_r · x_i` for the `rows` expanded weight rows in `w` and the `NX`
/// input rows starting at input row `i0`, `NW` weight rows at a time.
#[inline(always)]
fn rows_times<S: Simd, const NW: usize, const NX: usize>(
    simd: S,
    w: &[f32],
    rows: usize,
    x: &[f32],
    i0: usize,
    inp: usize,
    y: &mut [f32],
    ld: usize,
    col0: usize,
) {
    let xs = &x[i0 * inp..(i0 + NX) * inp];
    let mut put = |r: usize, b: usize, v: f32| y[(i0 + b) * ld + col0 + r] = v;
    let mut r = 0;
    while r + NW <= rows {
        let o = micro::<S, NW, NX>(simd, &w[r * inp..(r + NW) * inp], xs, inp);
        for (a, oa) in o.iter().enumerate() {
            for (b, &v) in oa.iter().enumerate() {
                put(r + a, b, v);
            }
        }
        r += NW;
    }
    while r < rows {
        let o = micro::<S, 1, NX>(simd, &w[r * inp..(r + 1) * inp], xs, inp);
        for (b, &v) in o[0].iter().enumerate() {
            put(r, b, v);
        }
        r += 1;
    }
}

/// One task: output rows `n0..n0 + chunk.len() / m` into `chunk`, row-major `[m][n]` (so
/// each input row's outputs of this task are contiguous).
#[inline(always)]
fn task<S: Simd>(simd: S, t: Task<'_>) {
    let Task {
        w,
        inp,
        x,
        m,
        n0,
        chunk,
        buf,
    } = t;
    let n_rows = chunk.len() / m;
    #[cfg(target_arch = "x86_64")]
    let v3 = pulp::x86::V3::try_new();
    let mut g = 0;
    while g < n_rows {
        let rows = GROUP.min(n_rows - g);
        for r in 0..rows {
            let dst = &mut buf[r * inp..(r + 1) * inp];
            #[cfg(target_arch = "x86_64")]
            if let Some(v3) = v3 {
                super::x86::expand_row(v3, w, n0 + g + r, inp, dst);
                continue;
            }
            w.expand_row(n0 + g + r, inp, dst);
        }
        let wb = &buf[..rows * inp];
        let y = &mut *chunk;
        let mut i = 0;
        while i + 3 <= m {
            rows_times::<S, 4, 3>(simd, wb, rows, x, i, inp, y, n_rows, g);
            i += 3;
        }
        match m - i {
            2 => rows_times::<S, 4, 2>(simd, wb, rows, x, i, inp, y, n_rows, g),
            1 => rows_times::<S, 8, 1>(simd, wb, rows, x, i, inp, y, n_rows, g),
            _ => {}
        }
        g += rows;
    }
}

/// [`task`] as a `pulp` operation, compiled for each instruction set it dispatches to.
pub(super) struct Task<'a> {
    pub(super) w: &'a Weights,
    pub(super) inp: usize,
    pub(super) x: &'a [f32],
    pub(super) m: usize,
    pub(super) n0: usize,
    pub(super) chunk: &'a mut [f32],
    pub(super) buf: &'a mut [f32],
}

impl WithSimd for Task<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        task(simd, self);
    }
}
