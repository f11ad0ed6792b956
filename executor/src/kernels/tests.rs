//! Tests of the host projection kernels.

use super::*;
use half::f16;

/// `lin.forward` against the naive product with the weights `w`, for each row count in `ms`.
fn assert_matches_naive_product(lin: &HostLinear, w: &[f32], ms: &[usize], what: &str) {
    let (inp, out) = (lin.inp(), lin.out());
    for &m in ms {
        let x: Vec<f32> = (0..m * inp)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.2)
            .collect();
        let y = lin.forward(&x, m);
        for i in 0..m {
            for n in 0..out {
                let want: f32 = (0..inp).map(|k| x[i * inp + k] * w[n * inp + k]).sum();
                assert!(
                    (y[i * out + n] - want).abs() < 1e-4,
                    "{what} m{m} i{i} n{n}"
                );
            }
        }
    }
}

#[test]
fn matches_naive_product_for_odd_shapes() {
    let (inp, out) = (37, 70);
    let w: Vec<f32> = (0..inp * out)
        .map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.1)
        .collect();
    let lin = HostLinear::new(inp, out, w.clone()).expect("shape");
    assert_matches_naive_product(&lin, &w, &[1, 2, 3, 4, 5, 8, 11], "f32");
    assert!(HostLinear::new(2, 2, vec![0.0; 3]).is_none());
}

/// Values of GGUF-style blocks: Q4_1 (`q * d + m`) or Q8_0 (`q * d`) with f16 d and m.
pub(super) fn quantised(rows: usize, cols: usize, q4: bool) -> Vec<f32> {
    let mut w = Vec::with_capacity(rows * cols);
    for b in 0..rows * cols / QK {
        let d = f16::from_f32(0.01 + (b % 7) as f32 * 0.003).to_f32();
        let m = f16::from_f32(-0.05 - (b % 5) as f32 * 0.01).to_f32();
        for j in 0..QK {
            let v = if q4 {
                ((b * 3 + j * 5) % 16) as f32 * d + m
            } else {
                // One value of each block at -127 as a real Q8_0 quantiser leaves it.
                (((b * 11 + j * 29) % 255) as i32 - 127).min(if j == 3 { -127 } else { 127 }) as f32
                    * d
            };
            w.push(v);
        }
    }
    w
}

#[test]
fn quantised_blocks_are_detected_and_exact() {
    let (inp, out) = (96, 45);
    for (q4, fmt) in [(true, "q4_1"), (false, "q8_0")] {
        let w = quantised(out, inp, q4);
        let lin = HostLinear::new(inp, out, w.clone()).expect("shape").exact();
        assert_eq!(lin.format(), fmt);
        assert!(lin.weight_bytes() < w.len() * 4 / 3);
        let mut row = vec![0f32; inp];
        for n in 0..out {
            lin.row(n, &mut row);
            assert_eq!(row, w[n * inp..(n + 1) * inp], "{fmt} row {n}");
        }
        assert_matches_naive_product(&lin, &w, &[1, 2, 3, 4, 5, 7, 9], fmt);
    }
    // Values that are not blocks stay f32.
    let w: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
    assert_eq!(HostLinear::new(32, 2, w).expect("shape").format(), "f32");
}

#[test]
fn q4_0_and_q5_0_blocks_run_as_exact_q8_0_blocks() {
    let (inp, out) = (64, 33);
    // GGUF Q5_0 (`(q - 16) * d`, q in 0..32) and Q4_0 (`(q - 8) * d`, q in 0..16) blocks; the
    // largest magnitude differs from block to block (some never reach the format's extreme).
    for (levels, offset) in [(32usize, 16i32), (16, 8)] {
        let mut w = Vec::with_capacity(inp * out);
        for b in 0..inp * out / QK {
            let d = f16::from_f32(0.004 + (b % 9) as f32 * 0.0013).to_f32();
            let span = levels - (b % 5);
            for j in 0..QK {
                let q = ((b * 7 + j * 13) % span) as i32;
                w.push((q - offset) as f32 * d);
            }
        }
        let lin = HostLinear::new(inp, out, w.clone()).expect("shape").exact();
        assert_eq!(lin.format(), "q8_0", "{levels} levels");
        let mut row = vec![0f32; inp];
        for n in 0..out {
            lin.row(n, &mut row);
            assert_eq!(row, w[n * inp..(n + 1) * inp], "row {n}");
        }
    }
}

/// Activations with a spread of magnitudes per block (so block scales differ).
pub(super) fn activations(m: usize, inp: usize, seed: usize) -> Vec<f32> {
    (0..m * inp)
        .map(|i| {
            let t = (i * 2654435761 + seed * 97) % 10007;
            (t as f32 / 10007.0 - 0.5) * (1.0 + (i / QK % 5) as f32)
        })
        .collect()
}

/// The error the 8-bit activations may add to `w · x`: per element half a quantisation
/// step plus the f16 rounding of the block scale (127 steps of 2^-11), per block the f16
/// rounding of the Q4_1 sum term, and float reassociation.
pub(super) fn int_error_bound(w: &[f32], x: &[f32], mins: Option<&[f32]>) -> f32 {
    let mut bound = 1e-6;
    for (b, (wb, xb)) in w.chunks_exact(QK).zip(x.chunks_exact(QK)).enumerate() {
        let d = xb.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        let step = d * (0.5 + 127.0 / 2048.0);
        bound += wb.iter().map(|v| v.abs() * step).sum::<f32>();
        bound += wb.iter().zip(xb).map(|(a, c)| (a * c).abs()).sum::<f32>() * 1e-5;
        if let Some(m) = mins {
            let s: f32 = xb.iter().map(|v| v.abs()).sum::<f32>() + 127.0 * d;
            bound += m[b].abs() * s / 1024.0;
        }
    }
    bound
}

#[test]
fn integer_kernels_stay_within_the_activation_rounding_bound() {
    // 7 blocks: an odd count exercises the two-block AVX-512 loop's tail.
    let (inp, out) = (7 * QK, 37);
    for q4 in [true, false] {
        let w = quantised(out, inp, q4);
        let lin = HostLinear::new(inp, out, w.clone()).expect("shape");
        assert!(lin.integer_kernel().is_some(), "q4 {q4}");
        let mins: Option<Vec<f32>> = q4.then(|| match &lin.parts[0].w {
            Weights::Q4_1 { m, .. } => m.clone(),
            _ => unreachable!("q4_1 weights"),
        });
        assert_within_bound(&lin, &w, mins.as_deref(), &[1, 2, 3, 4, 5, 9], q4);
    }
}

/// `lin.forward` against the f32 product with the weights `w` it holds, within
/// [`int_error_bound`] (with the Q4_1 block minimums `mins`), for each row count in `ms`.
pub(super) fn assert_within_bound(
    lin: &HostLinear,
    w: &[f32],
    mins: Option<&[f32]>,
    ms: &[usize],
    q4: bool,
) {
    let (inp, out, nb) = (lin.inp(), lin.out(), lin.inp() / QK);
    for &m in ms {
        let x = activations(m, inp, m);
        let y = lin.forward(&x, m);
        for i in 0..m {
            let xi = &x[i * inp..(i + 1) * inp];
            for n in 0..out {
                let wn = &w[n * inp..(n + 1) * inp];
                let want: f32 = wn.iter().zip(xi).map(|(a, b)| a * b).sum();
                let row_mins = mins.map(|v| &v[n * nb..(n + 1) * nb]);
                let bound = int_error_bound(wn, xi, row_mins);
                let got = y[i * out + n];
                assert!(
                    (got - want).abs() <= bound,
                    "{} q4 {q4} m{m} i{i} n{n}: {got} vs {want} (bound {bound})",
                    lin.format()
                );
            }
        }
    }
}

/// Every instruction set this CPU runs, the scalar reference first.
pub(super) fn isas() -> Vec<qdot::Isa> {
    #[allow(unused_mut)]
    let mut out = vec![qdot::Isa::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        out.extend(pulp::x86::V3::try_new().map(qdot::Isa::Avx2));
        out.extend(pulp::x86::V4::try_new().map(qdot::Isa::Avx512));
        if let (Some(v4), Some(vnni)) = (
            pulp::x86::V4::try_new(),
            super::intrinsics::vnni::Vnni::try_new(),
        ) {
            out.push(qdot::Isa::Avx512Vnni(v4, vnni));
        }
    }
    out
}

#[test]
fn integer_kernels_agree_across_instruction_sets_and_batches() {
    let (inp, out) = (9 * QK, 29);
    // Weights of every layout with an integer kernel: refit Q4_1 and Q8_0 values, and GGUF
    // blocks read as Q8_16 (Q6_K) and U8 (Q5_1).
    let mut layouts = vec![
        compress(inp, quantised(out, inp, true)),
        compress(inp, quantised(out, inp, false)),
    ];
    for (ty, seed) in [
        (crate::gguf::GgmlType::Q6K, 5u8),
        (crate::gguf::GgmlType::Q5_1, 9),
        (crate::gguf::GgmlType::Q2K, 3),
    ] {
        let (inp, (per, size)) = (256, ty.block_layout().expect("block type"));
        let mut bytes: Vec<u8> = (0..out * inp / per * size)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(i as u8 >> 3))
            .collect();
        let scale = f16::from_f32(0.01).to_le_bytes();
        for b in bytes.chunks_exact_mut(size) {
            let at = match ty {
                crate::gguf::GgmlType::Q6K => 208,
                crate::gguf::GgmlType::Q2K => 80,
                _ => 0,
            };
            b[at..at + 2].copy_from_slice(&scale);
            if ty == crate::gguf::GgmlType::Q2K {
                b[82..84].copy_from_slice(&scale);
            }
            if per == 32 {
                b[2..4].copy_from_slice(&f16::from_f32(-0.05).to_le_bytes());
            }
        }
        layouts.push(blocks::from_ggml(ty, &bytes, out, inp).expect("converts"));
    }
    for w in &layouts {
        let inp = w.len() / out;
        let x = activations(6, inp, 3);
        let xq = qdot::QuantRows::new(&x, inp, false);
        let xq = xq.rows();
        let run = |isa: qdot::Isa, m: usize, i0: usize| -> Vec<f32> {
            let mut y = vec![0f32; (i0 + m) * out];
            match m {
                1 => qdot::rows_times::<1>(isa, w, inp, 0, out, &xq, i0, &mut y, out, 0),
                3 => qdot::rows_times::<3>(isa, w, inp, 0, out, &xq, i0, &mut y, out, 0),
                _ => qdot::rows_times::<4>(isa, w, inp, 0, out, &xq, i0, &mut y, out, 0),
            }
            y.split_off(i0 * out)
        };
        let scalar = run(qdot::Isa::Scalar, 4, 0);
        let mut by_isa = std::collections::HashMap::new();
        for isa in isas() {
            let wide = run(isa, 4, 0);
            by_isa.insert(isa.name(), wide.clone());
            for (a, b) in scalar.iter().zip(&wide) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                    "{} {}: {a} vs {b}",
                    w.name(),
                    isa.name()
                );
            }
            // A row's result is the same bits whatever it is batched with.
            for i in 0..4 {
                let alone = run(isa, 1, i);
                assert_eq!(
                    alone,
                    wide[i * out..(i + 1) * out],
                    "{} row {i}",
                    isa.name()
                );
            }
            let three = run(isa, 3, 1);
            assert_eq!(three, wide[out..4 * out], "{}", isa.name());
        }
        // VNNI forms the same integer sums as AVX-512BW: the same bits.
        if let (Some(bw), Some(vnni)) = (by_isa.get("avx512bw"), by_isa.get("avx512vnni")) {
            assert_eq!(bw, vnni, "{}", w.name());
        }
    }
}

/// The vectorised activation quantisation gives the scalar one's values exactly, ties at
/// halves included.
#[test]
fn activation_quantisation_is_the_same_on_every_path() {
    let mut x: Vec<f32> = activations(7, 4 * QK, 11);
    // Values that land exactly on halves after scaling by 127 / 127.
    x[..QK]
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i as f32 - 16.0) + 0.5);
    x[0] = 127.0;
    x[QK..2 * QK].fill(0.0);
    let blocks = x.len() / QK;
    let (mut q1, mut q2) = (vec![0i8; x.len()], vec![0i8; x.len()]);
    let (mut s1, mut s2) = (vec![(0f32, [0; 2]); blocks], vec![(0f32, [0; 2]); blocks]);
    qdot::quantize_scalar(&x, &mut q1, &mut s1);
    qdot::quantize_blocks(&x, &mut q2, &mut s2);
    assert_eq!(q1, q2);
    assert_eq!(s1, s2);
    // Halves round away from zero: 0.5 -> 1, -0.5 -> -1, 1.5 -> 2.
    assert_eq!(&q1[15..18], &[-1, 1, 2]);
}

/// Activations quantised for a whole batch (runs of rows on the pool) give each row the bits
/// it gets alone, through the row-major kernels that read every per-block scale layout.
#[test]
fn batched_activation_quantisation_gives_each_row_its_bits() {
    // 40 rows: not whole groups of 16, so the row-major Q4_1 and Q8_0 kernels run.
    let (inp, out, m) = (6 * QK, 40, 19);
    for q4 in [true, false] {
        let lin = HostLinear::new(inp, out, quantised(out, inp, q4)).expect("shape");
        assert_eq!(lin.format(), if q4 { "q4_1" } else { "q8_0" });
        let x = activations(m, inp, 13);
        let all = lin.forward(&x, m);
        for i in 0..m {
            let alone = lin.forward(&x[i * inp..(i + 1) * inp], 1);
            assert_eq!(all[i * out..(i + 1) * out], alone[..], "q4 {q4} row {i}");
        }
    }
}
