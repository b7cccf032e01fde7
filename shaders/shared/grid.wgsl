// The builtins of a kernel whose workgroups cover a flat range (rows or elements) laid out on a
// 2D grid, so that ranges past 65535 workgroups fit; with SUBGROUPS the subgroup builtins too.
// Entry points take `g: Grid` instead of listing them and ask `workgroup_index(g)` for their place.
struct Grid {
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#ifdef SUBGROUPS
    @builtin(subgroup_id) sg_id: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(num_subgroups) n_sg: u32,
#endif
}

// The workgroup's index in the flattened grid (row-major over x, then y).
fn workgroup_index(g: Grid) -> u32 {
    return g.wid.y * g.nwg.x + g.wid.x;
}
