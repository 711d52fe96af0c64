//! From interactions to per-user chronological item sequences.
//!
//! The pipeline, in order:
//! 1. user sampling (keep a seeded random fraction of the users),
//! 2. event types (keep the rows of the types asked for),
//! 3. minimum rating (drop rows rated below it),
//! 4. duplicates (drop a user's event that repeats the item and event type
//!    of their previous event, or of any earlier one; see [`Dedup`]),
//! 5. k-core (drop rows of users and items with too few interactions, again
//!    and again until every remaining user and item has enough),
//! 6. item index 1..=N, and user index 0.., in order of first appearance
//!    in the file among the rows kept,
//! 7. per user, the kept rows sorted by timestamp with a stable sort (ties
//!    keep file order); users in order of first appearance; with target
//!    event types, which of a user's items are targets.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::{DataError, Interactions, Vocab};

/// Which interactions to keep. `Default` keeps everything.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FilterConfig {
    /// Fraction of users to keep, in (0, 1]: `floor(users * fraction)` users
    /// drawn without replacement, as the notebook's
    /// `np.random.choice(user_ids, int(len(user_ids) * 0.1), replace=False)`.
    pub user_fraction: f64,
    /// Seed of the user sample.
    pub sample_seed: u64,
    /// Drop rows rated below this (needs a rating column).
    pub min_rating: Option<f32>,
    /// Every kept user has at least this many interactions (0 or 1: no limit).
    pub min_user_interactions: usize,
    /// Every kept item has at least this many interactions (0 or 1: no limit).
    pub min_item_interactions: usize,
    /// Keep only rows of these event types (needs an event column); `None`:
    /// every type.
    #[serde(default)]
    pub keep_events: Option<Vec<String>>,
    /// The event types that are targets (needs an event column): every kept
    /// event is model input, but only positions whose item is of one of
    /// these types are trained and evaluated on. `None`: every event.
    #[serde(default)]
    pub target_events: Option<Vec<String>>,
    /// Which repeated events are dropped (config.json files from before it
    /// existed: none, as they were read).
    #[serde(default)]
    pub dedup: Dedup,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            user_fraction: 1.0,
            sample_seed: 0,
            min_rating: None,
            min_user_interactions: 0,
            min_item_interactions: 0,
            keep_events: None,
            target_events: None,
            dedup: Dedup::None,
        }
    }
}

/// Which of a user's repeated events are dropped. An event repeats another
/// when it has the same item and, with an event column, the same event type
/// (a view then a purchase of one item is no repeat). `Default` is `None`,
/// which keeps everything; `sasrec` defaults to `Consecutive`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dedup {
    /// Keep every row.
    #[default]
    None,
    /// Drop an event that repeats the user's previous event (in time
    /// order): double-logged events, reloads, retries.
    Consecutive,
    /// Keep only the first of each (item, event type) per user.
    All,
}

impl std::str::FromStr for Dedup {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Dedup, DataError> {
        match s {
            "none" => Ok(Dedup::None),
            "consecutive" => Ok(Dedup::Consecutive),
            "all" => Ok(Dedup::All),
            _ => Err(DataError::InvalidOption(format!(
                "unknown dedup {:?}; expected none, consecutive or all",
                crate::ids::cut(s, 20)
            ))),
        }
    }
}

impl std::fmt::Display for Dedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dedup::None => "none",
            Dedup::Consecutive => "consecutive",
            Dedup::All => "all",
        })
    }
}

/// What each filter removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterReport {
    /// Rows in the input.
    pub rows_read: usize,
    /// Rows of users left out of the sample.
    pub dropped_by_sampling: usize,
    /// Rows of event types not kept.
    pub dropped_by_event: usize,
    /// Rows rated below the minimum rating.
    pub dropped_by_min_rating: usize,
    /// Repeated events dropped ([`Dedup`]).
    pub dropped_duplicates: usize,
    /// Rows removed by the k-core filter.
    pub dropped_by_k_core: usize,
    /// Passes the k-core filter made (the last one removes nothing).
    pub k_core_passes: usize,
    /// Rows of each event type read, (type, rows) in order of first
    /// appearance; empty without an event column.
    pub events_read: Vec<(String, usize)>,
    /// Kept interactions that are targets (all of them without target
    /// event types).
    pub targets: usize,
}

/// One user's items, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSequence {
    /// The user's index into the vocabulary's users
    /// ([`Vocab::user_raw`] gives the raw id).
    pub user: u32,
    /// Item indices 1..=N in chronological order.
    pub items: Vec<u32>,
    /// Which items may be predicted, one flag per item: with target event
    /// types, only the events of those types are targets (the others are
    /// input only). `None`: every item is a target.
    pub is_target: Option<Vec<bool>>,
}

impl UserSequence {
    /// A sequence whose every item is a target.
    pub fn new(user: u32, items: Vec<u32>) -> UserSequence {
        UserSequence {
            user,
            items,
            is_target: None,
        }
    }

    /// Whether the item at `position` may be predicted.
    pub fn is_target(&self, position: usize) -> bool {
        self.is_target.as_ref().is_none_or(|t| t[position])
    }

    /// The first `len` items (and their target flags).
    pub fn prefix(&self, len: usize) -> UserSequence {
        UserSequence {
            user: self.user,
            items: self.items[..len].to_vec(),
            is_target: self.is_target.as_ref().map(|t| t[..len].to_vec()),
        }
    }
}

/// Users' chronological sequences and the vocabulary their indices refer to.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Raw item and user ids <-> indices.
    pub vocab: Vocab,
    /// One sequence per user, users in order of first appearance.
    pub users: Vec<UserSequence>,
    /// When each interaction happened, in microseconds since the Unix epoch:
    /// `times[u][j]` is the time of `users[u].items[j]` (non-decreasing in
    /// `j`). The temporal split cuts on these.
    pub times: Vec<Vec<i64>>,
}

/// Sizes of a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Number of users.
    pub users: usize,
    /// Number of items N.
    pub items: usize,
    /// Number of interactions (sum of sequence lengths).
    pub interactions: usize,
    /// Shortest history.
    pub min_len: usize,
    /// Median history length (nearest rank: the lower middle for an even count).
    pub median_len: usize,
    /// 90th percentile of history length (nearest rank).
    pub p90_len: usize,
    /// Longest history.
    pub max_len: usize,
}

impl Dataset {
    /// The earliest and latest interaction time, if there are interactions.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        // Each user's times are sorted: their first and last are the extremes.
        let first = self.times.iter().filter_map(|t| t.first()).min()?;
        let last = self.times.iter().filter_map(|t| t.last()).max()?;
        Some((*first, *last))
    }

    /// Counts users, items and interactions, and the history-length spread.
    pub fn stats(&self) -> Stats {
        let mut lens: Vec<usize> = self.users.iter().map(|u| u.items.len()).collect();
        lens.sort_unstable();
        // Nearest-rank percentile num/den: the smallest length with at least
        // that share of the users at or below it (integer maths, no rounding).
        let rank = |num: usize, den: usize| {
            let r = (num * lens.len()).div_ceil(den);
            lens.get(r.saturating_sub(1)).copied().unwrap_or(0)
        };
        Stats {
            users: lens.len(),
            items: self.vocab.num_items(),
            interactions: lens.iter().sum(),
            min_len: lens.first().copied().unwrap_or(0),
            median_len: rank(1, 2),
            p90_len: rank(9, 10),
            max_len: lens.last().copied().unwrap_or(0),
        }
    }
}

/// Filters the interactions and builds the sequences; see the module docs
/// for the order of the steps. Fails when the options are out of range (or
/// need a column the input lacks) or nothing is left.
pub fn build_dataset(
    interactions: &Interactions,
    filter: &FilterConfig,
) -> Result<Dataset, DataError> {
    build_dataset_with_report(interactions, filter).map(|(dataset, _)| dataset)
}

/// [`build_dataset`], also saying how many rows each filter removed.
pub fn build_dataset_with_report(
    interactions: &Interactions,
    filter: &FilterConfig,
) -> Result<(Dataset, FilterReport), DataError> {
    let fraction = filter.user_fraction;
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(DataError::InvalidOption(format!(
            "user fraction {fraction} is not in (0, 1]"
        )));
    }
    check_columns(interactions)?;
    let r = interactions;
    let rows = r.len();
    let events = EventTypes::new(r, filter)?;
    let mut report = FilterReport {
        rows_read: rows,
        events_read: events.read.clone(),
        ..FilterReport::default()
    };
    let (num_users, num_items) = (r.users.len(), r.items.len());
    let mut keep = vec![true; rows];

    if fraction < 1.0 {
        let sampled = sample_users(num_users, fraction, filter.sample_seed);
        report.dropped_by_sampling = drop_rows(&mut keep, |i| !sampled[r.user[i] as usize]);
    }
    if let (Some(kept), Some(codes)) = (&events.kept, &r.event) {
        report.dropped_by_event = drop_rows(&mut keep, |i| !kept[codes[i] as usize]);
    }
    if let Some(min) = filter.min_rating {
        if !min.is_finite() {
            return Err(DataError::InvalidOption(format!(
                "minimum rating {min} is not a finite number"
            )));
        }
        let Some(ratings) = &r.rating else {
            return Err(DataError::InvalidOption(format!(
                "a minimum rating ({min}) needs a rating column, and the input has none{}",
                if r.source.format.is_some() {
                    " (name it with --rating-col)"
                } else {
                    ""
                }
            )));
        };
        report.dropped_by_min_rating = drop_rows(&mut keep, |i| ratings[i] < min);
    }

    // Each user's rows in time order (a counting sort by user keeps file
    // order; `sort_by_key` is stable, so ties keep it too): the duplicate
    // filter walks them, and the sequences are read from them at the end.
    let mut offsets = vec![0usize; num_users + 1];
    for i in (0..rows).filter(|&i| keep[i]) {
        offsets[r.user[i] as usize + 1] += 1;
    }
    for u in 0..num_users {
        offsets[u + 1] += offsets[u];
    }
    let mut next = offsets.clone();
    let mut by_user = vec![0u32; offsets[num_users]];
    for i in (0..rows).filter(|&i| keep[i]) {
        let u = r.user[i] as usize;
        by_user[next[u]] = i as u32;
        next[u] += 1;
    }
    drop(next);
    for u in 0..num_users {
        by_user[offsets[u]..offsets[u + 1]].sort_by_key(|&i| r.time[i as usize]);
    }
    if filter.dedup != Dedup::None {
        report.dropped_duplicates = drop_duplicates(r, filter.dedup, &offsets, &by_user, &mut keep);
    }

    let (min_user, min_item) = (filter.min_user_interactions, filter.min_item_interactions);
    if min_user > 1 || min_item > 1 {
        let mut user_count = vec![0usize; num_users];
        let mut item_count = vec![0usize; num_items];
        loop {
            user_count.fill(0);
            item_count.fill(0);
            for i in (0..rows).filter(|&i| keep[i]) {
                user_count[r.user[i] as usize] += 1;
                item_count[r.item[i] as usize] += 1;
            }
            report.k_core_passes += 1;
            let dropped = drop_rows(&mut keep, |i| {
                user_count[r.user[i] as usize] < min_user
                    || item_count[r.item[i] as usize] < min_item
            });
            report.dropped_by_k_core += dropped;
            if dropped == 0 {
                break;
            }
        }
    }

    let kept = keep.iter().filter(|&&k| k).count();
    if kept == 0 {
        return Err(DataError::NothingLeft(format!(
            "{rows} rows read; removed {} by user sampling, {} by event type, {} by minimum rating, {} duplicates, {} by minimum interactions",
            report.dropped_by_sampling,
            report.dropped_by_event,
            report.dropped_by_min_rating,
            report.dropped_duplicates,
            report.dropped_by_k_core
        )));
    }

    // Items numbered 1.. and users 0.. by first appearance among the kept rows.
    const NONE: u32 = u32::MAX;
    let mut item_index = vec![NONE; num_items];
    let mut item_codes = Vec::new();
    let mut user_index = vec![NONE; num_users];
    let mut user_codes = Vec::new();
    for i in (0..rows).filter(|&i| keep[i]) {
        let item = r.item[i] as usize;
        if item_index[item] == NONE {
            item_codes.push(item as u32);
            item_index[item] = item_codes.len() as u32;
        }
        let user = r.user[i] as usize;
        if user_index[user] == NONE {
            user_index[user] = user_codes.len() as u32;
            user_codes.push(user as u32);
        }
    }
    let (users, times): (Vec<UserSequence>, Vec<Vec<i64>>) = user_codes
        .iter()
        .enumerate()
        .map(|(u, &code)| {
            let code = code as usize;
            let rows: Vec<usize> = by_user[offsets[code]..offsets[code + 1]]
                .iter()
                .map(|&i| i as usize)
                .filter(|&i| keep[i])
                .collect();
            let items = rows
                .iter()
                .map(|&i| item_index[r.item[i] as usize])
                .collect();
            let is_target = events
                .target
                .as_ref()
                .zip(r.event.as_ref())
                .map(|(target, codes)| rows.iter().map(|&i| target[codes[i] as usize]).collect());
            let times = rows.iter().map(|&i| r.time[i]).collect();
            (
                UserSequence {
                    user: u as u32,
                    items,
                    is_target,
                },
                times,
            )
        })
        .unzip();
    report.targets = users
        .iter()
        .map(|u| match &u.is_target {
            Some(t) => t.iter().filter(|&&t| t).count(),
            None => u.items.len(),
        })
        .sum();

    let vocab = Vocab::new(r.items.subset(&item_codes), r.users.subset(&user_codes));
    let dataset = Dataset {
        vocab,
        users,
        times,
    };
    Ok((dataset, report))
}

/// The event types of a log and what the filter does with them.
struct EventTypes {
    /// Rows per type as read.
    read: Vec<(String, usize)>,
    /// Whether each type code is kept (`None`: all are).
    kept: Option<Vec<bool>>,
    /// Whether each type code is a target (`None`: all are).
    target: Option<Vec<bool>>,
}

impl EventTypes {
    /// Counts the types and resolves `keep_events` and `target_events`
    /// against them; a type the log does not have is an error.
    fn new(r: &Interactions, filter: &FilterConfig) -> Result<EventTypes, DataError> {
        let names = r.event_names();
        let mut counts = vec![0usize; names.len()];
        if let Some(codes) = &r.event {
            for &c in codes {
                counts[c as usize] += 1;
            }
        }
        let read = names.iter().cloned().zip(counts).collect();
        let column = r.source.columns.event.as_deref().unwrap_or("event");
        let select = |wanted: &Option<Vec<String>>, what: &str| -> Result<_, DataError> {
            let Some(wanted) = wanted else {
                return Ok(None);
            };
            if r.event.is_none() {
                return Err(DataError::InvalidOption(format!(
                    "{what} event types ({}) need an event column, and the input has none{}",
                    crate::ids::cut(&wanted.join(", "), 100),
                    if r.source.format.is_some() {
                        " (name it with --event-col)"
                    } else {
                        ""
                    }
                )));
            }
            if wanted.is_empty() {
                return Err(DataError::InvalidOption(format!(
                    "{what} event types: the list is empty"
                )));
            }
            let mut chosen = vec![false; names.len()];
            for name in wanted {
                match names.iter().position(|n| n == name) {
                    Some(c) => chosen[c] = true,
                    None => {
                        return Err(DataError::InvalidOption(format!(
                            "{what} event types: no event type {:?} in column `{}` (it has {})",
                            crate::ids::cut(name, 40),
                            crate::ids::cut(column, 40),
                            crate::ids::cut(&names.join(", "), 200)
                        )));
                    }
                }
            }
            Ok(Some(chosen))
        };
        let kept = select(&filter.keep_events, "kept")?;
        let target = select(&filter.target_events, "target")?;
        if let (Some(kept), Some(target)) = (&kept, &target)
            && let Some(c) = (0..names.len()).find(|&c| target[c] && !kept[c])
        {
            return Err(DataError::InvalidOption(format!(
                "the target event type {:?} is not among the kept ones ({})",
                crate::ids::cut(&names[c], 40),
                crate::ids::cut(
                    &filter.keep_events.clone().unwrap_or_default().join(", "),
                    200
                )
            )));
        }
        Ok(EventTypes { read, kept, target })
    }
}

/// Drops repeated events (see [`Dedup`]): walks each user's kept rows in
/// time order (`by_user[offsets[u]..offsets[u + 1]]`). Returns how many.
fn drop_duplicates(
    r: &Interactions,
    dedup: Dedup,
    offsets: &[usize],
    by_user: &[u32],
    keep: &mut [bool],
) -> usize {
    let event = |i: usize| r.event.as_ref().map_or(0, |e| e[i]);
    let mut dropped = 0;
    let mut seen = std::collections::HashSet::new();
    for u in 0..offsets.len() - 1 {
        let mut previous: Option<(u32, u32)> = None;
        seen.clear();
        for &i in &by_user[offsets[u]..offsets[u + 1]] {
            let i = i as usize;
            if !keep[i] {
                continue;
            }
            let key = (r.item[i], event(i));
            let repeat = match dedup {
                Dedup::None => false,
                Dedup::Consecutive => previous == Some(key),
                Dedup::All => !seen.insert(key),
            };
            if repeat {
                keep[i] = false;
                dropped += 1;
            }
            previous = Some(key);
        }
    }
    dropped
}

/// Refuses interactions whose columns differ in length or whose codes point
/// outside their id tables (possible for ones built in code), and more rows
/// than u32 row numbers can hold.
fn check_columns(r: &Interactions) -> Result<(), DataError> {
    let rows = r.len();
    let rating_rows = r.rating.as_ref().map_or(rows, Vec::len);
    if r.item.len() != rows || r.time.len() != rows || rating_rows != rows {
        return Err(DataError::InvalidOption(format!(
            "the interaction columns differ in length: {rows} users, {} items, {} times, {rating_rows} ratings",
            r.item.len(),
            r.time.len()
        )));
    }
    if rows > u32::MAX as usize {
        return Err(DataError::InvalidOption(format!(
            "{rows} rows are more than this pipeline takes (4,294,967,295)"
        )));
    }
    let out_of_range =
        |codes: &[u32], table: &crate::IdTable| codes.iter().any(|&c| c as usize >= table.len());
    if out_of_range(&r.user, &r.users) || out_of_range(&r.item, &r.items) {
        return Err(DataError::InvalidOption(
            "a user or item code has no id in its table".to_string(),
        ));
    }
    Ok(())
}

/// Which of `num_users` users the sample keeps: `floor(num_users * fraction)`
/// of them, drawn without replacement with ChaCha8 seeded by `seed`.
fn sample_users(num_users: usize, fraction: f64, seed: u64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..num_users).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut sampled = vec![false; num_users];
    for &u in &order[..(num_users as f64 * fraction) as usize] {
        sampled[u] = true;
    }
    sampled
}

/// Sets `keep[r] = false` where `drop(r)` holds for a kept row; returns how many.
fn drop_rows(keep: &mut [bool], drop: impl Fn(usize) -> bool) -> usize {
    let mut dropped = 0;
    for (r, k) in keep.iter_mut().enumerate() {
        if *k && drop(r) {
            *k = false;
            dropped += 1;
        }
    }
    dropped
}

/// Target events of each item index in `users` (`[num_items + 1]`).
pub fn popularity(users: &[UserSequence], num_items: usize) -> Vec<u32> {
    let mut counts = vec![0u32; num_items + 1];
    for user in users {
        for (j, &item) in user.items.iter().enumerate() {
            if user.is_target(j) {
                counts[item as usize] += 1;
            }
        }
    }
    counts
}
