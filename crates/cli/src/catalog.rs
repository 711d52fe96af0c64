//! What `recommend`, `serve` and `export` share: a trained run loaded to
//! recommend from, raw ids turned into the model's indices and back, users'
//! histories, and the JSON shape of one recommendation list.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sasrec_data::{IdKind, RawId, Vocab};
use sasrec_kernels::Backend;
use sasrec_model::{RunConfig, RunDir, SasRec};
use serde::Serialize;

/// The ids of a run: raw item and user ids <-> indices, and (when loaded
/// with them) every user's whole history, read from the run's log and
/// filtered as at training time.
pub struct Catalog {
    /// Raw ids <-> indices.
    pub vocab: Vocab,
    /// The history of user index `u`, oldest first (empty when the
    /// histories were not loaded).
    histories: Vec<Vec<u32>>,
    /// The log the histories come from.
    ratings: PathBuf,
}

/// A run loaded to recommend from.
pub struct LoadedRun<B: Backend> {
    /// config.json.
    pub config: RunConfig,
    /// The best model.
    pub model: SasRec<B>,
    /// Its ids, and the users' histories when asked for.
    pub catalog: Catalog,
}

/// Loads the best model of `run` and its ids; with `histories`, also reads
/// the run's log (or `ratings` instead of the path in config.json), which
/// must hold the items of the run's vocab.json.
pub fn load_run<B: Backend>(
    backend: &B,
    run: &Path,
    ratings: Option<&Path>,
    histories: bool,
) -> Result<LoadedRun<B>> {
    let run = RunDir::new(run);
    let (mut config, model) = run.load_model(backend)?;
    let saved = run.read_vocab()?;
    if let Some(ratings) = ratings {
        config.data.ratings = ratings.to_path_buf();
    }
    let ratings = config.data.ratings.clone();
    if !histories {
        let catalog = Catalog {
            vocab: saved,
            histories: Vec::new(),
            ratings,
        };
        return Ok(LoadedRun {
            config,
            model,
            catalog,
        });
    }
    let (dataset, _) = config.data.load()?;
    if !dataset.vocab.matches_saved(&saved) {
        bail!(
            "the items of {} do not match the run's vocab.json: not the data this run was trained on",
            ratings.display()
        );
    }
    let mut by_user = vec![Vec::new(); dataset.vocab.num_users()];
    for seq in dataset.users {
        by_user[seq.user as usize] = seq.items;
    }
    let catalog = Catalog {
        vocab: dataset.vocab,
        histories: by_user,
        ratings,
    };
    Ok(LoadedRun {
        config,
        model,
        catalog,
    })
}

impl Catalog {
    /// The user index of user id `user` (as text), or an error saying that
    /// the log has no such user.
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
                    self.ratings.display()
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

    /// The indices of item ids given as text; the error lists the unknown
    /// ones (up to ten). Text that is no id of the log's kind (`x` where ids
    /// are integers) is no item of the model.
    pub fn items<S: AsRef<str>>(&self, ids: &[S]) -> Result<Vec<u32>, String> {
        let mut indices = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for text in ids {
            let text = text.as_ref();
            let index = RawId::parse(text, self.item_kind())
                .ok()
                .and_then(|raw| self.vocab.index(&raw));
            match index {
                Some(i) => indices.push(i),
                None => unknown.push(sasrec_model::bounded(text, 40)),
            }
        }
        if unknown.is_empty() {
            return Ok(indices);
        }
        let more = if unknown.len() > 10 { ", ..." } else { "" };
        unknown.truncate(10);
        Err(format!(
            "item ids not known to the model: {}{more}",
            unknown.join(", ")
        ))
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
        top: &[(u32, f32)],
        name: impl Fn(&RawId) -> Option<String>,
    ) -> Recommendations {
        let recommendations = top
            .iter()
            .enumerate()
            .map(|(rank, &(item, logit))| {
                let item = self.raw_item(item);
                Recommended {
                    rank: rank + 1,
                    name: name(&item),
                    item,
                    logit,
                }
            })
            .collect();
        Recommendations {
            user,
            history_len,
            exclude_seen,
            recommendations,
        }
    }
}

/// A progress bar of users on stderr, drawn only on a terminal.
pub fn progress_bar(users: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(users), ProgressDrawTarget::stderr());
    let template = format!(
        "{what} [{{bar:30}}] {{pos}}/{{len}} users ({{per_sec}}, {{elapsed}}, eta {{eta}})"
    );
    let style = ProgressStyle::with_template(&template)
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
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
    /// `h_u . e_i`: the user vector dotted with the item's embedding.
    pub logit: f32,
    /// Its name, when a table of names was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
