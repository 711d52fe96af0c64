//! `sasrec runs`: compare runs side by side: the settings that differ, the
//! best epoch, validation and test metrics, time.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use sasrec_model::records::EpochRecord;
use sasrec_model::{Evaluation, RankingMetrics, bounded, duration};
use sasrec_run::RunDir;
use serde_json::Value;

use crate::config_file;
use crate::table::{Table, metric};

/// `sasrec runs` flags.
#[derive(Args, Debug)]
pub struct RunsArgs {
    /// Run folders, or folders holding runs (searched a few levels down).
    #[arg(value_name = "DIR", default_value = "runs")]
    dirs: Vec<PathBuf>,
    /// table: the settings that differ and the metrics at the first K,
    /// aligned; csv or json: one flat row per run with every setting and
    /// every metric (`valid_ndcg@10`, `test_hr@20`, ...), for pandas.
    #[arg(long, value_enum, default_value = "table")]
    format: RunsFormat,
}

/// `sasrec runs --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RunsFormat {
    /// Aligned columns for reading.
    Table,
    /// CSV with a header.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// How deep below a given folder runs are looked for.
const MAX_DEPTH: usize = 3;

/// What one run folder says about itself.
pub struct RunSummary {
    /// The run folder.
    pub path: PathBuf,
    /// Its settings as `sasrec train` keys and values (from config.json).
    pub settings: Vec<(String, String)>,
    /// The same settings with their JSON values.
    pub values: Vec<(String, Value)>,
    /// Its committed epochs.
    pub epochs: Vec<EpochRecord>,
    /// Whether training is over.
    pub finished: bool,
    /// Test numbers of the best checkpoint (test.json), when written.
    pub test: Option<Evaluation>,
    /// The most-popular baseline on the validation users.
    pub baseline: Option<RankingMetrics>,
}

impl RunSummary {
    /// Reads a run folder (nothing is written).
    pub fn read(path: &Path) -> Result<RunSummary> {
        let dir = RunDir::new(path);
        let values = config_file::read(&dir.config())?;
        let settings = values
            .iter()
            .map(|(key, value)| (key.clone(), show(value)))
            .collect();
        let commit = dir.read_commit()?;
        let test = dir.file("test.json");
        let test = if test.exists() {
            let json: Value = sasrec_run::read_json(&test)?;
            Some(serde_json::from_value(json["test"].clone()).map_err(|e| {
                anyhow::anyhow!(
                    "{}: `test`: {}",
                    test.display(),
                    bounded(&e.to_string(), 100)
                )
            })?)
        } else {
            None
        };
        Ok(RunSummary {
            path: path.to_path_buf(),
            settings,
            values,
            finished: commit.as_ref().is_some_and(|c| c.progress.finished),
            baseline: commit.as_ref().and_then(|c| c.baseline.clone()),
            epochs: commit.map(|c| c.epochs).unwrap_or_default(),
            test,
        })
    }

    /// The best epoch's record.
    pub fn best(&self) -> Option<&EpochRecord> {
        self.epochs.iter().rev().find(|r| r.best)
    }

    /// Training and validation time of the committed epochs.
    pub fn seconds(&self) -> f64 {
        self.epochs
            .iter()
            .map(|r| r.seconds + r.valid_seconds)
            .sum()
    }

    /// A setting's value as shown ("-" when unset).
    pub fn setting(&self, key: &str) -> &str {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map_or("-", |(_, v)| v.as_str())
    }
}

/// A config value as a person reads it.
pub fn show(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(","),
        Value::Object(_) => serde_json::from_value::<sasrec_model::Selection>(value.clone())
            .map_or_else(|_| value.to_string(), |s| s.to_string()),
        other => other.to_string(),
    }
}

/// The run folders in `dirs`: each one that holds a run, else the runs
/// found below it, in name order.
pub fn find_runs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
        if RunDir::new(dir).holds_run() {
            out.push(dir.to_path_buf());
            return Ok(());
        }
        if depth == 0 {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("listing {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        for entry in entries {
            walk(&entry, depth - 1, out)?;
        }
        Ok(())
    }
    let mut runs = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            bail!("{} is not a folder", dir.display());
        }
        let before = runs.len();
        walk(dir, MAX_DEPTH, &mut runs)?;
        if runs.len() == before {
            bail!(
                "{} holds no run (no config.json in it or below it)",
                dir.display()
            );
        }
    }
    Ok(runs)
}

/// Short names for runs: the last path components that tell them apart.
pub fn run_names(paths: &[PathBuf]) -> Vec<String> {
    let parts: Vec<Vec<String>> = paths
        .iter()
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .collect();
    let name = |p: &[String], n: usize| p[p.len().saturating_sub(n)..].join("/");
    let longest = parts.iter().map(Vec::len).max().unwrap_or(1);
    let n = (1..=longest)
        .find(|&n| {
            let mut names: Vec<String> = parts.iter().map(|p| name(p, n)).collect();
            names.sort();
            names.dedup();
            names.len() == parts.len()
        })
        .unwrap_or(longest);
    parts.iter().map(|p| name(p, n)).collect()
}

/// The settings whose values differ between runs (none for a single run),
/// in the order the first run lists them.
pub fn differing_settings(runs: &[RunSummary]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for run in runs {
        for (key, _) in &run.settings {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    keys.retain(|key| {
        runs.windows(2)
            .any(|w| w[0].setting(key) != w[1].setting(key))
    });
    keys
}

/// The cut-off K the metric columns show: the smallest first K of the runs.
pub fn shown_k<'a>(runs: impl IntoIterator<Item = &'a RunSummary>) -> Option<usize> {
    runs.into_iter()
        .filter_map(|r| r.best()?.valid.ranking.as_ref()?.at.first().map(|a| a.k))
        .min()
}

/// A number read from a run, if it has it.
pub type RunValue = Box<dyn Fn(&RunSummary) -> Option<f64>>;

/// A metric column: its name and its value.
pub type Column = (String, RunValue);

/// Validation and test metrics at `k` (loss when no run ranks).
pub fn metric_columns(k: Option<usize>) -> Vec<Column> {
    let Some(k) = k else {
        return vec![(
            "valid loss".to_string(),
            Box::new(|r: &RunSummary| r.best().map(|b| b.valid.loss)),
        )];
    };
    type Metric = fn(&RankingMetrics, usize) -> Option<f64>;
    let valid = |f: Metric| -> RunValue {
        Box::new(move |r: &RunSummary| f(r.best()?.valid.ranking.as_ref()?, k))
    };
    let test = |f: Metric| -> RunValue {
        Box::new(move |r: &RunSummary| f(r.test.as_ref()?.ranking.as_ref()?, k))
    };
    vec![
        (format!("valid NDCG@{k}"), valid(|m, k| m.ndcg(k))),
        (format!("valid HR@{k}"), valid(|m, k| m.hr(k))),
        (format!("test NDCG@{k}"), test(|m, k| m.ndcg(k))),
        (format!("test HR@{k}"), test(|m, k| m.hr(k))),
        ("test MRR".to_string(), test(|m, _| Some(m.mrr))),
    ]
}

/// Runs `sasrec runs`.
pub fn run(args: RunsArgs) -> Result<()> {
    let paths = find_runs(&args.dirs)?;
    let runs = paths
        .iter()
        .map(|p| RunSummary::read(p))
        .collect::<Result<Vec<_>>>()?;
    let out = match args.format {
        RunsFormat::Table => compare(&runs).to_text(),
        RunsFormat::Csv => {
            let rows = flat_rows(&runs);
            let mut header: Vec<String> = Vec::new();
            for row in &rows {
                for key in row.keys() {
                    if !header.contains(key) {
                        header.push(key.clone());
                    }
                }
            }
            let cell = |v: Option<&Value>| match v {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => show(other),
            };
            let table = Table {
                rows: rows
                    .iter()
                    .map(|row| header.iter().map(|k| cell(row.get(k))).collect())
                    .collect(),
                header,
            };
            String::from_utf8(table.to_csv()?)?
        }
        RunsFormat::Json => {
            let mut text = serde_json::to_string_pretty(&flat_rows(&runs))?;
            text.push('\n');
            text
        }
    };
    print!("{out}");
    Ok(())
}

/// One flat JSON object per run: its name and path, every setting, the
/// best epoch, the epochs done, and every metric as `PART_METRIC` (`valid_loss`,
/// `valid_ndcg@10`, `test_hr@20`, `test_mrr`, ...).
pub fn flat_rows(runs: &[RunSummary]) -> Vec<serde_json::Map<String, Value>> {
    let names = run_names(&runs.iter().map(|r| r.path.clone()).collect::<Vec<_>>());
    runs.iter()
        .zip(names)
        .map(|(run, name)| {
            let mut row = serde_json::Map::new();
            row.insert("run".into(), name.into());
            row.insert("path".into(), run.path.display().to_string().into());
            for (key, value) in &run.values {
                row.insert(key.clone(), value.clone());
            }
            row.insert("best_epoch".into(), run.best().map(|b| b.epoch).into());
            row.insert("epochs_done".into(), run.epochs.len().into());
            row.insert("finished".into(), run.finished.into());
            row.insert("seconds".into(), run.seconds().into());
            let mut metrics = |part: &str, loss: f64, ranking: Option<&RankingMetrics>| {
                row.insert(format!("{part}_loss"), loss.into());
                if let Some(m) = ranking {
                    for at in &m.at {
                        row.insert(format!("{part}_hr@{}", at.k), at.hr.into());
                        row.insert(format!("{part}_ndcg@{}", at.k), at.ndcg.into());
                    }
                    row.insert(format!("{part}_mrr"), m.mrr.into());
                }
            };
            if let Some(best) = run.best() {
                metrics("valid", best.valid.loss, best.valid.ranking.as_ref());
            }
            if let Some(test) = &run.test {
                metrics("test", test.loss, test.ranking.as_ref());
            }
            row
        })
        .collect()
}

/// The comparison table of `runs`.
pub fn compare(runs: &[RunSummary]) -> Table {
    let names = run_names(&runs.iter().map(|r| r.path.clone()).collect::<Vec<_>>());
    let keys = differing_settings(runs);
    let columns = metric_columns(shown_k(runs));
    let mut header = vec!["run".to_string()];
    header.extend(keys.iter().cloned());
    header.push("best epoch".to_string());
    header.extend(columns.iter().map(|(name, _)| name.clone()));
    header.push("time".to_string());
    let rows = runs
        .iter()
        .zip(names)
        .map(|(run, name)| {
            let mut row = vec![name];
            row.extend(keys.iter().map(|k| run.setting(k).to_string()));
            let epochs = format!(
                "{}/{}{}",
                run.best().map_or("-".to_string(), |b| b.epoch.to_string()),
                run.epochs.last().map_or(0, |r| r.epoch),
                if run.finished { "" } else { "+" }
            );
            row.push(epochs);
            row.extend(
                columns
                    .iter()
                    .map(|(_, value)| value(run).map_or("-".to_string(), metric)),
            );
            row.push(duration(run.seconds()));
            row
        })
        .collect();
    Table { header, rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_shortest_distinct_suffixes() {
        let paths: Vec<PathBuf> = ["runs/a/x", "runs/b/x", "runs/c"]
            .map(PathBuf::from)
            .to_vec();
        assert_eq!(run_names(&paths), ["a/x", "b/x", "runs/c"]);
        let paths: Vec<PathBuf> = ["s/lr=1-seed1", "s/lr=1-seed2"].map(PathBuf::from).to_vec();
        assert_eq!(run_names(&paths), ["lr=1-seed1", "lr=1-seed2"]);
    }
}
