//! Keys and values widened once per layer, head by head, for several tasks to read in place:
//! a decode group's shared prefix, and a long prefill's whole context.
//!
//! When more decode rows sit on one cached prefix than one task takes, each of their tasks
//! would widen the same f16 keys and values from the pool; here they are widened once per
//! layer and the tasks read their blocks in place. A prefill sequence's tasks read their
//! context the same way. The values are the same f32 either way (widening is exact), so the
//! rows' outputs keep their bits.

use rayon::prelude::*;

use crate::kv_dtype::KvPool;

/// A prefix the plan found: the first `len` slots of sequence `seq`'s context (a multiple of
/// the attention's block of keys), shared by every row of a decode group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix {
    pub seq: usize,
    pub len: usize,
}

/// One layer's keys and values of a [`Prefix`] or of a sequence's context,
/// `[kv head][key][head_dim]` each.
#[derive(Default)]
pub(crate) struct PrefixKv {
    k: Vec<f32>,
    v: Vec<f32>,
    len: usize,
    hd: usize,
}

/// One KV head's part of a [`PrefixKv`].
#[derive(Clone, Copy)]
pub(crate) struct HeadPrefix<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// Keys held (a multiple of the attention's block of keys).
    pub len: usize,
}

/// Where a layer's K and V rows are: the pools, `width` values a slot.
#[derive(Clone, Copy)]
pub(crate) struct Pools<'a> {
    pub k: &'a KvPool,
    pub v: &'a KvPool,
    pub width: usize,
}

impl PrefixKv {
    /// Widens the keys and values of `slots` for `kvh` heads of `hd` values, in parallel by
    /// head and side.
    pub(crate) fn gather(&mut self, pools: Pools<'_>, slots: &[u32], kvh: usize, hd: usize) {
        let n = slots.len() * hd;
        self.k.resize(kvh * n, 0.0);
        self.v.resize(kvh * n, 0.0);
        (self.len, self.hd) = (slots.len(), hd);
        let read = |pool: &KvPool, j: usize, dst: &mut [f32]| {
            pool.read_cols(slots, pools.width, j * hd, hd, dst);
        };
        rayon::join(
            || {
                self.k
                    .par_chunks_mut(n)
                    .enumerate()
                    .for_each(|(j, d)| read(pools.k, j, d))
            },
            || {
                self.v
                    .par_chunks_mut(n)
                    .enumerate()
                    .for_each(|(j, d)| read(pools.v, j, d))
            },
        );
    }

    /// KV head `j`'s keys and values.
    pub(crate) fn head(&self, j: usize) -> HeadPrefix<'_> {
        let n = self.len * self.hd;
        HeadPrefix {
            k: &self.k[j * n..(j + 1) * n],
            v: &self.v[j * n..(j + 1) * n],
            len: self.len,
        }
    }
}
