//! What the windowed examples share: a winit window, its wgpu surface on a device of their own,
//! and the frame loop's care: a non-sRGB format where offered (texel bytes shown as they are),
//! resizing, minimising (size zero: nothing drawn), an outdated surface reconfigured and a lost
//! one made again.

use std::sync::Arc;

use milliwatt::wgpu;
use winit::event_loop::ActiveEventLoop;
use winit::window::{Window, WindowAttributes};

use crate::blit::Blit;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The app's device: every feature milliwatt can use that the adapter has, the adapter's limits.
pub fn open_device(adapter: &wgpu::Adapter) -> Result<(wgpu::Device, wgpu::Queue), BoxError> {
    let desc = wgpu::DeviceDescriptor {
        label: Some("app"),
        required_features: adapter.features() & milliwatt::gpu::WANTED_FEATURES,
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    };
    Ok(pollster::block_on(adapter.request_device(&desc))?)
}

/// A window and the device that draws into it.
pub struct Presenter {
    pub window: Arc<Window>,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub blit: Blit,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
}

impl Presenter {
    /// Opens a window with `attrs`, an adapter that can present to it, and a device with every
    /// feature milliwatt can use that the adapter has.
    pub fn open(
        instance: &wgpu::Instance,
        event_loop: &ActiveEventLoop,
        attrs: WindowAttributes,
    ) -> Result<Self, BoxError> {
        let window = Arc::new(event_loop.create_window(attrs)?);
        let surface = instance.create_surface(window.clone())?;
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            compatible_surface: Some(&surface),
            power_preference: wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance),
            ..Default::default()
        }))?;
        let (device, queue) = open_device(&adapter)?;
        let size = window.inner_size();
        let mut config = surface
            .get_default_config(&adapter, size.width.max(1), size.height.max(1))
            .ok_or("the adapter cannot present to this window")?;
        let caps = surface.get_capabilities(&adapter);
        config.format = caps.formats.iter().copied().find(|f| !f.is_srgb()).unwrap_or(config.format);
        surface.configure(&device, &config);
        let blit = Blit::new(&device, config.format);
        Ok(Self { window, device, queue, blit, surface, config })
    }

    /// The drawable size, pixels.
    pub fn size(&self) -> (u32, u32) {
        (self.config.width, self.config.height)
    }

    /// Follows a resize; a minimised window (size zero) is remembered, not configured.
    pub fn resize(&mut self, width: u32, height: u32) {
        self.config.width = width;
        self.config.height = height;
        if width > 0 && height > 0 {
            self.surface.configure(&self.device, &self.config);
            self.window.request_redraw();
        }
    }

    /// Draws `bind`'s picture of `picture` texels fitted to the window and presents it. Returns
    /// false when no frame was drawn (minimised, or the surface needed care: a redraw is asked for).
    pub fn present(
        &mut self,
        instance: &wgpu::Instance,
        bind: &wgpu::BindGroup,
        picture: (u32, u32),
    ) -> Result<bool, BoxError> {
        if self.config.width == 0 || self.config.height == 0 {
            return Ok(false);
        }
        let frame = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(f) | wgpu::CurrentSurfaceTexture::Suboptimal(f) => f,
            wgpu::CurrentSurfaceTexture::Outdated => {
                self.surface.configure(&self.device, &self.config);
                self.window.request_redraw();
                return Ok(false);
            }
            wgpu::CurrentSurfaceTexture::Lost => {
                self.surface = instance.create_surface(self.window.clone())?;
                self.surface.configure(&self.device, &self.config);
                self.window.request_redraw();
                return Ok(false);
            }
            _ => {
                self.window.request_redraw(); // timeout or occluded: try the next frame
                return Ok(false);
            }
        };
        let view = frame.texture.create_view(&wgpu::TextureViewDescriptor::default());
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("frame") });
        self.blit.draw(&self.queue, &mut encoder, bind, picture, &view, self.size());
        self.queue.submit([encoder.finish()]);
        self.window.pre_present_notify();
        self.queue.present(frame);
        Ok(true)
    }
}
