//! File operations that survive a kill at any instant: atomic replacement
//! (temporary file, fsync, rename, fsync of the folder) and removal.
//!
//! Every change a run folder sees goes through here and is counted, so that
//! a test can end the process right after any one of them: with
//! `SASREC_FAIL_AT=K` the process aborts just after the K-th operation (a
//! write, fsync, rename or removal); with `SASREC_FAIL_AT=K:error` the K-th
//! operation fails instead, as on a full disk.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// What a temporary file's name ends with; anything so named in a run folder
/// is left over from an interrupted write.
pub const TMP_SUFFIX: &str = ".tmp";

/// Temporary names made by this process so far (see [`unique_tmp_path`]).
static TMP_NAMES: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` so that, whatever instant the process dies at,
/// `path` holds either its old content or the new, never a part: a temporary
/// file beside it, flushed to disk, renamed over it, and the rename flushed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = unique_tmp_path(path)?;
    let written = (|| -> io::Result<()> {
        let file = counted(|| {
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            Ok(file)
        })?;
        counted(|| file.sync_all())?;
        counted(|| fs::rename(&tmp, path))?;
        sync_dir(parent(path))
    })();
    if let Err(err) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// Writes `bytes` to `path`, a file that only grows (TensorBoard's event
/// log, which a running TensorBoard holds open and reads on from where it
/// stopped): when the file holds a beginning of `bytes`, the rest is
/// appended and flushed; otherwise the file is replaced atomically. A kill
/// in the middle of an append leaves a torn end, which the next writer's
/// recovery finds (the file then differs) and rewrites.
pub fn write_growing(path: &Path, bytes: &[u8]) -> Result<()> {
    let old = fs::read(path).unwrap_or_default();
    if old == bytes {
        return Ok(());
    }
    if old.is_empty() || !bytes.starts_with(&old) {
        return write_atomic(path, bytes);
    }
    let appended = (|| -> io::Result<()> {
        let file = counted(|| {
            let mut file = fs::OpenOptions::new().append(true).open(path)?;
            file.write_all(&bytes[old.len()..])?;
            Ok(file)
        })?;
        counted(|| file.sync_all())
    })();
    appended.with_context(|| format!("writing {}", path.display()))
}

/// A file written in pieces (a stream of rows) that appears at its path only
/// when complete, as [`write_atomic`] does for bytes at hand: the pieces go
/// to `.NAME.PID-N.tmp` beside it, and [`AtomicFile::commit`] flushes and renames
/// it over `path`. Dropped without a commit (an error, a panic), the
/// temporary file is removed and `path` keeps its old content.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<io::BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `path`.
    pub fn create(path: &Path) -> Result<AtomicFile> {
        let tmp = unique_tmp_path(path)?;
        let file = counted(|| File::create(&tmp))
            .with_context(|| format!("creating {}", tmp.display()))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(io::BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Flushes the file to disk and renames it over `path`.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("only commit takes the file");
        let done = (|| -> io::Result<()> {
            let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
            counted(|| file.sync_all())?;
            counted(|| fs::rename(&self.tmp, &self.path))?;
            sync_dir(parent(&self.path))
        })();
        done.with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("open until commit").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open until commit").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // After a commit it is gone already; otherwise an unfinished file
        // never stays behind.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Removes a file (one that is already gone is fine).
pub fn remove_file(path: &Path) -> Result<()> {
    match counted(|| fs::remove_file(path)) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Flushes a folder's entries (new names, renames) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    // Windows cannot open a folder as a file; its renames are durable anyway.
    if cfg!(unix) {
        counted(|| File::open(dir)?.sync_all())?;
    }
    Ok(())
}

/// Whether a file name is that of a temporary file (ours are
/// `.NAME.PID-N.tmp`).
pub fn is_tmp(name: &str) -> bool {
    name.ends_with(TMP_SUFFIX)
}

/// `.NAME.PID-N.tmp` beside `path`: this process's pid and a count, so that
/// two writers of one path never share a temporary file, and what a killed
/// writer left is known by its name (see [`tmp_writer`]).
pub fn unique_tmp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let n = TMP_NAMES.fetch_add(1, Ordering::Relaxed);
    Ok(parent(path).join(format!(
        ".{}.{}-{n}{TMP_SUFFIX}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// The pid of the process that made the temporary file `name` for a path
/// named `for_name` with [`unique_tmp_path`]; `None` for any other name.
pub fn tmp_writer(name: &str, for_name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix('.')?
        .strip_prefix(for_name)?
        .strip_prefix('.')?
        .strip_suffix(TMP_SUFFIX)?;
    let (pid, n) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then(|| pid.parse().ok())?
}

/// The folder a path is in (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// How `SASREC_FAIL_AT` asks the K-th operation to fail.
#[derive(Clone, Copy, PartialEq)]
enum FailMode {
    /// Abort the process right after the operation.
    Abort,
    /// Return an error instead of doing the operation.
    Error,
}

fn fail_at() -> Option<(u64, FailMode)> {
    static FAIL_AT: OnceLock<Option<(u64, FailMode)>> = OnceLock::new();
    *FAIL_AT.get_or_init(|| {
        let value = std::env::var("SASREC_FAIL_AT").ok()?;
        match value.split_once(':') {
            None => Some((value.parse().ok()?, FailMode::Abort)),
            Some((k, "error")) => Some((k.parse().ok()?, FailMode::Error)),
            Some(_) => None,
        }
    })
}

/// Runs one file operation, counting it for `SASREC_FAIL_AT`.
fn counted<T>(op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    static OPERATIONS: AtomicU64 = AtomicU64::new(0);
    let n = OPERATIONS.fetch_add(1, Ordering::SeqCst) + 1;
    let fail = fail_at().filter(|&(k, _)| k == n).map(|(_, mode)| mode);
    if fail == Some(FailMode::Error) {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("no space left on device (simulated by SASREC_FAIL_AT at operation {n})"),
        ));
    }
    let out = op()?;
    if fail == Some(FailMode::Abort) {
        std::process::abort();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
        assert!(is_tmp(".a.json.tmp") && !is_tmp("a.json"));
    }

    #[test]
    fn temporary_names_are_unique_and_name_their_writer() {
        let path = Path::new("out/recs.csv");
        let (a, b) = (
            unique_tmp_path(path).unwrap(),
            unique_tmp_path(path).unwrap(),
        );
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("out")));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(is_tmp(name));
        assert_eq!(tmp_writer(name, "recs.csv"), Some(std::process::id()));
        assert_eq!(tmp_writer(name, "recs"), None);
        assert_eq!(tmp_writer(".recs.csv.12-0.tmp", "recs.csv"), Some(12));
        for other in [
            ".recs.csv.tmp",
            ".recs.csv.x-0.tmp",
            ".recs.csv.1-.tmp",
            "recs.csv",
        ] {
            assert_eq!(tmp_writer(other, "recs.csv"), None, "{other}");
        }
    }

    #[test]
    fn a_growing_file_is_appended_to_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_growing(&path, b"ab").unwrap();
        let reader = File::open(&path).unwrap();
        write_growing(&path, b"abcd").unwrap();
        // The same file (a reader holding it open sees the new bytes).
        let mut seen = String::new();
        std::io::Read::read_to_string(&mut &reader, &mut seen).unwrap();
        assert_eq!(seen, "abcd");
        // Anything but a continuation replaces it.
        write_growing(&path, b"xy").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"xy");
    }

    #[test]
    fn an_atomic_file_appears_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recs.csv");
        std::fs::write(&path, b"old").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"new ").unwrap();
        file.write_all(b"rows").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old");
        file.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new rows");
        // Dropped unfinished: the old content stays, no temporary file.
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"half").unwrap();
        drop(file);
        assert_eq!(fs::read(&path).unwrap(), b"new rows");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["recs.csv"]);
    }

    #[test]
    fn removing_a_missing_file_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        remove_file(&dir.path().join("gone")).unwrap();
    }
}
