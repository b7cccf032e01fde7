//! What an app's render loop does with a texture milliwatt drew into: one render pass that shows
//! it scaled to fit the target, aspect kept, nearest-neighbour (an integer scale whenever the
//! target is at least as large), on black. Texels are read with `textureLoad`, so at a scale of 1
//! the target's pixels are the texture's bytes (on a non-sRGB target).

use milliwatt::wgpu;

const SHADER: &str = r"
struct View {
    // Top-left of the picture in the target, and target pixels per texel.
    origin: vec2<f32>,
    scale: f32,
    _pad: f32,
}

@group(0) @binding(0) var picture: texture_2d<f32>;
@group(0) @binding(1) var<uniform> view: View;

@vertex
fn vs(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    // One triangle covering the target.
    let uv = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    return vec4<f32>(uv * 2.0 - 1.0, 0.0, 1.0);
}

@fragment
fn fs(@builtin(position) at: vec4<f32>) -> @location(0) vec4<f32> {
    let p = (at.xy - view.origin) / view.scale;
    let size = vec2<f32>(textureDimensions(picture));
    if any(p < vec2<f32>(0.0)) || any(p >= size) {
        return vec4<f32>(0.0, 0.0, 0.0, 1.0);
    }
    return textureLoad(picture, vec2<i32>(floor(p)), 0);
}
";

/// Keep in sync with `View` in [`SHADER`].
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ViewParams {
    origin: [f32; 2],
    scale: f32,
    _pad: f32,
}

/// The pipeline that shows a picture texture on a target of one format.
pub struct Blit {
    pipeline: wgpu::RenderPipeline,
    view: wgpu::Buffer,
}

impl Blit {
    /// A blit onto targets of `format`.
    pub fn new(device: &wgpu::Device, format: wgpu::TextureFormat) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("blit"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("blit"),
            layout: None,
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs"),
                compilation_options: Default::default(),
                targets: &[Some(format.into())],
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
        });
        let view = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("blit.view"),
            size: size_of::<ViewParams>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Self { pipeline, view }
    }

    /// The bind group that shows `picture`.
    pub fn bind(&self, device: &wgpu::Device, picture: &wgpu::Texture) -> wgpu::BindGroup {
        let texels = picture.create_view(&wgpu::TextureViewDescriptor::default());
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("blit"),
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::TextureView(&texels) },
                wgpu::BindGroupEntry { binding: 1, resource: self.view.as_entire_binding() },
            ],
        })
    }

    /// Records a render pass drawing the picture of `size` texels (bound in `bind`) onto
    /// `target` of `target_size` pixels.
    pub fn draw(
        &self,
        queue: &wgpu::Queue,
        encoder: &mut wgpu::CommandEncoder,
        bind: &wgpu::BindGroup,
        size: (u32, u32),
        target: &wgpu::TextureView,
        target_size: (u32, u32),
    ) {
        let fit = (target_size.0 as f32 / size.0.max(1) as f32).min(target_size.1 as f32 / size.1.max(1) as f32);
        let scale = if fit >= 1.0 { fit.floor() } else { fit };
        let origin = [
            ((target_size.0 as f32 - scale * size.0 as f32) / 2.0).floor(),
            ((target_size.1 as f32 - scale * size.1 as f32) / 2.0).floor(),
        ];
        queue.write_buffer(&self.view, 0, bytemuck::bytes_of(&ViewParams { origin, scale, _pad: 0.0 }));
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("blit"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: target,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations { load: wgpu::LoadOp::Clear(wgpu::Color::BLACK), store: wgpu::StoreOp::Store },
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind, &[]);
        pass.draw(0..3, 0..1);
    }
}

/// The pixels of an `Rgba8Unorm` texture with `COPY_SRC`, rows packed.
pub fn read_rgba(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    texture: &wgpu::Texture,
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let (w, h) = (texture.width(), texture.height());
    let pitch = (w * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: u64::from(pitch * h),
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    encoder.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buffer,
            layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(pitch), rows_per_image: None },
        },
        wgpu::Extent3d { width: w, height: h, depth_or_array_layers: 1 },
    );
    queue.submit([encoder.finish()]);
    buffer.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let bytes = buffer.slice(..).get_mapped_range()?.to_vec();
    Ok(bytes.chunks(pitch as usize).flat_map(|row| row[..w as usize * 4].to_vec()).collect())
}

/// A 2D `Rgba8Unorm` texture of `size` texels with `usage`.
pub fn rgba_texture(device: &wgpu::Device, label: &str, size: (u32, u32), usage: wgpu::TextureUsages) -> wgpu::Texture {
    device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size: wgpu::Extent3d { width: size.0, height: size.1, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage,
        view_formats: &[],
    })
}
