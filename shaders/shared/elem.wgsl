// Element type of a kernel's storage: f32, or f16 with the F16 define (needs SHADER_F16).
// Arithmetic helpers keep the precision rules in one place: products are formed in the storage
// type, sums accumulate in f32. The CPU twins (src/cpu/mod.rs, `Element`) follow the same rules.
// Must be the first import of a shader: `enable` has to precede every declaration.
#ifdef F16
enable f16;
alias elem = f16;
alias elem4 = vec4<f16>;
#else
alias elem = f32;
alias elem4 = vec4<f32>;
#endif

// acc + a * b with the product rounded to the element type, the sum in f32.
fn mul_acc4(acc: vec4<f32>, a: elem, b: elem4) -> vec4<f32> {
    return acc + vec4<f32>(b * a);
}

// acc + dot(a, b), the dot product formed in the element type.
fn dot_acc(acc: f32, a: elem4, b: elem4) -> f32 {
    return acc + f32(dot(a, b));
}
