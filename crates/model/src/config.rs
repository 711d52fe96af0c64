//! Model and training configuration (saved as `config.json` in a run folder).

use sasrec_kernels::cpu::Precision;
use serde::{Deserialize, Serialize};

use crate::text::bounded;

/// The shape of a SASRec model. Defaults are the notebook's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Number of real items N; the item table has N + 1 rows (row 0 is padding).
    pub num_items: usize,
    /// Positions per sequence.
    pub max_len: usize,
    /// Embedding width.
    pub dim: usize,
    /// Attention heads (`dim` must be a multiple).
    pub heads: usize,
    /// Transformer encoder layers.
    pub layers: usize,
    /// Hidden width of the feed-forward block (the notebook uses `4 * dim`).
    pub ff_dim: usize,
    /// Dropout probability for embeddings, attention and residual branches.
    pub dropout: f32,
    /// The block's architecture options (config.json files from before
    /// they existed: the notebook's).
    #[serde(flatten)]
    pub options: ModelOptions,
}

/// Architecture options beyond the notebook's sizes; the default is the
/// notebook's model. Saved in config.json's `model` section beside the sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelOptions {
    /// The normalisation of the blocks and the final one.
    #[serde(default)]
    pub norm: Norm,
    /// The feed-forward block.
    #[serde(default)]
    pub feed_forward: FeedForward,
    /// Residual branches gated by `sigmoid(Linear(x))` of the stream
    /// (eSASRec's LiGR layers): `x + sigmoid(W x + b) * Drop(branch)`.
    #[serde(default)]
    pub gated_residual: bool,
    /// Whether the output layer reuses the item table.
    #[serde(default)]
    pub output_layer: OutputLayer,
    /// Rotary position embedding (RoFormer) of every layer's queries and
    /// keys, beside the learned position table: attention scores then depend
    /// on how many steps apart two events are, whatever their absolute
    /// positions. Needs an even `dim / heads`.
    #[serde(default)]
    pub rotary: bool,
}

/// How the blocks normalise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// LayerNorm (centred, scale and bias; the notebook's).
    #[default]
    Layer,
    /// RMSNorm (scale only, no centring).
    Rms,
}

/// The feed-forward block of every layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedForward {
    /// `W2 Drop(relu(W1 x + b1)) + b2` (the notebook's).
    #[default]
    Relu,
    /// `W2 Drop(silu(W1 x) * W3 x)`, no biases (eSASRec, LLaMA).
    Swiglu,
}

/// Where the output layer's item vectors come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputLayer {
    /// The input item table (the notebook's).
    #[default]
    Tied,
    /// A table of its own, `output_embedding.weight` (gSASRec).
    Untied,
}

impl std::fmt::Display for Norm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Norm::Layer => "layer",
            Norm::Rms => "rms",
        })
    }
}

impl std::fmt::Display for FeedForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FeedForward::Relu => "relu",
            FeedForward::Swiglu => "swiglu",
        })
    }
}

impl std::fmt::Display for OutputLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputLayer::Tied => "tied",
            OutputLayer::Untied => "untied",
        })
    }
}

impl ModelConfig {
    /// The notebook's model (dim 64, 2 heads, 2 layers, dropout 0.1, max_len 50)
    /// for `num_items` items.
    pub fn notebook(num_items: usize) -> Self {
        ModelConfig {
            num_items,
            max_len: 50,
            dim: 64,
            heads: 2,
            layers: 2,
            ff_dim: 256,
            dropout: 0.1,
            options: ModelOptions::default(),
        }
    }

    /// Rows of the item table, `num_items + 1`.
    pub fn vocab(&self) -> usize {
        self.num_items + 1
    }

    /// Checks that the sizes make a model.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let positive = [
            ("num_items", self.num_items),
            ("max_len", self.max_len),
            ("dim", self.dim),
            ("heads", self.heads),
            ("layers", self.layers),
            ("ff_dim", self.ff_dim),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(InvalidSetting::new(field, "must be at least 1, got 0"));
            }
        }
        if !self.dim.is_multiple_of(self.heads) {
            return Err(InvalidSetting::new(
                "dim",
                format!("{} is not a multiple of heads {}", self.dim, self.heads),
            ));
        }
        if self.options.rotary && !(self.dim / self.heads).is_multiple_of(2) {
            return Err(InvalidSetting::new(
                "rotary",
                format!(
                    "needs an even head width dim / heads, got {} / {} = {}",
                    self.dim,
                    self.heads,
                    self.dim / self.heads
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(InvalidSetting::new(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        Ok(())
    }

    /// The number of weights.
    pub fn parameters(&self) -> f64 {
        let (d, f) = (self.dim as f64, self.ff_dim as f64);
        let o = &self.options;
        // A norm: a scale, and a bias for LayerNorm.
        let norm = match o.norm {
            Norm::Layer => 2.0 * d,
            Norm::Rms => d,
        };
        // W1 f x d + f, W2 d x f + d; or W1, W3 f x d and W2 d x f, no biases.
        let feed_forward = match o.feed_forward {
            FeedForward::Relu => 2.0 * d * f + f + d,
            FeedForward::Swiglu => 3.0 * d * f,
        };
        let gates = if o.gated_residual {
            2.0 * (d * d + d)
        } else {
            0.0
        };
        // In-projection 3d x d + 3d, out-projection d x d + d, two norms.
        let layer = 4.0 * d * d + 4.0 * d + feed_forward + gates + 2.0 * norm;
        let output = match o.output_layer {
            OutputLayer::Tied => 0.0,
            OutputLayer::Untied => self.vocab() as f64 * d,
        };
        self.vocab() as f64 * d
            + self.max_len as f64 * d
            + self.layers as f64 * layer
            + norm
            + output
    }

    /// A rough estimate of the memory training needs with batches of `batch`
    /// sequences, in bytes: weights, gradients, Adam's moments and a
    /// checkpoint's host copies; the activations a batch keeps for backward
    /// (attention probabilities included); a batch of validation scores over
    /// all items. On latest-small it is within 15% of the peak resident
    /// memory of a CPU run (116 MB estimated, 131 MB measured at the
    /// defaults; 1.73 GB and 1.83 GB at batch 512, max_len 200). Computed in
    /// floating point, so that absurd sizes give an absurd number rather than
    /// an overflow.
    pub fn training_memory(&self, batch: usize) -> MemoryEstimate {
        const F32: f64 = 4.0;
        let (d, f) = (self.dim as f64, self.ff_dim as f64);
        let (len, heads) = (self.max_len as f64, self.heads as f64);
        let positions = batch as f64 * len;
        let mut per_layer = 11.0 * d + 3.0 * f + heads * len;
        if self.options.feed_forward == FeedForward::Swiglu {
            // The gate, the up projection and their product.
            per_layer += 2.0 * f;
        }
        if self.options.gated_residual {
            per_layer += 4.0 * d;
        }
        if self.options.rotary {
            // The turned queries, keys and values.
            per_layer += 3.0 * d;
        }
        let activations = positions * (self.layers as f64 * per_layer + 6.0 * d);
        let scores = batch as f64 * self.vocab() as f64;
        MemoryEstimate {
            parameters: 7.0 * self.parameters() * F32,
            activations: (activations + scores) * F32,
        }
    }
}

/// What [`ModelConfig::training_memory`] estimates, in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// Weights, gradients, Adam moments, checkpoint copies.
    pub parameters: f64,
    /// One batch's activations and validation scores.
    pub activations: f64,
}

impl MemoryEstimate {
    /// The total in bytes.
    pub fn total(&self) -> f64 {
        self.parameters + self.activations
    }
}

/// `bytes` in decimal units, e.g. "1.2 GB".
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub use sasrec_data::InvalidSetting;

/// The validation number that selects the best checkpoint and drives early
/// stopping.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// Lowest validation loss.
    Loss,
    /// Highest NDCG@K (leave-one-out only).
    Ndcg(usize),
    /// Highest HR@K (leave-one-out only).
    Hr(usize),
    /// Highest MRR (leave-one-out only).
    Mrr,
}

impl Selection {
    /// Parses `loss`, `ndcg@10`, `hr@20`, `mrr`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        let at_k = |prefix: &str| -> Option<Result<usize, String>> {
            lower.strip_prefix(prefix).map(|k| {
                k.parse::<usize>()
                    .ok()
                    .filter(|&k| k > 0)
                    .ok_or_else(|| format!("bad K in {:?}", bounded(s, 40)))
            })
        };
        match lower.as_str() {
            "loss" => Ok(Selection::Loss),
            "mrr" => Ok(Selection::Mrr),
            _ => match (at_k("ndcg@"), at_k("hr@")) {
                (Some(k), _) => Ok(Selection::Ndcg(k?)),
                (_, Some(k)) => Ok(Selection::Hr(k?)),
                _ => Err(format!(
                    "unknown selection metric {:?} (use loss, ndcg@K, hr@K or mrr)",
                    bounded(s, 40)
                )),
            },
        }
    }

    /// Whether larger is better.
    pub fn maximise(self) -> bool {
        !matches!(self, Selection::Loss)
    }

    /// Ranking metrics exist only with held-out targets (the leave-one-out
    /// and temporal splits).
    pub fn check_split(self, held_out_last: bool) -> Result<(), InvalidSetting> {
        if self == Selection::Loss || held_out_last {
            return Ok(());
        }
        Err(InvalidSetting::new(
            "selection",
            format!(
                "{self} needs the leave-one-out or temporal split; select by loss with random-users"
            ),
        ))
    }
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selection::Loss => write!(f, "loss"),
            Selection::Ndcg(k) => write!(f, "ndcg@{k}"),
            Selection::Hr(k) => write!(f, "hr@{k}"),
            Selection::Mrr => write!(f, "mrr"),
        }
    }
}

/// The training loss. Validation always reports the full softmax
/// cross-entropy, whatever the training loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Softmax cross-entropy over every item (the notebook's).
    #[default]
    Full,
    /// Softmax over the target and `negatives` sampled items, corrected by
    /// log Q(item) when the sampler is not uniform.
    SampledSoftmax,
    /// Binary cross-entropy of the target against each sampled negative
    /// (SASRec's paper, with `negatives` negatives).
    Bce,
    /// gBCE (gSASRec): BCE with the positive's term weighted by beta, from
    /// `gbce_t` and the sampling rate.
    Gbce,
}

impl Loss {
    /// Whether the loss draws negatives.
    pub fn is_sampled(self) -> bool {
        self != Loss::Full
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Loss::Full => "full",
            Loss::SampledSoftmax => "sampled-softmax",
            Loss::Bce => "bce",
            Loss::Gbce => "gbce",
        })
    }
}

/// How the sampled losses draw their negatives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampler {
    /// Every item alike.
    #[default]
    Uniform,
    /// In proportion to the item's count in the training split.
    Popularity,
}

impl std::fmt::Display for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sampler::Uniform => "uniform",
            Sampler::Popularity => "popularity",
        })
    }
}

/// Which rows of a batch share a set of sampled negatives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativesScope {
    /// One set for the whole batch (each step pushes down only `negatives`
    /// items).
    Batch,
    /// One set per sequence, shared by its positions (SASRec+, Klenitskiy &
    /// Vasilev 2023).
    #[default]
    Sequence,
    /// One set per position (gSASRec, RecTools).
    Position,
}

impl std::fmt::Display for NegativesScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NegativesScope::Batch => "batch",
            NegativesScope::Sequence => "sequence",
            NegativesScope::Position => "position",
        })
    }
}

fn default_eval_every() -> usize {
    1
}

/// What config.json files without the key trained with (files written by
/// a sampled loss always hold it; this keeps the replay of any other exact).
fn negatives_before_the_default_rose() -> usize {
    256
}

/// What config.json files written before the scope existed trained with.
fn scope_before_it_existed() -> NegativesScope {
    NegativesScope::Batch
}

fn default_gbce_t() -> f64 {
    0.75
}

/// How to train. Defaults are the notebook's (batch 128, Adam lr 1e-3,
/// 10 epochs, full softmax).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Sequences per batch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Adam beta1.
    pub beta1: f64,
    /// Adam beta2.
    pub beta2: f64,
    /// Adam epsilon.
    pub eps: f64,
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Stop after this many validations without a better validation
    /// number (`None`: never stop early).
    pub patience: Option<usize>,
    /// Validate (and select, and count patience) after every `eval_every`
    /// epochs, and after the last.
    #[serde(default = "default_eval_every")]
    pub eval_every: usize,
    /// What "better" means.
    pub selection: Selection,
    /// Seeds initialisation, shuffling and dropout.
    pub seed: u64,
    /// Cut-offs for HR@K and NDCG@K in validation reports.
    pub ks: Vec<usize>,
    /// The training loss (config.json files from before it existed: full).
    #[serde(default)]
    pub loss: Loss,
    /// Negatives drawn for each group of rows that shares them (sampled
    /// losses only).
    #[serde(default = "negatives_before_the_default_rose")]
    pub negatives: usize,
    /// Which rows share their negatives (config.json files from before it
    /// existed: the batch).
    #[serde(default = "scope_before_it_existed")]
    pub negatives_scope: NegativesScope,
    /// Draw each sequence's or position's negatives among the items its
    /// user never interacted with in training, without repeats (uniform
    /// sampler only).
    #[serde(default)]
    pub exclude_seen: bool,
    /// How negatives are drawn (sampled losses only).
    #[serde(default)]
    pub sampler: Sampler,
    /// gBCE's calibration t in [0, 1]: 0 is BCE, 1 the full calibration
    /// (gSASRec recommends 0.75).
    #[serde(default = "default_gbce_t")]
    pub gbce_t: f64,
    /// AdamW's decoupled weight decay (`torch.optim.AdamW`); 0 is Adam.
    #[serde(default)]
    pub weight_decay: f64,
    /// Optimiser steps over which the learning rate rises linearly from
    /// `lr / warmup_steps` to `lr`.
    #[serde(default)]
    pub warmup_steps: u64,
    /// How the learning rate changes after the warm-up.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Label smoothing of the full softmax (PyTorch's `label_smoothing`).
    #[serde(default)]
    pub label_smoothing: f32,
    /// Clip the gradients' global L2 norm to this value
    /// (`torch.nn.utils.clip_grad_norm_`); 0: no clipping.
    #[serde(default)]
    pub grad_clip: f64,
    /// Operand precision of the full cross-entropy's products on the CPU
    /// backend: "fp32" or "bf16" (config.json files from before it
    /// existed: fp32).
    #[serde(default, with = "precision_name")]
    pub precision: Precision,
}

/// The learning rate after the warm-up, as a function of the step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// `lr` throughout (the notebook's).
    #[default]
    Constant,
    /// Half a cosine from `lr` after the warm-up down to 0 at the last step
    /// of the epoch budget.
    Cosine,
}

impl std::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
        })
    }
}

/// [`Precision`] in config.json: "fp32" or "bf16".
mod precision_name {
    use sasrec_kernels::cpu::Precision;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(p: &Precision, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Precision, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(D::Error::custom)
    }
}

impl TrainConfig {
    /// Whether a new run's negatives skip each user's own training items
    /// when no setting says: yes for a sampled loss with the uniform
    /// sampler per sequence or position (the items a sequence holds are
    /// its other positions' targets; docs/benchmarks.md measures the gain),
    /// no otherwise. [`TrainConfig::default`] keeps `false` (its loss is the
    /// full softmax), as do config.json files from before the setting.
    pub fn exclude_seen_by_default(loss: Loss, sampler: Sampler, scope: NegativesScope) -> bool {
        loss.is_sampled() && sampler == Sampler::Uniform && scope != NegativesScope::Batch
    }

    /// The learning rate of optimiser step `step` (1-based) in a run of
    /// `total_steps` steps: the warm-up's linear rise, then the schedule.
    /// A pure function of the step, so that a resumed run repeats the
    /// uninterrupted one.
    pub fn lr_at(&self, step: u64, total_steps: u64) -> f64 {
        let warmup = self.warmup_steps;
        if step <= warmup {
            return self.lr * step as f64 / warmup as f64;
        }
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let span = total_steps.saturating_sub(warmup).max(1) as f64;
                let done = ((step - warmup) as f64 / span).min(1.0);
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * done).cos())
            }
        }
    }

    /// Checks that the settings make a training run.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let positive = |field, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(InvalidSetting::new(
                    field,
                    format!("must be a positive number, got {value}"),
                ))
            }
        };
        let fraction = |field, value: f64| {
            if (0.0..1.0).contains(&value) {
                Ok(())
            } else {
                Err(InvalidSetting::new(
                    field,
                    format!("must be in [0, 1), got {value}"),
                ))
            }
        };
        positive("lr", self.lr)?;
        fraction("beta1", self.beta1)?;
        fraction("beta2", self.beta2)?;
        positive("eps", self.eps)?;
        let at_least_one = [
            ("batch_size", self.batch_size),
            ("epochs", self.epochs),
            ("patience", self.patience.unwrap_or(1)),
            ("eval_every", self.eval_every),
        ];
        for (field, value) in at_least_one {
            if value == 0 {
                return Err(InvalidSetting::new(field, "must be at least 1, got 0"));
            }
        }
        if self.ks.is_empty() || self.ks.contains(&0) {
            return Err(InvalidSetting::new("ks", "values must be at least 1"));
        }
        if let Selection::Ndcg(0) | Selection::Hr(0) = self.selection {
            return Err(InvalidSetting::new("selection", "needs K of at least 1"));
        }
        if !(0.0..=1.0).contains(&self.gbce_t) {
            return Err(InvalidSetting::new(
                "gbce_t",
                format!("must be in [0, 1], got {}", self.gbce_t),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(InvalidSetting::new(
                "weight_decay",
                format!("must be 0 or more, got {}", self.weight_decay),
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(InvalidSetting::new(
                "label_smoothing",
                format!("must be in [0, 1), got {}", self.label_smoothing),
            ));
        }
        if self.label_smoothing > 0.0 && self.loss.is_sampled() {
            return Err(InvalidSetting::new(
                "label_smoothing",
                format!(
                    "smooths the full softmax; it needs --loss full (got --loss {})",
                    self.loss
                ),
            ));
        }
        if self.precision == Precision::Bf16 && self.loss.is_sampled() {
            return Err(InvalidSetting::new(
                "precision",
                format!(
                    "bf16 is for the full softmax's products (loss full, the notebook preset's), not {}",
                    self.loss
                ),
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return Err(InvalidSetting::new(
                "grad_clip",
                format!(
                    "must be 0 (off) or a positive number, got {}",
                    self.grad_clip
                ),
            ));
        }
        if self.loss.is_sampled() {
            if self.negatives == 0 {
                return Err(InvalidSetting::new(
                    "negatives",
                    "must be at least 1, got 0",
                ));
            }
            if self.exclude_seen && self.sampler != Sampler::Uniform {
                return Err(InvalidSetting::new(
                    "exclude_seen",
                    format!("needs the uniform sampler, not {}", self.sampler),
                ));
            }
            if self.exclude_seen && self.negatives_scope == NegativesScope::Batch {
                return Err(InvalidSetting::new(
                    "exclude_seen",
                    "needs negatives drawn per sequence or per position, not per batch",
                ));
            }
        } else if self.exclude_seen {
            return Err(InvalidSetting::new(
                "exclude_seen",
                format!(
                    "applies to the sampled losses' negatives, not to {}",
                    self.loss
                ),
            ));
        } else if self.sampler != Sampler::Uniform {
            return Err(InvalidSetting::new(
                "sampler",
                format!(
                    "{} draws negatives, which only the sampled losses use (sampled-softmax, bce, gbce), not {}",
                    self.sampler, self.loss
                ),
            ));
        }
        Ok(())
    }

    /// Checks the settings that depend on the catalogue: a sampled loss
    /// draws at most `num_items - 1` negatives (the items a row can draw
    /// besides its target).
    pub fn check_catalogue(&self, num_items: usize) -> Result<(), InvalidSetting> {
        let most = num_items.saturating_sub(1);
        if self.loss.is_sampled() && self.negatives > most {
            return Err(InvalidSetting::new(
                "negatives",
                format!(
                    "must be at most {most} (the {num_items} items less the target), got {}; \
                     a catalogue this small trains well with the full softmax (--loss full)",
                    self.negatives
                ),
            ));
        }
        Ok(())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 128,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            epochs: 10,
            patience: None,
            eval_every: default_eval_every(),
            selection: Selection::Loss,
            seed: 42,
            ks: vec![10, 20],
            loss: Loss::Full,
            // Level with the full softmax on latest-small with the default
            // draws (docs/benchmarks.md); 256 lose 18% there.
            negatives: 1024,
            negatives_scope: NegativesScope::default(),
            exclude_seen: false,
            sampler: Sampler::Uniform,
            gbce_t: default_gbce_t(),
            weight_decay: 0.0,
            warmup_steps: 0,
            lr_schedule: LrSchedule::Constant,
            label_smoothing: 0.0,
            grad_clip: 0.0,
            precision: Precision::Fp32,
        }
    }
}

/// A named set of defaults for the model and its training: the settings a
/// run takes unless a flag (or a settings file's key) gives them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The notebook's model and Adam, exactly (PyTorch-parity tested).
    Notebook,
    /// What the sweeps in docs/benchmarks.md support: the notebook's blocks
    /// at width [`RECOMMENDED_DIM`], sequences as long as the histories
    /// ask for ([`recommended_max_len`]), trained with a sampled softmax
    /// over [`RECOMMENDED_NEGATIVES`] uniform negatives per sequence, drawn
    /// among the items its user has not seen. The default.
    #[default]
    Recommended,
}

/// The recommended preset's width (gSASRec's; the feed-forward block
/// `4 x` it, as the notebook's).
pub const RECOMMENDED_DIM: usize = 128;

/// The recommended preset's positions per sequence for training histories
/// of `mean_events` events on average: that mean rounded up to a multiple
/// of 50, from 50 (the notebook's) to 200. This follows SASRec's paper,
/// which sets the length roughly in proportion to the mean actions per
/// user: 200 for MovieLens-1M (165 on average), 50 for the sparse logs.
/// `sasrec train` applies it once the data is read, unless `--max-len` is
/// given.
pub fn recommended_max_len(mean_events: f64) -> usize {
    // `as` saturates (and maps NaN to 0), then the clamp bounds it.
    50 * ((mean_events / 50.0).ceil() as usize).clamp(1, 4)
}

/// The recommended preset's negatives per sequence. `sasrec train` lowers
/// them to the fewest unseen items any user has when a catalogue is smaller
/// (see [`crate::sampler::NegativeSampler::fewest_unseen`]).
pub const RECOMMENDED_NEGATIVES: usize = 3000;

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Preset::Notebook => "notebook",
            Preset::Recommended => "recommended",
        })
    }
}

impl Preset {
    /// The preset's model for `num_items` items: the notebook's blocks in
    /// both (the block options lost to them in the sweeps of
    /// docs/benchmarks.md); `recommended` at width [`RECOMMENDED_DIM`]. Its
    /// `max_len` here is the notebook's, until [`recommended_max_len`]
    /// fits it to the data.
    pub fn model(self, num_items: usize) -> ModelConfig {
        let notebook = ModelConfig::notebook(num_items);
        match self {
            Preset::Notebook => notebook,
            Preset::Recommended => ModelConfig {
                dim: RECOMMENDED_DIM,
                ff_dim: 4 * RECOMMENDED_DIM,
                ..notebook
            },
        }
    }

    /// The preset's training settings (the rest as [`TrainConfig::default`]):
    /// `recommended` trains the notebook's Adam on a sampled softmax (see
    /// [`Preset::Recommended`]).
    pub fn train(self) -> TrainConfig {
        let notebook = TrainConfig::default();
        match self {
            Preset::Notebook => notebook,
            Preset::Recommended => TrainConfig {
                loss: Loss::SampledSoftmax,
                negatives: RECOMMENDED_NEGATIVES,
                negatives_scope: NegativesScope::Sequence,
                sampler: Sampler::Uniform,
                exclude_seen: true,
                ..notebook
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recommended_max_len_covers_the_mean_history_in_steps_of_50() {
        // latest-small's users keep 163 events for training on average,
        // the long-range synthetic log's 28, MovieLens-1M's about 163.
        for (mean, max_len) in [
            (0.0, 50),
            (9.0, 50),
            (28.0, 50),
            (50.0, 50),
            (50.5, 100),
            (100.0, 100),
            (163.3, 200),
            (200.0, 200),
            (5000.0, 200),
            (f64::NAN, 50),
        ] {
            assert_eq!(recommended_max_len(mean), max_len, "mean {mean}");
        }
    }

    #[test]
    fn the_notebook_preset_is_the_notebook_model_and_the_recommended_one_is_wider() {
        assert_eq!(Preset::Notebook.model(7), ModelConfig::notebook(7));
        let recommended = Preset::Recommended.model(7);
        assert_eq!((recommended.dim, recommended.ff_dim), (128, 512));
        assert_eq!(
            ModelConfig {
                dim: 64,
                ff_dim: 256,
                ..recommended
            },
            ModelConfig::notebook(7),
            "only the width differs"
        );
    }
}
