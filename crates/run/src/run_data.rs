//! `data.safetensors`: what a run folder keeps of its data, so that
//! `recommend`, `serve`, `export` and `eval` of the stored split run with
//! the log moved or deleted (a run folder copied to a server is complete).
//!
//! It holds every user's sequence as built at training (item indices after
//! the run's filters, oldest first, and which items are targets), the split
//! as (user, length) prefixes of those sequences, and each item's
//! popularity (its number of target events). Whole histories, not only the
//! last `max_len` items: recommendations leave out every item a user has
//! seen, and evaluation ranks among the items a user has not seen.
//!
//! Tensors (safetensors, readable with `safetensors.numpy.load_file`):
//!
//! ```text
//! sequences.lengths    u32 [users]           user u's sequence length
//! sequences.items      u32 [interactions]    the sequences one after another
//! sequences.is_target  u8  [interactions]    (target event types only) 1 = target
//! split.PART.users     u32 [n]               PART = train, valid, test:
//! split.PART.lengths   u32 [n]                 sequence i is users[i]'s first lengths[i] items
//! items.popularity     u32 [N + 1]           target events of each item index (0: padding)
//! ```

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};
use sasrec_data::{Dataset, Split, UserSequence, Vocab, popularity};

use sasrec_model::bounded;

/// The file's name in a run folder.
pub const DATA_FILE: &str = "data.safetensors";
/// What the metadata's `kind` says.
const KIND: &str = "sasrec-run-data";

/// A run's data, as trained on.
#[derive(Clone, Debug, PartialEq)]
pub struct RunData {
    /// Every user's sequence; `users[u]` is user index `u`'s.
    pub users: Vec<UserSequence>,
    /// The split, sequences that are prefixes of `users`.
    pub split: Split,
    /// Target events of each item index (`[N + 1]`, 0 for padding): what
    /// the most-popular fallback ranks by.
    pub popularity: Vec<u32>,
}

impl RunData {
    /// The data of a run trained on `dataset` split as `split`.
    pub fn new(dataset: &Dataset, split: &Split) -> RunData {
        let users = dataset.users.clone();
        RunData {
            popularity: popularity(&users, dataset.vocab.num_items()),
            users,
            split: split.clone(),
        }
    }

    /// The safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut u32s = |name: &str, values: Vec<u32>| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((name.to_string(), Dtype::U32, vec![values.len()], bytes));
        };
        u32s(
            "sequences.lengths",
            self.users.iter().map(|u| u.items.len() as u32).collect(),
        );
        u32s(
            "sequences.items",
            self.users
                .iter()
                .flat_map(|u| u.items.iter().copied())
                .collect(),
        );
        for (part, seqs) in self.parts() {
            u32s(
                &format!("split.{part}.users"),
                seqs.iter().map(|s| s.user).collect(),
            );
            u32s(
                &format!("split.{part}.lengths"),
                seqs.iter().map(|s| s.items.len() as u32).collect(),
            );
        }
        u32s("items.popularity", self.popularity.clone());
        if self.users.iter().any(|u| u.is_target.is_some()) {
            let flags: Vec<u8> = self
                .users
                .iter()
                .flat_map(|u| (0..u.items.len()).map(|j| u8::from(u.is_target(j))))
                .collect();
            tensors.push((
                "sequences.is_target".into(),
                Dtype::U8,
                vec![flags.len()],
                flags,
            ));
        }
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                let view = TensorView::new(*dtype, shape.clone(), bytes)
                    .with_context(|| format!("tensor {name}"))?;
                Ok((name.clone(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let split = &self.split;
        let mut metadata = HashMap::from([
            ("kind".to_string(), KIND.to_string()),
            (
                "too_short_for_train".to_string(),
                split.too_short_for_train.to_string(),
            ),
            (
                "too_short_for_eval".to_string(),
                split.too_short_for_eval.to_string(),
            ),
        ]);
        if let Some((valid, test)) = split.cuts {
            metadata.insert("cuts".to_string(), format!("{valid},{test}"));
        }
        safetensors::serialize(views, Some(metadata)).context("serialising the run's data")
    }

    /// Reads the bytes of `file`, checking them against the run's `vocab`:
    /// one sequence per user, item indices in 1..=N, split prefixes within
    /// their sequences. An error names the file and what is wrong.
    pub fn from_bytes(bytes: &[u8], file: &Path, vocab: &Vocab) -> Result<RunData> {
        let bad = |what: String| anyhow::anyhow!("{}: {what}", file.display());
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
            bad(format!(
                "not a safetensors file ({})",
                bounded(&e.to_string(), 80)
            ))
        })?;
        let metadata = header.metadata().clone().unwrap_or_default();
        if metadata.get("kind").map(String::as_str) != Some(KIND) {
            return Err(bad(format!("not a run's data file (no kind {KIND:?})")));
        }
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| {
            bad(format!(
                "not a safetensors file ({})",
                bounded(&e.to_string(), 80)
            ))
        })?;
        let tensor = |name: &str, dtype: Dtype| -> Result<Vec<u8>> {
            let view = tensors
                .tensor(name)
                .map_err(|_| bad(format!("no tensor {name}")))?;
            if view.dtype() != dtype || view.shape().len() != 1 {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, expected one dimension of {dtype:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            Ok(view.data().to_vec())
        };
        let u32s = |name: &str| -> Result<Vec<u32>> {
            Ok(tensor(name, Dtype::U32)?
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let count = |key: &str| -> Result<usize> {
            metadata
                .get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(format!("metadata {key} is missing or not a number")))
        };

        let lengths = u32s("sequences.lengths")?;
        let items = u32s("sequences.items")?;
        if lengths.len() != vocab.num_users() {
            bail!(bad(format!(
                "{} sequences for the {} users of vocab.json",
                lengths.len(),
                vocab.num_users()
            )));
        }
        let total: u64 = lengths.iter().map(|&n| n as u64).sum();
        if total != items.len() as u64 {
            bail!(bad(format!(
                "the sequences' lengths add up to {total}, but {} items are stored",
                items.len()
            )));
        }
        let n = vocab.num_items() as u32;
        if let Some(i) = items.iter().position(|&i| i == 0 || i > n) {
            bail!(bad(format!(
                "item index {} (element {i}) is not in 1..={n}, the items of vocab.json",
                items[i]
            )));
        }
        let flags = match tensors.tensor("sequences.is_target") {
            Ok(_) => {
                let flags = tensor("sequences.is_target", Dtype::U8)?;
                if flags.len() != items.len() {
                    bail!(bad(format!(
                        "{} target flags for {} items",
                        flags.len(),
                        items.len()
                    )));
                }
                Some(flags)
            }
            Err(_) => None,
        };
        let mut users = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for (u, &len) in lengths.iter().enumerate() {
            let end = start + len as usize;
            users.push(UserSequence {
                user: u as u32,
                items: items[start..end].to_vec(),
                is_target: flags
                    .as_ref()
                    .map(|f| f[start..end].iter().map(|&b| b != 0).collect()),
            });
            start = end;
        }
        let part = |name: &str| -> Result<Vec<UserSequence>> {
            let who = u32s(&format!("split.{name}.users"))?;
            let lens = u32s(&format!("split.{name}.lengths"))?;
            if who.len() != lens.len() {
                bail!(bad(format!(
                    "split.{name}: {} users and {} lengths",
                    who.len(),
                    lens.len()
                )));
            }
            who.iter()
                .zip(&lens)
                .map(|(&u, &len)| match users.get(u as usize) {
                    Some(user) if len >= 2 && len as usize <= user.items.len() => {
                        Ok(user.prefix(len as usize))
                    }
                    _ => Err(bad(format!(
                        "split.{name}: user {u} with length {len} is not a prefix of a stored sequence"
                    ))),
                })
                .collect()
        };
        let cuts = match metadata.get("cuts") {
            None => None,
            Some(text) => {
                let parsed = text
                    .split_once(',')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                Some(parsed.ok_or_else(|| bad(format!("metadata cuts {:?}", bounded(text, 40))))?)
            }
        };
        let split = Split {
            train: part("train")?,
            valid: part("valid")?,
            test: part("test")?,
            too_short_for_train: count("too_short_for_train")?,
            too_short_for_eval: count("too_short_for_eval")?,
            cuts,
        };
        let popularity = u32s("items.popularity")?;
        if popularity.len() != n as usize + 1 {
            bail!(bad(format!(
                "items.popularity has {} entries for {} items",
                popularity.len(),
                n
            )));
        }
        Ok(RunData {
            users,
            split,
            popularity,
        })
    }

    /// The split's parts by name.
    fn parts(&self) -> [(&'static str, &[UserSequence]); 3] {
        [
            ("train", &self.split.train),
            ("valid", &self.split.valid),
            ("test", &self.split.test),
        ]
    }
}
