//! Twin of shaders/shared/trig.wgsl: cos and sin with the shader's exact operations.

/// Twin of `reduce_2pi`.
pub fn reduce_2pi(a: f32) -> f32 {
    let k = (a * 0.159_154_94).round_ties_even();
    let mut r = (-k).mul_add(6.28125, a);
    r = (-k).mul_add(0.001_935_005_2, r);
    (-k).mul_add(3.019_916e-7, r)
}

/// Twin of `cos_sin`: (cos a, sin a) for a in [-pi, pi].
pub fn cos_sin(a: f32) -> (f32, f32) {
    let q = (a * std::f32::consts::FRAC_2_PI).round_ties_even();
    let mut r = (-q).mul_add(1.570_796_4, a);
    r = (-q).mul_add(-4.371_139e-8, r);
    let r2 = r * r;
    let mut sp = r2.mul_add(1.0 / 362_880.0, -1.0 / 5040.0);
    sp = r2.mul_add(sp, 1.0 / 120.0);
    sp = r2.mul_add(sp, -1.0 / 6.0);
    let sn = (r * r2).mul_add(sp, r);
    let mut cp = r2.mul_add(1.0 / 40_320.0, -1.0 / 720.0);
    cp = r2.mul_add(cp, 1.0 / 24.0);
    cp = r2.mul_add(cp, -0.5);
    let cs = r2.mul_add(cp, 1.0);
    match (q as i32) & 3 {
        0 => (cs, sn),
        1 => (-sn, cs),
        2 => (-cs, -sn),
        _ => (sn, -cs),
    }
}
