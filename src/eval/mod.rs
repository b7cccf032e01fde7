//! Scoring digit models on the CPU, independently of the GPU code being judged: the MNIST digits
//! the repository stores ([`digits`]), the classifier that reads generated digits
//! ([`classifier`]) and the Fréchet distance of its features ([`frechet`]).

pub mod classifier;
pub mod digits;
pub mod frechet;

pub use classifier::Classifier;
pub use frechet::{Gaussian, frechet_distance};
