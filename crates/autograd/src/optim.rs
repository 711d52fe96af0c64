//! Optimisers over a [`ParamStore`], as `torch.optim` defines them: [`Adam`]
//! (no weight decay, no amsgrad) and [`AdamW`] (decoupled weight decay);
//! and [`clip_grad_norm`], as `torch.nn.utils.clip_grad_norm_`.
//!
//! ```
//! use sasrec_autograd::{Adam, ParamStore, Tape};
//! use sasrec_kernels::{Backend, CpuBackend};
//!
//! let b = CpuBackend;
//! let mut params = ParamStore::new();
//! params.add("w", b.tensor(&[1.0, -2.0], &[2]));
//! let mut adam = Adam::new(&b, &params, 0.1, 0.9, 0.999, 1e-8);
//! for _ in 0..3 {
//!     let mut tape = Tape::new(&b, true);
//!     let vars = tape.params(&params);
//!     let squares = tape.mul(vars[0], vars[0]);
//!     let loss = tape.sum(squares);
//!     let grads = tape.backward(loss);
//!     drop(tape);
//!     adam.step(&b, &mut params, &grads, &vars);
//! }
//! ```

use sasrec_kernels::{AdamStep, Backend};

use crate::{Gradients, ParamStore, Var};

/// Adam, as `torch.optim.Adam` with its defaults (no weight decay, no
/// amsgrad): first and second moments of every parameter and the step count.
pub struct Adam<B: Backend> {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Steps taken so far.
    pub step: u64,
    /// First moments, in parameter order.
    pub exp_avg: Vec<B::Tensor>,
    /// Second moments, in parameter order.
    pub exp_avg_sq: Vec<B::Tensor>,
}

impl<B: Backend> Adam<B> {
    /// Fresh state (zero moments) for every parameter of `params`.
    pub fn new(
        backend: &B,
        params: &ParamStore<B>,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    ) -> Self {
        let zeros = || {
            params
                .iter()
                .map(|(_, _, t)| backend.zeros(&backend.shape(t)))
                .collect()
        };
        Adam {
            lr,
            beta1,
            beta2,
            eps,
            step: 0,
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
        }
    }

    /// Updates every parameter that has a gradient; `vars[i]` is parameter `i`
    /// on the tape the gradients came from.
    pub fn step(
        &mut self,
        backend: &B,
        params: &mut ParamStore<B>,
        grads: &Gradients<B>,
        vars: &[Var],
    ) {
        self.step += 1;
        let hp = AdamStep {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            step: self.step,
        };
        for id in params.ids().collect::<Vec<_>>() {
            let i = id.index();
            if let Some(grad) = grads.get(vars[i]) {
                backend.adam(
                    params.get_mut(id),
                    grad,
                    &mut self.exp_avg[i],
                    &mut self.exp_avg_sq[i],
                    &hp,
                );
            }
        }
    }
}

/// AdamW, as `torch.optim.AdamW`: every parameter that has a gradient is
/// first decayed, `p = p * (1 - lr * weight_decay)` (decoupled from the
/// gradient), then takes an [`Adam`] step.
pub struct AdamW<B: Backend> {
    /// The Adam state and hyper-parameters.
    pub adam: Adam<B>,
    /// Decoupled weight decay (PyTorch's default is 0.01).
    pub weight_decay: f64,
}

impl<B: Backend> AdamW<B> {
    /// Fresh state for every parameter of `params`.
    pub fn new(
        backend: &B,
        params: &ParamStore<B>,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Self {
        AdamW {
            adam: Adam::new(backend, params, lr, beta1, beta2, eps),
            weight_decay,
        }
    }

    /// Decays and updates every parameter that has a gradient; `vars[i]` is
    /// parameter `i` on the tape the gradients came from.
    pub fn step(
        &mut self,
        backend: &B,
        params: &mut ParamStore<B>,
        grads: &Gradients<B>,
        vars: &[Var],
    ) {
        // PyTorch multiplies by the Python float 1 - lr * wd, which the
        // float32 kernel rounds to f32 once; by 1 without decay, which
        // changes nothing and is skipped.
        if self.weight_decay == 0.0 {
            self.adam.step(backend, params, grads, vars);
            return;
        }
        let decay = backend.tensor(&[(1.0 - self.adam.lr * self.weight_decay) as f32], &[1]);
        for id in params.ids().collect::<Vec<_>>() {
            if grads.get(vars[id.index()]).is_some() {
                let decayed = backend.scale(params.get(id), &decay);
                params.set(id, decayed);
            }
        }
        self.adam.step(backend, params, grads, vars);
    }
}

/// Scales the gradients of `vars` (those that have one) so that their
/// global L2 norm is at most `max_norm`, as `torch.nn.utils.clip_grad_norm_`:
/// by `max_norm / (norm + 1e-6)` when that is below 1. Returns the norm
/// before clipping. One read of one number from the device.
pub fn clip_grad_norm<B: Backend>(
    backend: &B,
    grads: &mut Gradients<B>,
    vars: &[Var],
    max_norm: f64,
) -> f64 {
    let mut total: Option<B::Tensor> = None;
    for &v in vars {
        if let Some(g) = grads.get(v) {
            let squares = backend.sum(&backend.mul(g, g));
            total = Some(match total {
                Some(mut t) => {
                    backend.add_assign(&mut t, &squares);
                    t
                }
                None => squares,
            });
        }
    }
    let Some(total) = total else { return 0.0 };
    let norm = f64::from(backend.to_vec(&total)[0]).sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let coef = backend.tensor(&[coef as f32], &[1]);
        for &v in vars {
            if let Some(g) = grads.get_mut(v) {
                *g = backend.scale(g, &coef);
            }
        }
    }
    norm
}
