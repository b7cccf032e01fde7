//! The CPU twins themselves against plain references, so a mistake shared by a shader and its twin
//! cannot hide: the matmul twins against an f64-accumulated `X W^T`, element-wise against direct
//! arithmetic. No GPU needed.

use approx::assert_relative_eq;
use half::f16;
use milliwatt::cpu;
use milliwatt::kernels::{EltOp, MatmulParams};

fn data(n: usize, seed: u32) -> Vec<f32> {
    // A small LCG: the values only need to be varied and reproducible.
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn params(m: u32, n: u32, k: u32) -> MatmulParams {
    MatmulParams { m, n, k, m_offset: 0, ldy: m, gate_rows: 0, _pad: [0; 2] }
}

const SHAPES: &[(u32, u32, u32)] = &[(1, 1, 1), (7, 3, 33), (65, 9, 127), (33, 2, 1000), (5, 8, 1001)];

#[test]
fn matmul_twins_match_reference_f32() {
    for &(m, n, k) in SHAPES {
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        let x = data(nu * ku, m + n);
        let w = data(mu * ku, k);
        let reference = cpu::matmul::reference(mu, nu, ku, &x, &w);
        let p = params(m, n, k);
        let mut outs = Vec::new();
        let mut y = vec![0f32; mu * nu];
        cpu::matmul::gemm(&p, &x, &w, &mut y);
        outs.push(("gemm", y.clone()));
        cpu::matmul::matmul_naive(&p, &x, &w, &mut y);
        outs.push(("naive", y.clone()));
        for wg in [32, 128] {
            cpu::matmul::gemv(&p, wg, false, &x, &w, &mut y);
            outs.push(("gemv scalar", y.clone()));
            if k % 4 == 0 {
                cpu::matmul::gemv(&p, wg, true, &x, &w, &mut y);
                outs.push(("gemv vec4", y.clone()));
            }
        }
        for (name, out) in outs {
            for (a, b) in out.iter().zip(&reference) {
                assert_relative_eq!(*a, *b, epsilon = 1e-4, max_relative = 1e-4);
            }
            let _ = name;
        }
    }
}

#[test]
fn matmul_twins_widen_f16_to_f32() {
    let (m, n, k) = (9usize, 2usize, 64usize);
    let x: Vec<f16> = data(n * k, 1).into_iter().map(f16::from_f32).collect();
    let w: Vec<f16> = data(m * k, 2).into_iter().map(f16::from_f32).collect();
    let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    let reference = cpu::matmul::reference(m, n, k, &xf, &wf);
    let mut y = vec![f16::ZERO; m * n];
    cpu::matmul::gemm(&params(m as u32, n as u32, k as u32), &x, &w, &mut y);
    for (a, b) in y.iter().zip(&reference) {
        // f32 arithmetic on f16 inputs: only the output is rounded to f16.
        assert_relative_eq!(a.to_f32(), *b, epsilon = 1e-3, max_relative = 1e-3);
    }
}

#[test]
fn twins_honour_m_offset_and_row_stride() {
    // A dispatch of a split weight writes its own columns of a wider Y and nothing else.
    let (m, n, k, ldy, off) = (3u32, 2u32, 5u32, 8u32, 4u32);
    let x = data((n * k) as usize, 3);
    let w = data((m * k) as usize, 4);
    let reference = cpu::matmul::reference(m as usize, n as usize, k as usize, &x, &w);
    let p = MatmulParams { m, n, k, m_offset: off, ldy, gate_rows: 0, _pad: [0; 2] };
    let mut y = vec![-9f32; (n * ldy) as usize];
    cpu::matmul::gemm(&p, &x, &w, &mut y);
    for nn in 0..n as usize {
        for c in 0..ldy as usize {
            let v = y[nn * ldy as usize + c];
            if (off as usize..(off + m) as usize).contains(&c) {
                assert_relative_eq!(v, reference[nn * m as usize + c - off as usize], max_relative = 1e-5);
            } else {
                assert_eq!(v, -9.0);
            }
        }
    }
}

#[test]
fn elementwise_twin_matches_direct_arithmetic() {
    let a = data(37, 5);
    let b = data(37, 6);
    let mut out = vec![0f32; 37];
    cpu::elementwise::elementwise(EltOp::Add, &a, Some(&b), &mut out);
    for i in 0..37 {
        assert_eq!(out[i], a[i] + b[i]);
    }
    cpu::elementwise::elementwise(EltOp::Mul, &a, Some(&b), &mut out);
    for i in 0..37 {
        assert_eq!(out[i], a[i] * b[i]);
    }
    cpu::elementwise::elementwise(EltOp::Scale { alpha: 3.0, beta: 0.5 }, &a, None, &mut out);
    for i in 0..37 {
        assert_eq!(out[i], a[i].mul_add(3.0, 0.5));
    }
}

mod properties {
    use milliwatt::cpu::qmatmul::{ActIn, qgemv};
    use milliwatt::cpu::{self};
    use milliwatt::kernels::MatmulParams;
    use milliwatt::kernels::qmatmul::{QMatmulParams, STEP, act_row_words, row_words};
    use milliwatt::quant::{Format, ScaleMode, quantize};
    use proptest::prelude::*;

    fn format_strategy() -> impl Strategy<Value = Format> {
        prop_oneof![
            Just(Format::Ternary2),
            Just(Format::Int8),
            (prop_oneof![Just(32u32), Just(64), Just(128)], any::<bool>())
                .prop_map(|(group, zero_point)| Format::Int4 { group, zero_point }),
            Just(Format::Ternary24),
            prop_oneof![Just(32u32), Just(64), Just(128)].prop_map(|group| Format::Int4Sparse24 { group }),
            Just(Format::F16Sparse24),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Over random shapes, the dense GEMM twin is the f32 matmul.
        #[test]
        fn gemm_twin_is_a_matmul(m in 1u32..40, n in 1u32..12, k in 1u32..300, seed in any::<u32>()) {
            let (mu, nu, ku) = (m as usize, n as usize, k as usize);
            let x = super::data(nu * ku, seed);
            let w = super::data(mu * ku, seed ^ 0x5555);
            let reference = cpu::matmul::reference(mu, nu, ku, &x, &w);
            let mut y = vec![0f32; mu * nu];
            cpu::matmul::gemm(&MatmulParams { m, n, k, m_offset: 0, ldy: m, gate_rows: 0, _pad: [0; 2] }, &x, &w, &mut y);
            for (a, b) in y.iter().zip(&reference) {
                prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()) + 1e-4 * k as f32 * 1e-2);
            }
        }

        /// Over random shapes and formats, the low-bit GEMV twin (which decodes the packed words
        /// itself) equals the f32 matmul on the quantizer's own dequantized weights.
        #[test]
        fn qgemv_twin_matches_dequantized_matmul(
            m in 1u32..24, n in 1u32..9, k in 1u32..400, format in format_strategy(), seed in any::<u32>(), wg in 0usize..3,
        ) {
            let (mu, nu, ku) = (m as usize, n as usize, k as usize);
            let w = super::data(mu * ku, seed);
            let x = super::data(nu * ku, seed ^ 0xABCD);
            let packed = quantize(&w, m, k, format, ScaleMode::PerRow).unwrap().pack().unwrap();
            let dequant = packed.unpack().unwrap().dequantize().unwrap();
            let reference = cpu::matmul::reference(mu, nu, ku, &x, &dequant);
            let (wr, sr, ar) = row_words(format, k).unwrap();
            let group = match format {
                Format::Int4 { group, .. } | Format::Int4Sparse24 { group } => group,
                _ => 0,
            };
            let p = QMatmulParams {
                m, n, k, m_offset: 0, ldy: m, steps: k.div_ceil(STEP), w_row_words: wr, s_row_words: sr,
                a_row_words: ar, x_row_words: act_row_words(k), group, gate_rows: 0, x_group_words: 0, y_group: 0, _pad: [0; 2],
            };
            let mut y = vec![0f32; mu * nu];
            qgemv(format, &p, [32, 64, 256][wg], ActIn::Float(&x), &packed.data, &packed.scales, &packed.aux, &mut y);
            let scale: f32 = dequant.iter().fold(0f32, |a, v| a.max(v.abs())) * k as f32;
            for (a, b) in y.iter().zip(&reference) {
                prop_assert!((a - b).abs() <= 1e-5 * scale + 1e-6, "{a} vs {b}");
            }
        }
    }
}

#[test]
fn philox_matches_random123_known_answers() {
    use milliwatt::cpu::noise::philox4x32_10;
    // Known-answer vectors of Random123 (kat_vectors, philox4x32 with 10 rounds).
    assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
    assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
    assert_eq!(
        philox4x32_10([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
        [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
    );
}

#[test]
fn noise_math_is_accurate() {
    use milliwatt::cpu::noise::{cos_sin, ln_f32};
    let mut worst_ln = 0f64;
    let mut worst_trig = 0f64;
    for i in 1..20_000u32 {
        let u = i as f32 / 20_000.0;
        worst_ln = worst_ln.max((f64::from(ln_f32(u)) - f64::from(u).ln()).abs());
        let a = (u - 0.5) * std::f32::consts::TAU;
        let (c, s) = cos_sin(a);
        worst_trig =
            worst_trig.max((f64::from(c) - f64::from(a).cos()).abs()).max((f64::from(s) - f64::from(a).sin()).abs());
    }
    assert!(worst_ln < 1e-6, "ln error {worst_ln}");
    assert!(worst_trig < 3e-7, "cos/sin error {worst_trig}");
}
