// Parameters of every matmul kernel: Y[n, m_offset + m] = sum_k X[n, k] * W[m, k].
// X is N x K row-major, W is M x K row-major (bound from its first row of this dispatch, so large
// weights can be split along M over several bindings), Y is N x ldy row-major.
// Keep in sync with `MatmulParams` in src/kernels/matmul.rs.
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    // First output column of Y this dispatch writes.
    m_offset: u32,
    // Row stride of Y in elements (the full M when the weights are split).
    ldy: u32,
    // Rows of Y that share one gate row (GATED epilogue), else 0.
    gate_rows: u32,
    _pad1: u32,
    _pad2: u32,
}
