//! Dequantisation of GGUF blocks to f32, exactly as ggml does it.

use half::{bf16, f16};

use super::GgmlType;

fn f16_at(b: &[u8], i: usize) -> f32 {
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
            GgmlType::Q8_0 => {
                let d = f16_at(b, 0);
                for j in 0..32 {
                    y[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
            GgmlType::Q4K => dequant_q4k(b, y),
            GgmlType::Q6K => dequant_q6k(b, y),
            GgmlType::Other(_) => return Err(ty.name()),
        }
    }
    Ok(())
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K block's 12 packed scale bytes.
fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
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
