// Parameters of the low-bit matmul kernels: Y[n, m_offset + m] = sum_k X[n, k] * dequant(W)[m, k].
// Weight streams are bound from the first row of this dispatch (weights split along M).
// Keep in sync with `QMatmulParams` in src/kernels/qmatmul.rs.
struct QMatmulParams {
    m: u32,
    n: u32,
    k: u32,
    m_offset: u32,
    // Row stride of Y in elements.
    ldy: u32,
    // ceil(K / 16): 16-weight steps per row.
    steps: u32,
    // u32 words per row of the packed weights, their scales, and the auxiliary stream.
    w_row_words: u32,
    s_row_words: u32,
    a_row_words: u32,
    // u32 words per row of int8 activations (ceil(K / 16) * 4).
    x_row_words: u32,
    // Weights per scale group (int4), else 0.
    group: u32,
    // Rows of Y that share one gate row (GATED epilogue), else 0.
    gate_rows: u32,
    // Words of K per activation scale (X_GROUPED: a scale per row and group), else 0.
    x_group_words: u32,
    // Columns of Y per output scale (Y_I8: int8 output, a scale per row and group), else 0.
    y_group: u32,
    _pad1: u32,
    _pad2: u32,
}
