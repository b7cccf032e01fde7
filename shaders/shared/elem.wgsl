// Element type of a kernel's storage: f32, or f16 with the F16 define (needs SHADER_F16).
// f16 is a storage format here: values are widened to f32 and all arithmetic is f32, so f16 halves
// the bytes without changing the math (the CPU twins, src/cpu/mod.rs, follow the same rule).
// Widening is one cheap conversion per element, and dense f16 matmul is memory-bound on GPUs.
// Must be the first import of a shader: `enable` has to precede every declaration.
#ifdef F16
enable f16;
alias elem = f16;
alias elem4 = vec4<f16>;
#else
alias elem = f32;
alias elem4 = vec4<f32>;
#endif

// acc + a * b, in f32.
fn mul_acc4(acc: vec4<f32>, a: elem, b: elem4) -> vec4<f32> {
    return fma(vec4<f32>(b), vec4<f32>(f32(a)), acc);
}

// acc + dot(a, b), in f32.
fn dot_acc(acc: f32, a: elem4, b: elem4) -> f32 {
    return acc + dot(vec4<f32>(a), vec4<f32>(b));
}
