// Class-embedding lookup (DiT's LabelEmbedder): rows of the table (classes + 1 null class, dim)
// for each label; classifier-free guidance doubles the batch with the null class. A label past
// the table reads the null class rather than out-of-bounds memory.
// COUNT_WORK counts its loads and stores (shared/work_count.wgsl) for the test of `work()`.
#import elem
#import work_count

// Keep in sync with `ClassEmbedParams` in src/kernels/embed.rs.
struct ClassEmbedParams {
    images: u32,
    dim: u32,
    // Rows of the table: classes + 1 (the last is the null class).
    rows: u32,
    _pad: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: ClassEmbedParams;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<elem>;
@group(0) @binding(3) var<storage, read_write> emb: array<elem>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let b = gid.y;
    if j >= p.dim || b >= p.images {
        return;
    }
    let row = min(labels[b], p.rows - 1u);
    emb[b * p.dim + j] = table[row * p.dim + j];
    count_dram_read(4u + ELEM_BYTES);
    count_dram_write(ELEM_BYTES);
    count_flush();
}
