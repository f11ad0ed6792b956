//! Dequantisation of GGUF blocks to f32, exactly as ggml does it.

use half::{bf16, f16};

use super::GgmlType;

pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises `bytes` of type `ty` into `out` (its length decides how many values).
/// Returns the type name as the error when the type is unsupported.
pub fn dequantize_into(
    ty: GgmlType,
    bytes: &[u8],
    out: &mut [f32],
) -> std::result::Result<(), String> {
    let (per, bsz) = ty.block_layout().ok_or_else(|| ty.name())?;
    let blocks = out.len() / per;
    if bytes.len() < blocks * bsz || !out.len().is_multiple_of(per) {
        return Err(format!("{} (byte length mismatch)", ty.name()));
    }
    for (bi, y) in out.chunks_exact_mut(per).enumerate() {
        let b = &bytes[bi * bsz..(bi + 1) * bsz];
        match ty {
            GgmlType::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            GgmlType::F16 => y[0] = f16_at(b, 0),
            GgmlType::BF16 => y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            GgmlType::Q4_0 => {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    let q = b[2 + j];
                    y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                    y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
            GgmlType::Q4_1 => {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for j in 0..16 {
                    let q = b[4 + j];
                    y[j] = (q & 0x0f) as f32 * d + m;
                    y[j + 16] = (q >> 4) as f32 * d + m;
                }
            }
            GgmlType::Q5_0 => dequant_q5(f16_at(b, 0), None, &b[2..22], y),
            GgmlType::Q5_1 => dequant_q5(f16_at(b, 0), Some(f16_at(b, 2)), &b[4..24], y),
            GgmlType::Q8_0 => {
                let d = f16_at(b, 0);
                for j in 0..32 {
                    y[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
            GgmlType::Q2K => dequant_q2k(b, y),
            GgmlType::Q3K => dequant_q3k(b, y),
            GgmlType::Q4K => dequant_q4k(b, y),
            GgmlType::Q5K => dequant_q5k(b, y),
            GgmlType::Q6K => dequant_q6k(b, y),
            GgmlType::IQ4NL => {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    let q = b[2 + j];
                    y[j] = d * IQ4NL_VALUES[(q & 0x0f) as usize] as f32;
                    y[j + 16] = d * IQ4NL_VALUES[(q >> 4) as usize] as f32;
                }
            }
            GgmlType::Other(_) => return Err(ty.name()),
        }
    }
    Ok(())
}

/// IQ4_NL's 16 levels (ggml's `kvalues_iq4nl`).
pub(crate) const IQ4NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Q5_0 (`m` none: values offset by 16) and Q5_1 (`q * d + m`): `rest` is the 4 bytes of fifth
/// bits (a little-endian u32, bit j for value j) then 16 bytes of low nibbles.
fn dequant_q5(d: f32, m: Option<f32>, rest: &[u8], y: &mut [f32]) {
    let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let qs = &rest[4..20];
    for j in 0..16 {
        let hi0 = ((qh >> j) << 4) & 0x10;
        let hi1 = (qh >> (j + 12)) & 0x10;
        let x0 = ((qs[j] & 0x0f) as u32 | hi0) as i32;
        let x1 = ((qs[j] >> 4) as u32 | hi1) as i32;
        match m {
            None => {
                y[j] = (x0 - 16) as f32 * d;
                y[j + 16] = (x1 - 16) as f32 * d;
            }
            Some(m) => {
                y[j] = x0 as f32 * d + m;
                y[j + 16] = x1 as f32 * d + m;
            }
        }
    }
}

/// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64] (four 2-bit values a byte),
/// then f16 d and dmin.
fn dequant_q2k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    let mut out = 0;
    let mut is = 0;
    for half_i in 0..2 {
        let q = &b[16 + half_i * 32..16 + half_i * 32 + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0f) as f32;
                let ml = dmin * (sc >> 4) as f32;
                for l in 0..16 {
                    y[out] = dl * ((q[part * 16 + l] >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

/// Q3_K: hmask[32] (the third bits), qs[64] (low 2 bits), 12 bytes of sixteen packed 6-bit
/// scales (offset 32), then f16 d.
fn dequant_q3k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let packed = &b[96..108];
    let d = f16_at(b, 108);
    let scale = |i: usize| q3k_scale(i, packed);
    let mut out = 0;
    let mut is = 0;
    let mut m = 1u8;
    for half_i in 0..2 {
        let q = &b[32 + half_i * 32..32 + half_i * 32 + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let dl = d * scale(is) as f32;
                is += 1;
                for l in 0..16 {
                    let k = part * 16 + l;
                    let low = ((q[k] >> shift) & 3) as i32;
                    let v = low - if hmask[k] & m != 0 { 0 } else { 4 };
                    y[out] = dl * v as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// Q5_K: f16 d and dmin, 12 bytes of scales and mins (as Q4_K), qh[32] (fifth bits), qs[128].
fn dequant_q5k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for chunk in 0..4 {
        let ql = &qs[chunk * 32..chunk * 32 + 32];
        let (sc1, m1) = q4k_scale_min(2 * chunk, scales);
        let (sc2, m2) = q4k_scale_min(2 * chunk + 1, scales);
        let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let base = chunk * 64;
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[base + l] = d1 * ((ql[l] & 0x0f) + h1) as f32 - mm1;
            y[base + 32 + l] = d2 * ((ql[l] >> 4) + h2) as f32 - mm2;
        }
    }
}

/// Scale `i` (0..16) of a Q3_K block's 12 packed bytes of 6-bit scales (offset 32).
pub(crate) fn q3k_scale(i: usize, packed: &[u8]) -> i32 {
    let low = if i < 8 {
        packed[i] & 0x0f
    } else {
        packed[i - 8] >> 4
    };
    let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block's 12 packed scale bytes.
pub(crate) fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn dequant_q4k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for chunk in 0..4 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        let (sc1, m1) = q4k_scale_min(2 * chunk, scales);
        let (sc2, m2) = q4k_scale_min(2 * chunk + 1, scales);
        let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
        let base = chunk * 64;
        for l in 0..32 {
            y[base + l] = d1 * (q[l] & 0x0f) as f32 - mm1;
            y[base + 32 + l] = d2 * (q[l] >> 4) as f32 - mm2;
        }
    }
}

fn dequant_q6k(b: &[u8], y: &mut [f32]) {
    let ql_all = &b[0..128];
    let qh_all = &b[128..192];
    let sc_all = &b[192..208];
    let d = f16_at(b, 208);
    for half_i in 0..2 {
        let ql = &ql_all[half_i * 64..];
        let qh = &qh_all[half_i * 32..];
        let sc = &sc_all[half_i * 8..];
        let yb = &mut y[half_i * 128..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            yb[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            yb[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            yb[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            yb[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
