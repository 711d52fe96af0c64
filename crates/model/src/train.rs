//! The training loop: seeded shuffling, Adam (AdamW with weight decay;
//! learning-rate warm-up and cosine decay as functions of the step; global
//! gradient-norm clipping; label smoothing), validation every epoch, best
//! checkpoint, early stopping, exact resume, NaN and infinity detection.
//!
//! [`Trainer::step`] is one optimiser step (forward, loss, backward, Adam),
//! the same one [`Trainer::run`]'s epochs take; [`Trainer::step_with_loss`]
//! takes the loss from the caller. The trainer commits its progress to a
//! [`RunStore`]: a run folder (`sasrec-run`) or [`MemoryStore`](crate::MemoryStore).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sasrec_autograd::{AdamW, Tape, Var, clip_grad_norm};
use sasrec_data::{Batch, Order, UserSequence, batches};
use sasrec_kernels::Backend;

use crate::checkpoint::{NamedTensor, first_non_finite, from_safetensors, to_safetensors};
use crate::config::{Selection, TrainConfig};
use crate::evaluate::{Evaluation, evaluate_with_progress, popularity_baseline};
use crate::metrics::RankingMetrics;
use crate::records::EpochRecord;
use crate::sampler::NegativeSampler;
use crate::sasrec::{DeviceBatch, DropoutContext, SasRec};
use crate::store::{Generation, RunStore, TrainState};
use crate::text::duration;

/// How a call to [`Trainer::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// All epochs ran.
    Completed,
    /// Validation stopped improving for `patience` epochs.
    EarlyStopped,
    /// The stop flag was raised; the progress is committed.
    Interrupted,
}

/// Called around the training part of every epoch (validation excluded),
/// e.g. to reset and print per-kernel GPU timings.
pub trait EpochHook {
    /// Before the first batch of an epoch.
    fn training_started(&mut self);
    /// After the last batch of an epoch, with the number of steps it took.
    fn training_finished(&mut self, steps: usize);
}

/// What one training step's loss sees: the model, its parameters on the
/// tape, the batch (on the host and on the device) and the step's dropout.
pub struct StepInputs<'s, B: Backend> {
    /// The model being trained.
    pub model: &'s SasRec<B>,
    /// The model's parameters on the step's tape ([`Tape::params`]).
    pub vars: &'s [Var],
    /// The batch on the host: item ids, targets (0 = none).
    pub batch: &'s Batch,
    /// The same batch on the device.
    pub device: &'s DeviceBatch<B>,
    /// The step's dropout masks (training mode).
    pub dropout: DropoutContext,
}

/// What one training step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The batch's mean loss.
    pub loss: f32,
    /// The batch's targets (positions with a next item).
    pub targets: usize,
}

/// Trains a model, committing checkpoints and metrics to a [`RunStore`].
pub struct Trainer<'a, B: Backend> {
    backend: &'a B,
    /// The model being trained.
    pub model: SasRec<B>,
    /// Adam, with decoupled weight decay when configured (AdamW).
    adam: AdamW<B>,
    /// The negatives of a sampled loss (`None` for the full softmax).
    sampler: Option<NegativeSampler>,
    config: TrainConfig,
    train: &'a [UserSequence],
    valid: &'a [UserSequence],
    held_out_last: bool,
    /// The most-popular baseline on the validation users (leave-one-out).
    baseline: Option<RankingMetrics>,
    /// The progress (epoch, step) of the last commit, for error messages.
    committed_at: Option<(usize, u64)>,
    /// Progress so far.
    pub state: TrainState,
    /// The finished epochs.
    epochs: Vec<EpochRecord>,
    /// Draw a progress bar on stderr and print a line per epoch.
    pub progress: bool,
    /// Observes the training part of every epoch.
    pub hook: Option<Box<dyn EpochHook + 'a>>,
    /// When this call of [`Trainer::run`] started, and at which epoch: the
    /// pace for the estimate of the time left.
    started: Option<(Instant, usize)>,
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// A trainer starting from `model` at step 0. `held_out_last` selects the
    /// validation protocol: the last item of each `valid` sequence is the
    /// held-out target (loss on it alone, plus ranking metrics), else the
    /// loss over every target of the `valid` sequences.
    pub fn new(
        backend: &'a B,
        model: SasRec<B>,
        config: TrainConfig,
        train: &'a [UserSequence],
        valid: &'a [UserSequence],
        held_out_last: bool,
    ) -> Result<Self> {
        config.validate()?;
        config.check_catalogue(model.config.num_items)?;
        NegativeSampler::check_unseen(&config, model.config.num_items, train)?;
        config.selection.check_split(held_out_last)?;
        if train.is_empty() {
            bail!("no training sequences (every user is too short for the split?)");
        }
        if valid.is_empty() {
            bail!("no validation sequences: nothing to select the best epoch on");
        }
        // The most-popular baseline on the validation users, for the curves.
        let baseline = held_out_last.then(|| {
            popularity_baseline(train, valid, model.config.vocab(), &validation_ks(&config))
        });
        let sampler = NegativeSampler::new(&config, model.config.num_items, train);
        let adam = AdamW::new(
            backend,
            &model.params,
            config.lr,
            config.beta1,
            config.beta2,
            config.eps,
            config.weight_decay,
        );
        Ok(Trainer {
            backend,
            model,
            adam,
            sampler,
            config,
            train,
            valid,
            held_out_last,
            baseline,
            committed_at: None,
            state: TrainState::default(),
            epochs: Vec::new(),
            progress: true,
            hook: None,
            started: None,
        })
    }

    /// Restores the model, Adam state and progress of the store's last
    /// commit; returns false, leaving the trainer at step 0, when nothing is
    /// committed.
    pub fn restore<S: RunStore + ?Sized>(&mut self, store: &S) -> Result<bool> {
        let Some(commit) = store.last_commit()? else {
            return Ok(false);
        };
        let path = std::path::Path::new(&commit.source);
        let (tensors, meta) = from_safetensors(&commit.checkpoint, path)?;
        let state = commit.progress;
        let epochs = commit.epochs;
        let saved_step = meta.get("step").and_then(|s| s.parse::<u64>().ok());
        if saved_step != Some(state.step) {
            bail!(
                "{} (step {saved_step:?}) and state.json (step {}) disagree; the run folder is inconsistent",
                path.display(),
                state.step
            );
        }
        let mut by_name: HashMap<String, (Vec<usize>, Vec<f32>)> =
            tensors.into_iter().map(|(n, s, v)| (n, (s, v))).collect();
        let mut take = |name: &str, shape: &[usize]| -> Result<B::Tensor> {
            let (s, v) = by_name
                .remove(name)
                .with_context(|| format!("{} lacks tensor {name}", path.display()))?;
            if s != shape {
                bail!(
                    "{}: tensor {name} has shape {s:?}, the model needs {shape:?}",
                    path.display()
                );
            }
            Ok(self.backend.tensor(&v, &s))
        };
        let ids: Vec<_> = self.model.params.ids().collect();
        for (i, &id) in ids.iter().enumerate() {
            let name = self.model.params.name(id).to_string();
            let shape = self.backend.shape(self.model.params.get(id));
            let value = take(&name, &shape)?;
            self.model.params.set(id, value);
            self.adam.adam.exp_avg[i] = take(&format!("optimizer.exp_avg.{name}"), &shape)?;
            self.adam.adam.exp_avg_sq[i] = take(&format!("optimizer.exp_avg_sq.{name}"), &shape)?;
        }
        self.adam.adam.step = state.step;
        self.committed_at = Some((state.epoch, state.step));
        self.state = state;
        self.epochs = epochs;
        // A finished run goes on when given more epochs or patience since.
        self.state.finished &= self.budget_spent();
        Ok(true)
    }

    /// Whether the epochs ran out or early stopping's patience did.
    fn budget_spent(&self) -> bool {
        let s = &self.state;
        s.epoch >= self.config.epochs
            || self
                .config
                .patience
                .is_some_and(|p| s.epochs_without_improvement >= p)
    }

    /// The finished epochs.
    pub fn epochs(&self) -> &[EpochRecord] {
        &self.epochs
    }

    /// Trains until the epochs run out, early stopping triggers, or `stop`
    /// is raised (checked after every step and every validation; the
    /// progress is then committed to `store`).
    pub fn run<S: RunStore + ?Sized>(
        &mut self,
        store: &mut S,
        stop: &AtomicBool,
    ) -> Result<Outcome> {
        if self.state.finished {
            return Ok(Outcome::Completed);
        }
        store.set_baseline(self.baseline.clone());
        let max_len = self.model.config.max_len;
        let batch_size = self.config.batch_size;
        let steps_per_epoch = self.train.len().div_ceil(batch_size);
        self.started = Some((Instant::now(), self.state.epoch));
        while self.state.epoch < self.config.epochs {
            let epoch = self.state.epoch;
            let bar = self.progress_bar(
                steps_per_epoch as u64,
                &format!("epoch {}", self.epoch_of()),
            );
            bar.set_position(self.state.batch as u64);
            let order = Order::Shuffled {
                seed: self.config.seed,
                epoch: epoch as u64,
            };
            let first_batch = self.state.batch;
            if let Some(hook) = &mut self.hook {
                hook.training_started();
            }
            for batch in
                batches(self.train, max_len, batch_size, order, false).skip(self.state.batch)
            {
                let started = Instant::now();
                let StepReport { loss, targets } = self.step(&batch)?;
                let s = &mut self.state;
                s.batch += 1;
                s.epoch_loss_sum += loss as f64 * targets as f64;
                s.epoch_targets += targets as u64;
                s.epoch_seconds += started.elapsed().as_secs_f64();
                s.epoch_tokens += (batch.batch_size * max_len) as u64;
                bar.set_message(format!(
                    "loss {:.4}  {:.0} tok/s",
                    s.epoch_loss_sum / s.epoch_targets.max(1) as f64,
                    s.epoch_tokens as f64 / s.epoch_seconds.max(1e-9)
                ));
                bar.inc(1);
                if stop.load(Ordering::SeqCst) {
                    bar.abandon();
                    self.save(store, None)?;
                    return Ok(Outcome::Interrupted);
                }
            }
            bar.finish_and_clear();
            if let Some(hook) = &mut self.hook {
                hook.training_finished(self.state.batch - first_batch);
            }
            let epoch = self.state.epoch + 1;
            if !epoch.is_multiple_of(self.config.eval_every) && epoch < self.config.epochs {
                // No validation after this epoch: commit the progress, the
                // training sums run on to the next validation.
                self.state.epoch = epoch;
                self.state.batch = 0;
                self.save(store, None)?;
                if stop.load(Ordering::SeqCst) {
                    return Ok(Outcome::Interrupted);
                }
                continue;
            }
            if self.end_epoch(store)? {
                return Ok(Outcome::EarlyStopped);
            }
            if stop.load(Ordering::SeqCst) && !self.state.finished {
                // Raised during validation: the epoch is committed.
                return Ok(Outcome::Interrupted);
            }
        }
        if !self.state.finished {
            // The epoch budget in config.json was lowered below the progress.
            self.state.finished = true;
            self.save(store, None)?;
        }
        Ok(Outcome::Completed)
    }

    /// One optimiser step on `batch` with the configured loss: forward,
    /// loss, backward, gradient checks and clipping, Adam at the schedule's
    /// learning rate. Advances `state.step` (not the epoch's batch count,
    /// which [`Trainer::run`] keeps).
    pub fn step(&mut self, batch: &Batch) -> Result<StepReport> {
        let sampler = self.sampler.take();
        let smoothing = self.config.label_smoothing;
        let report = self.step_with_loss(batch, |tape, s| match &sampler {
            None => s
                .model
                .smoothed_loss(tape, s.vars, s.device, Some(s.dropout), smoothing),
            Some(sampler) => {
                let negatives = sampler.step(tape.backend(), s.dropout.step, s.batch);
                s.model
                    .sampled_loss(tape, s.vars, s.device, Some(s.dropout), &negatives)
            }
        });
        self.sampler = sampler;
        report
    }

    /// [`Trainer::step`] with the caller's loss: `loss` records it on the
    /// tape from [`StepInputs`] and returns the `[1]` loss variable; the
    /// rest of the step is the trainer's.
    pub fn step_with_loss(
        &mut self,
        batch: &Batch,
        loss: impl FnOnce(&mut Tape<'_, B>, &StepInputs<'_, B>) -> Var,
    ) -> Result<StepReport> {
        let step = self.state.step + 1;
        let max_len = self.model.config.max_len;
        let device = DeviceBatch::upload(
            self.backend,
            &batch.inputs,
            &batch.targets,
            batch.batch_size,
            max_len,
        );
        let mut tape = Tape::new(self.backend, true);
        let vars = tape.params(&self.model.params);
        let inputs = StepInputs {
            model: &self.model,
            vars: &vars,
            batch,
            device: &device,
            dropout: DropoutContext {
                seed: self.config.seed,
                step,
            },
        };
        let loss = loss(&mut tape, &inputs);
        let value = self.backend.to_vec(tape.value(loss))[0];
        if !value.is_finite() {
            bail!(self.diverged(&format!("the training loss became {value}")));
        }
        let mut grads = tape.backward(loss);
        drop(tape);
        // One device-side count for all gradients; only a bad one is read back.
        let params = &self.model.params;
        if let Some(bad) = params.first_non_finite_grad(self.backend, &grads, &vars) {
            let id = params.find(&bad.name).expect("named by the store");
            let grad = grads.get(vars[id.index()]).expect("it has a gradient");
            let (at, v) = first_non_finite(&self.backend.to_vec(grad)).unwrap_or((0, f32::NAN));
            bail!(self.diverged(&format!(
                "the gradient of {} became {v} (element {at}; {} of {} values are not finite)",
                bad.name, bad.count, bad.len
            )));
        }
        if self.config.grad_clip > 0.0 {
            clip_grad_norm(self.backend, &mut grads, &vars, self.config.grad_clip);
        }
        // The schedule is a function of the step: a resumed run repeats it.
        self.adam.adam.lr = self.config.lr_at(step, self.total_steps());
        self.adam
            .step(self.backend, &mut self.model.params, &grads, &vars);
        self.state.step = step;
        let targets = batch.targets.iter().filter(|&&t| t != 0).count();
        Ok(StepReport {
            loss: value,
            targets,
        })
    }

    /// Optimiser steps in the whole epoch budget (the cosine schedule's end).
    fn total_steps(&self) -> u64 {
        let per_epoch = self.train.len().div_ceil(self.config.batch_size);
        (self.config.epochs * per_epoch) as u64
    }

    /// Why training stops at the step in progress, and what the run folder keeps.
    fn diverged(&self, what: &str) -> String {
        format!(
            "{what} at step {} (epoch {}, batch {}); stopped: {}",
            self.state.step + 1,
            self.state.epoch + 1,
            self.state.batch + 1,
            self.kept()
        )
    }

    /// What the run folder keeps after training diverged.
    fn kept(&self) -> String {
        let kept = match self.committed_at {
            Some((epoch, step)) => format!(
                "the run folder keeps its last good checkpoint (epoch {}, step {step})",
                epoch + 1
            ),
            None => "the run folder has no checkpoint yet".to_string(),
        };
        format!(
            "{kept}. Resuming would repeat this: start again with a lower --lr (--force replaces the run)"
        )
    }

    /// Validates, logs, checkpoints; returns whether to stop early.
    fn end_epoch<S: RunStore + ?Sized>(&mut self, store: &mut S) -> Result<bool> {
        let ks_needed = validation_ks(&self.config);
        let started = Instant::now();
        let bar = self.progress_bar(self.valid.len() as u64, "valid");
        bar.set_message(format!("{} sequences", self.valid.len()));
        let valid = evaluate_with_progress(
            self.backend,
            &self.model,
            self.valid,
            self.held_out_last,
            &ks_needed,
            self.config.batch_size,
            &mut |n| bar.inc(n as u64),
        );
        bar.finish_and_clear();
        if !valid.loss.is_finite() {
            bail!(
                "the validation loss became {} after epoch {}; stopped: {}",
                valid.loss,
                self.state.epoch + 1,
                self.kept()
            );
        }
        let value = selection_value(self.config.selection, &valid)?;
        let improved = match self.state.best {
            None => true,
            Some((best, _)) => {
                if self.config.selection.maximise() {
                    value > best
                } else {
                    value < best
                }
            }
        };
        let epoch = self.state.epoch + 1;
        let s = &mut self.state;
        let record = EpochRecord {
            epoch,
            step: s.step,
            train_loss: s.epoch_loss_sum / s.epoch_targets.max(1) as f64,
            valid,
            tokens_per_s: s.epoch_tokens as f64 / s.epoch_seconds.max(1e-9),
            seconds: s.epoch_seconds,
            valid_seconds: started.elapsed().as_secs_f64(),
            ended_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            best: improved,
        };
        if improved {
            s.best = Some((value, epoch));
            s.epochs_without_improvement = 0;
        } else {
            s.epochs_without_improvement += 1;
        }
        s.epoch += 1;
        s.batch = 0;
        s.epoch_loss_sum = 0.0;
        s.epoch_targets = 0;
        s.epoch_seconds = 0.0;
        s.epoch_tokens = 0;
        let stop = self
            .config
            .patience
            .is_some_and(|p| s.epochs_without_improvement >= p);
        s.finished = stop || s.epoch >= self.config.epochs;

        self.print_epoch(&record);
        self.epochs.push(record);
        let best = improved.then(|| {
            let meta = HashMap::from([("epoch".to_string(), epoch.to_string())]);
            (self.model.weights(self.backend), meta)
        });
        self.save(store, best)?;
        Ok(stop)
    }

    /// Prints an epoch's line.
    fn print_epoch(&self, record: &EpochRecord) {
        if self.progress {
            let ranking = record
                .valid
                .ranking
                .as_ref()
                .map(|m| format!("  {}", m.summary()))
                .unwrap_or_default();
            // The pace of this session's epochs, validation included; the
            // budget's end is the latest the run can stop.
            let left = match self.started {
                Some((at, first)) if self.state.epoch > first && !self.state.finished => {
                    let pace = at.elapsed().as_secs_f64() / (self.state.epoch - first) as f64;
                    let epochs = self.config.epochs.saturating_sub(self.state.epoch);
                    format!("  {} left at most", duration(pace * epochs as f64))
                }
                _ => String::new(),
            };
            eprintln!(
                "epoch {}  train loss {:.4}  valid loss {:.4}{ranking}  {:.0} tok/s{}{left}",
                self.epoch_of_record(record.epoch),
                record.train_loss,
                record.valid.loss,
                record.tokens_per_s,
                if record.best { "  *best" } else { "" }
            );
            std::io::stderr().flush().ok();
        }
    }

    /// Commits a generation: the weights and Adam moments, the best weights
    /// (and their metadata) when validation improved, the progress and epochs.
    /// Non-finite values are never saved: the last good generation stays.
    fn save<S: RunStore + ?Sized>(
        &mut self,
        store: &mut S,
        best: Option<(Vec<NamedTensor>, HashMap<String, String>)>,
    ) -> Result<()> {
        let b = self.backend;
        let mut tensors: Vec<NamedTensor> = Vec::with_capacity(3 * self.model.params.len());
        for (i, (_, name, value)) in self.model.params.iter().enumerate() {
            let shape = b.shape(value);
            tensors.push((name.to_string(), shape.clone(), b.to_vec(value)));
            tensors.push((
                format!("optimizer.exp_avg.{name}"),
                shape.clone(),
                b.to_vec(&self.adam.adam.exp_avg[i]),
            ));
            tensors.push((
                format!("optimizer.exp_avg_sq.{name}"),
                shape,
                b.to_vec(&self.adam.adam.exp_avg_sq[i]),
            ));
        }
        for (name, _, values) in &tensors {
            if let Some((at, v)) = first_non_finite(values) {
                bail!(
                    "{name} became {v} (element {at}) by step {}; not saving it: {}",
                    self.state.step,
                    self.kept()
                );
            }
        }
        let meta = HashMap::from([("step".to_string(), self.state.step.to_string())]);
        let last = to_safetensors(&tensors, meta)?;
        let best = best
            .map(|(weights, meta)| to_safetensors(&weights, meta))
            .transpose()?;
        store.commit(Generation {
            progress: &self.state,
            last: &last,
            best: best.as_deref(),
            epochs: &self.epochs,
        })?;
        self.committed_at = Some((self.state.epoch, self.state.step));
        Ok(())
    }

    /// `  3/300`: the epoch in progress and the budget.
    fn epoch_of(&self) -> String {
        self.epoch_of_record(self.state.epoch + 1)
    }

    fn epoch_of_record(&self, epoch: usize) -> String {
        let total = self.config.epochs.to_string();
        format!("{epoch:>w$}/{total}", w = total.len().max(3))
    }

    /// A bar on stderr, drawn only when stderr is a terminal (indicatif
    /// draws nothing into a pipe or a file): `prefix [=====>   ] 3/5 msg`.
    fn progress_bar(&self, len: u64, prefix: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
                .expect("static template")
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(prefix.to_string());
        bar
    }
}

/// The cut-offs validation reports: the configured ones and the selection's.
fn validation_ks(config: &TrainConfig) -> Vec<usize> {
    let mut ks = config.ks.clone();
    if let Selection::Ndcg(k) | Selection::Hr(k) = config.selection {
        ks.push(k);
    }
    ks.sort_unstable();
    ks.dedup();
    ks
}

/// The number `selection` picks out of a validation result.
fn selection_value(selection: Selection, valid: &Evaluation) -> Result<f64> {
    let ranking = || {
        valid
            .ranking
            .as_ref()
            .context("ranking metrics need the leave-one-out split")
    };
    Ok(match selection {
        Selection::Loss => valid.loss,
        Selection::Mrr => ranking()?.mrr,
        Selection::Ndcg(k) => ranking()?.ndcg(k).context("K missing")?,
        Selection::Hr(k) => ranking()?.hr(k).context("K missing")?,
    })
}
