//! One writer per run folder: an exclusive advisory lock on its `lock` file,
//! held for the writer's life. The holder's pid and command are written in
//! the file so that a refused writer can say who holds the folder.
//!
//! The operating system releases the lock when its holder dies, however it
//! dies, so a lock left by a killed process is simply taken again; the pid
//! still in the file then says whose it was. A clean exit empties the file.
//!
//! Output files and folders (`recommend --out`, `export --out`) are guarded
//! the same way by a lock file beside them, `.NAME.lock`
//! ([`RunLock::beside`]), which a clean exit removes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use sasrec_model::bounded;

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = "lock";

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    /// Who held the folder before us and died without releasing it cleanly
    /// (the pid and command left in the lock file).
    previous: Option<String>,
    /// The lock file, when it is removed on release (outputs' locks).
    remove: Option<PathBuf>,
}

impl RunLock {
    /// Takes the lock of the run folder `dir` for `command` (e.g. `train`).
    /// Refused, naming the holder's pid, while another process holds it.
    pub fn acquire(dir: &Path, command: &str) -> Result<RunLock> {
        Self::take(&dir.join(LOCK_FILE), dir, command, false)
    }

    /// Takes the lock of the output file or folder `path` for `command`
    /// (e.g. `export`): the lock file `.NAME.lock` beside it, removed when
    /// the lock is released. Refused, naming the holder's pid, while
    /// another process holds it.
    pub fn beside(path: &Path, command: &str) -> Result<RunLock> {
        let name = path
            .file_name()
            .with_context(|| format!("{} has no file name", path.display()))?;
        let lock = crate::durable::parent(path).join(format!(".{}.lock", name.to_string_lossy()));
        Self::take(&lock, path, command, true)
    }

    /// Locks the file `path`, which guards `guarded`; `removed`: the file
    /// goes when the lock is released.
    fn take(path: &Path, guarded: &Path, command: &str, removed: bool) -> Result<RunLock> {
        // A holder that removes the file on release may do so between our
        // opening it and our locking it: we then hold a lock on a file no
        // longer there, and try again with the one now there.
        for _ in 0..100 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = read_holder(&mut file).unwrap_or_else(|| "another process".into());
                    bail!(
                        "{} is in use by {holder}; wait for it to finish or stop it",
                        guarded.display()
                    );
                }
                Err(std::fs::TryLockError::Error(err)) => {
                    return Err(err).with_context(|| format!("locking {}", path.display()));
                }
            }
            if removed && !is_at(&file, path) {
                continue;
            }
            let previous = read_holder(&mut file);
            let mut lock = RunLock {
                file,
                previous,
                remove: removed.then(|| path.to_path_buf()),
            };
            lock.write(&format!("{} {command}\n", std::process::id()))
                .with_context(|| format!("writing {}", path.display()))?;
            return Ok(lock);
        }
        bail!(
            "cannot lock {}: its lock file {} keeps being replaced",
            guarded.display(),
            path.display()
        )
    }

    /// The process that held the folder before and died holding it, e.g.
    /// "sasrec train (pid 4242)".
    pub fn previous_holder(&self) -> Option<&str> {
        self.previous.as_deref()
    }

    fn write(&mut self, text: &str) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(text.as_bytes())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Emptied or removed on a clean exit (removed while still locked, so
        // that a waiting writer sees it gone): a pid left in the file means
        // its process died.
        match &self.remove {
            Some(path) => {
                let _ = std::fs::remove_file(path);
            }
            None => {
                let _ = self.file.set_len(0);
            }
        }
    }
}

/// Whether the open `file` is the one at `path` now.
fn is_at(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        // Elsewhere an open file cannot be removed: it is still the one.
        let _ = (file, path);
        true
    }
}

/// "sasrec COMMAND (pid N)" from a lock file holding "N COMMAND".
fn read_holder(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(256).read_to_string(&mut text).ok()?;
    let mut words = text.split_whitespace();
    let pid: u32 = words.next()?.parse().ok()?;
    let command = bounded(words.next().unwrap_or("?"), 20);
    Some(format!("sasrec {command} (pid {pid})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_pid_and_a_dead_holder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "train").unwrap();
        assert_eq!(first.previous_holder(), None);
        let err = RunLock::acquire(dir.path(), "plot")
            .unwrap_err()
            .to_string();
        let pid = std::process::id();
        assert!(
            err.contains(&format!("in use by sasrec train (pid {pid})")),
            "{err}"
        );
        drop(first);
        // A clean release leaves no holder behind.
        let second = RunLock::acquire(dir.path(), "plot").unwrap();
        assert_eq!(second.previous_holder(), None);
        drop(second);

        // A lock file left by a process that died (its lock is gone with it).
        std::fs::write(dir.path().join(LOCK_FILE), "999999 train\n").unwrap();
        let third = RunLock::acquire(dir.path(), "train").unwrap();
        assert_eq!(third.previous_holder(), Some("sasrec train (pid 999999)"));
    }

    #[test]
    fn an_output_lock_sits_beside_the_output_and_goes_with_a_clean_release() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("recs.csv");
        let lock_file = dir.path().join(".recs.csv.lock");
        let first = RunLock::beside(&out, "recommend").unwrap();
        assert!(lock_file.exists());
        let err = RunLock::beside(&out, "recommend").unwrap_err().to_string();
        assert!(
            err.contains("recs.csv is in use by sasrec recommend (pid"),
            "{err}"
        );
        drop(first);
        assert!(!lock_file.exists());
        // Left by a writer that died: taken over, and the writer named.
        std::fs::write(&lock_file, "999999 recommend\n").unwrap();
        let second = RunLock::beside(&out, "recommend").unwrap();
        assert_eq!(
            second.previous_holder(),
            Some("sasrec recommend (pid 999999)")
        );
    }
}
