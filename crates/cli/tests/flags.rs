//! No flag makes the binary panic or abort: every bad value is one clear
//! error line (exit status 1) before anything is written, absurd sizes are
//! refused by the memory estimate, and a closed pipe ends output quietly.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{
    SASREC, assert_error, assert_killed_by, sasrec, text, train_args, trained_run, write_data,
};

/// `sasrec train` of the small model with `extra` flags added (later flags
/// override earlier ones).
fn train_with(ratings: &Path, run: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = train_args(ratings, run, "1");
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(SASREC).args(args).output().unwrap()
}

#[test]
fn every_bad_training_flag_is_one_clear_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    let random = ["--split", "random-users"];
    let cases: &[(&[&str], &str)] = &[
        (&["--lr", "-1"], "--lr must be a positive number, got -1"),
        (&["--lr", "0"], "--lr must be a positive number, got 0"),
        (&["--lr", "NaN"], "--lr must be a positive number, got NaN"),
        (&["--lr", "inf"], "--lr must be a positive number, got inf"),
        (&["--dropout", "1"], "--dropout must be in [0, 1), got 1"),
        (
            &["--dropout", "-0.1"],
            "--dropout must be in [0, 1), got -0.1",
        ),
        (
            &["--dropout", "NaN"],
            "--dropout must be in [0, 1), got NaN",
        ),
        (
            &["--min-rating", "NaN"],
            "--min-rating must be a finite number, got NaN",
        ),
        (
            &["--user-fraction", "0"],
            "--user-fraction must be in (0, 1], got 0",
        ),
        (
            &["--user-fraction", "1.5"],
            "--user-fraction must be in (0, 1], got 1.5",
        ),
        (
            &[random[0], random[1], "--valid-fraction", "1"],
            "--valid-fraction must be in [0, 1), got 1",
        ),
        (
            &[random[0], random[1], "--valid-fraction", "2"],
            "--valid-fraction must be in [0, 1), got 2",
        ),
        (
            &[random[0], random[1], "--valid-fraction", "-0.5"],
            "--valid-fraction must be in [0, 1), got -0.5",
        ),
        (
            &["--batch-size", "0"],
            "--batch-size must be at least 1, got 0",
        ),
        (&["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (&["--patience", "0"], "--patience must be at least 1, got 0"),
        (&["--heads", "0"], "--heads must be at least 1, got 0"),
        (&["--max-len", "0"], "--max-len must be at least 1, got 0"),
        (
            &["--dim", "10", "--heads", "3"],
            "--dim 10 is not a multiple of heads 3",
        ),
        (
            &["--dim", "6", "--heads", "2", "--rotary", "true"],
            "--rotary needs an even head width dim / heads, got 6 / 2 = 3",
        ),
        (
            &["--valid-fraction", "0.2"],
            "--valid-fraction is for --split random-users, which holds out whole users; --split leave-one-out does not use it",
        ),
        (
            &["--split", "temporal", "--split-seed", "7"],
            "--split-seed is for --split random-users",
        ),
        (&["--k", "5,0"], "--k values must be at least 1"),
        (
            &["--select", "bogus"],
            "--select: unknown selection metric \"bogus\"",
        ),
        (
            &[random[0], random[1], "--select", "ndcg@10"],
            "--select ndcg@10 needs the leave-one-out or temporal split",
        ),
        (
            &["--threads", "0"],
            "--threads must be between 1 and 1024, got 0",
        ),
        (
            &["--dim", "4000000000"],
            "of memory (weights and Adam state",
        ),
        (
            &["--max-len", "4000000000"],
            "of memory (weights and Adam state",
        ),
        (
            &["--layers", "4000000000"],
            "of memory (weights and Adam state",
        ),
    ];
    for (flags, message) in cases {
        let out = train_with(&ratings, &run, flags);
        assert_error(&out, message);
        assert!(!run.exists(), "{flags:?} left a run folder");
    }
    // The memory refusal names the numbers: zettabytes needed, gigabytes here.
    let out = train_with(&ratings, &run, &["--dim", "4000000000"]);
    let line = assert_error(&out, "this run needs about ");
    assert!(
        line.contains(" ZB of memory") && line.contains(" GB available"),
        "{line}"
    );
}

#[test]
fn splits_with_no_one_to_validate_are_refused_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    // 12 users with 2 movies each.
    let ratings = dir.path().join("short.csv");
    let mut csv = String::from("userId,movieId,rating,timestamp\n");
    for user in 1..=12 {
        csv.push_str(&format!("{user},1,4.0,1\n{user},2,4.0,2\n"));
    }
    std::fs::write(&ratings, csv).unwrap();
    let run = dir.path().join("run");
    let out = train_with(&ratings, &run, &[]);
    assert_error(
        &out,
        "all 12 users have fewer than 3 interactions, and leave-one-out needs 3",
    );
    let long = write_data(dir.path());
    let out = train_with(
        &long,
        &run,
        &["--split", "random-users", "--valid-fraction", "0"],
    );
    assert_error(&out, "--valid-fraction 0 holds out no users");
    assert!(!run.exists());
}

#[test]
fn commands_on_a_run_check_their_flags_and_a_closed_pipe_ends_quietly() {
    let (_dir, _, run) = trained_run("1");
    let run_arg = run.to_str().unwrap();
    let recommend = |k: &'static str| {
        [
            "recommend",
            "--run",
            run_arg,
            "--items",
            "101",
            "--k",
            k,
            "--device",
            "cpu",
        ]
    };
    assert_error(&sasrec(&recommend("0")), "--k must be at least 1");
    let eval_k0 = sasrec(&["eval", "--run", run_arg, "--k", "0", "--device", "cpu"]);
    assert_error(&eval_k0, "--k values must be at least 1");
    // A negative number is a value, refused as such (clap: exit status 2).
    let out = sasrec(&recommend("-1"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("invalid value '-1' for '--k"),
        "{}",
        text(&out).1
    );

    // `sasrec recommend ... | head`: the reader is gone before the first line.
    let mut child = Command::new(SASREC)
        .args(recommend("30"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let (_, stderr) = text(&out);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error"),
        "{stderr}"
    );
    // Ended by SIGPIPE, as `cat` or `grep` would be.
    assert_killed_by(&out, 13);
}

#[test]
fn settings_files_are_checked_as_flags_are() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    let settings = dir.path().join("run.toml");
    // NaN and infinity are refused as on the command line (JSON, which
    // the settings pass through, has neither).
    // (The small model's flags, --lr among them, override the file's.)
    let cases = [
        ("eps = nan", "--eps must be a positive number, got NaN"),
        ("eps = inf", "--eps must be a positive number, got inf"),
        ("dropout = nan", "--dropout must be in [0, 1), got NaN"),
        (
            "[train]\nbeta1 = -inf",
            "--beta1 must be in [0, 1), got -inf",
        ),
        (
            "split = \"leave-one-out\"\nvalid_fraction = 0.3",
            "--valid-fraction is for --split random-users",
        ),
    ];
    for (toml, message) in cases {
        std::fs::write(&settings, toml).unwrap();
        let out = train_with(&ratings, &run, &["--config", settings.to_str().unwrap()]);
        assert_error(&out, message);
        assert!(!run.exists(), "{toml} left a run folder");
    }
    std::fs::write(&settings, "lr = nan").unwrap();
    let out = sasrec(&[
        "train",
        "--config",
        settings.to_str().unwrap(),
        "--ratings",
        ratings.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_error(&out, "--lr must be a positive number, got NaN");
}

#[test]
fn missing_or_empty_ids_and_logs_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out_arg = dir.path().join("run");
    // No log: a missing flag, as clap says for its own (status 2).
    for args in [
        vec!["train", "--out", out_arg.to_str().unwrap()],
        vec!["data", "stats"],
    ] {
        let out = sasrec(&args);
        let stderr = text(&out).1;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("required arguments were not provided")
                && stderr.contains("--ratings <PATH> (or --dataset <NAME>)"),
            "{stderr}"
        );
    }
    let (_dir, _, run) = trained_run("1");
    let run_arg = run.to_str().unwrap();
    let recommend = |flag, value| {
        sasrec(&[
            "recommend",
            "--run",
            run_arg,
            flag,
            value,
            "--device",
            "cpu",
        ])
    };
    assert_error(
        &recommend("--items", ""),
        "--items: id 1 of the list is empty; give item ids separated by commas",
    );
    assert_error(
        &recommend("--items", "101,,102"),
        "--items: id 2 of the list is empty",
    );
    assert_error(&recommend("--user", " "), "--user is empty");
}
