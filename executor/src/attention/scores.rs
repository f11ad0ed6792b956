//! Attention scores `q · k` of a group's query heads against a run of keys, per instruction set.
//!
//! A decode row scores every key of its context once per query head: a horizontal sum per key
//! and head would cost more than the products themselves. Under AVX2 and AVX-512 the keys are
//! taken a register's width at a time (8 or 16 keys): each key's products accumulate in one
//! vector, and one tree of lane shuffles and adds turns the keys' vectors into one vector of
//! their sums, in key order.
//!
//! Each key's score is a fixed function of its query head and its own row (the lanes a sum
//! adds, and their order, do not depend on the other keys in the block), so a row's scores are
//! the same whatever batch, source or position its keys come in. Keys past the last whole block
//! are scored in a zero-padded block, by the same tree.

use pulp::Simd;

use crate::kv_dtype::Widen;

/// How one instruction set scores a query head against a block of keys, and widens the
/// cache's f16 rows.
pub(crate) trait Scorer: Copy {
    /// The vector operations of the same instruction set (softmax and weighted sums).
    type S: Simd;
    /// Its f16 widening kernel.
    type Widen: Widen;
    /// Keys per block.
    const W: usize;
    fn simd(self) -> Self::S;
    fn widen(self) -> Self::Widen;
    /// `sums[k] = q · key_k` for the `W` keys of `rows`, back to back (`q.len()` values
    /// each).
    fn block(self, q: &[f32], rows: &[f32], sums: &mut [f32]);
    /// `out[k] = scale * (q · key_k)` for the first `out.len()` (at most `W`) keys of the
    /// block: [`Scorer::block`]'s sums, each times `scale`.
    #[inline(always)]
    fn scaled(self, q: &[f32], rows: &[f32], scale: f32, out: &mut [f32]) {
        scaled_sums(self, q, rows, scale, out);
    }
}

/// [`Scorer::scaled`] through [`Scorer::block`]'s sums.
#[inline(always)]
fn scaled_sums<K: Scorer>(kern: K, q: &[f32], rows: &[f32], scale: f32, out: &mut [f32]) {
    let mut sums = [0f32; 16];
    kern.block(q, rows, &mut sums);
    for (o, x) in out.iter_mut().zip(&sums) {
        *o = x * scale;
    }
}

/// One dot product per key, for instruction sets without a block kernel.
#[derive(Clone, Copy)]
pub(crate) struct PerKey<S>(pub S);

impl<S: Simd> Scorer for PerKey<S> {
    type S = S;
    type Widen = crate::kv_dtype::Plain;
    const W: usize = 16;

    #[inline(always)]
    fn simd(self) -> S {
        self.0
    }

    #[inline(always)]
    fn widen(self) -> Self::Widen {
        crate::kv_dtype::Plain
    }

    #[inline(always)]
    fn block(self, q: &[f32], rows: &[f32], sums: &mut [f32]) {
        per_key(self.0, q, rows, &mut sums[..Self::W]);
    }
}

/// `sums[k] = q · key_k` one key at a time.
#[inline(always)]
fn per_key<S: Simd>(simd: S, q: &[f32], rows: &[f32], sums: &mut [f32]) {
    for (s, key) in sums.iter_mut().zip(rows.chunks_exact(q.len())) {
        *s = dot(simd, q, key);
    }
}

/// `a · b` in two vector accumulators, then the tails.
#[inline(always)]
fn dot<S: Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    let (av, at) = S::as_simd_f32s(a);
    let (bv, bt) = S::as_simd_f32s(b);
    let mut acc0 = simd.splat_f32s(0.0);
    let mut acc1 = simd.splat_f32s(0.0);
    let mut pairs = av.chunks_exact(2).zip(bv.chunks_exact(2));
    for (x, y) in &mut pairs {
        acc0 = simd.mul_add_e_f32s(x[0], y[0], acc0);
        acc1 = simd.mul_add_e_f32s(x[1], y[1], acc1);
    }
    if av.len() % 2 == 1 {
        acc0 = simd.mul_add_e_f32s(av[av.len() - 1], bv[bv.len() - 1], acc0);
    }
    let mut s = simd.reduce_sum_f32s(simd.add_f32s(acc0, acc1));
    for (x, y) in at.iter().zip(bt) {
        s += x * y;
    }
    s
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::{__m256, __m512};

    use pulp::cast;
    use pulp::x86::{V3, V4};

    use super::{per_key, Scorer};

    impl Scorer for V4 {
        type S = V4;
        type Widen = V4;
        const W: usize = 16;

        #[inline(always)]
        fn simd(self) -> V4 {
            self
        }

        #[inline(always)]
        fn widen(self) -> V4 {
            self
        }

        #[inline(always)]
        fn block(self, q: &[f32], rows: &[f32], sums: &mut [f32]) {
            let out = match q.len() {
                32 => block16::<2>(self, q, rows),
                64 => block16::<4>(self, q, rows),
                128 => block16::<8>(self, q, rows),
                _ => None,
            };
            match out {
                Some(v) => sums[..16].copy_from_slice(&cast::<__m512, [f32; 16]>(v)),
                None => per_key(self, q, rows, &mut sums[..16]),
            }
        }

        /// A whole block's scaled sums go from the register straight to `out`: through a
        /// buffer on the stack, a misaligned reload of the sums stalled every block.
        #[inline(always)]
        fn scaled(self, q: &[f32], rows: &[f32], scale: f32, out: &mut [f32]) {
            let whole = <&mut [f32; 16]>::try_from(&mut *out);
            let v = match q.len() {
                32 => block16::<2>(self, q, rows),
                64 => block16::<4>(self, q, rows),
                128 => block16::<8>(self, q, rows),
                _ => None,
            };
            match (whole, v) {
                (Ok(o), Some(v)) => {
                    let f = self.avx512f;
                    *o = cast(f._mm512_mul_ps(v, f._mm512_set1_ps(scale)));
                }
                _ => super::scaled_sums(self, q, rows, scale, out),
            }
        }
    }

    impl Scorer for V3 {
        type S = V3;
        type Widen = V3;
        const W: usize = 8;

        #[inline(always)]
        fn simd(self) -> V3 {
            self
        }

        #[inline(always)]
        fn widen(self) -> V3 {
            self
        }

        #[inline(always)]
        fn block(self, q: &[f32], rows: &[f32], sums: &mut [f32]) {
            let out = match q.len() {
                32 => block8::<4>(self, q, rows),
                64 => block8::<8>(self, q, rows),
                128 => block8::<16>(self, q, rows),
                _ => None,
            };
            match out {
                Some(v) => sums[..8].copy_from_slice(&cast::<__m256, [f32; 8]>(v)),
                None => per_key(self, q, rows, &mut sums[..8]),
            }
        }

        /// As for AVX-512: a whole block's scaled sums go from the register to `out`.
        #[inline(always)]
        fn scaled(self, q: &[f32], rows: &[f32], scale: f32, out: &mut [f32]) {
            let whole = <&mut [f32; 8]>::try_from(&mut *out);
            let v = match q.len() {
                32 => block8::<4>(self, q, rows),
                64 => block8::<8>(self, q, rows),
                128 => block8::<16>(self, q, rows),
                _ => None,
            };
            match (whole, v) {
                (Ok(o), Some(v)) => {
                    let a = self.avx;
                    *o = cast(a._mm256_mul_ps(v, a._mm256_set1_ps(scale)));
                }
                _ => super::scaled_sums(self, q, rows, scale, out),
            }
        }
    }

    /// `q` as `NV` vectors and the first `W` key rows after it as `W` rows of `NV` vectors;
    /// `None` if the lengths differ.
    #[allow(clippy::type_complexity)]
    #[inline(always)]
    fn shaped<'a, const L: usize, const NV: usize, const W: usize>(
        q: &'a [f32],
        rows: &'a [f32],
    ) -> Option<(&'a [[f32; L]; NV], &'a [[[f32; L]; NV]; W])> {
        let q = <&[[f32; L]; NV]>::try_from(q.as_chunks::<L>().0).ok()?;
        let keys = rows.as_chunks::<L>().0.as_chunks::<NV>().0;
        let keys = <&[[[f32; L]; NV]; W]>::try_from(keys.get(..W)?).ok()?;
        Some((q, keys))
    }

    /// The dot products of `q` (`NV` vectors) with 16 key rows, in key order. Key `k`'s
    /// lanes `acc[i] = fma chain over q[16v + i] * key[16v + i]` are summed as
    /// `(a0 + a2) + (a1 + a3)` per 128-bit quarter, then `(c0 + c1) + (c2 + c3)` over the
    /// quarters.
    #[inline(always)]
    pub(crate) fn block16<const NV: usize>(simd: V4, q: &[f32], rows: &[f32]) -> Option<__m512> {
        let f = simd.avx512f;
        let (qv, keys) = shaped::<16, NV, 16>(q, rows)?;
        // Sixteen independent chains, one per key, in registers.
        let mut acc = [f._mm512_setzero_ps(); 16];
        for v in 0..NV {
            let x: __m512 = cast(qv[v]);
            for k in 0..16 {
                acc[k] = f._mm512_fmadd_ps(x, cast(keys[k][v]), acc[k]);
            }
        }
        let mut l1 = [f._mm512_setzero_ps(); 8];
        for (i, s) in l1.iter_mut().enumerate() {
            let (a, b) = (acc[2 * i], acc[2 * i + 1]);
            *s = f._mm512_add_ps(f._mm512_unpacklo_ps(a, b), f._mm512_unpackhi_ps(a, b));
        }
        let mut l2 = [f._mm512_setzero_ps(); 4];
        for (i, s) in l2.iter_mut().enumerate() {
            let (a, b) = (l1[2 * i], l1[2 * i + 1]);
            *s = f._mm512_add_ps(
                f._mm512_shuffle_ps::<0x44>(a, b),
                f._mm512_shuffle_ps::<0xEE>(a, b),
            );
        }
        let l3 = [quarters(simd, l2[0], l2[1]), quarters(simd, l2[2], l2[3])];
        Some(quarters(simd, l3[0], l3[1]))
    }

    /// `[a01, a23, b01, b23]` of the 128-bit quarters' pairwise sums.
    #[inline(always)]
    fn quarters(simd: V4, a: __m512, b: __m512) -> __m512 {
        let f = simd.avx512f;
        f._mm512_add_ps(
            f._mm512_shuffle_f32x4::<0x88>(a, b),
            f._mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    }

    /// The dot products of `q` (`NV` vectors) with 8 key rows, in key order: the AVX2 form
    /// of [`block16`], `c0 + c1` over the two halves.
    #[inline(always)]
    pub(crate) fn block8<const NV: usize>(simd: V3, q: &[f32], rows: &[f32]) -> Option<__m256> {
        let (a1, f) = (simd.avx, simd.fma);
        let (qv, keys) = shaped::<8, NV, 8>(q, rows)?;
        let mut acc = [a1._mm256_setzero_ps(); 8];
        for v in 0..NV {
            let x: __m256 = cast(qv[v]);
            for k in 0..8 {
                acc[k] = f._mm256_fmadd_ps(x, cast(keys[k][v]), acc[k]);
            }
        }
        let mut l1 = [a1._mm256_setzero_ps(); 4];
        for (i, s) in l1.iter_mut().enumerate() {
            let (a, b) = (acc[2 * i], acc[2 * i + 1]);
            *s = a1._mm256_add_ps(a1._mm256_unpacklo_ps(a, b), a1._mm256_unpackhi_ps(a, b));
        }
        let mut l2 = [a1._mm256_setzero_ps(); 2];
        for (i, s) in l2.iter_mut().enumerate() {
            let (a, b) = (l1[2 * i], l1[2 * i + 1]);
            *s = a1._mm256_add_ps(
                a1._mm256_shuffle_ps::<0x44>(a, b),
                a1._mm256_shuffle_ps::<0xEE>(a, b),
            );
        }
        let (a, b) = (l2[0], l2[1]);
        Some(a1._mm256_add_ps(
            a1._mm256_permute2f128_ps::<0x20>(a, b),
            a1._mm256_permute2f128_ps::<0x31>(a, b),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of mixed sign and magnitude, so that the summation order shows in the bits.
    pub(crate) fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let i = i * 31 + seed;
                ((i * 7919 % 1009) as f32 - 504.0) * 0.013 * (1.0 + (i % 5) as f32)
            })
            .collect()
    }

    /// The documented tree's sum of a key's `w` lane sums, each lane one fused chain.
    #[cfg(target_arch = "x86_64")]
    fn tree(q: &[f32], key: &[f32], w: usize) -> f32 {
        let mut acc = vec![0f32; w];
        for (x, y) in q.chunks_exact(w).zip(key.chunks_exact(w)) {
            for i in 0..w {
                acc[i] = x[i].mul_add(y[i], acc[i]);
            }
        }
        let c: Vec<f32> = acc
            .chunks_exact(4)
            .map(|a| (a[0] + a[2]) + (a[1] + a[3]))
            .collect();
        if w == 16 {
            (c[0] + c[1]) + (c[2] + c[3])
        } else {
            c[0] + c[1]
        }
    }

    /// Runs `kern.block` under its instruction set's features.
    #[cfg(target_arch = "x86_64")]
    fn run<K: Scorer>(
        kern: K,
        simd: impl FnOnce(Blocks<'_, K>),
        q: &[f32],
        rows: &[f32],
    ) -> Vec<f32> {
        let mut sums = [0f32; 16];
        simd(Blocks(kern, q, rows, &mut sums));
        sums[..K::W].to_vec()
    }

    /// One block call as a job for `vectorize`.
    #[cfg(target_arch = "x86_64")]
    struct Blocks<'a, K>(K, &'a [f32], &'a [f32], &'a mut [f32; 16]);

    #[cfg(target_arch = "x86_64")]
    impl<K: Scorer> pulp::NullaryFnOnce for Blocks<'_, K> {
        type Output = ();

        #[inline(always)]
        fn call(self) {
            self.0.block(self.1, self.2, self.3);
        }
    }

    /// Under AVX-512 and AVX2 every score has the bits of the documented tree, for each head
    /// size with a block kernel.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn block_scores_follow_the_documented_tree() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for hd in [32, 64, 128] {
            let q = values(hd, 3);
            let rows = values(16 * hd, 11);
            let want = |w: usize| -> Vec<f32> {
                rows.chunks_exact(hd)
                    .take(w)
                    .map(|k| tree(&q, k, w))
                    .collect()
            };
            if let Some(v4) = pulp::x86::V4::try_new() {
                let got = run(v4, |job| v4.vectorize(job), &q, &rows);
                assert_eq!(bits(&got), bits(&want(16)), "AVX-512, hd {hd}");
            }
            // Every machine this project runs on has AVX2: without it the test must not pass
            // having checked nothing.
            let v3 = pulp::x86::V3::try_new().expect("this test needs an AVX2 CPU");
            let got = run(v3, |job| v3.vectorize(job), &q, &rows);
            assert_eq!(bits(&got), bits(&want(8)), "AVX2, hd {hd}");
        }
    }

    /// Every path's scores are within f32 rounding of the exact dot products, head sizes
    /// without a block kernel included.
    #[test]
    fn block_scores_match_f64_dot_products() {
        for hd in [64, 48, 100] {
            let q = values(hd, 5);
            let rows = values(16 * hd, 17);
            let check = |got: &[f32], what: &str| {
                for (k, (g, key)) in got.iter().zip(rows.chunks_exact(hd)).enumerate() {
                    let prods = q
                        .iter()
                        .zip(key)
                        .map(|(x, y)| f64::from(*x) * f64::from(*y));
                    let exact: f64 = prods.clone().sum();
                    let mag: f64 = prods.map(f64::abs).sum();
                    let err = (f64::from(*g) - exact).abs();
                    assert!(err <= mag * 1e-6, "{what} hd {hd} key {k}: {g} vs {exact}");
                }
            };
            let mut sums = [0f32; 16];
            PerKey(pulp::Scalar::new()).block(&q, &rows, &mut sums);
            check(&sums, "per key");
            #[cfg(target_arch = "x86_64")]
            {
                if let Some(v4) = pulp::x86::V4::try_new() {
                    check(&run(v4, |job| v4.vectorize(job), &q, &rows), "AVX-512");
                }
                if let Some(v3) = pulp::x86::V3::try_new() {
                    check(&run(v3, |job| v3.vectorize(job), &q, &rows), "AVX2");
                }
            }
        }
    }
}
