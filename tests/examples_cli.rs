//! The examples as a user runs them. The main command (examples/generate) writes a PNG grid
//! carrying the generation parameters in text chunks, and a bad flag value is one line and exit
//! code 2; the embedding example, headless, shows `Generation::images` byte for byte through the
//! app's own render pass. `cargo test` builds the examples beside the tests; this runs the built
//! binaries on the default adapter (lavapipe here).

use std::path::PathBuf;
use std::process::Command;

/// target/<profile>/examples/<name>, beside this test's target/<profile>/deps/.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is missing: run through `cargo test`, which builds the examples", path.display());
    path
}

fn generate() -> PathBuf {
    example("generate")
}

#[test]
fn embed_headless_shows_the_images_byte_for_byte() {
    let out = std::env::temp_dir().join(format!("milliwatt-embed-{}.png", std::process::id()));
    let run = Command::new(example("embed")).args(["--headless", "-o"]).arg(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "embed failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("equal to Generation::images byte for byte"), "{stdout}");
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (280, 28));
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn generate_writes_a_grid_with_its_parameters() {
    let out = std::env::temp_dir().join(format!("milliwatt-generate-{}.png", std::process::id()));
    let run = Command::new(generate())
        .args([
            "-c",
            "3,7",
            "-b",
            "2",
            "-s",
            "5",
            "--steps",
            "2",
            "--cfg-scale",
            "2.5",
            "--floats",
            "f16",
            "--int8-attention",
            "--int8-attention-output",
            "--int8-qkv",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "generate failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("energy per image"), "{stdout}");
    let img = image::open(&out).unwrap();
    // 2 × 2 digits of 28 pixels enlarged 4 times, 4 pixels apart.
    assert_eq!((img.width(), img.height()), (2 * 112 + 4, 2 * 112 + 4));
    let text = milliwatt::picture::png_text(&out).unwrap();
    let get = |k: &str| text.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(get("classes").as_deref(), Some("3,7"));
    assert_eq!(get("batch").as_deref(), Some("2"));
    assert_eq!(get("seed").as_deref(), Some("5"));
    assert_eq!(get("steps").as_deref(), Some("2"));
    assert_eq!(get("cfg_scale").as_deref(), Some("2.5"));
    assert_eq!(get("sampler").as_deref(), Some("euler"));
    assert_eq!(get("attention").as_deref(), Some("int8"));
    assert_eq!(get("attention_output").as_deref(), Some("int8"));
    assert_eq!(get("qkv").as_deref(), Some("int8"));
    // The shipped ternary model with its float layers and activations in f16.
    assert!(get("quantization").is_some_and(|q| q.contains(r#""other":"f16""#)), "{text:?}");
    assert!(get("parameters").is_some_and(|p| p.contains("steps: 2")), "{text:?}");
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn a_bad_flag_value_is_one_line_and_exit_code_2() {
    for args in [
        &["--steps", "0"][..],
        &["--cfg-scale", "-1"],
        &["-c", "10"],
        &["--quant", "int3"],
        &["-m", "no-such-model"],
        &["--floats", "f64"],
        // The shipped model is pre-packed: its block linears cannot be re-quantized.
        &["--quant", "int8"],
    ] {
        let run = Command::new(generate()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: "), "{args:?}: {stderr}");
    }
}
