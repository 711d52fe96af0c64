//! `cargo xtask bench quality`: test NDCG@10 and HR@10 of every training
//! loss (full softmax, in f32 and with bf16 products; sampled softmax with
//! 256, 1,024 and 3,000 negatives; BCE and gBCE with 256) on MovieLens
//! latest-small and on a small synthetic log, 3 seeds each, one protocol:
//! leave-one-out, at most 100 epochs, early stopping after 10 epochs
//! without a better validation NDCG@10, test numbers of the best checkpoint.
//!
//! A reduced grid for a smaller time budget, from the environment:
//! `SASREC_QUALITY_EPOCHS`, `SASREC_QUALITY_PATIENCE`, `SASREC_QUALITY_SEEDS`
//! (how many of seeds 1, 2, 3, ...), `SASREC_QUALITY_FIRST_SEED` (to run
//! only the later seeds, e.g. on another machine), `SASREC_QUALITY_BATCH` (sequences per
//! batch, default 128), `SASREC_QUALITY_LOSSES` and
//! `SASREC_QUALITY_DATA` (comma-separated names of the settings and data
//! sets below; default all).
//!
//! Resumable: runs go to
//! `$SASREC_BENCH_DIR/quality/e<EPOCHS>-p<PATIENCE>-b<BATCH>/<data>/<loss>-seed<S>`;
//! a run with a test.json is done, one with a config.json is resumed
//! (`train --resume`), any other is started. Seeds go in the outer loop, so
//! a grid stopped early has whole seeds. The table (mean and sample standard
//! deviation over the finished seeds, their number beside) is printed and
//! written to `table.md` in that folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::fetch;
use crate::synth::{SynthArgs, synth};
use crate::util::{bench_dir, cargo, check, env_number, release_dir};

/// The protocol: most epochs a run trains, validations without a better
/// NDCG@10 before it stops, epochs between validations, sequences per
/// batch, seeds `first_seed..=seeds`.
struct Protocol {
    epochs: u64,
    patience: u64,
    eval_every: u64,
    batch: u64,
    first_seed: u64,
    seeds: u64,
}

impl Protocol {
    fn from_env() -> Result<Protocol> {
        Ok(Protocol {
            epochs: env_number("SASREC_QUALITY_EPOCHS", 100)?,
            patience: env_number("SASREC_QUALITY_PATIENCE", 10)?,
            eval_every: env_number("SASREC_QUALITY_EVAL_EVERY", 1)?.max(1),
            batch: env_number("SASREC_QUALITY_BATCH", 128)?,
            first_seed: env_number("SASREC_QUALITY_FIRST_SEED", 1)?.max(1),
            seeds: env_number("SASREC_QUALITY_SEEDS", 3)?.max(1),
        })
    }
}

/// The names in environment variable `var` (comma-separated) that are among
/// `known`, all of `known` when unset; an unknown name is an error.
fn chosen<'a>(var: &str, known: &[&'a str]) -> Result<Vec<&'a str>> {
    let Ok(list) = std::env::var(var) else {
        return Ok(known.to_vec());
    };
    list.split(',')
        .map(|name| {
            known
                .iter()
                .find(|k| **k == name.trim())
                .copied()
                .with_context(|| format!("{var}: unknown {name:?} (known: {})", known.join(", ")))
        })
        .collect()
}

/// A training loss of the grid: its name and `sasrec train` flags.
struct Setting {
    name: String,
    flags: Vec<String>,
}

/// The sampled losses of the grid: (name, flags) before the scope.
const SAMPLED: [(&str, &[&str]); 5] = [
    (
        "sampled-softmax-256",
        &["--loss", "sampled-softmax", "--negatives", "256"],
    ),
    (
        "sampled-softmax-1024",
        &["--loss", "sampled-softmax", "--negatives", "1024"],
    ),
    (
        "sampled-softmax-3000",
        &["--loss", "sampled-softmax", "--negatives", "3000"],
    ),
    ("bce-256", &["--loss", "bce", "--negatives", "256"]),
    (
        "gbce-256",
        &["--loss", "gbce", "--negatives", "256", "--gbce-t", "0.75"],
    ),
];

/// How the sampled losses' negatives are drawn: a name suffix and flags.
const SCOPES: [(&str, &[&str]); 5] = [
    ("batch", &["--negatives-scope", "batch"]),
    (
        "sequence",
        &["--negatives-scope", "sequence", "--exclude-seen", "false"],
    ),
    (
        "position",
        &["--negatives-scope", "position", "--exclude-seen", "false"],
    ),
    (
        "sequence-unseen",
        &["--negatives-scope", "sequence", "--exclude-seen", "true"],
    ),
    (
        "position-unseen",
        &["--negatives-scope", "position", "--exclude-seen", "true"],
    ),
];

/// Every setting: the full softmax (f32 and bf16 products), then each sampled loss with each way of
/// drawing its negatives (`sampled-softmax-1024-sequence`, ...).
fn settings() -> Vec<Setting> {
    let setting = |name: &str, flags: &[&str]| Setting {
        name: name.into(),
        flags: flags.iter().map(|f| f.to_string()).collect(),
    };
    let mut all = vec![
        setting("full", &["--loss", "full"]),
        // The full softmax with bf16 products (on CPUs with AMX or AVX512-BF16).
        setting("full-bf16", &["--loss", "full", "--precision", "bf16"]),
    ];
    for (loss, loss_flags) in SAMPLED {
        for (scope, scope_flags) in SCOPES {
            all.push(Setting {
                name: format!("{loss}-{scope}"),
                flags: loss_flags
                    .iter()
                    .chain(scope_flags)
                    .map(|f| f.to_string())
                    .collect(),
            });
        }
    }
    all
}

/// A synthetic log of the grid, written once into `dir`: `small` (1,500
/// users, 4,000 items: more than 3,000 negatives need; 45,000 events) or
/// `large` (10,000 users, 40,000 items, where the full softmax is slow;
/// 500,000 events), the generator's default signal.
fn synthetic(dir: &Path, large: bool) -> Result<PathBuf> {
    let (name, users, items, rows) = if large {
        ("quality-synth-40k.csv", 10_000, 40_000, 500_000)
    } else {
        ("quality-synth.csv", 1_500, 4_000, 45_000)
    };
    let path = dir.join(name);
    if !path.exists() {
        synth(&SynthArgs {
            users,
            items,
            rows,
            seed: 0,
            out: path.clone(),
            string_ids: false,
            long_range: false,
        })?;
    }
    Ok(path)
}

pub fn run() -> Result<()> {
    let protocol = Protocol::from_env()?;
    let dir = bench_dir().join("quality").join(format!(
        "e{}-p{}-v{}-b{}",
        protocol.epochs, protocol.patience, protocol.eval_every, protocol.batch
    ));
    std::fs::create_dir_all(&dir)?;
    let all = settings();
    let settings: Vec<&Setting> = {
        let known: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        let names = chosen("SASREC_QUALITY_LOSSES", &known)?;
        all.iter()
            .filter(|s| names.contains(&s.name.as_str()))
            .collect()
    };
    let mut datasets = Vec::new();
    for name in chosen(
        "SASREC_QUALITY_DATA",
        &["latest-small", "synthetic", "synthetic-40k"],
    )? {
        let ratings = match name {
            "latest-small" => fetch::ensure_dataset("latest-small")?,
            "synthetic" => synthetic(&bench_dir(), false)?,
            _ => synthetic(&bench_dir(), true)?,
        };
        datasets.push((name, ratings));
    }
    check(cargo().args(["build", "--release", "-p", "sasrec-cli"]))?;
    let sasrec = release_dir().join("sasrec");
    let seeds = protocol.first_seed..=protocol.seeds;
    let total = datasets.len() * settings.len() * seeds.clone().count();
    let mut done = 0;
    for seed in seeds {
        for (data_name, ratings) in &datasets {
            for setting in &settings {
                done += 1;
                let out = dir
                    .join(data_name)
                    .join(format!("{}-seed{seed}", setting.name));
                if out.join("test.json").exists() {
                    continue;
                }
                let mut args: Vec<String> = vec!["train".into()];
                if out.join("config.json").exists() {
                    args.push("--resume".into());
                } else {
                    args.extend(
                        [
                            "--ratings",
                            &ratings.display().to_string(),
                            "--epochs",
                            &protocol.epochs.to_string(),
                            "--patience",
                            &protocol.patience.to_string(),
                            "--eval-every",
                            &protocol.eval_every.to_string(),
                            "--batch-size",
                            &protocol.batch.to_string(),
                            "--select",
                            "ndcg@10",
                            "--k",
                            "10",
                            "--seed",
                            &seed.to_string(),
                            "--device",
                            "cpu",
                            // The losses compared on the notebook's sizes.
                            "--dim",
                            "64",
                            "--max-len",
                            "50",
                        ]
                        .map(String::from),
                    );
                    args.extend(setting.flags.iter().cloned());
                }
                args.extend(["--out".into(), out.display().to_string()]);
                eprintln!("[{done}/{total}] {data_name} {} seed {seed}", setting.name);
                let started = Instant::now();
                check(
                    Command::new(&sasrec)
                        .args(&args)
                        .stdout(std::process::Stdio::null()),
                )?;
                eprintln!("  {:.0} s", started.elapsed().as_secs_f64());
            }
        }
    }
    let names: Vec<&str> = datasets.iter().map(|(name, _)| *name).collect();
    let table = table(&dir, &names, &settings, &protocol)?;
    print!("{table}");
    std::fs::write(dir.join("table.md"), &table)?;
    Ok(())
}

/// Test NDCG@10, HR@10 and the best epoch of a finished run.
fn result(run: &Path) -> Result<[f64; 3]> {
    let path = run.join("test.json");
    let json: Value = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("reading {}", path.display()))?;
    let at10 = json["test"]["ranking"]["at"]
        .as_array()
        .and_then(|at| at.iter().find(|m| m["k"] == 10))
        .with_context(|| format!("{}: no @10 metrics", path.display()))?;
    let number = |v: &Value| v.as_f64().context("not a number");
    Ok([
        number(&at10["ndcg"])?,
        number(&at10["hr"])?,
        number(&json["best_epoch"])?,
    ])
}

/// Mean and sample standard deviation.
fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// The Markdown table of every setting on every dataset, over the seeds
/// whose runs finished.
fn table(
    dir: &Path,
    datasets: &[&str],
    settings: &[&Setting],
    protocol: &Protocol,
) -> Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "| data | loss | seeds | test NDCG@10 | test HR@10 | NDCG@10 vs full | best epoch |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|")?;
    for data in datasets {
        let mut full_ndcg = None;
        for setting in settings {
            let runs: Vec<[f64; 3]> = (protocol.first_seed..=protocol.seeds)
                .map(|s| dir.join(data).join(format!("{}-seed{s}", setting.name)))
                .filter(|run| run.join("test.json").exists())
                .map(|run| result(&run))
                .collect::<Result<_>>()?;
            if runs.is_empty() {
                continue;
            }
            let column = |i: usize| mean_sd(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
            let ((ndcg, ndcg_sd), (hr, hr_sd), (epoch, _)) = (column(0), column(1), column(2));
            if setting.name == "full" {
                full_ndcg = Some(ndcg);
            }
            let versus = full_ndcg.map_or("".into(), |full| {
                format!("{:+.1}%", 100.0 * (ndcg / full - 1.0))
            });
            writeln!(
                out,
                "| {data} | {} | {} | {ndcg:.4} ± {ndcg_sd:.4} | {hr:.4} ± {hr_sd:.4} | {versus} | {epoch:.0} |",
                setting.name,
                runs.len()
            )?;
        }
    }
    writeln!(
        out,
        "\nmean ± sample standard deviation over the finished seeds of {}..={}; at most {} epochs, validation every {} epochs, patience {} validations on NDCG@10, batch {}",
        protocol.first_seed,
        protocol.seeds,
        protocol.epochs,
        protocol.eval_every,
        protocol.patience,
        protocol.batch
    )?;
    Ok(out)
}
