//! The real MovieLens latest-small, found through SASREC_DATASETS (else the
//! source tree's datasets/).
//!
//! Skips (with the reason printed) when the dataset is not there, unless
//! SASREC_REQUIRE_DATA=1, when it fails instead.

use std::path::PathBuf;

use sasrec_data::*;

/// The dataset's folder, or `None` when the test should skip.
fn latest_small() -> Option<PathBuf> {
    test_dataset(KnownDataset::LatestSmall).and_then(|p| p.parent().map(PathBuf::from))
}

#[test]
fn latest_small_counts() {
    let Some(dir) = latest_small() else { return };
    let ratings = read_interactions(&dir.join("ratings.csv"), &InputSpec::default()).unwrap();
    assert_eq!(ratings.len(), 100_836);
    let dataset = build_dataset(&ratings, &FilterConfig::default()).unwrap();
    let stats = dataset.stats();
    assert_eq!(
        (stats.users, stats.items, stats.interactions),
        (610, 9_724, 100_836)
    );
    assert_eq!(stats.min_len, 20, "every user rated at least 20 movies");
    // Raw ids round-trip through the vocabulary, and every item has a title.
    let titles = read_item_names(
        &dir.join("movies.csv"),
        Some("movieId"),
        Some("title"),
        IdKind::Int,
    )
    .unwrap();
    assert_eq!(titles.len(), 9_742);
    for index in 1..=dataset.vocab.num_items() as u32 {
        let raw = dataset.vocab.raw(index).unwrap();
        assert_eq!(dataset.vocab.index(&raw), Some(index));
        assert!(titles.contains_key(&raw), "movie {raw} has no title");
    }
    assert_eq!(titles[&RawId::Int(1)], "Toy Story (1995)");
    assert_eq!(dataset.vocab.user_raw(0), Some(RawId::Int(1)));
    assert_eq!(dataset.vocab.num_users(), 610);

    let loo = split(&dataset, SplitKind::LeaveOneOut).unwrap();
    assert_eq!(
        (loo.train.len(), loo.valid.len(), loo.test.len()),
        (610, 610, 610)
    );
    assert_eq!(
        loo.train.iter().map(|u| u.items.len()).sum::<usize>(),
        100_836 - 2 * 610
    );

    // The notebook's preprocessing: 10% of the users, then 90/10 by user.
    let filter = FilterConfig {
        user_fraction: 0.1,
        sample_seed: 42,
        ..FilterConfig::default()
    };
    let sampled = build_dataset(&ratings, &filter).unwrap();
    assert_eq!(sampled.users.len(), 61);
    let s = split(
        &sampled,
        SplitKind::RandomUsers {
            valid_fraction: 0.1,
            seed: 42,
        },
    )
    .unwrap();
    assert_eq!((s.train.len(), s.valid.len()), (54, 7));
}

#[test]
fn named_dataset_resolves_through_sasrec_datasets() {
    if latest_small().is_none() {
        return;
    }
    let path = dataset_ratings_path("latest-small").unwrap();
    assert!(path.ends_with("ml-latest-small/ratings.csv"));
}
