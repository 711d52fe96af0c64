//! `sasrec plot`: redraw a run's curves (loss and validation metrics per
//! epoch), or overlay several runs in one picture (SVG, or PNG by the
//! output's extension).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use sasrec_run::RunWriter;
use sasrec_run::plot::{ImageFormat, RunCurves, render_as, render_overlay_as};

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
    /// The picture to write, SVG or PNG by its extension (.svg, .png): the
    /// overlay of --runs (default runs.svg), or the curves of --run.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Runs `sasrec plot`.
pub fn run(args: PlotArgs) -> Result<()> {
    // Refuse an extension that says no format this draws, before anything.
    let out = match args.out.as_deref() {
        Some(out) => Some((out, format_of(out)?)),
        None => None,
    };
    match (&args.run, &args.runs) {
        (Some(run), _) => {
            redraw(run)?;
            match out {
                Some((out, format)) => picture(run, out, format),
                None => Ok(()),
            }
        }
        (None, Some(dirs)) => {
            let (out, format) = out.unwrap_or((Path::new("runs.svg"), ImageFormat::Svg));
            overlay(dirs, out, format)
        }
        (None, None) => unreachable!("clap requires one"),
    }
}

/// The picture format `out`'s extension names.
fn format_of(out: &Path) -> Result<ImageFormat> {
    ImageFormat::from_path(out).ok_or_else(|| {
        anyhow::anyhow!(
            "--out {}: plot writes .svg or .png files (the extension chooses the format)",
            out.display()
        )
    })
}

/// Draws the curves of the run in `dir` into `out`.
fn picture(dir: &Path, out: &Path, format: ImageFormat) -> Result<()> {
    let summary = RunSummary::read(dir)?;
    let bytes = render_as(&summary.epochs, summary.baseline.as_ref(), format)?;
    crate::table::write(out, &bytes)?;
    println!("{} ({} epochs)", out.display(), summary.epochs.len());
    Ok(())
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

/// Draws the validation curves of several runs into one picture.
fn overlay(dirs: &[PathBuf], out: &Path, format: ImageFormat) -> Result<()> {
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
    let bytes = render_overlay_as(&curves, format)?;
    crate::table::write(out, &bytes)?;
    println!("{} ({} runs)", out.display(), curves.len());
    Ok(())
}
