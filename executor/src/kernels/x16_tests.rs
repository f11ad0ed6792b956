//! Tests of the interleaved Q4_1 and Q8_0 layouts and their kernels (vector and scalar).

use super::tests::{activations, assert_within_bound, isas, quantised};
use super::*;

/// Q4_1- (`q4`) or Q8_0-valued weights of `out` rows (a multiple of 16) as a projection in
/// the interleaved layout, with the values they hold.
fn interleaved(inp: usize, out: usize, q4: bool) -> (HostLinear, Vec<f32>) {
    let w = quantised(out, inp, q4);
    let lin = HostLinear::new(inp, out, w.clone()).expect("shape");
    assert_eq!(lin.format(), if q4 { "q4_1x16" } else { "q8_0x16" });
    (lin, w)
}

#[test]
fn interleaving_keeps_every_weight() {
    let (inp, out) = (5 * QK, 48);
    for q4 in [true, false] {
        let (lin, w) = interleaved(inp, out, q4);
        let block = if q4 { 8 + 16 } else { 4 + 32 };
        assert_eq!(lin.weight_bytes(), out * inp / QK * block);
        check_rows_and_exact_products(&lin, &w);
    }
}

/// Every row expands to the values `w` holds, and the f32 path multiplies them exactly.
fn check_rows_and_exact_products(lin: &HostLinear, w: &[f32]) {
    let (inp, out) = (lin.inp(), lin.out());
    let mut row = vec![0f32; inp];
    for n in 0..out {
        lin.row(n, &mut row);
        assert_eq!(row, w[n * inp..(n + 1) * inp], "row {n}");
    }
    // Exact f32 products through the expanded rows.
    let exact = lin.clone().exact();
    for m in [1, 3, 17] {
        let x = activations(m, inp, 5);
        let y = exact.forward(&x, m);
        for i in 0..m {
            for n in 0..out {
                let want: f32 = (0..inp).map(|k| x[i * inp + k] * w[n * inp + k]).sum();
                assert!((y[i * out + n] - want).abs() < 1e-4, "m{m} i{i} n{n}");
            }
        }
    }
}

#[test]
fn interleaved_kernels_stay_within_the_activation_rounding_bound() {
    let (inp, out) = (7 * QK, 32);
    for q4 in [true, false] {
        check_bound(inp, out, q4);
    }
}

fn check_bound(inp: usize, out: usize, q4: bool) {
    let (lin, w) = interleaved(inp, out, q4);
    // The generator's block minimums (see `quantised`), as the refit keeps them.
    let mins: Vec<f32> = (0..out * 7)
        .map(|b| half::f16::from_f32(-0.05 - (b % 5) as f32 * 0.01).to_f32())
        .collect();
    assert_within_bound(&lin, &w, q4.then_some(&mins[..]), &[1, 2, 5, 16, 21], q4);
}

/// Every path gives the same bits: scalar, AVX2, AVX-512BW and VNNI, whatever the batch and
/// a row's place in it.
#[test]
fn interleaved_kernels_give_the_same_bits_on_every_path_and_batch() {
    for q4 in [true, false] {
        check_paths(q4);
    }
}

fn check_paths(q4: bool) {
    let (inp, out) = (9 * QK, 64);
    let (lin, _) = interleaved(inp, out, q4);
    let w = &lin.parts[0].w;
    let x = activations(37, inp, 7);
    // Rows `i0..i0 + m` through one path, weight rows from `n0` (a later group's first row),
    // fours of rows read packed or (`pack` false) from the rows themselves.
    let run = |isa: qdot::Isa, i0: usize, m: usize, n0: usize, pack: bool| {
        let rows = out - n0;
        let xq = qdot::QuantRows::new(&x[i0 * inp..(i0 + m) * inp], inp, pack);
        let mut y = vec![0f32; m * rows];
        qdot::x16::task(isa, w, inp, &xq.rows(), xq.quads(), n0, &mut y, rows);
        y
    };
    let reference = run(qdot::Isa::Scalar, 0, 37, 0, false);
    for isa in isas() {
        for (i0, m) in [(0, 37), (0, 1), (5, 1), (3, 4), (16, 16), (1, 17), (20, 5)] {
            for (n0, pack) in [0, 32].into_iter().flat_map(|n| [(n, true), (n, false)]) {
                let got = run(isa, i0, m, n0, pack);
                let rows = out - n0;
                for i in 0..m {
                    let want = &reference[(i0 + i) * out + n0..(i0 + i + 1) * out];
                    assert_eq!(
                        &got[i * rows..(i + 1) * rows],
                        want,
                        "{} q4 {q4} i0 {i0} m {m} n0 {n0} pack {pack} row {i}",
                        isa.name()
                    );
                }
            }
        }
    }
}

/// A projection wide enough that each task of a batched call takes a run of several blocks of
/// outputs (the LM head's shape, smaller): every row of a batch gets the same bits as alone,
/// the partial last block included, through the integer and the f32 paths.
#[test]
fn wide_projections_give_each_row_its_bits_alone() {
    // 131 groups of 16 rows: 66 blocks of 32 outputs, more than one per task, the last half.
    let (inp, out) = (2 * QK, 131 * qdot::x16::ROWS);
    assert!(out.div_ceil(BLOCK) > MAX_TASKS && !out.is_multiple_of(BLOCK));
    let (lin, _) = interleaved(inp, out, true);
    for lin in [lin.clone(), lin.exact()] {
        let m = 11;
        let x = activations(m, inp, 9);
        let all = lin.forward(&x, m);
        for i in 0..m {
            let alone = lin.forward(&x[i * inp..(i + 1) * inp], 1);
            assert_eq!(all[i * out..(i + 1) * out], alone[..], "row {i}");
        }
    }
}
