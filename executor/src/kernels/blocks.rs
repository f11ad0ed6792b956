//! GGUF quantised blocks straight into the kernels' layouts, without going through f32.
//!
//! Every layout here reproduces ggml's dequantised values exactly (same f32 operations in the
//! same order), so the kernels compute with the very values ggml would:
//!
//! | GGUF type | layout | value |
//! | --- | --- | --- |
//! | Q8_0, Q4_0, Q5_0, IQ4_NL | `Q8_0`: i8 quants, one scale per 32 | `q · d` (Q4_0: `q - 8`, Q5_0: `q - 16`, IQ4_NL: its table's level) |
//! | Q4_1 | `Q4_1`: nibbles, scale and minimum per 32 | `q · d + m` |
//! | Q4_K | `Q4_1` with f32 sub-block scales | `q · (d · sc) + -(dmin · m)` |
//! | Q5_1, Q5_K | `U8`: bytes, scale and minimum per 32 | as Q4_1 and Q4_K with 5-bit `q` |
//! | Q6_K, Q3_K | `Q8_16`: i8 quants, one f32 scale per 16 | `q · (d · sc)` |
//! | Q2_K | `U8_16`: bytes, scale and minimum per 16 | `q · (d · sc) + -(dmin · m)` |
//!
//! F32, F16 and BF16 tensors are kept as they are (halves expanded to f32 row by row).

use half::f16;

use super::{Weights, QK};
use crate::gguf::{f16_at, q3k_scale, q4k_scale_min, GgmlType, IQ4NL_VALUES};

/// Whether [`from_ggml`] converts this type.
pub(crate) fn convertible(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::IQ4NL
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
    )
}

/// Builders of the three layouts, filled block by block.
#[derive(Default)]
struct Build {
    d: Vec<f32>,
    m: Vec<f32>,
    i8s: Vec<i8>,
    u8s: Vec<u8>,
}

impl Build {
    /// A 32-value block of `q · d + m` with `q` in 0..16, as Q4_1 nibbles.
    fn nibbles(&mut self, d: f32, m: f32, q: &[u8; QK]) {
        self.d.push(d);
        self.m.push(m);
        self.u8s.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
    }

    /// A 32-value block of `q · d + m` with `q` in 0..32, one byte each.
    fn bytes(&mut self, d: f32, m: f32, q: &[u8; QK]) {
        self.d.push(d);
        self.m.push(m);
        self.u8s.extend_from_slice(q);
    }

    /// A block of `q · d` (32 values for Q8_0, 16 for Q8_16).
    fn signed(&mut self, d: f32, q: &[i8]) {
        self.d.push(d);
        self.i8s.extend_from_slice(q);
    }
}

/// The quants of a Q5_0/Q5_1 block (0..32): fifth bits in a little-endian u32, then nibbles.
fn q5_values(rest: &[u8]) -> [u8; QK] {
    let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let qs = &rest[4..20];
    let mut q = [0u8; QK];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0f) | ((((qh >> j) << 4) & 0x10) as u8);
        q[j + 16] = (qs[j] >> 4) | (((qh >> (j + 12)) & 0x10) as u8);
    }
    q
}

/// Q4_K (`fifth` none) or Q5_K (`fifth`: the 32 bytes of fifth bits) super-block `b`: eight
/// 32-value sub-blocks `q · (d · sc) - dmin · m`.
fn k_block(b: &[u8], qs: &[u8], fifth: Option<&[u8]>, out: &mut Build) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    for chunk in 0..4 {
        let ql = &qs[chunk * 32..chunk * 32 + 32];
        for half in 0..2 {
            let (sc, m) = q4k_scale_min(2 * chunk + half, scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            let mut q = [0u8; QK];
            for (l, v) in q.iter_mut().enumerate() {
                let low = if half == 0 { ql[l] & 0x0f } else { ql[l] >> 4 };
                let bit = 1u8 << (2 * chunk + half);
                *v = low + fifth.map_or(0, |h| if h[l] & bit != 0 { 16 } else { 0 });
            }
            match fifth {
                None => out.nibbles(dl, -ml, &q),
                Some(_) => out.bytes(dl, -ml, &q),
            }
        }
    }
}

/// Q6_K super-block: sixteen 16-value sub-blocks `q · (d · sc)`, `q` in -32..32.
fn q6k_block(b: &[u8], out: &mut Build) {
    let d = f16_at(b, 208);
    let mut q = [0i8; 256];
    for half in 0..2 {
        let ql = &b[half * 64..];
        let qh = &b[128 + half * 32..];
        let yb = &mut q[half * 128..];
        for l in 0..32 {
            let v = |low: u8, shift: u32| (low | (((qh[l] >> shift) & 3) << 4)) as i8 - 32;
            yb[l] = v(ql[l] & 0x0f, 0);
            yb[l + 32] = v(ql[l + 32] & 0x0f, 2);
            yb[l + 64] = v(ql[l] >> 4, 4);
            yb[l + 96] = v(ql[l + 32] >> 4, 6);
        }
    }
    for (g, qg) in q.chunks_exact(16).enumerate() {
        out.signed(d * (b[192 + g] as i8) as f32, qg);
    }
}

/// Q2_K super-block: sixteen 16-value sub-blocks `q · (d · sc) - dmin · m`, `q` in 0..4.
fn q2k_block(b: &[u8], out: &mut Build) {
    let (scales, d, dmin) = (&b[0..16], f16_at(b, 80), f16_at(b, 82));
    let mut is = 0;
    for half in 0..2 {
        let q = &b[16 + half * 32..48 + half * 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let g: [u8; 16] = std::array::from_fn(|l| (q[part * 16 + l] >> shift) & 3);
                out.d.push(d * (sc & 0x0f) as f32);
                out.m.push(-(dmin * (sc >> 4) as f32));
                out.u8s.extend_from_slice(&g);
            }
        }
    }
}

/// Q3_K super-block: sixteen 16-value sub-blocks `q · (d · (sc - 32))`, `q` in -4..4.
fn q3k_block(b: &[u8], out: &mut Build) {
    let (hmask, packed, d) = (&b[0..32], &b[96..108], f16_at(b, 108));
    let (mut is, mut bit) = (0, 1u8);
    for half in 0..2 {
        let q = &b[32 + half * 32..64 + half * 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let mut g = [0i8; 16];
                for (l, v) in g.iter_mut().enumerate() {
                    let k = part * 16 + l;
                    let low = ((q[k] >> shift) & 3) as i8;
                    *v = low - if hmask[k] & bit != 0 { 0 } else { 4 };
                }
                out.signed(d * q3k_scale(is, packed) as f32, &g);
                is += 1;
            }
            bit <<= 1;
        }
    }
}

/// Converts one block of a 32-value type.
fn small_block(ty: GgmlType, b: &[u8], out: &mut Build) {
    let nib = |j: usize| [b[2 + j % 16] & 0x0f, b[2 + j % 16] >> 4][j / 16];
    match ty {
        GgmlType::Q8_0 => {
            let q: Vec<i8> = b[2..34].iter().map(|&x| x as i8).collect();
            out.signed(f16_at(b, 0), &q);
        }
        GgmlType::Q4_0 => {
            let q: Vec<i8> = (0..QK).map(|j| nib(j) as i8 - 8).collect();
            out.signed(f16_at(b, 0), &q);
        }
        GgmlType::IQ4NL => {
            let q: Vec<i8> = (0..QK).map(|j| IQ4NL_VALUES[nib(j) as usize]).collect();
            out.signed(f16_at(b, 0), &q);
        }
        GgmlType::Q5_0 => {
            let q: Vec<i8> = q5_values(&b[2..22]).iter().map(|&x| x as i8 - 16).collect();
            out.signed(f16_at(b, 0), &q);
        }
        GgmlType::Q4_1 => {
            let q: [u8; QK] =
                std::array::from_fn(|j| [b[4 + j % 16] & 0x0f, b[4 + j % 16] >> 4][j / 16]);
            out.nibbles(f16_at(b, 0), f16_at(b, 2), &q);
        }
        GgmlType::Q5_1 => out.bytes(f16_at(b, 0), f16_at(b, 2), &q5_values(&b[4..24])),
        _ => {}
    }
}

/// The `rows × inp` matrix stored as GGUF blocks of type `ty` (row-major, `bytes` exactly
/// its data), in its kernel layout; `None` when the type has no layout here or the sizes do
/// not match.
pub(crate) fn from_ggml(ty: GgmlType, bytes: &[u8], rows: usize, inp: usize) -> Option<Weights> {
    let (per, size) = ty.block_layout()?;
    if !convertible(ty) || inp == 0 || !inp.is_multiple_of(per) {
        return None;
    }
    let blocks = rows * inp / per;
    if bytes.len() != blocks * size {
        return None;
    }
    let halves = |bytes: &[u8]| {
        bytes
            .chunks_exact(2)
            .map(|c| [c[0], c[1]])
            .collect::<Vec<_>>()
    };
    match ty {
        GgmlType::F32 => {
            let w = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            return Some(Weights::F32(w.collect()));
        }
        GgmlType::F16 => {
            let w = halves(bytes).into_iter().map(f16::from_le_bytes);
            return Some(Weights::F16(w.collect()));
        }
        GgmlType::BF16 => {
            let w = halves(bytes).into_iter().map(half::bf16::from_le_bytes);
            return Some(Weights::BF16(w.collect()));
        }
        _ => {}
    }
    let mut out = Build::default();
    for b in bytes.chunks_exact(size) {
        match ty {
            GgmlType::Q4K => k_block(b, &b[16..144], None, &mut out),
            GgmlType::Q5K => k_block(b, &b[48..176], Some(&b[16..48]), &mut out),
            GgmlType::Q6K => q6k_block(b, &mut out),
            GgmlType::Q3K => q3k_block(b, &mut out),
            GgmlType::Q2K => q2k_block(b, &mut out),
            _ => small_block(ty, b, &mut out),
        }
    }
    let Build { d, m, i8s, u8s } = out;
    Some(match ty {
        GgmlType::Q4_1 | GgmlType::Q4K => Weights::Q4_1 { d, m, qs: u8s },
        GgmlType::Q5_1 | GgmlType::Q5K => Weights::U8 { d, m, qs: u8s },
        GgmlType::Q6K | GgmlType::Q3K => Weights::Q8_16 { d, qs: i8s },
        GgmlType::Q2K => Weights::U8_16 { d, m, qs: u8s },
        _ => Weights::Q8_0 { d, qs: i8s },
    })
}
