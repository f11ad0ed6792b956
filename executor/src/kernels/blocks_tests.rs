//! GGUF blocks in the kernels' layouts: every value exactly ggml's dequantised value, and
//! products through the integer kernels within the activation-rounding bound, for each type
//! and for fused projections whose tensors differ in type.

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::gguf::{dequantize_into, GgmlType};

/// Random but well-formed blocks of `ty` for a `rows × inp` matrix: random bytes with every
/// f16 scale (and minimum) set to a small finite value.
fn random_blocks(ty: GgmlType, rows: usize, inp: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let floats = |rng: &mut StdRng| -> Vec<f32> {
        (0..rows * inp)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect()
    };
    match ty {
        GgmlType::F32 => {
            return floats(&mut rng)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }
        GgmlType::F16 => {
            let v = floats(&mut rng);
            return v
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect();
        }
        GgmlType::BF16 => {
            let v = floats(&mut rng);
            return v
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect();
        }
        _ => {}
    }
    let (per, size) = ty.block_layout().expect("a block type");
    let mut out = vec![0u8; rows * inp / per * size];
    rng.fill(out.as_mut_slice());
    // Byte offsets of the f16 scales within a block.
    let halves: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4NL => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q6K => &[208],
        GgmlType::Q3K => &[108],
        GgmlType::Q2K => &[80, 82],
        _ => &[],
    };
    for b in out.chunks_exact_mut(size) {
        for &o in halves {
            let v = f16::from_f32(rng.gen_range(-0.02f32..0.02));
            b[o..o + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    out
}

const TYPES: [GgmlType; 14] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4NL,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

fn dequantized(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut w = vec![0f32; n];
    dequantize_into(ty, bytes, &mut w).expect("dequantises");
    w
}

/// Σ |m| over the blocks of output row `n` (layouts with a minimum; 0 otherwise).
fn row_mins(lin: &HostLinear, n: usize) -> f64 {
    let nb = lin.inp() / QK;
    let part = lin
        .parts
        .iter()
        .find(|p| p.start <= n && n < p.start + p.rows)
        .expect("a part");
    let local = n - part.start;
    match &part.w {
        Weights::Q4_1 { m, .. } | Weights::U8 { m, .. } => m[local * nb..(local + 1) * nb]
            .iter()
            .map(|v| v.abs() as f64)
            .sum(),
        // A minimum per 16 values: each multiplies the error of 16 activations' sum.
        Weights::U8_16 { m, .. } => {
            m[2 * local * nb..2 * (local + 1) * nb]
                .iter()
                .map(|v| v.abs() as f64)
                .sum::<f64>()
                / 2.0
        }
        _ => 0.0,
    }
}

/// Checks `lin` against the f32 product with `w`: exactly with the f32 expansion, within a
/// bound of the activation rounding through the integer kernel.
fn check_products(lin: &HostLinear, w: &[f32], what: &str) {
    let (inp, out) = (lin.inp(), lin.out());
    for m in [1, 2, 5] {
        let x: Vec<f32> = (0..m * inp)
            .map(|i| ((i * 7919 % 211) as f32 - 105.0) * 0.01)
            .collect();
        let exact = lin.clone().exact().forward(&x, m);
        let fast = lin.forward(&x, m);
        for i in 0..m {
            let xi = &x[i * inp..(i + 1) * inp];
            let amax = xi.iter().fold(0f32, |a, v| a.max(v.abs()));
            for n in 0..out {
                let wn = &w[n * inp..(n + 1) * inp];
                let want: f64 = wn.iter().zip(xi).map(|(a, b)| *a as f64 * *b as f64).sum();
                let mag: f64 = wn
                    .iter()
                    .zip(xi)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                let got = exact[i * out + n] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * mag + 1e-6,
                    "{what} exact m{m} i{i} n{n}"
                );
                // Each activation is off by at most half a step (amax / 254) plus the f16
                // rounding of its block's scale; a block's minimum multiplies the error of
                // its 32 activations' sum.
                let wsum: f64 = wn.iter().map(|v| v.abs() as f64).sum();
                let weight = wsum + QK as f64 * row_mins(lin, n);
                let bound = weight * amax as f64 * (0.5 / 127.0 + 1e-3) + 1e-5;
                let got = fast[i * out + n] as f64;
                assert!(
                    (got - want).abs() <= bound,
                    "{what} integer m{m} i{i} n{n}: {got} vs {want} (bound {bound})"
                );
            }
        }
    }
}

#[test]
fn every_block_type_converts_to_exactly_ggmls_values() {
    let (rows, inp) = (40, 512);
    for (k, ty) in TYPES.into_iter().enumerate() {
        let bytes = random_blocks(ty, rows, inp, k as u64);
        let w = dequantized(ty, &bytes, rows * inp);
        let lin = HostLinear::from_ggml(inp, &[(ty, rows, &bytes)]).expect("converts");
        let float = matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        assert_eq!(lin.integer_kernel().is_none(), float, "{}", ty.name());
        let mut row = vec![0f32; inp];
        for n in 0..rows {
            lin.row(n, &mut row);
            let want = &w[n * inp..(n + 1) * inp];
            assert!(
                row.iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} row {n}",
                ty.name()
            );
        }
        check_products(&lin, &w, &ty.name());
    }
}

#[test]
fn a_fused_projection_may_mix_types_at_multiples_of_32_rows() {
    let inp = 256;
    let parts = [
        (GgmlType::Q4K, 64),
        (GgmlType::Q6K, 32),
        (GgmlType::Q5_0, 40),
    ];
    let blocks: Vec<Vec<u8>> = parts
        .iter()
        .enumerate()
        .map(|(k, &(ty, rows))| random_blocks(ty, rows, inp, 100 + k as u64))
        .collect();
    let tensors: Vec<(GgmlType, usize, &[u8])> = parts
        .iter()
        .zip(&blocks)
        .map(|(&(ty, rows), b)| (ty, rows, b.as_slice()))
        .collect();
    let lin = HostLinear::from_ggml(inp, &tensors).expect("converts");
    assert_eq!(
        (lin.out(), lin.format().as_str()),
        (136, "q4_1x16+q8_16+q8_0")
    );
    let w: Vec<f32> = parts
        .iter()
        .zip(&blocks)
        .flat_map(|(&(ty, rows), b)| dequantized(ty, b, rows * inp))
        .collect();
    check_products(&lin, &w, "mixed");
    // A boundary inside a task's 32 rows is refused (the caller falls back to f32).
    let odd = [
        (tensors[2].0, 40, tensors[2].2),
        (tensors[0].0, 64, tensors[0].2),
    ];
    assert!(HostLinear::from_ggml(inp, &odd).is_none());
    // Neighbours that share a layout are one part, wherever they meet.
    let q4_0 = random_blocks(GgmlType::Q4_0, 40, inp, 7);
    let q8_0 = random_blocks(GgmlType::Q8_0, 24, inp, 8);
    let same = [
        (GgmlType::Q4_0, 40, &q4_0[..]),
        (GgmlType::Q8_0, 24, &q8_0[..]),
    ];
    let lin = HostLinear::from_ggml(inp, &same).expect("converts");
    assert_eq!((lin.parts.len(), lin.format().as_str()), (1, "q8_0x16"));
    let mut w = dequantized(GgmlType::Q4_0, &q4_0, 40 * inp);
    w.extend(dequantized(GgmlType::Q8_0, &q8_0, 24 * inp));
    check_products(&lin, &w, "merged");
    // Types without a layout and wrong sizes are refused.
    assert!(HostLinear::from_ggml(inp, &[(GgmlType::Other(99), 1, &[0u8; 512])]).is_none());
    assert!(HostLinear::from_ggml(inp, &[(GgmlType::Q4K, 2, &blocks[0][..144])]).is_none());
}
