//! Sweeps the variants of the dense kernels on the current adapter and prints their times, so the
//! choice functions (`Gemv::choose`, `Gemm::choose`) can be checked against measurements on a new
//! device. `cargo run --release --example tune [-- gemv|gemm|qgemv [FORMAT]]`

use milliwatt::bench::{Repeats, time_kernels};
use milliwatt::kernels::qmatmul::act_row_words;
use milliwatt::kernels::{
    Act, Elem, Gemm, GemmVariant, Gemv, GemvReduce, GemvVariant, MatmulShape, QGemv, QGemvVariant,
};
use milliwatt::quant::{Format, ScaleMode, quantize};
use milliwatt::{Gpu, Kernel, Options, Result, wgpu};

fn time(gpu: &Gpu, kernel: &dyn Kernel, shape: MatmulShape, elem: Elem) -> Result<f64> {
    let usage = wgpu::BufferUsages::STORAGE;
    let b = |n: u32, name: &str| gpu.buffer(name, elem.bytes(u64::from(n)), usage);
    let (x, w, y) = (b(shape.n * shape.k, "x")?, b(shape.m * shape.k, "w")?, b(shape.n * shape.m, "y")?);
    let p = kernel.prepare(gpu, &[(&x).into(), (&w).into(), (&y).into()])?;
    Ok(time_kernels(gpu, &[&p], Repeats { warmup: 1, reps: 5, min_seconds: 0.1 })?.median())
}

fn main() -> Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    let gpu = Gpu::new_blocking(&Options::default())?;
    println!("adapter: {}", gpu.describe());
    let caps = gpu.capabilities().clone();
    if which.is_empty() || which == "gemv" {
        for &(m, n, k) in &[(4096u32, 1u32, 4096u32), (1152, 1, 1152), (4096, 4, 4096)] {
            let shape = MatmulShape::new(m, n, k);
            let chosen = Gemv::new(shape, Elem::F32).choose(&caps);
            println!("gemv {shape:?}: chosen {chosen:?}");
            for reduce in [GemvReduce::Subgroup, GemvReduce::Shared] {
                for wg in [32u32, 64, 128, 256] {
                    for rows in [1u32, 2, 4, 8] {
                        let v = GemvVariant { reduce, vec4: true, wg, rows };
                        let kern = Gemv { variant: Some(v), ..Gemv::new(shape, Elem::F32) };
                        if kern.requirements(&caps).is_err() {
                            continue;
                        }
                        let t = time(&gpu, &kern, shape, Elem::F32)?;
                        println!("  {reduce:?} wg {wg:>3} rows {rows}: {:.3} ms", t * 1e3);
                    }
                }
            }
        }
    }
    if which.is_empty() || which == "qgemv" {
        for &(m, k) in &[(4096u32, 4096u32), (1152, 1152)] {
            let shape = MatmulShape::new(m, 1, k);
            let w: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
            let formats = [
                Format::Ternary2,
                Format::Int8,
                Format::Int4 { group: 128, zero_point: false },
                Format::Ternary24,
                Format::Int4Sparse24 { group: 128 },
                Format::F16Sparse24,
            ];
            // `-- qgemv FORMAT` sweeps only the formats whose name (Display) contains FORMAT.
            let only = std::env::args().nth(2).unwrap_or_default();
            for format in formats.into_iter().filter(|f| f.to_string().contains(only.as_str())) {
                let packed = quantize(&w, m, k, format, ScaleMode::PerRow)?.pack()?;
                // The weight streams the kernel binds: data, then scales and aux where present.
                let streams: Vec<wgpu::Buffer> = [&packed.data, &packed.scales, &packed.aux]
                    .into_iter()
                    .enumerate()
                    .filter(|(i, d)| *i == 0 || !d.is_empty())
                    .map(|(_, d)| gpu.upload("w", d))
                    .collect::<Result<_>>()?;
                for act in [Act::Float(Elem::F32), Act::Int8 { out: Elem::F32 }] {
                    let x = match act {
                        Act::Float(_) => vec![gpu.upload("x", &vec![0.01f32; k as usize])?],
                        Act::Int8 { .. } => vec![
                            gpu.upload("xq", &vec![0x0102_0304u32; act_row_words(k) as usize])?,
                            gpu.upload("xs", &[0.01f32])?,
                        ],
                    };
                    let y = gpu.buffer("y", u64::from(m) * 4, wgpu::BufferUsages::STORAGE)?;
                    let chosen = QGemv::new(shape, format, act).choose(&caps);
                    let mut line =
                        format!("qgemv {format:?} {act:?} {m}x{k} (chosen wg {} rows {}):", chosen.wg, chosen.rows);
                    for wg in [32u32, 64, 128, 256] {
                        for rows in [2u32, 4, 8] {
                            let v = QGemvVariant { wg, rows, ..chosen };
                            let kern = QGemv { variant: Some(v), ..QGemv::new(shape, format, act) };
                            let mut bufs: Vec<milliwatt::TensorRef<'_>> = x.iter().map(|b| b.into()).collect();
                            bufs.extend(streams.iter().map(milliwatt::TensorRef::from));
                            bufs.push((&y).into());
                            let p = kern.prepare(&gpu, &bufs)?;
                            let t =
                                time_kernels(&gpu, &[&p], Repeats { warmup: 1, reps: 5, min_seconds: 0.1 })?.median();
                            line += &format!(" {wg}x{rows} {:.2}", t * 1e3);
                        }
                    }
                    println!("{line} ms");
                }
            }
        }
    }
    if which.is_empty() || which == "gemm" {
        for &(m, n, k) in &[(1024u32, 1024u32, 1024u32), (4608, 256, 1152), (1152, 256, 4608)] {
            let shape = MatmulShape::new(m, n, k);
            for elem in [Elem::F32, Elem::F16] {
                for vec4 in [false, true] {
                    let kern = Gemm { variant: Some(GemmVariant { vec4 }), ..Gemm::new(shape, elem) };
                    if kern.requirements(&caps).is_err() {
                        continue;
                    }
                    let t = time(&gpu, &kern, shape, elem)?;
                    let gflops = 2.0 * shape.macs() as f64 / t / 1e9;
                    println!("gemm {shape:?} {elem:?} vec4={vec4}: {:.2} ms, {gflops:.2} GFLOP/s", t * 1e3);
                }
            }
        }
    }
    Ok(())
}
