//! The non_finite family: counting NaN and infinite elements, several
//! tensors at once, on the CPU and the GPU (whole and in chunks).

mod common;

use common::{BE, rng, t, uniform};
use sasrec_kernels::Backend;
use sasrec_kernels::testing::BackendPair;

/// Tensors with known numbers of NaN and infinite values.
fn cases() -> Vec<(Vec<f32>, Vec<usize>, usize)> {
    let mut big = uniform(&mut rng(30), 5000, 1.0);
    for i in (0..5000).step_by(7) {
        big[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][i % 3];
    }
    let bad = big.iter().filter(|v| !v.is_finite()).count();
    vec![
        (vec![1.0, 2.0, 3.0], vec![3], 0),
        (
            vec![f32::NAN, 0.0, f32::INFINITY, f32::NEG_INFINITY],
            vec![2, 2],
            3,
        ),
        (vec![], vec![0, 5], 0),
        (vec![f32::MAX, f32::MIN, 1e-45], vec![3], 0),
        (big, vec![50, 100], bad),
    ]
}

#[test]
fn counts_nan_and_infinities() {
    let cases = cases();
    let tensors: Vec<_> = cases.iter().map(|(v, s, _)| t(v, s)).collect();
    let refs: Vec<_> = tensors.iter().collect();
    let expected: Vec<usize> = cases.iter().map(|c| c.2).collect();
    assert_eq!(BE.count_non_finite(&refs), expected);
    assert!(BE.count_non_finite(&[]).is_empty());
}

#[test]
fn gpu_counts_like_the_cpu() {
    // Whole, and with 1 KiB bindings (the 5000-element tensor in 20 chunks).
    for p in [BackendPair::new(), BackendPair::narrow(1024)]
        .into_iter()
        .flatten()
    {
        let cases = cases();
        let tensors: Vec<_> = cases.iter().map(|(v, s, _)| p.gpu.tensor(v, s)).collect();
        let refs: Vec<_> = tensors.iter().collect();
        let expected: Vec<usize> = cases.iter().map(|c| c.2).collect();
        assert_eq!(p.gpu.count_non_finite(&refs), expected);
    }
}
