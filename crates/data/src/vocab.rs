//! The item vocabulary: raw movie ids <-> indices 1..=N (0 is padding).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// Maps raw item ids to the indices 1..=N the model uses, and back.
///
/// Index 0 is reserved for padding, so an embedding table over this
/// vocabulary has `num_items() + 1` rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vocab {
    /// `raw_ids[i - 1]` is the raw id of index `i`.
    raw_ids: Vec<u32>,
    index: HashMap<u32, u32>,
}

/// The JSON layout of a saved vocabulary.
#[derive(Serialize, Deserialize)]
struct VocabFile {
    /// What this file is, so that a wrong JSON file is refused.
    kind: String,
    /// Raw ids in index order: `items[i - 1]` has index `i`.
    items: Vec<u32>,
}

const KIND: &str = "sasrec-vocab";

impl Vocab {
    /// Builds a vocabulary whose index `i` (from 1) is `raw_ids[i - 1]`.
    /// A raw id listed twice is an error.
    pub fn from_raw_ids(raw_ids: Vec<u32>) -> Result<Vocab, DataError> {
        let mut index = HashMap::with_capacity(raw_ids.len());
        for (i, &raw) in raw_ids.iter().enumerate() {
            if index.insert(raw, i as u32 + 1).is_some() {
                return Err(DataError::DuplicateItem(raw));
            }
        }
        Ok(Vocab { raw_ids, index })
    }

    /// N, the number of real items (indices 1..=N).
    pub fn num_items(&self) -> usize {
        self.raw_ids.len()
    }

    /// The index of a raw item id, if the item is in the vocabulary.
    pub fn index(&self, raw: u32) -> Option<u32> {
        self.index.get(&raw).copied()
    }

    /// The raw id of an index; `None` for 0 (padding) and indices above N.
    pub fn raw(&self, index: u32) -> Option<u32> {
        let i = (index as usize).checked_sub(1)?;
        self.raw_ids.get(i).copied()
    }

    /// Raw ids in index order (the raw id of index `i` is at `i - 1`).
    pub fn raw_ids(&self) -> &[u32] {
        &self.raw_ids
    }

    /// Writes the vocabulary as JSON, atomically: `{"kind":"sasrec-vocab","items":[raw ids in index order]}`.
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let file = VocabFile {
            kind: KIND.to_string(),
            items: self.raw_ids.clone(),
        };
        let json = serde_json::to_vec(&file).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            error: e,
        })?;
        // Atomically (temporary file beside it, then rename): a reader never
        // sees half a vocabulary.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                DataError::io(path, e)
            })
    }

    /// Reads a vocabulary written by [`Vocab::save`].
    pub fn load(path: &Path) -> Result<Vocab, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let file: VocabFile = serde_json::from_slice(&bytes).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            error: e,
        })?;
        if file.kind != KIND {
            return Err(DataError::Json {
                path: path.to_path_buf(),
                error: serde::de::Error::custom(format!(
                    "field `kind` is {:?}, expected {KIND:?}",
                    file.kind
                )),
            });
        }
        Vocab::from_raw_ids(file.items)
    }
}
