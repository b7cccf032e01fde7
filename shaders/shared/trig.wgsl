// cos and sin with the same operations on every backend and in the CPU twin (src/cpu/trig.rs):
// WGSL allows the builtins an absolute error of 2^-11, which would make images depend on the
// vendor. Explicit fma everywhere, so no compiler may fuse differently.

// a - 2 pi round(a / 2 pi), with 2 pi in three parts: the first two have 16 significant bits, so
// k * part is exact for |k| < 2^8 (|a| < 1600).
fn reduce_2pi(a: f32) -> f32 {
    let k = round(a * 0.15915494309189535);
    var r = fma(-k, 6.28125, a);
    r = fma(-k, 0.0019350051879882812, r);
    r = fma(-k, 3.0199159819e-07, r);
    return r;
}

// (cos a, sin a) for a in [-pi, pi]: quadrant reduction with a two-part pi/2, Taylor polynomials
// on [-pi/4, pi/4] (errors below 3e-8).
fn cos_sin(a: f32) -> vec2<f32> {
    let q = round(a * 0.6366197723675814);
    var r = fma(-q, 1.5707963705062866, a);
    r = fma(-q, -4.371139000186243e-8, r);
    let r2 = r * r;
    var sp = fma(r2, 1.0 / 362880.0, -1.0 / 5040.0);
    sp = fma(r2, sp, 1.0 / 120.0);
    sp = fma(r2, sp, -1.0 / 6.0);
    let sn = fma(r * r2, sp, r);
    var cp = fma(r2, 1.0 / 40320.0, -1.0 / 720.0);
    cp = fma(r2, cp, 1.0 / 24.0);
    cp = fma(r2, cp, -0.5);
    let cs = fma(r2, cp, 1.0);
    switch (i32(q) & 3) {
        case 0: {
            return vec2<f32>(cs, sn);
        }
        case 1: {
            return vec2<f32>(-sn, cs);
        }
        case 2: {
            return vec2<f32>(-cs, -sn);
        }
        default: {
            return vec2<f32>(sn, -cs);
        }
    }
}
