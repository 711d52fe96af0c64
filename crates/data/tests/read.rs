//! Reading interaction logs and item names: the text formats, ids, times,
//! and every kind of bad input.

use std::io::Read;
use std::path::{Path, PathBuf};

use sasrec_data::{
    DataError, Format, IdKind, InputSpec, Interactions, RawId, TimeFormat, TimeUnit,
    parse_interactions, read_interactions, read_item_names,
};

/// Writes `contents` to `name` in a fresh temp dir; keep the dir alive.
fn file(name: &str, contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

fn read(name: &str, contents: &str) -> Result<Interactions, DataError> {
    read_with(name, contents, &InputSpec::default())
}

fn read_with(name: &str, contents: &str, spec: &InputSpec) -> Result<Interactions, DataError> {
    let (_dir, path) = file(name, contents.as_bytes());
    read_interactions(&path, spec)
}

/// One row as the file has it: raw user, raw item, rating, time in seconds.
type Row = (RawId, RawId, Option<f32>, i64);

/// The rows of `r` with raw ids, in file order.
fn rows(r: &Interactions) -> Vec<Row> {
    (0..r.len())
        .map(|i| {
            (
                r.users.get(r.user[i]).unwrap(),
                r.items.get(r.item[i]).unwrap(),
                r.rating.as_ref().map(|v| v[i]),
                r.time[i].div_euclid(1_000_000),
            )
        })
        .collect()
}

/// The error message for `contents`, checked to name the file, the line and the field.
fn error_names(name: &str, contents: &str, line: u64, field: &str) -> String {
    let (_dir, path) = file(name, contents.as_bytes());
    let err =
        read_interactions(&path, &InputSpec::default()).expect_err("bad input must be an error");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "no file in: {msg}"
    );
    assert!(
        msg.contains(&format!("line {line}:")),
        "no line {line} in: {msg}"
    );
    assert!(
        msg.contains(&format!("`{field}`")),
        "no field {field} in: {msg}"
    );
    msg
}

fn expected() -> Vec<Row> {
    let row = |u: i64, i: i64, r: f32, t: i64| (RawId::Int(u), RawId::Int(i), Some(r), t);
    vec![
        row(1, 31, 2.5, 1260759144),
        row(1, 1029, 3.0, 1260759179),
        row(7, 10, 4.0, 851866703),
    ]
}

#[test]
fn csv_with_lf_crlf_or_no_final_newline_reads_the_same() {
    let lf = "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n7,10,4.0,851866703\n";
    let crlf = lf.replace('\n', "\r\n");
    let no_final = lf.trim_end();
    for contents in [lf, crlf.as_str(), no_final] {
        let ratings = read("ratings.csv", contents).unwrap();
        assert_eq!(rows(&ratings), expected());
        assert_eq!(ratings.len(), 3);
        assert_eq!(
            ratings.users.len(),
            2,
            "codes are dense: one per distinct id"
        );
    }
}

#[test]
fn csv_columns_are_found_by_name() {
    let csv = "\u{feff}timestamp,rating,extra,movieId,userId\n1260759144,2.5,x,31,1\n1260759179,3,y,1029,1\n851866703,4.0,z,10,7\n";
    assert_eq!(rows(&read("ratings.csv", csv).unwrap()), expected());
}

#[test]
fn dat_and_tsv_formats() {
    let dat = "1::31::2.5::1260759144\n1::1029::3::1260759179\n7::10::4::851866703\n";
    assert_eq!(rows(&read("ratings.dat", dat).unwrap()), expected());
    let tsv = dat.replace("::", "\t");
    assert_eq!(rows(&read("u.data", &tsv).unwrap()), expected());
    assert_eq!(rows(&read("ratings.tsv", &tsv).unwrap()), expected());
}

#[test]
fn explicit_format_overrides_the_file_name() {
    let (_dir, path) = file("ratings.txt", b"1\t31\t2.5\t1260759144\n");
    let spec = InputSpec {
        format: Some(Format::Tsv),
        ..InputSpec::default()
    };
    let ratings = read_interactions(&path, &spec).unwrap();
    assert_eq!(ratings.items.to_vec(), vec![RawId::Int(31)]);
    let err = read_interactions(&path, &InputSpec::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ratings.txt") && err.contains("format"),
        "{err}"
    );
}

#[test]
fn format_names() {
    assert_eq!("csv".parse::<Format>().unwrap(), Format::Csv);
    assert_eq!("dat".parse::<Format>().unwrap(), Format::Dat);
    assert_eq!("tsv".parse::<Format>().unwrap(), Format::Tsv);
    assert_eq!("inter".parse::<Format>().unwrap(), Format::Inter);
    assert_eq!("parquet".parse::<Format>().unwrap(), Format::Parquet);
    assert!(
        "xls"
            .parse::<Format>()
            .unwrap_err()
            .to_string()
            .contains("xls")
    );
    assert_eq!(
        Format::from_path(Path::new("ml-1m/ratings.dat")),
        Some(Format::Dat)
    );
    assert_eq!(
        Format::from_path(Path::new("ml-100k/u.data")),
        Some(Format::Tsv)
    );
    assert_eq!(Format::from_path(Path::new("ratings")), None);
    assert_eq!(
        Format::from_path(Path::new("ml-1m.inter")),
        Some(Format::Inter)
    );
    assert_eq!(
        Format::from_path(Path::new("events.parquet")),
        Some(Format::Parquet)
    );
}

/// A reader that hands out one byte per call, so every line crosses a read.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(1);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn lines_split_across_reads_parse_whole() {
    let csv = b"userId,movieId,rating,timestamp\r\n1,31,2.5,1260759144\r\n1,1029,3.0,1260759179\r\n7,10,4.0,851866703";
    let ratings = parse_interactions(
        Trickle(csv),
        Path::new("trickle.csv"),
        Format::Csv,
        &InputSpec::default(),
    )
    .unwrap();
    assert_eq!(rows(&ratings), expected());
}

#[test]
fn a_file_of_many_chunks_matches_a_plain_line_by_line_parse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratings.csv");
    // About 5 MB: several of the reader's 1 MiB chunks.
    sasrec_data::synthetic::write_ratings(&path, Format::Csv, 200_000, 7).unwrap();
    let ratings = read_interactions(&path, &InputSpec::default()).unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let plain: Vec<Row> = text
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (
                RawId::Int(f[0].parse().unwrap()),
                RawId::Int(f[1].parse().unwrap()),
                Some(f[2].parse().unwrap()),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(ratings.len(), 200_000);
    assert_eq!(rows(&ratings), plain);
}

#[test]
fn missing_file_names_the_path() {
    let err = read_interactions(Path::new("/nonexistent/ratings.csv"), &InputSpec::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/ratings.csv"),
        "{err}"
    );
}

#[test]
fn empty_file_and_header_only() {
    let (_dir, path) = file("ratings.csv", b"");
    let msg = read_interactions(&path, &InputSpec::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("line 1:"),
        "{msg}"
    );
    assert!(msg.contains("empty"), "{msg}");

    let (_dir, path) = file("ratings.csv", b"userId,movieId,rating,timestamp\r\n");
    let msg = read_interactions(&path, &InputSpec::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("line 2:"),
        "{msg}"
    );

    let (_dir, path) = file("ratings.dat", b"");
    let msg = read_interactions(&path, &InputSpec::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 1:") && msg.contains("empty"), "{msg}");
}

#[test]
fn missing_column() {
    let msg = error_names(
        "ratings.csv",
        "userId,movieId,rating\n1,2,3.0\n",
        1,
        "timestamp",
    );
    assert!(msg.contains("header"), "{msg}");
}

#[test]
fn wrong_delimiter() {
    // A tab-separated file named .csv: the header is one field.
    let msg = error_names(
        "ratings.csv",
        "userId\tmovieId\trating\ttimestamp\n1\t2\t3\t4\n",
        1,
        "userId",
    );
    assert!(
        msg.contains(r"userId\tmovieId"),
        "the header is shown: {msg}"
    );
    // Right header, wrong delimiter in the rows.
    let msg = error_names(
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,3,4\n1;2;3;4\n",
        3,
        "movieId",
    );
    assert!(msg.contains("expected 4 fields"), "{msg}");
    // A CSV file read as `::`-separated.
    let msg = error_names("ratings.dat", "1,2,3,4\n", 1, "movieId");
    assert!(msg.contains("\"::\""), "{msg}");
}

#[test]
fn too_few_fields() {
    let msg = error_names(
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,3.0,4\n1,2,3.0\n",
        3,
        "timestamp",
    );
    assert!(msg.contains("found 3"), "{msg}");
    // A blank line in the middle is an error; blank lines at the end are not.
    let msg = read("u.data", "1\t2\t3\t4\n\n1\t2\t3\t4\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("u.data: line 2: blank line"), "{msg}");
    assert_eq!(read("u.data", "1\t2\t3\t4\n\n").unwrap().len(), 1);
    assert_eq!(
        read(
            "ratings.csv",
            "userId,movieId,rating,timestamp\r\n1,2,3,4\r\n\r\n\r\n"
        )
        .unwrap()
        .len(),
        1
    );
}

#[test]
fn non_numeric_fields() {
    let header = "userId,movieId,rating,timestamp\n";
    error_names(
        "ratings.csv",
        &format!("{header}1,abc,4.0,5\n"),
        2,
        "movieId",
    );
    error_names("ratings.csv", &format!("{header}u1,2,4.0,5\n"), 2, "userId");
    error_names("ratings.csv", &format!("{header}1,2,four,5\n"), 2, "rating");
    error_names("ratings.csv", &format!("{header}1,2,NaN,5\n"), 2, "rating");
    error_names("ratings.csv", &format!("{header}1,2,,5\n"), 2, "rating");
    error_names(
        "ratings.csv",
        &format!("{header}1,2,4.0,5.5.5\n"),
        2,
        "timestamp",
    );
    error_names(
        "ratings.csv",
        &format!("{header}1,2,4.0,\n"),
        2,
        "timestamp",
    );
    error_names(
        "ratings.csv",
        &format!("{header}1, 2,4.0,5\n"),
        2,
        "movieId",
    );
    error_names(
        "ratings.dat",
        "1::2::5::978300760\n1::\"2\"::5::1\n",
        2,
        "movieId",
    );
}

#[test]
fn negative_and_overflowing_values() {
    let header = "userId,movieId,rating,timestamp\n";
    let msg = error_names("ratings.csv", &format!("{header}-1,2,4.0,5\n"), 2, "userId");
    assert!(
        msg.contains("non-negative") && msg.contains("\"-1\""),
        "{msg}"
    );
    let msg = error_names(
        "ratings.csv",
        &format!("{header}1,99999999999999999999,4.0,5\n"),
        2,
        "movieId",
    );
    assert!(msg.contains("too large"), "{msg}");
    error_names(
        "ratings.csv",
        &format!("{header}1,2,4.0,99999999999999999999\n"),
        2,
        "timestamp",
    );
    // Ids beyond u32 and a negative timestamp are fine.
    let ok = read("ratings.csv", &format!("{header}4294967296,2,0.5,-5\n")).unwrap();
    assert_eq!(
        (ok.users.get(ok.user[0]).unwrap(), ok.time[0]),
        (RawId::Int(4_294_967_296), -5_000_000)
    );
}

/// MovieLens movies.csv: `movieId` -> `title`.
fn movie_titles(path: &Path) -> Result<std::collections::HashMap<RawId, String>, DataError> {
    read_item_names(path, Some("movieId"), Some("title"), IdKind::Int)
}

#[test]
fn titles_handle_quotes_commas_and_utf8() {
    let movies = "movieId,title,genres\r\n1,Toy Story (1995),Adventure|Animation\r\n11,\"American President, The (1995)\",Comedy\r\n31,\"Misérables, Les (1995)\",Drama\r\n";
    let (_dir, path) = file("movies.csv", movies.as_bytes());
    let titles = movie_titles(&path).unwrap();
    assert_eq!(titles.len(), 3);
    assert_eq!(titles[&RawId::Int(11)], "American President, The (1995)");
    assert_eq!(titles[&RawId::Int(31)], "Misérables, Les (1995)");
}

#[test]
fn titles_bad_input() {
    let (_dir, path) = file("movies.csv", b"movieId,title,genres\n1,A,B\nx,B,C\n");
    let msg = movie_titles(&path).unwrap_err().to_string();
    assert!(
        msg.contains("movies.csv") && msg.contains("line 3:") && msg.contains("`movieId`"),
        "{msg}"
    );

    let (_dir, path) = file("movies.csv", b"movieId,name,genres\n1,A,B\n");
    let msg = movie_titles(&path).unwrap_err().to_string();
    assert!(msg.contains("line 1:") && msg.contains("`title`"), "{msg}");
    // The columns listed are this file's, not the ratings'.
    assert!(msg.contains(r#""movieId", "name", "genres""#), "{msg}");

    let (_dir, path) = file("movies.csv", b"movieId,title,genres\n1,A,B\n2,B\n");
    let msg = movie_titles(&path).unwrap_err().to_string();
    assert!(
        msg.contains("line 3:") && msg.contains("`genres`") && msg.contains("found 2"),
        "{msg}"
    );

    let (_dir, path) = file("movies.csv", b"movieId,title,genres\n1,A\xff,B\n");
    let msg = movie_titles(&path).unwrap_err().to_string();
    assert!(
        msg.contains("line 2:") && msg.contains("`title`") && msg.contains("UTF-8"),
        "{msg}"
    );

    let msg = movie_titles(Path::new("/nonexistent/movies.csv"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/movies.csv"), "{msg}");
}

#[test]
fn string_ids_and_iso_dates() {
    let csv = "user_id,item_id,timestamp\n\
               A3SGXH7AUHU8GW,B00004CXX9,2023-05-01T12:30:00Z\n\
               A1D87F6ZCVE5NK,B00004CXX9,2023-05-01T12:00:00+01:00\n\
               A3SGXH7AUHU8GW,\"B0000, quoted\",2023-05-02 08:00:00.250Z\n";
    let r = read("events.csv", csv).unwrap();
    assert_eq!(r.users.kind(), IdKind::Str);
    assert_eq!(
        r.items.to_vec(),
        vec![RawId::from("B00004CXX9"), RawId::from("B0000, quoted")]
    );
    assert_eq!(r.user, vec![0, 1, 0]);
    assert!(r.rating.is_none(), "implicit feedback: no rating column");
    // 12:00+01:00 is 11:00 UTC: an hour and a half before the first row.
    assert_eq!(r.time[0] - r.time[1], 90 * 60 * 1_000_000);
    assert_eq!(
        r.time[2] - r.time[0],
        (19 * 3600 + 30 * 60) * 1_000_000 + 250_000
    );
    assert_eq!(
        r.source.time_format,
        Some(TimeFormat::DateTime { zone: true })
    );
    assert_eq!(r.source.columns.user, "user_id");
}

#[test]
fn numeric_ids_that_are_not_plain_integers_stay_strings() {
    // An id column is integers only while every id is a canonical integer;
    // then all of it becomes strings, the earlier ids as their text.
    let r = read("log.csv", "user,item,ts\n7,10,1\n7,007,2\n8,10,3\n").unwrap();
    assert_eq!(r.users.kind(), IdKind::Int);
    assert_eq!(
        r.items.to_vec(),
        vec![RawId::from("10"), RawId::from("007")]
    );
    assert_eq!(r.item, vec![0, 1, 0]);
}

#[test]
fn columns_by_name_delimiter_and_time_unit() {
    let spec = InputSpec {
        user_col: Some("visitor".into()),
        item_col: Some("product".into()),
        time_col: Some("when".into()),
        rating_col: Some("stars".into()),
        delimiter: Some(";".into()),
        time_unit: Some(TimeUnit::Ms),
        ..InputSpec::default()
    };
    let r = read_with(
        "log.csv",
        "stars;when;product;visitor\n4;1700000000123;p1;v1\n",
        &spec,
    )
    .unwrap();
    assert_eq!(
        rows(&r),
        vec![(
            RawId::from("v1"),
            RawId::from("p1"),
            Some(4.0),
            1_700_000_000
        )]
    );
    assert_eq!(r.time[0], 1_700_000_000_123_000);

    let msg = read_with("log.csv", "a;b\n1;2\n", &spec)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 1: no user column `visitor`")
            && msg.contains(r#"the header has "a", "b""#)
            && msg.contains("--user-col"),
        "{msg}"
    );
    let msg = read("log.csv", "who,what,time\n1,2,3\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no user column `userId` or `user_id`"),
        "{msg}"
    );
    let bad = InputSpec {
        delimiter: Some(";;".into()),
        ..InputSpec::default()
    };
    assert!(
        read_with("log.csv", "a\n", &bad)
            .unwrap_err()
            .to_string()
            .contains("delimiter")
    );
    let named = InputSpec {
        user_col: Some("u".into()),
        ..InputSpec::default()
    };
    let msg = read_with("ratings.dat", "1::2::3::4\n", &named)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no header"), "{msg}");
}

#[test]
fn recbole_inter_and_headed_tsv() {
    let inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t31\t2.5\t1260759144\n1\t1029\t3\t1260759179\n7\t10\t4\t851866703\n";
    let r = read("ml.inter", inter).unwrap();
    assert_eq!(rows(&r), expected());
    assert_eq!(r.source.format, Some(Format::Inter));
    assert_eq!(r.source.columns.rating.as_deref(), Some("rating"));

    let tsv = "userId\tmovieId\trating\ttimestamp\n1\t31\t2.5\t1260759144\n1\t1029\t3\t1260759179\n7\t10\t4\t851866703\n";
    assert_eq!(rows(&read("ratings.tsv", tsv).unwrap()), expected());
}

#[test]
fn quoted_fields_anywhere_in_the_file() {
    // The quote appears after the first chunk: the csv crate takes over there.
    let mut csv = String::from("user,item,ts\n");
    for i in 0..100_000 {
        csv.push_str(&format!("u{},i{},{i}\n", i % 97, i % 13));
    }
    csv.push_str("\"u,1\",\"multi\nline\",100000\nu2,i3,100001\n");
    let r = read("log.csv", &csv).unwrap();
    assert_eq!(r.len(), 100_002);
    let last = rows(&r)[100_000].clone();
    assert_eq!(
        (last.0, last.1),
        (RawId::from("u,1"), RawId::from("multi\nline"))
    );
    // Lines are still counted right after a quoted newline.
    csv.push_str("u3,i4,oops\n");
    let msg = read("log.csv", &csv).unwrap_err().to_string();
    assert!(msg.contains("line 100005: field `ts`"), "{msg}");
}

#[test]
fn mixed_or_bad_time_formats_are_errors() {
    let msg = error_names(
        "log.csv",
        "user,item,ts\n1,2,1700000000\n1,3,2023-05-01\n",
        3,
        "ts",
    );
    assert!(msg.contains("mixed time formats"), "{msg}");
    let msg = error_names(
        "log.csv",
        "user,item,ts\n1,2,2023-05-01T10:00:00\n1,3,2023-05-01T10:00:00Z\n",
        3,
        "ts",
    );
    assert!(msg.contains("mixed time formats"), "{msg}");
    let long = format!("2023-05-01T10:00:00 and then {}", "x".repeat(500));
    let msg = error_names(
        "log.csv",
        &format!("user,item,ts\n1,2,2023-05-01\n1,3,{long}\n"),
        3,
        "ts",
    );
    assert!(msg.contains("ISO 8601"), "{msg}");
    assert!(msg.len() < 400, "the value is cut: {msg}");
}

#[test]
fn binary_and_compressed_files_say_what_they_look_like() {
    for (bytes, looks) in [
        (&b"\x1f\x8b\x08\x00rest"[..], "gzip"),
        (b"PK\x03\x04rest", "zip"),
        (b"\x28\xb5\x2f\xfdrest", "zstd"),
        (b"PAR1\x15\x04rest", "Parquet"),
        (b"abc\x00\x01\x02", "binary"),
    ] {
        let (_dir, path) = file("ratings.csv", bytes);
        let msg = read_interactions(&path, &InputSpec::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains(looks) && !msg.contains("rest"), "{msg}");
    }
}

#[test]
fn endless_lines_are_refused_not_echoed() {
    let header = format!("userId,movieId,{},timestamp\n", "r".repeat(3 << 20));
    let msg = read("ratings.csv", &header).unwrap_err().to_string();
    assert!(msg.contains("line 1: longer than"), "{msg}");
    assert!(msg.len() < 300, "{msg}");
    let quoted = format!("user,item,ts\n1,2,3\n\"{}\",2,3\n", "q".repeat(3 << 20));
    let msg = read("log.csv", &quoted).unwrap_err().to_string();
    assert!(msg.contains("line 3: longer than"), "{msg}");
}
