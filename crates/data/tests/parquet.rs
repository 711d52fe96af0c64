//! Parquet logs as pyarrow writes them (fixtures from
//! scripts/write_parquet_fixtures.py): the same interactions through every
//! shape give the same dataset, and bad files give clear errors.

use std::path::{Path, PathBuf};

use sasrec_data::{
    Dataset, FilterConfig, Format, IdKind, InputSpec, Interactions, RawId, TimeFormat, TimeUnit,
    build_dataset, read_interactions, read_item_names,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Interactions {
    read_interactions(&fixture(name), &InputSpec::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn dataset(name: &str) -> Dataset {
    build_dataset(&read(name), &FilterConfig::default()).unwrap()
}

/// Rows with raw ids, ratings and times, in file order.
fn rows(r: &Interactions) -> Vec<(RawId, RawId, Option<f32>, i64)> {
    (0..r.len())
        .map(|i| {
            (
                r.users.get(r.user[i]).unwrap(),
                r.items.get(r.item[i]).unwrap(),
                r.rating.as_ref().map(|v| v[i]),
                r.time[i],
            )
        })
        .collect()
}

#[test]
fn every_shape_of_the_log_reads_the_same() {
    let csv = read("interactions.csv");
    assert_eq!(csv.len(), 440);
    assert_eq!(csv.users.kind(), IdKind::Str);
    for name in [
        "interactions.inter",
        "interactions.parquet",
        "interactions_dict.parquet",
        "parts",
    ] {
        let other = read(name);
        assert_eq!(rows(&other), rows(&csv), "{name}");
        assert_eq!(other.users, csv.users, "{name}: codes by first appearance");
        assert_eq!(dataset(name), dataset("interactions.csv"), "{name}");
    }
    assert_eq!(
        dataset("interactions_int.parquet"),
        dataset("interactions_int.csv")
    );
    let ints = read("interactions_int.parquet");
    assert_eq!(
        (ints.users.kind(), ints.items.kind()),
        (IdKind::Int, IdKind::Int)
    );
}

#[test]
fn what_the_reader_detected() {
    let p = read("interactions.parquet");
    assert_eq!(p.source.format, Some(Format::Parquet));
    assert_eq!(p.source.columns.user, "user_id");
    assert_eq!(p.source.columns.rating.as_deref(), Some("rating"));
    assert_eq!(
        p.source.time_format,
        Some(TimeFormat::Number {
            unit: TimeUnit::S,
            decimals: false
        })
    );
    let d = read("interactions_dict.parquet");
    let format = d.source.time_format.unwrap().to_string();
    assert!(
        format.contains("timestamps") && format.contains("UTC"),
        "{format}"
    );
    assert_eq!(
        read("parts").source.files,
        3,
        "_SUCCESS and .crc files are not parts"
    );
}

#[test]
fn a_null_id_names_file_row_group_row_and_column() {
    let msg = read_interactions(&fixture("null_id.parquet"), &InputSpec::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("null_id.parquet: row group 1, row 7: field `user_id` is null"),
        "{msg}"
    );
}

#[test]
fn columns_are_found_by_name_or_listed() {
    let spec = InputSpec {
        user_col: Some("visitor".into()),
        ..InputSpec::default()
    };
    let msg = read_interactions(&fixture("interactions.parquet"), &spec)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no user column `visitor`")
            && msg.contains(r#""user_id", "item_id", "rating", "timestamp""#),
        "{msg}"
    );
    // Columns can be swapped at will: here items become users.
    let spec = InputSpec {
        user_col: Some("item_id".into()),
        item_col: Some("user_id".into()),
        ..InputSpec::default()
    };
    let swapped = read_interactions(&fixture("interactions.parquet"), &spec).unwrap();
    assert_eq!(swapped.users, read("interactions.parquet").items);
    // A time unit for typed timestamps is refused, not applied twice.
    let spec = InputSpec {
        time_unit: Some(TimeUnit::Ms),
        ..InputSpec::default()
    };
    let msg = read_interactions(&fixture("interactions_dict.parquet"), &spec)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("time unit"), "{msg}");
    // A column of the wrong type.
    let spec = InputSpec {
        rating_col: Some("item_id".into()),
        ..InputSpec::default()
    };
    let msg = read_interactions(&fixture("interactions.parquet"), &spec)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("column `item_id` has type Utf8; expected a numeric rating column"),
        "{msg}"
    );
}

#[test]
fn not_parquet_and_truncated_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let csv_named_parquet = dir.path().join("log.parquet");
    std::fs::copy(fixture("interactions.csv"), &csv_named_parquet).unwrap();
    let msg = read_interactions(&csv_named_parquet, &InputSpec::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("PAR1") && !msg.contains("U001x"), "{msg}");

    let bytes = std::fs::read(fixture("interactions.parquet")).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let msg = read_interactions(&cut, &InputSpec::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cut.parquet") && msg.len() < 400, "{msg}");

    // A Parquet file with an unknown extension is recognised by its bytes.
    let noext = dir.path().join("events");
    std::fs::write(&noext, &bytes).unwrap();
    assert_eq!(
        read_interactions(&noext, &InputSpec::default())
            .unwrap()
            .len(),
        440
    );

    let empty_dir = dir.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    std::fs::write(empty_dir.join("_SUCCESS"), b"").unwrap();
    let msg = read_interactions(&empty_dir, &InputSpec::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no *.parquet files"), "{msg}");
}

#[test]
fn item_names_from_parquet_and_csv() {
    for name in ["names.parquet", "names.csv"] {
        let names = read_item_names(&fixture(name), None, None, IdKind::Str).unwrap();
        assert_eq!(names.len(), 30, "{name}");
        assert_eq!(names[&RawId::from("B0101Q")], "Film 101, The (1999)");
    }
    let msg = read_item_names(&fixture("names.parquet"), None, Some("label"), IdKind::Str)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no name column `label`") && msg.contains(r#""item_id", "title""#),
        "{msg}"
    );
}

/// The fixture's parts copied into Hive partition folders (`day=.../`,
/// nested `region=...` in one), with Spark's `_SUCCESS` marker.
fn partitioned_copy_of_parts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut parts: Vec<PathBuf> = std::fs::read_dir(fixture("parts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    parts.sort();
    assert_eq!(parts.len(), 3);
    let folders = [
        "day=2024-01-01",
        "day=2024-01-02",
        "day=2024-01-03/region=eu",
    ];
    for (part, folder) in parts.iter().zip(folders) {
        let folder = dir.path().join(folder);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(part, folder.join(part.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();
    dir
}

#[test]
fn hive_partition_folders_read_like_one_folder_of_parts() {
    let dir = partitioned_copy_of_parts();
    let partitioned = read_interactions(dir.path(), &InputSpec::default()).unwrap();
    let flat = read("parts");
    assert_eq!(
        rows(&partitioned),
        rows(&flat),
        "same rows in the same order"
    );
    assert_eq!(partitioned.users, flat.users);
    assert_eq!(partitioned.source.files, 3);

    // A partition key named as a column: the error lists the file's
    // columns and says the keys are folder names, not columns.
    let spec = InputSpec {
        user_col: Some("day".into()),
        ..InputSpec::default()
    };
    let msg = read_interactions(dir.path(), &spec)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no user column `day`")
            && msg.contains(r#""user_id", "item_id""#)
            && msg.contains("the partition keys of the folder names (day) are not read as columns"),
        "{msg}"
    );

    // A folder that is not key=value is refused, named.
    std::fs::create_dir(dir.path().join("backup")).unwrap();
    let msg = read_interactions(dir.path(), &InputSpec::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(r#"holds the folder "backup", which is not a Hive partition (key=value)"#),
        "{msg}"
    );
}
