//! What the tasks share: where the workspace, its release build and the
//! benchmark data are, running cargo and other commands, reading a number
//! from the environment, a median. Every other module may use it; it uses
//! none of them, so that the task modules (bench.rs and the benches it
//! runs) depend on it and never on each other's parents.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Release build outputs: `$CARGO_TARGET_DIR/release`, else
/// `target/release`, where `cargo build --release` puts them.
pub(crate) fn release_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    root().join(target).join("release")
}

/// `cargo` as the one running us.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Where generated benchmark data and runs go: `$SASREC_BENCH_DIR`, else
/// `target/bench`.
pub(crate) fn bench_dir() -> PathBuf {
    std::env::var_os("SASREC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/bench"))
}

/// The number in environment variable `name`, `default` when it is unset;
/// anything but a whole number is an error naming the variable.
pub(crate) fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("{name}={value:?} is not a whole number")),
    }
}

/// Runs a command, which must succeed.
pub(crate) fn check(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// The median of `v` (sorted in place; the upper one of an even count).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
