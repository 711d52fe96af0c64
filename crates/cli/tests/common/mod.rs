//! What the CLI tests share: a small generated ratings file, the `sasrec`
//! binary, and the flags of a tiny model that trains in a blink.

#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const SASREC: &str = env!("CARGO_BIN_EXE_sasrec");

/// 40 users walking 30 movies (ids 101..130) in cycles, one rating a minute,
/// plus movies.csv with titles.
pub fn write_data(dir: &Path) -> PathBuf {
    let mut csv = String::from("userId,movieId,rating,timestamp\r\n");
    for user in 1..=40u32 {
        for i in 0..(8 + user % 7) {
            let movie = 101 + (user * 3 + i) % 30;
            csv.push_str(&format!("{user},{movie},4.0,{}\r\n", 1_000_000 + 60 * i));
        }
    }
    let ratings = dir.join("ratings.csv");
    std::fs::write(&ratings, csv).unwrap();
    let mut movies = String::from("movieId,title,genres\n");
    for movie in 101..=130 {
        movies.push_str(&format!("{movie},\"Film {movie}, The (1999)\",Drama\n"));
    }
    std::fs::write(dir.join("movies.csv"), movies).unwrap();
    ratings
}

pub fn sasrec(args: &[&str]) -> Output {
    Command::new(SASREC)
        .args(args)
        .output()
        .expect("sasrec runs")
}

/// Standard output and standard error as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub const SMALL: [&str; 16] = [
    "--max-len",
    "10",
    "--dim",
    "16",
    "--heads",
    "2",
    "--layers",
    "1",
    "--batch-size",
    "8",
    "--device",
    "cpu",
    "--lr",
    "0.01",
    "--seed",
    "1",
];

/// `sasrec train` of the small model on `ratings` into `run`.
pub fn train_args(ratings: &Path, run: &Path, epochs: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--ratings",
        ratings.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--epochs", epochs].map(String::from));
    args.extend(SMALL.map(String::from));
    args
}

pub fn train(ratings: &Path, run: &Path, epochs: &str) -> Output {
    Command::new(SASREC)
        .args(train_args(ratings, run, epochs))
        .output()
        .expect("sasrec runs")
}

/// `sasrec train --resume --out run` on the CPU.
pub fn resume(run: &Path) -> Output {
    sasrec(&[
        "train",
        "--resume",
        "--out",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ])
}

/// Asserts that a command failed with exit status 1 and a single-line
/// error containing `message` as the last line of standard error, and no
/// panic; returns that line.
pub fn assert_error(out: &Output, message: &str) -> String {
    let (_, stderr) = text(out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("error: ") && last.contains(message),
        "expected an error line with {message:?}, got:\n{stderr}"
    );
    last
}

/// Files anywhere under `dir` whose name marks a temporary file.
pub fn temporary_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(temporary_files(&path));
        } else if path.to_string_lossy().ends_with(".tmp") {
            found.push(path);
        }
    }
    found
}

/// The parsed JSON of a file.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A temporary folder with the generated ratings file and a run trained on
/// it for `epochs` into `run`: (folder, ratings, run).
pub fn trained_run(epochs: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    let out = train(&ratings, &run, epochs);
    assert!(out.status.success(), "{}", text(&out).1);
    (dir, ratings, run)
}

/// Waits (two minutes at most) until `path` exists.
pub fn wait_for(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a signal (`INT`, `TERM`) to a process we started.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Asserts that the process was ended by signal `number` (on Unix).
pub fn assert_killed_by(out: &Output, number: i32) {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(number), "{}", text(out).1);
    }
}
