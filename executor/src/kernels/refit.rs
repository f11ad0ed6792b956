//! Refitting f32 weights into blocks: a matrix whose every 32-value block is exactly a GGUF
//! Q4_1 block (`q * d + m`, f16 `d` and `m`) or Q8_0 block (`q * d`; Q4_0 and Q5_0 blocks are
//! such blocks too) is stored as those blocks, found by search; anything else stays f32. Used
//! where weights arrive as f32 values (from a burn model, or a file whose type has no direct
//! layout in [`super::blocks`]).

use half::f16;

use super::{Weights, QK};

/// f16 candidates for a block scale near `x` (the rounded value and its neighbours).
fn f16_candidates(x: f32) -> [f32; 3] {
    let h = f16::from_f32(x);
    let b = h.to_bits();
    [
        h.to_f32(),
        f16::from_bits(b.wrapping_add(1)).to_f32(),
        f16::from_bits(b.wrapping_sub(1)).to_f32(),
    ]
}

/// The Q4_1 block (d, m, nibbles) that reproduces `v` exactly, if any.
fn as_q4_1(v: &[f32]) -> Option<(f32, f32, [u8; 16])> {
    let m = v.iter().copied().fold(f32::INFINITY, f32::min);
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !m.is_finite() || !max.is_finite() || f16::from_f32(m).to_f32() != m {
        return None;
    }
    let try_d = |d: f32| -> Option<[u8; 16]> {
        if !d.is_finite() || d < 0.0 {
            return None;
        }
        let mut q = [0u8; QK];
        for (qi, &x) in q.iter_mut().zip(v) {
            let r = if d == 0.0 { 0.0 } else { ((x - m) / d).round() };
            if !(0.0..=15.0).contains(&r) || r * d + m != x {
                return None;
            }
            *qi = r as u8;
        }
        let mut qs = [0u8; 16];
        for j in 0..16 {
            qs[j] = q[j] | (q[j + 16] << 4);
        }
        Some(qs)
    };
    if max == m {
        return try_d(0.0).map(|qs| (0.0, m, qs));
    }
    for top in [15.0f32, 14.0, 13.0] {
        for d in f16_candidates((max - m) / top) {
            if let Some(qs) = try_d(d) {
                return Some((d, m, qs));
            }
        }
    }
    None
}

/// The Q8_0 block (d, quants) that reproduces `v` exactly, if any.
fn as_q8_0(v: &[f32]) -> Option<(f32, [i8; QK])> {
    let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
    if !amax.is_finite() {
        return None;
    }
    let try_d = |d: f32| -> Option<[i8; QK]> {
        if !d.is_finite() || d < 0.0 {
            return None;
        }
        let mut q = [0i8; QK];
        for (qi, &x) in q.iter_mut().zip(v) {
            let r = if d == 0.0 { 0.0 } else { (x / d).round() };
            if !(-128.0..=127.0).contains(&r) || r * d != x {
                return None;
            }
            *qi = r as i8;
        }
        Some(q)
    };
    if amax == 0.0 {
        return try_d(0.0).map(|q| (0.0, q));
    }
    // Q8_0's own scales (the largest value over 127, 128 or 126 steps), then those of the
    // narrower GGUF formats that are exact Q8_0 blocks too: Q4_0 (`(q - 8) * d`) and Q5_0
    // (`(q - 16) * d`), whose largest value is k steps of d for some k up to 16.
    for top in [127.0f32, 128.0, 126.0]
        .into_iter()
        .chain((1..=16).rev().map(|k| k as f32))
    {
        for d in f16_candidates(amax / top) {
            if let Some(q) = try_d(d) {
                return Some((d, q));
            }
        }
    }
    None
}

pub(super) fn compress(inp: usize, w: Vec<f32>) -> Weights {
    if inp == 0 || !inp.is_multiple_of(QK) {
        return Weights::F32(w);
    }
    let blocks = w.len() / QK;
    let mut d = Vec::with_capacity(blocks);
    let mut m = Vec::with_capacity(blocks);
    let mut qs = Vec::with_capacity(blocks * 16);
    let q4 = w.chunks_exact(QK).all(|b| match as_q4_1(b) {
        Some((bd, bm, bq)) => {
            d.push(bd);
            m.push(bm);
            qs.extend_from_slice(&bq);
            true
        }
        None => false,
    });
    if q4 {
        return Weights::Q4_1 { d, m, qs };
    }
    let mut d = Vec::with_capacity(blocks);
    let mut qs = Vec::with_capacity(blocks * QK);
    let q8 = w.chunks_exact(QK).all(|b| match as_q8_0(b) {
        Some((bd, bq)) => {
            d.push(bd);
            qs.extend_from_slice(&bq);
            true
        }
        None => false,
    });
    if q8 {
        return Weights::Q8_0 { d, qs };
    }
    Weights::F32(w)
}
