//! Writes a run folder holding a freshly initialised (untrained) model for a
//! log: the notebook's sizes, weights drawn as training would start them.
//! For benchmarks of `sasrec recommend --all-users`, `serve` and `export`
//! at sizes where training takes hours on a CPU (their cost depends on the
//! sizes, not on the weights).
//!
//! ```sh
//! cargo run --release -p sasrec-run --example untrained_run -- LOG OUT_DIR
//! ```
//!
//! LOG is read with its columns found by their usual names (`user_id`,
//! `item_id`, `timestamp`, ...), as `sasrec train --ratings LOG` would.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use sasrec_data::{DataSpec, SplitMethod};
use sasrec_data::{FilterConfig, InputSpec};
use sasrec_kernels::CpuBackend;
use sasrec_model::checkpoint::to_safetensors;
use sasrec_model::{Generation, ModelConfig, RunStore, SasRec, TrainConfig, TrainState};
use sasrec_run::{FileDigest, RunConfig, RunWriter};

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(log), Some(out)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: untrained_run LOG OUT_DIR");
    };
    let data = DataSpec {
        ratings: log.clone(),
        input: InputSpec::default(),
        filter: FilterConfig::default(),
        split: SplitMethod::LeaveOneOut,
        valid_fraction: 0.1,
        split_seed: 42,
        valid_time: None,
        test_time: None,
        valid_time_fraction: None,
        test_time_fraction: None,
        temporal_targets: Default::default(),
    };
    eprintln!("reading {}", log.display());
    let (dataset, split) = data.load()?;
    let config = RunConfig {
        model: ModelConfig::notebook(dataset.vocab.num_items()),
        train: TrainConfig::default(),
        ratings_digest: FileDigest::of_file(&log)?,
        data,
    };
    let model = SasRec::new(&CpuBackend, config.model.clone(), config.train.seed);
    let weights = to_safetensors(
        &model.weights(&CpuBackend),
        HashMap::from([("step".to_string(), "0".to_string())]),
    )?;
    let mut run = RunWriter::create(&out, "untrained_run", false)?;
    run.write_settings(&config, &dataset, &split)?;
    // A finished run of zero epochs whose best checkpoint is the initial one.
    let state = TrainState {
        best: Some((0.0, 0)),
        finished: true,
        ..TrainState::default()
    };
    run.commit(Generation {
        progress: &state,
        last: &weights,
        best: Some(&weights),
        epochs: &[],
    })
    .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "{}: untrained model, {} items, {} users",
        out.display(),
        dataset.vocab.num_items(),
        dataset.vocab.num_users()
    );
    Ok(())
}
