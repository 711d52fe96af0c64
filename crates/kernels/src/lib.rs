//! Numerical kernels for SASRec.
//!
//! - [`Backend`]: the ops (forward and backward) every backend implements.
//! - [`contract`]: each op's shape rules and edge cases, checked the same way
//!   by every backend before it runs anything.
//! - [`CpuBackend`]: ndarray + rayon; the reference other backends are tested against.
//! - [`WgpuBackend`] (feature `gpu`, on by default): hand-written WGSL compute
//!   shaders run through wgpu.
//! - [`testing`]: the tolerance helpers and CPU-vs-GPU comparisons our own
//!   kernel tests use, for checking your kernels the same way.
//!
//! An op family has one name and one place on each side: `src/cpu/<family>.rs`
//! (the reference), `src/gpu/<family>.rs` (the launchers),
//! `shaders/<family>.wgsl` (the kernels) and `tests/<family>.rs`.
//!
//! This crate knows nothing about SASRec: it is a small, explicit tensor
//! library that a researcher can reuse with `sasrec-autograd`.

mod backend;
pub mod contract;
pub mod cpu;
pub mod dropout;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod rotary;
pub mod testing;

pub use backend::{
    AdamStep, AttentionShape, Backend, CrossEntropy, Negatives, SampledLoss, SampledLossOutput,
    SoftmaxCrossEntropy,
};
pub use cpu::CpuBackend;
pub use dropout::Dropout;
#[cfg(feature = "gpu")]
pub use gpu::WgpuBackend;
