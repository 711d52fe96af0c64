//! Model and training configuration (saved as `config.json` in a run folder).

use serde::{Deserialize, Serialize};

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
        }
    }

    /// Rows of the item table, `num_items + 1`.
    pub fn vocab(&self) -> usize {
        self.num_items + 1
    }

    /// Checks that the sizes make a model.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("num_items", self.num_items),
            ("max_len", self.max_len),
            ("dim", self.dim),
            ("heads", self.heads),
            ("layers", self.layers),
            ("ff_dim", self.ff_dim),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.dim % self.heads != 0 {
            return Err(format!(
                "dim {} is not a multiple of heads {}",
                self.dim, self.heads
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

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
                    .ok_or_else(|| format!("bad K in {s:?}"))
            })
        };
        match lower.as_str() {
            "loss" => Ok(Selection::Loss),
            "mrr" => Ok(Selection::Mrr),
            _ => match (at_k("ndcg@"), at_k("hr@")) {
                (Some(k), _) => Ok(Selection::Ndcg(k?)),
                (_, Some(k)) => Ok(Selection::Hr(k?)),
                _ => Err(format!(
                    "unknown selection metric {s:?} (use loss, ndcg@K, hr@K or mrr)"
                )),
            },
        }
    }

    /// Whether larger is better.
    pub fn maximise(self) -> bool {
        !matches!(self, Selection::Loss)
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

/// How to train. Defaults are the notebook's (batch 128, Adam lr 1e-3,
/// 10 epochs).
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
    /// Stop after this many epochs without a better validation number
    /// (`None`: never stop early).
    pub patience: Option<usize>,
    /// What "better" means.
    pub selection: Selection,
    /// Seeds initialisation, shuffling and dropout.
    pub seed: u64,
    /// Cut-offs for HR@K and NDCG@K in validation reports.
    pub ks: Vec<usize>,
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
            selection: Selection::Loss,
            seed: 42,
            ks: vec![10],
        }
    }
}
