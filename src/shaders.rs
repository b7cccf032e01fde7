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
    /// Defines this shader reads; every subset is a variant the naga test validates.
    pub flags: &'static [&'static str],
}

macro_rules! shader {
    ($name:literal, [$($flag:literal),*]) => {
        Shader {
            name: $name,
            source: include_str!(concat!("../shaders/", $name, ".wgsl")),
            flags: &[$($flag),*],
        }
    };
}

/// Every kernel shader of the crate.
pub const SHADERS: &[Shader] = &[
    shader!("gemm", ["F16", "VEC4", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"]),
    shader!("gemv", ["F16", "VEC4", "SUBGROUPS", "BIAS", "RESIDUAL", "GATED", "COUNT_WORK"]),
    shader!("elementwise", ["F16", "VEC4", "BROADCAST"]),
    shader!("convert", ["F16", "TO_F16"]),
    shader!("fma_probe", ["F16"]),
    shader!("matmul_naive", ["F16"]),
    shader!("quantize_act", ["F16"]),
    shader!("noise", ["NORMAL"]),
    shader!("patchify", ["F16"]),
    shader!("unpatchify", ["F16"]),
    shader!("timestep_embed", ["F16"]),
    shader!("class_embed", ["F16"]),
    shader!("sampler", []),
    shader!("attention", ["F16", "BLOCK_LIST", "NEIGHBOURHOOD", "COUNT_WORK"]),
    shader!("attention_naive", []),
    shader!("norm", ["F16", "SUBGROUPS", "RMS", "AFFINE", "MODULATE", "EMIT_I8"]),
    shader!("gemm_ternary_a8", ["F16", "BIAS", "RESIDUAL", "GATED"]),
    shader!("gemm_int8_a8", ["F16", "BIAS", "RESIDUAL", "GATED"]),
    shader!("gemm_ternary24_a8", ["F16", "BIAS", "RESIDUAL", "GATED"]),
    shader!("gemm_int4_a8", ["F16", "ZERO_POINT", "BIAS", "RESIDUAL", "GATED"]),
    shader!(
        "gemm_qf",
        ["F16", "VEC4", "W_TERNARY", "W_TERNARY24", "W_INT8", "ZERO_POINT", "BIAS", "RESIDUAL", "GATED"]
    ),
    shader!("gemv_ternary", ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "BIAS", "RESIDUAL", "GATED"]),
    shader!("gemv_int8", ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "BIAS", "RESIDUAL", "GATED"]),
    shader!("gemv_int4", ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "ZERO_POINT", "BIAS", "RESIDUAL", "GATED"]),
    shader!("gemv_ternary24", ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "BIAS", "RESIDUAL", "GATED"]),
    shader!("gemv_int4s24", ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "BIAS", "RESIDUAL", "GATED"]),
    shader!("gemv_f16s24", ["F16", "VEC4", "SUBGROUPS", "ACT_I8", "BIAS", "RESIDUAL", "GATED"]),
];

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

    /// Every variant of every shader (each subset of its flags), for validation.
    pub fn all() -> Vec<Variant> {
        let mut out = Vec::new();
        for s in SHADERS {
            for mask in 0u32..(1 << s.flags.len()) {
                let defs = s.flags.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, f)| *f);
                out.push(Variant::new(s, defs));
            }
        }
        out
    }
}

/// Expands `#import`, `#ifdef`, `#ifndef`, `#else` and `#endif` for `variant`.
pub fn preprocess(variant: &Variant) -> Result<String> {
    let label = variant.label();
    for d in &variant.defines {
        if !variant.shader.flags.contains(d) {
            return Err(Error::Shader { shader: label, message: format!("unknown define `{d}`") });
        }
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
/// and storage buffers read-only or read-write as declared.
pub fn layout_entries(module: &naga::Module) -> Vec<wgpu::BindGroupLayoutEntry> {
    let mut entries: Vec<wgpu::BindGroupLayoutEntry> = module
        .global_variables
        .iter()
        .filter_map(|(_, var)| {
            let binding = var.binding.as_ref()?;
            let ty = match var.space {
                naga::AddressSpace::Uniform => wgpu::BufferBindingType::Uniform,
                naga::AddressSpace::Storage { access } => {
                    wgpu::BufferBindingType::Storage { read_only: !access.contains(naga::StorageAccess::STORE) }
                }
                _ => return None,
            };
            Some(wgpu::BindGroupLayoutEntry {
                binding: binding.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
                count: None,
            })
        })
        .collect();
    entries.sort_by_key(|e| e.binding);
    entries
}
