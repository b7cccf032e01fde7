// Epilogues of the matmuls, applied to each output value before it is stored:
//   v = act(v + bias[m]);  then  y = v, or residual + v, or residual + gate[g, m] * v
// BIAS adds a per-output-feature bias; ACT (override: 0 none, 1 GELU tanh form, 2 SiLU);
// RESIDUAL adds the residual tensor (same shape and stride as Y); GATED multiplies v by a gate row
// per group of `gate_rows` rows of Y (DiT's adaLN gate: one row per image, tokens share it).
// Bindings 7 (bias), 8 (residual), 9 (gate). The CPU twin is src/cpu/epilogue.rs.
// With COUNT_WORK (the importer then imports work_count) the epilogue counts its work.

override ACT: u32 = 0u;

#ifdef BIAS
@group(0) @binding(7) var<storage, read> bias: array<elem>;
#endif
#ifdef RESIDUAL
@group(0) @binding(8) var<storage, read> residual: array<elem>;
#endif
#ifdef GATED
@group(0) @binding(9) var<storage, read> gate: array<elem>;
#endif

// GELU, tanh approximation (as PyTorch's approximate="tanh" and DiT's MLP).
fn gelu_tanh(v: f32) -> f32 {
    let c = 0.7978845608028654; // sqrt(2 / pi)
#ifdef COUNT_WORK
    count_f32_mul(6u);
    count_f32_add(2u);
    count_tanh();
#endif
    return 0.5 * v * (1.0 + tanh(c * (v + 0.044715 * v * v * v)));
}

fn silu(v: f32) -> f32 {
#ifdef COUNT_WORK
    count_exp();
    count_f32_add(1u);
    count_div();
#endif
    return v / (1.0 + exp(-v));
}

// `n`, `m`: output row and column (m with the dispatch's offset); `at`: index into Y.
fn epilogue(v_in: f32, n: u32, m: u32, at: u32) -> f32 {
    var v = v_in;
#ifdef BIAS
    v += f32(bias[m]);
#ifdef COUNT_WORK
    count_dram_read(ELEM_BYTES);
    count_f32_add(1u);
#endif
#endif
    return epilogue_past_bias(v, n, m, at);
}

// The epilogue after the bias: for a kernel that loads a column's bias once for several rows and
// adds it itself.
fn epilogue_past_bias(v_in: f32, n: u32, m: u32, at: u32) -> f32 {
    var v = v_in;
    switch ACT {
        case 1u: {
            v = gelu_tanh(v);
        }
        case 2u: {
            v = silu(v);
        }
        default: {}
    }
#ifdef GATED
    v *= f32(gate[(n / p.gate_rows) * p.ldy + m]);
#ifdef COUNT_WORK
    count_dram_read(ELEM_BYTES);
    count_f32_mul(1u);
#endif
#endif
#ifdef RESIDUAL
    v += f32(residual[at]);
#ifdef COUNT_WORK
    count_dram_read(ELEM_BYTES);
    count_f32_add(1u);
#endif
#endif
    return v;
}
