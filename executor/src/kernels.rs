//! CPU projection kernel for small row counts (decode batches): each weight row is streamed
//! once for all input rows, and output rows are split across the cores with rayon.
//! General GEMMs are inefficient at 2..16 rows; the burn matmul stays the reference path.

use std::sync::Arc;

use rayon::prelude::*;

/// Output rows of the weight matrix handled by one rayon task.
const BLOCK: usize = 32;

/// A projection `y = x · Wᵀ` with `W` held row-major as `[out][in]` on the host.
#[derive(Debug, Clone)]
pub struct HostLinear {
    inp: usize,
    out: usize,
    w: Arc<Vec<f32>>,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl HostLinear {
    /// Wraps `[out][in]` row-major weights (`w.len() == out * inp`).
    pub fn new(inp: usize, out: usize, w: Vec<f32>) -> Option<Self> {
        (w.len() == inp * out).then(|| Self {
            inp,
            out,
            w: Arc::new(w),
        })
    }

    /// Input width.
    pub fn inp(&self) -> usize {
        self.inp
    }

    /// Output width.
    pub fn out(&self) -> usize {
        self.out
    }

    /// `x: [m][in]` row-major -> `[m][out]` row-major.
    pub fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (inp, out) = (self.inp, self.out);
        debug_assert_eq!(x.len(), m * inp);
        // Column-major result so that each task owns a contiguous chunk.
        let mut yt = vec![0f32; out * m];
        yt.par_chunks_mut(BLOCK * m.max(1))
            .enumerate()
            .for_each(|(bi, chunk)| {
                for (j, ycol) in chunk.chunks_mut(m.max(1)).enumerate() {
                    let n = bi * BLOCK + j;
                    let wrow = &self.w[n * inp..(n + 1) * inp];
                    for (i, y) in ycol.iter_mut().enumerate() {
                        *y = dot(&x[i * inp..(i + 1) * inp], wrow);
                    }
                }
            });
        let mut y = vec![0f32; m * out];
        for n in 0..out {
            for i in 0..m {
                y[i * out + n] = yt[n * m + i];
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product_for_odd_shapes() {
        let (inp, out) = (37, 70);
        let w: Vec<f32> = (0..inp * out)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.1)
            .collect();
        let lin = HostLinear::new(inp, out, w.clone()).expect("shape");
        for m in [1, 3, 8] {
            let x: Vec<f32> = (0..m * inp)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.2)
                .collect();
            let y = lin.forward(&x, m);
            for i in 0..m {
                for n in 0..out {
                    let want: f32 = (0..inp).map(|k| x[i * inp + k] * w[n * inp + k]).sum();
                    assert!((y[i * out + n] - want).abs() < 1e-4, "m{m} i{i} n{n}");
                }
            }
        }
        assert!(HostLinear::new(2, 2, vec![0.0; 3]).is_none());
    }
}
