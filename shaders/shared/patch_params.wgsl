// Parameters of patchify.wgsl and unpatchify.wgsl.
// Keep in sync with `PatchParams` in src/kernels/embed.rs.
struct PatchParams {
    images: u32,
    channels: u32,
    height: u32,
    width: u32,
    patch_size: u32,
    // Channels per patch position in the tokens (>= channels; unpatchify of learn_sigma outputs).
    token_channels: u32,
    _pad0: u32,
    _pad1: u32,
}
