//! Adam, as `torch.optim.Adam` with its defaults (no weight decay, no amsgrad).

use sasrec_autograd::{Gradients, ParamStore, Var};
use sasrec_kernels::{AdamStep, Backend};

/// Adam state: first and second moments of every parameter and the step count.
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
