//! Lists every adapter wgpu finds with the capabilities milliwatt would use on it.
//! `cargo run --example devices` (honours WGPU_BACKEND, MILLIWATT_FORCE_F32, MILLIWATT_NO_SUBGROUPS).

fn main() {
    let options = milliwatt::Options::default();
    let adapters = pollster::block_on(milliwatt::list_adapters(&options));
    if adapters.is_empty() {
        eprintln!("no adapters found on {:?}; run scripts/setup to install lavapipe", options.backends);
        std::process::exit(1);
    }
    for a in adapters {
        let c = &a.capabilities;
        println!(
            "{} ({:?}, {:?}, {} {})",
            a.info.name, a.info.backend, a.info.device_type, a.info.driver, a.info.driver_info
        );
        println!(
            "  f16 {}  subgroups {} ({}..={})  dot4I8Packed {}  timestamps {}  pipeline cache {}",
            c.f16, c.subgroups, c.subgroup_min_size, c.subgroup_max_size, c.packed_dot4, c.timestamps, c.pipeline_cache
        );
        println!(
            "  storage binding {} MiB  buffer {} MiB  workgroup storage {} KiB  invocations {}",
            c.max_storage_binding >> 20,
            c.max_buffer_size >> 20,
            c.max_workgroup_storage >> 10,
            c.max_invocations
        );
    }
}
