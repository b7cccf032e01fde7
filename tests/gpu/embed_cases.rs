//! Embeddings against their twins on odd geometries, and against the golden DiT fixtures
//! (tests/fixtures/dit-golden, outputs of the original implementation): the conditioning vector
//! `c` (timestep embedding -> MLP with SiLU -> + class embedding, run as GPU kernels with fused
//! GEMV epilogues) and the 2D sin-cos position embedding.

use milliwatt::cpu;
use milliwatt::kernels::{
    Activation, ClassEmbed, Elem, Elementwise, EltOp, Epilogue, Gemv, MatmulShape, PatchGeometry, Patchify,
    TimestepEmbed, Unpatchify, pos_embed_2d, timestep_freqs,
};
use milliwatt::{Gpu, Kernel};
use safetensors::SafeTensors;

use crate::util::{Rng, compare, err};
use crate::{Case, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("patchify_unpatchify", |b| patch_case(&b.gpu)),
        ("timestep_and_class_embed", |b| embed_case(&b.gpu)),
        ("golden_conditioning_c", |b| golden_c_case(&b.gpu)),
    ]
}

fn patch_case(gpu: &Gpu) -> Outcome {
    for (i, &(images, channels, height, width, patch, extra)) in
        [(2u32, 3u32, 8u32, 12u32, 2u32, 0u32), (1, 4, 6, 6, 3, 4), (3, 1, 4, 4, 1, 1)].iter().enumerate()
    {
        let g = PatchGeometry { images, channels, height, width, patch };
        let mut rng = Rng::new(8000 + i as u64);
        let image: Vec<f32> = rng.vec((images * channels * height * width) as usize);
        let mut twin = vec![0f32; image.len()];
        cpu::embed::patchify(&g, &image, &mut twin);
        let ib = gpu.upload("image", &image).map_err(err)?;
        let tb = gpu.upload("tokens", &vec![7f32; image.len()]).map_err(err)?;
        let p = Patchify { geometry: g, elem: Elem::F32 }.prepare(gpu, &[(&ib).into(), (&tb).into()]).map_err(err)?;
        gpu.run(&[&p]).map_err(err)?;
        let tokens: Vec<f32> = gpu.read(&tb).map_err(err)?;
        if tokens != twin {
            return Err(format!("patchify {g:?} differs from its twin").into());
        }
        // The twin is the stride-p convolution's view: token t, feature (c, i, j).
        let (gw, pp) = ((width / patch) as usize, (patch * patch) as usize);
        let t = gw + 1.min(gw - 1);
        let (c, ii, jj) = (channels as usize - 1, patch as usize - 1, 0usize);
        let f = c * pp + ii * patch as usize + jj;
        let (y, x) = ((t / gw) * patch as usize + ii, (t % gw) * patch as usize + jj);
        let expect = image[(c * height as usize + y) * width as usize + x];
        if twin[t * channels as usize * pp + f] != expect {
            return Err("patchify twin does not follow the convolution layout".into());
        }
        // Unpatchify with extra (sigma) channels: the tokens of a learn_sigma model hold 2C.
        let token_channels = channels + extra;
        let tok: Vec<f32> = rng.vec((images * g.tokens() * patch * patch * token_channels) as usize);
        let mut back = vec![0f32; image.len()];
        cpu::embed::unpatchify(&g, token_channels as usize, &tok, &mut back);
        let tb = gpu.upload("tokens", &tok).map_err(err)?;
        let ob = gpu.upload("image", &vec![7f32; image.len()]).map_err(err)?;
        let p = Unpatchify { geometry: g, token_channels, elem: Elem::F32 }
            .prepare(gpu, &[(&tb).into(), (&ob).into()])
            .map_err(err)?;
        gpu.run(&[&p]).map_err(err)?;
        let out: Vec<f32> = gpu.read(&ob).map_err(err)?;
        if out != back {
            return Err(format!("unpatchify {g:?} differs from its twin").into());
        }
        if extra == 0 {
            // Without extra channels, unpatchify(patchify-order tokens) is a permutation: check
            // the DiT order 'nhwpqc' maps back consistently by a round trip through the twins.
            let mut tokens_pqc = vec![0f32; image.len()];
            let (pp, c_n) = (pp, channels as usize);
            for b in 0..images as usize {
                for t in 0..g.tokens() as usize {
                    for c in 0..c_n {
                        for q in 0..pp {
                            tokens_pqc[(b * g.tokens() as usize + t) * pp * c_n + q * c_n + c] =
                                twin[(b * g.tokens() as usize + t) * pp * c_n + c * pp + q];
                        }
                    }
                }
            }
            let mut round = vec![0f32; image.len()];
            cpu::embed::unpatchify(&g, c_n, &tokens_pqc, &mut round);
            if round != image {
                return Err("patchify then unpatchify (with the channel order swapped) is not the identity".into());
            }
        }
    }
    Ok(())
}

fn embed_case(gpu: &Gpu) -> Outcome {
    for &(images, dim) in &[(3u32, 256u32), (2, 7), (1, 1)] {
        let t: Vec<f32> = (0..images).map(|i| [0.0f32, 0.2505, 0.999][i as usize % 3]).collect();
        let k = TimestepEmbed { images, dim, max_period: 10000.0, time_scale: 1000.0, elem: Elem::F32 };
        let freqs = timestep_freqs(dim, 10000.0);
        let tb = gpu.upload("t", &t).map_err(err)?;
        let fq = gpu.upload("freqs", &freqs).map_err(err)?;
        let eb = gpu.upload("emb", &vec![7f32; (images * dim) as usize]).map_err(err)?;
        let p = k.prepare(gpu, &[(&tb).into(), (&fq).into(), (&eb).into()]).map_err(err)?;
        gpu.run(&[&p]).map_err(err)?;
        let got: Vec<f32> = gpu.read(&eb).map_err(err)?;
        let mut twin = vec![0f32; got.len()];
        cpu::embed::timestep_embed(dim as usize, &freqs, 1000.0, &t, &mut twin);
        // The same operations on both sides (explicit fma, host frequency table); drivers may
        // still differ in the last bit (shader compilers may contract or reassociate), so 1e-6.
        compare(&format!("timestep embedding {images} x {dim}"), &got, &twin, &vec![1.0; got.len()], 1e-6, 1e-6)?;
        // The twin against the definition in f64.
        let half = (dim / 2) as usize;
        for (b, &tb) in t.iter().enumerate() {
            for j in 0..2 * half {
                let freq = (-(10000f64.ln()) * (j % half) as f64 / half as f64).exp();
                let a = f64::from(tb * 1000.0) * freq;
                let expect = if j < half { a.cos() } else { a.sin() };
                if (f64::from(twin[b * dim as usize + j]) - expect).abs() > 2e-4 {
                    return Err(format!("timestep twin {b},{j}: {} vs {expect}", twin[b * dim as usize + j]).into());
                }
            }
        }
    }
    let (images, dim, classes) = (4u32, 33u32, 10u32);
    let mut rng = Rng::new(8100);
    let table: Vec<f32> = rng.vec(((classes + 1) * dim) as usize);
    let labels = [3u32, 10, 0, 99];
    let (lb, tb) = (gpu.upload("labels", &labels).map_err(err)?, gpu.upload("table", &table).map_err(err)?);
    let eb = gpu.upload("emb", &vec![7f32; (images * dim) as usize]).map_err(err)?;
    let p = ClassEmbed { images, dim, classes, elem: Elem::F32 }
        .prepare(gpu, &[(&lb).into(), (&tb).into(), (&eb).into()])
        .map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    let got: Vec<f32> = gpu.read(&eb).map_err(err)?;
    let mut twin = vec![0f32; got.len()];
    cpu::embed::class_embed(dim as usize, (classes + 1) as usize, &labels, &table, &mut twin);
    if got != twin || got[3 * dim as usize..] != table[(classes * dim) as usize..] {
        return Err("class embedding differs (or label 99 did not read the null class)".into());
    }
    Ok(())
}

fn tensor(st: &SafeTensors<'_>, name: &str) -> Result<(Vec<f32>, Vec<usize>), String> {
    let t = st.tensor(name).map_err(|e| format!("{name}: {e}"))?;
    let v = match t.dtype() {
        safetensors::Dtype::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(t.data()),
        safetensors::Dtype::I64 => {
            bytemuck::pod_collect_to_vec::<u8, i64>(t.data()).into_iter().map(|v| v as f32).collect()
        }
        other => return Err(format!("{name}: unexpected dtype {other:?}")),
    };
    Ok((v, t.shape().to_vec()))
}

/// c = MLP(timestep embedding(t)) + class table[y] for the fixtures' three inputs, run on the GPU
/// as timestep_embed -> GEMV(bias, SiLU) -> GEMV(bias) -> class_embed -> add; and pos_embed_2d
/// against the checkpoint's pos_embed.
fn golden_c_case(gpu: &Gpu) -> Outcome {
    for fixture in ["dit-tiny", "dit-tiny-sigma"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dit-golden").join(fixture);
        let model = std::fs::read(dir.join("model.safetensors")).map_err(|e| e.to_string())?;
        let expected = std::fs::read(dir.join("expected.safetensors")).map_err(|e| e.to_string())?;
        let (m, e) = (
            SafeTensors::deserialize(&model).map_err(|e| e.to_string())?,
            SafeTensors::deserialize(&expected).map_err(|e| e.to_string())?,
        );
        let (t_model, _) = tensor(&e, "t")?;
        let (y, _) = tensor(&e, "y")?;
        let (c_ref, c_shape) = tensor(&e, "c")?;
        let (w0, s0) = tensor(&m, "t_embedder.mlp.0.weight")?;
        let (b0, _) = tensor(&m, "t_embedder.mlp.0.bias")?;
        let (w2, s2) = tensor(&m, "t_embedder.mlp.2.weight")?;
        let (b2, _) = tensor(&m, "t_embedder.mlp.2.bias")?;
        let (table, ts) = tensor(&m, "y_embedder.embedding_table.weight")?;
        let (images, hidden, freq) = (c_shape[0] as u32, c_shape[1] as u32, s0[1] as u32);
        // The fixture's t is model time; our kernel takes sampler time and a time scale.
        let t: Vec<f32> = t_model.iter().map(|v| v / 1000.0).collect();
        let up = |name: &str, v: &[f32]| gpu.upload(name, v).map_err(err);
        let scratch = |name: &str, n: u32| gpu.upload(name, &vec![0f32; n as usize]).map_err(err);
        let (tb, fb, h1, h2) = (
            up("t", &t)?,
            scratch("freq", images * freq)?,
            scratch("h1", images * hidden)?,
            scratch("h2", images * hidden)?,
        );
        let (w0b, b0b, w2b, b2b) = (up("w0", &w0)?, up("b0", &b0)?, up("w2", &w2)?, up("b2", &b2)?);
        let labels: Vec<u32> = y.iter().map(|&v| v as u32).collect();
        let (lb, tab, yb, cb) = (
            gpu.upload("labels", &labels).map_err(err)?,
            up("table", &table)?,
            scratch("yemb", images * hidden)?,
            scratch("c", images * hidden)?,
        );
        let fq = up("freqs", &timestep_freqs(freq, 10000.0))?;
        let temb = TimestepEmbed { images, dim: freq, max_period: 10000.0, time_scale: 1000.0, elem: Elem::F32 }
            .prepare(gpu, &[(&tb).into(), (&fq).into(), (&fb).into()])
            .map_err(err)?;
        let mlp0 = Gemv::new(MatmulShape::new(s0[0] as u32, images, freq), Elem::F32)
            .with_epilogue(Epilogue::bias_act(Activation::Silu))
            .prepare(gpu, &[(&fb).into(), (&w0b).into(), (&h1).into(), (&b0b).into()])
            .map_err(err)?;
        let mlp2 = Gemv::new(MatmulShape::new(s2[0] as u32, images, s2[1] as u32), Elem::F32)
            .with_epilogue(Epilogue::bias_act(Activation::None))
            .prepare(gpu, &[(&h1).into(), (&w2b).into(), (&h2).into(), (&b2b).into()])
            .map_err(err)?;
        let yemb = ClassEmbed { images, dim: hidden, classes: ts[0] as u32 - 1, elem: Elem::F32 }
            .prepare(gpu, &[(&lb).into(), (&tab).into(), (&yb).into()])
            .map_err(err)?;
        let add = Elementwise::new(EltOp::Add, images * hidden, Elem::F32)
            .prepare(gpu, &[(&h2).into(), (&yb).into(), (&cb).into()])
            .map_err(err)?;
        gpu.run(&[&temb, &mlp0, &mlp2, &yemb, &add]).map_err(err)?;
        let c: Vec<f32> = gpu.read(&cb).map_err(err)?;
        let scale = vec![1.0f32; c.len()];
        compare(&format!("{fixture}: conditioning c vs the original DiT"), &c, &c_ref, &scale, 1e-4, 1e-4)?;

        let (pos_ref, pos_shape) = tensor(&m, "pos_embed")?;
        let grid = (pos_shape[1] as f64).sqrt() as u32;
        let pos = pos_embed_2d(pos_shape[2] as u32, grid, grid).map_err(err)?;
        compare(
            &format!("{fixture}: pos_embed_2d vs the checkpoint"),
            &pos,
            &pos_ref,
            &vec![1.0; pos.len()],
            1e-6,
            1e-6,
        )?;
    }
    Ok(())
}
