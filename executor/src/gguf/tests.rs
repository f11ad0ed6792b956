//! Unit tests of the GGUF reader and the block formats.

use super::writer::{build, RawTensor};
use super::*;
use half::{bf16, f16};

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

fn deq(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    dequantize_into(ty, bytes, &mut out).expect("supported");
    out
}

#[test]
fn f32_f16_bf16_values_round_trip() {
    let vals = [1.5f32, -2.25, 0.0, 1024.0];
    let b32: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(deq(GgmlType::F32, &b32, 4), vals);
    let b16: Vec<u8> = vals.iter().flat_map(|v| h(*v)).collect();
    assert_eq!(deq(GgmlType::F16, &b16, 4), vals);
    let bb: Vec<u8> = vals
        .iter()
        .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
        .collect();
    assert_eq!(deq(GgmlType::BF16, &bb, 4), vals);
}

#[test]
fn q8_0_block_is_scale_times_int8() {
    let mut b = h(0.5).to_vec();
    let qs: Vec<i8> = (0..32).map(|i| (i as i8) * 4 - 64).collect();
    b.extend(qs.iter().map(|&q| q as u8));
    let y = deq(GgmlType::Q8_0, &b, 32);
    assert_eq!(y[0], -32.0);
    assert_eq!(y[1], -30.0);
    assert_eq!(y[31], (31.0 * 4.0 - 64.0) * 0.5);
}

#[test]
fn q4_0_block_low_nibbles_first_offset_eight() {
    let mut b = h(2.0).to_vec();
    // byte j: low nibble j%16, high nibble 15 - j%16
    for j in 0..16u8 {
        b.push(j | ((15 - j) << 4));
    }
    let y = deq(GgmlType::Q4_0, &b, 32);
    assert_eq!(y[0], (0.0 - 8.0) * 2.0);
    assert_eq!(y[15], (15.0 - 8.0) * 2.0);
    assert_eq!(y[16], (15.0 - 8.0) * 2.0);
    assert_eq!(y[31], (0.0 - 8.0) * 2.0);
}

#[test]
fn q4_1_block_is_scale_times_nibble_plus_min() {
    let mut b = h(0.25).to_vec();
    b.extend_from_slice(&h(-1.0));
    for j in 0..16u8 {
        b.push(3 | (j << 4));
    }
    let y = deq(GgmlType::Q4_1, &b, 32);
    assert_eq!(y[0], 3.0 * 0.25 - 1.0);
    assert_eq!(y[7], 3.0 * 0.25 - 1.0);
    assert_eq!(y[16], -1.0);
    assert_eq!(y[31], 15.0 * 0.25 - 1.0);
}

#[test]
fn q4_k_block_uses_packed_six_bit_scales_and_mins() {
    // d = 1, dmin = 0.5. Sub-block scales sc[j] = j + 1, mins m[j] = 2j,
    // packed as ggml does: j < 4 in the low 6 bits of bytes j / j+4,
    // j >= 4 split: low 4 bits in byte j+4, high 2 bits in the top of bytes j-4 / j.
    let sc: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 40];
    let mn: [u8; 8] = [0, 2, 4, 6, 8, 10, 12, 50];
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
    }
    let mut b = h(1.0).to_vec();
    b.extend_from_slice(&h(0.5));
    b.extend_from_slice(&s);
    // qs: 4 chunks of 32 bytes; byte l of chunk c: low nibble (l % 16), high nibble c + 1.
    for c in 0..4u8 {
        for l in 0..32u8 {
            b.push((l % 16) | ((c + 1) << 4));
        }
    }
    assert_eq!(b.len(), 144);
    let y = deq(GgmlType::Q4K, &b, 256);
    for c in 0..4usize {
        for l in 0..32usize {
            let lo_sub = 2 * c;
            let hi_sub = 2 * c + 1;
            let lo = sc[lo_sub] as f32 * (l % 16) as f32 - 0.5 * mn[lo_sub] as f32;
            let hi = sc[hi_sub] as f32 * (c + 1) as f32 - 0.5 * mn[hi_sub] as f32;
            assert_eq!(y[c * 64 + l], lo, "c{c} l{l} low");
            assert_eq!(y[c * 64 + 32 + l], hi, "c{c} l{l} high");
        }
    }
}

#[test]
fn q6_k_block_combines_low_and_high_bits_with_int8_scales() {
    // Choose a 6-bit value per element v(i) = i % 64, then pack as ggml does.
    let v = |i: usize| (i * 7 % 64) as u8;
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for half_i in 0..2 {
        for l in 0..32 {
            let base = half_i * 128;
            let (q1, q2, q3, q4) = (
                v(base + l),
                v(base + l + 32),
                v(base + l + 64),
                v(base + l + 96),
            );
            ql[half_i * 64 + l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
            ql[half_i * 64 + l + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
            qh[half_i * 32 + l] =
                (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    let scales: [i8; 16] = [
        1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16,
    ];
    let mut b = ql.to_vec();
    b.extend_from_slice(&qh);
    b.extend(scales.iter().map(|&s| s as u8));
    b.extend_from_slice(&h(0.125));
    assert_eq!(b.len(), 210);
    let y = deq(GgmlType::Q6K, &b, 256);
    for (i, &got) in y.iter().enumerate() {
        // 16 sub-blocks of 16 consecutive values each.
        let expected = 0.125 * scales[i / 16] as f32 * (v(i) as f32 - 32.0);
        assert_eq!(got, expected, "element {i}");
    }
}

fn sample_image() -> Vec<u8> {
    let meta = [
        ("general.architecture", GgufValue::String("llama".into())),
        ("a.u8", GgufValue::U8(7)),
        ("a.i8", GgufValue::I8(-7)),
        ("a.u16", GgufValue::U16(700)),
        ("a.i16", GgufValue::I16(-700)),
        ("a.u32", GgufValue::U32(70_000)),
        ("a.i32", GgufValue::I32(-70_000)),
        ("a.f32", GgufValue::F32(1.5)),
        ("a.bool", GgufValue::Bool(true)),
        ("a.u64", GgufValue::U64(1 << 40)),
        ("a.i64", GgufValue::I64(-(1 << 40))),
        ("a.f64", GgufValue::F64(2.5)),
        (
            "a.arr",
            GgufValue::Array(vec![
                GgufValue::String("x".into()),
                GgufValue::String("yz".into()),
            ]),
        ),
        (
            "a.nested",
            GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::I32(1)])]),
        ),
    ];
    let t = RawTensor {
        name: "w".into(),
        dims: vec![2, 3],
        type_id: 0,
        bytes: (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect(),
    };
    build(&meta, &[t])
}

#[test]
fn parses_every_metadata_type_and_tensor_infos() {
    let f = GgufFile::parse(sample_image()).expect("valid image");
    assert_eq!(f.version, 3);
    assert_eq!(f.get_str("general.architecture").expect("arch"), "llama");
    assert_eq!(f.get("a.u8"), Some(&GgufValue::U8(7)));
    assert_eq!(f.get("a.i8"), Some(&GgufValue::I8(-7)));
    assert_eq!(f.get("a.u16"), Some(&GgufValue::U16(700)));
    assert_eq!(f.get("a.i16"), Some(&GgufValue::I16(-700)));
    assert_eq!(f.get_u64("a.u32").expect("u32"), 70_000);
    assert_eq!(f.get("a.i32"), Some(&GgufValue::I32(-70_000)));
    assert_eq!(f.get_f64("a.f32").expect("f32"), 1.5);
    assert_eq!(f.get("a.bool").and_then(GgufValue::as_bool), Some(true));
    assert_eq!(f.get_u64("a.u64").expect("u64"), 1 << 40);
    assert_eq!(f.get("a.i64"), Some(&GgufValue::I64(-(1 << 40))));
    assert_eq!(f.get_f64("a.f64").expect("f64"), 2.5);
    assert_eq!(f.get_str_array("a.arr").expect("arr"), vec!["x", "yz"]);
    assert!(f.get("a.nested").and_then(GgufValue::as_array).is_some());
    let (shape, data) = f.dequantize("w").expect("tensor");
    assert_eq!(shape, vec![3, 2]);
    assert_eq!(data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert!(matches!(
        f.get_u64("missing"),
        Err(ExecutorError::Metadata { .. })
    ));
    assert!(matches!(
        f.dequantize("nope"),
        Err(ExecutorError::MissingTensor(_))
    ));
}

#[test]
fn bad_magic_is_reported() {
    let mut img = sample_image();
    img[0] = b'X';
    let err = GgufFile::parse(img).expect_err("bad magic");
    assert!(matches!(err, ExecutorError::BadMagic(_)), "{err}");
    assert!(err.to_string().contains("not a GGUF file"));
}

#[test]
fn unsupported_version_is_reported() {
    let mut img = sample_image();
    img[4..8].copy_from_slice(&1u32.to_le_bytes());
    let err = GgufFile::parse(img).expect_err("v1");
    assert!(matches!(err, ExecutorError::UnsupportedVersion(1)), "{err}");
}

#[test]
fn truncation_anywhere_is_a_typed_error_not_a_panic() {
    let img = sample_image();
    for cut in [3, 10, 30, 100, img.len() - 1] {
        let err = GgufFile::parse(img[..cut].to_vec()).expect_err("truncated");
        assert!(
            matches!(err, ExecutorError::Truncated { .. }),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn unsupported_tensor_type_is_reported_on_dequantize() {
    // IQ2_XXS (ggml type 16) is not read.
    let t = RawTensor {
        name: "iq2".into(),
        dims: vec![256],
        type_id: 16,
        bytes: vec![0; 66],
    };
    let f = GgufFile::parse(build(&[], &[t])).expect("parses");
    let err = f.dequantize("iq2").expect_err("unsupported");
    assert!(
        matches!(err, ExecutorError::UnsupportedTensorType { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("iq2"));
}

#[test]
fn missing_file_is_not_found() {
    let err = GgufFile::open(Path::new("/definitely/not/here.gguf")).expect_err("missing");
    assert!(matches!(err, ExecutorError::NotFound(_)), "{err}");
}

/// Every block type against the `gguf` package's numpy dequantisers (which follow ggml), on
/// random blocks and, where the package quantises, on quantised random floats
/// (`tests/fixtures/make_quant_fixtures.py` writes the fixture).
#[test]
fn every_block_type_dequantises_as_the_reference_does() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/fixtures/quant_blocks.json"))
            .expect("fixture parses");
    let by_name = |n: &str| {
        (0..40)
            .map(GgmlType::from_id)
            .find(|t| t.name() == n)
            .unwrap_or_else(|| panic!("no type named {n}"))
    };
    let mut seen = Vec::new();
    for entry in fixture.as_array().expect("a list") {
        let name = entry["type"].as_str().expect("type");
        let ty = by_name(name);
        let hex = entry["bytes"].as_str().expect("bytes");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let want: Vec<f32> = entry["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| v.as_f64().expect("a number") as f32)
            .collect();
        let got = deq(ty, &bytes, want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                "{name} value {i}: {g} vs {w}"
            );
        }
        seen.push(name.to_string());
    }
    for name in [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
    ] {
        assert!(seen.iter().any(|s| s == name), "the fixture lacks {name}");
    }
}
