//! The same training run on the CPU and the GPU backend: 20 steps give the
//! same losses, with and without dropout (both backends draw the same
//! counter-based masks).
//!
//! Tolerance 1e-4 relative per loss: the backends sum in different orders, so
//! each op differs by a few ulps; 20 Adam steps amplify that to ~1e-5. A
//! different dropout mask or a wrong kernel changes the loss by far more.
//!
//! The CPU backend with bf16 products follows the f32 run within 1e-2
//! relative per loss: bf16 operands move each logit by about 2^-8 of its
//! terms (a few 1e-3 here), and 20 steps of slightly different gradients
//! add to that; a wrong bf16 product is off by far more.

mod common;

use sasrec_kernels::cpu::{Bf16Kernel, Bf16Unsupported};
use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::{ModelConfig, TrainConfig};

fn losses<B: Backend>(backend: &B, dropout: f32) -> Vec<f32> {
    let config = ModelConfig {
        num_items: 400,
        max_len: 20,
        dim: 32,
        heads: 2,
        layers: 2,
        ff_dim: 128,
        dropout,
        options: Default::default(),
    };
    common::step_losses(
        backend,
        config,
        &TrainConfig::default(),
        &common::users(400),
    )
}

fn compare(dropout: f32) {
    let Some(gpu) = sasrec_kernels::gpu::test_backend() else {
        return;
    };
    let cpu = losses(&CpuBackend, dropout);
    let gpu = losses(&gpu, dropout);
    for (step, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        assert!(
            (c - g).abs() <= 1e-4 * c.abs(),
            "step {}: cpu loss {c}, gpu loss {g}",
            step + 1
        );
    }
    assert!(cpu[19] < cpu[0], "the loss should fall: {cpu:?}");
}

#[test]
fn gpu_and_cpu_train_alike_without_dropout() {
    compare(0.0);
}

#[test]
fn gpu_and_cpu_train_alike_with_dropout() {
    compare(0.1);
}

#[test]
fn bf16_products_train_like_f32_on_every_cpu_kernel() {
    let f32_run = losses(&CpuBackend, 0.1);
    for kernel in Bf16Kernel::ALL {
        let Ok(bf16) = CpuBackend::with_bf16_kernel(kernel) else {
            eprintln!(
                "bf16_products_train_like_f32_on_every_cpu_kernel: skipped the {kernel} kernel: {}",
                Bf16Unsupported {
                    kernel: Some(kernel)
                }
            );
            continue;
        };
        let run = losses(&bf16, 0.1);
        for (step, (a, b)) in f32_run.iter().zip(&run).enumerate() {
            assert!(
                (a - b).abs() <= 1e-2 * a.abs(),
                "{kernel}, step {}: f32 loss {a}, bf16 loss {b}",
                step + 1
            );
        }
        // Deterministic: the same run gives the same bits.
        let again = losses(&bf16, 0.1);
        assert!(
            run.iter()
                .zip(&again)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{kernel}: two runs differ"
        );
    }
}
