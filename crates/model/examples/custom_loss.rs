//! A loss of one's own through the public API: the full softmax with a
//! temperature (logits divided by `--tau`), trained with
//! `Trainer::step_with_loss` on a synthetic log, beside the built-in loss
//! trained with `Trainer::step`, both validated with `evaluate`.
//!
//! ```sh
//! cargo run --release -p sasrec-model --example custom_loss -- [--tau 0.5] [--epochs 10]
//! ```
//!
//! Everything but the loss is the trainer's: batches, dropout, backward,
//! the gradient checks, Adam and its schedule.

use anyhow::{Context, Result};
use sasrec_autograd::{Tape, Var};
use sasrec_data::synthetic::Transitions;
use sasrec_data::{Order, UserSequence, batches};
use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::{ModelConfig, SasRec, StepInputs, TrainConfig, Trainer, evaluate};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: f64| -> Result<f64> {
        match args.iter().position(|a| a == name) {
            Some(i) => args
                .get(i + 1)
                .context(format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name}: not a number")),
            None => Ok(default),
        }
    };
    let tau = flag("--tau", 0.5)? as f32;
    let epochs = flag("--epochs", 10.0)? as usize;

    // 1,000 users walking 500 items: train on all but each user's last
    // item, validate on the last.
    let (train, valid, num_items) = synthetic_users()?;
    let backend = CpuBackend;
    let model = ModelConfig {
        dim: 32,
        ..ModelConfig::notebook(num_items)
    };
    let config = TrainConfig {
        lr: 2e-3,
        ..TrainConfig::default()
    };

    for (name, custom) in [("full softmax (built in)", false), ("softmax / tau", true)] {
        let initial = SasRec::new(&backend, model.clone(), config.seed);
        let mut trainer = Trainer::new(&backend, initial, config.clone(), &train, &valid, true)?;
        for epoch in 0..epochs as u64 {
            let order = Order::Shuffled {
                seed: config.seed,
                epoch,
            };
            for batch in batches(&train, model.max_len, config.batch_size, order, false) {
                if custom {
                    trainer.step_with_loss(&batch, |tape, s| tempered_softmax(tape, s, tau))?;
                } else {
                    trainer.step(&batch)?;
                }
            }
        }
        let valid = evaluate(&backend, &trainer.model, &valid, true, &[10], 256);
        let ranking = valid.ranking.context("leave-one-out ranks")?;
        println!(
            "{name:<24} after {epochs} epochs: valid NDCG@10 {:.4}, HR@10 {:.4}",
            ranking.ndcg(10).unwrap_or(0.0),
            ranking.hr(10).unwrap_or(0.0)
        );
    }
    Ok(())
}

/// Mean cross-entropy of `softmax(h W^T / tau)` over the batch's targets,
/// `[1]`: the full softmax's logits, sharpened (`tau` < 1) or flattened.
fn tempered_softmax<B: Backend>(tape: &mut Tape<'_, B>, s: &StepInputs<'_, B>, tau: f32) -> Var {
    let h = s.model.hidden(tape, s.vars, s.device, Some(s.dropout)); // [rows, dim]
    let table = s.model.output_table_var(s.vars); // [vocab, dim]
    let logits = tape.linear(h, table, None); // [rows, vocab]
    let inverse_tau = tape.backend().tensor(&[1.0 / tau], &[1]);
    let logits = tape.scale(logits, inverse_tau);
    tape.softmax_cross_entropy(logits, &s.device.targets, Some(0))
}

/// Leave-one-out sequences of a synthetic log, and its number of items.
fn synthetic_users() -> Result<(Vec<UserSequence>, Vec<UserSequence>, usize)> {
    let log = Transitions::new(1000, 500, 30_000, 7);
    // Events come user by user, each user's in time order.
    let mut histories: Vec<Vec<u32>> = vec![Vec::new(); log.users];
    log.generate(|user, item, _time| histories[user as usize].push(item + 1))?; // 0: padding
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (user, items) in histories.into_iter().enumerate() {
        if items.len() >= 3 {
            let user = user as u32 + 1;
            train.push(UserSequence::new(user, items[..items.len() - 1].to_vec()));
            valid.push(UserSequence::new(user, items));
        }
    }
    Ok((train, valid, log.items))
}
