//! One writer per run folder: an exclusive advisory lock on its `lock` file,
//! held for the writer's life. The holder's pid and command are written in
//! the file so that a refused writer can say who holds the folder.
//!
//! The operating system releases the lock when its holder dies, however it
//! dies, so a lock left by a killed process is simply taken again; the pid
//! still in the file then says whose it was. A clean exit empties the file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::text::bounded;

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = "lock";

/// A held run-folder lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    /// Who held the folder before us and died without releasing it cleanly
    /// (the pid and command left in the lock file).
    previous: Option<String>,
}

impl RunLock {
    /// Takes the lock of the run folder `dir` for `command` (e.g. `train`).
    /// Refused, naming the holder's pid, while another process holds it.
    pub fn acquire(dir: &Path, command: &str) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file).unwrap_or_else(|| "another process".into());
                bail!(
                    "{} is in use by {holder}; wait for it to finish or stop it",
                    dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
        }
        let previous = read_holder(&mut file);
        let mut lock = RunLock { file, previous };
        lock.write(&format!("{} {command}\n", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(lock)
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
        // Emptied on a clean exit: a pid left in the file means its process died.
        let _ = self.file.set_len(0);
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
}
