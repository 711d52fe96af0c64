//! The vocabulary: raw item ids <-> indices 1..=N (0 is padding), and raw
//! user ids <-> user indices 0..

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ids::cut;
use crate::{DataError, IdKind, IdTable, RawId};

/// Maps raw item ids to the indices 1..=N the model uses, raw user ids to
/// user indices 0.., and back.
///
/// Index 0 is reserved for padding, so an embedding table over this
/// vocabulary has `num_items() + 1` rows. Raw ids stay as the input had
/// them: integers or strings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vocab {
    /// Code `i` is the item of index `i + 1`.
    items: IdTable,
    /// Code `u` is the user of index `u`.
    users: IdTable,
}

/// The JSON layout of a saved vocabulary. Ids are JSON numbers for integer
/// ids and strings for string ids.
#[derive(Serialize, Deserialize)]
struct VocabFile {
    /// What this file is, so that a wrong JSON file is refused.
    kind: String,
    /// Raw item ids in index order: `items[i - 1]` has index `i`.
    items: Vec<RawId>,
    /// Raw user ids in index order (absent in files written before users
    /// were kept).
    #[serde(default)]
    users: Vec<RawId>,
}

const KIND: &str = "sasrec-vocab";

impl Vocab {
    /// A vocabulary from id tables: item code `i` gets index `i + 1`, user
    /// code `u` index `u`.
    pub fn new(items: IdTable, users: IdTable) -> Vocab {
        Vocab { items, users }
    }

    /// Builds a vocabulary whose item index `i` (from 1) is `items[i - 1]`
    /// and whose user index `u` is `users[u]`. An id listed twice, or ids
    /// of both kinds in one list, is an error.
    pub fn from_raw_ids(items: &[RawId], users: &[RawId]) -> Result<Vocab, DataError> {
        let table = |ids: &[RawId], what| {
            IdTable::from_ids(ids).map_err(|id| DataError::BadVocabId {
                what,
                id: cut(&id.to_string(), 80),
            })
        };
        Ok(Vocab {
            items: table(items, "item")?,
            users: table(users, "user")?,
        })
    }

    /// N, the number of real items (indices 1..=N).
    pub fn num_items(&self) -> usize {
        self.items.len()
    }

    /// The number of users (0 for a vocabulary saved without users).
    pub fn num_users(&self) -> usize {
        self.users.len()
    }

    /// Whether item ids are integers or strings.
    pub fn item_kind(&self) -> IdKind {
        self.items.kind()
    }

    /// Whether user ids are integers or strings.
    pub fn user_kind(&self) -> IdKind {
        self.users.kind()
    }

    /// The index of a raw item id, if the item is in the vocabulary.
    pub fn index(&self, raw: &RawId) -> Option<u32> {
        self.items.code(raw).map(|c| c + 1)
    }

    /// The raw id of an item index; `None` for 0 (padding) and indices above N.
    pub fn raw(&self, index: u32) -> Option<RawId> {
        self.items.get(index.checked_sub(1)?)
    }

    /// The index of a raw user id, if the user is in the vocabulary.
    pub fn user_index(&self, raw: &RawId) -> Option<u32> {
        self.users.code(raw)
    }

    /// The raw id of a user index.
    pub fn user_raw(&self, index: u32) -> Option<RawId> {
        self.users.get(index)
    }

    /// The item ids (code `i` is index `i + 1`).
    pub fn items(&self) -> &IdTable {
        &self.items
    }

    /// The user ids (code `u` is index `u`).
    pub fn users(&self) -> &IdTable {
        &self.users
    }

    /// Whether a vocabulary saved with a run (`saved`) describes this data:
    /// the same items in the same order, and the same users unless `saved`
    /// predates user ids (then it has none).
    pub fn matches_saved(&self, saved: &Vocab) -> bool {
        self.items == saved.items && (saved.users.is_empty() || self.users == saved.users)
    }

    /// The vocabulary as JSON:
    /// `{"kind":"sasrec-vocab","items":[ids in index order],"users":[...]}`.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        // Serialised straight from the id tables, so that millions of ids
        // are not first copied into `RawId`s or JSON values.
        #[derive(Serialize)]
        struct VocabRef<'a> {
            kind: &'static str,
            items: &'a IdTable,
            users: &'a IdTable,
        }
        serde_json::to_vec(&VocabRef {
            kind: KIND,
            items: &self.items,
            users: &self.users,
        })
    }

    /// Writes the vocabulary as JSON ([`Vocab::to_json`]), atomically.
    /// Run folders write it durably with the rest of their files instead.
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let json = self.to_json().map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            error: e,
        })?;
        // Temporary file beside it, then rename: a reader never sees half a
        // vocabulary.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                DataError::io(path, e)
            })
    }

    /// Reads a vocabulary written by [`Vocab::save`], including files from
    /// before user ids were kept (items only, integers).
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
                    cut(&file.kind, 40)
                )),
            });
        }
        Vocab::from_raw_ids(&file.items, &file.users)
    }
}
