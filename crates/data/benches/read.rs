//! Reading speed of `read_interactions` on a synthetic MovieLens-shaped CSV,
//! and the time `build_dataset` then takes to turn the rows into sequences.
//!
//! `cargo bench -p sasrec-data --bench read`; rows from `SASREC_BENCH_ROWS`
//! (default 1,000,000). To read an existing file instead (e.g. the one the
//! pandas script timed), set `SASREC_BENCH_FILE`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sasrec_data::{
    FilterConfig, Format, InputSpec, Interactions, RawId, build_dataset, read_interactions,
};

fn bench_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = match std::env::var_os("SASREC_BENCH_FILE") {
        Some(file) => PathBuf::from(file),
        None => {
            let rows = std::env::var("SASREC_BENCH_ROWS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000);
            let path = dir.path().join("ratings.csv");
            sasrec_data::synthetic::write_ratings(&path, Format::Csv, rows, 0)
                .expect("write ratings");
            path
        }
    };
    let spec = InputSpec::default();
    let ratings = read_interactions(&path, &spec).expect("read ratings");
    let rows = ratings.len();
    let bytes = std::fs::metadata(&path).expect("stat").len();
    println!("{}: {rows} rows, {bytes} bytes", path.display());

    let mut group = c.benchmark_group("data");
    group.throughput(Throughput::Elements(rows as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(format!("csv_{rows}_rows"), |b| {
        b.iter(|| black_box(read_interactions(&path, &spec).expect("read ratings")))
    });
    group.bench_function(format!("csv_crate_{rows}_rows"), |b| {
        b.iter(|| black_box(read_with_csv_crate(&path)))
    });
    group.bench_function(format!("build_dataset_{rows}_rows"), |b| {
        b.iter(|| black_box(build_dataset(&ratings, &FilterConfig::default()).expect("build")))
    });
    group.finish();
}

/// The baseline the hand-written reader replaced: the csv crate's fastest
/// interface (reused `ByteRecord`s) with the standard library's number
/// parsers, ids interned the same way.
fn read_with_csv_crate(path: &std::path::Path) -> Interactions {
    let mut reader = csv::Reader::from_path(path).expect("open");
    let mut record = csv::ByteRecord::new();
    let mut ratings = Interactions::default();
    while reader.read_byte_record(&mut record).expect("read") {
        let seconds: i64 = field(&record, 3).parse().expect("timestamp");
        ratings.push(
            &RawId::Int(field(&record, 0).parse().expect("user")),
            &RawId::Int(field(&record, 1).parse().expect("item")),
            seconds * 1_000_000,
            Some(field(&record, 2).parse().expect("rating")),
        );
    }
    ratings
}

fn field(record: &csv::ByteRecord, i: usize) -> &str {
    std::str::from_utf8(&record[i]).expect("utf-8")
}

criterion_group!(benches, bench_read);
criterion_main!(benches);
