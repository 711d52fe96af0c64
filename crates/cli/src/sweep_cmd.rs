//! `sasrec sweep sweep.toml`: train every setting of a grid with several
//! seeds, one run after another, then tabulate mean and spread per setting.
//!
//! ```toml
//! out = "runs/sweep"          # the runs go to out/<setting>-seed<S>/
//! seeds = [1, 2, 3]           # default: the base's seed, else 42
//! base = "run.toml"           # or a [base] table: the settings of every run
//!                             # (its `out` and `seed` give way to the sweep's)
//!
//! [grid]                      # every combination of these values
//! lr = [0.001, 0.003]
//! dropout = [0.1, 0.3]
//!
//! [variants]                  # or (and) named settings, one change at a time
//! notebook = { preset = "notebook" }
//! swiglu = { preset = "notebook", feed_forward = "swiglu" }
//! ```
//!
//! A setting's name is made of the keys that vary, sorted by key
//! (`dropout=0.1,lr=0.001`), so it does not depend on the file's order;
//! with variants, the variant's name comes first (`swiglu,lr=0.001`), and
//! variants run in the order of their names. A variant's settings replace
//! the base's; the grid's replace both.
//! Each run is `sasrec train` in a child process; a finished run is
//! skipped, one that was cut short is resumed, and a run whose settings
//! differ from the file's is an error (a larger `epochs` or `patience`
//! extends it instead).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::args::DeviceKind;
use crate::config_file::{self, Setting};
use crate::runs_cmd::{RunSummary, metric_columns, shown_k};
use crate::table::{self, Table};

/// `sasrec sweep` flags.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The sweep file (TOML): `out`, `seeds`, `base` and a `[grid]`.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Backend of every run (overrides the file's `device`).
    #[arg(long, value_enum)]
    device: Option<DeviceKind>,
    /// With --device gpu: the adapter, by index or part of its name.
    #[arg(long, value_name = "INDEX|NAME")]
    adapter: Option<String>,
    /// CPU threads of every run.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

/// Keys of a sweep file.
const SWEEP_KEYS: [&str; 5] = ["out", "seeds", "base", "grid", "variants"];
/// Settings a sweep sets itself, per run.
const PER_RUN: [&str; 2] = ["seed", "out"];
/// Settings a resumed run may take (a new budget).
const BUDGET: [&str; 2] = ["epochs", "patience"];
/// Settings that say where and how to run, not what: passed on resume too,
/// never compared with a run's config.json.
const RUNTIME: [&str; 6] = [
    "device",
    "adapter",
    "threads",
    "profile_kernels",
    "profile_ops",
    "allow_changed_data",
];

/// A sweep file, read and checked.
struct Sweep {
    out: PathBuf,
    seeds: Vec<u64>,
    base: Vec<Setting>,
    /// (key, values), sorted by key.
    grid: Vec<(String, Vec<Value>)>,
    /// (name, settings), sorted by name; empty without `[variants]`.
    variants: Vec<(String, Vec<Setting>)>,
}

/// One run of the sweep.
struct Planned {
    setting: String,
    dir: PathBuf,
    settings: Vec<Setting>,
}

/// Runs `sasrec sweep`: 0 when every run is done, 130 when stopped.
pub fn run(args: SweepArgs) -> Result<ExitCode> {
    let origin = args.file.display().to_string();
    let sweep = read_sweep(&args.file)?;
    let command = crate::train_cmd::train_command();
    let mut runtime = Vec::new();
    if let Some(device) = args.device {
        let name = device
            .to_possible_value()
            .expect("not skipped")
            .get_name()
            .to_string();
        runtime.push(("device".to_string(), Value::String(name)));
    }
    if let Some(adapter) = &args.adapter {
        runtime.push(("adapter".to_string(), Value::String(adapter.clone())));
    }
    if let Some(threads) = args.threads {
        runtime.push(("threads".to_string(), Value::from(threads)));
    }
    let plan = plan(&sweep, &runtime);
    // Every run's settings are checked before the first one starts.
    for run in &plan {
        config_file::to_args(&run.settings, &command, &origin)?;
    }
    std::fs::create_dir_all(&sweep.out)
        .with_context(|| format!("creating {}", sweep.out.display()))?;

    // Ctrl-C reaches the child training too (same process group): it saves
    // and exits with 130, and the sweep stops after it.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let total = plan.len();
    for (i, run) in plan.iter().enumerate() {
        let label = format!("[{}/{total}] {}", i + 1, run.dir.display());
        let Some(args) = train_args(run, &command, &origin)? else {
            eprintln!("{label}: done");
            continue;
        };
        eprintln!("{label}");
        let exe = std::env::current_exe().context("finding the sasrec binary")?;
        let status = std::process::Command::new(exe)
            .args(&args)
            .status()
            .context("starting sasrec train")?;
        if status.code() == Some(130) || stop.load(Ordering::SeqCst) {
            eprintln!(
                "sweep stopped; `sasrec sweep {origin}` continues it (finished runs are skipped)"
            );
            return Ok(ExitCode::from(130));
        }
        if !status.success() {
            bail!(
                "{} failed ({status}); once fixed, `sasrec sweep {origin}` continues (finished runs are skipped)",
                run.dir.display()
            );
        }
    }
    summarize(&sweep, &plan)?;
    Ok(ExitCode::SUCCESS)
}

/// Reads and checks a sweep file.
fn read_sweep(path: &Path) -> Result<Sweep> {
    let origin = path.display().to_string();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table = config_file::parse_toml(&text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let bad = |why: String| anyhow::anyhow!("{origin}: {why}");
    if let Some(key) = table.keys().find(|k| !SWEEP_KEYS.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown key `{}` (a sweep file has out, seeds, base, [grid] and [variants])",
            sasrec_model::bounded(key, 60)
        )));
    }
    let out = match table.get("out") {
        Some(Value::String(s)) => PathBuf::from(s),
        Some(_) => return Err(bad("`out` must be a folder name".into())),
        None => return Err(bad("`out` is missing: the folder the runs go to".into())),
    };
    let base = match table.get("base") {
        None => Vec::new(),
        Some(Value::String(file)) => config_file::read(Path::new(file))?,
        Some(Value::Object(t)) => {
            config_file::settings(t.clone()).map_err(|e| bad(e.to_string()))?
        }
        Some(_) => {
            return Err(bad(
                "`base` must be a settings file or a [base] table".into()
            ));
        }
    };
    let mut grid: Vec<(String, Vec<Value>)> = match table.get("grid") {
        None => Vec::new(),
        Some(Value::Object(t)) => t
            .iter()
            .map(|(k, v)| match v {
                Value::Array(values) if !values.is_empty() => Ok((k.clone(), values.clone())),
                _ => Err(bad(format!(
                    "[grid] `{k}` must be a non-empty list of values"
                ))),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad("`grid` must be a table of lists".into())),
    };
    grid.sort_by(|a, b| a.0.cmp(&b.0));
    let variants: Vec<(String, Vec<Setting>)> = match table.get("variants") {
        None => Vec::new(),
        Some(Value::Object(t)) if !t.is_empty() => t
            .iter()
            .map(|(name, v)| match v {
                Value::Object(fields) => config_file::settings(fields.clone())
                    .map(|settings| (name.clone(), settings))
                    .map_err(|e| bad(format!("[variants] `{name}`: {e}"))),
                _ => Err(bad(format!(
                    "[variants] `{name}` must be a table of settings"
                ))),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad("`variants` must be a table of tables".into())),
    };
    // The base's seed and folder give way to the sweep's (so a run's
    // settings file serves as a base); the grid and variants cannot set them.
    let set_keys = grid.iter().map(|(key, _)| key).chain(
        variants
            .iter()
            .flat_map(|(_, v)| v.iter().map(|(key, _)| key)),
    );
    for key in set_keys {
        if PER_RUN.contains(&key.as_str()) {
            return Err(bad(format!(
                "`{key}` is set by the sweep for each run (seeds = [...], out = \"...\")"
            )));
        }
    }
    let base_seed = base
        .iter()
        .find(|(k, _)| k == "seed")
        .and_then(|(_, v)| v.as_u64());
    let seeds = match table.get("seeds") {
        None => vec![base_seed.unwrap_or(42)],
        Some(Value::Array(values)) if !values.is_empty() => values
            .iter()
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| bad(format!("seed {v} is not a whole number")))
            })
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(bad(
                "`seeds` must be a non-empty list of whole numbers".into()
            ));
        }
    };
    Ok(Sweep {
        out,
        seeds,
        base,
        grid,
        variants,
    })
}

/// Every (setting, seed) of the sweep, in order: settings as the grid
/// lists them (the last key varying fastest), seeds within each setting.
fn plan(sweep: &Sweep, runtime: &[Setting]) -> Vec<Planned> {
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (key, values) in &sweep.grid {
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |v| {
                    let mut next = combo.clone();
                    next.push((key.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    // Without variants, one unnamed variant of no settings.
    let no_variant = [(String::new(), Vec::new())];
    let variants = if sweep.variants.is_empty() {
        &no_variant[..]
    } else {
        &sweep.variants[..]
    };
    let mut plan = Vec::new();
    for ((variant, variant_settings), combo) in variants
        .iter()
        .flat_map(|v| combos.iter().map(move |c| (v, c)))
    {
        let varying: Vec<String> = (!variant.is_empty())
            .then(|| name_part(&Value::String(variant.clone())))
            .into_iter()
            .chain(
                combo
                    .iter()
                    .filter(|(key, _)| sweep.grid.iter().any(|(k, vs)| k == key && vs.len() > 1))
                    .map(|(key, value)| format!("{key}={}", name_part(value))),
            )
            .collect();
        let setting = if varying.is_empty() {
            "run".to_string()
        } else {
            varying.join(",")
        };
        // The variant's settings replace the base's, the grid's both.
        let mut layered: Vec<Setting> = sweep.base.clone();
        for layer in [variant_settings, combo] {
            layered.retain(|(k, _)| !layer.iter().any(|(c, _)| c == k));
            layered.extend(layer.iter().cloned());
        }
        for &seed in &sweep.seeds {
            let dir = sweep.out.join(format!("{setting}-seed{seed}"));
            let mut settings: Vec<Setting> = layered
                .iter()
                .filter(|(k, _)| !PER_RUN.contains(&k.as_str()))
                .cloned()
                .collect();
            settings.retain(|(k, _)| !runtime.iter().any(|(r, _)| r == k));
            settings.extend(runtime.iter().cloned());
            settings.push(("seed".to_string(), Value::from(seed)));
            settings.push(("out".to_string(), Value::String(dir.display().to_string())));
            plan.push(Planned {
                setting: setting.clone(),
                dir,
                settings,
            });
        }
    }
    plan
}

/// A value as part of a folder name: no path separators or spaces.
fn name_part(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(name_part).collect::<Vec<_>>().join("+"),
        other => other.to_string(),
    };
    text.chars()
        .map(|c| {
            if c.is_alphanumeric() || "._+-@=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `sasrec train` arguments that bring a planned run to its end: a new
/// run, `--resume` for one cut short or given a larger budget, or `None`
/// for one that is done.
fn train_args(
    run: &Planned,
    command: &clap::Command,
    origin: &str,
) -> Result<Option<Vec<OsString>>> {
    let mut args: Vec<OsString> = vec!["train".into()];
    if !sasrec_run::RunDir::new(&run.dir).holds_run() {
        args.extend(config_file::to_args(&run.settings, command, origin)?);
        return Ok(Some(args));
    }
    let existing = RunSummary::read(&run.dir)?;
    let mut extended = false;
    for (key, value) in &run.settings {
        // Only what config.json records is compared (not e.g. `dataset`,
        // which it records as the `ratings` path).
        let recorded = existing.settings.iter().any(|(k, _)| k == key);
        if !recorded || PER_RUN.contains(&key.as_str()) || RUNTIME.contains(&key.as_str()) {
            continue;
        }
        let now = existing.setting(key);
        let wanted = crate::runs_cmd::show(value);
        if now == wanted {
            continue;
        }
        if BUDGET.contains(&key.as_str()) {
            extended = true;
            continue;
        }
        bail!(
            "{} holds a run with {key} {now}, but {origin} now says {wanted}: move it away, or change `out`",
            run.dir.display()
        );
    }
    if existing.finished && !extended {
        return Ok(None);
    }
    let resume: Vec<Setting> = run
        .settings
        .iter()
        .filter(|(k, _)| {
            BUDGET.contains(&k.as_str()) || RUNTIME.contains(&k.as_str()) || k == "out"
        })
        .cloned()
        .collect();
    args.push("--resume".into());
    args.extend(config_file::to_args(&resume, command, origin)?);
    Ok(Some(args))
}

/// Prints the table of mean and spread per setting and writes it beside the
/// runs as summary.csv and summary.md.
fn summarize(sweep: &Sweep, plan: &[Planned]) -> Result<()> {
    let mut settings: Vec<(&str, Vec<RunSummary>)> = Vec::new();
    for run in plan {
        let summary = RunSummary::read(&run.dir)?;
        match settings.iter_mut().find(|(s, _)| *s == run.setting) {
            Some((_, runs)) => runs.push(summary),
            None => settings.push((&run.setting, vec![summary])),
        }
    }
    let columns = metric_columns(shown_k(settings.iter().flat_map(|(_, r)| r)));
    let mut text = Table {
        header: vec!["setting".to_string(), "n".to_string()],
        rows: Vec::new(),
    };
    let mut csv = text.clone();
    text.header
        .extend(columns.iter().map(|(name, _)| name.clone()));
    for (name, _) in &columns {
        csv.header.push(format!("{name} mean"));
        csv.header.push(format!("{name} sd"));
    }
    for (setting, runs) in &settings {
        let n = runs.len().to_string();
        let mut row = vec![setting.to_string(), n.clone()];
        let mut csv_row = row.clone();
        for (_, value) in &columns {
            let values: Vec<f64> = runs.iter().filter_map(value).collect();
            let (mean, sd) = mean_sd(&values);
            row.push(match (mean, sd) {
                (Some(m), Some(s)) => format!("{m:.4} ± {s:.4}"),
                (Some(m), None) => format!("{m:.4}"),
                _ => "-".to_string(),
            });
            csv_row.push(mean.map_or(String::new(), |m| m.to_string()));
            csv_row.push(sd.map_or(String::new(), |s| s.to_string()));
        }
        text.rows.push(row);
        csv.rows.push(csv_row);
    }
    let seeds = sweep.seeds.len();
    println!(
        "mean ± sample standard deviation over {seeds} seed{} per setting (n runs)",
        if seeds == 1 { "" } else { "s" }
    );
    print!("{}", text.to_text());
    let csv_path = sweep.out.join("summary.csv");
    let md_path = sweep.out.join("summary.md");
    table::write(&csv_path, &csv.to_csv()?)?;
    let md = format!(
        "Mean ± sample standard deviation over n runs (seeds {:?}) per setting.\n\n{}",
        sweep.seeds,
        text.to_markdown()
    );
    table::write(&md_path, md.as_bytes())?;
    println!(
        "tables        {}, {}",
        csv_path.display(),
        md_path.display()
    );
    Ok(())
}

/// The mean, and the sample standard deviation (n - 1) when n >= 2.
fn mean_sd(values: &[f64]) -> (Option<f64>, Option<f64>) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (None, None);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (Some(mean), None);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (Some(mean), Some(var.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_standard_deviation() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, Some(2.5));
        assert!((s.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[2.0]), (Some(2.0), None));
    }

    #[test]
    fn settings_are_named_by_the_keys_that_vary() {
        let sweep = Sweep {
            out: "s".into(),
            seeds: vec![1, 2],
            base: vec![("lr".into(), Value::from(0.5))],
            grid: vec![
                ("dim".into(), vec![Value::from(16), Value::from(32)]),
                ("lr".into(), vec![Value::from(0.001)]),
                ("split".into(), vec![Value::from("a/b")]),
            ],
            variants: Vec::new(),
        };
        let plan = plan(&sweep, &[]);
        let dirs: Vec<String> = plan.iter().map(|p| p.dir.display().to_string()).collect();
        assert_eq!(
            dirs,
            [
                "s/dim=16-seed1",
                "s/dim=16-seed2",
                "s/dim=32-seed1",
                "s/dim=32-seed2"
            ]
        );
        // The grid's value replaces the base's; the seed and folder come last.
        let keys: Vec<&str> = plan[0].settings.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["dim", "lr", "split", "seed", "out"]);
        assert_eq!(plan[0].settings[1].1, Value::from(0.001));
        assert_eq!(name_part(&Value::from("a/b c")), "a_b_c");
    }

    #[test]
    fn variants_are_named_first_and_replace_the_base() {
        let sweep = Sweep {
            out: "s".into(),
            seeds: vec![1],
            base: vec![
                ("preset".into(), Value::from("recommended")),
                ("lr".into(), Value::from(0.5)),
            ],
            grid: vec![("lr".into(), vec![Value::from(0.1), Value::from(0.2)])],
            variants: vec![
                (
                    "notebook".into(),
                    vec![("preset".into(), Value::from("notebook"))],
                ),
                (
                    "swiglu".into(),
                    vec![
                        ("preset".into(), Value::from("notebook")),
                        ("feed_forward".into(), Value::from("swiglu")),
                    ],
                ),
            ],
        };
        let plan = plan(&sweep, &[]);
        let dirs: Vec<String> = plan.iter().map(|p| p.dir.display().to_string()).collect();
        assert_eq!(
            dirs,
            [
                "s/notebook,lr=0.1-seed1",
                "s/notebook,lr=0.2-seed1",
                "s/swiglu,lr=0.1-seed1",
                "s/swiglu,lr=0.2-seed1"
            ]
        );
        let settings: Vec<(&str, String)> = plan[3]
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_string()))
            .collect();
        assert_eq!(
            settings,
            [
                ("preset", "\"notebook\"".to_string()),
                ("feed_forward", "\"swiglu\"".to_string()),
                ("lr", "0.2".to_string()),
                ("seed", "1".to_string()),
                ("out", "\"s/swiglu,lr=0.2-seed1\"".to_string()),
            ]
        );
    }
}
