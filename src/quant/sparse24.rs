//! The 2:4 sparse formats: [`Format::Ternary24`], [`Format::Int4Sparse24`] and
//! [`Format::F16Sparse24`]. In each group of 4 consecutive weights along K the 2 largest |w| are
//! kept (ties: lower index wins) and the other 2 are pruned to 0.

use half::f16;

use super::{
    Format, Packed, Quantized, RowLayout, ScaleMode, f16_scale, nibble, pack_f16_pairs, put_nibble, round_half_even,
    unpack_f16_pairs, unpack_row_scales,
};
use crate::error::Result;

/// The kept pair `(a, b)`, `a < b`, of each [`Format::Ternary24`] pair index `p` (state `4p + s`).
pub const TERNARY24_PAIRS: [(u8, u8); 6] = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];

/// The [`Format::Ternary24`] state of a group whose real weights are all 0.
pub const TERNARY24_ZERO_STATE: u8 = 24;

/// The [`Format::Ternary24`] state of a group keeping positions `a < b` (0..=3) with signs
/// `neg_a`, `neg_b` (true = -1): `4 p + (neg_a | neg_b << 1)` with `p` the index of `(a, b)` in
/// [`TERNARY24_PAIRS`]. `None` unless `a < b <= 3`.
pub const fn ternary24_state(a: u8, b: u8, neg_a: bool, neg_b: bool) -> Option<u8> {
    let mut p = 0;
    while p < TERNARY24_PAIRS.len() {
        if TERNARY24_PAIRS[p].0 == a && TERNARY24_PAIRS[p].1 == b {
            return Some(4 * p as u8 + neg_a as u8 + 2 * neg_b as u8);
        }
        p += 1;
    }
    None
}

/// The four levels (-1, 0, +1) a [`Format::Ternary24`] state stands for; `None` for the invalid
/// states 25..=31. This is the decode a shader mirrors: `p = state >> 2`, `(a, b) = PAIRS[p]`,
/// `level_a = 1 - 2 * (state & 1)`, `level_b = 1 - (state & 2)`.
pub const fn ternary24_levels(state: u8) -> Option<[i8; 4]> {
    if state == TERNARY24_ZERO_STATE {
        return Some([0; 4]);
    }
    if state > TERNARY24_ZERO_STATE {
        return None;
    }
    let (a, b) = TERNARY24_PAIRS[(state >> 2) as usize];
    let mut levels = [0i8; 4];
    levels[a as usize] = 1 - 2 * (state & 1) as i8;
    levels[b as usize] = 1 - (state & 2) as i8;
    Some(levels)
}

/// Group-of-4 number `q` of a row (weights `4q..4q+3`), zeros past the row's end.
fn group4<T: Copy + Default>(row: &[T], q: usize) -> [T; 4] {
    std::array::from_fn(|i| row.get(4 * q + i).copied().unwrap_or_default())
}

/// The two kept positions `(a, b)`, `a < b`, of a group of 4 magnitudes: the largest, ties to the
/// lower index. Padding holds 0, so with at least two real positions both kept ones are real
/// (zeros tie and the lower, real, index wins).
fn top2(mag: [f32; 4]) -> (usize, usize) {
    let mut first = 0;
    for i in 1..4 {
        if mag[i] > mag[first] {
            first = i;
        }
    }
    let mut second = usize::from(first == 0);
    for i in 0..4 {
        if i != first && mag[i] > mag[second] {
            second = i;
        }
    }
    (first.min(second), first.max(second))
}

/// The positions stored for a group of 4 from which values are nonzero: the two nonzero ones;
/// one nonzero at `p` plus the lowest other position as filler; (0, 1) for none. `None` for more
/// than two nonzero.
fn positions(nonzero: [bool; 4]) -> Option<(usize, usize)> {
    let mut nz = (0..4).filter(|&i| nonzero[i]);
    match (nz.next(), nz.next(), nz.next()) {
        (None, _, _) | (Some(0), None, _) => Some((0, 1)),
        (Some(p), None, _) => Some((0, p)),
        (Some(a), Some(b), None) => Some((a, b)),
        _ => None,
    }
}

/// Errors unless every group of 4 of every row has at most two nonzero values. With `ternary`
/// ([`Format::Ternary24`], whose states always keep two ±1) a group has exactly 0 or 2 nonzero,
/// except a last group with a single real position, which may have 1.
pub(super) fn check_pattern<T>(
    format: Format,
    k: usize,
    values: &[T],
    nonzero: impl Fn(&T) -> bool,
    ternary: bool,
) -> Result<()> {
    for (row, r) in values.chunks_exact(k).enumerate() {
        for (q, g) in r.chunks(4).enumerate() {
            let n = g.iter().filter(|v| nonzero(v)).count();
            if n > 2 {
                return Err(format.error(format!("group of 4 at [{row}, {}] has {n} nonzero values", 4 * q)));
            }
            if ternary && n == 1 && g.len() != 1 {
                return Err(format.error(format!(
                    "group of 4 at [{row}, {}] has 1 nonzero level; Ternary24 keeps 2 (±1) or none",
                    4 * q
                )));
            }
        }
    }
    Ok(())
}

// ---- Ternary24 ---------------------------------------------------------------------------------

/// Kept weights become ±1 (sign(0) = +1); gamma = mean |kept w| per row or over the tensor.
pub(super) fn quantize_ternary(w: &[f32], m: u32, k: usize, mode: ScaleMode) -> Quantized {
    let mut levels = vec![0i8; w.len()];
    // Sum of |kept w| and count of kept positions, per row.
    let mut kept = Vec::with_capacity(m as usize);
    for (ws, ls) in w.chunks_exact(k).zip(levels.chunks_exact_mut(k)) {
        let (mut sum, mut count) = (0.0f64, 0u64);
        for q in 0..k.div_ceil(4) {
            let g = group4(ws, q);
            if g.iter().all(|&x| x == 0.0) {
                continue; // state 24
            }
            let (a, b) = top2(g.map(f32::abs));
            // With one real position b = 1 is padding: only a is a real weight.
            for pos in [a, b] {
                if let Some(&x) = ws.get(4 * q + pos) {
                    ls[4 * q + pos] = if x < 0.0 { -1 } else { 1 };
                    sum += f64::from(x.abs());
                    count += 1;
                }
            }
        }
        kept.push((sum, count));
    }
    let mean = |(sum, count): (f64, u64)| if count == 0 { 0.0 } else { (sum / count as f64) as f32 };
    let scales = match mode {
        ScaleMode::PerRow => kept.into_iter().map(mean).collect(),
        ScaleMode::PerTensor => {
            let total = kept.iter().fold((0.0, 0), |(s, c), &(s1, c1)| (s + s1, c + c1));
            vec![mean(total); m as usize]
        }
    };
    Quantized { format: Format::Ternary24, m, k: k as u32, levels, values_f16: Vec::new(), scales, zeros: Vec::new() }
}

/// The state of group `q` of a row with `k` real weights (`levels` of the row).
fn encode_ternary(levels: &[i8], q: usize, row: usize) -> Result<u8> {
    let k = levels.len();
    let lv = group4(levels, q);
    let nz: Vec<usize> = (0..4).filter(|&i| lv[i] != 0).collect();
    let real = (k - 4 * q).min(4);
    let state = match nz[..] {
        [] => Some(TERNARY24_ZERO_STATE),
        [a, b] => ternary24_state(a as u8, b as u8, lv[a] < 0, lv[b] < 0),
        // A last group with one real weight: pair (0, 1), the padding position 1 at +1.
        [0] if real == 1 => ternary24_state(0, 1, lv[0] < 0, false),
        _ => None,
    };
    state.ok_or_else(|| {
        Format::Ternary24.error(format!("group of 4 at [{row}, {}] has levels {lv:?}, which no state encodes", 4 * q))
    })
}

/// Six 5-bit states per word at bits `5 * (q % 6)`; padding groups state 24; bits 30..31 zero.
pub(super) fn pack_ternary(q: &Quantized, layout: &RowLayout, p: &mut Packed) -> Result<()> {
    let (k, rw) = (q.k as usize, layout.row_words as usize);
    p.data = vec![0; q.m as usize * rw];
    for (row, (levels, out)) in q.levels.chunks_exact(k).zip(p.data.chunks_exact_mut(rw)).enumerate() {
        for g in 0..rw * 6 {
            let state = if g < k.div_ceil(4) { encode_ternary(levels, g, row)? } else { TERNARY24_ZERO_STATE };
            out[g / 6] |= u32::from(state) << (5 * (g % 6));
        }
    }
    p.scales = q.scales.iter().map(|s| s.to_bits()).collect();
    Ok(())
}

pub(super) fn unpack_ternary(p: &Packed, layout: &RowLayout) -> Result<Quantized> {
    let f = p.format;
    let (k, rw) = (p.k as usize, layout.row_words as usize);
    let mut levels = Vec::with_capacity(p.m as usize * k);
    for (row, words) in p.data.chunks_exact(rw).enumerate() {
        if let Some(w) = words.iter().position(|w| w >> 30 != 0) {
            return Err(f.error(format!("word {w} of row {row} has bits 30..31 set")));
        }
        for g in 0..rw * 6 {
            let state = ((words[g / 6] >> (5 * (g % 6))) & 31) as u8;
            let at = format!("group of 4 at [{row}, {}]", 4 * g);
            let lv = ternary24_levels(state)
                .ok_or_else(|| f.error(format!("{at} has state {state} (25..31 are invalid)")))?;
            let real = k.saturating_sub(4 * g).min(4);
            // Nonzero levels on padding are allowed only as the +1 filler of a last group with one
            // real weight (states 0 and 1: pair (0, 1), position 1 positive).
            let filler_ok = real == 1 && state <= 1;
            if lv[real..].iter().any(|&l| l != 0) && !filler_ok {
                return Err(f.error(format!("{at} has state {state}, which keeps padding positions")));
            }
            levels.extend_from_slice(&lv[..real]);
        }
    }
    let scales = unpack_row_scales(p)?;
    Ok(Quantized { format: f, m: p.m, k: p.k, levels, values_f16: Vec::new(), scales, zeros: Vec::new() })
}

// ---- Int4Sparse24 ------------------------------------------------------------------------------

/// Kept mask of one row: top 2 of every group of 4 (real positions only).
fn kept_mask(ws: &[f32]) -> Vec<bool> {
    let mut kept = vec![false; ws.len()];
    for q in 0..ws.len().div_ceil(4) {
        let (a, b) = top2(group4(ws, q).map(f32::abs));
        for pos in [a, b] {
            if let Some(slot) = kept.get_mut(4 * q + pos) {
                *slot = true;
            }
        }
    }
    kept
}

/// Kept values quantized symmetric int4 with the f16-rounded scale `max |kept w| / 7` of their
/// G-group; pruned weights level 0.
pub(super) fn quantize_int4(w: &[f32], m: u32, layout: &RowLayout, group: u32) -> Result<Quantized> {
    let format = Format::Int4Sparse24 { group };
    let (k, g, groups) = (layout.k as usize, group as usize, layout.scale_groups as usize);
    let mut levels = vec![0i8; w.len()];
    let mut scales = Vec::with_capacity(m as usize * groups);
    for (row, (ws, ls)) in w.chunks_exact(k).zip(levels.chunks_exact_mut(k)).enumerate() {
        let kept = kept_mask(ws);
        for gi in 0..groups {
            // G-groups past K (Kp is a multiple of max(G, 64)) are empty: scale 1.0.
            let range = (gi * g).min(k)..((gi + 1) * g).min(k);
            let max = range.clone().filter(|&i| kept[i]).fold(0.0f32, |a, i| a.max(ws[i].abs()));
            let s = f16_scale(format, max / 7.0, row, gi)?;
            for i in range.filter(|&i| kept[i]) {
                ls[i] = round_half_even(ws[i] / s).clamp(-8.0, 7.0) as i8;
            }
            scales.push(s);
        }
    }
    Ok(Quantized { format, m, k: layout.k, levels, values_f16: Vec::new(), scales, zeros: Vec::new() })
}

/// Per group of 4 `q`: nibbles `2q`, `2q + 1` of `data` = level + 8 of the lower and higher
/// position; nibble `q` of `aux` = `a | b << 2`. Scales as f16 pairs.
pub(super) fn pack_int4(q: &Quantized, layout: &RowLayout, p: &mut Packed) -> Result<()> {
    let (k, rw, arw) = (q.k as usize, layout.row_words as usize, layout.aux_row_words as usize);
    let (srw, groups) = (layout.scale_row_words as usize, layout.scale_groups as usize);
    p.data = vec![0; q.m as usize * rw];
    p.aux = vec![0; q.m as usize * arw];
    p.scales = vec![0; q.m as usize * srw];
    for row in 0..q.m as usize {
        let levels = &q.levels[row * k..][..k];
        let (data, aux) = (&mut p.data[row * rw..][..rw], &mut p.aux[row * arw..][..arw]);
        for g in 0..layout.padded_k as usize / 4 {
            let lv = group4(levels, g);
            let (a, b) = positions(lv.map(|l| l != 0)).ok_or_else(|| {
                q.format.error(format!("group of 4 at [{row}, {}] has more than 2 nonzero levels", 4 * g))
            })?;
            put_nibble(data, 2 * g, (lv[a] + 8) as u8);
            put_nibble(data, 2 * g + 1, (lv[b] + 8) as u8);
            put_nibble(aux, g, (a | b << 2) as u8);
        }
        pack_f16_pairs(&q.scales[row * groups..][..groups], &mut p.scales[row * srw..][..srw]);
    }
    Ok(())
}

/// The positions `(a, b)` of aux nibble `g`, checked `a < b`.
fn read_positions(f: Format, aux: &[u32], g: usize, row: usize) -> Result<(usize, usize)> {
    let n = nibble(aux, g);
    let (a, b) = (usize::from(n & 3), usize::from(n >> 2));
    if a >= b {
        return Err(f.error(format!("group of 4 at [{row}, {}] has positions ({a}, {b}), not a < b", 4 * g)));
    }
    Ok((a, b))
}

pub(super) fn unpack_int4(p: &Packed, layout: &RowLayout) -> Result<Quantized> {
    let f = p.format;
    let (k, rw, arw) = (p.k as usize, layout.row_words as usize, layout.aux_row_words as usize);
    let (srw, groups) = (layout.scale_row_words as usize, layout.scale_groups as usize);
    let mut levels = vec![0i8; p.m as usize * k];
    let mut scales = Vec::with_capacity(p.m as usize * groups);
    for row in 0..p.m as usize {
        let (data, aux) = (&p.data[row * rw..][..rw], &p.aux[row * arw..][..arw]);
        let out = &mut levels[row * k..][..k];
        for g in 0..layout.padded_k as usize / 4 {
            let (a, b) = read_positions(f, aux, g, row)?;
            for (j, pos) in [(2 * g, a), (2 * g + 1, b)] {
                let level = nibble(data, j) as i8 - 8;
                match out.get_mut(4 * g + pos) {
                    Some(slot) => *slot = level,
                    None if level != 0 => {
                        return Err(f.error(format!("padding weight [{row}, {}] has level {level}", 4 * g + pos)));
                    }
                    None => {}
                }
            }
        }
        scales.extend(unpack_f16_pairs(f, &p.scales[row * srw..][..srw], groups, row)?);
    }
    Ok(Quantized { format: f, m: p.m, k: p.k, levels, values_f16: Vec::new(), scales, zeros: Vec::new() })
}

// ---- F16Sparse24 -------------------------------------------------------------------------------

/// Kept values rounded to f16 (f16 zero, either sign, stored as +0); pruned ones +0.
pub(super) fn quantize_f16(w: &[f32], m: u32, k: usize) -> Result<Quantized> {
    let format = Format::F16Sparse24;
    let mut values = vec![f16::ZERO; w.len()];
    for (row, (ws, vs)) in w.chunks_exact(k).zip(values.chunks_exact_mut(k)).enumerate() {
        for (i, kept) in kept_mask(ws).into_iter().enumerate() {
            if !kept {
                continue;
            }
            let h = f16::from_f32(ws[i]);
            if h.is_infinite() {
                return Err(format.error(format!("weight [{row}, {i}] = {} is beyond f16 range", ws[i])));
            }
            vs[i] = if h.to_f32() == 0.0 { f16::ZERO } else { h };
        }
    }
    Ok(Quantized {
        format,
        m,
        k: k as u32,
        levels: Vec::new(),
        values_f16: values,
        scales: Vec::new(),
        zeros: Vec::new(),
    })
}

/// f16 bits with -0 written as +0, so every stored zero is the same pattern.
fn f16_bits(v: f16) -> u32 {
    if v.to_f32() == 0.0 { 0 } else { u32::from(v.to_bits()) }
}

/// Word `q` of a row = f16 of the lower kept position | f16 of the higher << 16; aux nibble `q`
/// = `a | b << 2`; nibbles of the last aux word past the row's groups = 4 (positions (0, 1)).
pub(super) fn pack_f16(q: &Quantized, layout: &RowLayout, p: &mut Packed) -> Result<()> {
    let (k, rw, arw) = (q.k as usize, layout.row_words as usize, layout.aux_row_words as usize);
    p.data = vec![0; q.m as usize * rw];
    p.aux = vec![0; q.m as usize * arw];
    for row in 0..q.m as usize {
        let values = &q.values_f16[row * k..][..k];
        let (data, aux) = (&mut p.data[row * rw..][..rw], &mut p.aux[row * arw..][..arw]);
        for (g, word) in data.iter_mut().enumerate() {
            let v = group4(values, g);
            let (a, b) = positions(v.map(|x| x.to_f32() != 0.0)).ok_or_else(|| {
                q.format.error(format!("group of 4 at [{row}, {}] has more than 2 nonzero values", 4 * g))
            })?;
            *word = f16_bits(v[a]) | f16_bits(v[b]) << 16;
            put_nibble(aux, g, (a | b << 2) as u8);
        }
        // Nibbles past the last group: (0, 1), ignored by the unpacker.
        for g in rw..arw * 8 {
            put_nibble(aux, g, 0b0100);
        }
    }
    Ok(())
}

pub(super) fn unpack_f16(p: &Packed, layout: &RowLayout) -> Result<Quantized> {
    let f = p.format;
    let (k, rw, arw) = (p.k as usize, layout.row_words as usize, layout.aux_row_words as usize);
    let mut values = vec![f16::ZERO; p.m as usize * k];
    for row in 0..p.m as usize {
        let (data, aux) = (&p.data[row * rw..][..rw], &p.aux[row * arw..][..arw]);
        let out = &mut values[row * k..][..k];
        for (g, &word) in data.iter().enumerate() {
            let (a, b) = read_positions(f, aux, g, row)?;
            for (bits, pos) in [(word as u16, a), ((word >> 16) as u16, b)] {
                let v = f16::from_bits(bits);
                let col = 4 * g + pos;
                if !v.is_finite() {
                    return Err(f.error(format!("value [{row}, {col}] is {v}")));
                }
                match out.get_mut(col) {
                    Some(slot) => *slot = v,
                    None if v.to_f32() != 0.0 => {
                        return Err(f.error(format!("padding weight [{row}, {col}] is {v}, not 0")));
                    }
                    None => {}
                }
            }
        }
    }
    Ok(Quantized {
        format: f,
        m: p.m,
        k: p.k,
        levels: Vec::new(),
        values_f16: values,
        scales: Vec::new(),
        zeros: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top2_prefers_magnitude_then_lower_index() {
        assert_eq!(top2([1.0, 3.0, 2.0, 0.5]), (1, 2));
        assert_eq!(top2([0.0; 4]), (0, 1));
        assert_eq!(top2([2.0, 1.0, 2.0, 2.0]), (0, 2));
        assert_eq!(top2([0.0, 0.0, 0.0, 5.0]), (0, 3));
        assert_eq!(top2([1.0, 1.0, 1.0, 1.0]), (0, 1));
        assert_eq!(top2([0.0, 1.0, 1.0, 1.0]), (1, 2));
    }

    #[test]
    fn positions_fill_with_the_lowest_other_index() {
        assert_eq!(positions([false; 4]), Some((0, 1)));
        assert_eq!(positions([true, false, false, false]), Some((0, 1)));
        assert_eq!(positions([false, false, true, false]), Some((0, 2)));
        assert_eq!(positions([false, true, false, true]), Some((1, 3)));
        assert_eq!(positions([true, true, true, false]), None);
    }

    #[test]
    fn states_decode_to_their_pair_and_signs() {
        for (p, &(a, b)) in TERNARY24_PAIRS.iter().enumerate() {
            for s in 0..4u8 {
                let state = ternary24_state(a, b, s & 1 != 0, s & 2 != 0).unwrap();
                assert_eq!(state, 4 * p as u8 + s);
                let lv = ternary24_levels(state).unwrap();
                assert_eq!(lv[a as usize], if s & 1 != 0 { -1 } else { 1 });
                assert_eq!(lv[b as usize], if s & 2 != 0 { -1 } else { 1 });
                assert_eq!(lv.iter().filter(|&&l| l != 0).count(), 2);
            }
        }
        assert_eq!(ternary24_levels(24), Some([0; 4]));
        assert!((25..32).all(|s| ternary24_levels(s).is_none()));
        assert_eq!(ternary24_state(1, 1, false, false), None);
        assert_eq!(ternary24_state(2, 1, false, false), None);
    }
}
