//! Fused candle ops for the trainer's hot element-wise work. candle composes GELU's gradient and
//! a fake quantization from a dozen whole-tensor passes with a scalar libm call per element;
//! these do one pass each (split over the cores) and compute exactly what the crate's twins do.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use milliwatt::cpu::qmatmul::act_scale;
use rayon::prelude::*;

/// Elements per parallel chunk.
const CHUNK: usize = 16 * 1024;

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = storage else { candle_core::bail!("{op}: f32 only") };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// GELU with the tanh approximation, as the crate's epilogue computes it.
struct GeluTanh;

/// tanh through one `exp` (libm's `tanhf` costs several times more, and GELU runs on every MLP
/// activation twice a step); within 1e-7 of `tanh` in absolute terms.
fn tanh_fast(u: f32) -> f32 {
    let u = u.clamp(-15.0, 15.0);
    1.0 - 2.0 / ((2.0 * u).exp() + 1.0)
}

/// GELU-tanh as the crate's epilogue writes it, through [`tanh_fast`].
fn gelu_fast(v: f32) -> f32 {
    let c = 0.797_884_6_f32;
    0.5 * v * (1.0 + tanh_fast(c * (v + 0.044715 * v * v * v)))
}

/// d/dx of GELU-tanh.
fn gelu_grad(x: f32) -> f32 {
    let c = 0.797_884_6_f32;
    let u = c * (x + 0.044715 * x * x * x);
    let th = tanh_fast(u);
    0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * c * (1.0 + 3.0 * 0.044715 * x * x)
}

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = gelu_fast(x);
            }
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad_res.contiguous()?, &GeluBackward)?))
    }
}

/// `grad · gelu'(x)`.
struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "gelu-tanh-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))).for_each(|(o, (x, g))| {
            for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                *o = g * gelu_grad(x);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// GELU-tanh of `x`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluTanh)
}

/// Per-row int8 fake quantization with a straight-through gradient.
struct FakeQuantAct;

impl CustomOp1 for FakeQuantAct {
    fn name(&self) -> &'static str {
        "fake-quant-act"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let k = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(k).zip(x.par_chunks(k)).for_each(|(y, x)| {
            // quantize_act.wgsl: scale = absmax / 127, level = clamp(round_half_even(x / scale), ±127).
            let scale = act_scale(x.iter().fold(0f32, |m, v| m.max(v.abs())));
            for (y, &x) in y.iter_mut().zip(x) {
                *y = (x / scale).round_ties_even().clamp(-127.0, 127.0) * scale;
            }
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.clone()))
    }
}

/// `x` [.., k] quantized per row (last dimension) to int8 levels times the row's scale, as the
/// crate's `quantize_act` kernel rounds it; the gradient passes straight through.
pub fn fake_quant_act(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(FakeQuantAct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use milliwatt::cpu::epilogue::gelu_tanh as gelu_twin;

    #[test]
    fn fast_gelu_matches_the_crate() {
        for i in -2000..2000 {
            let x = i as f32 * 0.005;
            assert!((gelu_fast(x) - gelu_twin(x)).abs() < 1e-6, "{x}");
        }
    }

    #[test]
    fn gelu_gradient_matches_finite_differences() {
        let xs = [-3.0f32, -0.7, 0.0, 0.4, 2.5];
        let x = Var::from_tensor(&Tensor::new(&xs, &Device::Cpu).unwrap()).unwrap();
        let g = gelu(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = g.get(x.as_tensor()).unwrap().to_vec1().unwrap();
        for (x, g) in xs.iter().zip(g) {
            let h = 1e-3f64;
            let f = |v: f64| gelu_twin(v as f32) as f64;
            let fd = (f(f64::from(*x) + h) - f(f64::from(*x) - h)) / (2.0 * h);
            assert!((fd - f64::from(g)).abs() < 2e-3, "x {x}: {g} vs {fd}");
        }
    }
}
