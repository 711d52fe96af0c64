//! Reading ratings and titles: the formats, and every kind of bad input.

use std::io::Read;
use std::path::{Path, PathBuf};

use sasrec_data::{DataError, Format, Ratings, parse_ratings, read_ratings, titles};

/// Writes `contents` to `name` in a fresh temp dir; keep the dir alive.
fn file(name: &str, contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

fn read(name: &str, contents: &str) -> Result<Ratings, DataError> {
    let (_dir, path) = file(name, contents.as_bytes());
    read_ratings(&path, None)
}

/// The error message for `contents`, checked to name the file, the line and the field.
fn error_names(name: &str, contents: &str, line: u64, field: &str) -> String {
    let (_dir, path) = file(name, contents.as_bytes());
    let err = read_ratings(&path, None).expect_err("bad input must be an error");
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

fn expected() -> Ratings {
    let mut r = Ratings::default();
    r.push(1, 31, 2.5, 1260759144);
    r.push(1, 1029, 3.0, 1260759179);
    r.push(7, 10, 4.0, 851866703);
    r
}

#[test]
fn csv_with_lf_crlf_or_no_final_newline_reads_the_same() {
    let lf = "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n7,10,4.0,851866703\n";
    let crlf = lf.replace('\n', "\r\n");
    let no_final = lf.trim_end();
    for contents in [lf, crlf.as_str(), no_final] {
        let ratings = read("ratings.csv", contents).unwrap();
        assert_eq!(ratings, expected());
        assert_eq!(ratings.len(), 3);
    }
}

#[test]
fn csv_columns_are_found_by_name() {
    let csv = "\u{feff}timestamp,rating,extra,movieId,userId\n1260759144,2.5,x,31,1\n1260759179,3,y,1029,1\n851866703,4.0,z,10,7\n";
    assert_eq!(read("ratings.csv", csv).unwrap(), expected());
}

#[test]
fn dat_and_tsv_formats() {
    let dat = "1::31::2.5::1260759144\n1::1029::3::1260759179\n7::10::4::851866703\n";
    assert_eq!(read("ratings.dat", dat).unwrap(), expected());
    let tsv = dat.replace("::", "\t");
    assert_eq!(read("u.data", &tsv).unwrap(), expected());
    assert_eq!(read("ratings.tsv", &tsv).unwrap(), expected());
}

#[test]
fn explicit_format_overrides_the_file_name() {
    let (_dir, path) = file("ratings.txt", b"1\t31\t2.5\t1260759144\n");
    let ratings = read_ratings(&path, Some(Format::Tsv)).unwrap();
    assert_eq!(ratings.item, vec![31]);
    let err = read_ratings(&path, None).unwrap_err().to_string();
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
    let ratings = parse_ratings(Trickle(csv), Path::new("trickle.csv"), Format::Csv).unwrap();
    assert_eq!(ratings, expected());
}

#[test]
fn a_file_of_many_chunks_matches_a_plain_line_by_line_parse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratings.csv");
    // About 5 MB: several of the reader's 1 MiB chunks.
    sasrec_data::synthetic::write_ratings(&path, Format::Csv, 200_000, 7).unwrap();
    let ratings = read_ratings(&path, None).unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let mut plain = Ratings::default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        plain.push(
            f[0].parse().unwrap(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
        );
    }
    assert_eq!(ratings.len(), 200_000);
    assert_eq!(ratings, plain);
}

#[test]
fn missing_file_names_the_path() {
    let err = read_ratings(Path::new("/nonexistent/ratings.csv"), None).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/ratings.csv"),
        "{err}"
    );
}

#[test]
fn empty_file_and_header_only() {
    let (_dir, path) = file("ratings.csv", b"");
    let msg = read_ratings(&path, None).unwrap_err().to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("line 1:"),
        "{msg}"
    );
    assert!(msg.contains("empty"), "{msg}");

    let (_dir, path) = file("ratings.csv", b"userId,movieId,rating,timestamp\r\n");
    let msg = read_ratings(&path, None).unwrap_err().to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("line 2:"),
        "{msg}"
    );

    let (_dir, path) = file("ratings.dat", b"");
    let msg = read_ratings(&path, None).unwrap_err().to_string();
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
    error_names("u.data", "1\t2\t3\t4\n\n1\t2\t3\t4\n", 2, "userId");
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
        &format!("{header}1,2,4.0,5.5\n"),
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
        &format!("{header}1,4294967296,4.0,5\n"),
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
    // The largest id and a negative timestamp are fine.
    let ok = read("ratings.csv", &format!("{header}4294967295,2,0.5,-5\n")).unwrap();
    assert_eq!((ok.user[0], ok.timestamp[0]), (u32::MAX, -5));
}

#[test]
fn titles_handle_quotes_commas_and_utf8() {
    let movies = "movieId,title,genres\r\n1,Toy Story (1995),Adventure|Animation\r\n11,\"American President, The (1995)\",Comedy\r\n31,\"Misérables, Les (1995)\",Drama\r\n";
    let (_dir, path) = file("movies.csv", movies.as_bytes());
    let titles = titles(&path).unwrap();
    assert_eq!(titles.len(), 3);
    assert_eq!(titles[&11], "American President, The (1995)");
    assert_eq!(titles[&31], "Misérables, Les (1995)");
}

#[test]
fn titles_bad_input() {
    let (_dir, path) = file("movies.csv", b"movieId,title,genres\n1,A,B\nx,B,C\n");
    let msg = titles(&path).unwrap_err().to_string();
    assert!(
        msg.contains("movies.csv") && msg.contains("line 3:") && msg.contains("`movieId`"),
        "{msg}"
    );

    let (_dir, path) = file("movies.csv", b"movieId,name,genres\n1,A,B\n");
    let msg = titles(&path).unwrap_err().to_string();
    assert!(msg.contains("line 1:") && msg.contains("`title`"), "{msg}");

    let (_dir, path) = file("movies.csv", b"movieId,title,genres\n1,A,B\n2,B\n");
    let msg = titles(&path).unwrap_err().to_string();
    assert!(
        msg.contains("line 3:") && msg.contains("`genres`") && msg.contains("found 2"),
        "{msg}"
    );

    let (_dir, path) = file("movies.csv", b"movieId,title,genres\n1,A\xff,B\n");
    let msg = titles(&path).unwrap_err().to_string();
    assert!(
        msg.contains("line 2:") && msg.contains("`title`") && msg.contains("UTF-8"),
        "{msg}"
    );

    let msg = titles(Path::new("/nonexistent/movies.csv"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/movies.csv"), "{msg}");
}
