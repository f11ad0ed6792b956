//! Activation rows in fours, block by block: what the interleaved kernels ([`super::x16`])
//! read for each block of a group when they take four rows at once.
//!
//! A kernel over four rows reads, per block, each row's eight four-byte words, scale, sum
//! and exact `Σq`. Read from four separate rows that is sixteen base pointers, more than
//! x86 has registers for beside the weights' own, so the loop spilled and reloaded them
//! every block. Packed side by side they are one pointer that steps by one [`Quad`].

use super::QK;

/// Rows packed together.
pub(crate) const QUAD: usize = 4;

/// Block `b` of four activation rows `j < 4`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Quad {
    /// Row `j`'s 32 values as eight words of four (word `r`: values `4r..4r + 4`).
    pub(crate) words: [[i32; 8]; QUAD],
    /// Row `j`'s block scale `d` (f16-rounded).
    pub(crate) d: [f32; QUAD],
    /// Row `j`'s `d · Σq` (f16-rounded), for the Q4_1 minimum term.
    pub(crate) s: [f32; QUAD],
    /// Row `j`'s exact `Σq`.
    pub(crate) sum: [i32; QUAD],
}

/// The parts of quantised rows that [`pack`] reads, each row-major over `nb` blocks a row.
pub(crate) struct Parts<'a> {
    pub(crate) qs: &'a [i8],
    pub(crate) d: &'a [f32],
    pub(crate) s: &'a [f32],
    pub(crate) sum: &'a [i32],
    pub(crate) nb: usize,
}

/// Quads of `rows` rows of `nb` blocks: `[rows / 4][nb]` (rows past the last whole four are
/// left out: the kernels take those one by one).
pub(crate) fn len(rows: usize, nb: usize) -> usize {
    rows / QUAD * nb
}

/// Packs every whole four rows of `p` into `out`, `[rows / 4][nb]`.
pub(crate) fn pack(p: &Parts<'_>, out: &mut [Quad]) {
    let (nb, values) = (p.nb, p.qs.as_chunks::<QK>().0);
    for (c, fours) in out.chunks_exact_mut(nb).enumerate() {
        for (b, q) in fours.iter_mut().enumerate() {
            for j in 0..QUAD {
                let (row, at) = (QUAD * c + j, (QUAD * c + j) * nb + b);
                q.words[j] = bytemuck::cast::<[i8; QK], [i32; 8]>(values[row * nb + b]);
                q.d[j] = p.d[at];
                q.s[j] = p.s[at];
                q.sum[j] = p.sum[at];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of every quad is its row's block, for row counts with and without a
    /// remainder past the last four.
    #[test]
    fn quads_hold_each_rows_blocks_and_leave_out_the_remainder() {
        for rows in 0..11 {
            for nb in 1..4 {
                let blocks = rows * nb;
                let qs: Vec<i8> = (0..blocks * QK).map(|i| (i * 37 % 255) as i8).collect();
                let d: Vec<f32> = (0..blocks).map(|i| i as f32 * 0.5).collect();
                let s: Vec<f32> = (0..blocks).map(|i| -(i as f32)).collect();
                let sum: Vec<i32> = (0..blocks).map(|i| 3 * i as i32 - 7).collect();
                let mut out = vec![Quad::default(); len(rows, nb)];
                let parts = Parts {
                    qs: &qs,
                    d: &d,
                    s: &s,
                    sum: &sum,
                    nb,
                };
                pack(&parts, &mut out);
                assert_eq!(out.len(), rows / QUAD * nb);
                for (i, q) in out.iter().enumerate() {
                    let (c, b) = (i / nb, i % nb);
                    for j in 0..QUAD {
                        let at = (QUAD * c + j) * nb + b;
                        let bytes: [i8; QK] = bytemuck::cast(q.words[j]);
                        assert_eq!(&bytes[..], &qs[at * QK..(at + 1) * QK]);
                        assert_eq!((q.d[j], q.s[j], q.sum[j]), (d[at], s[at], sum[at]));
                    }
                }
            }
        }
    }
}
