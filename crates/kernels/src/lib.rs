//! Numerical kernels for SASRec.
//!
//! - [`Backend`]: the ops (forward and backward) every backend implements.
//! - [`CpuBackend`]: ndarray + rayon; the reference other backends are tested against.
//! - [`WgpuBackend`]: hand-written WGSL compute shaders run through wgpu.
//!
//! This crate knows nothing about SASRec: it is a small, explicit tensor
//! library that a researcher can reuse with `sasrec-autograd`.

mod backend;
pub mod cpu;
pub mod dropout;
pub mod gpu;

pub use backend::{AdamStep, AttentionShape, Backend, CrossEntropy};
pub use cpu::CpuBackend;
pub use dropout::Dropout;
pub use gpu::WgpuBackend;
