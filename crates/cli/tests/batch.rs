//! Recommendations for many users into files, and exported vectors: what a
//! user checks after `sasrec recommend --all-users --out` and `sasrec
//! export`. The three file formats hold the same rows, seen items are left
//! out, ids keep their kind, and exact inner-product search over the
//! exported vectors gives `recommend`'s top-k. Outputs have one writer at a
//! time, killed writers' temporary files are cleared by the next, and an
//! export killed midway leaves the earlier export whole.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use common::{
    SASREC, assert_error, assert_killed_by, json, sasrec, temporary_files, text, train, trained_run,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sasrec_run::lock::RunLock;
use serde_json::Value;

/// One row of a recommendations file: user, item, rank, logit.
type Row = (Value, Value, i64, f32);

fn recommend_all(run: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    sasrec(&args)
}

/// `sasrec export --run RUN --out OUT --device cpu`.
fn export(run: &Path, out: &Path) -> std::process::Output {
    sasrec(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ])
}

/// Every batch of a Parquet file, and the file's column types.
fn parquet(path: &Path) -> (Vec<RecordBatch>, Vec<DataType>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let types = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let reader = builder.build().unwrap();
    (reader.map(Result::unwrap).collect(), types)
}

/// A Parquet id column's values as JSON (numbers or strings).
fn ids(column: &dyn Array) -> Vec<Value> {
    match column.data_type() {
        DataType::Int64 => column
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|&v| v.into())
            .collect(),
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap().into())
            .collect(),
        other => panic!("an id column of type {other}"),
    }
}

fn read_parquet_rows(path: &Path) -> Vec<Row> {
    let (batches, _) = parquet(path);
    let mut rows = Vec::new();
    for batch in batches {
        let users = ids(batch.column(0).as_ref());
        let items = ids(batch.column(1).as_ref());
        let ranks = batch
            .column(2)
            .as_primitive::<Int32Type>()
            .values()
            .to_vec();
        let logits = batch
            .column(3)
            .as_primitive::<Float32Type>()
            .values()
            .to_vec();
        for r in 0..batch.num_rows() {
            rows.push((
                users[r].clone(),
                items[r].clone(),
                ranks[r] as i64,
                logits[r],
            ));
        }
    }
    rows
}

fn read_csv_rows(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("user,item,rank,logit"));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let id = |s: &str| s.parse::<i64>().map_or(Value::from(s), Value::from);
            (
                id(f[0]),
                id(f[1]),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

fn read_jsonl_rows(path: &Path) -> Vec<Row> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let logit = v["logit"].as_f64().unwrap() as f32;
            (
                v["user"].clone(),
                v["item"].clone(),
                v["rank"].as_i64().unwrap(),
                logit,
            )
        })
        .collect()
}

/// Each user's items in `ratings.csv` (`userId,movieId,...`), as written.
fn histories(ratings: &Path) -> BTreeMap<i64, Vec<i64>> {
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for line in std::fs::read_to_string(ratings).unwrap().lines().skip(1) {
        let f: Vec<i64> = line
            .split(',')
            .take(2)
            .map(|s| s.trim().parse().unwrap())
            .collect();
        out.entry(f[0]).or_default().push(f[1]);
    }
    out
}

#[test]
fn all_users_into_parquet_csv_and_jsonl_the_same_rows_without_seen_items() {
    let (dir, ratings, run) = trained_run("3");
    let histories = histories(&ratings);
    let formats = ["parquet", "csv", "jsonl"];
    let mut tables = Vec::new();
    for ext in formats {
        let out = dir.path().join(format!("recs.{ext}"));
        let result = recommend_all(&run, &out, &["--all-users", "--k", "5"]);
        let (_, stderr) = text(&result);
        assert!(result.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "wrote 200 recommendations for 40 users to {}",
                out.display()
            )),
            "{stderr}"
        );
        tables.push(match ext {
            "parquet" => read_parquet_rows(&out),
            "csv" => read_csv_rows(&out),
            _ => read_jsonl_rows(&out),
        });
    }
    assert_eq!(tables[0], tables[1], "Parquet and CSV differ");
    assert_eq!(tables[0], tables[2], "Parquet and JSON Lines differ");
    assert!(temporary_files(dir.path()).is_empty());

    // Integer ids stay integers in the Parquet schema.
    let (_, types) = parquet(&dir.path().join("recs.parquet"));
    assert_eq!(
        types,
        [
            DataType::Int64,
            DataType::Int64,
            DataType::Int32,
            DataType::Float32
        ]
    );
    // Every user in the log's order, ranks 1..=5, best first, never a seen item.
    let rows = &tables[0];
    assert_eq!(rows.len(), 40 * 5);
    for (u, user_rows) in rows.chunks(5).enumerate() {
        let user = u as i64 + 1;
        let seen = &histories[&user];
        for (r, (row_user, item, rank, logit)) in user_rows.iter().enumerate() {
            assert_eq!((row_user, *rank), (&Value::from(user), r as i64 + 1));
            assert!(
                !seen.contains(&item.as_i64().unwrap()),
                "user {user}: seen {item}"
            );
            if r > 0 {
                assert!(*logit <= user_rows[r - 1].3, "user {user}: not best first");
            }
        }
    }
    // The same list as one user's `recommend --json`.
    let single = sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--user",
        "7",
        "--k",
        "5",
        "--json",
        "--device",
        "cpu",
    ]);
    let single: Value = serde_json::from_slice(&single.stdout).unwrap();
    for (row, want) in rows[30..35]
        .iter()
        .zip(single["recommendations"].as_array().unwrap())
    {
        assert_eq!(row.1, want["item"]);
        assert!((row.3 as f64 - want["logit"].as_f64().unwrap()).abs() < 1e-5);
    }

    // --keep-seen: all 30 movies for each user, the seen ones among them.
    let out = dir.path().join("all.csv");
    let result = recommend_all(&run, &out, &["--all-users", "--k", "30", "--keep-seen"]);
    assert!(result.status.success(), "{}", text(&result).1);
    let rows = read_csv_rows(&out);
    assert_eq!(rows.len(), 40 * 30);
    let user3: HashSet<i64> = rows
        .iter()
        .filter(|r| r.0 == 3)
        .map(|r| r.1.as_i64().unwrap())
        .collect();
    assert_eq!(user3, (101..=130).collect());
}

#[test]
fn bad_batch_requests_are_refused_and_leave_no_file() {
    let (dir, _, run) = trained_run("1");
    let out = dir.path().join("recs.txt");
    assert_error(&recommend_all(&run, &out, &["--all-users"]), "--out ");
    let users = dir.path().join("users.txt");
    std::fs::write(&users, "5\n999\n").unwrap();
    let out = dir.path().join("recs.parquet");
    let users_arg = ["--users-file", users.to_str().unwrap(), "--strict"];
    let line = assert_error(&recommend_all(&run, &out, &users_arg), "users.txt: line 2");
    assert!(line.contains("user 999 is not in"), "{line}");
    assert!(!out.exists());
    assert!(temporary_files(dir.path()).is_empty());
    std::fs::write(&users, "\n\n").unwrap();
    assert_error(&recommend_all(&run, &out, &users_arg), "lists no users");
    // A line far longer than an id is refused before it is read whole.
    std::fs::write(&users, format!("5\n{}\n", "7".repeat(20 << 20))).unwrap();
    assert_error(
        &recommend_all(&run, &out, &users_arg),
        "users.txt: line 2: field `id`: a line longer than an id may be (1024 bytes)",
    );
    assert!(!out.exists());
    // --all-users without --out, --json with --out: clap refuses (status 2).
    let run_arg = run.to_str().unwrap();
    let no_out = sasrec(&["recommend", "--run", run_arg, "--all-users"]);
    assert_eq!(no_out.status.code(), Some(2), "{}", text(&no_out).1);
    let both = recommend_all(&run, &out, &["--all-users", "--json"]);
    assert_eq!(both.status.code(), Some(2), "{}", text(&both).1);
}

/// A `.npy` file of float32 written by `sasrec export`: (rows, cols, values).
fn npy(path: &Path) -> (usize, usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': ("));
    let shape = header.split("'shape': (").nth(1).unwrap();
    let dims: Vec<usize> = shape
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .map(|d| d.trim().parse().unwrap())
        .collect();
    let values: Vec<f32> = bytes[10 + len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(values.len(), dims[0] * dims[1]);
    (dims[0], dims[1], values)
}

#[test]
fn exact_inner_product_over_exported_vectors_gives_recommends_top_k() {
    let (dir, ratings, run) = trained_run("3");
    let out = dir.path().join("vectors");
    let result = export(&run, &out);
    assert!(result.status.success(), "{}", text(&result).1);
    let manifest = json(&out.join("export.json"));
    assert_eq!(manifest["dim"], 16);
    assert_eq!(manifest["users"]["count"], 40);

    let (n_items, dim, items) = npy(&out.join("items.npy"));
    let (n_users, user_dim, users) = npy(&out.join("users.npy"));
    assert_eq!((n_items, n_users, dim, user_dim), (30, 40, 16, 16));
    let item_ids: Vec<i64> = serde_json::from_value(json(&out.join("items.ids.json"))).unwrap();
    let user_ids: Vec<i64> = serde_json::from_value(json(&out.join("users.ids.json"))).unwrap();
    assert_eq!(user_ids, (1..=40).collect::<Vec<_>>());
    let mut sorted = item_ids.clone();
    sorted.sort();
    assert_eq!(sorted, (101..=130).collect::<Vec<_>>());

    // The Parquet files hold the same ids and vectors.
    for (name, ids_json, values) in [("items", &item_ids, &items), ("users", &user_ids, &users)] {
        let (batches, types) = parquet(&out.join(format!("{name}.parquet")));
        assert_eq!(types[0], DataType::Int64);
        assert!(
            matches!(types[1], DataType::FixedSizeList(_, 16)),
            "{types:?}"
        );
        let mut got_ids = Vec::new();
        let mut got_values = Vec::new();
        for batch in batches {
            got_ids.extend(ids(batch.column(0).as_ref()));
            let list = batch.column(1).as_fixed_size_list();
            got_values.extend_from_slice(list.values().as_primitive::<Float32Type>().values());
        }
        let want_ids: Vec<Value> = ids_json.iter().map(|&v| v.into()).collect();
        assert_eq!(got_ids, want_ids, "{name}");
        assert_eq!(&got_values, values, "{name}");
    }

    // Sampled users: top-10 by exact inner product, seen items removed,
    // against `sasrec recommend --users-file`.
    let sampled = [1i64, 6, 13, 22, 37, 40];
    let users_file = dir.path().join("sampled.txt");
    let lines: Vec<String> = sampled.iter().map(i64::to_string).collect();
    std::fs::write(&users_file, lines.join("\n")).unwrap();
    let recs = dir.path().join("sampled.csv");
    let result = recommend_all(
        &run,
        &recs,
        &["--users-file", users_file.to_str().unwrap(), "--k", "10"],
    );
    assert!(result.status.success(), "{}", text(&result).1);
    let rows = read_csv_rows(&recs);
    let histories = histories(&ratings);
    for user in sampled {
        let u = user_ids.iter().position(|&id| id == user).unwrap();
        let h = &users[u * dim..(u + 1) * dim];
        let mut scored: Vec<(i64, f32)> = item_ids
            .iter()
            .enumerate()
            .filter(|(_, id)| !histories[&user].contains(id))
            .map(|(r, &id)| {
                let e = &items[r * dim..(r + 1) * dim];
                (id, h.iter().zip(e).map(|(a, b)| a * b).sum::<f32>())
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(10);
        let got: Vec<(i64, f32)> = rows
            .iter()
            .filter(|r| r.0 == user)
            .map(|r| (r.1.as_i64().unwrap(), r.3))
            .collect();
        assert_eq!(got.len(), 10, "user {user}");
        for (rank, (g, w)) in got.iter().zip(&scored).enumerate() {
            // Same item; or a tie within float rounding of the two sums.
            let tie = (g.1 - w.1).abs() <= 1e-5;
            assert!(
                (g.0 == w.0 || tie) && (g.1 - w.1).abs() <= 1e-5,
                "user {user}, rank {}: recommend {g:?}, inner product {w:?}",
                rank + 1
            );
        }
    }
}

#[test]
fn string_ids_stay_strings_in_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.csv");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/tests/fixtures/interactions.csv");
    std::fs::copy(fixture, &log).unwrap();
    let run = dir.path().join("run");
    let out = sasrec(
        &common::train_args(&log, &run, "1")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", text(&out).1);

    let recs = dir.path().join("recs.parquet");
    let result = recommend_all(&run, &recs, &["--all-users", "--k", "3"]);
    assert!(result.status.success(), "{}", text(&result).1);
    let (_, types) = parquet(&recs);
    assert_eq!(types[..2], [DataType::Utf8, DataType::Utf8]);
    let rows = read_parquet_rows(&recs);
    assert_eq!(rows[0].0, "U001x");
    assert!(rows.iter().all(|r| r.1.as_str().unwrap().starts_with('B')));
    let jsonl = dir.path().join("recs.jsonl");
    let result = recommend_all(&run, &jsonl, &["--all-users", "--k", "3"]);
    assert!(result.status.success(), "{}", text(&result).1);
    assert_eq!(read_jsonl_rows(&jsonl), rows);

    let vectors = dir.path().join("vectors");
    let result = export(&run, &vectors);
    assert!(result.status.success(), "{}", text(&result).1);
    let (_, types) = parquet(&vectors.join("users.parquet"));
    assert_eq!(types[0], DataType::Utf8);
    let ids: Vec<String> = serde_json::from_value(json(&vectors.join("items.ids.json"))).unwrap();
    assert!(ids.iter().all(|id| id.starts_with('B')), "{ids:?}");
}

/// The names in a folder and the bytes of its files, sorted by name.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = if path.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            (name, bytes)
        })
        .collect();
    all.sort();
    all
}

/// The names in a folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    contents(dir).into_iter().map(|(name, _)| name).collect()
}

#[test]
fn a_second_writer_of_an_output_is_refused_naming_the_first() {
    let (dir, _, run) = trained_run("1");
    let pid = std::process::id();
    let recs = dir.path().join("recs.csv");
    // What a `sasrec recommend` writing recs.csv holds.
    let held = RunLock::beside(&recs, "recommend").unwrap();
    let line = assert_error(&recommend_all(&run, &recs, &["--all-users"]), "recs.csv");
    assert!(
        line.contains(&format!("is in use by sasrec recommend (pid {pid})")),
        "{line}"
    );
    assert!(!recs.exists());
    drop(held);
    let result = recommend_all(&run, &recs, &["--all-users"]);
    assert!(result.status.success(), "{}", text(&result).1);

    let vectors = dir.path().join("vectors");
    let held = RunLock::beside(&vectors, "export").unwrap();
    let line = assert_error(&export(&run, &vectors), "vectors");
    assert!(
        line.contains(&format!("is in use by sasrec export (pid {pid})")),
        "{line}"
    );
    drop(held);
    // Locks go with their writers.
    assert_eq!(
        names(dir.path()),
        ["movies.csv", "ratings.csv", "recs.csv", "run"]
    );
}

#[test]
fn a_killed_writers_temporary_file_is_removed_and_named_by_the_next() {
    let (dir, _, run) = trained_run("1");
    let recs = dir.path().join("recs.csv");
    // Killed right after the rows are written and flushed, before the rename.
    let killed = std::process::Command::new(SASREC)
        .args(["recommend", "--run", run.to_str().unwrap(), "--all-users"])
        .args(["--out", recs.to_str().unwrap(), "--device", "cpu"])
        .env("SASREC_FAIL_AT", "2")
        .output()
        .unwrap();
    assert_killed_by(&killed, 6);
    assert!(!recs.exists());
    let left = temporary_files(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    let tmp = left[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(std::fs::metadata(&left[0]).unwrap().len() > 1000);

    let result = recommend_all(&run, &recs, &["--all-users"]);
    let stderr = text(&result).1;
    assert!(result.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("removed {tmp} ("))
            && stderr.contains("left by sasrec recommend (pid"),
        "{stderr}"
    );
    assert!(temporary_files(dir.path()).is_empty());
    assert_eq!(
        names(dir.path()),
        ["movies.csv", "ratings.csv", "recs.csv", "run"]
    );
}

#[test]
fn an_export_killed_midway_leaves_the_earlier_export_whole() {
    let (dir, ratings, run) = trained_run("1");
    let vectors = dir.path().join("vectors");
    let result = export(&run, &vectors);
    assert!(result.status.success(), "{}", text(&result).1);
    let before = contents(&vectors);
    // Another run: other vectors of the same shapes.
    let other = dir.path().join("other");
    assert!(train(&ratings, &other, "2").status.success());
    // Killed after the first files, after the item files, among the user
    // files, and after export.json.
    for fail_at in ["1", "8", "20", "26"] {
        let killed = std::process::Command::new(SASREC)
            .args(["export", "--run", other.to_str().unwrap()])
            .args(["--out", vectors.to_str().unwrap(), "--device", "cpu"])
            .env("SASREC_FAIL_AT", fail_at)
            .output()
            .unwrap();
        assert_killed_by(&killed, 6);
        assert!(
            contents(&vectors) == before,
            "killed at operation {fail_at}"
        );
    }
    let result = export(&other, &vectors);
    let stderr = text(&result).1;
    assert!(result.status.success(), "{stderr}");
    assert!(
        stderr.contains("removed .vectors.") && stderr.contains("left by sasrec export (pid"),
        "{stderr}"
    );
    assert_eq!(
        json(&vectors.join("export.json"))["run"],
        other.to_str().unwrap()
    );
    let after = contents(&vectors);
    assert_eq!(
        names(&vectors),
        before.iter().map(|f| f.0.clone()).collect::<Vec<_>>()
    );
    // The ids are the same; every file of vectors is the other run's.
    for ((name, new), (_, old)) in after.iter().zip(&before) {
        assert_eq!(new == old, name.ends_with(".ids.json"), "{name}");
    }
    assert_eq!(
        names(dir.path()),
        ["movies.csv", "other", "ratings.csv", "run", "vectors"]
    );

    // A folder of other files is never replaced.
    std::fs::write(vectors.join("notes.txt"), "mine").unwrap();
    assert_error(
        &export(&run, &vectors),
        "holds \"notes.txt\", which is not a file of an export",
    );
    assert!(vectors.join("notes.txt").exists());
}
