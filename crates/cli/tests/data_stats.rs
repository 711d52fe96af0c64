//! `sasrec data stats` as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn sasrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sasrec"))
        .args(args)
        .output()
        .expect("run sasrec")
}

/// The latest-small ratings file, or `None` when the test should skip.
fn latest_small_ratings() -> Option<PathBuf> {
    sasrec_data::test_dataset(sasrec_data::KnownDataset::LatestSmall)
}

#[test]
fn stats_of_latest_small() {
    let Some(ratings) = latest_small_ratings() else {
        return;
    };
    let out = sasrec(&["data", "stats", "--ratings", ratings.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("users         610\n"), "{stdout}");
    assert!(stdout.contains("items         9,724\n"), "{stdout}");
    assert!(stdout.contains("interactions  100,836\n"), "{stdout}");
    assert!(stdout.contains("history       min 20,"), "{stdout}");
    assert!(
        stdout.contains("leave-one-out train 610 users, valid 610, test 610;"),
        "{stdout}"
    );
}

#[test]
fn stats_with_filters() {
    let Some(ratings) = latest_small_ratings() else {
        return;
    };
    let out = sasrec(&[
        "data",
        "stats",
        "--ratings",
        ratings.to_str().unwrap(),
        "--user-fraction",
        "0.1",
        "--sample-seed",
        "42",
        "--min-rating",
        "3.5",
        "--min-item-interactions",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .contains("0.1 of users (seed 42); rating >= 3.5; dedup consecutive; users with >= 0 and items with >= 2"),
        "{stdout}"
    );
    let users: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("users"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a users line");
    assert!(users <= 61, "{stdout}");
}

#[test]
fn bad_file_fails_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratings.csv");
    std::fs::write(
        &path,
        "userId,movieId,rating,timestamp\n1,2,3.5,100\n1,x,4,200\n",
    )
    .unwrap();
    let out = sasrec(&["data", "stats", "--ratings", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}: line 3: field `movieId`", path.display())),
        "{stderr}"
    );
}

#[test]
fn explicit_format_and_missing_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratings.txt");
    std::fs::write(&path, "1::10::5::100\n1::11::4::200\n2::10::3::300\n").unwrap();
    let out = sasrec(&[
        "data",
        "stats",
        "--ratings",
        path.to_str().unwrap(),
        "--format",
        "dat",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("users         2\n") && stdout.contains("items         2\n"),
        "{stdout}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_sasrec"))
        .args(["data", "stats", "--dataset", "1m"])
        .env("SASREC_DATASETS", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cargo xtask data fetch 1m"), "{stderr}");
}
