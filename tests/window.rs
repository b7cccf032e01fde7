//! The examples window as a desktop user sees it: under a private Xvfb server (installed by
//! `bash scripts/setup --window`, which `scripts/test` runs) it opens a window on lavapipe, draws
//! the ten digits with the shipped ternary model, and writes a screenshot of its last frame, in
//! which the classifier must read at least 8 of the 10 digits as their classes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// target/<profile>/examples/window, beside this test's target/<profile>/deps/.
fn window() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = profile_dir.join("examples").join(format!("window{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is missing: run through `cargo test`, which builds the examples", path.display());
    path
}

/// A private X server, stopped when dropped.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Self {
        let free = (0..200)
            .map(|i| 100 + (std::process::id() + i) % 800)
            .find(|n| {
                !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .expect("no free X display number");
        let display = format!(":{free}");
        let child = Command::new("Xvfb")
            .args([display.as_str(), "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start Xvfb ({e}): the window test needs it; install it with `bash scripts/setup --window`"
                )
            });
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{free}"));
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < Duration::from_secs(20), "Xvfb {display} did not start within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, display }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_window_draws_ten_digits_the_classifier_reads() {
    let x = Xvfb::start();
    let shot = std::env::temp_dir().join(format!("milliwatt-window-{}.png", std::process::id()));
    let run = Command::new(window())
        .args(["--frames", "5", "--size", "840x84", "--screenshot"])
        .arg(&shot)
        .env("DISPLAY", &x.display)
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "window failed:\n{stdout}\n{stderr}");
    let img = image::open(&shot).unwrap().to_luma8();
    std::fs::remove_file(&shot).unwrap();
    // The picture (280 x 28 texels) is drawn centred at the largest integer scale that fits.
    let (w, h) = (img.width(), img.height());
    let scale = (w / 280).min(h / 28).max(1);
    let (ox, oy) = ((w - 280 * scale) / 2, (h - 28 * scale) / 2);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let classifier = milliwatt::eval::Classifier::load(&dir.join("models/classifier/classifier.safetensors")).unwrap();
    let mut read = Vec::new();
    for digit in 0..10u32 {
        let pixels: Vec<u8> = (0..28 * 28)
            .map(|p| {
                let (px, py) = (p % 28, p / 28);
                let at = |d: u32| d * scale + scale / 2;
                img.get_pixel(ox + at(digit * 28 + px), oy + at(py))[0]
            })
            .collect();
        read.push(classifier.run(&pixels).class());
    }
    let right = read.iter().enumerate().filter(|&(i, &c)| u32::from(c) == i as u32).count();
    assert!(right >= 8, "the classifier read {read:?} in the window's digits 0 to 9 ({right} of 10 right)\n{stdout}");
}
