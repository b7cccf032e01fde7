//! Packed weight formats (`milliwatt::quant`): round trips, error bounds, known-answer bit layouts,
//! rounding, bad input, and sizes. No GPU.

use half::f16;
use milliwatt::Error;
use milliwatt::quant::{
    Format, Packed, Quantized, ScaleMode, TERNARY24_ZERO_STATE, quantize, round_half_even, ternary24_state,
};
use proptest::prelude::*;

const KS: [u32; 14] = [1, 3, 5, 31, 33, 63, 64, 65, 79, 81, 95, 97, 1000, 1001];
const MS: [u32; 2] = [1, 7];

/// Every format, every group size and zero-point choice.
fn all_formats() -> Vec<Format> {
    let mut v = vec![Format::Ternary2, Format::Int8, Format::Ternary24, Format::F16Sparse24];
    for group in [32, 64, 128] {
        v.push(Format::Int4 { group, zero_point: false });
        v.push(Format::Int4 { group, zero_point: true });
        v.push(Format::Int4Sparse24 { group });
    }
    v
}

fn modes(f: Format) -> Vec<ScaleMode> {
    if f.supports_per_tensor() { vec![ScaleMode::PerRow, ScaleMode::PerTensor] } else { vec![ScaleMode::PerRow] }
}

/// Deterministic test weights in [-2, 2): mostly uniform, with exact zeros (so 2:4 groups with
/// fewer than two nonzero weights and Ternary24's state 24 occur), repeated magnitudes (ties), an
/// all-zero row when M > 2, and a few large outliers.
fn weights(m: u32, k: u32, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..m as usize * k as usize)
        .map(|i| {
            let r = next();
            if m > 2 && i / k as usize == 2 {
                return 0.0;
            }
            match r % 10 {
                0..=2 => 0.0,
                3 => 0.5,
                4 => -0.5,
                5 if r % 7 == 0 => ((r >> 20) % 64) as f32 - 32.0,
                _ => ((r >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0) as f32,
            }
        })
        .collect()
}

/// Index of the scale of weight `i` (row-major over M x K) in `q.scales`.
fn scale_index(q: &Quantized, i: usize) -> usize {
    let k = q.k as usize;
    let l = q.layout().unwrap();
    (i / k) * l.scale_groups as usize + (i % k) / l.scale_group as usize
}

/// Checks the quantizer's contract for `w` against `q` (see the per-format rules).
fn check_quantization(w: &[f32], q: &Quantized, mode: ScaleMode) {
    let f = q.format;
    let k = q.k as usize;
    let dq = q.dequantize().unwrap();
    assert_eq!(dq.len(), w.len());
    let mean_abs = |xs: &[f32]| xs.iter().map(|&x| f64::from(x.abs())).sum::<f64>() / xs.len() as f64;
    match f {
        Format::Ternary2 => {
            for (i, (&l, &d)) in q.levels.iter().zip(&dq).enumerate() {
                let gamma = q.scales[i / k];
                assert!((-1..=1).contains(&l));
                assert_eq!(d, f32::from(l) * gamma);
            }
            for (row, ws) in w.chunks(k).enumerate() {
                let want = if mode == ScaleMode::PerTensor { mean_abs(w) } else { mean_abs(ws) };
                assert!((f64::from(q.scales[row]) - want).abs() <= 1e-6 * want.max(1e-30), "{f} row {row}");
            }
        }
        Format::Int8 => {
            for (i, (&x, &d)) in w.iter().zip(&dq).enumerate() {
                let s = q.scales[i / k];
                assert!((x - d).abs() <= 0.5 * s * (1.0 + 1e-5), "{f} w[{i}] = {x} -> {d}, scale {s}");
            }
        }
        Format::Int4 { zero_point, .. } => {
            for (i, (&x, &d)) in w.iter().zip(&dq).enumerate() {
                let s = q.scales[scale_index(q, i)];
                if s < f16::MIN_POSITIVE.to_f32() {
                    continue; // subnormal f16 scales (|w| < 4e-4) are coarse: no bound
                }
                // Symmetric: plain rounding error (the f16 scale rounding keeps max/scale <= 7.004,
                // short of the 7.5 where clamping would add error). Zero point: rounding hi/scale and
                // the zero point can overshoot 15 by one step only when the f16-rounded scale is
                // below (hi - lo) / 15, adding at most 15 * 2^-11 of a step.
                let bound = if zero_point { 0.5 + 15.0 / 2048.0 } else { 0.5 * (1.0 + 1e-5) };
                assert!((x - d).abs() <= bound * s, "{f} w[{i}] = {x} -> {d}, scale {s}");
                if zero_point {
                    assert!((0..=15).contains(&q.levels[i]));
                }
            }
            assert_eq!(q.zeros.len(), if zero_point { q.scales.len() } else { 0 });
        }
        Format::Ternary24 | Format::Int4Sparse24 { .. } | Format::F16Sparse24 => {
            check_sparse(w, q, &dq, mode);
        }
    }
}

/// The two kept positions of a group of 4 by a plain sort: largest |w| first, ties lower index.
fn reference_kept(group: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..group.len()).collect();
    idx.sort_by(|&a, &b| group[b].abs().total_cmp(&group[a].abs()).then(a.cmp(&b)));
    idx.truncate(2);
    idx
}

fn check_sparse(w: &[f32], q: &Quantized, dq: &[f32], mode: ScaleMode) {
    let f = q.format;
    let k = q.k as usize;
    let mut kept_abs = vec![(0.0f64, 0usize); q.m as usize];
    for (row, i) in (0..q.m as usize).flat_map(|row| (row * k..(row + 1) * k).step_by(4).map(move |i| (row, i))) {
        let end = (i + 4).min((row + 1) * k);
        let (wg, dg) = (&w[i..end], &dq[i..end]);
        let kept = reference_kept(wg);
        let nonzero: Vec<usize> = (0..wg.len()).filter(|&j| dg[j] != 0.0).collect();
        assert!(nonzero.len() <= 2, "{f} group at {i}: {dg:?}");
        // Everything nonzero is among the two largest magnitudes.
        assert!(nonzero.iter().all(|j| kept.contains(j)), "{f} group at {i}: w {wg:?} dq {dg:?}");
        for &j in &kept {
            let (x, d) = (wg[j], dg[j]);
            match f {
                Format::Ternary24 => {
                    if wg.iter().all(|&x| x == 0.0) {
                        assert!(dg.iter().all(|&d| d == 0.0));
                        continue;
                    }
                    let gamma = q.scales[row];
                    let sign = if x < 0.0 { -1.0 } else { 1.0 };
                    assert_eq!(d, sign * gamma, "{f} w[{}] = {x}", i + j);
                    kept_abs[row].0 += f64::from(x.abs());
                    kept_abs[row].1 += 1;
                }
                Format::Int4Sparse24 { .. } => {
                    let s = q.scales[scale_index(q, i + j)];
                    assert!(
                        s < f16::MIN_POSITIVE.to_f32() || (x - d).abs() <= 0.5 * s * (1.0 + 1e-5),
                        "{f} w[{}] = {x} -> {d}, scale {s}",
                        i + j
                    );
                }
                _ => assert_eq!(d, f16::from_f32(x).to_f32(), "{f} w[{}]", i + j),
            }
        }
    }
    if f == Format::Ternary24 {
        let mean = |(s, c): (f64, usize)| if c == 0 { 0.0 } else { s / c as f64 };
        let total = kept_abs.iter().fold((0.0, 0), |(s, c), &(s1, c1)| (s + s1, c + c1));
        for (row, &acc) in kept_abs.iter().enumerate() {
            let want = if mode == ScaleMode::PerTensor { mean(total) } else { mean(acc) };
            assert!((f64::from(q.scales[row]) - want).abs() <= 1e-6 * want.max(1e-30), "{f} row {row}");
        }
    }
}

/// Quantize, pack, unpack, repack; checks strides and that both directions are exact.
fn round_trip(w: &[f32], m: u32, k: u32, f: Format, mode: ScaleMode) -> (Quantized, Packed) {
    let q = quantize(w, m, k, f, mode).unwrap_or_else(|e| panic!("{f} {m}x{k}: {e}"));
    let p = q.pack().unwrap();
    let l = f.layout(k).unwrap();
    assert_eq!((p.row_words, p.scale_row_words, p.aux_row_words), (l.row_words, l.scale_row_words, l.aux_row_words));
    assert_eq!(p.row_words % 4, 0, "{f}: rows are whole vec4<u32>");
    assert_eq!(p.data.len(), (m * l.row_words) as usize);
    assert_eq!(p.scales.len(), (m * l.scale_row_words) as usize);
    assert_eq!(p.aux.len(), (m * l.aux_row_words) as usize);
    let u = p.unpack().unwrap_or_else(|e| panic!("{f} {m}x{k}: {e}"));
    assert_eq!(u, q, "{f} {m}x{k} {mode:?}");
    assert_eq!(u.pack().unwrap(), p, "{f} {m}x{k} {mode:?}");
    (q, p)
}

#[test]
fn round_trip_is_exact_for_every_format_and_shape() {
    for f in all_formats() {
        for mode in modes(f) {
            for m in MS {
                for k in KS {
                    let w = weights(m, k, u64::from(m * 10_000 + k));
                    let (q, _) = round_trip(&w, m, k, f, mode);
                    check_quantization(&w, &q, mode);
                }
            }
        }
    }
}

#[test]
fn all_zero_weights_round_trip() {
    for f in all_formats() {
        for k in [1, 5, 64, 97] {
            let (q, _) = round_trip(&vec![0.0; 3 * k as usize], 3, k, f, ScaleMode::PerRow);
            assert!(q.dequantize().unwrap().iter().all(|&d| d == 0.0), "{f}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_shapes_round_trip(
        fi in 0..all_formats().len(),
        per_tensor in any::<bool>(),
        m in 1u32..5,
        k in 1u32..300,
        seed in any::<u64>(),
        scale in prop_oneof![Just(1.0f32), Just(1e-3f32), Just(100.0f32)],
    ) {
        let f = all_formats()[fi];
        let mode = if per_tensor && f.supports_per_tensor() { ScaleMode::PerTensor } else { ScaleMode::PerRow };
        let w: Vec<f32> = weights(m, k, seed).into_iter().map(|x| x * scale).collect();
        let (q, _) = round_trip(&w, m, k, f, mode);
        check_quantization(&w, &q, mode);
    }

    #[test]
    fn arbitrary_values_round_trip(
        fi in 0..all_formats().len(),
        k in 1u32..200,
        w in prop::collection::vec(-1000.0f32..1000.0, 200),
    ) {
        let f = all_formats()[fi];
        let w = &w[..k as usize];
        let (q, _) = round_trip(w, 1, k, f, ScaleMode::PerRow);
        check_quantization(w, &q, ScaleMode::PerRow);
    }
}

/// The example of the module docs (doctests are not part of this suite's command).
#[test]
fn module_doc_example() -> milliwatt::Result<()> {
    let (m, k) = (2, 100);
    let w: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
    let q = quantize(&w, m, k, Format::Int4 { group: 32, zero_point: false }, ScaleMode::PerRow)?;
    let packed = q.pack()?;
    assert_eq!(packed.row_words, 128 / 8);
    assert_eq!(packed.unpack()?, q);
    let dq = q.dequantize()?;
    assert!(w.iter().zip(&dq).all(|(a, b)| (a - b).abs() <= 0.5 * 0.1429));
    Ok(())
}

// ---- Known answers: the bit layouts, computed by hand ------------------------------------------

fn pack(w: &[f32], m: u32, k: u32, f: Format) -> Packed {
    round_trip(w, m, k, f, ScaleMode::PerRow).1
}

#[test]
fn ternary2_known_row() {
    // gamma = 3 / 16; levels +1, -1, 0 x 13, +1 -> codes 1, 2 at bits 0..3, code 1 at bits 30..31.
    let mut w = [0.0f32; 16];
    (w[0], w[1], w[15]) = (1.0, -1.0, 1.0);
    let p = pack(&w, 1, 16, Format::Ternary2);
    assert_eq!(p.data, [0x4000_0009, 0, 0, 0]);
    assert_eq!(p.scales, [0.1875f32.to_bits()]);
    assert!(p.aux.is_empty());
}

#[test]
fn int8_known_word_and_round_half_even() {
    // scale 127 / 127 = 1: -63.5 -> -64, 0.5 -> 0, 1.5 -> 2 (ties to even).
    let p = pack(&[127.0, -63.5, 0.5, 1.5, -2.5], 1, 5, Format::Int8);
    assert_eq!(p.data, [0x0200_C07F, 0x0000_00FE, 0, 0]);
    assert_eq!(p.scales, [1.0f32.to_bits()]);
}

#[test]
fn int4_symmetric_known_group() {
    // max 7 -> scale 1 (f16 0x3C00); nibbles w + 8 = 1..15, then 8 for zeros.
    let mut w = [0.0f32; 32];
    for (i, x) in w.iter_mut().take(15).enumerate() {
        *x = i as f32 - 7.0;
    }
    let p = pack(&w, 1, 32, Format::Int4 { group: 32, zero_point: false });
    assert_eq!(p.data, [0x8765_4321, 0x8FED_CBA9, 0x8888_8888, 0x8888_8888]);
    assert_eq!(p.scales, [0x0000_3C00]);
    assert!(p.aux.is_empty());
}

#[test]
fn int4_zero_point_known_group() {
    // K = 30: w = i - 3 for i < 16, then 0. lo = -3, hi = 12, scale 1, z = 3: nibble = w + 3
    // (= i for the first 16, 3 for zeros) and 3 for the padding positions 30, 31.
    let w: Vec<f32> = (0..30).map(|i| if i < 16 { i as f32 - 3.0 } else { 0.0 }).collect();
    let p = pack(&w, 1, 30, Format::Int4 { group: 32, zero_point: true });
    assert_eq!(p.data, [0x7654_3210, 0xFEDC_BA98, 0x3333_3333, 0x3333_3333]);
    assert_eq!(p.scales, [0x0000_3C00]);
    assert_eq!(p.aux, [0x0000_0003]);
}

#[test]
fn int4_scales_pair_up_and_use_f16() {
    // K = 96, G = 32: three groups, max |w| 7, 14, 0 -> scales 1, 2, 1 (0 -> 1) in two words;
    // the high half of the second word is unused and 0.
    let mut w = vec![0.0f32; 96];
    (w[0], w[32]) = (7.0, -14.0);
    let p = pack(&w, 1, 96, Format::Int4 { group: 32, zero_point: false });
    assert_eq!(p.scales, [0x4000_3C00, 0x0000_3C00]);
    // A scale that is not an f16 is rounded before quantizing: max 1 -> 1/7 -> f16 0.14282227.
    let q = quantize(&[1.0; 32], 1, 32, Format::Int4 { group: 32, zero_point: false }, ScaleMode::PerRow).unwrap();
    assert_eq!(q.scales, [f16::from_f32(1.0 / 7.0).to_f32()]);
    assert_eq!(q.levels, [15; 32]);
}

#[test]
fn ternary24_known_states() {
    // Group 0: [0.5, -2, 1, 0.1] keeps positions 1, 2 (pair index 3), signs -, + -> 4*3 + 1 = 13.
    // Group 1: all zero -> 24. Group 2 (K = 9, one real weight -3): pair (0, 1), neg_a -> 1.
    // Groups 3..5 padding -> 24.
    let w = [0.5, -2.0, 1.0, 0.1, 0.0, 0.0, 0.0, 0.0, -3.0];
    let p = pack(&w, 1, 9, Format::Ternary24);
    let word0: u32 = 13 | 24 << 5 | 1 << 10 | 24 << 15 | 24 << 20 | 24 << 25;
    assert_eq!(p.data, [word0, 0x318C_6318, 0x318C_6318, 0x318C_6318]);
    // gamma = mean of the kept |w|: (2 + 1 + 3) / 3.
    assert_eq!(p.scales, [2.0f32.to_bits()]);
    let q = p.unpack().unwrap();
    assert_eq!(q.levels, [0, -1, 1, 0, 0, 0, 0, 0, -1]);
    assert_eq!(ternary24_state(1, 2, true, false), Some(13));
    assert_eq!(TERNARY24_ZERO_STATE, 24);
}

#[test]
fn ternary24_keeps_zero_weights_as_plus_one() {
    // One nonzero weight in a full group: the other kept position is the lowest zero, sign(0) = +1.
    let q = quantize(&[0.0, 0.0, -4.0, 0.0], 1, 4, Format::Ternary24, ScaleMode::PerRow).unwrap();
    assert_eq!(q.levels, [1, 0, -1, 0]);
    assert_eq!(q.scales, [2.0]);
    assert_eq!(q.pack().unwrap().data[0] & 31, u32::from(ternary24_state(0, 2, false, true).unwrap()));
}

#[test]
fn int4_sparse24_known_words() {
    // [0.1, -3.5, 0, 7]: keeps 1 and 3; scale 7 / 7 = 1; -3.5 -> -4 (ties to even), 7 -> 7:
    // nibbles 4, 15; positions 1 | 3 << 2 = 0xD. Padding groups: positions (0, 1) = 4, nibbles 8.
    // K pads to 64: two G = 32 groups, the second all padding with scale 1.
    let p = pack(&[0.1, -3.5, 0.0, 7.0], 1, 4, Format::Int4Sparse24 { group: 32 });
    assert_eq!(p.data, [0x8888_88F4, 0x8888_8888, 0x8888_8888, 0x8888_8888]);
    assert_eq!(p.aux, [0x4444_444D, 0x4444_4444]);
    assert_eq!(p.scales, [0x3C00_3C00]);
}

#[test]
fn int4_sparse24_filler_positions() {
    // One nonzero level at position 2: filler 0 -> positions (0, 2) = 0x8; at position 0: (0, 1).
    let w = [0.0, 0.0, 7.0, 0.0, -7.0, 0.0, 0.0, 0.0];
    let p = pack(&w, 1, 8, Format::Int4Sparse24 { group: 32 });
    assert_eq!(p.aux[0] & 0xFF, 0x48);
    assert_eq!(p.data[0] & 0xFFFF, 0x81F8); // nibbles 8, 15 (group 0), 1, 8 (group 1: level -7)
}

#[test]
fn f16_sparse24_known_word() {
    // [0.1, -3, 0, 2] keeps -3 (f16 0xC200) at 1 and 2 (0x4000) at 3; positions 0xD. K pads to 16:
    // three padding groups (word 0, positions (0, 1) = 4) and the four aux nibbles past them (4).
    let p = pack(&[0.1, -3.0, 0.0, 2.0], 1, 4, Format::F16Sparse24);
    assert_eq!(p.data, [0x4000_C200, 0, 0, 0]);
    assert_eq!(p.aux, [0x4444_444D]);
    assert!(p.scales.is_empty());
}

// ---- Rounding ----------------------------------------------------------------------------------

#[test]
fn round_half_to_even_everywhere() {
    assert_eq!([0.5, 1.5, 2.5, -0.5, -1.5].map(round_half_even), [0.0, 2.0, 2.0, -0.0, -2.0]);
    // Ternary: gamma = mean |w| = 1, so 0.5 is exactly half a step -> 0.
    let q = quantize(&[0.5, -0.5, 1.5, 1.5], 1, 4, Format::Ternary2, ScaleMode::PerRow).unwrap();
    assert_eq!((q.levels.as_slice(), q.scales[0]), ([0, 0, 1, 1].as_slice(), 1.0));
    // Int4 symmetric with scale 1 (max 7): 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2, -3.5 -> -4.
    let g = Format::Int4 { group: 32, zero_point: false };
    let mut w = vec![0.0f32; 32];
    w[..6].copy_from_slice(&[7.0, 0.5, 1.5, 2.5, -2.5, -3.5]);
    let q = quantize(&w, 1, 32, g, ScaleMode::PerRow).unwrap();
    assert_eq!(q.levels[..6], [15, 8, 10, 10, 6, 4]);
    // Int4 zero point: lo = -0.5, hi = 14.5, scale 1, z = round(0.5) = 0; 2.5 -> 2.
    let gz = Format::Int4 { group: 32, zero_point: true };
    let mut w = vec![0.0f32; 32];
    w[..3].copy_from_slice(&[-0.5, 14.5, 2.5]);
    let q = quantize(&w, 1, 32, gz, ScaleMode::PerRow).unwrap();
    assert_eq!((q.zeros[0], &q.levels[..3]), (0, [0i8, 14, 2].as_slice()));
}

#[test]
fn per_tensor_scale_is_replicated() {
    let w = [1.0, -1.0, 0.0, 0.0, 3.0, 3.0, -3.0, 3.0];
    let q = quantize(&w, 2, 4, Format::Ternary2, ScaleMode::PerTensor).unwrap();
    assert_eq!(q.scales, [1.75, 1.75]);
    let q = quantize(&w, 2, 4, Format::Int8, ScaleMode::PerTensor).unwrap();
    assert_eq!(q.scales, [3.0 / 127.0; 2]);
    assert_eq!(q.levels[..2], [42, -42]);
    let q = quantize(&w, 2, 4, Format::Ternary24, ScaleMode::PerTensor).unwrap();
    assert_eq!(q.scales, [2.0, 2.0]);
}

// ---- Bad input -----------------------------------------------------------------------------

#[track_caller]
fn assert_format_err<T: std::fmt::Debug>(r: milliwatt::Result<T>) {
    match r {
        Err(Error::Format { .. }) => {}
        other => panic!("expected Error::Format, got {other:?}"),
    }
}

#[test]
fn bad_quantizer_input_is_a_format_error() {
    let w = vec![0.25f32; 64];
    let f = Format::Int4 { group: 32, zero_point: false };
    assert_format_err(quantize(&w, 2, 31, f, ScaleMode::PerRow));
    assert_format_err(quantize(&[], 0, 64, f, ScaleMode::PerRow));
    assert_format_err(quantize(&[], 1, 0, Format::Int8, ScaleMode::PerRow));
    for group in [0, 16, 48, 256] {
        assert_format_err(quantize(&w, 1, 64, Format::Int4 { group, zero_point: true }, ScaleMode::PerRow));
        assert_format_err(quantize(&w, 1, 64, Format::Int4Sparse24 { group }, ScaleMode::PerRow));
    }
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut w = w.clone();
        w[17] = bad;
        for f in all_formats() {
            assert_format_err(quantize(&w, 1, 64, f, ScaleMode::PerRow));
        }
    }
    for f in [f, Format::Int4Sparse24 { group: 64 }, Format::F16Sparse24] {
        assert_format_err(quantize(&w, 1, 64, f, ScaleMode::PerTensor));
    }
    // Values or scales beyond f16.
    assert_format_err(quantize(&[1e6; 64], 1, 64, f, ScaleMode::PerRow));
    assert_format_err(quantize(&[1e6; 64], 1, 64, Format::Int4Sparse24 { group: 64 }, ScaleMode::PerRow));
    assert_format_err(quantize(&[1e5; 64], 1, 64, Format::F16Sparse24, ScaleMode::PerRow));
    let e = quantize(&w, 2, 31, f, ScaleMode::PerRow).unwrap_err().to_string();
    assert!(e.contains("int4-g32") && e.contains("64 weights"), "{e}");
}

#[test]
fn wrong_lengths_are_format_errors() {
    let w = weights(3, 70, 1);
    for f in all_formats() {
        let p = quantize(&w, 3, 70, f, ScaleMode::PerRow).unwrap().pack().unwrap();
        let mut bad = p.clone();
        bad.data.pop();
        assert_format_err(bad.unpack());
        let mut bad = p.clone();
        bad.scales.push(0);
        assert_format_err(bad.unpack());
        let mut bad = p.clone();
        bad.aux.push(0);
        assert_format_err(bad.unpack());
        let mut bad = p.clone();
        bad.row_words += 4;
        assert_format_err(bad.unpack());
        let mut bad = p.clone();
        bad.k += 100; // strides no longer match
        assert_format_err(bad.unpack());
        let mut bad = p.clone();
        bad.m = 0;
        assert_format_err(bad.unpack());

        let q = quantize(&w, 3, 70, f, ScaleMode::PerRow).unwrap();
        let mut bad = q.clone();
        if f == Format::F16Sparse24 {
            bad.values_f16.pop();
        } else {
            bad.levels.pop();
        }
        assert_format_err(bad.pack());
        assert_format_err(bad.dequantize());
        let mut bad = q.clone();
        bad.scales.push(1.0);
        assert_format_err(bad.pack());
    }
}

/// Packs `w` (one row of K = 16) and returns it, for corrupting.
fn packed16(f: Format) -> Packed {
    let w = [1.0, -1.0, 0.0, 0.5, 0.25, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
    quantize(&w, 1, 16, f, ScaleMode::PerRow).unwrap().pack().unwrap()
}

#[test]
fn invalid_codes_are_format_errors() {
    // Ternary2 code 3.
    let mut p = packed16(Format::Ternary2);
    p.data[0] |= 3 << 4;
    assert_format_err(p.unpack());
    // Ternary2 nonzero padding (K = 16, row covers 64).
    let mut p = packed16(Format::Ternary2);
    p.data[1] = 1;
    assert_format_err(p.unpack());
    // Int8 -128 and nonzero padding.
    let mut p = packed16(Format::Int8);
    p.data[0] = (p.data[0] & !0xFF) | 0x80;
    assert_format_err(p.unpack());
    let mut p = quantize(&[1.0; 5], 1, 5, Format::Int8, ScaleMode::PerRow).unwrap().pack().unwrap();
    p.data[1] |= 1 << 8; // byte 5
    assert_format_err(p.unpack());
    // Non-finite scales.
    let mut p = packed16(Format::Int8);
    p.scales[0] = f32::NAN.to_bits();
    assert_format_err(p.unpack());
    let mut p = packed16(Format::Int4 { group: 32, zero_point: false });
    p.scales[0] = 0x7C00; // f16 infinity
    assert_format_err(p.unpack());
    // Int4: padding nibble not the zero code; unused scale half; unused zero-point nibble.
    let mut p = packed16(Format::Int4 { group: 32, zero_point: false });
    p.data[3] ^= 1;
    assert_format_err(p.unpack());
    let mut p = packed16(Format::Int4 { group: 32, zero_point: false });
    p.scales[0] |= 0x3C00 << 16;
    assert_format_err(p.unpack());
    let mut p = packed16(Format::Int4 { group: 32, zero_point: true });
    p.aux[0] |= 1 << 4;
    assert_format_err(p.unpack());
    // Ternary24: states 25..31, bits 30..31, a padding group not 24, a pair touching padding.
    for state in 25..32 {
        let mut p = packed16(Format::Ternary24);
        p.data[0] = (p.data[0] & !31) | state;
        assert_format_err(p.unpack());
    }
    let mut p = packed16(Format::Ternary24);
    p.data[0] |= 1 << 30;
    assert_format_err(p.unpack());
    let mut p = packed16(Format::Ternary24);
    p.data[1] &= !31;
    assert_format_err(p.unpack());
    let mut p = quantize(&[1.0, 1.0], 1, 2, Format::Ternary24, ScaleMode::PerRow).unwrap().pack().unwrap();
    p.data[0] = (p.data[0] & !31) | 4; // pair (0, 2): position 2 is padding
    assert_format_err(p.unpack());
    let mut p = quantize(&[1.0], 1, 1, Format::Ternary24, ScaleMode::PerRow).unwrap().pack().unwrap();
    assert_eq!(p.data[0] & 31, 0);
    p.data[0] |= 2; // padding filler must be +1
    assert_format_err(p.unpack());
    // 2:4 positions not a < b, nonzero values on padding.
    for f in [Format::Int4Sparse24 { group: 32 }, Format::F16Sparse24] {
        let mut p = packed16(f);
        p.aux[0] = (p.aux[0] & !0xF) | (2 | 1 << 2);
        assert_format_err(p.unpack());
        let mut p = packed16(f);
        p.aux[0] &= !0xF; // (0, 0)
        assert_format_err(p.unpack());
    }
    let mut p = quantize(&[1.0], 1, 1, Format::Int4Sparse24 { group: 32 }, ScaleMode::PerRow).unwrap().pack().unwrap();
    p.data[0] = (p.data[0] & !0xF0) | 0x90; // level +1 at padding position 1
    assert_format_err(p.unpack());
    let mut p = quantize(&[1.0], 1, 1, Format::F16Sparse24, ScaleMode::PerRow).unwrap().pack().unwrap();
    p.data[0] |= 0x3C00 << 16;
    assert_format_err(p.unpack());
    let mut p = packed16(Format::F16Sparse24);
    p.data[0] = 0x7E00; // NaN
    assert_format_err(p.unpack());
}

#[test]
fn inconsistent_quantized_values_are_format_errors() {
    let q = quantize(&[1.0; 16], 1, 16, Format::Ternary2, ScaleMode::PerRow).unwrap();
    let mut bad = q.clone();
    bad.levels[3] = 2;
    assert_format_err(bad.pack());
    let mut bad = q.clone();
    bad.scales[0] = f32::INFINITY;
    assert_format_err(bad.dequantize());
    let mut bad = q.clone();
    bad.format = Format::Int4 { group: 32, zero_point: true };
    assert_format_err(bad.pack()); // scales and zeros have the wrong lengths

    let q = quantize(&[1.0; 16], 1, 16, Format::Int4 { group: 32, zero_point: false }, ScaleMode::PerRow).unwrap();
    let mut bad = q.clone();
    bad.scales[0] = 0.1; // not an f16
    assert_format_err(bad.pack());
    let mut bad = q.clone();
    bad.levels[0] = 16;
    assert_format_err(bad.pack());
    let q = quantize(&[1.0; 16], 1, 16, Format::Int4 { group: 32, zero_point: true }, ScaleMode::PerRow).unwrap();
    let mut bad = q.clone();
    bad.zeros[0] = 16;
    assert_format_err(bad.pack());

    // 2:4: three nonzero in a group; Ternary24 with a single nonzero in a full group.
    let q = quantize(&[1.0; 8], 1, 8, Format::Int4Sparse24 { group: 32 }, ScaleMode::PerRow).unwrap();
    let mut bad = q.clone();
    bad.levels[2] = 1;
    assert_format_err(bad.pack());
    let q = quantize(&[1.0; 8], 1, 8, Format::Ternary24, ScaleMode::PerRow).unwrap();
    let mut bad = q.clone();
    bad.levels[1] = 0;
    assert_format_err(bad.pack());
    let q = quantize(&[1.0; 8], 1, 8, Format::F16Sparse24, ScaleMode::PerRow).unwrap();
    let mut bad = q.clone();
    bad.values_f16[3] = f16::ONE;
    assert_format_err(bad.pack());
    let mut bad = q.clone();
    bad.values_f16[0] = f16::NAN;
    assert_format_err(bad.dequantize());
}

// ---- Sizes -----------------------------------------------------------------------------------

#[test]
fn sizes_at_4096_by_4096() {
    let (m, k) = (4096u32, 4096u32);
    let w = weights(m, k, 7);
    // 32 bits of f32 scale per 4096-weight row.
    let row_scale = 32.0 / 4096.0;
    let cases = [
        (Format::Ternary2, 2.0 + row_scale),
        (Format::Int8, 8.0 + row_scale),
        (Format::Int4 { group: 128, zero_point: false }, 4.0 + 16.0 / 128.0),
        (Format::Int4 { group: 128, zero_point: true }, 4.0 + 16.0 / 128.0 + 4.0 / 128.0),
        (Format::Int4 { group: 32, zero_point: false }, 4.0 + 16.0 / 32.0),
        // 43 vec4s of 96 weights cover 4128: 1.25 * 4128 / 4096.
        (Format::Ternary24, 1.34375 + row_scale),
        (Format::Int4Sparse24 { group: 128 }, 3.0 + 16.0 / 128.0),
        (Format::F16Sparse24, 9.0),
    ];
    for (f, bits) in cases {
        let p = quantize(&w, m, k, f, ScaleMode::PerRow).unwrap().pack().unwrap();
        assert_eq!(p.bits_per_weight(), bits, "{f}");
        assert_eq!(p.weight_bytes() as f64, bits * f64::from(m) * f64::from(k) / 8.0, "{f}");
    }
}

#[test]
fn padding_granularity_is_exposed() {
    let cases = [
        (Format::Ternary2, 64),
        (Format::Int8, 16),
        (Format::Int4 { group: 32, zero_point: false }, 32),
        (Format::Int4 { group: 128, zero_point: true }, 128),
        (Format::Ternary24, 96),
        (Format::Int4Sparse24 { group: 32 }, 64),
        (Format::Int4Sparse24 { group: 128 }, 128),
        (Format::F16Sparse24, 16),
    ];
    for (f, g) in cases {
        assert_eq!(f.k_multiple(), g, "{f}");
        assert_eq!(f.layout(1).unwrap().padded_k, g, "{f}");
        assert_eq!(f.layout(g + 1).unwrap().padded_k, 2 * g, "{f}");
    }
}
