//! The examples in `examples/` train to a stated loss: their code is
//! included here and run as the examples run it.

#[path = "../examples/mlp.rs"]
mod mlp;

#[path = "../examples/matrix_factorization.rs"]
mod matrix_factorization;

use sasrec_kernels::CpuBackend;

#[test]
fn mlp_learns_the_spirals() {
    // Untrained: about ln 3 = 1.10, chance over three classes.
    let untrained = mlp::train(&CpuBackend, 0, 1);
    assert!(untrained > 1.0, "untrained loss {untrained}");
    // 300 AdamW steps reach 0.019 (measured).
    let trained = mlp::train(&CpuBackend, 300, 1);
    assert!(trained < 0.05, "loss after 300 steps {trained}");
}

#[test]
fn matrix_factorization_recovers_held_out_ratings() {
    let (_, untrained) = matrix_factorization::train(&CpuBackend, 0, 1);
    assert!(untrained > 0.5, "untrained held-out MSE {untrained}");
    // The noise variance (0.01) is the floor; 300 Adam steps reach 0.017 on
    // ratings the model never saw (measured).
    let noise_variance = matrix_factorization::NOISE * matrix_factorization::NOISE;
    let (train, held_out) = matrix_factorization::train(&CpuBackend, 300, 1);
    assert!(train < noise_variance, "training MSE {train}");
    assert!(held_out < 2.5 * noise_variance, "held-out MSE {held_out}");
}
