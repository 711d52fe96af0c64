//! `sasrec train`'s settings by their TOML keys (the flags in snake_case:
//! `max_len = 50` for `--max-len 50`) into a [`RunConfig`], with the
//! command's defaults. The Python package's `train(data, **settings)` takes
//! its settings here; a test of the CLI checks that every flag is a key
//! and that both give the same `RunConfig`.
//!
//! Values are JSON values (what Python's keyword arguments and TOML files
//! hold): numbers, strings, booleans, lists; `null` keeps the default.
//! Lists may also be written as comma-separated text (`k = "10,20"`), and
//! times as numbers. An unknown key, a value of the wrong kind, or a value
//! out of range is an error naming the key.

use std::path::PathBuf;

use anyhow::{Result, bail};
use sasrec_data::{Dedup, FilterConfig, Format, InputSpec, TemporalTargets, TimeUnit};
use sasrec_model::checkpoint::FileDigest;
use sasrec_model::{
    DataSpec, Loss, ModelConfig, RunConfig, Sampler, Selection, SplitMethod, TrainConfig, bounded,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Keys of `sasrec train` that are not settings of a run: the device's
/// (given to [`Device::open`](crate::Device::open)), and what the command
/// line does with a run folder.
pub const NOT_RUN_SETTINGS: [&str; 10] = [
    "device",
    "adapter",
    "threads",
    "profile_kernels",
    "profile_ops",
    "out",
    "force",
    "resume",
    "allow_changed_data",
    "config",
];

/// The run configuration `settings` describe, checked, with `sasrec
/// train`'s defaults for the keys not given. The data is the log named by
/// `ratings` (or a MovieLens `dataset` name) unless `in_memory`, where the
/// interactions come with the call and neither key may be given.
/// `model.num_items` and `ratings_digest` are placeholders, filled in when
/// the data is read ([`TrainJob::new`](crate::TrainJob::new)).
pub fn run_config(settings: &[(String, Value)], in_memory: bool) -> Result<RunConfig> {
    let mut config = defaults();
    let mut ff_dim = None;
    let mut selection = None;
    let mut data = None;
    let mut given = Vec::new();
    for (key, value) in settings {
        if given.contains(&key.as_str()) {
            bail!("`{}` is set twice", bounded(key, 60));
        }
        given.push(key.as_str());
        if value.is_null() {
            continue;
        }
        let bad = |why: String| anyhow::anyhow!("`{key}`: {why}");
        let model = &mut config.model;
        let train = &mut config.train;
        let spec = &mut config.data;
        let input = &mut spec.input;
        let filter = &mut spec.filter;
        match key.as_str() {
            "ratings" | "dataset" if in_memory => bail!(
                "`{key}` names a log on disk, but the interactions are given in memory; give one or the other"
            ),
            "ratings" => data = Some(PathBuf::from(text(value).map_err(bad)?)),
            "dataset" => {
                data = Some(sasrec_data::dataset_ratings_path(
                    &text(value).map_err(bad)?,
                )?)
            }
            "format" => input.format = Some(parsed::<Format>(value).map_err(bad)?),
            "delimiter" => input.delimiter = Some(text(value).map_err(bad)?),
            "user_col" => input.user_col = Some(text(value).map_err(bad)?),
            "item_col" => input.item_col = Some(text(value).map_err(bad)?),
            "time_col" => input.time_col = Some(text(value).map_err(bad)?),
            "rating_col" => input.rating_col = Some(text(value).map_err(bad)?),
            "event_col" => input.event_col = Some(text(value).map_err(bad)?),
            "time_unit" => input.time_unit = Some(parsed::<TimeUnit>(value).map_err(bad)?),
            "user_fraction" => filter.user_fraction = float(value).map_err(bad)?,
            "sample_seed" => filter.sample_seed = whole(value).map_err(bad)?,
            "min_rating" => filter.min_rating = Some(float(value).map_err(bad)? as f32),
            "min_user_interactions" => filter.min_user_interactions = size(value).map_err(bad)?,
            "min_item_interactions" => filter.min_item_interactions = size(value).map_err(bad)?,
            "keep_events" => filter.keep_events = Some(texts(value).map_err(bad)?),
            "target_events" => filter.target_events = Some(texts(value).map_err(bad)?),
            "dedup" => filter.dedup = parsed::<Dedup>(value).map_err(bad)?,
            "split" => spec.split = named::<SplitMethod>(value).map_err(bad)?,
            "valid_fraction" => spec.valid_fraction = float(value).map_err(bad)?,
            "split_seed" => spec.split_seed = whole(value).map_err(bad)?,
            "valid_time" => spec.valid_time = Some(time(value).map_err(bad)?),
            "test_time" => spec.test_time = Some(time(value).map_err(bad)?),
            "valid_time_fraction" => spec.valid_time_fraction = Some(float(value).map_err(bad)?),
            "test_time_fraction" => spec.test_time_fraction = Some(float(value).map_err(bad)?),
            "temporal_targets" => {
                spec.temporal_targets = named::<TemporalTargets>(value).map_err(bad)?
            }
            "max_len" => model.max_len = size(value).map_err(bad)?,
            "dim" => model.dim = size(value).map_err(bad)?,
            "heads" => model.heads = size(value).map_err(bad)?,
            "layers" => model.layers = size(value).map_err(bad)?,
            "ff_dim" => ff_dim = Some(size(value).map_err(bad)?),
            "dropout" => model.dropout = float(value).map_err(bad)? as f32,
            "batch_size" => train.batch_size = size(value).map_err(bad)?,
            "lr" => train.lr = float(value).map_err(bad)?,
            "beta1" => train.beta1 = float(value).map_err(bad)?,
            "beta2" => train.beta2 = float(value).map_err(bad)?,
            "eps" => train.eps = float(value).map_err(bad)?,
            "epochs" => train.epochs = size(value).map_err(bad)?,
            "patience" => train.patience = Some(size(value).map_err(bad)?),
            "select" => {
                selection = Some(Selection::parse(&text(value).map_err(bad)?).map_err(bad)?)
            }
            "k" => train.ks = sizes(value).map_err(bad)?,
            "seed" => train.seed = whole(value).map_err(bad)?,
            "loss" => train.loss = named::<Loss>(value).map_err(bad)?,
            "negatives" => train.negatives = size(value).map_err(bad)?,
            "sampler" => train.sampler = named::<Sampler>(value).map_err(bad)?,
            "gbce_t" => train.gbce_t = float(value).map_err(bad)?,
            key if NOT_RUN_SETTINGS.contains(&key) => {
                bail!("`{key}` is not a setting of the run's model, data or training")
            }
            key => bail!(
                "unknown setting `{}` (the settings are the flags of `sasrec train` in snake_case, e.g. max_len for --max-len)",
                bounded(key, 60)
            ),
        }
    }
    // What `sasrec train` refuses on its command line.
    let is_given = |key: &str| {
        settings
            .iter()
            .any(|(k, v)| k.as_str() == key && !v.is_null())
    };
    if !config.train.loss.is_sampled() {
        for key in ["negatives", "sampler"] {
            if is_given(key) {
                bail!(
                    "`{key}` is for the sampled losses (loss sampled-softmax, bce or gbce); loss full uses every item"
                );
            }
        }
    }
    if is_given("gbce_t") && config.train.loss != Loss::Gbce {
        bail!(
            "`gbce_t` is gBCE's calibration; it needs loss gbce (got loss {})",
            config.train.loss
        );
    }
    config.model.ff_dim = ff_dim.unwrap_or(config.model.dim.saturating_mul(4));
    config.train.selection = selection.unwrap_or(if config.data.held_out_last() {
        Selection::Ndcg(10)
    } else {
        Selection::Loss
    });
    config.data.ratings = if in_memory {
        PathBuf::from(DataSpec::IN_MEMORY)
    } else {
        match data {
            // Absolute: the run folder is read from anywhere.
            Some(path) => std::path::absolute(path)?,
            None => bail!("no data: give `ratings` (a log) or `dataset` (a MovieLens name)"),
        }
    };
    config.validate()?;
    Ok(config)
}

/// `sasrec train`'s defaults: the notebook's model (the item count is
/// found from the data), its training (10 epochs) and validation by NDCG@10
/// on a leave-one-out split, every interaction kept but consecutive repeats.
fn defaults() -> RunConfig {
    RunConfig {
        model: ModelConfig::notebook(1),
        train: TrainConfig {
            ks: vec![10, 20],
            selection: Selection::Ndcg(10),
            ..TrainConfig::default()
        },
        data: DataSpec {
            ratings: PathBuf::new(),
            input: InputSpec::default(),
            filter: FilterConfig {
                dedup: Dedup::Consecutive,
                ..FilterConfig::default()
            },
            split: SplitMethod::LeaveOneOut,
            valid_fraction: 0.1,
            split_seed: 42,
            valid_time: None,
            test_time: None,
            valid_time_fraction: None,
            test_time_fraction: None,
            temporal_targets: TemporalTargets::First,
        },
        ratings_digest: FileDigest::of_bytes(&[]),
    }
}

fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected text, found {}", shown(other))),
    }
}

/// A time: ISO 8601 text, or a number in the log's time unit.
fn time(value: &Value) -> Result<String, String> {
    match value {
        Value::Number(n) => Ok(n.to_string()),
        other => text(other),
    }
}

fn float(value: &Value) -> Result<f64, String> {
    value
        .as_f64()
        .ok_or_else(|| format!("expected a number, found {}", shown(value)))
}

fn whole(value: &Value) -> Result<u64, String> {
    value
        .as_u64()
        .ok_or_else(|| format!("expected a whole number >= 0, found {}", shown(value)))
}

fn size(value: &Value) -> Result<usize, String> {
    let n = whole(value)?;
    usize::try_from(n).map_err(|_| format!("{n} is too large"))
}

/// A list: a JSON list, or comma-separated text.
fn list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::String(s) => s
            .split(',')
            .map(|part| Value::String(part.trim().to_string()))
            .collect(),
        other => vec![other.clone()],
    }
}

fn texts(value: &Value) -> Result<Vec<String>, String> {
    list(value).iter().map(text).collect()
}

fn sizes(value: &Value) -> Result<Vec<usize>, String> {
    list(value)
        .iter()
        .map(|v| match v {
            Value::String(s) => s
                .parse::<usize>()
                .map_err(|_| format!("expected whole numbers, found {:?}", bounded(s, 40))),
            v => size(v),
        })
        .collect()
}

/// A value parsed by its type's `FromStr` (formats, time units, dedup).
fn parsed<T: std::str::FromStr<Err: std::fmt::Display>>(value: &Value) -> Result<T, String> {
    text(value)?.parse::<T>().map_err(|e| e.to_string())
}

/// A value by its name in config.json (`leave-one-out`, `sampled-softmax`).
fn named<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    let name = text(value)?;
    serde_json::from_value(Value::String(name)).map_err(|e| bounded(&e.to_string(), 200))
}

/// A value as shown in an error message.
fn shown(value: &Value) -> String {
    bounded(&value.to_string(), 60)
}
