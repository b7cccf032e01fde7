//! Every shader and every variant: preprocess, parse and validate with naga, then translate to
//! SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL (GL) with naga's writers. No GPU needed; the
//! only check of the Metal and DX12 paths this machine can run.

use milliwatt::shaders::{self, Variant};

fn default_constants(module: &naga::Module) -> naga::back::PipelineConstants {
    // Overrides take their WGSL defaults; this map only has to exist.
    let _ = module;
    naga::back::PipelineConstants::default()
}

#[test]
fn every_variant_validates_and_translates() {
    let mut failures = Vec::new();
    let variants = Variant::all();
    assert!(variants.len() >= shaders::SHADERS.len());
    for v in &variants {
        let label = v.label();
        let result = (|| -> Result<(), String> {
            let src = shaders::preprocess(v).map_err(|e| e.to_string())?;
            let (module, info) = shaders::validate(&label, &src).map_err(|e| e.to_string())?;
            let (module, info) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((naga::ShaderStage::Compute, "main")),
                &default_constants(&module),
            )
            .map_err(|e| format!("overrides: {e}"))?;

            let spv = naga::back::spv::write_vec(
                &module,
                &info,
                &naga::back::spv::Options { lang_version: (1, 3), ..Default::default() },
                Some(&naga::back::spv::PipelineOptions {
                    shader_stage: naga::ShaderStage::Compute,
                    entry_point: "main".into(),
                }),
            )
            .map_err(|e| format!("SPIR-V: {e}"))?;
            assert!(!spv.is_empty());

            let msl_opts =
                naga::back::msl::Options { lang_version: (2, 4), fake_missing_bindings: true, ..Default::default() };
            naga::back::msl::write_string(&module, &info, &msl_opts, &naga::back::msl::PipelineOptions::default())
                .map_err(|e| format!("MSL: {e}"))?;

            let hlsl_opts = naga::back::hlsl::Options {
                shader_model: naga::back::hlsl::ShaderModel::V6_2,
                fake_missing_bindings: true,
                ..Default::default()
            };
            let pipeline = naga::back::hlsl::PipelineOptions::default();
            let mut hlsl = String::new();
            naga::back::hlsl::Writer::new(&mut hlsl, &hlsl_opts, &pipeline)
                .write(&module, &info, None)
                .map_err(|e| format!("HLSL: {e}"))?;

            // GLSL (the GL backend) has no f16 and no subgroups: wgpu never offers those there.
            if !v.defines.contains("F16") && !v.defines.contains("SUBGROUPS") {
                let mut glsl = String::new();
                let opts = naga::back::glsl::Options {
                    version: naga::back::glsl::Version::Embedded { version: 310, is_webgl: false },
                    ..Default::default()
                };
                let pipe = naga::back::glsl::PipelineOptions {
                    shader_stage: naga::ShaderStage::Compute,
                    entry_point: "main".into(),
                    multiview: None,
                };
                naga::back::glsl::Writer::new(
                    &mut glsl,
                    &module,
                    &info,
                    &opts,
                    &pipe,
                    naga::proc::BoundsCheckPolicies::default(),
                )
                .and_then(|mut w| w.write())
                .map_err(|e| format!("GLSL: {e}"))?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            failures.push(format!("{label}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} variants failed:\n{}",
        failures.len(),
        variants.len(),
        failures.join("\n\n")
    );
    println!(
        "{} shader variants validated and translated to SPIR-V, MSL, HLSL (and GLSL where GL applies)",
        variants.len()
    );
}

#[test]
fn preprocessor_rejects_unknown_defines_and_directives() {
    let gemv = shaders::shader("gemv").unwrap();
    let bad = Variant::new(gemv, ["NOPE"]);
    let err = shaders::preprocess(&bad).unwrap_err().to_string();
    assert!(err.contains("unknown define `NOPE`"), "{err}");
}

#[test]
fn preprocessor_keeps_line_numbers_and_selects_branches() {
    let gemv = shaders::shader("gemv").unwrap();
    let plain = shaders::preprocess(&Variant::new(gemv, [])).unwrap();
    let sg = shaders::preprocess(&Variant::new(gemv, ["SUBGROUPS", "VEC4", "F16"])).unwrap();
    assert!(!plain.contains("subgroupAdd(") && sg.contains("subgroupAdd("));
    assert!(sg.contains("enable f16;") && !plain.contains("enable f16;"));
    assert!(plain.contains("array<elem>") && sg.contains("array<elem4>"));
}

/// Variants are the ones the kernels can build, not every subset of every shader's defines:
/// a define without what it needs, or two that exclude each other, is refused by name.
#[test]
fn variants_keep_the_shader_rules() {
    let all = Variant::all();
    let of = |name: &str| all.iter().filter(|v| v.shader.name == name).count();
    // gemm_qf: four weight formats (three flags and int4's ZERO_POINT, or plain int4) times
    // F16, VEC4, COUNT_WORK and the epilogue (BIAS, RESIDUAL, GATED only with RESIDUAL: 6 of 8).
    assert_eq!(of("gemm_qf"), 5 * 8 * 6);
    let subsets: usize = shaders::SHADERS.iter().map(|s| 1 << s.flags.len()).sum();
    assert!(all.len() < subsets);
    println!("{} variants (every subset of every shader's defines would be {subsets})", all.len());
    let refused = |shader: &'static shaders::Shader, defines: &[&'static str]| {
        let v = Variant::new(shader, defines.iter().copied());
        assert!(!all.contains(&v));
        shaders::preprocess(&v).unwrap_err().to_string()
    };
    assert!(refused(&shaders::GEMM_QF, &["W_TERNARY", "W_INT8"]).contains("exclude each other"));
    assert!(refused(&shaders::GEMM, &["GATED"]).contains("`GATED` needs `RESIDUAL`"));
    assert!(refused(&shaders::GEMM, &["F17"]).contains("unknown define `F17`"));
    for s in shaders::SHADERS {
        assert_eq!(shaders::shader(s.name), Some(s));
    }
}
