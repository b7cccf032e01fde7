//! Twins of quantize_act.wgsl and the low-bit GEMVs (gemv_ternary, gemv_int8, gemv_int4,
//! gemv_ternary24, gemv_int4s24, gemv_f16s24 over shared/gemv_q.wgsl). They decode the
//! packed words exactly as the shaders do, so a layout mistake shows against `crate::quant`'s own
//! unpacker in the tests.

use super::{Element, dot4};
use crate::kernels::qmatmul::{QMatmulParams, STEP};
use crate::quant::Format;

/// Twin of `act_scale` (shared/act_quant.wgsl).
pub fn act_scale(absmax: f32) -> f32 {
    if absmax == 0.0 { 1.0 } else { absmax / 127.0 }
}

/// Twin of `quantize4`: four values to four int8 in one u32, value j in byte j.
pub fn quantize4(v: [f32; 4], scale: f32) -> u32 {
    let mut word = 0u32;
    for (j, x) in v.iter().enumerate() {
        let q = (x / scale).round_ties_even().clamp(-127.0, 127.0) as i8;
        word |= u32::from(q as u8) << (8 * j);
    }
    word
}

/// Twin of quantize_act.wgsl: rows of `x` (N x K) to `xq` (N x `x_row_words`) and `scales` (N).
pub fn quantize_act<E: Element>(n: usize, k: usize, x_row_words: usize, x: &[E], xq: &mut [u32], scales: &mut [f32]) {
    for row in 0..n {
        let load4 = |kk: usize| -> [f32; 4] {
            std::array::from_fn(|j| if kk + j < k { x[row * k + kk + j].to_f32() } else { 0.0 })
        };
        let absmax = (0..x_row_words).flat_map(|w| load4(4 * w)).fold(0f32, |m, v| m.max(v.abs()));
        let scale = act_scale(absmax);
        for w in 0..x_row_words {
            xq[row * x_row_words + w] = quantize4(load4(4 * w), scale);
        }
        scales[row] = scale;
    }
}

/// Int8 activations with a scale per row and group of `group` values of K (a multiple of 4 that
/// divides K): rows of `x` (N x K) to `xq` (N x K / 4 words) and `scales` (N x K / `group`), each
/// group quantized by its own absmax as `quantize_act` does a row. The twin of the attention's
/// int8 output (a group per head) and the input of the GEMM's grouped activation scales.
pub fn quantize_act_grouped<E: Element>(n: usize, k: usize, group: usize, x: &[E], xq: &mut [u32], scales: &mut [f32]) {
    let groups = k / group;
    for row in 0..n {
        for g in 0..groups {
            let at = row * k + g * group;
            let absmax = x[at..at + group].iter().fold(0f32, |m, v| m.max(v.to_f32().abs()));
            let scale = act_scale(absmax);
            for w in 0..group / 4 {
                let v = std::array::from_fn(|j| x[at + 4 * w + j].to_f32());
                xq[(at / 4) + w] = quantize4(v, scale);
            }
            scales[row * groups + g] = scale;
        }
    }
}

/// One step of a packed row as the shaders' `load_step` sees it: words, scale, zero point, and the
/// format's aux bits (2:4 positions).
#[derive(Clone, Copy, Debug)]
pub struct Step {
    words: [u32; 4],
    scale: f32,
    zero: f32,
    aux: u32,
}

impl Step {
    /// The step's scale (the int4 group scale; 1 for per-row formats).
    pub fn scale(&self) -> f32 {
        self.scale
    }
}

/// Twin of the shaders' `load_step`. `wa` is the aux stream (int4 zero points or 2:4 positions;
/// empty when the format has none), `ws` the scales (empty for F16Sparse24).
pub fn load_step(format: Format, p: &QMatmulParams, w: &[u32], ws: &[u32], wa: &[u32], row: usize, s: usize) -> Step {
    let wr = p.w_row_words as usize;
    let plain = |words: [u32; 4]| Step { words, scale: 1.0, zero: 0.0, aux: 0 };
    // Group scale of G-group g (two f16 per word).
    let group_scale = |g: usize| {
        let pair = ws[row * p.s_row_words as usize + g / 2];
        half::f16::from_bits((pair >> (16 * (g % 2))) as u16).to_f32()
    };
    // Position nibbles of the step's four groups: half s % 2 of aux word s / 2.
    let positions = || wa[row * p.a_row_words as usize + s / 2] >> (16 * (s % 2));
    match format {
        Format::Ternary2 => plain([w[row * wr + s], 0, 0, 0]),
        Format::Int8 => plain(std::array::from_fn(|q| w[row * wr + 4 * s + q])),
        Format::Int4 { .. } => {
            let g = (STEP as usize * s) / p.group as usize;
            let zero = if wa.is_empty() {
                8.0
            } else {
                ((wa[row * p.a_row_words as usize + g / 8] >> (4 * (g % 8))) & 0xF) as f32
            };
            Step { words: [w[row * wr + 2 * s], w[row * wr + 2 * s + 1], 0, 0], scale: group_scale(g), zero, aux: 0 }
        }
        Format::Ternary24 => {
            // Groups 4o..4o+3 of the 12 in vec2 s / 3, funnel-shifted to bits 0..19.
            let o = (s % 3) as u32;
            let (x, y) = (w[row * wr + 2 * (s / 3)], w[row * wr + 2 * (s / 3) + 1]);
            let base = if o == 2 { y } else { x };
            let sh = (0x000A_1400 >> (8 * o)) & 0xFF;
            plain([(base >> sh) | (y << (30 - sh)), 0, 0, 0])
        }
        Format::Int4Sparse24 { .. } => {
            let g = (STEP as usize * s) >> p.group.trailing_zeros();
            Step { words: [w[row * wr + s], 0, 0, 0], scale: group_scale(g), zero: 0.0, aux: positions() }
        }
        Format::F16Sparse24 => {
            Step { words: std::array::from_fn(|q| w[row * wr + 4 * s + q]), scale: 1.0, zero: 0.0, aux: positions() }
        }
    }
}

fn ternary_codes(st: &Step, q: usize) -> [u32; 4] {
    std::array::from_fn(|j| (st.words[0] >> (8 * q + 2 * j)) & 3)
}

fn int4_nibbles(st: &Step, q: usize) -> [u32; 4] {
    let word = st.words[q / 2] >> (16 * (q % 2));
    std::array::from_fn(|j| (word >> (4 * j)) & 0xF)
}

/// (3 - a) | (3 - b) << 2 of Ternary24 pair p in nibble p (nibble 6, state 24, is 0): the shifts
/// that bring activation bytes a and b to the top of a word. Keep in sync with
/// shaders/gemv_ternary24.wgsl.
pub const T24_SHIFTS: u32 = 0x0012_637B;

/// State of group q of a Ternary24 step.
fn ternary24_state(st: &Step, q: usize) -> u32 {
    (st.words[0] >> (5 * q)) & 31
}

/// A decoded 4-weight slice as the shaders' `DecF`: four levels (dense formats, shared/dense_slice),
/// or a 2:4 group as the masks and values of shared/sparse24_slice.wgsl.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DecF {
    /// Four levels, multiplied with `dot`.
    Dense([f32; 4]),
    /// `x[a] = x[2]` if `a2`, else `x[1]` if `a1`, else `x[0]`; `x[b] = x[1]` if `b1`, else `x[2]`
    /// if `b2`, else `x[3]`; product `x[a] va + x[b] vb`.
    Pair {
        /// Selects `x[1]` for a (unless `a2`).
        a1: bool,
        /// Selects `x[2]` for a.
        a2: bool,
        /// Selects `x[1]` for b.
        b1: bool,
        /// Selects `x[2]` for b (unless `b1`).
        b2: bool,
        /// Value at a.
        va: f32,
        /// Value at b.
        vb: f32,
    },
}

impl DecF {
    /// The four weights of the slice as dense levels.
    pub fn levels(&self) -> [f32; 4] {
        match *self {
            DecF::Dense(l) => l,
            DecF::Pair { a1, a2, b1, b2, va, vb } => {
                let a = if a2 { 2 } else { usize::from(a1) };
                let b = if b1 {
                    1
                } else if b2 {
                    2
                } else {
                    3
                };
                let mut l = [0.0; 4];
                l[a] += va;
                l[b] += vb;
                l
            }
        }
    }
}

/// Twin of `pair_f` (shared/sparse24_slice.wgsl): the slice of positions nibble n = a | b << 2.
fn pair_f(n: u32, va: f32, vb: f32) -> DecF {
    let b = n & 12;
    DecF::Pair { a1: n & 1 != 0, a2: n & 2 != 0, b1: b == 4, b2: b == 8, va, vb }
}

/// Twin of the shaders' `decode_f`: slice q of the step.
pub fn decode_slice_f(format: Format, st: &Step, q: usize) -> DecF {
    match format {
        Format::Ternary2 => DecF::Dense(ternary_codes(st, q).map(|c| (c & 1) as f32 - (c >> 1) as f32)),
        Format::Int8 => DecF::Dense(std::array::from_fn(|j| f32::from((st.words[q] >> (8 * j)) as u8 as i8))),
        Format::Int4 { .. } => DecF::Dense(int4_nibbles(st, q).map(|v| v as f32 - st.zero)),
        Format::Ternary24 => {
            let s = ternary24_state(st, q);
            let live = if s < 24 { 1.0 } else { 0.0 };
            DecF::Pair {
                a1: s >= 12,
                a2: s >= 20,
                b1: s < 4,
                b2: s & 20 == 4,
                va: live - 2.0 * (s & 1) as f32,
                vb: live - (s & 2) as f32,
            }
        }
        Format::Int4Sparse24 { .. } => {
            let v = st.words[0] >> (8 * q);
            pair_f(st.aux >> (4 * q), (v & 0xF) as f32 - 8.0, ((v >> 4) & 0xF) as f32 - 8.0)
        }
        Format::F16Sparse24 => {
            let word = st.words[q];
            let (va, vb) = (half::f16::from_bits(word as u16), half::f16::from_bits((word >> 16) as u16));
            pair_f(st.aux >> (4 * q), va.to_f32(), vb.to_f32())
        }
    }
}

/// Twin of `dot_f`: a slice times four activations.
pub fn dot_f(d: &DecF, x: [f32; 4]) -> f32 {
    match *d {
        DecF::Dense(l) => dot4(l, x),
        DecF::Pair { a1, a2, b1, b2, va, vb } => {
            let xa = if a2 {
                x[2]
            } else if a1 {
                x[1]
            } else {
                x[0]
            };
            let xb = if b1 {
                x[1]
            } else if b2 {
                x[2]
            } else {
                x[3]
            };
            xa.mul_add(va, xb * vb)
        }
    }
}

/// Twin of `decode_f` as dense levels: weights 4q..4q+3 of the step (the 2:4 pair expanded).
pub fn decode_f(format: Format, st: &Step, q: usize) -> [f32; 4] {
    decode_slice_f(format, st, q).levels()
}

/// A decoded 4-weight slice for int8 activations, as the shaders' `DecI`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DecI {
    /// Four int8 levels for `dot4I8Packed`.
    Packed(u32),
    /// 2:4 integer levels: activation bytes a and b brought to the top by shifts `sa = 24 - 8a`
    /// and `sb = 24 - 8b`, times `va` and `vb` in i32.
    Pair {
        /// 24 - 8a.
        sa: u32,
        /// 24 - 8b.
        sb: u32,
        /// Level at a.
        va: i32,
        /// Level at b.
        vb: i32,
    },
    /// F16Sparse24: the same two bytes times f16 values, in f32.
    PairF {
        /// 24 - 8a.
        sa: u32,
        /// 24 - 8b.
        sb: u32,
        /// Value at a.
        va: f32,
        /// Value at b.
        vb: f32,
    },
}

/// Twin of `decode_i8`: slice q of the step for int8 activations.
pub fn decode_slice_i8(format: Format, st: &Step, q: usize) -> DecI {
    let pair_shifts = |n: u32| (24 - ((n & 3) << 3), 24 - ((n & 12) << 1));
    match format {
        Format::Ternary2 => {
            let b = (st.words[0] >> (8 * q)) & 0xFF;
            let spread = (b & 0x3) | ((b & 0xC) << 6) | ((b & 0x30) << 12) | ((b & 0xC0) << 18);
            DecI::Packed((spread & 0x0101_0101) | (((spread >> 1) & 0x0101_0101) * 0xFF))
        }
        Format::Int8 => DecI::Packed(st.words[q]),
        Format::Int4 { .. } => DecI::Packed(
            int4_nibbles(st, q)
                .iter()
                .enumerate()
                .fold(0, |acc, (j, &v)| acc | (u32::from((v as i32 - st.zero as i32) as i8 as u8) << (8 * j))),
        ),
        Format::Ternary24 => {
            let s = ternary24_state(st, q);
            let n = (T24_SHIFTS >> (s & 28)) & 15;
            let live = i32::from(s < 24);
            DecI::Pair { sa: (n & 3) << 3, sb: (n & 12) << 1, va: live - 2 * (s & 1) as i32, vb: live - (s & 2) as i32 }
        }
        Format::Int4Sparse24 { .. } => {
            let v = st.words[0] >> (8 * q);
            let (sa, sb) = pair_shifts(st.aux >> (4 * q));
            DecI::Pair { sa, sb, va: (v & 0xF) as i32 - 8, vb: ((v >> 4) & 0xF) as i32 - 8 }
        }
        Format::F16Sparse24 => {
            let word = st.words[q];
            let (sa, sb) = pair_shifts(st.aux >> (4 * q));
            let (va, vb) = (half::f16::from_bits(word as u16), half::f16::from_bits((word >> 16) as u16));
            DecI::PairF { sa, sb, va: va.to_f32(), vb: vb.to_f32() }
        }
    }
}

/// Twin of `act_byte` (shared/sparse24_slice.wgsl): byte (24 - sh) / 8 of x, sign-extended.
fn act_byte(x: u32, sh: u32) -> i32 {
    ((x << sh) as i32) >> 24
}

/// What `dot_i8` returns: an i32 for integer weights, an f32 for F16Sparse24's f16 values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DotI {
    /// Exact integer product.
    Int(i32),
    /// f32 product.
    Float(f32),
}

impl DotI {
    /// The shader's `+` on two products of one format.
    fn add(self, o: DotI) -> DotI {
        match (self, o) {
            (DotI::Int(a), DotI::Int(b)) => DotI::Int(a + b),
            (a, b) => DotI::Float(a.to_f32() + b.to_f32()),
        }
    }

    /// `f32(d)`.
    pub fn to_f32(self) -> f32 {
        match self {
            DotI::Int(v) => v as f32,
            DotI::Float(v) => v,
        }
    }
}

/// Twin of `dot_i8`: a slice times four int8 activations (one packed word).
pub fn dot_i8(d: &DecI, x: u32) -> DotI {
    match *d {
        DecI::Packed(w) => DotI::Int(dot4_i8(w, x)),
        DecI::Pair { sa, sb, va, vb } => DotI::Int(act_byte(x, sa) * va + act_byte(x, sb) * vb),
        DecI::PairF { sa, sb, va, vb } => {
            DotI::Float((act_byte(x, sa) as f32).mul_add(va, act_byte(x, sb) as f32 * vb))
        }
    }
}

/// Twin of `decode_i8` as four packed int8 levels (the 2:4 pair expanded). F16Sparse24 values are
/// no integers: its kernel multiplies int8 activations with the f16 values ([`decode_slice_i8`]),
/// and this returns 0 for it.
pub fn decode_i8(format: Format, st: &Step, q: usize) -> u32 {
    match decode_slice_i8(format, st, q) {
        DecI::Packed(w) => w,
        DecI::Pair { sa, sb, va, vb } => {
            // Position a = (24 - sa) / 8; the two positions differ except in Ternary24's state 24,
            // whose values are 0.
            let byte = |sh: u32, v: i32| u32::from(v as i8 as u8) << (24 - sh);
            byte(sa, va) | byte(sb, vb)
        }
        DecI::PairF { .. } => 0,
    }
}

/// `dot4I8Packed`.
pub fn dot4_i8(a: u32, b: u32) -> i32 {
    (0..4).map(|j| i32::from((a >> (8 * j)) as u8 as i8) * i32::from((b >> (8 * j)) as u8 as i8)).sum()
}

/// Activations of the twin: floats (N x K) or int8 words (N x x_row_words) with per-row scales.
#[derive(Clone, Copy, Debug)]
pub enum ActIn<'a, E> {
    /// Float activations.
    Float(&'a [E]),
    /// Int8 activations and their scales.
    Int8(&'a [u32], &'a [f32]),
}

/// Twin of the low-bit GEMV with the shared-memory reduction: `wg` invocations take steps
/// i, i + wg, …; per step and column, the 16-weight product (four slice products, [`dot_f`] or
/// [`dot_i8`]) is scaled by the step scale and accumulated in f32; then a tree reduction, the row
/// scale and the activation scale. `wa` is the aux stream (zero points or 2:4 positions).
#[expect(clippy::too_many_arguments, reason = "mirrors the shader's bindings one to one")]
pub fn qgemv<E: Element>(
    format: Format,
    p: &QMatmulParams,
    wg: usize,
    x: ActIn<'_, E>,
    w: &[u32],
    ws: &[u32],
    wa: &[u32],
    y: &mut [E],
) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let row_scale = |row: usize| match format {
        Format::Ternary2 | Format::Int8 | Format::Ternary24 => f32::from_bits(ws[row]),
        Format::Int4 { .. } | Format::Int4Sparse24 { .. } | Format::F16Sparse24 => 1.0,
    };
    for row in 0..m {
        for c in 0..n {
            let mut partial = vec![0f32; wg];
            for (li, acc) in partial.iter_mut().enumerate() {
                for s in (li..p.steps as usize).step_by(wg) {
                    let st = load_step(format, p, w, ws, wa, row, s);
                    let d = match x {
                        ActIn::Float(xf) => (0..4)
                            .map(|q| {
                                let xv: [f32; 4] = std::array::from_fn(|j| {
                                    let kk = 16 * s + 4 * q + j;
                                    if kk < k { xf[c * k + kk].to_f32() } else { 0.0 }
                                });
                                dot_f(&decode_slice_f(format, &st, q), xv)
                            })
                            .fold(0.0, |a, b| a + b),
                        ActIn::Int8(xq, _) => {
                            // dot_i8(w0, x.x) + dot_i8(w1, x.y) + dot_i8(w2, x.z) + dot_i8(w3, x.w).
                            let xw = p.x_row_words as usize;
                            let d = |q: usize| dot_i8(&decode_slice_i8(format, &st, q), xq[c * xw + 4 * s + q]);
                            (1..4).fold(d(0), |a, q| a.add(d(q))).to_f32()
                        }
                    };
                    *acc = st.scale.mul_add(d, *acc);
                }
            }
            let mut s = wg / 2;
            while s > 0 {
                for li in 0..s {
                    partial[li] += partial[li + s];
                }
                s /= 2;
            }
            let xscale = match x {
                ActIn::Float(_) => 1.0,
                ActIn::Int8(_, scales) => scales[c],
            };
            y[c * p.ldy as usize + p.m_offset as usize + row] = E::from_f32(partial[0] * row_scale(row) * xscale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{TERNARY24_PAIRS, ternary24_levels};

    fn params(format: Format, k: u32) -> QMatmulParams {
        let (wr, sr, ar) = crate::kernels::qmatmul::row_words(format, k).unwrap();
        QMatmulParams {
            m: 1,
            n: 1,
            k,
            m_offset: 0,
            ldy: 1,
            steps: k.div_ceil(STEP),
            w_row_words: wr,
            s_row_words: sr,
            a_row_words: ar,
            x_row_words: crate::kernels::qmatmul::act_row_words(k),
            group: 0,
            gate_rows: 0,
            x_group_words: 0,
            y_group: 0,
            _pad: [0; 2],
        }
    }

    #[test]
    fn t24_shifts_follow_the_pairs() {
        for (p, &(a, b)) in TERNARY24_PAIRS.iter().enumerate() {
            let n = (T24_SHIFTS >> (4 * p)) & 15;
            assert_eq!(n, u32::from(3 - a) | u32::from(3 - b) << 2, "pair {p}");
        }
        assert_eq!(T24_SHIFTS >> 24, 0);
    }

    /// Every state in every group slot of every step phase decodes to `ternary24_levels`, as floats
    /// (dense expansion of the pair), as int8, and in the two products.
    #[test]
    fn ternary24_states_decode_in_every_slot() {
        let k = 96 * 4;
        let p = params(Format::Ternary24, k);
        let groups = (p.w_row_words * 6) as usize;
        for shift in 0..25 {
            let states: Vec<u32> = (0..groups).map(|g| ((g + shift) % 25) as u32).collect();
            let mut w = vec![0u32; p.w_row_words as usize];
            for (g, &st) in states.iter().enumerate() {
                w[g / 6] |= st << (5 * (g % 6));
            }
            for s in 0..p.steps as usize {
                let st = load_step(Format::Ternary24, &p, &w, &[], &[], 0, s);
                for q in 0..4 {
                    let lv = ternary24_levels(states[4 * s + q] as u8).unwrap().map(f32::from);
                    assert_eq!(decode_f(Format::Ternary24, &st, q), lv, "step {s} slice {q}");
                    let x = [3.0, -5.0, 7.0, 11.0];
                    assert_eq!(dot_f(&decode_slice_f(Format::Ternary24, &st, q), x), dot4(lv, x));
                    let xb = 0x0BF9_05FDu32; // bytes -3, 5, -7, 11
                    let xi = [-3, 5, -7, 11];
                    let want: i32 = (0..4).map(|j| lv[j] as i32 * xi[j]).sum();
                    assert_eq!(dot_i8(&decode_slice_i8(Format::Ternary24, &st, q), xb), DotI::Int(want));
                }
            }
        }
    }

    /// The positions nibble of the 2:4 int4 and f16 formats picks x[a] and x[b] for every a < b.
    #[test]
    fn pair_nibbles_pick_their_positions() {
        for a in 0..3u32 {
            for b in a + 1..4 {
                let d = pair_f(a | b << 2, 2.0, 3.0);
                let mut want = [0.0; 4];
                want[a as usize] = 2.0;
                want[b as usize] = 3.0;
                assert_eq!(d.levels(), want);
                assert_eq!(dot_f(&d, [1.0, 10.0, 100.0, 1000.0]), dot4(want, [1.0, 10.0, 100.0, 1000.0]));
                let sa = 24 - 8 * a;
                let sb = 24 - 8 * b;
                let pi = DecI::Pair { sa, sb, va: 2, vb: -3 };
                let x = 0x0BF9_05FDu32;
                let xi = [-3, 5, -7, 11];
                assert_eq!(dot_i8(&pi, x), DotI::Int(2 * xi[a as usize] - 3 * xi[b as usize]));
            }
        }
    }
}
