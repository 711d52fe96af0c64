//! SASRec (Kang & McAuley, 2018) as in the user's PyTorch notebook: the
//! model, the trainer, ranking metrics, checkpoints and recommendations,
//! over any `sasrec-kernels` backend.
//!
//! The building blocks are public so research code can use them one by one:
//! [`SasRec`] (forward on an autograd tape), [`NegativeSampler`] (the
//! sampled losses' negatives), [`Trainer`] (whose [`Trainer::step`] is one
//! optimiser step, with the configured loss or the caller's), [`evaluate()`],
//! [`recommend()`] and [`recommend_many()`] (top-k for many histories at
//! once; [`user_vectors()`] and [`item_vectors()`] for ANN engines). The
//! trainer commits its progress through the [`RunStore`] trait: the run
//! folder on disk is `sasrec-run`'s, [`MemoryStore`] keeps it in memory.
//! The optimiser is `sasrec-autograd`'s [`Adam`], re-exported here.

pub mod checkpoint;
pub mod config;
pub mod evaluate;
pub mod metrics;
pub mod recommend;
pub mod records;
pub mod sampler;
pub mod sasrec;
pub mod store;
pub mod text;
pub mod train;

pub use checkpoint::load_model;
pub use config::{
    FeedForward, InvalidSetting, Loss, LrSchedule, MemoryEstimate, ModelConfig, ModelOptions,
    NegativesScope, Norm, OutputLayer, Preset, Sampler, Selection, TrainConfig,
};
pub use evaluate::{Evaluation, evaluate, evaluate_with_progress, popularity_baseline};
pub use metrics::{RankingMetrics, rank_of_target};
pub use recommend::{Query, item_vectors, recommend, recommend_many, user_vectors, users_per_pass};
pub use records::EpochRecord;
pub use sampler::{FewestUnseen, NegativeSampler, StepNegatives};
pub use sasrec::{DeviceBatch, DropoutContext, Inference, SasRec};
pub use sasrec_autograd::Adam;
pub use store::{Committed, Generation, MemoryStore, RunStore, TrainState};
pub use text::{bounded, duration};
pub use train::{EpochHook, Outcome, StepInputs, StepReport, Trainer};
