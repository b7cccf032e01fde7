//! What the examples share: a request run with an indicatif bar that advances per step.

use std::ops::ControlFlow;

use milliwatt::{Generation, Generator, Request};

/// A bar of `steps` sampler steps showing `message`.
pub fn step_bar(steps: u32, message: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(u64::from(steps));
    bar.set_message(message);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:40} step {pos}/{len} {elapsed_precise}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Runs `request` on `generator`, showing `message` and one bar position per sampler step.
pub fn generate_with_bar(generator: &Generator, request: &Request, message: String) -> milliwatt::Result<Generation> {
    let bar = step_bar(request.steps, message);
    let out = generator.generate_blocking(request, |p| {
        bar.set_position(u64::from(p.step + 1));
        ControlFlow::Continue(())
    })?;
    bar.finish();
    Ok(out)
}
