//! Causal attention of a step's query rows over their contexts, on the host.
//!
//! A task is one KV head `j` of a few query rows that share their context's first keys: up to
//! [`DECODE_ROWS`] decode rows of sequences on one cached prefix (the same slots), or up to
//! [`ROWS_PER_TASK`] consecutive prefill rows of one sequence. The shared keys and values are
//! read once, a block at a time, for all the task's rows and their query heads that share KV
//! head `j`; each row then reads its own remaining keys. A single decode row still makes one
//! task per KV head, so it keeps every core busy.

mod prefix;
mod scores;
#[cfg(test)]
mod tests;

pub(crate) use prefix::{HeadPrefix, Pools, Prefix, PrefixKv};

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use crate::batch::ForwardBatch;
use crate::kv_dtype::{Cols, KvDtype, KvPool};
use crate::weights::LlamaConfig;
use scores::{PerKey, Scorer};

/// Most prefill rows of one sequence in one attention task: enough to read their shared
/// context once for many rows, few enough that a batch still makes tasks for every core.
pub(crate) const ROWS_PER_TASK: usize = 8;

/// Most decode rows of one group (sequences on one cached prefix) in one task. A task reads
/// the shared keys and values once for all of its rows, so 32 rows make two tasks per KV head
/// that read them from the pools, where 8 a task made four tasks over a prefix widened once
/// per layer: 32 rows on a 1k prefix were 2.5-3% faster a step, 24 rows 4% (interleaved
/// `step_timing shared`), 48 rows (three tasks of 16, with a prefix) the same.
const DECODE_ROWS: usize = 16;

/// Fewest tasks of one decode group for which its shared prefix is widened once per layer
/// ([`Prefix`]). With fewer, each task widening its own blocks from the pools (whose rows are
/// prefetched) was faster: 5-15% of the step for 4 to 16 rows on a 1k prefix (two tasks).
/// With 8 rows a task, 24 rows (three tasks) were 8% faster with it.
const PREFIX_TASKS: usize = 3;

/// Most new tokens of a sequence whose attention tasks read its context straight from the
/// pools (prefetched, a block at a time) rather than from a copy gathered once per layer:
/// for a few dozen tokens over a long cached context, the gathering pass (one thread per
/// sequence) cost more than the tasks' own reads (a 35-token extend over 1k tokens was
/// 5-10% faster without it; a 1,000-token prefill 1-3% slower).
const POOL_ROWS: usize = 64;

/// Whether a sequence of `new_tokens` reads a [`Context`] gathered once per layer.
pub(crate) fn gathers(new_tokens: usize) -> bool {
    new_tokens > POOL_ROWS
}

/// Keys and values read at a time: enough loads in flight to stream a context from memory,
/// few enough (16 KiB of f32 at 64 values a row) to stay in the first-level cache for the
/// heads and rows that use them. A multiple of every scorer's block.
const CHUNK: usize = 64;

/// `acc += Σ p_k * v_k` over the value rows `v[k * hd..][..hd]`, in two chains of `NV`
/// vector accumulators held in registers: even keys in `acc[..hd]`, odd keys in `acc[hd..]`
/// (`hd == NV * lanes`; blocks start at even keys). Returns false if shapes differ.
#[inline(always)]
fn accumulate<S: Simd, const NV: usize>(simd: S, p: &[f32], v: &[f32], acc: &mut [f32]) -> bool {
    let hd = acc.len() / 2;
    let (av, _) = S::as_mut_simd_f32s(acc);
    if av.len() != 2 * NV || hd != NV * S::F32_LANES {
        return false;
    }
    let (ev, od) = av.split_at_mut(NV);
    let mut even = [simd.splat_f32s(0.0); NV];
    let mut odd = [simd.splat_f32s(0.0); NV];
    even.copy_from_slice(ev);
    odd.copy_from_slice(od);
    let row = |k: usize| S::as_simd_f32s(&v[k * hd..k * hd + hd]).0;
    let (pairs, last) = p.as_chunks::<2>();
    for (i, pk) in pairs.iter().enumerate() {
        let (we, wo) = (simd.splat_f32s(pk[0]), simd.splat_f32s(pk[1]));
        let (re, ro) = (row(2 * i), row(2 * i + 1));
        for ((a, b), (&x, &y)) in even.iter_mut().zip(odd.iter_mut()).zip(re.iter().zip(ro)) {
            *a = simd.mul_add_e_f32s(we, x, *a);
            *b = simd.mul_add_e_f32s(wo, y, *b);
        }
    }
    if let [pk] = last {
        let w = simd.splat_f32s(*pk);
        for (a, &x) in even.iter_mut().zip(row(p.len() - 1)) {
            *a = simd.mul_add_e_f32s(w, x, *a);
        }
    }
    ev.copy_from_slice(&even);
    od.copy_from_slice(&odd);
    true
}

/// A pool thread's block buffers of keys and values.
#[derive(Default)]
pub(crate) struct BlockBufs {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// A pool thread's buffers, kept across tasks and steps: the blocks of keys and values, and
/// the rows' scores (written in full by every task before they are read, so never cleared:
/// zeroing a task's scores, 100 KB for 8 rows at 1k context, cost more than their use).
#[derive(Default)]
pub(crate) struct Scratch {
    blocks: BlockBufs,
    scores: Vec<f32>,
}

thread_local! {
    /// Each pool thread's buffers.
    pub(crate) static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Where a task's rows read their context's K and V.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// Their sequence's context, widened once per layer for all of the sequence's query rows
    /// (a prefill of more than [`POOL_ROWS`] tokens), head by head: blocks of whole scorer
    /// blocks are read in place.
    Gathered(&'a PrefixKv),
    /// Straight from the pools by each row's slots, a block of keys at a time (decode rows
    /// and short extends: gathering whole contexts would only add memory traffic).
    Pools { k: &'a KvPool, v: &'a KvPool },
}

/// One query row of a task.
pub(crate) struct Query<'a> {
    /// Its query heads that share the task's KV head, already rounded to the cache's type.
    pub q: &'a [f32],
    /// Its context's slots, itself last (the row attends to all of them).
    pub slots: &'a [u32],
    /// Its output for those heads.
    pub out: &'a mut [f32],
}

/// Causal attention of the query rows `rows` over KV head `j`.
///
/// Keys and values are taken [`CHUNK`] rows at a time: read once for all of the task's query
/// heads, and from the pools widened into a small buffer that stays in the first-level cache.
/// Every chunk starts at a multiple of the scorer's block `W`, and each score,
/// softmax and weighted sum follows the same arithmetic whichever source, task or batch the
/// row comes in, so a row's output does not depend on what else is computed with it.
pub(crate) struct AttendRows<'a> {
    pub cfg: &'a LlamaConfig,
    pub j: usize,
    pub source: Source<'a>,
    pub rows: Vec<Query<'a>>,
    /// Leading keys that every row's context holds alike (the same slots).
    pub shared: usize,
    /// The first of those keys and values, already widened for the task's KV head (a decode
    /// group's prefix), read in place instead of from `source`.
    pub prefix: Option<HeadPrefix<'a>>,
    /// This thread's buffers, kept across tasks.
    pub scratch: &'a mut Scratch,
    pub width: usize,
    pub dtype: KvDtype,
}

/// Which of a context's two row sets a block reads.
#[derive(Clone, Copy)]
enum Side {
    K,
    V,
}

/// Reads blocks of one KV head's rows.
#[derive(Clone, Copy)]
struct Reader<'a> {
    source: Source<'a>,
    /// The head's first column in a pool row.
    col: usize,
    hd: usize,
    width: usize,
}

/// Rows of keys `k0..k0 + n` back to back, padded with zero rows to whole scorer blocks.
#[derive(Clone, Copy)]
struct Block<'a> {
    rows: &'a [f32],
    k0: usize,
    n: usize,
}

impl<'a> Reader<'a> {
    /// The `n` (at most [`CHUNK`]) rows from key `k0` on of `slots`' context, widened or
    /// copied into `buf` back to back and padded with zero rows to whole scorer blocks: they
    /// stay in the first-level cache for all the heads and rows that read them, and the
    /// kernels address them with constant offsets.
    #[inline(always)]
    fn block<'b, K: Scorer>(
        self,
        kern: K,
        side: Side,
        (slots, k0, n): (&[u32], usize, usize),
        buf: &'b mut [f32],
    ) -> Block<'b>
    where
        'a: 'b,
    {
        let (w, hd, width) = (K::W, self.hd, self.width);
        match self.source {
            Source::Gathered(ctx) => {
                let head = ctx.head(self.col / hd);
                let all = match side {
                    Side::K => head.k,
                    Side::V => head.v,
                };
                let rows = &all[k0 * hd..(k0 + n) * hd];
                if n.is_multiple_of(w) {
                    // Whole scorer blocks: no padding, so read in place.
                    return Block { rows, k0, n };
                }
                buf[..n * hd].copy_from_slice(rows);
            }
            Source::Pools { k, v } => {
                let pool = match side {
                    Side::K => k,
                    Side::V => v,
                };
                let cols = Cols {
                    slots: &slots[k0..k0 + n],
                    ahead: &slots[k0 + n..],
                    width,
                    col: self.col,
                    len: hd,
                };
                pool.read_cols_with(kern.widen(), cols, buf);
            }
        }
        buf[n * hd..n.div_ceil(w) * w * hd].fill(0.0);
        Block { rows: buf, k0, n }
    }
}

/// Keys `k0..k0 + n` of a widened prefix of `len` keys, in place, if it holds them. The
/// prefix ends on a chunk boundary, so such a block is a whole chunk and needs no padding.
#[inline(always)]
fn in_prefix(rows: &[f32], len: usize, hd: usize, (k0, n): (usize, usize)) -> Option<Block<'_>> {
    (k0 + n <= len && n == CHUNK).then(|| Block {
        rows: &rows[k0 * hd..(k0 + n) * hd],
        k0,
        n,
    })
}

/// A task's head shape: `g` query heads of `hd` values per KV head.
#[derive(Clone, Copy)]
struct Heads {
    g: usize,
    hd: usize,
}

/// Scores of a row's query heads `q` against a block, into the row's `[head][key]` scores
/// `s` (scaled by `1 / sqrt(hd)`).
#[inline(always)]
fn score<K: Scorer>(kern: K, heads: Heads, q: &[f32], b: Block<'_>, s: &mut [f32]) {
    let l = s.len() / heads.g;
    let scale = 1.0 / (heads.hd as f32).sqrt();
    let (w, hd) = (K::W, heads.hd);
    for (a, qa) in q.chunks_exact(hd).enumerate() {
        // The scorer's blocks of `W` keys; the last may be padded with zero rows.
        for i in (0..b.n).step_by(w) {
            let n = w.min(b.n - i);
            let at = a * l + b.k0 + i;
            kern.scaled(qa, &b.rows[i * hd..(i + w) * hd], scale, &mut s[at..at + n]);
        }
    }
}

/// A row's weighted sums of a block of values: its heads' weights `p` (`[head][key]`) into
/// its accumulators `acc` (`[head][2 * hd]`, see [`accumulate`]).
#[inline(always)]
fn weigh_row<S: Simd>(simd: S, heads: Heads, p: &[f32], b: Block<'_>, acc: &mut [f32]) {
    let l = p.len() / heads.g;
    for (a, acc) in acc.chunks_exact_mut(2 * heads.hd).enumerate() {
        let pa = &p[a * l + b.k0..a * l + b.k0 + b.n];
        weigh(simd, pa, b.rows, acc);
    }
}

impl AttendRows<'_> {
    /// Runs the task under the best instruction set the CPU has.
    pub(crate) fn run(self) {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(v4) = pulp::x86::V4::try_new() {
                return v4.vectorize(Attend(self, v4));
            }
            if let Some(v3) = pulp::x86::V3::try_new() {
                return v3.vectorize(Attend(self, v3));
            }
        }
        Arch::new().dispatch(self)
    }

    /// The task with the kernels of `kern`'s instruction set.
    #[inline(always)]
    fn attend<K: Scorer>(self, kern: K) {
        let AttendRows {
            cfg,
            j,
            source,
            mut rows,
            shared,
            prefix,
            scratch,
            width,
            dtype,
        } = self;
        let heads = Heads {
            g: cfg.num_heads / cfg.num_kv_heads,
            hd: cfg.head_dim,
        };
        let (g, hd, w) = (heads.g, heads.hd, K::W);
        let simd = kern.simd();
        let reader = Reader {
            source,
            col: j * hd,
            hd,
            width,
        };
        let Scratch {
            blocks: BlockBufs { k: kbuf, v: vbuf },
            scores: scores_buf,
        } = scratch;
        kbuf.resize(CHUNK * hd, 0.0);
        vbuf.resize(CHUNK * hd, 0.0);
        let lens: Vec<usize> = rows.iter().map(|r| r.slots.len()).collect();
        // Whole blocks only, so that every row's blocks start where they would alone.
        let shared = shared.min(lens.iter().copied().min().unwrap_or(0)) / w * w;
        let first = rows.first().map_or(&[][..], |r| r.slots);
        // Each row's scores `[head][key]`, then its weights, back to back.
        let mut scores: Vec<&mut [f32]> = Vec::with_capacity(rows.len());
        let need = g * lens.iter().sum::<usize>();
        if scores_buf.len() < need {
            scores_buf.resize(need, 0.0);
        }
        let mut rest = &mut scores_buf[..need];
        for &l in &lens {
            let (s, r) = rest.split_at_mut(g * l);
            scores.push(s);
            rest = r;
        }
        for k0 in (0..shared).step_by(CHUNK) {
            let n = CHUNK.min(shared - k0);
            let b = match prefix {
                Some(p) => in_prefix(p.k, p.len, hd, (k0, n)),
                None => None,
            }
            .unwrap_or_else(|| reader.block(kern, Side::K, (first, k0, n), kbuf));
            for (row, s) in rows.iter().zip(scores.iter_mut()) {
                score(kern, heads, row.q, b, s);
            }
        }
        for (row, s) in rows.iter().zip(scores.iter_mut()) {
            for k0 in (shared..row.slots.len()).step_by(CHUNK) {
                let n = CHUNK.min(row.slots.len() - k0);
                let b = reader.block(kern, Side::K, (row.slots, k0, n), kbuf);
                score(kern, heads, row.q, b, s);
            }
        }
        // The weights in the cache's type, as ggml multiplies them with a typed V.
        for (s, &l) in scores.iter_mut().zip(&lens) {
            for p in s.chunks_exact_mut(l) {
                crate::vexp::softmax_rounded(p, dtype);
            }
        }
        let mut acc = vec![0f32; rows.len() * g * 2 * hd];
        for k0 in (0..shared).step_by(CHUNK) {
            let n = CHUNK.min(shared - k0);
            let b = match prefix {
                Some(p) => in_prefix(p.v, p.len, hd, (k0, n)),
                None => None,
            }
            .unwrap_or_else(|| reader.block(kern, Side::V, (first, k0, n), vbuf));
            for (p, acc) in scores.iter().zip(acc.chunks_exact_mut(g * 2 * hd)) {
                weigh_row(simd, heads, p, b, acc);
            }
        }
        for ((row, p), acc) in rows
            .iter()
            .zip(&scores)
            .zip(acc.chunks_exact_mut(g * 2 * hd))
        {
            for k0 in (shared..row.slots.len()).step_by(CHUNK) {
                let n = CHUNK.min(row.slots.len() - k0);
                let b = reader.block(kern, Side::V, (row.slots, k0, n), vbuf);
                weigh_row(simd, heads, p, b, acc);
            }
        }
        for (row, acc) in rows.iter_mut().zip(acc.chunks_exact(g * 2 * hd)) {
            for (o, acc) in row.out.chunks_exact_mut(hd).zip(acc.chunks_exact(2 * hd)) {
                let (even, odd) = acc.split_at(hd);
                for ((o, e), d) in o.iter_mut().zip(even).zip(odd) {
                    *o = e + d;
                }
            }
        }
    }
}

/// [`accumulate`] with register accumulators for the usual head sizes, the plain loop (one
/// chain) otherwise.
#[inline(always)]
fn weigh<S: Simd>(simd: S, p: &[f32], v: &[f32], acc: &mut [f32]) {
    let hd = acc.len() / 2;
    let done = hd.is_multiple_of(S::F32_LANES)
        && match hd / S::F32_LANES {
            2 => accumulate::<S, 2>(simd, p, v, acc),
            4 => accumulate::<S, 4>(simd, p, v, acc),
            8 => accumulate::<S, 8>(simd, p, v, acc),
            16 => accumulate::<S, 16>(simd, p, v, acc),
            _ => false,
        };
    if !done {
        for (k, &pk) in p.iter().enumerate() {
            for (a, &x) in acc[..hd].iter_mut().zip(&v[k * hd..k * hd + hd]) {
                *a += pk * x;
            }
        }
    }
}

/// Instruction sets without a block scorer: one dot product per key.
impl WithSimd for AttendRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        self.attend(PerKey(simd));
    }
}

/// The task under an x86 instruction set's features, as a struct with a plain call: a
/// closure's shim may not inline into the function compiled for the instruction set.
#[cfg(target_arch = "x86_64")]
struct Attend<'a, K>(AttendRows<'a>, K);

#[cfg(target_arch = "x86_64")]
impl<K: Scorer> pulp::NullaryFnOnce for Attend<'_, K> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        self.0.attend(self.1);
    }
}

/// Token rows that one attention task computes (for each KV head), and how many leading keys
/// of their contexts are the same slots.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Task {
    pub rows: Vec<usize>,
    pub shared: usize,
    /// The plan's widened prefix these rows read their first keys from, if any.
    pub prefix: Option<usize>,
}

/// A step's attention work: its tasks, and the decode groups' prefixes they share.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub tasks: Vec<Task>,
    pub prefixes: Vec<Prefix>,
}

/// The number of leading slots that all `rows` (token rows, see [`plan`]) hold alike.
fn common_slots(batch: &ForwardBatch, rows: &[(usize, usize)], group: &[usize]) -> usize {
    let slots = |r: usize| &batch.seqs[rows[r].0].slot_row[..];
    let head = slots(group[0]);
    group[1..].iter().fold(head.len(), |n, &r| {
        n.min(
            head.iter()
                .zip(slots(r))
                .take_while(|(a, b)| a == b)
                .count(),
        )
    })
}

/// The step's attention tasks, once for all layers. `rows[r] = (sequence, index among its new
/// tokens)`.
///
/// Decode rows whose contexts start at the same slot (sequences on one cached prefix) go
/// together, up to [`DECODE_ROWS`] at a time, sharing their contexts' common slots; the
/// rows of one prefill sequence go together in runs, sharing the first row's context. A
/// decode group of two rows or more is split into two tasks or more; one of [`PREFIX_TASKS`]
/// tasks or more gets a [`Prefix`]: the chunks of keys that all its rows share, widened once
/// per layer for all of its tasks.
pub(crate) fn plan(batch: &ForwardBatch, rows: &[(usize, usize)]) -> Plan {
    let mut tasks = Vec::new();
    let mut prefixes = Vec::new();
    // Decode rows by their context's first slot, in order of first appearance.
    let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
    // Extends read from the pools: their sequence and their tasks.
    let mut extends: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    let mut r = 0;
    while r < rows.len() {
        let s = &batch.seqs[rows[r].0];
        let n = s.token_ids.len();
        if n == 1 {
            push_grouped(&mut groups, s, r);
        } else {
            let past = s.slot_row.len() - n;
            let first = tasks.len();
            for start in (r..r + n).step_by(ROWS_PER_TASK) {
                let end = (start + ROWS_PER_TASK).min(r + n);
                tasks.push(Task {
                    rows: (start..end).collect(),
                    shared: past + (start - r) + 1,
                    prefix: None,
                });
            }
            if !gathers(n) {
                extends.push((rows[r].0, first..tasks.len()));
            }
        }
        r += n;
    }
    extend_prefixes(batch, &extends, &mut tasks, &mut prefixes);
    for (_, group) in groups {
        // At least two tasks per KV head from two rows up, so that a few rows on one prefix
        // still keep both halves of a machine busy (three KV heads make three tasks).
        let per_task = DECODE_ROWS.min(group.len().div_ceil(2));
        let len = common_slots(batch, rows, &group) / CHUNK * CHUNK;
        let prefix = (group.len() > (PREFIX_TASKS - 1) * per_task && len > 0).then(|| {
            prefixes.push(Prefix {
                seq: rows[group[0]].0,
                len,
            });
            prefixes.len() - 1
        });
        for chunk in group.chunks(per_task) {
            tasks.push(Task {
                rows: chunk.to_vec(),
                shared: common_slots(batch, rows, chunk),
                prefix,
            });
        }
    }
    Plan { tasks, prefixes }
}

/// Adds `i` to the group of sequences whose context starts at `s`'s first slot (sequences on
/// one cached prefix), in order of first appearance.
fn push_grouped(groups: &mut Vec<(u32, Vec<usize>)>, s: &crate::batch::SequenceInput, i: usize) {
    let first = s.slot_row.first().copied().unwrap_or(0);
    match groups.iter_mut().find(|(f, _)| *f == first) {
        Some((_, g)) => g.push(i),
        None => groups.push((first, vec![i])),
    }
}

/// Gives the tasks of short extends over one cached context a [`Prefix`]: the whole chunks of
/// cached keys that all of their sequences hold alike, widened once per layer instead of by
/// each task from the pools (a 35-token extend makes five tasks per KV head, each of which
/// read the whole context). Extends are grouped by their context's first slot, and a group
/// of [`PREFIX_TASKS`] tasks or more gets the prefix.
fn extend_prefixes(
    batch: &ForwardBatch,
    extends: &[(usize, std::ops::Range<usize>)],
    tasks: &mut [Task],
    prefixes: &mut Vec<Prefix>,
) {
    let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
    for (i, (seq, _)) in extends.iter().enumerate() {
        push_grouped(&mut groups, &batch.seqs[*seq], i);
    }
    for (_, group) in groups {
        let count: usize = group.iter().map(|&i| extends[i].1.len()).sum();
        let cached = |i: usize| {
            let s = &batch.seqs[extends[i].0];
            &s.slot_row[..s.prefix_len()]
        };
        let head = cached(group[0]);
        let len = group[1..].iter().fold(head.len(), |n, &i| {
            n.min(
                head.iter()
                    .zip(cached(i))
                    .take_while(|(a, b)| a == b)
                    .count(),
            )
        }) / CHUNK
            * CHUNK;
        if count < PREFIX_TASKS || len == 0 {
            continue;
        }
        prefixes.push(Prefix {
            seq: extends[group[0]].0,
            len,
        });
        for &i in &group {
            for t in &mut tasks[extends[i].1.clone()] {
                t.prefix = Some(prefixes.len() - 1);
            }
        }
    }
}

/// One layer's attention inputs for all of a step's rows.
pub(crate) struct Layer<'a> {
    pub cfg: &'a LlamaConfig,
    pub batch: &'a ForwardBatch,
    pub rows: &'a [(usize, usize)],
    /// `[t][qkv_w]` projected, rotated and rounded queries, keys and values.
    pub qkv: &'a [f32],
    pub qkv_w: usize,
    /// Per sequence, its gathered context (sequences of more than [`POOL_ROWS`] new tokens).
    pub contexts: &'a [PrefixKv],
    pub k: &'a KvPool,
    pub v: &'a KvPool,
    pub width: usize,
    pub dtype: KvDtype,
    /// The plan's prefixes, widened for this layer.
    pub prefixes: &'a [PrefixKv],
}

impl Layer<'_> {
    /// The attention output of every row, `[t][num_heads * head_dim]`, task by task on the
    /// thread pool.
    pub(crate) fn attend(&self, plan: &[Task]) -> Vec<f32> {
        let c = self.cfg;
        let (kvh, group) = (c.num_kv_heads, c.num_heads / c.num_kv_heads * c.head_dim);
        let mut attn = vec![0f32; self.rows.len() * kvh * group];
        // Output `r * kvh + j` is row `r`'s heads of KV head `j`.
        let mut outs: Vec<Option<&mut [f32]>> = attn.chunks_mut(group).map(Some).collect();
        let mut jobs = Vec::with_capacity(plan.len() * kvh);
        for task in plan {
            for j in 0..kvh {
                let mine: Vec<&mut [f32]> = task
                    .rows
                    .iter()
                    .filter_map(|&r| outs[r * kvh + j].take())
                    .collect();
                jobs.push((task, j, mine));
            }
        }
        jobs.into_par_iter().for_each(|(task, j, mine)| {
            // Each pool thread's own buffers, kept across tasks and steps.
            SCRATCH.with_borrow_mut(|scratch| self.job(task, j, mine, scratch));
        });
        attn
    }

    /// One task's rows over KV head `j`.
    fn job(&self, task: &Task, j: usize, outs: Vec<&mut [f32]>, scratch: &mut Scratch) {
        let group = self.cfg.num_heads / self.cfg.num_kv_heads * self.cfg.head_dim;
        let rows = task.rows.iter().zip(outs).map(|(&r, out)| {
            let (si, i) = self.rows[r];
            let s = &self.batch.seqs[si];
            let l = s.slot_row.len() - s.token_ids.len() + i + 1;
            let at = r * self.qkv_w + j * group;
            Query {
                q: &self.qkv[at..at + group],
                slots: &s.slot_row[..l],
                out,
            }
        });
        let si = task.rows.first().map_or(0, |&r| self.rows[r].0);
        let source = if gathers(self.batch.seqs[si].token_ids.len()) {
            Source::Gathered(&self.contexts[si])
        } else {
            Source::Pools {
                k: self.k,
                v: self.v,
            }
        };
        AttendRows {
            cfg: self.cfg,
            j,
            source,
            rows: rows.collect(),
            shared: task.shared,
            prefix: task.prefix.map(|p| self.prefixes[p].head(j)),
            scratch,
            width: self.width,
            dtype: self.dtype,
        }
        .run();
    }
}
