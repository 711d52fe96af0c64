//! One Adam step in place, in `torch.optim.Adam`'s order of operations.

use super::par::{ELEM_BLOCK, PAR_MIN_ELEMS};
use super::tensor::CpuTensor;
use crate::{AdamStep, contract};
use rayon::prelude::*;

/// PyTorch's `lerp(start, end, w)`: the form it picks keeps the result
/// exact at `w = 0` and `w = 1`.
#[inline]
fn lerp(start: f32, end: f32, w: f32) -> f32 {
    if w < 0.5 {
        start + w * (end - start)
    } else {
        end - (end - start) * (1.0 - w)
    }
}

/// Updates `param`, `m` and `v` in place (see [`AdamStep`] for the formula).
pub(super) fn adam(
    param: &mut CpuTensor,
    grad: &CpuTensor,
    m: &mut CpuTensor,
    v: &mut CpuTensor,
    hp: &AdamStep,
) {
    contract::adam(param.shape(), grad.shape(), m.shape(), v.shape());
    let step_size = hp.step_size();
    let bc2_sqrt = hp.bias_correction2_sqrt();
    let (w1, w2, b2, eps) = (
        hp.one_minus_beta1(),
        hp.one_minus_beta2(),
        hp.beta2_f32(),
        hp.eps_f32(),
    );
    let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
            *m = lerp(*m, g, w1);
            *v = b2 * *v + w2 * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *p -= step_size * (*m / denom);
        }
    };

    let (p, g, m, v) = (param.data_mut(), grad.data(), m.data_mut(), v.data_mut());
    if p.len() >= PAR_MIN_ELEMS {
        p.par_chunks_mut(ELEM_BLOCK)
            .zip(g.par_chunks(ELEM_BLOCK))
            .zip(m.par_chunks_mut(ELEM_BLOCK))
            .zip(v.par_chunks_mut(ELEM_BLOCK))
            .for_each(|(((p, g), m), v)| update(p, g, m, v));
    } else {
        update(p, g, m, v);
    }
}
