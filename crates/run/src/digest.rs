//! Checksums of the files a run depends on: the interaction log it was
//! trained on and its checkpoints.

use std::fs::File;
use std::hash::Hasher;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use sasrec_model::bounded;
use serde::{Deserialize, Serialize};
use twox_hash::XxHash3_64;

/// The size and xxh3 hash of a file: enough to notice that it changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Length in bytes.
    pub bytes: u64,
    /// XXH3-64 of the content, 16 hex digits.
    pub xxh3: String,
}

impl FileDigest {
    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> FileDigest {
        FileDigest {
            bytes: bytes.len() as u64,
            xxh3: format!("{:016x}", XxHash3_64::oneshot(bytes)),
        }
    }

    /// The digest of an interaction log, read in pieces (it may be large):
    /// a file, or a folder of Parquet parts (their contents in the order the
    /// reader reads them, each preceded by its file name).
    pub fn of_file(path: &Path) -> Result<FileDigest> {
        let files = sasrec_data::input_files(path)?;
        let mut hasher = XxHash3_64::default();
        let mut buffer = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        for file_path in &files {
            if path.is_dir() {
                let name = file_path.file_name().unwrap_or_default();
                hasher.write(name.as_encoded_bytes());
            }
            let mut read = || -> std::io::Result<()> {
                let mut file = File::open(file_path)?;
                loop {
                    let n = file.read(&mut buffer)?;
                    if n == 0 {
                        return Ok(());
                    }
                    hasher.write(&buffer[..n]);
                    bytes += n as u64;
                }
            };
            read().with_context(|| format!("reading {}", file_path.display()))?;
        }
        Ok(FileDigest {
            bytes,
            xxh3: format!("{:016x}", hasher.finish()),
        })
    }

    /// How `self` (as saved) differs from `now`, in words; `None` if equal.
    pub fn change(&self, now: &FileDigest) -> Option<String> {
        if self.bytes != now.bytes {
            Some(format!("{} bytes then, {} now", self.bytes, now.bytes))
        } else if self.xxh3 != now.xxh3 {
            Some(format!(
                "same size, different content: xxh3 {} then, {} now",
                bounded(&self.xxh3, 16),
                now.xxh3
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_sees_size_and_content_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(&path, b"1,2,3\n").unwrap();
        let saved = FileDigest::of_file(&path).unwrap();
        assert_eq!(saved, FileDigest::of_bytes(b"1,2,3\n"));
        assert_eq!(saved.change(&saved), None);
        std::fs::write(&path, b"1,2,4\n").unwrap();
        let now = FileDigest::of_file(&path).unwrap();
        assert!(saved.change(&now).unwrap().starts_with("same size"));
        std::fs::write(&path, b"1,2,3\n4\n").unwrap();
        let now = FileDigest::of_file(&path).unwrap();
        assert_eq!(saved.change(&now).unwrap(), "6 bytes then, 8 now");
    }
}
