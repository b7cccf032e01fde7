//! WGSL sources embedded in the binary, a small preprocessor, and naga validation.
//!
//! One kernel per file in `shaders/`, entry point `main`. Shared code lives in `shaders/shared/` and
//! is pulled in with `#import name`. Variants that `override` constants cannot express (element
//! type, subgroup use, vector width of a binding) are chosen with `#ifdef NAME` / `#ifndef NAME` /
//! `#else` / `#endif` over a set of defines; everything else (tile sizes, workgroup size, column
//! counts) is an `override` constant set per pipeline.

use std::collections::BTreeSet;

use crate::error::{Error, Result};

/// A shader file in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shader {
    /// File stem, e.g. `gemv`.
    pub name: &'static str,
    /// WGSL text.
    pub source: &'static str,
    /// Defines this shader reads.
    pub flags: &'static [&'static str],
    /// Groups of its flags of which a variant sets at most one (formats that exclude each
    /// other), beside the rules every shader follows ([`REQUIRES`]).
    pub exclusive: &'static [&'static [&'static str]],
}

/// Defines that only mean something with another: (`flag`, what it needs). A variant breaking
/// one is never built, so [`Variant::all`] leaves it out and [`preprocess`] refuses it.
pub const REQUIRES: &[(&str, &str)] = &[
    // A gate multiplies the value added to the residual (shared/epilogue.wgsl).
    ("GATED", "RESIDUAL"),
    // The affine weight is RMSNorm's (DiT's LayerNorm has none).
    ("AFFINE", "RMS"),
    // The neighbourhood is a block list computed in the shader.
    ("NEIGHBOURHOOD", "BLOCK_LIST"),
];

/// The shader table, one line per file: a constant per shader (so a misspelled name fails to
/// compile) and [`SHADERS`], every shader in order.
macro_rules! shaders {
    ($($ident:ident = $name:literal [$($flag:literal),*] $(exclusive [$([$($x:literal),*]),*])?;)*) => {
        $(
            #[doc = concat!("`shaders/", $name, ".wgsl`.")]
            pub const $ident: Shader = Shader {
                name: $name,
                source: include_str!(concat!("../shaders/", $name, ".wgsl")),
                flags: &[$($flag),*],
                exclusive: &[$($(&[$($x),*]),*)?],
            };
        )*

        /// Every kernel shader of the crate.
        pub const SHADERS: &[Shader] = &[$($ident),*];
    };
}

shaders! {
    GEMM = "gemm" ["F16", "VEC4", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    GEMV = "gemv" ["F16", "VEC4", "SUBGROUPS", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    ELEMENTWISE = "elementwise" ["F16", "VEC4", "BROADCAST", "COUNT_WORK"];
    CONVERT = "convert" ["F16", "TO_F16"];
    STEP_SLICE = "step_slice" ["F16", "VEC4", "COUNT_WORK"];
    FMA_PROBE = "fma_probe" ["F16"];
    MATMUL_NAIVE = "matmul_naive" ["F16"];
    QUANTIZE_ACT = "quantize_act" ["F16", "COUNT_WORK"];
    NOISE = "noise" ["NORMAL"];
    PATCHIFY = "patchify" ["F16", "COUNT_WORK"];
    UNPATCHIFY = "unpatchify" ["F16", "COUNT_WORK"];
    TIMESTEP_EMBED = "timestep_embed" ["F16", "COUNT_WORK"];
    CLASS_EMBED = "class_embed" ["F16", "COUNT_WORK"];
    SAMPLER = "sampler" ["COUNT_WORK"];
    ATTENTION = "attention" ["F16", "I8", "EMIT_I8", "QKV_I8", "BLOCK_LIST", "NEIGHBOURHOOD", "COUNT_WORK"];
    ATTENTION_NAIVE = "attention_naive" [];
    NORM = "norm" ["F16", "SUBGROUPS", "RMS", "AFFINE", "MODULATE", "EMIT_I8", "COUNT_WORK"];
    GEMM_TERNARY_A8 = "gemm_ternary_a8" ["F16", "X_RESIDENT", "X_GROUPED", "Y_I8", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    GEMM_INT8_A8 = "gemm_int8_a8" ["F16", "X_RESIDENT", "X_GROUPED", "Y_I8", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    GEMM_TERNARY24_A8 = "gemm_ternary24_a8" ["F16", "X_RESIDENT", "X_GROUPED", "Y_I8", "SKIP_ZEROS", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    GEMM_INT4_A8 = "gemm_int4_a8" ["F16", "X_RESIDENT", "ZERO_POINT", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    // One weight format per variant: none of W_* is int4, the only one with zero points.
    GEMM_QF = "gemm_qf" ["F16", "VEC4", "W_TERNARY", "W_TERNARY24", "W_INT8", "ZERO_POINT", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"]
        exclusive [["W_TERNARY", "W_TERNARY24", "W_INT8", "ZERO_POINT"]];
    GEMV_TERNARY = "gemv_ternary" ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    GEMV_INT8 = "gemv_int8" ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    GEMV_INT4 = "gemv_int4" ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "ZERO_POINT", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    GEMV_TERNARY24 = "gemv_ternary24" ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    GEMV_INT4S24 = "gemv_int4s24" ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    GEMV_F16S24 = "gemv_f16s24" ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"];
    DECODE_RGBA8 = "decode_rgba8" ["TEXTURE", "COUNT_WORK"];
    MLP_TERNARY_A8 = "mlp_ternary_a8" ["F16", "COUNT_WORK"];
}

/// Shared snippets, imported with `#import name`.
const SHARED: &[(&str, &str)] = &[
    ("elem", include_str!("../shaders/shared/elem.wgsl")),
    ("matmul_params", include_str!("../shaders/shared/matmul_params.wgsl")),
    ("reduce", include_str!("../shaders/shared/reduce.wgsl")),
    ("act_quant", include_str!("../shaders/shared/act_quant.wgsl")),
    ("gemv_q", include_str!("../shaders/shared/gemv_q.wgsl")),
    ("dense_slice", include_str!("../shaders/shared/dense_slice.wgsl")),
    ("sparse24_slice", include_str!("../shaders/shared/sparse24_slice.wgsl")),
    ("gemm_tile", include_str!("../shaders/shared/gemm_tile.wgsl")),
    ("gemm_a8", include_str!("../shaders/shared/gemm_a8.wgsl")),
    ("epilogue", include_str!("../shaders/shared/epilogue.wgsl")),
    ("trig", include_str!("../shaders/shared/trig.wgsl")),
    ("patch_params", include_str!("../shaders/shared/patch_params.wgsl")),
    ("matmul_params_q", include_str!("../shaders/shared/matmul_params_q.wgsl")),
    ("work_count", include_str!("../shaders/shared/work_count.wgsl")),
    ("grid", include_str!("../shaders/shared/grid.wgsl")),
    ("ternary_codes", include_str!("../shaders/shared/ternary_codes.wgsl")),
];

/// Looks a shader up by name.
pub fn shader(name: &str) -> Option<&'static Shader> {
    SHADERS.iter().find(|s| s.name == name)
}

/// A shader plus the defines that select one variant of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Variant {
    /// The shader.
    pub shader: &'static Shader,
    /// Active defines.
    pub defines: BTreeSet<&'static str>,
}

impl Variant {
    /// A variant of `shader` with the given defines (those the shader does not read are an error
    /// at preprocessing time, so a typo cannot silently select the default path).
    pub fn new(shader: &'static Shader, defines: impl IntoIterator<Item = &'static str>) -> Self {
        Self { shader, defines: defines.into_iter().collect() }
    }

    /// Human-readable label, `name[DEF,...]`.
    pub fn label(&self) -> String {
        let d: Vec<&str> = self.defines.iter().copied().collect();
        format!("milliwatt.{}[{}]", self.shader.name, d.join(","))
    }

    /// Every variant the kernels can build: each subset of a shader's flags that keeps its
    /// rules ([`REQUIRES`], [`Shader::exclusive`]). The naga test validates and translates each;
    /// the GPU suite and the benchmarks check that every pipeline they made is one of them.
    pub fn all() -> Vec<Variant> {
        let mut out = Vec::new();
        for s in SHADERS {
            for mask in 0u32..(1 << s.flags.len()) {
                let defs = s.flags.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, f)| *f);
                let v = Variant::new(s, defs);
                if v.broken_rule().is_none() {
                    out.push(v);
                }
            }
        }
        out
    }

    /// The first rule the defines break, in words: an unknown define, one without what it
    /// needs, or two that exclude each other.
    pub fn broken_rule(&self) -> Option<String> {
        if let Some(d) = self.defines.iter().find(|d| !self.shader.flags.contains(d)) {
            return Some(format!("unknown define `{d}`"));
        }
        if let Some((flag, needs)) =
            REQUIRES.iter().find(|(f, n)| self.defines.contains(f) && !self.defines.contains(n))
        {
            return Some(format!("`{flag}` needs `{needs}`"));
        }
        self.shader.exclusive.iter().find_map(|group| {
            let set: Vec<&str> = group.iter().copied().filter(|f| self.defines.contains(f)).collect();
            (set.len() > 1).then(|| format!("{} exclude each other", set.join(", ")))
        })
    }
}

/// Expands `#import`, `#ifdef`, `#ifndef`, `#else` and `#endif` for `variant`.
pub fn preprocess(variant: &Variant) -> Result<String> {
    let label = variant.label();
    if let Some(message) = variant.broken_rule() {
        return Err(Error::Shader { shader: label, message });
    }
    let mut out = String::with_capacity(variant.shader.source.len() * 2);
    let mut imported = BTreeSet::new();
    expand(variant.shader.name, variant.shader.source, &variant.defines, &mut imported, &mut out)
        .map_err(|message| Error::Shader { shader: label, message })?;
    Ok(out)
}

fn expand(
    file: &str,
    source: &str,
    defines: &BTreeSet<&'static str>,
    imported: &mut BTreeSet<&'static str>,
    out: &mut String,
) -> std::result::Result<(), String> {
    // Stack of (branch taken, some branch of this #if already taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let at = || format!("{file}.wgsl:{}", i + 1);
        let active = stack.iter().all(|&(on, _)| on);
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("#ifdef ").or_else(|| t.strip_prefix("#ifndef ")) {
            let set = defines.contains(rest.trim());
            let on = if t.starts_with("#ifdef") { set } else { !set };
            stack.push((on, on));
        } else if t.starts_with("#else") {
            let top = stack.last_mut().ok_or_else(|| format!("{}: #else without #ifdef", at()))?;
            *top = (!top.1, true);
        } else if t.starts_with("#endif") {
            stack.pop().ok_or_else(|| format!("{}: #endif without #ifdef", at()))?;
        } else if let Some(name) = t.strip_prefix("#import ") {
            if !active {
                continue;
            }
            let name = name.trim();
            let &(key, text) =
                SHARED.iter().find(|(n, _)| *n == name).ok_or_else(|| format!("{}: unknown import `{name}`", at()))?;
            if imported.insert(key) {
                expand(key, text, defines, imported, out)?;
            }
        } else if t.starts_with('#') {
            return Err(format!("{}: unknown directive `{t}`", at()));
        } else if active {
            out.push_str(line);
            out.push('\n');
        } else {
            // Keep line numbers stable for naga's diagnostics.
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err(format!("{file}.wgsl: #ifdef without #endif"));
    }
    Ok(())
}

/// Parses and validates preprocessed WGSL with naga, returning the module and its info.
pub fn validate(label: &str, source: &str) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| Error::Shader { shader: label.into(), message: e.emit_to_string(source) })?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| Error::Shader { shader: label.into(), message: e.emit_to_string(source) })?;
    Ok((module, info))
}

/// Bind-group-layout entries (group 0) for every resource binding `module` declares: uniforms,
/// storage buffers read-only or read-write as declared, and write-only 2D `rgba8unorm` storage
/// textures (the GPU-resident output).
pub fn layout_entries(module: &naga::Module) -> Vec<wgpu::BindGroupLayoutEntry> {
    let mut entries: Vec<wgpu::BindGroupLayoutEntry> = module
        .global_variables
        .iter()
        .filter_map(|(_, var)| {
            let binding = var.binding.as_ref()?;
            let buffer = |ty| wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None };
            let ty = match var.space {
                naga::AddressSpace::Uniform => buffer(wgpu::BufferBindingType::Uniform),
                naga::AddressSpace::Storage { access } => {
                    buffer(wgpu::BufferBindingType::Storage { read_only: !access.contains(naga::StorageAccess::STORE) })
                }
                naga::AddressSpace::Handle => match module.types[var.ty].inner {
                    naga::TypeInner::Image {
                        dim: naga::ImageDimension::D2,
                        arrayed: false,
                        class: naga::ImageClass::Storage { format: naga::StorageFormat::Rgba8Unorm, .. },
                    } => wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::WriteOnly,
                        format: wgpu::TextureFormat::Rgba8Unorm,
                        view_dimension: wgpu::TextureViewDimension::D2,
                    },
                    _ => return None,
                },
                _ => return None,
            };
            Some(wgpu::BindGroupLayoutEntry {
                binding: binding.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty,
                count: None,
            })
        })
        .collect();
    entries.sort_by_key(|e| e.binding);
    entries
}
