//! Packed low-bit weight formats: quantizers, packers, unpackers and dequantizers.
//!
//! A weight matrix is `M x K` row-major f32 (M output features, K input features: the layout of
//! PyTorch's `nn.Linear.weight`). Every [`Format`] goes through the same four steps:
//!
//! ```text
//!  f32 weights ──quantize──► Quantized ──pack──► Packed ──upload──► GPU kernels
//!  (M x K)                   levels,     ◄─unpack─  u32 words in the
//!            ◄─dequantize──  scales                 exact order the shaders read
//! ```
//!
//! [`quantize`] turns weights into integer levels plus scales ([`Quantized`]), which
//! [`Quantized::dequantize`] maps back to f32 — what the kernels compute with, so CPU references
//! dequantize and multiply densely. [`Quantized::pack`] lays levels and scales out as the shaders
//! read them ([`Packed`]); [`Packed::unpack`] is its exact inverse and checks every code on the way,
//! so tests (and anyone holding packed weights from elsewhere) can verify a buffer before upload.
//!
//! ```
//! use milliwatt::quant::{Format, ScaleMode, quantize};
//! # fn main() -> milliwatt::Result<()> {
//! let (m, k) = (2, 100);
//! let w: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! let q = quantize(&w, m, k, Format::Int4 { group: 32, zero_point: false }, ScaleMode::PerRow)?;
//! let packed = q.pack()?;
//! assert_eq!(packed.row_words, 128 / 8); // K padded to 128, eight nibbles per word
//! assert_eq!(packed.unpack()?, q);
//! let dq = q.dequantize()?;
//! // Within half a step; the largest scale is 1/7 rounded to f16 (0.14282).
//! assert!(w.iter().zip(&dq).all(|(a, b)| (a - b).abs() <= 0.5 * 0.1429));
//! # Ok(()) }
//! ```
//!
//! # Formats
//!
//! | format | bits / weight (4096 x 4096) | scales | zero points / positions | per-tensor scale |
//! |---|---|---|---|---|
//! | [`Format::Ternary2`] | 2 (+ 32 / K) | f32 per row | — | yes |
//! | [`Format::Int8`] | 8 (+ 32 / K) | f32 per row | — | yes |
//! | [`Format::Int4`] | 4 + 16 / G (+ 4 / G with zero point) | f16 per group | 4-bit zero per group | no |
//! | [`Format::Ternary24`] | 1.25 (1.34 padded) (+ 32 / K) | f32 per row | in the 5-bit state | yes |
//! | [`Format::Int4Sparse24`] | 3 + 16 / G | f16 per group | 4 bits per 4 weights | no |
//! | [`Format::F16Sparse24`] | 9 | — | 4 bits per 4 weights | no scales |
//!
//! The byte layout of each format is documented, with a table, on its [`Format`] variant.
//!
//! # Conventions shared by every layout
//!
//! - **Little-endian.** "Byte `j` of a row" is bits `8 * (j % 4)..` of word `j / 4` of that row;
//!   "nibble `i`" is bits `4 * (i % 8)..` of word `i / 8`; "field `i` of width `b`" likewise.
//! - **Rows.** `data` holds `M * row_words` words, row `m` at `m * row_words`; every row of `data`
//!   is a whole number of 16-byte `vec4<u32>` so the kernels can load vec4s. K is padded to a
//!   multiple of [`Format::k_multiple`]; [`Format::layout`] gives every stride.
//! - **Padding.** Positions `k >= K` hold the code for weight 0, which is not always the all-zero
//!   bit pattern: state 24 for [`Format::Ternary24`], nibble 8 (or the group's zero point) for
//!   [`Format::Int4`] and [`Format::Int4Sparse24`]. The unpacker rejects anything else there.
//!   Kernels may still multiply padding with activations, so it must be 0.
//! - **Rounding** is round half to even everywhere ([`round_half_even`]); f32 to f16 conversion is
//!   round to nearest even (`half::f16::from_f32`).
//! - **Scales** are either one f32 bit pattern per row (`scale_row_words = 1`) or one f16 per group,
//!   two per word (group `g` of row `m` at word `m * scale_row_words + g / 2`, low 16 bits for even
//!   `g`, the unused high half of an odd last word zero).
//!
//! # What [`Quantized`] holds, per format
//!
//! | format | `levels` (M x K) | `scales` | `zeros` | `values_f16` |
//! |---|---|---|---|---|
//! | Ternary2 | -1, 0, +1 | gamma per row | empty | empty |
//! | Int8 | -127..=127 | per row | empty | empty |
//! | Int4 | stored nibble 0..=15 (level + 8, or level + zero point) | per group, f16-exact | per group (zero point only) | empty |
//! | Ternary24 | -1, 0, +1, at most 2 nonzero per 4 | gamma per row | empty | empty |
//! | Int4Sparse24 | signed level -8..=7, 0 where pruned | per group, f16-exact | empty | empty |
//! | F16Sparse24 | empty | empty | empty | M x K, 0 where pruned |

mod int4;
mod int8;
mod sparse24;
mod ternary;

pub use sparse24::{TERNARY24_PAIRS, TERNARY24_ZERO_STATE, ternary24_levels, ternary24_state};

use crate::error::{Error, Result};

/// Round half to even: the rounding of every quantizer here (`f32::round_ties_even`). Shaders
/// that quantize (activations) must round the same way; WGSL's `round` does.
pub fn round_half_even(x: f32) -> f32 {
    x.round_ties_even()
}

/// Group sizes accepted by [`Format::Int4`] and [`Format::Int4Sparse24`].
pub const GROUP_SIZES: [u32; 3] = [32, 64, 128];

/// How the scale of the ternary and int8 formats is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ScaleMode {
    /// One scale per output row (the default: better accuracy, same kernel cost).
    #[default]
    PerRow,
    /// One scale for the whole matrix (BitNet b1.58's recipe), replicated to every row so the
    /// packed layout and the kernels are the same as per row. Only for [`Format::Ternary2`],
    /// [`Format::Ternary24`] and [`Format::Int8`]; the group formats reject it.
    PerTensor,
}

/// A packed weight format. The byte layout of each variant is a contract with the shaders that
/// read it: keep the tables here and the WGSL in sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Format {
    /// BitNet b1.58 ternary weights, 2 bits each, 16 per u32.
    ///
    /// Quantization: `gamma = mean |W|` over the row (over all `M * K` with
    /// [`ScaleMode::PerTensor`]); `level = clamp(round_half_even(w / (gamma + 1e-8)), -1, 1)`;
    /// `dequant = level * gamma`.
    ///
    /// | stream | words per row | content |
    /// |---|---|---|
    /// | `data` | `ceil(K / 64) * 4` | weight `k`: bits `2 * (k % 16)..+2` of word `k / 16`; code 0 = 0, 1 = +1, 2 = -1 (3 is invalid) |
    /// | `scales` | 1 | gamma, f32 bits |
    /// | `aux` | 0 | — |
    ///
    /// Padding code 0 (all-zero words). Keep in sync with shaders/gemv_ternary.wgsl.
    Ternary2,

    /// Int8 weights, symmetric, one scale per row.
    ///
    /// Quantization: `scale = max |W_row| / 127` (global max with [`ScaleMode::PerTensor`]; 1.0
    /// when the max is 0); `level = clamp(round_half_even(w / scale), -127, 127)`;
    /// `dequant = level * scale`.
    ///
    /// | stream | words per row | content |
    /// |---|---|---|
    /// | `data` | `ceil(K / 16) * 4` | byte `k` = level as two's-complement i8 (-128 = 0x80 is invalid) |
    /// | `scales` | 1 | scale, f32 bits |
    /// | `aux` | 0 | — |
    ///
    /// Padding byte 0. Keep in sync with shaders/gemv_int8.wgsl.
    Int8,

    /// Int4 weights with one f16 scale per group of `group` (32, 64 or 128) consecutive weights
    /// along K, symmetric or with a 4-bit zero point per group.
    ///
    /// Symmetric: `scale = max |W_g| / 7` (1.0 when 0), rounded to f16 **before** quantizing so
    /// levels and the stored scale agree; `level = clamp(round_half_even(w / scale), -8, 7)`;
    /// stored nibble `level + 8`; `dequant = (nibble - 8) * scale`.
    ///
    /// Zero point: `lo = min(min W_g, 0)`, `hi = max(max W_g, 0)`, `scale = (hi - lo) / 15` (1.0
    /// when 0), rounded to f16; `z = clamp(round_half_even(-lo / scale), 0, 15)`;
    /// `nibble = clamp(round_half_even(w / scale) + z, 0, 15)`; `dequant = (nibble - z) * scale`.
    ///
    /// A scale that rounds to f16 zero (|w| below about 4e-7) becomes 1.0 as well (every level is
    /// then 0); one that overflows f16 is an error. `Quantized::levels` holds the stored nibble
    /// (0..=15) in both modes.
    ///
    /// With `Kp = ceil(K / G) * G` and `groups = Kp / G`:
    ///
    /// | stream | words per row | content |
    /// |---|---|---|
    /// | `data` | `Kp / 8` | nibble `k` (bits `4 * (k % 8)` of word `k / 8`) = stored nibble |
    /// | `scales` | `ceil(groups / 2)` | f16 scale of group `g` in word `g / 2`, low half for even `g` |
    /// | `aux` | `ceil(groups / 8)` with zero point, else 0 | zero point of group `g`: nibble `g` |
    ///
    /// Padding nibble 8 (symmetric) or the group's zero point; unused scale halves and zero-point
    /// nibbles are 0. Keep in sync with shaders/gemv_int4.wgsl.
    Int4 {
        /// Weights per scale group along K: 32, 64 or 128.
        group: u32,
        /// Asymmetric quantization with a 4-bit zero point per group.
        zero_point: bool,
    },

    /// 2:4 sparse ternary: in each group of 4 consecutive weights along K the 2 largest |w| are
    /// kept as ±1 (ties: lower index wins; sign(0) = +1), the other 2 are zero. 5 bits per group,
    /// 1.25 bits per weight.
    ///
    /// Scale: `gamma = mean |w|` over the row's kept positions (over all kept positions with
    /// [`ScaleMode::PerTensor`]); kept weights dequantize to `±gamma`, pruned ones to 0.
    ///
    /// A group is a 5-bit state ([`ternary24_state`]): the kept pair `(a, b)`, `a < b`, is pair
    /// index `p` in [`TERNARY24_PAIRS`] = (0,1), (0,2), (0,3), (1,2), (1,3), (2,3); the signs are
    /// `s = neg_a | neg_b << 1`; `state = 4 p + s` (0..=23). State 24
    /// ([`TERNARY24_ZERO_STATE`]) is a group whose real weights are all exactly 0 (it dequantizes to
    /// four zeros); 25..=31 are invalid.
    ///
    /// Last partial group (`K % 4 != 0`): the pair is chosen among the real positions when there are
    /// at least two. With only one real position the state uses pair (0,1) with position 1 (padding)
    /// sign +1: the kernels zero the activations past K, so that +1 contributes nothing. `levels`
    /// (dense, real positions only) then holds a single nonzero in that group.
    ///
    /// | stream | words per row | content |
    /// |---|---|---|
    /// | `data` | `ceil(K / 96) * 4` | group `q` (weights `4q..4q+3`): bits `5 * (q % 6)..+5` of word `q / 6`; bits 30..31 zero |
    /// | `scales` | 1 | gamma, f32 bits |
    /// | `aux` | 0 | — |
    ///
    /// Padding groups hold state 24, so a word of six padding groups is 0x318C6318, not zero.
    /// Keep in sync with the shader decoding Ternary24 (grep `Ternary24` in shaders/).
    Ternary24,

    /// 2:4 sparse int4: 2 kept values per group of 4 (largest |w|, ties lower index), symmetric
    /// int4 with an f16 scale per group of `group` (32, 64 or 128) weights along K. 3 bits per
    /// weight plus scales.
    ///
    /// Scale of a G-group: `max |kept w|` in it / 7 (1.0 when 0, including G-groups that are all
    /// padding), rounded to f16 before quantizing; kept levels
    /// `clamp(round_half_even(w / scale), -8, 7)`; pruned weights are 0. `Quantized::levels` holds
    /// the signed level (-8..=7, 0 where pruned).
    ///
    /// With `Kp = ceil(K / max(G, 64)) * max(G, 64)`, `groups = Kp / G`, and kept value `j` of a
    /// row being `2q` (lower position) or `2q + 1` (higher position) of group-of-4 `q`:
    ///
    /// | stream | words per row | content |
    /// |---|---|---|
    /// | `data` | `Kp / 16` | nibble `j` = level + 8 of kept value `j`: one word = 4 groups of 4 = 16 weights |
    /// | `aux` | `Kp / 32` | nibble `q` = `pos_a \| pos_b << 2` of group-of-4 `q` (`pos_a < pos_b`, 0..=3) |
    /// | `scales` | `ceil(groups / 2)` | f16 scale of G-group `g` in word `g / 2`, low half for even `g` |
    ///
    /// Positions are derived from the levels: the two nonzero ones; with one nonzero at `p` the
    /// filler is the lowest other position (0, or 1 when `p = 0`) with value nibble 8; with none,
    /// (0,1). Padding groups are positions (0,1) (aux nibble 4) with nibbles 8: padding words are
    /// 0x88888888 in `data` and 0x44444444 in `aux`. The unpacker accepts any distinct positions
    /// `a < b` as long as the values at padding positions are 0. Keep in sync with the shader
    /// decoding Int4Sparse24 (grep `Int4Sparse24` in shaders/).
    Int4Sparse24 {
        /// Weights per scale group along K: 32, 64 or 128.
        group: u32,
    },

    /// 2:4 sparse f16: 2 kept values per group of 4 (largest |w|, ties lower index) rounded to f16,
    /// 36 bits per 4 weights (9 per weight). No scales.
    ///
    /// With `Kp = ceil(K / 16) * 16`:
    ///
    /// | stream | words per row | content |
    /// |---|---|---|
    /// | `data` | `Kp / 4` | word `q` = the f16 of group-of-4 `q`'s lower kept position (low 16 bits) and higher (high 16 bits) |
    /// | `aux` | `ceil(Kp / 32)` | nibble `q` = `pos_a \| pos_b << 2`, as [`Format::Int4Sparse24`] |
    /// | `scales` | 0 | — |
    ///
    /// Positions are chosen from the nonzero values as in [`Format::Int4Sparse24`]; a weight that
    /// rounds to f16 zero counts as pruned; -0 is stored as +0. A weight beyond f16 range is an
    /// error. Padding groups are word 0 with positions (0,1); the nibbles of the last aux word past
    /// `Kp / 4` groups (when `Kp / 4` is not a multiple of 8) also hold 4 (= (0,1)) and are ignored
    /// by the unpacker. Keep in sync with the shader decoding F16Sparse24 (grep `F16Sparse24` in
    /// shaders/).
    F16Sparse24,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Format::Ternary2 => write!(f, "ternary2"),
            Format::Int8 => write!(f, "int8"),
            Format::Int4 { group, zero_point: false } => write!(f, "int4-g{group}"),
            Format::Int4 { group, zero_point: true } => write!(f, "int4-g{group}-zp"),
            Format::Ternary24 => write!(f, "ternary24"),
            Format::Int4Sparse24 { group } => write!(f, "int4-sparse24-g{group}"),
            Format::F16Sparse24 => write!(f, "f16-sparse24"),
        }
    }
}

/// Parses the names [`Format`]'s `Display` writes (`ternary2`, `int8`, `int4-g64`, `int4-g32-zp`,
/// `ternary24`, `int4-sparse24-g128`, `f16-sparse24`), so a format round-trips through text (the
/// metadata of pre-packed checkpoints). Group sizes outside [`GROUP_SIZES`] are rejected.
impl std::str::FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let group = |g: &str| g.parse::<u32>().ok();
        let format = match s {
            "ternary2" => Some(Format::Ternary2),
            "int8" => Some(Format::Int8),
            "ternary24" => Some(Format::Ternary24),
            "f16-sparse24" => Some(Format::F16Sparse24),
            _ => {
                if let Some(rest) = s.strip_prefix("int4-sparse24-g") {
                    group(rest).map(|group| Format::Int4Sparse24 { group })
                } else if let Some(rest) = s.strip_prefix("int4-g") {
                    match rest.strip_suffix("-zp") {
                        Some(g) => group(g).map(|group| Format::Int4 { group, zero_point: true }),
                        None => group(rest).map(|group| Format::Int4 { group, zero_point: false }),
                    }
                } else {
                    None
                }
            }
        };
        let format = format.ok_or_else(|| Error::Format {
            format: s.to_string(),
            message: "not a format name (ternary2, int8, int4-g{32,64,128}[-zp], ternary24, \
                      int4-sparse24-g{32,64,128}, f16-sparse24)"
                .to_string(),
        })?;
        format.validate()?;
        Ok(format)
    }
}

/// Strides of one packed row of a [`Format`] for a given K (all in u32 words unless named
/// otherwise). Same for every row; multiply by the row index for offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RowLayout {
    /// Real input features.
    pub k: u32,
    /// K padded to [`Format::k_multiple`]: the weights one row of `data` covers.
    pub padded_k: u32,
    /// Words of `data` per row (a multiple of 4: whole `vec4<u32>`).
    pub row_words: u32,
    /// Words of `scales` per row (1 for per-row f32 scales, `ceil(scale_groups / 2)` for f16 group
    /// scales, 0 without scales).
    pub scale_row_words: u32,
    /// Words of `aux` (zero points or 2:4 positions) per row; 0 when the format has none.
    pub aux_row_words: u32,
    /// Scales per row as [`Quantized::scales`] holds them: 1 for per-row scales, `padded_k / G` for
    /// group scales, 0 without scales.
    pub scale_groups: u32,
    /// Weights per scale: `G` for group scales, `padded_k` for per-row scales, 0 without scales.
    pub scale_group: u32,
}

impl Format {
    /// The error of this format with `message`.
    pub(crate) fn error(self, message: impl Into<String>) -> Error {
        Error::Format { format: self.to_string(), message: message.into() }
    }

    /// The scale group size G of the group-scaled formats.
    fn group(self) -> Option<u32> {
        match self {
            Format::Int4 { group, .. } | Format::Int4Sparse24 { group } => Some(group),
            _ => None,
        }
    }

    /// Errors if the format's parameters are unsupported (a group size outside [`GROUP_SIZES`]).
    pub fn validate(self) -> Result<()> {
        match self.group() {
            Some(g) if !GROUP_SIZES.contains(&g) => {
                Err(self.error(format!("group size {g} is not one of {GROUP_SIZES:?}")))
            }
            _ => Ok(()),
        }
    }

    /// Whether [`ScaleMode::PerTensor`] applies (one f32 scale per row in the packed layout).
    pub fn supports_per_tensor(self) -> bool {
        matches!(self, Format::Ternary2 | Format::Ternary24 | Format::Int8)
    }

    /// The padding granularity along K: each packed row covers a multiple of this many weights,
    /// so the row is a whole number of `vec4<u32>` (and, for group formats, of scale groups and
    /// of `aux` words where the layout needs it). Ternary2 64, Int8 16, Int4 G, Ternary24 96,
    /// Int4Sparse24 max(G, 64), F16Sparse24 16.
    pub const fn k_multiple(self) -> u32 {
        match self {
            Format::Ternary2 => 64,
            Format::Int8 => 16,
            Format::Int4 { group, .. } => group,
            Format::Ternary24 => 96,
            Format::Int4Sparse24 { group } => {
                if group > 64 {
                    group
                } else {
                    64
                }
            }
            Format::F16Sparse24 => 16,
        }
    }

    /// Row strides of this format for `k` input features. Errors on an invalid format, `k = 0`,
    /// or a K whose padded length does not fit u32.
    pub fn layout(self, k: u32) -> Result<RowLayout> {
        self.validate()?;
        if k == 0 {
            return Err(self.error("K is 0"));
        }
        let multiple = self.k_multiple();
        if multiple == 0 {
            // Unreachable after validate(); kept so no input can divide by zero.
            return Err(self.error("padding granularity is 0"));
        }
        let padded_k = u32::try_from(u64::from(k).div_ceil(u64::from(multiple)) * u64::from(multiple))
            .map_err(|_| self.error(format!("K = {k} padded to a multiple of {multiple} does not fit u32")))?;
        let per_row = |row_words| RowLayout {
            k,
            padded_k,
            row_words,
            scale_row_words: 1,
            aux_row_words: 0,
            scale_groups: 1,
            scale_group: padded_k,
        };
        Ok(match self {
            Format::Ternary2 => per_row(padded_k / 16),
            Format::Int8 => per_row(padded_k / 4),
            Format::Ternary24 => per_row(padded_k / 24),
            Format::Int4 { group, zero_point } => {
                let groups = padded_k / group;
                RowLayout {
                    k,
                    padded_k,
                    row_words: padded_k / 8,
                    scale_row_words: groups.div_ceil(2),
                    aux_row_words: if zero_point { groups.div_ceil(8) } else { 0 },
                    scale_groups: groups,
                    scale_group: group,
                }
            }
            Format::Int4Sparse24 { group } => {
                let groups = padded_k / group;
                RowLayout {
                    k,
                    padded_k,
                    row_words: padded_k / 16,
                    scale_row_words: groups.div_ceil(2),
                    aux_row_words: padded_k / 32,
                    scale_groups: groups,
                    scale_group: group,
                }
            }
            Format::F16Sparse24 => RowLayout {
                k,
                padded_k,
                row_words: padded_k / 4,
                scale_row_words: 0,
                aux_row_words: padded_k.div_ceil(32),
                scale_groups: 0,
                scale_group: 0,
            },
        })
    }
}

/// Quantized but not packed: what [`quantize`] produces and [`Packed::unpack`] returns. One value
/// per real weight (no padding); see the [module docs](self) for what each field holds per format.
///
/// The fields are public so tests and tools can build or edit values; [`Quantized::check`] (run by
/// [`Quantized::pack`] and [`Quantized::dequantize`]) rejects inconsistent ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    /// The format.
    pub format: Format,
    /// Rows (output features).
    pub m: u32,
    /// Columns (input features).
    pub k: u32,
    /// `M * K` integer levels, row-major (empty for [`Format::F16Sparse24`]): ternary -1/0/+1,
    /// int8 -127..=127, int4 the stored nibble 0..=15, sparse int4 the signed level -8..=7.
    pub levels: Vec<i8>,
    /// [`Format::F16Sparse24`] only: `M * K` values with the pruned ones zero; empty otherwise.
    pub values_f16: Vec<half::f16>,
    /// Scales: `M` (per row) or `M * scale_groups` (per group, row-major); empty for
    /// [`Format::F16Sparse24`]. Group scales are exactly representable in f16.
    pub scales: Vec<f32>,
    /// [`Format::Int4`] with zero point only: `M * scale_groups` zero points 0..=15; empty
    /// otherwise.
    pub zeros: Vec<u8>,
}

/// Packed weights, in exactly the u32 word order the shaders read. Upload `data`, `scales` and
/// `aux` as three storage buffers (the empty ones are not bound).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Packed {
    /// The format.
    pub format: Format,
    /// Rows (output features).
    pub m: u32,
    /// Columns (real input features; rows are padded past them).
    pub k: u32,
    /// Words of `data` per row.
    pub row_words: u32,
    /// `M * row_words` words of packed weights.
    pub data: Vec<u32>,
    /// Words of `scales` per row.
    pub scale_row_words: u32,
    /// `M * scale_row_words` words: f32 bit patterns, or two f16 per word.
    pub scales: Vec<u32>,
    /// Words of `aux` per row.
    pub aux_row_words: u32,
    /// `M * aux_row_words` words of zero points or 2:4 positions; empty if the format has none.
    pub aux: Vec<u32>,
}

/// Quantizes the `m x k` row-major weights `w` to `format`, with per-row or per-tensor scales
/// (`mode`, ternary and int8 only).
///
/// Errors ([`Error::Format`]) when `w.len() != m * k`, `m` or `k` is 0, the group size is not 32,
/// 64 or 128, a weight is NaN or infinite, `mode` is per-tensor for a format without it, or a
/// scale or value does not fit f16 where the format stores f16.
pub fn quantize(w: &[f32], m: u32, k: u32, format: Format, mode: ScaleMode) -> Result<Quantized> {
    let layout = format.layout(k)?;
    if m == 0 {
        return Err(format.error("M is 0"));
    }
    if w.len() as u64 != u64::from(m) * u64::from(k) {
        return Err(format.error(format!("{} weights given for M x K = {m} x {k}", w.len())));
    }
    if let Some(i) = w.iter().position(|x| !x.is_finite()) {
        let (row, col) = (i / k as usize, i % k as usize);
        return Err(format.error(format!("weight [{row}, {col}] is {}", w[i])));
    }
    if mode == ScaleMode::PerTensor && !format.supports_per_tensor() {
        return Err(format.error("per-tensor scales apply only to the ternary and int8 formats"));
    }
    let k = k as usize;
    match format {
        Format::Ternary2 => Ok(ternary::quantize(w, m, k, format, mode)),
        Format::Int8 => Ok(int8::quantize(w, m, k, mode)),
        Format::Int4 { group, zero_point } => int4::quantize(w, m, &layout, group, zero_point),
        Format::Ternary24 => Ok(sparse24::quantize_ternary(w, m, k, mode)),
        Format::Int4Sparse24 { group } => sparse24::quantize_int4(w, m, &layout, group),
        Format::F16Sparse24 => sparse24::quantize_f16(w, m, k),
    }
}

impl Quantized {
    /// Row strides of the packed form.
    pub fn layout(&self) -> Result<RowLayout> {
        self.format.layout(self.k)
    }

    /// Errors unless every field is consistent with the format and shape: vector lengths, level
    /// and zero-point ranges, finite scales (exactly representable in f16 where packed as f16),
    /// finite f16 values, and at most two nonzero values per group of 4 in the 2:4 formats.
    pub fn check(&self) -> Result<()> {
        let f = self.format;
        let layout = self.layout()?;
        if self.m == 0 {
            return Err(f.error("M is 0"));
        }
        let mk = u64::from(self.m) * u64::from(self.k);
        let m = u64::from(self.m);
        let dense = f != Format::F16Sparse24;
        let zp = matches!(f, Format::Int4 { zero_point: true, .. });
        let expect = [
            ("levels", self.levels.len(), if dense { mk } else { 0 }),
            ("values_f16", self.values_f16.len(), if dense { 0 } else { mk }),
            ("scales", self.scales.len(), m * u64::from(layout.scale_groups)),
            ("zeros", self.zeros.len(), if zp { m * u64::from(layout.scale_groups) } else { 0 }),
        ];
        for (name, got, want) in expect {
            if got as u64 != want {
                return Err(f.error(format!("{name} has {got} entries, {} x {} needs {want}", self.m, self.k)));
            }
        }
        let k = self.k as usize;
        let (lo, hi) = match f {
            Format::Ternary2 | Format::Ternary24 => (-1, 1),
            Format::Int8 => (-127, 127),
            Format::Int4 { .. } => (0, 15),
            Format::Int4Sparse24 { .. } => (-8, 7),
            Format::F16Sparse24 => (0, 0),
        };
        if let Some(i) = self.levels.iter().position(|l| !(lo..=hi).contains(l)) {
            return Err(f.error(format!("level [{}, {}] = {} is outside {lo}..={hi}", i / k, i % k, self.levels[i])));
        }
        if let Some(i) = self.scales.iter().position(|s| !s.is_finite()) {
            return Err(f.error(format!("scale {i} is {}", self.scales[i])));
        }
        if f.group().is_some() {
            if let Some(i) = self.scales.iter().position(|&s| half::f16::from_f32(s).to_f32() != s) {
                return Err(f.error(format!("scale {i} = {} is not exactly representable in f16", self.scales[i])));
            }
        }
        if let Some(i) = self.zeros.iter().position(|&z| z > 15) {
            return Err(f.error(format!("zero point {i} = {} is outside 0..=15", self.zeros[i])));
        }
        if let Some(i) = self.values_f16.iter().position(|v| !v.is_finite()) {
            return Err(f.error(format!("value [{}, {}] is {}", i / k, i % k, self.values_f16[i])));
        }
        match f {
            Format::Ternary24 => sparse24::check_pattern(f, k, &self.levels, |&l| l != 0, true),
            Format::Int4Sparse24 { .. } => sparse24::check_pattern(f, k, &self.levels, |&l| l != 0, false),
            Format::F16Sparse24 => sparse24::check_pattern(f, k, &self.values_f16, |v| v.to_f32() != 0.0, false),
            _ => Ok(()),
        }
    }

    /// The f32 weights these levels and scales stand for (what the kernels multiply with).
    /// Errors as [`Quantized::check`].
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        self.check()?;
        let layout = self.layout()?;
        let k = self.k as usize;
        Ok(match self.format {
            Format::Ternary2 | Format::Ternary24 | Format::Int8 => {
                // One scale per row; levels are the signed integers themselves.
                self.levels.iter().enumerate().map(|(i, &l)| f32::from(l) * self.scales[i / k]).collect()
            }
            Format::Int4 { group, zero_point } => {
                int4::dequantize(&self.levels, &self.scales, &self.zeros, k, &layout, group, zero_point)
            }
            Format::Int4Sparse24 { group } => {
                let (g, groups) = (group as usize, layout.scale_groups as usize);
                let scale = |i: usize| self.scales[(i / k) * groups + (i % k) / g];
                self.levels.iter().enumerate().map(|(i, &l)| f32::from(l) * scale(i)).collect()
            }
            Format::F16Sparse24 => self.values_f16.iter().map(|v| v.to_f32()).collect(),
        })
    }

    /// Packs into the shader layout of the format (see the tables on [`Format`]). Errors as
    /// [`Quantized::check`].
    pub fn pack(&self) -> Result<Packed> {
        self.check()?;
        let layout = self.layout()?;
        let mut p = Packed {
            format: self.format,
            m: self.m,
            k: self.k,
            row_words: layout.row_words,
            data: Vec::new(),
            scale_row_words: layout.scale_row_words,
            scales: Vec::new(),
            aux_row_words: layout.aux_row_words,
            aux: Vec::new(),
        };
        match self.format {
            Format::Ternary2 => ternary::pack2(self, &layout, &mut p),
            Format::Int8 => int8::pack(self, &layout, &mut p),
            Format::Int4 { .. } => int4::pack(self, &layout, &mut p),
            Format::Ternary24 => sparse24::pack_ternary(self, &layout, &mut p)?,
            Format::Int4Sparse24 { .. } => sparse24::pack_int4(self, &layout, &mut p)?,
            Format::F16Sparse24 => sparse24::pack_f16(self, &layout, &mut p)?,
        }
        Ok(p)
    }
}

impl Packed {
    /// Row strides of this format and K.
    pub fn layout(&self) -> Result<RowLayout> {
        self.format.layout(self.k)
    }

    /// Unpacks into levels and scales, the exact inverse of [`Quantized::pack`]. Errors
    /// ([`Error::Format`]) when strides or vector lengths disagree with the format and shape, or
    /// on any code the packer never writes: Ternary2 code 3, int8 -128, Ternary24 states 25..=31, 2:4 positions not `a < b`, nonzero weights or unused
    /// bits in padding, non-finite scales or f16 values.
    pub fn unpack(&self) -> Result<Quantized> {
        let f = self.format;
        let layout = self.layout()?;
        if self.m == 0 {
            return Err(f.error("M is 0"));
        }
        let m = u64::from(self.m);
        let expect = [
            ("row_words", self.row_words, layout.row_words, "data", self.data.len()),
            ("scale_row_words", self.scale_row_words, layout.scale_row_words, "scales", self.scales.len()),
            ("aux_row_words", self.aux_row_words, layout.aux_row_words, "aux", self.aux.len()),
        ];
        for (stride_name, stride, want, vec_name, len) in expect {
            if stride != want {
                return Err(f.error(format!("{stride_name} is {stride}, K = {} needs {want}", self.k)));
            }
            if len as u64 != m * u64::from(want) {
                return Err(f.error(format!("{vec_name} has {len} words, {} rows of {want} needed", self.m)));
            }
        }
        let q = match f {
            Format::Ternary2 => ternary::unpack2(self, &layout)?,
            Format::Int8 => int8::unpack(self, &layout)?,
            Format::Int4 { .. } => int4::unpack(self, &layout)?,
            Format::Ternary24 => sparse24::unpack_ternary(self, &layout)?,
            Format::Int4Sparse24 { .. } => sparse24::unpack_int4(self, &layout)?,
            Format::F16Sparse24 => sparse24::unpack_f16(self, &layout)?,
        };
        Ok(q)
    }

    /// Bytes of weights in memory: `data`, `scales` and `aux` together.
    pub fn weight_bytes(&self) -> u64 {
        4 * (self.data.len() + self.scales.len() + self.aux.len()) as u64
    }

    /// [`Packed::weight_bytes`] in bits per real weight (`M * K`), padding and scales included.
    /// Not finite when `M * K` is 0 (which [`Packed::unpack`] rejects).
    pub fn bits_per_weight(&self) -> f64 {
        self.weight_bytes() as f64 * 8.0 / (f64::from(self.m) * f64::from(self.k))
    }
}

// ---- Helpers shared by the formats -------------------------------------------------------------

/// Scales of one row as f32 bit patterns (the per-row formats).
fn unpack_row_scales(p: &Packed) -> Result<Vec<f32>> {
    p.scales
        .iter()
        .enumerate()
        .map(|(row, &bits)| {
            let s = f32::from_bits(bits);
            if s.is_finite() { Ok(s) } else { Err(p.format.error(format!("scale of row {row} is {s}"))) }
        })
        .collect()
}

/// A group scale as stored: `s` rounded to f16, with 0 (or an f16 underflow to 0) replaced by 1.0
/// so that dividing by it is safe and every level of an all-zero group is 0. Errors when `s`
/// overflows f16.
fn f16_scale(format: Format, s: f32, row: usize, group: usize) -> Result<f32> {
    let h = half::f16::from_f32(s);
    if h.is_infinite() || h.is_nan() {
        return Err(format.error(format!(
            "scale {s} of group {group} in row {row} does not fit f16 (weights too large for f16 scales)"
        )));
    }
    Ok(if h.to_f32() == 0.0 { 1.0 } else { h.to_f32() })
}

/// Writes the group scales of one row (already f16-exact) as f16 pairs: group `g` in word `g / 2`,
/// low half for even `g`; the high half of an odd last word stays 0.
fn pack_f16_pairs(scales: &[f32], out: &mut [u32]) {
    for (g, &s) in scales.iter().enumerate() {
        out[g / 2] |= u32::from(half::f16::from_f32(s).to_bits()) << (16 * (g % 2));
    }
}

/// Reads `groups` f16 scales of one row (`words`), checking that they are finite and that an
/// unused high half is 0.
fn unpack_f16_pairs(format: Format, words: &[u32], groups: usize, row: usize) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(groups);
    for g in 0..words.len() * 2 {
        let bits = (words[g / 2] >> (16 * (g % 2))) as u16;
        if g >= groups {
            if bits != 0 {
                return Err(format.error(format!("unused scale half of row {row} is {bits:#06x}, not 0")));
            }
            continue;
        }
        let s = half::f16::from_bits(bits);
        if !s.is_finite() {
            return Err(format.error(format!("scale of group {g} in row {row} is {s}")));
        }
        out.push(s.to_f32());
    }
    Ok(out)
}

/// Nibble `i` of `words` (bits `4 * (i % 8)` of word `i / 8`).
fn nibble(words: &[u32], i: usize) -> u8 {
    ((words[i / 8] >> (4 * (i % 8))) & 0xF) as u8
}

/// ORs the 4-bit `value` into nibble `i` of `words` (which must be 0 there).
fn put_nibble(words: &mut [u32], i: usize, value: u8) {
    words[i / 8] |= u32::from(value & 0xF) << (4 * (i % 8));
}

/// Byte `j` of `words` (bits `8 * (j % 4)` of word `j / 4`).
fn byte(words: &[u32], j: usize) -> u8 {
    (words[j / 4] >> (8 * (j % 4))) as u8
}

/// ORs `value` into byte `j` of `words` (which must be 0 there).
fn put_byte(words: &mut [u32], j: usize, value: u8) {
    words[j / 4] |= u32::from(value) << (8 * (j % 4));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every format, int4 with and without zero points and at two group sizes.
    const FORMATS: &[Format] = &[
        Format::Ternary2,
        Format::Int8,
        Format::Int4 { group: 32, zero_point: true },
        Format::Int4 { group: 128, zero_point: false },
        Format::Ternary24,
        Format::Int4Sparse24 { group: 32 },
        Format::Int4Sparse24 { group: 128 },
        Format::F16Sparse24,
    ];

    #[test]
    fn layouts_are_whole_vec4_rows() {
        for &f in FORMATS {
            for k in [1, 2, 15, 16, 17, 63, 64, 65, 79, 80, 81, 95, 96, 97, 1000, 4096] {
                let l = f.layout(k).unwrap();
                assert_eq!(l.row_words % 4, 0, "{f} K={k}");
                assert_eq!(l.padded_k % f.k_multiple(), 0, "{f} K={k}");
                assert!(l.padded_k >= k && l.padded_k - k < f.k_multiple(), "{f} K={k}");
            }
        }
    }

    #[test]
    fn huge_k_is_an_error_not_an_overflow() {
        assert!(Format::Ternary24.layout(u32::MAX).is_err());
        assert!(Format::Int4 { group: 64, zero_point: false }.layout(u32::MAX - 10).is_err());
        assert_eq!(Format::Int8.layout(u32::MAX - 15).unwrap().padded_k, u32::MAX - 15);
    }

    #[test]
    fn format_names_round_trip() {
        for &f in FORMATS {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
        }
        for bad in ["", "int4", "int4-g16", "int4-g64-zp-zp", "int4-gx", "ternary", "Int8", "int4-sparse24-g0"] {
            assert!(matches!(bad.parse::<Format>(), Err(Error::Format { .. })), "{bad}");
        }
    }

    #[test]
    fn bad_group_is_rejected() {
        for f in [Format::Int4 { group: 16, zero_point: false }, Format::Int4Sparse24 { group: 0 }] {
            assert!(matches!(f.validate(), Err(Error::Format { .. })));
            assert!(f.layout(64).is_err());
        }
    }

    #[test]
    fn nibble_and_byte_helpers_are_little_endian() {
        let mut w = [0u32; 2];
        put_nibble(&mut w, 1, 0xA);
        put_nibble(&mut w, 9, 0x3);
        put_byte(&mut w, 3, 0xFF);
        assert_eq!(w, [0xFF00_00A0, 0x30]);
        assert_eq!(nibble(&w, 1), 0xA);
        assert_eq!(nibble(&w, 9), 0x3);
        assert_eq!(byte(&w, 3), 0xFF);
    }
}
