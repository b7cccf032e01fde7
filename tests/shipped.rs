//! The shipped models on the CPU reference (`milliwatt::model::reference`) against the trainer's fixture
//! outputs; the GPU runs the same check in tests/gpu (shipped_cases.rs).

#[path = "common/shipped.rs"]
mod shipped;

use shipped::{MODELS, Shipped, agree};

#[test]
fn shipped_models_match_the_trainer_on_the_cpu_reference() {
    for name in MODELS {
        let s = Shipped::load(name).unwrap();
        let extra = milliwatt::model::reference::Scalars { guidance: s.guidance.as_deref(), step: s.step.as_deref() };
        let got = milliwatt::model::reference::forward_with(&s.weights, &s.x, &s.t, &s.y, extra).unwrap().out;
        println!("{}", agree(name, s.int8(), &got, &s.out).unwrap());
    }
}

#[test]
fn shipped_configs_share_their_size_fields() {
    let configs: Vec<_> = MODELS.iter().map(|n| Shipped::load(n).unwrap().weights.config).collect();
    for c in &configs[1..] {
        let size = |c: &milliwatt::model::DitConfig| {
            (c.input_size, c.patch_size, c.in_channels, c.hidden_size, c.depth, c.num_heads, c.mlp_ratio, c.num_classes)
        };
        assert_eq!(size(c), size(&configs[0]));
    }
}

#[test]
fn the_classifier_reads_the_held_out_digits() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let classifier = milliwatt::eval::Classifier::load(&dir.join("models/classifier/classifier.safetensors")).unwrap();
    let split = milliwatt::eval::digits::load(&milliwatt::eval::digits::default_dir()).unwrap();
    let right = classifier
        .run_all(&split.held_out.images)
        .iter()
        .zip(&split.held_out.labels)
        .filter(|(o, l)| o.class() == **l)
        .count();
    assert!(right >= 980, "{right} of 1000 held-out digits classified right (the model card says 986)");
}
