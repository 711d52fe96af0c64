//! Dataset names and the message for a missing dataset.

use std::path::Path;

use sasrec_data::{KnownDataset, dataset_ratings_path, datasets_dir};

#[test]
fn names_map_to_ratings_files() {
    let dir = Path::new("/data");
    let path = |name: &str| name.parse::<KnownDataset>().unwrap().ratings_path_in(dir);
    assert_eq!(
        path("latest-small"),
        dir.join("ml-latest-small/ratings.csv")
    );
    assert_eq!(path("100k"), dir.join("ml-100k/u.data"));
    assert_eq!(path("1m"), dir.join("ml-1m/ratings.dat"));
    assert_eq!(path("ml-10m"), dir.join("ml-10M100K/ratings.dat"));
    assert_eq!(path("20m"), dir.join("ml-20m/ratings.csv"));
    assert_eq!(path("25M"), dir.join("ml-25m/ratings.csv"));
    assert_eq!(path("32m"), dir.join("ml-32m/ratings.csv"));
    let err = "2m".parse::<KnownDataset>().unwrap_err().to_string();
    assert!(
        err.contains("\"2m\"") && err.contains("latest-small"),
        "{err}"
    );
}

/// The one test that sets SASREC_DATASETS (tests in one binary share the
/// environment, so no other test in this file reads it).
#[test]
fn missing_dataset_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: no other thread of this test binary reads the environment.
    unsafe { std::env::set_var("SASREC_DATASETS", dir.path()) };
    assert_eq!(datasets_dir(), dir.path());
    let err = dataset_ratings_path("1m").unwrap_err().to_string();
    assert!(err.contains("cargo xtask data fetch 1m"), "{err}");
    assert!(err.contains("SASREC_DATASETS"), "{err}");
    assert!(
        err.contains(&dir.path().join("ml-1m/ratings.dat").display().to_string()),
        "{err}"
    );

    std::fs::create_dir(dir.path().join("ml-1m")).unwrap();
    std::fs::write(dir.path().join("ml-1m/ratings.dat"), "1::2::3::4\n").unwrap();
    assert_eq!(
        dataset_ratings_path("1m").unwrap(),
        dir.path().join("ml-1m/ratings.dat")
    );

    unsafe { std::env::remove_var("SASREC_DATASETS") };
    assert_eq!(datasets_dir(), Path::new("datasets"));
}
