//! Norms against their twin (and the twin against a plain f64 definition): LayerNorm and RMSNorm,
//! adaLN modulation, int8 output, on odd row lengths and token counts. The `ledger_norm_*` cases
//! run the same through the COUNT_WORK variant: counts equal `Norm::work`, output equals the twin.

use half::f16;
use milliwatt::cpu::Element;
use milliwatt::cpu::norm::{NormOut, norm};
use milliwatt::kernels::qmatmul::act_row_words;
use milliwatt::kernels::{Counting, Elem, Modulation, Norm, NormKind};
use milliwatt::{Gpu, Kernel};

use crate::util::{Rng, compare, err, need_f16};
use crate::{Case, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("norm_f32", |b| norm_cases::<f32>(&b.gpu, false)),
        ("norm_f16", |b| norm_cases::<f16>(&b.gpu, false)),
        ("norm_emit_int8", |b| emit_case(&b.gpu, false)),
        ("norm_fallback_reduction", |b| norm_cases::<f32>(&b.fallback, false)),
        ("ledger_norm_f32", |b| norm_cases::<f32>(&b.gpu, true)),
        ("ledger_norm_f16", |b| norm_cases::<f16>(&b.gpu, true)),
        ("ledger_norm_emit_int8", |b| emit_case(&b.gpu, true)),
        ("ledger_norm_fallback_reduction", |b| norm_cases::<f32>(&b.fallback, true)),
    ]
}

/// Runs `n` over `refs`. With `count`, its COUNT_WORK variant (the counters appended), whose
/// counts must equal `Norm::work` field by field; the caller then checks its output as usual.
fn run(gpu: &Gpu, n: &Norm, refs: &[milliwatt::TensorRef<'_>], count: bool) -> Result<(), String> {
    if count {
        let counted = crate::ledger_cases::run_counting(gpu, &Counting(n.clone()), refs)?;
        let what =
            format!("{:?} ({}, {}) modulated {} int8 {}", n.kind, n.rows, n.d, n.modulation.is_some(), n.emit_i8);
        return crate::ledger_cases::agree(&what, counted, n.work(gpu.capabilities()).map_err(err)?);
    }
    let p = n.prepare(gpu, refs).map_err(err)?;
    gpu.run(&[&p]).map_err(err)
}

struct Inputs<E> {
    x: Vec<E>,
    modulation: Vec<E>,
    weight: Vec<E>,
}

fn inputs<E: Element>(n: &Norm, seed: u64) -> Inputs<E> {
    let mut rng = Rng::new(seed);
    let (rows, d) = (n.rows as usize, n.d as usize);
    // An offset and a spread so the mean and variance matter.
    let x = (0..rows * d).map(|i| E::from_f32(rng.f32() * 3.0 + (i % 5) as f32 * 0.5 + 1.0)).collect();
    let mod_len = n.modulation.map_or(1, |m| n.rows.div_ceil(m.rows_per_image) * m.stride) as usize;
    Inputs { x, modulation: rng.vec(mod_len), weight: rng.vec(d) }
}

fn buffers<E: Element>(gpu: &Gpu, n: &Norm, i: &Inputs<E>) -> Result<Vec<milliwatt::wgpu::Buffer>, String> {
    let mut v = vec![gpu.upload("x", &i.x).map_err(err)?];
    if n.modulation.is_some() {
        v.push(gpu.upload("modulation", &i.modulation).map_err(err)?);
    }
    if n.kind == (NormKind::Rms { affine: true }) {
        v.push(gpu.upload("weight", &i.weight).map_err(err)?);
    }
    Ok(v)
}

fn norm_cases<E: Element>(gpu: &Gpu, count: bool) -> Outcome {
    need_f16::<E>(gpu)?;
    let kinds = [NormKind::LayerNorm, NormKind::Rms { affine: false }, NormKind::Rms { affine: true }];
    // Rows up to 4,096 features stay in registers (read once); (2, 4099) is read in every pass.
    let shapes = [(1u32, 7u32), (49, 64), (257, 1000), (98, 1152), (3, 1), (1, 4096), (2, 4099)];
    for (i, &(rows, d)) in shapes.iter().enumerate() {
        for (j, &kind) in kinds.iter().enumerate() {
            let modulation = (i % 2 == 1).then_some(Modulation {
                rows_per_image: 49,
                stride: 6 * d,
                shift_offset: 3 * d,
                scale_offset: 4 * d,
            });
            let n = Norm { rows, d, kind, eps: 1e-6, modulation, emit_i8: false, elem: E::ELEM };
            let inp = inputs::<E>(&n, 3000 + 10 * i as u64 + j as u64);
            let mut twin = vec![E::default(); (rows * d) as usize];
            norm(
                &n.params(),
                kind,
                modulation.is_some(),
                &inp.x,
                &inp.modulation,
                &inp.weight,
                NormOut::Float(&mut twin),
            );
            // The twin against the definition in f64 (LayerNorm and RMSNorm without modulation).
            if modulation.is_none() && kind != (NormKind::Rms { affine: true }) && E::ELEM == Elem::F32 {
                for r in 0..rows as usize {
                    let row: Vec<f64> =
                        inp.x[r * d as usize..(r + 1) * d as usize].iter().map(|v| f64::from(v.to_f32())).collect();
                    let mean = if kind == NormKind::LayerNorm { row.iter().sum::<f64>() / f64::from(d) } else { 0.0 };
                    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / f64::from(d);
                    for (c, v) in row.iter().enumerate() {
                        let expect = (v - mean) / (var + 1e-6).sqrt();
                        let got = f64::from(twin[r * d as usize + c].to_f32());
                        if (got - expect).abs() > 1e-4 * (1.0 + expect.abs()) {
                            return Err(
                                format!("{kind:?} twin ({rows}, {d}) row {r}: {got} vs definition {expect}").into()
                            );
                        }
                    }
                }
            }
            let ins = buffers(gpu, &n, &inp)?;
            let y = gpu.upload("y", &vec![E::from_f32(7.0); (rows * d) as usize]).map_err(err)?;
            let mut refs: Vec<milliwatt::TensorRef<'_>> = ins.iter().map(|b| b.into()).collect();
            refs.push((&y).into());
            run(gpu, &n, &refs, count)?;
            let out: Vec<E> = gpu.read(&y).map_err(err)?;
            let scale = vec![4.0f32; out.len()];
            let rel = if E::ELEM == Elem::F16 { 2e-3 } else { 2e-6 };
            compare(
                &format!("{kind:?} ({rows}, {d}) modulated {}", modulation.is_some()),
                &out,
                &twin,
                &scale,
                rel,
                1e-6,
            )?;
        }
    }
    Ok(())
}

fn emit_case(gpu: &Gpu, count: bool) -> Outcome {
    for (i, &(rows, d)) in [(49u32, 1152u32), (5, 33), (98, 64), (1, 4096), (3, 4101)].iter().enumerate() {
        let modulation = Some(Modulation { rows_per_image: 49, stride: 6 * d, shift_offset: 0, scale_offset: d });
        let n = Norm { rows, d, kind: NormKind::LayerNorm, eps: 1e-6, modulation, emit_i8: true, elem: Elem::F32 };
        let inp = inputs::<f32>(&n, 4000 + i as u64);
        let words = act_row_words(d) as usize;
        let mut tq = vec![0u32; rows as usize * words];
        let mut ts = vec![0f32; rows as usize];
        norm(&n.params(), n.kind, true, &inp.x, &inp.modulation, &inp.weight, NormOut::Int8(&mut tq, &mut ts));
        let ins = buffers(gpu, &n, &inp)?;
        let xq = gpu.upload("xq", &vec![0xFFFF_FFFFu32; rows as usize * words]).map_err(err)?;
        let xs = gpu.upload("xs", &vec![0f32; rows as usize]).map_err(err)?;
        let mut refs: Vec<milliwatt::TensorRef<'_>> = ins.iter().map(|b| b.into()).collect();
        refs.push((&xq).into());
        refs.push((&xs).into());
        run(gpu, &n, &refs, count)?;
        let (gq, gs): (Vec<u32>, Vec<f32>) = (gpu.read(&xq).map_err(err)?, gpu.read(&xs).map_err(err)?);
        for r in 0..rows as usize {
            if (gs[r] - ts[r]).abs() > 1e-5 * ts[r] {
                return Err(format!("({rows}, {d}) row {r}: scale {} vs twin {}", gs[r], ts[r]).into());
            }
            for w in 0..words {
                for b in 0..4 {
                    let (g, t) =
                        ((gq[r * words + w] >> (8 * b)) as u8 as i8, (tq[r * words + w] >> (8 * b)) as u8 as i8);
                    if (i16::from(g) - i16::from(t)).abs() > 1 {
                        return Err(format!("({rows}, {d}) row {r} element {}: {g} vs twin {t}", 4 * w + b).into());
                    }
                }
            }
        }
    }
    Ok(())
}
