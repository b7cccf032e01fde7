//! Embedding milliwatt in an app that owns its GPU: the app creates the instance, adapter, device
//! and render loop; it hands `&Device` / `&Queue` to milliwatt, which draws ten digits into a
//! texture the app owns (on the GPU, previews after each step) and returns. The app samples that
//! texture in its own render pass. milliwatt never takes the device, the queue or the event loop:
//! it records into the app's queue when asked and nothing else.
//!
//! ```sh
//! cargo run --release --example embed                  # a window; space draws new digits, Esc quits
//! cargo run --release --example embed -- --headless    # render offscreen, check, write embed.png
//! ```
//!
//! `--headless` renders the app's pass into an offscreen target at one pixel per texel and checks
//! that it shows `Generation::images` byte for byte (exit code 1 if not).

#[path = "common/blit.rs"]
mod blit;
#[path = "common/present.rs"]
mod present;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use milliwatt::model::DitWeights;
use milliwatt::wgpu;
use milliwatt::{Generation, Generator, GeneratorOptions, Gpu, Options, Request, Seeds, TextureTarget};
use winit::application::ApplicationHandler;
use winit::event::{ElementState, KeyEvent, WindowEvent};
use winit::event_loop::{ActiveEventLoop, EventLoop, EventLoopProxy};
use winit::keyboard::{Key, NamedKey};
use winit::window::{Window, WindowId};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

#[derive(Parser, Debug)]
#[command(about = "An app that owns its GPU and lets milliwatt draw into its texture")]
struct Args {
    /// Render offscreen, check the pixels against the generation's images, write a PNG.
    #[arg(long)]
    headless: bool,
    /// Model directory, or the name of one under models/.
    #[arg(short = 'm', long, default_value = "mnist-student")]
    model: String,
    /// Sampler steps.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    steps: u32,
    /// Seed of the first digit.
    #[arg(short = 's', long, default_value_t = 0)]
    seed: u64,
    /// Output PNG of the headless run.
    #[arg(short = 'o', long, default_value = "embed.png")]
    output: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run = if args.headless { headless(&args) } else { windowed(&args) };
    match run {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The app's picture of the ten digits: drawn by milliwatt, sampled by the app.
fn picture_texture(device: &wgpu::Device, size: (u32, u32)) -> wgpu::Texture {
    let usage = wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::TEXTURE_BINDING;
    blit::rgba_texture(device, "app.picture", size, usage)
}

fn model_dir(name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_dir() || p.components().count() > 1 { p.to_path_buf() } else { Path::new(MODELS).join(name) }
}

/// milliwatt on the app's device, with the model loaded.
fn generator(args: &Args, device: &wgpu::Device, queue: &wgpu::Queue) -> Result<Generator, BoxError> {
    let gpu = Gpu::from_device(device, queue, &Options::default());
    let weights = DitWeights::open(&model_dir(&args.model), None)?;
    Ok(Generator::new(&gpu, weights, GeneratorOptions::default())?)
}

fn request(steps: u32, seed: u64, preview: bool) -> Request {
    Request { seeds: Seeds::Base(seed), steps, guidance: Some(3.0), preview, ..Request::new((0..10).collect()) }
}

fn headless(args: &Args) -> Result<ExitCode, BoxError> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(&instance, None))?;
    println!("adapter: {} ({:?})", adapter.get_info().name, adapter.get_info().backend);
    let (device, queue) = present::open_device(&adapter)?;
    let generator = generator(args, &device, &queue)?;
    let size = grid_size(&generator);
    let picture = picture_texture(&device, size);
    let out = generator.generate_into_blocking(
        &request(args.steps, args.seed, false),
        &TextureTarget::row(&picture),
        |_| ControlFlow::Continue(()),
    )?;
    // The app's own pass, into its own offscreen target, one pixel per texel.
    let usage = wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC;
    let target = blit::rgba_texture(&device, "app.target", size, usage);
    let blit = blit::Blit::new(&device, wgpu::TextureFormat::Rgba8Unorm);
    let bind = blit.bind(&device, &picture);
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("app.frame") });
    let view = target.create_view(&wgpu::TextureViewDescriptor::default());
    blit.draw(&queue, &mut encoder, &bind, size, &view, size);
    queue.submit([encoder.finish()]);
    let shown = blit::read_rgba(&device, &queue, &target)?;
    let want = tiled(&out);
    let shown_img = image::RgbaImage::from_raw(size.0, size.1, shown.clone()).ok_or("frame size")?;
    shown_img.save(&args.output)?;
    let per_image = out.ledger.energy().total() / out.images.len() as f64;
    println!(
        "drew 10 digits in {:.0} ms into the app's texture; the app's render pass shows them: {}; {:.3} mJ per image \
         (ledger), wrote {}",
        1e3 * out.timings.total.as_secs_f64(),
        if shown == want { "equal to Generation::images byte for byte" } else { "DIFFERENT from Generation::images" },
        1e3 * per_image,
        args.output.display()
    );
    Ok(if shown == want { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Texels of the row of ten digits.
fn grid_size(generator: &Generator) -> (u32, u32) {
    let c = generator.config();
    (10 * c.input_size, c.input_size)
}

/// The generation's images in one row, RGBA.
fn tiled(out: &Generation) -> Vec<u8> {
    let (w, h) = (out.shape[3] as usize, out.shape[2] as usize);
    let n = out.images.len();
    let mut row = vec![0u8; n * w * h * 4];
    for (i, img) in out.images.iter().enumerate() {
        let img = img.to_rgba8();
        for y in 0..h {
            let at = (y * n * w + i * w) * 4;
            row[at..at + w * 4].copy_from_slice(&img.as_raw()[y * w * 4..(y + 1) * w * 4]);
        }
    }
    row
}

/// What the worker thread tells the event loop.
#[derive(Debug)]
enum Note {
    /// A step finished (the picture holds its preview).
    Step(u32, u32),
    /// The request finished: energy per image, or what went wrong.
    Done(Result<f64, String>),
}

struct Gfx {
    p: present::Presenter,
    bind: wgpu::BindGroup,
    picture: Arc<wgpu::Texture>,
    size: (u32, u32),
    generator: Arc<Generator>,
}

struct App {
    args: Args,
    instance: wgpu::Instance,
    proxy: EventLoopProxy<Note>,
    gfx: Option<Gfx>,
    busy: bool,
    seed: u64,
    error: Option<BoxError>,
}

fn windowed(args: &Args) -> Result<ExitCode, BoxError> {
    let event_loop = EventLoop::<Note>::with_user_event().build()?;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_with_display_handle_from_env(Box::new(
        event_loop.owned_display_handle(),
    )));
    let mut app = App {
        args: Args { output: args.output.clone(), model: args.model.clone(), ..*args },
        instance,
        proxy: event_loop.create_proxy(),
        gfx: None,
        busy: false,
        seed: args.seed,
        error: None,
    };
    event_loop.run_app(&mut app)?;
    match app.error {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

impl App {
    fn start(&mut self, event_loop: &ActiveEventLoop) -> Result<(), BoxError> {
        let attrs = Window::default_attributes()
            .with_title("milliwatt embedded")
            .with_inner_size(winit::dpi::LogicalSize::new(840.0, 120.0));
        let p = present::Presenter::open(&self.instance, event_loop, attrs)?;
        let generator = Arc::new(generator(&self.args, &p.device, &p.queue)?);
        let size = grid_size(&generator);
        let picture = Arc::new(picture_texture(&p.device, size));
        let bind = p.blit.bind(&p.device, &picture);
        self.gfx = Some(Gfx { p, bind, picture, size, generator });
        self.generate();
        Ok(())
    }

    /// Draws new digits on a worker thread; the event loop keeps running.
    fn generate(&mut self) {
        let Some(g) = &self.gfx else { return };
        if self.busy {
            return;
        }
        self.busy = true;
        let (generator, picture, proxy) = (g.generator.clone(), g.picture.clone(), self.proxy.clone());
        let request = request(self.args.steps, self.seed, true);
        std::thread::spawn(move || {
            let done = generator.generate_into_blocking(&request, &TextureTarget::row(&picture), |p| {
                let _ = proxy.send_event(Note::Step(p.step, p.steps));
                ControlFlow::Continue(())
            });
            let energy = done.map(|o| o.ledger.energy().total() / o.images.len() as f64).map_err(|e| e.to_string());
            let _ = proxy.send_event(Note::Done(energy));
        });
    }

    fn draw(&mut self, event_loop: &ActiveEventLoop) {
        let Some(g) = &mut self.gfx else { return };
        if let Err(e) = g.p.present(&self.instance, &g.bind, g.size) {
            self.error = Some(e);
            event_loop.exit();
        }
    }
}

impl ApplicationHandler<Note> for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.gfx.is_none()
            && let Err(e) = self.start(event_loop)
        {
            self.error = Some(e);
            event_loop.exit();
        }
    }

    fn user_event(&mut self, event_loop: &ActiveEventLoop, note: Note) {
        let Some(g) = &self.gfx else { return };
        match note {
            Note::Step(step, steps) => {
                g.p.window.set_title(&format!("milliwatt embedded: step {} of {steps}", step + 1))
            }
            Note::Done(Ok(joules)) => {
                self.busy = false;
                g.p.window.set_title(&format!(
                    "milliwatt embedded: {:.2} mJ per digit (ledger); space: new digits",
                    1e3 * joules
                ));
            }
            Note::Done(Err(e)) => {
                self.error = Some(e.into());
                event_loop.exit();
            }
        }
        g.p.window.request_redraw();
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _id: WindowId, event: WindowEvent) {
        match event {
            WindowEvent::CloseRequested => event_loop.exit(),
            WindowEvent::Resized(size) => {
                if let Some(g) = &mut self.gfx {
                    g.p.resize(size.width, size.height);
                }
            }
            WindowEvent::RedrawRequested => self.draw(event_loop),
            WindowEvent::KeyboardInput {
                event: KeyEvent { logical_key, state: ElementState::Pressed, .. }, ..
            } => match logical_key {
                Key::Named(NamedKey::Escape) => event_loop.exit(),
                Key::Named(NamedKey::Space) => {
                    self.seed += 10;
                    self.generate();
                }
                _ => {}
            },
            _ => {}
        }
    }
}
