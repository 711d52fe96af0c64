//! The swiglu family: `silu(gate) * up` on the CPU against f64 and finite
//! differences, then the WGSL kernels against the CPU, chunked included.

mod common;

use common::{BE, FWD, check_grad, dot64, rng, t, to64, uniform};
use sasrec_kernels::Backend;
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};

fn ref_swiglu(gate: &[f64], up: &[f64]) -> Vec<f64> {
    gate.iter()
        .zip(up)
        .map(|(&a, &b)| a / (1.0 + (-a).exp()) * b)
        .collect()
}

fn swiglu_case(seed: u64, n: usize) {
    let mut r = rng(seed);
    let gate = uniform(&mut r, n, 4.0);
    let up = uniform(&mut r, n, 1.0);
    let (tg, tu) = (t(&gate, &[n]), t(&up, &[n]));
    let y = BE.swiglu(&tg, &tu);
    let (g64, u64_) = (to64(&gate), to64(&up));
    assert_close("swiglu", y.data(), &ref_swiglu(&g64, &u64_), FWD);

    let dy = uniform(&mut r, n, 1.0);
    let dy64 = to64(&dy);
    let (dgate, dup) = BE.swiglu_backward(&t(&dy, &[n]), &tg, &tu);
    check_grad("swiglu dgate", &gate, dgate.data(), |g| {
        dot64(&dy64, &ref_swiglu(g, &u64_))
    });
    check_grad("swiglu dup", &up, dup.data(), |u| {
        dot64(&dy64, &ref_swiglu(&g64, u))
    });
}

#[test]
fn swiglu_small_and_on_rayon_pool() {
    swiglu_case(1, 1);
    swiglu_case(2, 77);
    // > PAR_MIN_ELEMS: several rayon blocks.
    swiglu_case(3, 40_001);
}

/// Forward and backward of random values of `shape` on both backends.
fn gpu_matches_cpu(p: &BackendPair, rng: &mut rand_chacha::ChaCha8Rng, shape: &[usize]) {
    let n: usize = shape.iter().product();
    let (cg, gg) = p.tensor(&uniform(rng, n, 6.0), shape);
    let (cu, gu) = p.tensor(&uniform(rng, n, 1.0), shape);
    let (cdy, gdy) = p.tensor(&uniform(rng, n, 1.0), shape);
    let tol = Tol::new(1e-5, 1e-6);
    p.check(
        "swiglu",
        &p.cpu.swiglu(&cg, &cu),
        &p.gpu.swiglu(&gg, &gu),
        tol,
    );
    let (cdg, cdu) = p.cpu.swiglu_backward(&cdy, &cg, &cu);
    let (gdg, gdu) = p.gpu.swiglu_backward(&gdy, &gg, &gu);
    p.check("swiglu dgate", &cdg, &gdg, tol);
    p.check("swiglu dup", &cdu, &gdu, tol);
}

#[test]
fn swiglu_forward_and_backward() {
    let Some(p) = BackendPair::new() else { return };
    let mut rng = rng(5);
    // Below, at and past one 256-wide workgroup, and a 2-D shape.
    for shape in [&[1][..], &[255], &[257], &[37, 129]] {
        gpu_matches_cpu(&p, &mut rng, shape);
    }
}

#[test]
fn swiglu_chunked_across_small_bindings() {
    // 1 KiB bindings hold 256 floats: 1000 elements go in 4 chunks.
    let Some(p) = BackendPair::narrow(1024) else {
        return;
    };
    gpu_matches_cpu(&p, &mut rng(6), &[1000]);
}
