//! Own logs through the binary: string user and item ids, CSV / RecBole
//! .inter / Parquet files and folders, item names from any table. The same
//! interactions in every format train to the same losses, and the same bad
//! ids and headers are refused in every format.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{Field, Schema};
use common::{SMALL, assert_error, sasrec};

/// The data crate's fixtures (scripts/write_parquet_fixtures.py): 40 users
/// `U001x`.. walking 30 items `B0101Q`.. in cycles.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/tests/fixtures")
        .join(name)
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Trains the small model for `epochs` on `log` (more flags in `extra`).
fn train(log: &Path, run: &Path, epochs: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--ratings",
        log.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        epochs,
    ];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(extra);
    sasrec(&args)
}

/// Each epoch's training loss and validation numbers (not its timings).
fn losses(run: &Path) -> Vec<(f64, serde_json::Value)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (v["train_loss"].as_f64().unwrap(), v["valid"].clone())
        })
        .collect()
}

#[test]
fn csv_inter_and_parquet_train_to_the_same_losses() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for name in [
        "interactions.csv",
        "interactions.inter",
        "interactions.parquet",
        "parts",
    ] {
        let run = dir.path().join(name.replace('.', "_"));
        ok(&train(&fixture(name), &run, "2", &[]));
        runs.push((name, losses(&run)));
    }
    let (_, first) = &runs[0];
    assert_eq!(first.len(), 2);
    for (name, other) in &runs[1..] {
        assert_eq!(other, first, "{name} trains differently from the CSV");
    }
    // vocab.json keeps string ids as strings.
    let vocab: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("interactions_csv/vocab.json")).unwrap(),
    )
    .unwrap();
    assert!(vocab["items"][0].as_str().unwrap().starts_with("B0"));
    assert!(vocab["users"][0].as_str().unwrap().starts_with('U'));
}

#[test]
fn string_ids_train_eval_recommend_with_item_names() {
    let dir = tempfile::tempdir().unwrap();
    // The Parquet log under other column names, as a user's own log would be.
    let log = dir.path().join("events.csv");
    let csv = std::fs::read_to_string(fixture("interactions.csv")).unwrap();
    let csv = csv.replacen(
        "user_id,item_id,rating,timestamp",
        "visitor,product,stars,ts",
        1,
    );
    std::fs::write(&log, csv).unwrap();
    let run = dir.path().join("run");
    let named = [
        "--user-col",
        "visitor",
        "--item-col",
        "product",
        "--time-col",
        "ts",
    ];
    let stdout = ok(&train(&log, &run, "3", &named));
    assert!(stdout.contains("test popular"), "{stdout}");
    let out = sasrec(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ]);
    let json: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(json["model"]["ranking"]["users"], 40);

    // U005x walked items 101 + (15 + i) % 30: recommendations are other items, named.
    let names = fixture("names.parquet");
    let out = sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--user",
        "U005x",
        "--k",
        "5",
        "--item-names",
        names.to_str().unwrap(),
        "--item-names-id-col",
        "item_id",
        "--device",
        "cpu",
    ]);
    let stdout = ok(&out);
    assert!(
        stdout.contains("after user U005x (13 interactions)"),
        "{stdout}"
    );
    let seen: Vec<String> = (0..13)
        .map(|i| format!("B0{}Q", 101 + (15 + i) % 30))
        .collect();
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with(" rank"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 5, "{stdout}");
    for row in rows {
        let item = row.split_whitespace().nth(1).unwrap();
        assert!(
            item.starts_with("B0") && !seen.contains(&item.to_string()),
            "{row}"
        );
        assert!(
            row.ends_with(&format!("Film {}, The (1999)", &item[2..5])),
            "no name in {row:?}"
        );
    }

    // --items takes raw string ids. The names table's id column defaults to
    // the run's item column; an error lists this table's columns.
    let names = fixture("names.csv");
    let items = [
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--items",
        "B0101Q,B0102Q",
    ];
    let with_names = [&items[..], &["--item-names", names.to_str().unwrap()]].concat();
    let out = sasrec(&with_names);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "names.csv: line 1: no item id column `product` (the header has \"item_id\", \"title\""
        ),
        "{stderr}"
    );
    let out = sasrec(&[&with_names[..], &["--item-names-id-col", "item_id"]].concat());
    assert!(ok(&out).contains("B0102Q  Film 102, The (1999)"));
    let out = sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--items",
        "B0101Q,nope",
        "--device",
        "cpu",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("unknown items (left out of the history): nope"),
        "{stdout}"
    );
    let out = sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--user",
        "U999x",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("user U999x is not in"), "{stderr}");
}

#[test]
fn data_stats_says_what_it_detected() {
    let stdout = ok(&sasrec(&[
        "data",
        "stats",
        "--ratings",
        fixture("interactions_dict.parquet").to_str().unwrap(),
    ]));
    assert!(
        stdout.contains("ratings       ") && stdout.contains("(440 rows"),
        "{stdout}"
    );
    assert!(
        stdout.contains("format        parquet; columns user `user_id`, item `item_id`, time `timestamp`, rating `rating`, no event type"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ids           users strings (40), items strings (30)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("time          Parquet timestamps (Millisecond, UTC); 2020-09-"),
        "{stdout}"
    );
    assert!(stdout.contains("users         40\n"), "{stdout}");

    // A null id names the file, row group, row and column.
    let out = sasrec(&[
        "data",
        "stats",
        "--ratings",
        fixture("null_id.parquet").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("row group 1, row 7: field `user_id` is null"),
        "{stderr}"
    );
    // --min-rating without a rating column.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("clicks.csv");
    std::fs::write(
        &log,
        "user,item,time\na,x,2024-01-01T10:00:00\na,y,2024-01-01T10:05:00\n",
    )
    .unwrap();
    let out = sasrec(&[
        "data",
        "stats",
        "--ratings",
        log.to_str().unwrap(),
        "--min-rating",
        "4",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a rating column"), "{stderr}");
    let stdout = ok(&sasrec(&[
        "data",
        "stats",
        "--ratings",
        log.to_str().unwrap(),
    ]));
    assert!(
        stdout.contains("time          ISO 8601 date-times without zone (read as UTC); 2024-01-01 10:00:00 UTC to 2024-01-01 10:05:00 UTC"),
        "{stdout}"
    );
}

/// A Parquet file of these columns (no nulls).
fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), false))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, array)| array).collect(),
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn stats(log: &Path) -> Output {
    sasrec(&["data", "stats", "--ratings", log.to_str().unwrap()])
}

#[test]
fn bad_ids_and_headers_are_refused_in_every_format_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    // A NUL byte inside an id far past the first bytes of the file.
    let mut csv = String::from("user_id,item_id,timestamp\n");
    for row in 0..2000 {
        csv.push_str(&format!("u{},i{},{row}\n", row % 50, row % 30));
    }
    csv.push_str("u1,i\0x,99999\n");
    std::fs::write(path("nul.csv"), csv).unwrap();
    assert_error(
        &stats(&path("nul.csv")),
        "nul.csv: line 2002: field `item_id`: an id holding a NUL byte",
    );

    // Negative integer ids: text (any columns) and Parquet alike.
    std::fs::write(path("negative.csv"), "user,item,time\n1,5,1\n2,-5,2\n").unwrap();
    assert_error(
        &stats(&path("negative.csv")),
        "negative.csv: line 3: field `item`: a negative id (integer ids must be non-negative), found \"-5\"",
    );
    let ints = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
    write_parquet(
        &path("negative.parquet"),
        vec![
            ("userId", ints(vec![1, 2, 3])),
            ("movieId", ints(vec![10, 11, -3])),
            ("timestamp", ints(vec![1, 2, 3])),
        ],
    );
    assert_error(
        &stats(&path("negative.parquet")),
        "negative.parquet: row group 0, row 2: field `movieId`: a negative id (integer ids must be non-negative), found \"-3\"",
    );

    // An id past the longest accepted, in text and in Parquet.
    let long = "B".repeat(2000);
    std::fs::write(path("long.csv"), format!("user,item,time\na,{long},1\n")).unwrap();
    assert_error(
        &stats(&path("long.csv")),
        "long.csv: line 2: field `item`: an id longer than 1024 bytes",
    );
    let strings = |v: Vec<&str>| Arc::new(StringArray::from(v)) as ArrayRef;
    write_parquet(
        &path("long.parquet"),
        vec![
            ("user", strings(vec!["a", "b"])),
            ("item", strings(vec!["x", &long])),
            ("time", ints(vec![1, 2])),
        ],
    );
    assert_error(
        &stats(&path("long.parquet")),
        "long.parquet: row group 0, row 1: field `item`: an id longer than 1024 bytes",
    );

    // A column named twice: which one is meant would be a guess.
    std::fs::write(
        path("twice.csv"),
        "userId,movieId,userId,timestamp\n1,2,3,4\n",
    )
    .unwrap();
    assert_error(
        &stats(&path("twice.csv")),
        "twice.csv: line 1: the header names column `userId` twice (columns 1 and 3); rename one",
    );
    write_parquet(
        &path("twice.parquet"),
        vec![
            ("user", strings(vec!["a"])),
            ("item", strings(vec!["x"])),
            ("item", strings(vec!["y"])),
            ("time", ints(vec![1])),
        ],
    );
    assert_error(
        &stats(&path("twice.parquet")),
        "twice.parquet: the schema names column `item` twice (columns 2 and 3)",
    );
}
