//! `sasrec plot`: redraw a run's curves (loss and validation metrics per
//! epoch), or overlay several runs in one picture.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use sasrec_model::RunWriter;
use sasrec_model::plot::{RunCurves, render_overlay};

use crate::runs_cmd::{RunSummary, find_runs, run_names};

/// `sasrec plot` flags.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run folder written by `sasrec train`: redraws its curves.svg.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "runs",
        required_unless_present = "runs"
    )]
    run: Option<PathBuf>,
    /// Runs to overlay, one colour each (run folders or folders of runs).
    #[arg(long, value_name = "DIR", num_args = 1..)]
    runs: Option<Vec<PathBuf>>,
    /// With --runs: the SVG file to write.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "runs.svg",
        requires = "runs"
    )]
    out: PathBuf,
}

/// Runs `sasrec plot`.
pub fn run(args: PlotArgs) -> Result<()> {
    match (&args.run, &args.runs) {
        (Some(run), _) => redraw(run),
        (None, Some(dirs)) => overlay(dirs, &args.out),
        (None, None) => unreachable!("clap requires one"),
    }
}

/// Rewrites the run's published files (curves.svg, metrics.jsonl, the
/// TensorBoard events, model.safetensors) from its committed state where
/// they differ, under the run folder's lock.
fn redraw(dir: &Path) -> Result<()> {
    let mut run = RunWriter::open(dir, "plot")?;
    let recovery = run.recover()?;
    if !recovery.is_clean() {
        eprintln!("note: repaired {}: {recovery}", dir.display());
    }
    let Some(commit) = run.committed().filter(|c| !c.epochs.is_empty()) else {
        bail!("{} has no finished epoch yet", dir.display());
    };
    println!(
        "{} ({} epochs)",
        run.dir().curves().display(),
        commit.epochs.last().map_or(0, |r| r.epoch)
    );
    Ok(())
}

/// Draws the validation curves of several runs into one SVG file.
fn overlay(dirs: &[PathBuf], out: &Path) -> Result<()> {
    let paths = find_runs(dirs)?;
    let names = run_names(&paths);
    let mut runs = Vec::new();
    for (path, name) in paths.iter().zip(names) {
        let summary = RunSummary::read(path)?;
        if summary.epochs.is_empty() {
            bail!("{} has no finished epoch yet", path.display());
        }
        runs.push((name, summary.epochs, summary.baseline));
    }
    let curves: Vec<RunCurves<'_>> = runs
        .iter()
        .map(|(name, records, baseline)| RunCurves {
            name: name.clone(),
            records,
            baseline: baseline.as_ref(),
        })
        .collect();
    let svg = render_overlay(&curves)?;
    crate::table::write(out, svg.as_bytes())?;
    println!("{} ({} runs)", out.display(), curves.len());
    Ok(())
}
