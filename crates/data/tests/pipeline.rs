//! Filters, the item index, sequences, splits, windows and batches.

use std::collections::HashMap;

use proptest::prelude::*;
use sasrec_data::*;

/// Interactions from `(user, item, rating, timestamp)` rows, integer ids,
/// times in seconds.
fn ratings(rows: &[(u32, u32, f32, i64)]) -> Interactions {
    let mut r = Interactions::default();
    for &(u, i, rating, t) in rows {
        r.push(
            &RawId::Int(u.into()),
            &RawId::Int(i.into()),
            t * 1_000_000,
            Some(rating),
        );
    }
    r
}

/// An integer raw id as u32 (the tests' ids all fit).
fn int(id: RawId) -> u32 {
    match id {
        RawId::Int(v) => v as u32,
        RawId::Str(s) => panic!("string id {s}"),
    }
}

/// Each user's raw id and raw item ids, users in dataset order.
fn raw_sequences(d: &Dataset) -> Vec<(u32, Vec<u32>)> {
    d.users
        .iter()
        .map(|u| {
            (
                int(d.vocab.user_raw(u.user).unwrap()),
                u.items
                    .iter()
                    .map(|&i| int(d.vocab.raw(i).unwrap()))
                    .collect(),
            )
        })
        .collect()
}

/// The raw ids of the vocabulary's items, in index order.
fn raw_items(d: &Dataset) -> Vec<u32> {
    d.vocab.items().to_vec().into_iter().map(int).collect()
}

fn seq(user: u32, items: &[u32]) -> UserSequence {
    UserSequence::new(user, items.to_vec())
}

#[test]
fn sequences_are_chronological_with_ties_in_file_order() {
    let r = ratings(&[
        (5, 100, 4.0, 30),
        (5, 101, 4.0, 10),
        (9, 102, 4.0, 7),
        (5, 103, 4.0, 10), // same time as 101, later in the file
        (5, 104, 4.0, 20),
        (5, 105, 4.0, 10), // same time again
    ]);
    let d = build_dataset(&r, &FilterConfig::default()).unwrap();
    assert_eq!(
        raw_sequences(&d),
        vec![(5, vec![101, 103, 105, 104, 100]), (9, vec![102])]
    );
    // Indices follow first appearance in the file, not time.
    assert_eq!(raw_items(&d), [100, 101, 102, 103, 104, 105]);
    assert_eq!(d.users[0].items, vec![2, 4, 6, 5, 1]);
    assert_eq!(
        d.users.iter().map(|u| u.user).collect::<Vec<_>>(),
        [0, 1],
        "user indices"
    );
}

#[test]
fn users_and_items_are_numbered_after_filtering() {
    let r = ratings(&[
        (2, 50, 1.0, 1), // dropped by the minimum rating
        (1, 60, 5.0, 2),
        (2, 70, 4.0, 3),
        (1, 50, 4.5, 4),
    ]);
    let filter = FilterConfig {
        min_rating: Some(3.5),
        ..FilterConfig::default()
    };
    let (d, report) = build_dataset_with_report(&r, &filter).unwrap();
    assert_eq!(raw_items(&d), [60, 70, 50]);
    assert_eq!(raw_sequences(&d), vec![(1, vec![60, 50]), (2, vec![70])]);
    assert_eq!(report.dropped_by_min_rating, 1);
    assert_eq!(report.rows_read, 4);
}

#[test]
fn stats_count_and_spread() {
    // Users with 1, 2, 3, ..., 10 interactions.
    let mut rows = Vec::new();
    for u in 1..=10u32 {
        for k in 0..u {
            rows.push((u, k, 4.0, k as i64));
        }
    }
    let d = build_dataset(&ratings(&rows), &FilterConfig::default()).unwrap();
    let s = d.stats();
    assert_eq!((s.users, s.items, s.interactions), (10, 10, 55));
    assert_eq!(
        (s.min_len, s.median_len, s.p90_len, s.max_len),
        (1, 5, 9, 10)
    );
}

#[test]
fn user_sampling_keeps_floor_of_the_fraction_and_depends_on_the_seed() {
    let rows: Vec<_> = (0..100u32).map(|u| (u, u % 7, 4.0, 0)).collect();
    let r = ratings(&rows);
    let sample = |seed| {
        let filter = FilterConfig {
            user_fraction: 0.1,
            sample_seed: seed,
            ..FilterConfig::default()
        };
        let (d, report) = build_dataset_with_report(&r, &filter).unwrap();
        assert_eq!(report.dropped_by_sampling, 90);
        raw_sequences(&d)
            .into_iter()
            .map(|(u, _)| u)
            .collect::<Vec<_>>()
    };
    assert_eq!(sample(1).len(), 10);
    assert_eq!(sample(1), sample(1));
    assert!((2..6).any(|seed| sample(seed) != sample(1)));
}

#[test]
fn bad_options_and_empty_results_are_errors() {
    let r = ratings(&[(1, 1, 1.0, 0), (1, 2, 2.0, 1)]);
    for fraction in [0.0, -0.5, 1.5, f64::NAN] {
        let filter = FilterConfig {
            user_fraction: fraction,
            ..FilterConfig::default()
        };
        let err = build_dataset(&r, &filter).unwrap_err().to_string();
        assert!(err.contains("user fraction"), "{err}");
    }
    let filter = FilterConfig {
        min_rating: Some(4.0),
        ..FilterConfig::default()
    };
    let err = build_dataset(&r, &filter).unwrap_err().to_string();
    assert!(
        err.contains("no interactions left") && err.contains("2 by minimum rating"),
        "{err}"
    );
    // A minimum rating needs ratings.
    let mut implicit = Interactions::default();
    implicit.push(&RawId::from("u"), &RawId::from("i"), 0, None);
    let err = build_dataset(&implicit, &filter).unwrap_err().to_string();
    assert!(err.contains("needs a rating column"), "{err}");
    for min in [f32::NAN, f32::INFINITY] {
        let filter = FilterConfig {
            min_rating: Some(min),
            ..FilterConfig::default()
        };
        assert!(build_dataset(&r, &filter).is_err(), "{min}");
    }
}

/// Whether the rows in `subset` give every user and item enough interactions.
fn satisfies(rows: &[(u32, u32)], subset: &[usize], min_user: usize, min_item: usize) -> bool {
    let mut users = HashMap::new();
    let mut items = HashMap::new();
    for &r in subset {
        *users.entry(rows[r].0).or_insert(0) += 1;
        *items.entry(rows[r].1).or_insert(0) += 1;
    }
    users.values().all(|&c| c >= min_user) && items.values().all(|&c| c >= min_item)
}

proptest! {
    /// The k-core filter keeps a set that meets both thresholds and contains
    /// every other set that does (checked against all subsets).
    #[test]
    fn k_core_is_the_largest_subset_meeting_the_thresholds(
        rows in prop::collection::vec((0u32..4, 0u32..4), 1..11),
        min_user in 0usize..4,
        min_item in 0usize..4,
    ) {
        let r = ratings(&rows.iter().enumerate().map(|(t, &(u, i))| (u, i, 4.0, t as i64)).collect::<Vec<_>>());
        let filter = FilterConfig { min_user_interactions: min_user, min_item_interactions: min_item, ..FilterConfig::default() };
        let mut kept: HashMap<(u32, u32), usize> = HashMap::new();
        if let Ok(d) = build_dataset(&r, &filter) {
            for (user, items) in raw_sequences(&d) {
                for item in items {
                    *kept.entry((user, item)).or_insert(0) += 1;
                }
            }
        }
        let kept_rows: Vec<(u32, u32)> = kept.iter().flat_map(|(&p, &n)| std::iter::repeat_n(p, n)).collect();
        let all: Vec<usize> = (0..kept_rows.len()).collect();
        prop_assert!(satisfies(&kept_rows, &all, min_user, min_item));
        for mask in 1u32..(1 << rows.len()) {
            let subset: Vec<usize> = (0..rows.len()).filter(|&r| mask >> r & 1 == 1).collect();
            if satisfies(&rows, &subset, min_user, min_item) {
                let mut need: HashMap<(u32, u32), usize> = HashMap::new();
                for &r in &subset {
                    *need.entry(rows[r]).or_insert(0) += 1;
                }
                for (pair, n) in need {
                    prop_assert!(kept.get(&pair).copied().unwrap_or(0) >= n, "subset {:?} not kept", subset);
                }
            }
        }
    }
}

#[test]
fn k_core_iterates_until_stable() {
    // Item 3 has one rating; removing it leaves user 2 with one rating,
    // which then leaves item 2 with one: only users 1 and 3 survive.
    let r = ratings(&[
        (1, 1, 4.0, 0),
        (1, 2, 4.0, 1),
        (2, 2, 4.0, 2),
        (2, 3, 4.0, 3),
        (3, 1, 4.0, 4),
        (3, 4, 4.0, 5),
        (1, 4, 4.0, 6),
    ]);
    let filter = FilterConfig {
        min_user_interactions: 2,
        min_item_interactions: 2,
        ..FilterConfig::default()
    };
    let (d, report) = build_dataset_with_report(&r, &filter).unwrap();
    assert_eq!(raw_sequences(&d), vec![(1, vec![1, 4]), (3, vec![1, 4])]);
    assert_eq!(report.dropped_by_k_core, 3);
    assert!(report.k_core_passes >= 3, "{report:?}");
}

#[test]
fn vocab_round_trip_and_lookups() {
    let ids = |v: &[i64]| v.iter().map(|&i| RawId::Int(i)).collect::<Vec<_>>();
    let vocab = Vocab::from_raw_ids(
        &ids(&[296, 1, 4993]),
        &[RawId::from("ann"), RawId::from("bob")],
    )
    .unwrap();
    assert_eq!(vocab.num_items(), 3);
    assert_eq!(vocab.index(&RawId::Int(4993)), Some(3));
    assert_eq!(vocab.index(&RawId::Int(2)), None);
    assert_eq!(vocab.index(&RawId::from("4993")), None, "kinds never mix");
    assert_eq!(vocab.raw(1), Some(RawId::Int(296)));
    assert_eq!(vocab.raw(0), None, "0 is padding");
    assert_eq!(vocab.raw(4), None);
    for i in 1..=3 {
        assert_eq!(vocab.index(&vocab.raw(i).unwrap()), Some(i));
    }
    assert_eq!(vocab.user_index(&RawId::from("bob")), Some(1));
    assert_eq!(vocab.user_raw(0), Some(RawId::from("ann")));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vocab.json");
    vocab.save(&path).unwrap();
    assert_eq!(Vocab::load(&path).unwrap(), vocab);
    // Integer ids are JSON numbers, string ids JSON strings.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["items"], serde_json::json!([296, 1, 4993]));
    assert_eq!(json["users"], serde_json::json!(["ann", "bob"]));
    // A vocab.json from before users were kept still loads, and matches.
    std::fs::write(&path, br#"{"kind":"sasrec-vocab","items":[296,1,4993]}"#).unwrap();
    let old = Vocab::load(&path).unwrap();
    assert_eq!(old.num_users(), 0);
    assert!(vocab.matches_saved(&old));
    assert!(!old.matches_saved(&vocab));

    assert!(Vocab::from_raw_ids(&ids(&[1, 2, 1]), &[]).is_err());
    assert!(Vocab::from_raw_ids(&[RawId::Int(1), RawId::from("a")], &[]).is_err());
    std::fs::write(&path, br#"{"kind":"something-else","items":[1]}"#).unwrap();
    let err = Vocab::load(&path).unwrap_err().to_string();
    assert!(err.contains("vocab.json") && err.contains("kind"), "{err}");
    std::fs::write(&path, b"[1,2,3]").unwrap();
    assert!(
        Vocab::load(&path)
            .unwrap_err()
            .to_string()
            .contains("vocab.json")
    );
}

/// A dataset of users with the given lengths; items are arbitrary indices.
fn dataset_of(lens: &[usize]) -> Dataset {
    let users = lens
        .iter()
        .enumerate()
        .map(|(u, &n)| {
            seq(
                u as u32 + 1,
                &(1..=n as u32)
                    .map(|k| k * 10 + u as u32)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let times = lens.iter().map(|&n| (0..n as i64).collect()).collect();
    Dataset {
        vocab: Vocab::default(),
        users,
        times,
    }
}

/// A dataset whose user `u` has items 1..=n at the given times (sorted here).
fn timed_dataset(times: &[Vec<i64>]) -> Dataset {
    let times: Vec<Vec<i64>> = times
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.sort_unstable();
            t
        })
        .collect();
    let users = times
        .iter()
        .enumerate()
        .map(|(u, t)| seq(u as u32, &(1..=t.len() as u32).collect::<Vec<_>>()))
        .collect();
    Dataset {
        vocab: Vocab::default(),
        users,
        times,
    }
}

fn temporal(valid: i64, test: i64) -> SplitKind {
    SplitKind::Temporal {
        valid: TimeCut::At(valid),
        test: TimeCut::At(test),
        targets: TemporalTargets::First,
    }
}

#[test]
fn temporal_split_example() {
    // Cuts at 10 and 20. Item k of a user is its k-th interaction.
    let d = timed_dataset(&[
        vec![1, 2, 3, 10, 11, 20, 25], // trains on 1..=3, validates on 4, tests on 6
        vec![5, 15],                   // one item before 10: no training; validates on 2
        vec![12, 13, 21],              // nothing before 10: only a test target (3 after 1, 2)
        vec![1, 2],                    // trains on both; nothing to evaluate
        vec![30, 31],                  // all after the test cut: no history, dropped
    ]);
    let s = split(&d, temporal(10, 20)).unwrap();
    assert_eq!(s.cuts, Some((10, 20)));
    let items = |p: &[UserSequence]| -> Vec<(u32, Vec<u32>)> {
        p.iter().map(|u| (u.user, u.items.clone())).collect()
    };
    assert_eq!(items(&s.train), [(0, vec![1, 2, 3]), (3, vec![1, 2])]);
    assert_eq!(items(&s.valid), [(0, vec![1, 2, 3, 4]), (1, vec![1, 2])]);
    assert_eq!(
        items(&s.test),
        [(0, vec![1, 2, 3, 4, 5, 6]), (2, vec![1, 2, 3])]
    );
    assert_eq!(s.too_short_for_train, 3);
    // User 2 in the validation window and user 4 in the test window had no history.
    assert_eq!(s.too_short_for_eval, 2);

    // A cut exactly at an interaction's time puts it in the later window.
    let s = split(&d, temporal(11, 20)).unwrap();
    assert_eq!(items(&s.valid)[0], (0, vec![1, 2, 3, 4, 5]));
}

#[test]
fn temporal_cuts_as_fractions_and_bad_cuts() {
    // Times span 0..=100: fractions 0.5 and 0.8 cut at 50 and 80.
    let d = timed_dataset(&[vec![0, 40, 60, 90], vec![10, 100]]);
    let kind = SplitKind::Temporal {
        valid: TimeCut::Fraction(0.5),
        test: TimeCut::Fraction(0.8),
        targets: TemporalTargets::First,
    };
    let s = split(&d, kind).unwrap();
    assert_eq!(s.cuts, Some((50, 80)));
    assert_eq!(s.valid[0].items, [1, 2, 3]);
    assert_eq!(s.test.len(), 2);

    for (kind, message) in [
        (temporal(20, 20), "is not before the test cut"),
        (temporal(30, 20), "is not before the test cut"),
        (
            SplitKind::Temporal {
                valid: TimeCut::Fraction(0.0),
                test: TimeCut::Fraction(0.5),
                targets: TemporalTargets::First,
            },
            "time fraction 0 is not in (0, 1)",
        ),
    ] {
        let err = split(&d, kind).unwrap_err().to_string();
        assert!(err.contains(message), "{err}");
    }
}

#[test]
fn cut_times_parse_like_a_time_column() {
    let day = 86_400_000_000;
    assert_eq!(parse_time("1970-01-02", TimeUnit::S).unwrap(), day);
    assert_eq!(
        parse_time("1970-01-02T00:00:00Z", TimeUnit::S).unwrap(),
        day
    );
    assert_eq!(
        parse_time("1970-01-02T01:00:00+01:00", TimeUnit::S).unwrap(),
        day
    );
    assert_eq!(parse_time("86400", TimeUnit::S).unwrap(), day);
    assert_eq!(parse_time("86400000", TimeUnit::Ms).unwrap(), day);
    assert_eq!(parse_time(" 1.5 ", TimeUnit::S).unwrap(), 1_500_000);
    for bad in ["yesterday", "2018-13-01", "", "1e999"] {
        let err = parse_time(bad, TimeUnit::S).unwrap_err().to_string();
        assert!(err.contains("is not a time"), "{bad}: {err}");
    }
}

proptest! {
    #[test]
    fn temporal_split_never_shows_a_model_the_future(
        times in prop::collection::vec(prop::collection::vec(0i64..100, 0..12), 0..30),
        valid in 1i64..99,
        gap in 1i64..50,
    ) {
        let test = valid + gap;
        let d = timed_dataset(&times);
        let s = split(&d, temporal(valid, test)).unwrap();
        let time = |user: u32, item: u32| d.times[user as usize][item as usize - 1];
        // Training sees nothing at or after the validation cut.
        for u in &s.train {
            prop_assert!(u.items.len() >= 2);
            prop_assert!(u.items.iter().all(|&i| time(u.user, i) < valid));
        }
        prop_assert_eq!(s.train.len() + s.too_short_for_train, times.len());
        // A target is the user's first interaction in its window; its
        // history holds everything before the cut and nothing after.
        for (part, from, to) in [(&s.valid, valid, test), (&s.test, test, i64::MAX)] {
            for u in part {
                let (&target, history) = u.items.split_last().unwrap();
                prop_assert!(!history.is_empty());
                let t = time(u.user, target);
                prop_assert!(from <= t && t < to);
                prop_assert!(history.iter().all(|&i| time(u.user, i) < from));
                let before = d.times[u.user as usize].iter().filter(|&&t| t < from).count();
                prop_assert_eq!(history.len(), before);
            }
        }
        // Every user with an interaction in a window is evaluated or counted.
        let in_window = |from: i64, to: i64| {
            times.iter().filter(|t| t.iter().any(|&x| from <= x && x < to)).count()
        };
        prop_assert_eq!(
            s.valid.len() + s.test.len() + s.too_short_for_eval,
            in_window(valid, test) + in_window(test, i64::MAX)
        );
    }

    #[test]
    fn leave_one_out_holds_out_the_last_two(lens in prop::collection::vec(1usize..8, 0..40)) {
        let d = dataset_of(&lens);
        let s = split(&d, SplitKind::LeaveOneOut).unwrap();
        let eval_users = lens.iter().filter(|&&n| n >= 3).count();
        prop_assert_eq!(s.valid.len(), eval_users);
        prop_assert_eq!(s.test.len(), eval_users);
        prop_assert_eq!(s.too_short_for_eval, lens.len() - eval_users);
        prop_assert_eq!(s.train.len() + s.too_short_for_train, lens.len());
        let by_user: HashMap<u32, &UserSequence> = d.users.iter().map(|u| (u.user, u)).collect();
        for t in &s.test {
            prop_assert_eq!(t, by_user[&t.user]);
        }
        for v in &s.valid {
            let full = &by_user[&v.user].items;
            prop_assert_eq!(&v.items[..], &full[..full.len() - 1]);
        }
        for t in &s.train {
            let full = &by_user[&t.user].items;
            prop_assert!(t.items.len() >= 2);
            // Evaluated users train without their last two items; others train on all.
            let expect = if full.len() >= 3 { full.len() - 2 } else { full.len() };
            prop_assert_eq!(&t.items[..], &full[..expect]);
        }
    }

    #[test]
    fn random_users_partition_the_users(lens in prop::collection::vec(1usize..5, 0..60), seed in 0u64..1000, frac in 0.0f64..0.9) {
        let d = dataset_of(&lens);
        let kind = SplitKind::RandomUsers { valid_fraction: frac, seed };
        let s = split(&d, kind).unwrap();
        prop_assert_eq!(&s, &split(&d, kind).unwrap(), "same seed, same split");
        prop_assert!(s.test.is_empty());
        let held_out = (lens.len() as f64 * frac).ceil() as usize;
        prop_assert_eq!(s.valid.len() + s.too_short_for_eval, held_out);
        prop_assert_eq!(s.train.len() + s.too_short_for_train, lens.len() - held_out);
        let mut seen: Vec<u32> = s.train.iter().chain(&s.valid).map(|u| u.user).collect();
        let total = seen.len();
        seen.sort_unstable();
        seen.dedup();
        prop_assert_eq!(seen.len(), total, "no user in both parts");
        for u in s.train.iter().chain(&s.valid) {
            prop_assert_eq!(u, &d.users[u.user as usize - 1], "whole sequences");
        }
    }
}

#[test]
fn random_users_follow_the_seed() {
    let d = dataset_of(&[3; 100]);
    let valid_users = |seed| {
        let s = split(
            &d,
            SplitKind::RandomUsers {
                valid_fraction: 0.1,
                seed,
            },
        )
        .unwrap();
        s.valid.iter().map(|u| u.user).collect::<Vec<_>>()
    };
    assert_eq!(valid_users(42).len(), 10);
    assert_ne!(valid_users(42), valid_users(43));
    for bad in [1.0, 2.0, -0.5, f64::NAN] {
        let kind = SplitKind::RandomUsers {
            valid_fraction: bad,
            seed: 0,
        };
        let err = split(&d, kind).unwrap_err().to_string();
        assert!(err.contains("validation fraction"), "{err}");
    }
}

/// The window built the obvious way: pad on the left, then keep the last max_len + 1.
fn reference_window(items: &[u32], max_len: usize) -> (Vec<u32>, Vec<u32>) {
    let mut w = vec![0; max_len + 1];
    w.extend_from_slice(items);
    let w = &w[w.len() - (max_len + 1)..];
    (w[..max_len].to_vec(), w[1..].to_vec())
}

proptest! {
    #[test]
    fn window_pads_left_truncates_old_and_shifts(items in prop::collection::vec(1u32..1000, 0..30), max_len in 1usize..12) {
        let (input, target) = window(&items, max_len);
        prop_assert_eq!((input.len(), target.len()), (max_len, max_len));
        prop_assert_eq!((input.clone(), target.clone()), reference_window(&items, max_len));
        prop_assert_eq!(&input[1..], &target[..max_len - 1], "target is input shifted by one");
        if let Some(&last) = items.last() {
            prop_assert_eq!(target[max_len - 1], last);
        }
    }
}

#[test]
fn window_examples() {
    assert_eq!(window(&[5, 6, 7], 4), (vec![0, 0, 5, 6], vec![0, 5, 6, 7]));
    assert_eq!(
        window(&[1, 2, 3, 4, 5, 6], 3),
        (vec![3, 4, 5], vec![4, 5, 6])
    );
    assert_eq!(window(&[9], 2), (vec![0, 0], vec![0, 9]));
}

fn sequences(n: u32) -> Vec<UserSequence> {
    (1..=n)
        .map(|u| seq(u, &(0..u).map(|k| 100 * u + k).collect::<Vec<_>>()))
        .collect()
}

#[test]
fn batches_cover_every_sequence_once_and_keep_the_last_partial_batch() {
    let seqs = sequences(10);
    let all: Vec<Batch> = batches(&seqs, 3, 4, Order::Sequential, false).collect();
    assert_eq!(
        all.iter().map(|b| b.batch_size).collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
    assert_eq!(batches(&seqs, 3, 4, Order::Sequential, false).len(), 3);
    let users: Vec<u32> = all.iter().flat_map(|b| b.users.clone()).collect();
    assert_eq!(users, (1..=10).collect::<Vec<_>>());
    for b in &all {
        assert_eq!(b.max_len, 3);
        assert_eq!(b.inputs.len(), b.batch_size * 3);
        assert_eq!(b.targets.len(), b.batch_size * 3);
        for (row, &user) in b.users.iter().enumerate() {
            let (input, target) = window(&seqs[user as usize - 1].items, 3);
            assert_eq!(&b.inputs[row * 3..row * 3 + 3], &input[..]);
            assert_eq!(&b.targets[row * 3..row * 3 + 3], &target[..]);
        }
    }
}

#[test]
fn shuffled_order_is_a_function_of_seed_and_epoch() {
    let seqs = sequences(50);
    let order = |seed, epoch| -> Vec<u32> {
        batches(&seqs, 5, 8, Order::Shuffled { seed, epoch }, false)
            .flat_map(|b| b.users)
            .collect()
    };
    let first = order(7, 0);
    assert_eq!(first, order(7, 0), "a resumed run replays the epoch");
    assert_ne!(first, order(7, 1), "each epoch has its own order");
    assert_ne!(first, order(8, 0));
    assert_ne!(first, (1..=50).collect::<Vec<_>>());
    let mut sorted = first.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=50).collect::<Vec<_>>(), "a permutation");
    // Resuming at batch 3 of the epoch gives the rest of the same batches.
    let all: Vec<Batch> =
        batches(&seqs, 5, 8, Order::Shuffled { seed: 7, epoch: 0 }, false).collect();
    let resumed: Vec<Batch> = batches(&seqs, 5, 8, Order::Shuffled { seed: 7, epoch: 0 }, false)
        .skip(3)
        .collect();
    assert_eq!(resumed, all[3..]);
    let mut it = batches(&seqs, 5, 8, Order::Sequential, false);
    assert_eq!(it.nth(6).unwrap().batch_size, 2, "the last, partial batch");
    assert!(it.next().is_none());
    assert!(
        batches(&seqs, 5, 8, Order::Sequential, false)
            .nth(7)
            .is_none()
    );
    let perm = permutation(50, 7, 0);
    assert_eq!(
        first,
        perm.iter().map(|&i| i as u32 + 1).collect::<Vec<_>>()
    );
}

#[test]
fn last_target_only_keeps_just_the_final_target() {
    // Leave-one-out validation: history [3, 4, 5] + held-out item 6.
    let seqs = vec![seq(1, &[3, 4, 5, 6]), seq(2, &[8, 9])];
    let b = batches(&seqs, 4, 2, Order::Sequential, true)
        .next()
        .unwrap();
    assert_eq!(b.inputs, vec![0, 3, 4, 5, 0, 0, 0, 8]);
    assert_eq!(b.targets, vec![0, 0, 0, 6, 0, 0, 0, 9]);
}

/// With target flags, leave-one-out holds out the last two targets (each
/// after every event before it), a training sequence ends at its last
/// target, and a training window's non-target positions get target 0.
#[test]
fn target_flags_shape_the_split_and_the_batches() {
    // Items 1..=7; targets (purchases) at positions 2, 4 and 6.
    let user = UserSequence {
        user: 0,
        items: vec![1, 2, 3, 4, 5, 6, 7],
        is_target: Some(vec![false, false, true, false, true, false, true]),
    };
    let dataset = Dataset {
        vocab: Vocab::default(),
        users: vec![user.clone()],
        times: vec![(0..7).collect()],
    };
    let s = split(&dataset, SplitKind::LeaveOneOut).unwrap();
    assert_eq!(s.test, vec![user.prefix(7)]);
    assert_eq!(s.valid, vec![user.prefix(5)]);
    assert_eq!(s.train, vec![user.prefix(3)]);
    let batch = batches(&s.train, 4, 1, Order::Sequential, false)
        .next()
        .unwrap();
    // Window [pad, 1, 2, 3]: targets 1 -> 2 (no target), 2 -> 3 (target).
    assert_eq!(batch.inputs, vec![0, 0, 1, 2]);
    assert_eq!(batch.targets, vec![0, 0, 0, 3]);
    // A user with a single target trains on it; none: nothing to train on.
    let one = UserSequence {
        is_target: Some(vec![false, true, false]),
        ..UserSequence::new(1, vec![1, 2, 3])
    };
    let none = UserSequence {
        is_target: Some(vec![true, false, false]),
        ..UserSequence::new(2, vec![1, 2, 3])
    };
    let dataset = Dataset {
        vocab: Vocab::default(),
        users: vec![one.clone(), none],
        times: vec![vec![0, 1, 2], vec![0, 1, 2]],
    };
    let s = split(&dataset, SplitKind::LeaveOneOut).unwrap();
    assert_eq!(s.train, vec![one.prefix(2)]);
    assert_eq!((s.too_short_for_train, s.too_short_for_eval), (1, 2));
    // Temporal, all targets in the window: each after everything before it.
    let kind = SplitKind::Temporal {
        valid: TimeCut::At(1),
        test: TimeCut::At(5),
        targets: TemporalTargets::All,
    };
    let dataset = Dataset {
        vocab: Vocab::default(),
        users: vec![user.clone()],
        times: vec![(0..7).collect()],
    };
    let s = split(&dataset, kind).unwrap();
    assert_eq!(s.valid, vec![user.prefix(3), user.prefix(5)]);
    assert_eq!(s.test, vec![user.prefix(7)]);
}
