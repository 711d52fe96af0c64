//! Random and mutated inputs to every reader: each returns data or an error,
//! never panics, and its error messages stay short. A fixed case budget
//! keeps this to a few seconds in `cargo test`.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sasrec_data::{
    Format, IdKind, InputSpec, parse_interactions, read_interactions, read_item_names,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// `base` with a few bytes overwritten, inserted or cut, as `edits` say.
fn mutate(base: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(at, kind, value) in edits {
        if bytes.is_empty() {
            break;
        }
        let at = at % bytes.len();
        match kind % 4 {
            0 => bytes[at] = value,
            1 => bytes.insert(at, value),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// Reads `bytes` as a file named `name`; checks the outcome is bounded.
fn read_file(name: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    if let Err(e) = read_interactions(&path, &InputSpec::default()) {
        let msg = e.to_string();
        assert!(msg.len() < 700, "unbounded message: {msg}");
    }
    if let Err(e) = read_item_names(&path, None, None, IdKind::Str) {
        assert!(e.to_string().len() < 700);
    }
}

/// Text shaped like logs: delimiters, quotes, newlines, digits, dates.
fn text_bytes() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        &b","[..],
        b"\t",
        b"::",
        b"\n",
        b"\r\n",
        b"\"",
        b"1",
        b"42",
        b"-7",
        b"4.5",
        b"x",
        b"userId",
        b"movieId",
        b"rating",
        b"timestamp",
        b"user_id:token",
        b"2023-05-01",
        b"T12:00:00Z",
        b"+02:00",
        b"",
        b"\xff",
        b"\x00",
        b"9999999999999999999999",
    ]);
    prop::collection::vec(pieces, 0..60).prop_map(|p| p.concat())
}

const CASES: u32 = 200;

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_text_in_every_format(bytes in text_bytes(), format in 0usize..4) {
        let format = [Format::Csv, Format::Tsv, Format::Dat, Format::Inter][format];
        let result = parse_interactions(&bytes[..], Path::new("fuzz"), format, &InputSpec::default());
        if let Err(e) = result {
            prop_assert!(e.to_string().len() < 700);
        }
    }

    #[test]
    fn mutated_csv_and_inter(edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        read_file("ratings.csv", &mutate(&fixture("interactions.csv")[..3000], &edits));
        read_file("log.inter", &mutate(&fixture("interactions.inter")[..3000], &edits));
    }

    #[test]
    fn mutated_parquet(edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)) {
        read_file("events.parquet", &mutate(&fixture("interactions_dict.parquet"), &edits));
        read_file("names.parquet", &mutate(&fixture("names.parquet"), &edits));
    }

    #[test]
    fn random_bytes_as_any_file(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        read_file("x.csv", &bytes);
        read_file("x.parquet", &bytes);
        let mut parquetish = b"PAR1".to_vec();
        parquetish.extend_from_slice(&bytes);
        parquetish.extend_from_slice(b"PAR1");
        read_file("y.parquet", &parquetish);
    }
}
