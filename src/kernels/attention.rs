//! Fused multi-head attention (attention.wgsl): dense, block-sparse from a list of key tiles per
//! query block, and 2D neighbourhood attention (NATTEN windows) that visits only the tiles a block's
//! windows reach. Each in f32 arithmetic or, with [`Attention::int8`], SageAttention-style int8
//! (Q K^T and P V as `dot4I8Packed` with i32 sums; twin `cpu::attention::attention_i8`).

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build};
use crate::kernels::Elem;
use crate::kernels::work_count::{COUNT_WORK, Counting, counters_binding, counting};
use crate::shaders::{self, Variant};

/// Queries per workgroup. Keep in sync with attention.wgsl's WG.
pub const QUERY_BLOCK: u32 = 64;
/// Keys per staged tile. Keep in sync with attention.wgsl's BK.
pub const KEY_TILE: u32 = 16;
/// Largest head dimension the kernel's registers and tiles hold.
pub const MAX_HEAD_DIM: u32 = 128;

/// Parameter block of attention.wgsl. Keep in sync with `AttentionParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttentionParams {
    /// Tokens per image.
    pub tokens: u32,
    /// Heads.
    pub heads: u32,
    /// Head dimension.
    pub head_dim: u32,
    /// Softmax scale, 1 / sqrt(head_dim).
    pub scale: f32,
    /// Token grid rows (neighbourhood).
    pub grid_h: u32,
    /// Token grid columns (neighbourhood).
    pub grid_w: u32,
    /// Window size k (odd).
    pub window: u32,
    /// Padding.
    pub _pad: u32,
}

/// Which keys each query attends to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sparsity {
    /// All keys.
    Dense,
    /// The k x k window around the query on a `grid_h x grid_w` token grid (row-major tokens),
    /// shifted inward at the borders. Buffer `blocks` from [`neighbourhood_blocks`].
    Neighbourhood {
        /// Grid rows.
        grid_h: u32,
        /// Grid columns.
        grid_w: u32,
        /// Window size k (odd, at most the grid).
        window: u32,
    },
    /// Every key of the listed key tiles. Buffer `blocks` from [`block_list`].
    Blocks,
}

/// Fused attention over `images` x `tokens` tokens. Buffers: `qkv` (images, tokens, 3, heads,
/// head_dim; with [`Attention::qkv_i8`] int8, four per u32, then `qkv_scales`: images, tokens, 3,
/// heads), `blocks` (sparse variants), `out` (images, tokens, heads, head_dim), or with
/// [`Attention::emit_i8`] `out_q` (the same as int8, four per u32) and `out_scales` (images,
/// tokens, heads; f32).
#[derive(Clone, Debug)]
pub struct Attention {
    /// Images.
    pub images: u32,
    /// Tokens per image.
    pub tokens: u32,
    /// Heads.
    pub heads: u32,
    /// Head dimension (a multiple of 4, at most 128: 32, 64, 72 and 128 are the DiT sizes).
    pub head_dim: u32,
    /// Which keys each query sees.
    pub sparsity: Sparsity,
    /// Element type of qkv and out (arithmetic in f32).
    pub elem: Elem,
    /// For the work count of [`Sparsity::Blocks`] without `block_tiles`: key tiles visited,
    /// summed over query blocks (counted as full tiles). `None` means all. Dense attention visits
    /// every tile and neighbourhood attention the tiles of [`neighbourhood_tiles`], whatever this
    /// says.
    pub visited_tiles: Option<u64>,
    /// For the work count of [`Sparsity::Blocks`]: the key tiles of each query block, as the
    /// `blocks` buffer lists them (the argument of [`block_list`]). Makes the count exact.
    pub block_tiles: Option<Vec<Vec<u32>>>,
    /// Int8 arithmetic (the I8 variant): queries quantized per row, keys per key after centring on
    /// their tile's mean key (added back in f32), values per channel and tile, softmax weights as
    /// round(127 w); both products as `dot4I8Packed`. Needs [`Capabilities::packed_dot4`].
    pub int8: bool,
    /// Write the output as int8 with a scale per (token, head) (absmax of the head's row, as
    /// [`crate::kernels::ActQuant`] quantizes a row), the input of a [`crate::kernels::QGemm`]
    /// with activation groups of `head_dim` ([`crate::kernels::QGemm::x_group`]): the projection
    /// reads it directly, with no float output and no quantizer between them.
    pub emit_i8: bool,
    /// Read Q, K and V as int8 with a scale per (token, part, head) (the qkv GEMM's int8 output,
    /// [`crate::kernels::QGemm::y_group`] = `head_dim`), dequantized as they are loaded.
    pub qkv_i8: bool,
}

impl Attention {
    /// Dense attention.
    pub fn dense(images: u32, tokens: u32, heads: u32, head_dim: u32, elem: Elem) -> Self {
        Self {
            images,
            tokens,
            heads,
            head_dim,
            sparsity: Sparsity::Dense,
            elem,
            visited_tiles: None,
            block_tiles: None,
            int8: false,
            emit_i8: false,
            qkv_i8: false,
        }
    }

    /// Block-sparse attention over the key tiles `per_query_block` lists (the `blocks` buffer is
    /// [`block_list`] of the same lists).
    pub fn block_sparse(
        images: u32,
        tokens: u32,
        heads: u32,
        head_dim: u32,
        elem: Elem,
        per_query_block: &[Vec<u32>],
    ) -> Self {
        Self {
            sparsity: Sparsity::Blocks,
            visited_tiles: Some(per_query_block.iter().map(|t| t.len() as u64).sum()),
            block_tiles: Some(per_query_block.to_vec()),
            ..Self::dense(images, tokens, heads, head_dim, elem)
        }
    }

    /// The work-counting debug variant of this attention.
    pub fn counting(self) -> Counting<Self> {
        Counting(self)
    }

    fn key(&self, count: bool) -> PipelineKey {
        let defines = self.elem.define().into_iter().chain(count.then_some(COUNT_WORK));
        let defines = defines
            .chain(self.int8.then_some("I8"))
            .chain(self.emit_i8.then_some("EMIT_I8"))
            .chain(self.qkv_i8.then_some("QKV_I8"));
        let defines = defines.chain(match self.sparsity {
            Sparsity::Dense => vec![],
            Sparsity::Neighbourhood { .. } => vec!["BLOCK_LIST", "NEIGHBOURHOOD"],
            Sparsity::Blocks => vec!["BLOCK_LIST"],
        });
        PipelineKey::new(
            Variant::new(&shaders::ATTENTION, defines),
            &[("WG", f64::from(QUERY_BLOCK)), ("D", f64::from(self.head_dim))],
        )
    }

    /// Query blocks per image.
    pub fn query_blocks(&self) -> u32 {
        self.tokens.div_ceil(QUERY_BLOCK)
    }

    /// Key tiles per image.
    pub fn key_tiles(&self) -> u32 {
        self.tokens.div_ceil(KEY_TILE)
    }

    /// What the workgroups of one (image, head) visit, for the work count.
    fn visits(&self) -> Visits {
        let (tokens, bk, q) = (self.tokens, KEY_TILE, u64::from(QUERY_BLOCK));
        // Keys of tile t inside the token range (the rest are staged as zeros).
        let keys = |t: u32| u64::from(tokens.saturating_sub(t.saturating_mul(bk)).min(bk));
        let from_lists = |lists: &[Vec<u32>], processed: &dyn Fn(u32, &[u32]) -> u64| {
            let mut v = Visits::default();
            for (qb, tiles) in (0u32..).zip(lists) {
                v.tiles += tiles.len() as u64;
                v.keys += tiles.iter().map(|&t| keys(t)).sum::<u64>();
                v.processed += processed(qb, tiles);
            }
            v
        };
        // Dense and block lists: every query of the block processes every tile holding a key.
        let all_queries = |_: u32, tiles: &[u32]| q * tiles.iter().filter(|&&t| keys(t) > 0).count() as u64;
        match (&self.sparsity, &self.block_tiles, self.visited_tiles) {
            (Sparsity::Neighbourhood { grid_h, grid_w, window }, _, _) => {
                let (gh, gw, w) = (*grid_h, *grid_w, *window);
                let lists = neighbourhood_tiles(tokens, gh, gw, w);
                // A query processes the tiles its own window reaches; the block's padding
                // invocations are the last token's query.
                from_lists(&lists, &|qb, tiles| {
                    (qb * QUERY_BLOCK..(qb + 1) * QUERY_BLOCK)
                        .map(|query| {
                            let qt = query.min(tokens - 1);
                            let (r0, c0) = (window_start(qt / gw, gh, w), window_start(qt % gw, gw, w));
                            let reached: std::collections::BTreeSet<u32> =
                                (r0..r0 + w).flat_map(|r| (r * gw + c0) / bk..=(r * gw + c0 + w - 1) / bk).collect();
                            tiles.iter().filter(|t| reached.contains(t)).count() as u64
                        })
                        .sum()
                })
            }
            (Sparsity::Blocks, Some(lists), _) => from_lists(lists, &all_queries),
            (Sparsity::Blocks, None, Some(tiles)) => {
                Visits { tiles, keys: tiles * u64::from(bk), processed: tiles * q }
            }
            _ => {
                let all: Vec<u32> = (0..self.key_tiles()).collect();
                from_lists(&vec![all; self.query_blocks() as usize], &all_queries)
            }
        }
    }
}

/// Key tiles the workgroups of one (image, head) visit, summed over query blocks.
#[derive(Clone, Copy, Debug, Default)]
struct Visits {
    /// Tiles staged.
    tiles: u64,
    /// Keys among them inside the token range (loaded from memory).
    keys: u64,
    /// (query, tile) pairs past the all-masked test: softmax update and value accumulation.
    processed: u64,
}

/// A block list for the `blocks` buffer: `n + 1` offsets (n query blocks) then the key-tile
/// indices of each query block.
pub fn block_list(per_query_block: &[Vec<u32>]) -> Vec<u32> {
    let n = per_query_block.len();
    let mut out = Vec::with_capacity(n + 1 + per_query_block.iter().map(Vec::len).sum::<usize>());
    let mut acc = 0u32;
    out.push(0);
    for tiles in per_query_block {
        acc += tiles.len() as u32;
        out.push(acc);
    }
    for tiles in per_query_block {
        out.extend_from_slice(tiles);
    }
    out
}

/// NATTEN window start along an axis of length `n` for position `i`.
pub fn window_start(i: u32, n: u32, window: u32) -> u32 {
    let half = window / 2;
    i.max(half).saturating_sub(half).min(n - window)
}

/// The key tiles each query block of a neighbourhood attention can reach: the union of its
/// queries' windows, as tile indices in increasing order.
pub fn neighbourhood_tiles(tokens: u32, grid_h: u32, grid_w: u32, window: u32) -> Vec<Vec<u32>> {
    let blocks = tokens.div_ceil(QUERY_BLOCK);
    (0..blocks)
        .map(|qb| {
            let mut tiles = std::collections::BTreeSet::new();
            for q in qb * QUERY_BLOCK..((qb + 1) * QUERY_BLOCK).min(tokens) {
                let (r0, c0) = (window_start(q / grid_w, grid_h, window), window_start(q % grid_w, grid_w, window));
                for r in r0..r0 + window {
                    tiles.insert((r * grid_w + c0) / KEY_TILE);
                    tiles.insert((r * grid_w + c0 + window - 1) / KEY_TILE);
                    // Tiles strictly between the window row's first and last key.
                    for t in (r * grid_w + c0) / KEY_TILE..=(r * grid_w + c0 + window - 1) / KEY_TILE {
                        tiles.insert(t);
                    }
                }
            }
            tiles.into_iter().collect()
        })
        .collect()
}

/// [`block_list`] of [`neighbourhood_tiles`].
pub fn neighbourhood_blocks(tokens: u32, grid_h: u32, grid_w: u32, window: u32) -> Vec<u32> {
    block_list(&neighbourhood_tiles(tokens, grid_h, grid_w, window))
}

impl Kernel for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        let name = self.name();
        if self.images == 0 || self.tokens == 0 || self.heads == 0 {
            return Err(Error::Shape { kernel: name, message: "zero images, tokens or heads".into() });
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(4) || self.head_dim > MAX_HEAD_DIM {
            return Err(Error::Shape {
                kernel: name,
                message: format!("head dim {} is not a multiple of 4 up to {MAX_HEAD_DIM}", self.head_dim),
            });
        }
        if let Sparsity::Neighbourhood { grid_h, grid_w, window } = self.sparsity
            && (grid_h * grid_w != self.tokens || window.is_multiple_of(2) || window > grid_h || window > grid_w)
        {
            return Err(Error::Shape {
                kernel: name,
                message: format!("window {window} on a {grid_h} x {grid_w} grid of {} tokens", self.tokens),
            });
        }
        self.elem.check(name, caps)?;
        if self.int8 && !caps.packed_dot4 {
            return Err(Error::Unsupported { kernel: name, needs: "packed int8 dot products (dot4I8Packed)" });
        }
        let per_image = u64::from(self.tokens) * u64::from(self.heads) * u64::from(self.head_dim);
        let n = u64::from(self.images) * per_image;
        let mut reqs = if self.qkv_i8 {
            vec![BufferReq::input("qkv", 3 * n), BufferReq::input("qkv_scales", 3 * n / u64::from(self.head_dim) * 4)]
        } else {
            vec![BufferReq::input("qkv", self.elem.bytes(3 * n))]
        };
        if self.sparsity != Sparsity::Dense {
            reqs.push(BufferReq::input("blocks", (u64::from(self.query_blocks()) + 2) * 4));
        }
        if self.emit_i8 {
            reqs.push(BufferReq::output("out_q", n));
            reqs.push(BufferReq::output("out_scales", n / u64::from(self.head_dim) * 4));
        } else {
            reqs.push(BufferReq::output("out", self.elem.bytes(n)));
        }
        Ok(reqs)
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let (b, h, d) = (u64::from(self.images), u64::from(self.heads), u64::from(self.head_dim));
        let (q, bk, tokens) = (u64::from(QUERY_BLOCK), u64::from(KEY_TILE), u64::from(self.tokens));
        let qbs = u64::from(self.query_blocks());
        let Visits { tiles, keys, processed } = self.visits();
        let eb = self.elem.size();
        // Per (image, head); exp counts 2 multiplies + 1 add, a divide 1 multiply.
        // Every invocation (the block's padding too) loads and scales its query: d multiplies.
        // Per staged tile and query, 16 scores: d multiply-adds each. Per processed (query, tile):
        // the rescale (m - m_new, exp, l *= c, o *= c: d + 3 multiplies, 2 adds), and per key
        // s - m_new, exp, l += w and d multiply-adds into o: d + 2 multiplies, d + 3 adds.
        // Per query stored: 1 / l and d multiplies.
        let scores = tiles * q * bk * d;
        let mut per_head = Work {
            f32_mul: qbs * q * d + scores + processed * (d + 3) + processed * bk * (d + 2) + tokens * (d + 1),
            f32_add: scores + processed * 2 + processed * bk * (d + 3),
            // Queries (padding included), the keys and values of the staged tiles inside the
            // token range, and the block list: every invocation reads its block's two offsets and
            // each tile index.
            dram_read: qbs * q * d * eb
                + keys * 2 * d * eb
                + if self.sparsity == Sparsity::Dense { 0 } else { q * (2 * qbs + tiles) * 4 },
            dram_write: tokens * d * eb,
            // Staged keys and values are f32, padding included; scores read every staged key,
            // processed pairs every staged value.
            sram_write: tiles * bk * 2 * d * 4,
            sram_read: scores * 4 + processed * bk * d * 4,
            ..Work::default()
        };
        if self.int8 {
            // Loads, stores of the output and staging as above; the arithmetic and the tiles'
            // reads are the int8 kernel's. quantize4 is 4 multiplies, 4 adds (round) and 12 bit
            // operations per word, an unpack 12 bit operations, act_scale one multiply.
            let (queries, pairs) = (qbs * q, tiles * q);
            per_head.f32_mul = queries * (2 * d + 1)
                // Per tile: the mean key (a divide per dim); per value channel a scale and 16
                // codes; per key a scale and d codes.
                + tiles * (d + 17 * d + bk * (1 + d))
                // Per (query, tile): q . mean, its scale, and two multiplies per score.
                + pairs * (d + 1 + 2 * bk)
                // Per processed pair: the rescale, exp and the code of each weight, the fma per dim.
                + processed * (d + 3 + 3 * bk + d)
                + tokens * (d + 1);
            per_head.f32_add = queries * d
                + keys * d
                + tiles * (16 * d + 3 * bk * d)
                + pairs * (d + bk)
                + processed * (2 + 3 * bk + 1 + d);
            // Scores d per key; per processed pair the weights' sum and d channels of 16 keys.
            per_head.i8_mul = pairs * bk * d + processed * (bk + bk * d);
            per_head.i32_add = per_head.i8_mul;
            per_head.bit_ops = queries * 3 * d + tiles * (48 * d + 3 * bk * d) + pairs * 3 * d + processed * 3 * bk;
            per_head.sram_write += tiles * (4 * d + 20 * d + bk * (d + 4));
            per_head.sram_read =
                keys * d * 4 + tiles * (bk * 4 * d + bk * 16 * d) + pairs * (4 * d + bk * (d + 4)) + processed * 20 * d;
        }
        if self.qkv_i8 {
            // Q, K, V as int8 words and a scale per row: per query (padding included) and per
            // key and value row in range, the scale and d / 4 words loaded, each word unpacked (12
            // bit operations) and scaled (4 multiplies), instead of d elements.
            let rows = qbs * q + 2 * keys;
            per_head.dram_read = per_head.dram_read - rows * d * eb + rows * (d + 4);
            per_head.bit_ops += rows * 3 * d;
            per_head.f32_mul += rows * d;
        }
        if self.emit_i8 {
            // Per query stored: 1 / l, d multiplies, then the row's scale (a divide) and d / 4
            // quantize4; d int8 and a scale written instead of d elements.
            per_head.f32_mul += tokens * (d + 1);
            per_head.f32_add += tokens * d;
            per_head.bit_ops += tokens * 3 * d;
            per_head.dram_write = tokens * (d + 4);
        }
        Ok(per_head * (b * h))
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let count = counting(reqs);
        let caps = gpu.capabilities();
        // The output (int8 words and scales with `emit_i8`) is the kernel's last; the counters
        // follow it.
        let outputs = if self.emit_i8 { 2 } else { 1 };
        let out_index = buffers.len() - outputs - usize::from(count);
        let (grid_h, grid_w, window) = match self.sparsity {
            Sparsity::Neighbourhood { grid_h, grid_w, window } => (grid_h, grid_w, window),
            _ => (1, self.tokens, 1),
        };
        let params = AttentionParams {
            tokens: self.tokens,
            heads: self.heads,
            head_dim: self.head_dim,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
            grid_h,
            grid_w,
            window,
            _pad: 0,
        };
        let mut storage = vec![(1, buffers[0], reqs[0].size)];
        if self.qkv_i8 {
            storage.push((5, buffers[1], reqs[1].size));
        }
        if self.sparsity != Sparsity::Dense {
            // The list's length is data: bind the whole buffer from its offset.
            let b = buffers[1 + usize::from(self.qkv_i8)];
            storage.push((2, b, b.buffer.size() - b.offset));
        }
        for (i, binding) in (out_index..out_index + outputs).zip(3u32..) {
            storage.push((binding, buffers[i], reqs[i].size));
        }
        storage.extend(counters_binding(buffers, count));
        if self.images > caps.max_workgroups_per_dim || self.heads > caps.max_workgroups_per_dim {
            return Err(Error::Shape {
                kernel: self.name(),
                message: "too many images or heads for one dispatch".into(),
            });
        }
        let spec = DispatchSpec {
            params,
            storage,
            views: Vec::new(),
            workgroups: [self.query_blocks(), self.heads, self.images],
        };
        build(gpu, self.name(), &self.key(count), vec![spec], self.work(caps)?)
    }
}

/// The deliberately naive three-dispatch attention (scores to memory, softmax, values): a
/// benchmark reference for [`Attention`] only. f32. Buffers: `qkv`, `scores` (images x heads x
/// tokens^2 f32), `out`.
#[derive(Clone, Debug)]
pub struct AttentionNaive {
    /// Images.
    pub images: u32,
    /// Tokens.
    pub tokens: u32,
    /// Heads.
    pub heads: u32,
    /// Head dimension.
    pub head_dim: u32,
}

impl Kernel for AttentionNaive {
    fn name(&self) -> &'static str {
        "attention_naive"
    }

    fn requirements(&self, _caps: &Capabilities) -> Result<Vec<BufferReq>> {
        if self.images == 0 || self.tokens == 0 || self.heads == 0 || self.head_dim == 0 {
            return Err(Error::Shape { kernel: self.name(), message: "empty attention".into() });
        }
        let (b, t, h, d) =
            (u64::from(self.images), u64::from(self.tokens), u64::from(self.heads), u64::from(self.head_dim));
        Ok(vec![
            BufferReq::input("qkv", 3 * b * t * h * d * 4),
            BufferReq::output("scores", b * h * t * t * 4),
            BufferReq::output("out", b * t * h * d * 4),
        ])
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let (b, t, h, d) =
            (u64::from(self.images), u64::from(self.tokens), u64::from(self.heads), u64::from(self.head_dim));
        let pairs = b * h * t * t;
        Ok(Work {
            f32_mul: pairs * (2 * d + 2),
            f32_add: pairs * (2 * d + 3),
            dram_read: pairs * (2 * d * 4 + 3 * 4 + d * 4 * 2),
            dram_write: pairs * 4 * 2 + b * t * h * d * 4,
            ..Work::default()
        })
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        let params = AttentionParams {
            tokens: self.tokens,
            heads: self.heads,
            head_dim: self.head_dim,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
            grid_h: 1,
            grid_w: self.tokens,
            window: 1,
            _pad: 0,
        };
        let bh = self.images * self.heads;
        let t = self.tokens;
        let grids = [[t.div_ceil(64), t, bh], [t.div_ceil(64), 1, bh], [self.head_dim.div_ceil(64), t, bh]];
        // Three pipelines of one shader (the STAGE override), one dispatch each, in order.
        let mut prepared: Option<Prepared> = None;
        for (stage, grid) in grids.into_iter().enumerate() {
            let key = PipelineKey::new(Variant::new(&shaders::ATTENTION_NAIVE, []), &[("STAGE", stage as f64)]);
            let spec =
                DispatchSpec::sequential(params, buffers.iter().zip(reqs).map(|(b, r)| (*b, r.size)).collect(), grid);
            let part =
                build(gpu, self.name(), &key, vec![spec], if stage == 0 { self.work(caps)? } else { Work::default() })?;
            prepared = Some(match prepared {
                None => part,
                Some(mut p) => {
                    p.append(part);
                    p
                }
            });
        }
        prepared.ok_or_else(|| Error::Shape { kernel: self.name(), message: "no stages".into() })
    }
}
