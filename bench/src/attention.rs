//! Attention: the fused flash-style kernel against the naive three-dispatch attention, and 2D
//! neighbourhood attention (window 7) against dense fused attention, each pair measured in the
//! same run on the same device.

use milliwatt::bench::{Repeats, time_kernels};
use milliwatt::kernels::{Attention, AttentionNaive, Elem, Sparsity, neighbourhood_blocks, neighbourhood_tiles};
use milliwatt::{Gpu, Kernel, Result, wgpu};

/// One pair of kernels timed side by side.
#[derive(serde::Serialize, Debug)]
pub struct Row {
    what: String,
    tokens: u32,
    heads: u32,
    head_dim: u32,
    fused_or_sparse_s: f64,
    baseline_s: f64,
    speedup: f64,
    ideal_density: Option<f64>,
    visited_fraction: Option<f64>,
    goal_speedup: Option<f64>,
}

/// Runs the attention pairs on `gpu` (`quick`: fewer sizes and repeats).
pub fn run(gpu: &Gpu, quick: bool) -> Result<Vec<Row>> {
    let repeats = Repeats { warmup: 1, reps: if quick { 3 } else { 5 }, min_seconds: 0.0 };
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let fill = |name: &str, n: u64| -> Result<wgpu::Buffer> {
        let b = gpu.buffer(name, n * 4, usage)?;
        let data: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        gpu.queue().write_buffer(&b, 0, bytemuck::cast_slice(&data));
        Ok(b)
    };
    let mut rows = Vec::new();

    println!("\nfused vs naive three-kernel attention (f32, 16 heads, one image):");
    let tokens_list: &[u32] = if quick { &[256] } else { &[256, 1024] };
    for &tokens in tokens_list {
        for d in [64u32, 72] {
            let heads = 16;
            let n = u64::from(tokens * heads * d);
            let qkv = fill("bench.qkv", 3 * n)?;
            let out = fill("bench.out", n)?;
            let scores = gpu.buffer(
                "bench.scores",
                u64::from(heads) * u64::from(tokens) * u64::from(tokens) * 4,
                wgpu::BufferUsages::STORAGE,
            )?;
            let fused =
                Attention::dense(1, tokens, heads, d, Elem::F32).prepare(gpu, &[(&qkv).into(), (&out).into()])?;
            let naive = AttentionNaive { images: 1, tokens, heads, head_dim: d }
                .prepare(gpu, &[(&qkv).into(), (&scores).into(), (&out).into()])?;
            let tf = time_kernels(gpu, &[&fused], repeats)?.median();
            let tn = time_kernels(gpu, &[&naive], repeats)?.median();
            println!(
                "  {tokens:>5} tokens d {d:>3}: fused {:>9.2} ms  naive {:>9.2} ms  speedup {:>5.2}x",
                tf * 1e3,
                tn * 1e3,
                tn / tf
            );
            rows.push(Row {
                what: "fused_vs_naive".into(),
                tokens,
                heads,
                head_dim: d,
                fused_or_sparse_s: tf,
                baseline_s: tn,
                speedup: tn / tf,
                ideal_density: None,
                visited_fraction: None,
                goal_speedup: None,
            });
        }
    }

    println!("\nneighbourhood (window 7) vs dense fused attention (f32, 4 heads, d 64):");
    let grids: &[u32] = if quick { &[16, 32] } else { &[16, 32, 64] };
    for &g in grids {
        let (tokens, heads, d, window) = (g * g, 4u32, 64u32, 7u32);
        let n = u64::from(tokens * heads * d);
        let qkv = fill("bench.qkv", 3 * n)?;
        let out = fill("bench.out", n)?;
        let list = neighbourhood_blocks(tokens, g, g, window);
        let tiles = neighbourhood_tiles(tokens, g, g, window);
        let visited: u64 = tiles.iter().map(|t| t.len() as u64).sum();
        let all = u64::from(tokens.div_ceil(64)) * u64::from(tokens.div_ceil(16));
        let fraction = visited as f64 / all as f64;
        let ideal = f64::from(window * window) / f64::from(tokens);
        let blocks = gpu.upload("bench.blocks", &list)?;
        let sparse = Attention {
            sparsity: Sparsity::Neighbourhood { grid_h: g, grid_w: g, window },
            visited_tiles: Some(visited),
            ..Attention::dense(1, tokens, heads, d, Elem::F32)
        }
        .prepare(gpu, &[(&qkv).into(), (&blocks).into(), (&out).into()])?;
        let dense = Attention::dense(1, tokens, heads, d, Elem::F32).prepare(gpu, &[(&qkv).into(), (&out).into()])?;
        let ts = time_kernels(gpu, &[&sparse], repeats)?.median();
        let td = time_kernels(gpu, &[&dense], repeats)?.median();
        let goal = 0.7 / fraction;
        println!(
            "  {g:>2}x{g:<2}: ideal density {:>6.2}%  visited {:>6.2}%  sparse {:>9.2} ms  dense {:>9.2} ms  speedup {:>5.2}x (goal {:>5.2}x)",
            ideal * 100.0,
            fraction * 100.0,
            ts * 1e3,
            td * 1e3,
            td / ts,
            goal
        );
        rows.push(Row {
            what: "neighbourhood_vs_dense".into(),
            tokens,
            heads,
            head_dim: d,
            fused_or_sparse_s: ts,
            baseline_s: td,
            speedup: td / ts,
            ideal_density: Some(ideal),
            visited_fraction: Some(fraction),
            goal_speedup: Some(goal),
        });
    }
    Ok(rows)
}
