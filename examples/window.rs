//! The examples window: a row of ten digits denoising live. The generation runs on a worker
//! thread on the window's own device and draws every step's preview into a texture on the GPU
//! (`Generator::generate_into`); the render loop samples that texture, redrawn after every step.
//! No picture crosses to the CPU, except when you save one.
//!
//! Keys: 0–9 draw ten of that digit, A all ten digits, space new seeds, ↑/↓ more or fewer steps,
//! Q the next model (conventional fp32, int8 and int4 on load, ternary, ternary 2:4, the distilled
//! students), S saves the digits as a PNG, Esc quits. The title shows the model, the step, ms per
//! step and the ledger's energy per digit with its ratio to the conventional model.
//!
//! ```sh
//! cargo run --release --example window
//! cargo run --release --example window -- --frames 30 --screenshot docs/window.png   # for docs and tests
//! ```

#[path = "common/blit.rs"]
mod blit;
#[path = "common/present.rs"]
mod present;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Parser;
use milliwatt::model::{DitWeights, FloatFormat, LinearFormat, QuantPolicy};
use milliwatt::wgpu;
use milliwatt::{Generator, GeneratorOptions, Gpu, Options, Request, Seeds, TextureTarget, picture};
use winit::application::ApplicationHandler;
use winit::event::{ElementState, KeyEvent, WindowEvent};
use winit::event_loop::{ActiveEventLoop, EventLoop, EventLoopProxy};
use winit::keyboard::{Key, NamedKey};
use winit::window::{Window, WindowId};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
/// Digits in the row.
const DIGITS: u32 = 10;

/// A model the window can cycle to: a shipped directory, optionally re-quantized on load.
struct Choice {
    name: &'static str,
    dir: &'static str,
    quant: Option<LinearFormat>,
    guidance: f32,
}

const CHOICES: &[Choice] = &[
    Choice { name: "conventional fp32", dir: "mnist-fp32-rf", quant: None, guidance: 3.0 },
    Choice { name: "int8 on load", dir: "mnist-fp32-rf", quant: Some(LinearFormat::Int8), guidance: 3.0 },
    Choice { name: "int4 on load", dir: "mnist-fp32-rf", quant: Some(LinearFormat::Int4 { group: 64 }), guidance: 3.0 },
    Choice { name: "ternary", dir: "mnist-ternary", quant: None, guidance: 3.0 },
    Choice { name: "ternary 2:4", dir: "mnist-ternary24", quant: None, guidance: 3.0 },
    Choice { name: "student", dir: "mnist-student", quant: None, guidance: 3.0 },
    Choice { name: "student 2:4", dir: "mnist-student24", quant: None, guidance: 3.0 },
];

#[derive(Parser, Debug)]
#[command(about = "Ten digits denoising live in a window, on any GPU")]
struct Args {
    /// The model to start with (see Q): a name of the list, e.g. ternary, student, "conventional fp32".
    #[arg(short = 'm', long, default_value = "ternary")]
    model: String,
    /// Sampler steps to start with (↑/↓ change them).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=200))]
    steps: u32,
    /// Draw ten of this digit instead of 0 to 9.
    #[arg(short = 'c', long = "class", value_parser = clap::value_parser!(u32).range(0..10))]
    class: Option<u32>,
    /// Seed of the first digit.
    #[arg(short = 's', long, default_value_t = 0)]
    seed: u64,
    /// Inner size of the window, WIDTHxHEIGHT.
    #[arg(long, default_value = "840x84", value_parser = parse_size)]
    size: (u32, u32),
    /// Quit after this many frames, once the first digits are finished (for tests and docs).
    #[arg(long)]
    frames: Option<u64>,
    /// Write the last frame here when quitting (the window's pixels, rendered offscreen).
    #[arg(long)]
    screenshot: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not a size like 840x84");
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    match (w.parse::<u32>(), h.parse::<u32>()) {
        (Ok(w), Ok(h)) if (1..=8192).contains(&w) && (1..=8192).contains(&h) => Ok((w, h)),
        _ => Err(bad()),
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args = Args::parse();
    let available: Vec<usize> =
        (0..CHOICES.len()).filter(|&i| Path::new(MODELS).join(CHOICES[i].dir).join("config.json").is_file()).collect();
    let Some(&first) = available.iter().find(|&&i| CHOICES[i].name == args.model) else {
        let names: Vec<&str> = available.iter().map(|&i| CHOICES[i].name).collect();
        eprintln!("error: --model {}: not one of the shipped models ({})", args.model, names.join(", "));
        return ExitCode::from(2);
    };
    match run(args, available, first) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args, available: Vec<usize>, first: usize) -> Result<(), BoxError> {
    let event_loop = EventLoop::<Note>::with_user_event().build()?;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_with_display_handle_from_env(Box::new(
        event_loop.owned_display_handle(),
    )));
    let mut app = App {
        classes: args.class.map_or_else(|| (0..DIGITS).collect(), |c| vec![c; DIGITS as usize]),
        steps: args.steps,
        seed: args.seed,
        args,
        instance,
        proxy: event_loop.create_proxy(),
        gfx: None,
        available,
        choice: first,
        job: None,
        pending: true,
        status: String::new(),
        finished_once: false,
        frames: 0,
        saved: 0,
        error: None,
    };
    event_loop.run_app(&mut app)?;
    app.error.map_or(Ok(()), Err)
}

/// What the worker thread tells the event loop.
#[derive(Debug)]
enum Note {
    /// A step finished: its preview is in the picture texture.
    Step { step: u32, steps: u32, ms_per_step: f64 },
    /// The request finished.
    Done(Result<Finished, String>),
}

#[derive(Debug)]
struct Finished {
    ms_per_step: f64,
    mj_per_digit: f64,
    ratio: f64,
    model: Arc<Generator>,
    choice: usize,
}

/// The window's GPU state.
struct Gfx {
    p: present::Presenter,
    gpu: Gpu,
    bind: wgpu::BindGroup,
    picture: Arc<wgpu::Texture>,
    /// The loaded model and which choice it is.
    model: Option<(usize, Arc<Generator>)>,
}

/// The request running on the worker thread.
struct Job {
    cancel: Arc<AtomicBool>,
}

struct App {
    args: Args,
    instance: wgpu::Instance,
    proxy: EventLoopProxy<Note>,
    gfx: Option<Gfx>,
    available: Vec<usize>,
    choice: usize,
    classes: Vec<u32>,
    steps: u32,
    seed: u64,
    job: Option<Job>,
    /// Draw again once the running request stops (a key changed something meanwhile).
    pending: bool,
    status: String,
    finished_once: bool,
    frames: u64,
    saved: u32,
    error: Option<BoxError>,
}

const PICTURE: (u32, u32) = (DIGITS * 28, 28);

impl App {
    fn start(&mut self, event_loop: &ActiveEventLoop) -> Result<(), BoxError> {
        let (w, h) = self.args.size;
        let attrs = Window::default_attributes()
            .with_title("milliwatt")
            .with_inner_size(winit::dpi::PhysicalSize::new(w, h))
            .with_min_inner_size(winit::dpi::PhysicalSize::new(DIGITS * 8, 8));
        let p = present::Presenter::open(&self.instance, event_loop, attrs)?;
        let gpu = Gpu::from_device(&p.device, &p.queue, &Options::default());
        println!("adapter: {}", gpu.describe());
        let usage =
            wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_SRC;
        let picture = Arc::new(blit::rgba_texture(&p.device, "window.digits", PICTURE, usage));
        let bind = p.blit.bind(&p.device, &picture);
        self.gfx = Some(Gfx { p, gpu, bind, picture, model: None });
        self.kick();
        Ok(())
    }

    /// Starts the next request if one is wanted and none runs; otherwise asks the running one to
    /// stop, and the next starts when it has.
    fn kick(&mut self) {
        if let Some(job) = &self.job {
            job.cancel.store(true, Ordering::Relaxed);
            return;
        }
        let Some(g) = &self.gfx else { return };
        if !self.pending {
            return;
        }
        self.pending = false;
        let cancel = Arc::new(AtomicBool::new(false));
        self.job = Some(Job { cancel: cancel.clone() });
        let choice_index = self.choice;
        let choice = &CHOICES[choice_index];
        let loaded = g.model.as_ref().filter(|(i, _)| *i == choice_index).map(|(_, m)| m.clone());
        let (gpu, picture, proxy) = (g.gpu.clone(), g.picture.clone(), self.proxy.clone());
        let request = Request {
            seeds: Seeds::Base(self.seed),
            steps: self.steps,
            guidance: Some(choice.guidance),
            preview: true,
            ..Request::new(self.classes.clone())
        };
        self.status = format!("{}: loading", choice.name);
        self.set_title();
        std::thread::spawn(move || {
            let done = draw(&gpu, choice_index, loaded, &request, &picture, &cancel, &proxy);
            let _ = proxy.send_event(Note::Done(done.map_err(|e| e.to_string())));
        });
    }

    fn set_title(&self) {
        if let Some(g) = &self.gfx {
            g.p.window.set_title(&format!("milliwatt: {} ({} steps)", self.status, self.steps));
        }
    }

    fn draw(&mut self, event_loop: &ActiveEventLoop) {
        let Some(g) = &mut self.gfx else { return };
        match g.p.present(&self.instance, &g.bind, PICTURE) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                self.error = Some(e);
                event_loop.exit();
                return;
            }
        }
        self.frames += 1;
        if let Some(n) = self.args.frames {
            if self.finished_once && self.frames >= n {
                if let Some(path) = self.args.screenshot.clone()
                    && let Err(e) = self.screenshot(&path)
                {
                    self.error = Some(e);
                }
                event_loop.exit();
            } else if self.finished_once {
                g.p.window.request_redraw();
            }
        }
    }

    /// The frame as the window shows it, rendered offscreen at the window's size.
    fn screenshot(&self, path: &Path) -> Result<(), BoxError> {
        let g = self.gfx.as_ref().ok_or("no window")?;
        let (device, queue) = (&g.p.device, &g.p.queue);
        let (w, h) = g.p.size();
        let (w, h) = (w.max(1), h.max(1));
        let usage = wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC;
        let target = blit::rgba_texture(device, "screenshot", (w, h), usage);
        let blit = blit::Blit::new(device, wgpu::TextureFormat::Rgba8Unorm);
        let bind = blit.bind(device, &g.picture);
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("shot") });
        blit.draw(queue, &mut encoder, &bind, PICTURE, &target.create_view(&Default::default()), (w, h));
        queue.submit([encoder.finish()]);
        let pixels = blit::read_rgba(device, queue, &target)?;
        let img = image::RgbaImage::from_raw(w, h, pixels).ok_or("screenshot size")?;
        let text = [("Software", "milliwatt examples/window".to_string()), ("status", self.status.clone())];
        picture::save_png(path, &image::DynamicImage::ImageRgba8(img), &text)?;
        println!("wrote {}", path.display());
        Ok(())
    }

    /// Saves the digits at 4× as a PNG in the working directory.
    fn save(&mut self) -> Result<(), BoxError> {
        let g = self.gfx.as_ref().ok_or("no window")?;
        let pixels = blit::read_rgba(&g.p.device, &g.p.queue, &g.picture)?;
        let img = image::RgbaImage::from_raw(PICTURE.0, PICTURE.1, pixels).ok_or("picture size")?;
        let big = image::imageops::resize(&img, PICTURE.0 * 4, PICTURE.1 * 4, image::imageops::FilterType::Nearest);
        self.saved += 1;
        let path = PathBuf::from(format!("window-{}.png", self.saved));
        let text = [("Software", "milliwatt examples/window".to_string()), ("status", self.status.clone())];
        picture::save_png(&path, &image::DynamicImage::ImageRgba8(big), &text)?;
        println!("wrote {}", path.display());
        Ok(())
    }

    /// Stops the running request within a step and leaves the event loop.
    fn quit(&mut self, event_loop: &ActiveEventLoop) {
        if let Some(job) = &self.job {
            job.cancel.store(true, Ordering::Relaxed);
        }
        event_loop.exit();
    }

    fn key(&mut self, key: Key, event_loop: &ActiveEventLoop) {
        match key {
            Key::Named(NamedKey::Escape) => self.quit(event_loop),
            Key::Named(NamedKey::Space) => self.seed += u64::from(DIGITS),
            Key::Named(NamedKey::ArrowUp) => self.steps = (self.steps * 2).min(200),
            Key::Named(NamedKey::ArrowDown) => self.steps = (self.steps / 2).max(1),
            Key::Character(c) => match c.as_str() {
                d @ ("0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9") => {
                    self.classes = vec![d.parse().unwrap_or(0); DIGITS as usize];
                }
                "a" | "A" => self.classes = (0..DIGITS).collect(),
                "q" | "Q" => {
                    let at = self.available.iter().position(|&i| i == self.choice).unwrap_or(0);
                    self.choice = self.available[(at + 1) % self.available.len()];
                }
                "s" | "S" => {
                    if let Err(e) = self.save() {
                        eprintln!("saving: {e}");
                    }
                    return;
                }
                _ => return,
            },
            _ => return,
        }
        self.pending = true;
        self.kick();
    }
}

/// Runs one request on the worker thread: loads the model if it is not the one loaded, then
/// draws into the picture with a preview after every step.
fn draw(
    gpu: &Gpu,
    choice: usize,
    loaded: Option<Arc<Generator>>,
    request: &Request,
    picture: &wgpu::Texture,
    cancel: &AtomicBool,
    proxy: &EventLoopProxy<Note>,
) -> Result<Finished, BoxError> {
    let c = &CHOICES[choice];
    let model = match loaded {
        Some(m) => m,
        None => {
            let policy = c.quant.map(|q| QuantPolicy { attention: q, mlp: q, other: FloatFormat::F32 });
            let weights = DitWeights::open(&Path::new(MODELS).join(c.dir), policy)?;
            Arc::new(Generator::new(gpu, weights, GeneratorOptions::default())?)
        }
    };
    let start = Instant::now();
    let out = model.generate_into_blocking(request, &TextureTarget::row(picture), |p| {
        let ms_per_step = 1e3 * start.elapsed().as_secs_f64() / f64::from(p.step + 1);
        let _ = proxy.send_event(Note::Step { step: p.step, steps: p.steps, ms_per_step });
        if cancel.load(Ordering::Relaxed) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    })?;
    Ok(Finished {
        ms_per_step: 1e3 * out.timings.per_step.as_secs_f64(),
        mj_per_digit: 1e3 * out.ledger.energy().total() / out.images.len() as f64,
        ratio: out.energy_ratio,
        model,
        choice,
    })
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
        let name = CHOICES[self.choice].name;
        match note {
            Note::Step { step, steps, ms_per_step } => {
                self.status = format!("{name}, step {} of {steps}, {ms_per_step:.0} ms per step", step + 1);
            }
            Note::Done(done) => {
                self.job = None;
                match done {
                    Ok(f) => {
                        self.status = format!(
                            "{}, {:.0} ms per step, {:.2} mJ per digit, 1/{:.0} of the conventional model",
                            CHOICES[f.choice].name,
                            f.ms_per_step,
                            f.mj_per_digit,
                            1.0 / f.ratio
                        );
                        self.finished_once = true;
                        if let Some(g) = &mut self.gfx {
                            g.model = Some((f.choice, f.model));
                        }
                    }
                    Err(e) if e.contains("cancelled") => {}
                    Err(e) => {
                        self.error = Some(e.into());
                        event_loop.exit();
                        return;
                    }
                }
                self.kick();
            }
        }
        self.set_title();
        if let Some(g) = &self.gfx {
            g.p.window.request_redraw();
        }
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _id: WindowId, event: WindowEvent) {
        match event {
            WindowEvent::CloseRequested => self.quit(event_loop),
            WindowEvent::Resized(size) => {
                if let Some(g) = &mut self.gfx {
                    g.p.resize(size.width, size.height);
                }
            }
            WindowEvent::RedrawRequested => self.draw(event_loop),
            WindowEvent::KeyboardInput {
                event: KeyEvent { logical_key, state: ElementState::Pressed, .. }, ..
            } => {
                self.key(logical_key, event_loop);
            }
            _ => {}
        }
    }
}
