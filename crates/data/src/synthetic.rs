//! Synthetic interaction logs for benchmarks and tests.
//!
//! - [`write_ratings`]: MovieLens-32M-shaped ratings files (users of at least
//!   20 ratings with a long tail, movie ids up to 90,000 with a few very
//!   popular ones, half-star ratings, timestamps growing within each user):
//!   the reading benchmark's input.
//! - [`Transitions`]: logs with a planted sequential signal. Items have a
//!   popularity skew (Zipf), and each item has a few fixed successors drawn
//!   uniformly: a user's next item is one of the current item's successors
//!   with probability [`Transitions::follow`], else it is drawn by
//!   popularity (so is each user's first item). Next-item
//!   accuracy is then learnable, and comparable at any size, without
//!   licensed data. Written as CSV or Parquet, with integer or string ids,
//!   or as a shop's event log ([`Transitions::write_shop`]: views, carts,
//!   purchases, duplicated events, ISO times).
//!   [`Transitions::long_range`] is a harder setting whose signal reaches
//!   further back than the last item: each user follows the successors of
//!   the item a fixed number of steps back (their lag, 1 to
//!   [`Transitions::max_lag`]), and draws the rest from their own taste
//!   group of items ([`Transitions::taste_groups`]), so that a model must
//!   read the whole history, not only its last item.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampSecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit as ArrowUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{DataError, Format};

/// Writes `rows` MovieLens-shaped ratings drawn from `seed` to `path` in
/// `format` (`Csv` with a header and one-decimal ratings; `Dat`/`Tsv` with
/// whole stars as in MovieLens 1M and 100K). The same arguments give the
/// same bytes.
pub fn write_ratings(path: &Path, format: Format, rows: usize, seed: u64) -> Result<(), DataError> {
    if !matches!(format, Format::Csv | Format::Dat | Format::Tsv) {
        return Err(DataError::InvalidOption(format!(
            "MovieLens-shaped ratings are written as csv, dat or tsv, not {format}"
        )));
    }
    let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    write_rating_rows(&mut out, format, rows, seed)
        .and_then(|()| out.flush())
        .map_err(|e| DataError::io(path, e))
}

fn write_rating_rows<W: Write>(
    out: &mut W,
    format: Format,
    rows: usize,
    seed: u64,
) -> std::io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sep = format.default_delimiter().unwrap_or(",");
    if format == Format::Csv {
        writeln!(out, "userId{sep}movieId{sep}rating{sep}timestamp")?;
    }
    let mut written = 0;
    let mut user = 0u32;
    while written < rows {
        user += 1;
        // At least 20, with a heavy tail as 1/u grows: up to 3,485, mean about 150.
        let u: f64 = rng.random_range(0.01..=1.0);
        let count = ((20.0 + 35.0 * (1.0 / u - 1.0)) as usize).min(rows - written);
        let mut time: i64 = rng.random_range(820_000_000..1_690_000_000);
        for _ in 0..count {
            // Cubing a uniform draw crowds ids near 1: a few popular movies.
            let v: f64 = rng.random();
            let movie = 1 + (v * v * v * 90_000.0) as u32;
            let half_stars: u32 = rng.random_range(1..=10);
            time += rng.random_range(0..5_000);
            if format == Format::Csv {
                writeln!(
                    out,
                    "{user}{sep}{movie}{sep}{}.{}{sep}{time}",
                    half_stars / 2,
                    if half_stars % 2 == 1 { 5 } else { 0 }
                )?;
            } else {
                writeln!(
                    out,
                    "{user}{sep}{movie}{sep}{}{sep}{time}",
                    half_stars.div_ceil(2)
                )?;
            }
        }
        written += count;
    }
    Ok(())
}

/// A log with a planted sequential signal: see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Transitions {
    /// Number of users (every one gets at least 2 events).
    pub users: usize,
    /// Number of items.
    pub items: usize,
    /// Number of events (rows), at least `2 * users`.
    pub rows: usize,
    /// Seed: the same settings give the same log.
    pub seed: u64,
    /// Probability that the next item is one of the current item's
    /// successors rather than a draw by popularity.
    pub follow: f64,
    /// Successors per item; the first is the likeliest (weights 1/1, 1/2, ...).
    pub successors: usize,
    /// Zipf exponent of item popularity.
    pub zipf: f64,
    /// Ids as strings (`U…` users, `I…` items, like marketplace ids) instead of integers.
    pub string_ids: bool,
    /// Each user's lag is drawn uniformly from `1..=max_lag`: a followed
    /// step goes to a successor of the item `lag` steps back (the current
    /// one for lag 1; the first item while the history is shorter). 1 is
    /// the first-order chain of [`Transitions::new`].
    pub max_lag: usize,
    /// Items are dealt into this many taste groups by popularity rank (rank
    /// `r` in group `r % taste_groups`, so every group has popular and rare
    /// items); each user belongs to one, drawn uniformly, and their draws by
    /// popularity stay within it. 0: one group of all items.
    pub taste_groups: usize,
}

impl Transitions {
    /// `users` users, `items` items, `rows` events from `seed`, with the
    /// default signal: follow 0.6, 3 successors, Zipf exponent 1.0.
    pub fn new(users: usize, items: usize, rows: usize, seed: u64) -> Transitions {
        Transitions {
            users,
            items,
            rows,
            seed,
            follow: 0.6,
            successors: 3,
            zipf: 1.0,
            string_ids: false,
            max_lag: 1,
            taste_groups: 0,
        }
    }

    /// The harder setting with longer-range structure: the default signal
    /// with lags of 1 to 3 steps and 10 taste groups. An item's successors
    /// alone (first-order statistics) predict far less of it than a model
    /// that also reads each user's lag and group from their history
    /// (`tests/synthetic.rs` measures both).
    pub fn long_range(users: usize, items: usize, rows: usize, seed: u64) -> Transitions {
        Transitions {
            max_lag: 3,
            taste_groups: 10,
            ..Transitions::new(users, items, rows, seed)
        }
    }

    fn check(&self) -> Result<(), DataError> {
        let ok = self.users > 0
            && self.items >= 2
            && self.items <= u32::MAX as usize
            && self.rows >= 2 * self.users
            && (0.0..=1.0).contains(&self.follow)
            && self.successors > 0
            && self.zipf.is_finite()
            && self.max_lag >= 1
            && self.taste_groups <= self.items;
        if ok {
            Ok(())
        } else {
            Err(DataError::InvalidOption(format!(
                "synthetic log: need users >= 1, items >= 2, rows >= 2 x users, follow in [0, 1], successors >= 1, max_lag >= 1, taste_groups <= items; got {self:?}"
            )))
        }
    }

    /// The item table: popularity CDF and each item's successors, all
    /// from the seed.
    fn model(&self) -> Model {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut cdf = Vec::with_capacity(self.items);
        let mut total = 0.0;
        for rank in 1..=self.items {
            total += (rank as f64).powf(-self.zipf);
            cdf.push(total);
        }
        cdf.iter_mut().for_each(|c| *c /= total);
        // Popularity does not follow the item number: shuffle ranks to ids.
        let mut item_of_rank: Vec<u32> = (0..self.items as u32).collect();
        rand::seq::SliceRandom::shuffle(item_of_rank.as_mut_slice(), &mut rng);
        // Per taste group, the cumulative popularity of its ranks (r, r + G, ...).
        let groups = self.taste_groups.max(1);
        let group_cdf = (0..groups)
            .map(|g| {
                let mut acc = 0.0;
                let mut cdf: Vec<(f64, usize)> = (g..self.items)
                    .step_by(groups)
                    .map(|rank| {
                        acc += (rank as f64 + 1.0).powf(-self.zipf);
                        (acc, rank)
                    })
                    .collect();
                cdf.iter_mut().for_each(|(c, _)| *c /= acc);
                cdf
            })
            .collect();
        let mut model = Model {
            cdf,
            group_cdf,
            item_of_rank,
            successors: Vec::with_capacity(self.items * self.successors),
            successor_cdf: Vec::new(),
        };
        for item in 0..self.items as u32 {
            for _ in 0..self.successors {
                // Successors are uniform over the other items, so that
                // following them is a signal popularity cannot explain.
                let mut next = rng.random_range(0..self.items as u32);
                while next == item {
                    next = rng.random_range(0..self.items as u32);
                }
                model.successors.push(next);
            }
        }
        let mut acc = 0.0;
        for k in 1..=self.successors {
            acc += 1.0 / k as f64;
            model.successor_cdf.push(acc);
        }
        model.successor_cdf.iter_mut().for_each(|c| *c /= acc);
        model
    }

    /// Calls `event(user, item, time)` for every event, user by user, each
    /// user's events in time order (seconds since 1970). Users are 0..users,
    /// items 0..items.
    pub fn generate(&self, mut event: impl FnMut(u32, u32, i64)) -> Result<(), DataError> {
        self.check()?;
        let model = self.model();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        // Its own stream: the events do not reuse the item table's draws.
        rng.set_stream(1);
        // Heavy-tailed history lengths (at least 2), summing to `rows`.
        let weights: Vec<f64> = (0..self.users)
            .map(|_| 1.0 / rng.random_range(0.02..=1.0f64))
            .collect();
        let total: f64 = weights.iter().sum();
        let spare = (self.rows - 2 * self.users) as f64;
        let mut lengths: Vec<usize> = weights
            .iter()
            .map(|w| 2 + (spare * w / total) as usize)
            .collect();
        // Rounding down left a few events over: one more for the first users.
        let left = self.rows - lengths.iter().sum::<usize>();
        let n = lengths.len();
        for (u, len) in lengths.iter_mut().enumerate() {
            *len += left / n + usize::from(u < left % n);
        }
        for (user, &len) in lengths.iter().enumerate() {
            let mut time: i64 = rng.random_range(1_500_000_000..1_700_000_000);
            // Drawn only in the long-range setting, so that the default log
            // keeps its draws (and bytes).
            let lag = if self.max_lag > 1 {
                rng.random_range(1..=self.max_lag)
            } else {
                1
            };
            let group = (self.taste_groups > 0).then(|| rng.random_range(0..self.taste_groups));
            let draw = |rng: &mut ChaCha8Rng| match group {
                Some(g) => model.popular_in(g, rng),
                None => model.popular(rng),
            };
            let mut item = draw(&mut rng);
            // The last `lag` items, oldest first.
            let mut recent = std::collections::VecDeque::with_capacity(lag);
            for _ in 0..len {
                event(user as u32, item, time);
                if recent.len() == lag {
                    recent.pop_front();
                }
                recent.push_back(item);
                time += rng.random_range(1..3_600);
                item = if rng.random_bool(self.follow) {
                    model.successor(recent[0], &mut rng)
                } else {
                    draw(&mut rng)
                };
            }
        }
        Ok(())
    }

    /// The successors of `item` (likeliest first), as planted.
    pub fn successors_of(&self, item: u32) -> Vec<u32> {
        let model = self.model();
        let k = self.successors;
        model.successors[item as usize * k..(item as usize + 1) * k].to_vec()
    }

    /// A user id as written: `123` or `U…` (12 characters).
    pub fn user_id(&self, user: u32) -> String {
        if self.string_ids {
            format!("U{}", base36(user as u64, 11))
        } else {
            (user as u64 + 1).to_string()
        }
    }

    /// An item id as written: `123` or `I…` (10 characters).
    pub fn item_id(&self, item: u32) -> String {
        if self.string_ids {
            format!("I{}", base36(item as u64, 9))
        } else {
            (item as u64 + 1).to_string()
        }
    }

    /// Writes the log to `path`: CSV (`user_id,item_id,timestamp`, integer
    /// seconds) or, for `*.parquet`, Parquet (snappy; ids as int64 or
    /// strings, `timestamp` as an Arrow timestamp in seconds, UTC).
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        let io = |e| DataError::io(path, e);
        let file = std::fs::File::create(path).map_err(io)?;
        if Format::from_path(path) == Some(Format::Parquet) {
            return self.write_parquet(file, path);
        }
        let mut out = BufWriter::with_capacity(1 << 20, file);
        writeln!(out, "user_id,item_id,timestamp").map_err(io)?;
        let mut result = Ok(());
        self.generate(|user, item, time| {
            if result.is_ok() {
                result = writeln!(out, "{},{},{time}", self.user_id(user), self.item_id(item));
            }
        })?;
        result.and_then(|()| out.flush()).map_err(io)
    }

    /// Writes the log as a shop's event log to `path` (CSV): columns
    /// `customer_id,sku,event_type,event_time` (ISO 8601, UTC). Each event
    /// of the log is a `view`; a quarter of the views are followed by a
    /// `cart` of the same item 20 s later, and 60% of those by a `purchase`
    /// 40 s after the view; 5% of the views are logged twice (a consecutive
    /// duplicate, as double-firing trackers write). Ids are strings with
    /// [`Transitions::string_ids`], else integers. The same settings write
    /// the same bytes.
    pub fn write_shop(&self, path: &Path) -> Result<(), DataError> {
        let io = |e| DataError::io(path, e);
        let file = std::fs::File::create(path).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        writeln!(out, "customer_id,sku,event_type,event_time").map_err(io)?;
        // Its own stream: the events are the log's, only decorated.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(2);
        let mut result = Ok(());
        self.generate(|user, item, time| {
            let (user, item) = (self.user_id(user), self.item_id(item));
            let mut row = |event: &str, at: i64| {
                let at = chrono::DateTime::from_timestamp(at, 0)
                    .map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
                if result.is_ok() {
                    result = writeln!(out, "{user},{item},{event},{at}");
                }
            };
            row("view", time);
            if rng.random_bool(0.05) {
                row("view", time);
            }
            if rng.random_bool(0.25) {
                row("cart", time + 20);
                if rng.random_bool(0.6) {
                    row("purchase", time + 40);
                }
            }
        })?;
        result.and_then(|()| out.flush()).map_err(io)
    }

    fn write_parquet(&self, file: std::fs::File, path: &Path) -> Result<(), DataError> {
        let parquet_error = |e: &dyn std::fmt::Display| DataError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let id_type = if self.string_ids {
            DataType::Utf8
        } else {
            DataType::Int64
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", id_type.clone(), false),
            Field::new("item_id", id_type, false),
            Field::new(
                "timestamp",
                DataType::Timestamp(ArrowUnit::Second, Some("UTC".into())),
                false,
            ),
        ]));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| parquet_error(&e))?;
        const BATCH: usize = 1 << 20;
        let mut batch = (Vec::new(), Vec::new(), Vec::new());
        let mut result = Ok(());
        let flush = |batch: &mut (Vec<u32>, Vec<u32>, Vec<i64>), writer: &mut ArrowWriter<_>| {
            let ids = |v: &[u32], name: fn(&Self, u32) -> String| -> ArrayRef {
                if self.string_ids {
                    Arc::new(StringArray::from_iter_values(
                        v.iter().map(|&x| name(self, x)),
                    ))
                } else {
                    Arc::new(Int64Array::from_iter_values(
                        v.iter().map(|&x| x as i64 + 1),
                    ))
                }
            };
            let columns = vec![
                ids(&batch.0, Self::user_id),
                ids(&batch.1, Self::item_id),
                Arc::new(
                    TimestampSecondArray::from(std::mem::take(&mut batch.2)).with_timezone("UTC"),
                ) as ArrayRef,
            ];
            batch.0.clear();
            batch.1.clear();
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| parquet_error(&e))
                .and_then(|b| writer.write(&b).map_err(|e| parquet_error(&e)))
        };
        self.generate(|user, item, time| {
            batch.0.push(user);
            batch.1.push(item);
            batch.2.push(time);
            if batch.0.len() == BATCH && result.is_ok() {
                result = flush(&mut batch, &mut writer);
            }
        })?;
        result?;
        if !batch.0.is_empty() {
            flush(&mut batch, &mut writer)?;
        }
        writer.close().map_err(|e| parquet_error(&e))?;
        Ok(())
    }
}

struct Model {
    /// Cumulative popularity by rank.
    cdf: Vec<f64>,
    /// Per taste group: cumulative popularity within the group, and the rank.
    group_cdf: Vec<Vec<(f64, usize)>>,
    item_of_rank: Vec<u32>,
    /// `successors[item * k..][..k]`.
    successors: Vec<u32>,
    successor_cdf: Vec<f64>,
}

impl Model {
    fn popular(&self, rng: &mut impl Rng) -> u32 {
        let u: f64 = rng.random();
        let rank = self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1);
        self.item_of_rank[rank]
    }

    fn popular_in(&self, group: usize, rng: &mut impl Rng) -> u32 {
        let cdf = &self.group_cdf[group];
        let u: f64 = rng.random();
        let at = cdf.partition_point(|&(c, _)| c < u).min(cdf.len() - 1);
        self.item_of_rank[cdf[at].1]
    }

    fn successor(&self, item: u32, rng: &mut impl Rng) -> u32 {
        let u: f64 = rng.random();
        let k = self.successor_cdf.len();
        let j = self.successor_cdf.partition_point(|&c| c < u).min(k - 1);
        self.successors[item as usize * k + j]
    }
}

/// `n` as `width` base-36 digits after a bijective scramble (multiplying by
/// a constant coprime to 36 modulo 36^width), so consecutive numbers give
/// unrelated-looking, distinct ids.
fn base36(n: u64, width: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let modulus = 36u128.pow(width);
    let mut x = (n as u128 * 0x9E37_79B9_7F4A_7C15 % modulus) as u64;
    let mut out = vec![b'0'; width as usize];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(x % 36) as usize];
        x /= 36;
    }
    String::from_utf8(out).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_ids_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..100_000 {
            assert!(seen.insert(base36(n, 9)));
        }
    }
}
