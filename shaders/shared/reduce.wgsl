// Workgroup sums of up to MAX_ACC partial values per invocation, for GEMV-like kernels.
// With SUBGROUPS: a subgroupAdd per value, then one slot per subgroup in workgroup memory; correct
// for any subgroup size from 4 to 128 because the slots are indexed by the `subgroup_id` builtin and
// summed over `num_subgroups`. Without: a tree reduction in workgroup memory (WG a power of two).
// A kernel importing this declares `override WG: u32`, takes a `Grid` and calls `reduce_sums`
// then `reduced`.
// With COUNT_WORK (the importer then imports work_count) the reduction counts its work.
#import grid

const MAX_ACC: u32 = 32u;

#ifdef SUBGROUPS
// At most 256 invocations and subgroups of at least 4: 64 subgroups.
const MAX_SUBGROUPS: u32 = 64u;
var<workgroup> red: array<f32, 2048>; // MAX_ACC * MAX_SUBGROUPS

// Every invocation calls this with its `count` partial values.
fn reduce_sums(acc: ptr<function, array<f32, MAX_ACC>>, count: u32, g: Grid) {
    for (var i = 0u; i < count; i++) {
        let s = subgroupAdd((*acc)[i]);
#ifdef COUNT_WORK
        // A sum of S values is S - 1 adds: one for every lane but the first.
        count_f32_add(select(1u, 0u, g.sg_lane == 0u));
#endif
        if g.sg_lane == 0u {
            red[i * MAX_SUBGROUPS + g.sg_id] = s;
#ifdef COUNT_WORK
            count_sram_write(4u);
#endif
        }
    }
    workgroupBarrier();
    // Invocation i < count gathers value i into red[i * MAX_SUBGROUPS].
    if g.li < count {
        var t = 0.0;
        for (var s = 0u; s < g.n_sg; s++) {
            t += red[g.li * MAX_SUBGROUPS + s];
#ifdef COUNT_WORK
            count_f32_add(1u);
            count_sram_read(4u);
#endif
        }
        red[g.li * MAX_SUBGROUPS] = t;
#ifdef COUNT_WORK
        count_sram_write(4u);
#endif
    }
    workgroupBarrier();
}

fn reduced(i: u32) -> f32 {
#ifdef COUNT_WORK
    count_sram_read(4u);
#endif
    return red[i * MAX_SUBGROUPS];
}
#else
// count * WG <= 4096 (16 KiB): the host picks WG accordingly.
var<workgroup> red: array<f32, 4096>;

fn reduce_sums(acc: ptr<function, array<f32, MAX_ACC>>, count: u32, g: Grid) {
    for (var i = 0u; i < count; i++) {
        red[i * WG + g.li] = (*acc)[i];
#ifdef COUNT_WORK
        count_sram_write(4u);
#endif
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if g.li < s {
            for (var i = 0u; i < count; i++) {
                red[i * WG + g.li] += red[i * WG + g.li + s];
#ifdef COUNT_WORK
                count_f32_add(1u);
                count_sram_read(8u);
                count_sram_write(4u);
#endif
            }
        }
        workgroupBarrier();
    }
}

fn reduced(i: u32) -> f32 {
#ifdef COUNT_WORK
    count_sram_read(4u);
#endif
    return red[i * WG];
}
#endif
