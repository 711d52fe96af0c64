//! The ids of a trained run, as `recommend`, `serve` and `export` use
//! them: raw ids turned into the model's indices and back, users'
//! histories, item popularity (the fallback for a history of unknown
//! items), and the JSON shape of one recommendation list. Loading a run
//! to fill it is [`crate::run_loading`].

use std::path::PathBuf;

use anyhow::Result;
use sasrec_data::{IdKind, RawId, UserSequence, Vocab};
use serde::Serialize;

/// The ids of a run: raw item and user ids <-> indices, item popularity,
/// and (when loaded with them) every user's whole history, from the run
/// folder's data.safetensors (or from the log, read and filtered as at
/// training time, for `--ratings` and for runs that predate that file).
pub struct Catalog {
    /// Raw ids <-> indices.
    pub vocab: Vocab,
    /// The history of user index `u`, oldest first (empty when the
    /// histories were not loaded).
    histories: Vec<Vec<u32>>,
    /// Every item index by popularity (target events), most popular first,
    /// with its count; empty when the run keeps no popularity.
    popular: Vec<(u32, u32)>,
    /// Where the histories come from.
    source: PathBuf,
}

/// What a recommendation list was ranked by.
pub enum Ranked<'a> {
    /// The model: (item, logit), best first.
    Model(&'a [(u32, f32)]),
    /// Popularity, for a history with no known item: (item, count).
    Popular(&'a [(u32, u32)]),
}

impl Catalog {
    /// The catalog of `vocab`: `users` the histories (none when not
    /// loaded), `popularity` every item's count of target events (indexed
    /// by item, 0 the padding; empty when the run keeps none), `source`
    /// where they come from.
    pub fn new(
        vocab: Vocab,
        users: Vec<UserSequence>,
        popularity: &[u32],
        source: PathBuf,
    ) -> Catalog {
        let mut histories = vec![Vec::new(); vocab.num_users()];
        for seq in users {
            if let Some(slot) = histories.get_mut(seq.user as usize) {
                *slot = seq.items;
            }
        }
        let mut popular: Vec<(u32, u32)> = popularity
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, &count)| (i as u32, count))
            .collect();
        popular.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Catalog {
            vocab,
            histories,
            popular,
            source,
        }
    }

    /// The user index of user id `user` (as text), or an error saying that
    /// the run has no such user.
    pub fn user(&self, user: &str) -> Result<u32, String> {
        let kind = self.user_kind();
        RawId::parse(user, kind)
            .ok()
            .and_then(|raw| self.vocab.user_index(&raw))
            .filter(|&u| !self.history(u).is_empty())
            .ok_or_else(|| {
                format!(
                    "user {} is not in {} (after the run's filters; its user ids are {kind})",
                    sasrec_model::bounded(user, 80),
                    self.source.display()
                )
            })
    }

    /// The whole history of user index `user`, oldest first.
    pub fn history(&self, user: u32) -> &[u32] {
        self.histories.get(user as usize).map_or(&[], Vec::as_slice)
    }

    /// The number of users with a history.
    pub fn users(&self) -> usize {
        self.histories.iter().filter(|h| !h.is_empty()).count()
    }

    /// Every user index with a history, in index order.
    pub fn user_indices(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.histories.len() as u32).filter(|&u| !self.history(u).is_empty())
    }

    /// The indices of the item ids (given as text) the model knows, in
    /// order, and the ids it does not know (text that is no id of the
    /// log's kind, `x` where ids are integers, is no item of the model).
    pub fn items<S: AsRef<str>>(&self, ids: &[S]) -> (Vec<u32>, Vec<String>) {
        let mut indices = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for text in ids {
            let text = text.as_ref();
            let index = RawId::parse(text, self.item_kind())
                .ok()
                .and_then(|raw| self.vocab.index(&raw));
            match index {
                Some(i) => indices.push(i),
                None => unknown.push(sasrec_model::bounded(text, 80)),
            }
        }
        (indices, unknown)
    }

    /// The `k` most popular items (their number of target events in the
    /// run's data), most popular first; an error for a run that keeps no
    /// popularity (trained before run folders kept their data).
    pub fn most_popular(&self, k: usize) -> Result<&[(u32, u32)], String> {
        if self.popular.is_empty() {
            return Err(
                "no item of the history is known to the model, and this run keeps no item popularity to fall back on (it predates data.safetensors; retrain it)"
                    .to_string(),
            );
        }
        Ok(&self.popular[..k.min(self.popular.len())])
    }

    /// The raw id of item index `item` (1..=N).
    pub fn raw_item(&self, item: u32) -> RawId {
        self.vocab
            .raw(item)
            .expect("recommended items are indices of the vocabulary")
    }

    /// The raw id of user index `user`.
    pub fn raw_user(&self, user: u32) -> RawId {
        self.vocab
            .user_raw(user)
            .expect("users with a history are in the vocabulary")
    }

    /// The item ids' kind.
    pub fn item_kind(&self) -> IdKind {
        self.vocab.item_kind()
    }

    /// The user ids' kind.
    pub fn user_kind(&self) -> IdKind {
        self.vocab.user_kind()
    }

    /// One recommendation list as `recommend --json` and `serve` return it.
    pub fn response(
        &self,
        user: Option<RawId>,
        history_len: usize,
        exclude_seen: bool,
        ranked: Ranked<'_>,
        name: impl Fn(&RawId) -> Option<String>,
    ) -> Recommendations {
        let entry = |rank: usize, item: u32, logit, popularity| {
            let item = self.raw_item(item);
            Recommended {
                rank: rank + 1,
                name: name(&item),
                item,
                logit,
                popularity,
            }
        };
        let (recommendations, fallback) = match ranked {
            Ranked::Model(top) => (
                top.iter()
                    .enumerate()
                    .map(|(rank, &(item, logit))| entry(rank, item, Some(logit), None))
                    .collect(),
                None,
            ),
            Ranked::Popular(top) => (
                top.iter()
                    .enumerate()
                    .map(|(rank, &(item, count))| entry(rank, item, None, Some(count)))
                    .collect(),
                Some("most-popular"),
            ),
        };
        Recommendations {
            user,
            history_len,
            exclude_seen,
            unknown_items: Vec::new(),
            fallback,
            recommendations,
        }
    }
}

/// One recommendation list, as JSON.
#[derive(Serialize)]
pub struct Recommendations {
    /// The user asked for, if it was a user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<RawId>,
    /// Items in the history the list follows.
    pub history_len: usize,
    /// Whether the history's items were left out.
    pub exclude_seen: bool,
    /// Item ids of the request the model does not know, left out of the
    /// history.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_items: Vec<String>,
    /// `most-popular` when no item of the history is known, so the list is
    /// the most popular items rather than the model's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<&'static str>,
    /// Best first.
    pub recommendations: Vec<Recommended>,
}

/// One recommended item.
#[derive(Serialize)]
pub struct Recommended {
    /// 1 for the best.
    pub rank: usize,
    /// Its raw id (a JSON number for integer ids, a string for string ids).
    pub item: RawId,
    /// `h_u . e_i`: the user vector dotted with the item's embedding (the
    /// model's lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit: Option<f32>,
    /// The item's number of target events in the run's data (most-popular
    /// lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub popularity: Option<u32>,
    /// Its name, when a table of names was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
