//! What `recommend --out` and `export --out` write for the user: one writer
//! per output at a time, and an output that is whole or absent, never a
//! mix of two writes.
//!
//! A writer locks the output (`.NAME.lock` beside it: a second writer is
//! refused, naming the first one's pid), removes what killed writers left
//! (temporary files and folders `.NAME.PID-N.tmp` beside it, named on
//! standard error), writes into such a temporary file or folder, and
//! renames it into place when done. A folder replaces the one there as a
//! whole: on Linux the two are exchanged in one step
//! (`renameat2(RENAME_EXCHANGE)`); elsewhere the old one is moved aside
//! first, so that a kill between the two renames leaves no folder rather
//! than a mix.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sasrec_model::config::human_bytes;
use sasrec_run::durable::{parent, sync_dir, tmp_writer, unique_tmp_path};
use sasrec_run::lock::RunLock;

/// An output file or folder locked for writing.
pub struct Output {
    path: PathBuf,
    _lock: RunLock,
}

impl Output {
    /// Locks `path` for `command` (e.g. `recommend`) and removes the
    /// temporary files and folders that killed writers of it left.
    pub fn lock(path: &Path, command: &str) -> Result<Output> {
        let lock = RunLock::beside(path, command)?;
        let removed = remove_stale(path)?;
        if !removed.is_empty() {
            let who = lock
                .previous_holder()
                .map_or("writers".to_string(), str::to_string);
            eprintln!(
                "note: removed {} left by {who} stopped before finishing {}",
                removed.join(", "),
                path.display()
            );
        }
        Ok(Output {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// A new, empty folder beside the output, to write the output in before
    /// [`Output::publish_folder`] puts it in place; removed if dropped.
    pub fn staging_folder(&self) -> Result<Staging> {
        let path = unique_tmp_path(&self.path)?;
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Staging { path })
    }

    /// Puts `staging`, written whole, in place of the output folder (which
    /// the caller has checked holds only what it replaces).
    pub fn publish_folder(&self, staging: Staging) -> Result<()> {
        let dest = &self.path;
        let context = || format!("putting {} in place", dest.display());
        sync_dir(&staging.path).with_context(context)?;
        if !dest.exists() {
            fs::rename(&staging.path, dest).with_context(context)?;
        } else if exchange(&staging.path, dest).is_err() {
            // No atomic exchange here: move the old folder aside first.
            let aside = unique_tmp_path(dest)?;
            fs::rename(dest, &aside).with_context(context)?;
            fs::rename(&staging.path, dest).with_context(context)?;
            fs::rename(&aside, &staging.path).with_context(context)?;
        }
        sync_dir(parent(dest)).with_context(context)?;
        // `staging` now names the old folder, which its drop removes.
        Ok(())
    }
}

/// A temporary folder an output is written in; removed when dropped (after
/// [`Output::publish_folder`], it holds the output it replaced).
pub struct Staging {
    path: PathBuf,
}

impl Staging {
    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Exchanges two folders in one step (Linux).
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths that outlive the call.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Removes the temporary files and folders of `path`'s writers beside it
/// (the caller holds its lock: no live writer has any); returns them with
/// their sizes, e.g. ".recs.csv.4242-0.tmp (170.2 MB)".
fn remove_stale(path: &Path) -> Result<Vec<String>> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let dir = parent(path);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let found = entry.file_name().to_string_lossy().into_owned();
        if tmp_writer(&found, &name).is_none() {
            continue;
        }
        let stale = entry.path();
        let bytes = size(&stale);
        let gone = if stale.is_dir() {
            fs::remove_dir_all(&stale)
        } else {
            fs::remove_file(&stale)
        };
        gone.with_context(|| format!("removing {}", stale.display()))?;
        removed.push(format!("{found} ({})", human_bytes(bytes as f64)));
    }
    removed.sort();
    Ok(removed)
}

/// The bytes of a file, or of the files in a folder (one level: ours are flat).
fn size(path: &Path) -> u64 {
    if !path.is_dir() {
        return fs::metadata(path).map_or(0, |m| m.len());
    }
    fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
