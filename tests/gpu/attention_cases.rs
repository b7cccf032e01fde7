//! Fused attention against the plain softmax(Q K^T / sqrt(d)) V (f64 twin) on odd token counts,
//! 1 to 16 heads and head dims 32, 64, 72, 128; neighbourhood attention (windows 3, 5, 7, square and
//! non-square grids) against the same definition with the window mask; a random block mask that
//! is not a neighbourhood against the block-masked definition.

use half::f16;
use milliwatt::cpu::Element;
use milliwatt::cpu::attention::attention;
use milliwatt::kernels::attention::{KEY_TILE, QUERY_BLOCK, window_start};
use milliwatt::kernels::{
    Attention, AttentionNaive, Elem, Sparsity, block_list, neighbourhood_blocks, neighbourhood_tiles,
};
use milliwatt::{Gpu, Kernel};

use crate::util::{Rng, compare, err, need_f16};
use crate::{Backend, Case, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("attention_dense_f32", |b| dense_case::<f32>(&b.gpu, full(b))),
        ("attention_dense_f16", |b| dense_case::<f16>(&b.gpu, full(b))),
        ("attention_neighbourhood", |b| neighbourhood_case(&b.gpu, full(b))),
        ("attention_block_mask", |b| block_mask_case(&b.gpu, full(b))),
        ("attention_naive_reference", |b| naive_case(&b.gpu)),
    ]
}

/// llvmpipe's GL compiler takes about a minute per head-dimension variant of this kernel without
/// its shader cache (a fresh CI machine): on GL the covering set is cut to its first two cases.
fn full(b: &Backend) -> usize {
    if b.name == "gl" { 2 } else { usize::MAX }
}

fn run<E: Element>(gpu: &Gpu, k: &Attention, qkv: &[E], blocks: Option<&[u32]>) -> Result<Vec<E>, String> {
    let n = (k.images * k.tokens * k.heads * k.head_dim) as usize;
    let qb = gpu.upload("qkv", qkv).map_err(err)?;
    let ob = gpu.upload("out", &vec![E::from_f32(7.0); n]).map_err(err)?;
    let bb = gpu.upload("blocks", blocks.unwrap_or(&[0])).map_err(err)?;
    let mut bufs: Vec<milliwatt::TensorRef<'_>> = vec![(&qb).into()];
    if blocks.is_some() {
        bufs.push((&bb).into());
    }
    bufs.push((&ob).into());
    let p = k.prepare(gpu, &bufs).map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    gpu.read(&ob).map_err(err)
}

fn dense_case<E: Element>(gpu: &Gpu, limit: usize) -> Outcome {
    need_f16::<E>(gpu)?;
    let cases = [(1u32, 49u32, 1u32, 32u32), (1, 1, 4, 64), (2, 196, 3, 64), (1, 257, 2, 72), (1, 70, 16, 128)];
    for (i, &(images, tokens, heads, d)) in cases.iter().enumerate().take(limit) {
        let mut rng = Rng::new(10_000 + i as u64);
        let qkv: Vec<E> = (0..images * tokens * 3 * heads * d).map(|_| E::from_f32(rng.f32() * 2.0)).collect();
        let k = Attention::dense(images, tokens, heads, d, E::ELEM);
        let got = run(gpu, &k, &qkv, None)?;
        let q32: Vec<f32> = qkv.iter().map(|v| v.to_f32()).collect();
        let mut twin = vec![0f32; got.len()];
        attention(images as usize, tokens as usize, heads as usize, d as usize, &q32, None, &mut twin);
        let twin: Vec<E> = twin.into_iter().map(E::from_f32).collect();
        let rel = if E::ELEM == Elem::F16 { 2e-3 } else { 2e-5 };
        compare(
            &format!("dense attention {images}x{tokens} heads {heads} d {d}"),
            &got,
            &twin,
            &vec![2.0; got.len()],
            rel,
            1e-5,
        )?;
    }
    Ok(())
}

fn neighbourhood_case(gpu: &Gpu, limit: usize) -> Outcome {
    for (i, &(gh, gw, window, heads, d)) in
        [(7u32, 7u32, 3u32, 2u32, 32u32), (9, 13, 5, 1, 72), (14, 14, 7, 3, 64), (16, 16, 7, 2, 64), (8, 8, 5, 1, 128)]
            .iter()
            .enumerate()
            .take(limit)
    {
        let tokens = gh * gw;
        let mut rng = Rng::new(11_000 + i as u64);
        let qkv: Vec<f32> = (0..tokens * 3 * heads * d).map(|_| rng.f32() * 2.0).collect();
        let k = Attention {
            sparsity: Sparsity::Neighbourhood { grid_h: gh, grid_w: gw, window },
            ..Attention::dense(1, tokens, heads, d, Elem::F32)
        };
        let blocks = neighbourhood_blocks(tokens, gh, gw, window);
        let got = run(gpu, &k, &qkv, Some(&blocks))?;
        let mask = |q: usize, key: usize| {
            let (q, key) = (q as u32, key as u32);
            let (r0, c0) = (window_start(q / gw, gh, window), window_start(q % gw, gw, window));
            (r0..r0 + window).contains(&(key / gw)) && (c0..c0 + window).contains(&(key % gw))
        };
        // Every query sees exactly window^2 keys (NATTEN's shifted windows).
        for q in 0..tokens as usize {
            let seen = (0..tokens as usize).filter(|&key| mask(q, key)).count();
            if seen != (window * window) as usize {
                return Err(format!("query {q} of {gh}x{gw} sees {seen} keys with window {window}").into());
            }
        }
        // The block list covers every key of every window.
        let tiles = neighbourhood_tiles(tokens, gh, gw, window);
        for q in 0..tokens {
            for key in 0..tokens {
                if mask(q as usize, key as usize) && !tiles[(q / QUERY_BLOCK) as usize].contains(&(key / KEY_TILE)) {
                    return Err(format!("key {key} of query {q} lies in a tile the list leaves out").into());
                }
            }
        }
        let mut twin = vec![0f32; got.len()];
        attention(1, tokens as usize, heads as usize, d as usize, &qkv, Some(&mask), &mut twin);
        compare(&format!("neighbourhood {gh}x{gw} window {window}"), &got, &twin, &vec![2.0; got.len()], 2e-5, 1e-5)?;
    }
    Ok(())
}

fn block_mask_case(gpu: &Gpu, limit: usize) -> Outcome {
    let (tokens, heads, d) = if limit == usize::MAX { (257u32, 2u32, 64u32) } else { (130, 1, 32) };
    let mut rng = Rng::new(12_000);
    let qkv: Vec<f32> = (0..tokens * 3 * heads * d).map(|_| rng.f32() * 2.0).collect();
    let n_tiles = tokens.div_ceil(KEY_TILE);
    // A random non-empty, non-contiguous set of key tiles per query block.
    let per_block: Vec<Vec<u32>> = (0..tokens.div_ceil(QUERY_BLOCK))
        .map(|_| {
            let mut t: Vec<u32> = (0..n_tiles).filter(|_| rng.next_u64().is_multiple_of(3)).collect();
            if t.is_empty() {
                t.push((rng.next_u64() % u64::from(n_tiles)) as u32);
            }
            t
        })
        .collect();
    let k = Attention { sparsity: Sparsity::Blocks, ..Attention::dense(1, tokens, heads, d, Elem::F32) };
    let got = run(gpu, &k, &qkv, Some(&block_list(&per_block)))?;
    let mask = |q: usize, key: usize| per_block[q / QUERY_BLOCK as usize].contains(&(key as u32 / KEY_TILE));
    let mut twin = vec![0f32; got.len()];
    attention(1, tokens as usize, heads as usize, d as usize, &qkv, Some(&mask), &mut twin);
    compare("random block mask", &got, &twin, &vec![2.0; got.len()], 2e-5, 1e-5)?;
    Ok(())
}

/// The three-dispatch benchmark reference computes the same attention.
fn naive_case(gpu: &Gpu) -> Outcome {
    let (images, tokens, heads, d) = (2u32, 67u32, 3u32, 72u32);
    let mut rng = Rng::new(13_000);
    let qkv: Vec<f32> = (0..images * tokens * 3 * heads * d).map(|_| rng.f32() * 2.0).collect();
    let n = (images * tokens * heads * d) as usize;
    let qb = gpu.upload("qkv", &qkv).map_err(err)?;
    let sb = gpu.upload("scores", &vec![0f32; (images * heads * tokens * tokens) as usize]).map_err(err)?;
    let ob = gpu.upload("out", &vec![7f32; n]).map_err(err)?;
    let p = AttentionNaive { images, tokens, heads, head_dim: d }
        .prepare(gpu, &[(&qb).into(), (&sb).into(), (&ob).into()])
        .map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    let got: Vec<f32> = gpu.read(&ob).map_err(err)?;
    let mut twin = vec![0f32; n];
    attention(images as usize, tokens as usize, heads as usize, d as usize, &qkv, None, &mut twin);
    compare("naive attention", &got, &twin, &vec![2.0; n], 2e-5, 1e-5)?;
    Ok(())
}
