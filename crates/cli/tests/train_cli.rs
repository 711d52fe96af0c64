//! The `sasrec` binary end to end, as a user runs it: train a small model on
//! a generated ratings file, evaluate, recommend, plot, interrupt and resume,
//! and get clear errors for bad input.

mod common;

use std::process::Command;

use common::{
    SASREC, assert_error, json, resume, sasrec, signal, text, train, train_args, wait_for,
    write_data,
};

#[test]
fn train_eval_recommend_plot() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");

    let out = train(&ratings, &run, "4");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "train failed:\n{stderr}");
    for line in ["best epoch", "valid", "test ", "test popular", "curves"] {
        assert!(
            stdout.contains(line),
            "train output lacks {line:?}:\n{stdout}"
        );
    }
    for file in [
        "config.json",
        "vocab.json",
        "model.safetensors",
        "state.json",
        "curves.svg",
        "test.json",
    ] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    let last = json(&run.join("state.json"))["last"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(run.join(last).exists());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);

    // The same folder again is refused rather than overwritten.
    assert_error(&train(&ratings, &run, "4"), "already holds a run");

    let out = sasrec(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--json",
        "--k",
        "5,10",
        "--device",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["model"]["ranking"]["users"], 40);
    let hr10 = json["model"]["ranking"]["at"][1]["hr"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&hr10));

    // User 5 rated movies 101 + (15 + i) % 30 for i < 13.
    let seen: Vec<u32> = (0..13).map(|i| 101 + (15 + i) % 30).collect();
    let out = sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--user",
        "5",
        "--k",
        "6",
        "--device",
        "cpu",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with(" rank"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 6, "{stdout}");
    for row in rows {
        let movie: u32 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(
            !seen.contains(&movie),
            "recommended already-rated movie {movie}"
        );
        assert!(
            row.contains(&format!("Film {movie}, The (1999)")),
            "no title in {row:?}"
        );
    }

    let out = sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--items",
        "101,999999",
        "--device",
        "cpu",
        "--strict",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("item ids not known to the model: 999999"),
        "{}",
        text(&out).1
    );

    let curves = std::fs::read(run.join("curves.svg")).unwrap();
    std::fs::remove_file(run.join("curves.svg")).unwrap();
    let out = sasrec(&["plot", "--run", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(std::fs::read(run.join("curves.svg")).unwrap(), curves);
}

#[test]
fn ctrl_c_saves_and_resume_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    let child = Command::new(SASREC)
        .args(train_args(&ratings, &run, "100000"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Wait for the first epoch, then press Ctrl-C.
    wait_for(&run.join("state.json"));
    signal(child.id(), "INT");
    let out = child.wait_with_output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("sasrec train --resume --out"), "{stderr}");
    let state = json(&run.join("state.json"));
    let step = state["progress"]["step"].as_u64().unwrap();
    assert!(
        step >= 5,
        "at least one epoch of 5 batches was saved, got step {step}"
    );

    // A resumed run keeps its saved settings: shorten the epoch budget in
    // config.json so that it ends two epochs after the saved one.
    let config_path = run.join("config.json");
    let mut config = json(&config_path);
    let done = state["progress"]["epoch"].as_u64().unwrap();
    config["train"]["epochs"] = serde_json::json!(done + 2);
    std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
    let out = resume(&run);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("continuing at epoch {}, step {step}", done + 1)),
        "{stderr}"
    );
    assert!(stdout.contains("best epoch"), "{stdout}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count() as u64, done + 2);
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ratings.csv");
    std::fs::write(
        &bad,
        "userId,movieId,rating,timestamp\n1,10,4.0,100\n1,x,3.5,200\n",
    )
    .unwrap();
    let out = sasrec(&[
        "train",
        "--ratings",
        bad.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert_error(&out, "ratings.csv: line 3: field `movieId`");

    let ratings = write_data(dir.path());
    let out = sasrec(&[
        "train",
        "--ratings",
        ratings.to_str().unwrap(),
        "--out",
        "x",
        "--dim",
        "10",
        "--heads",
        "3",
    ]);
    assert_error(&out, "--dim 10 is not a multiple of heads 3");

    let out = sasrec(&[
        "eval",
        "--run",
        dir.path().join("nothing").to_str().unwrap(),
    ]);
    assert_error(&out, "holds no run (no config.json");
}

#[test]
fn eval_every_validates_every_nth_epoch_and_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    let mut args = train_args(&ratings, &run, "5");
    args.extend(
        [
            "--eval-every",
            "2",
            "--loss",
            "sampled-softmax",
            "--negatives",
            "8",
        ]
        .map(String::from),
    );
    let out = sasrec(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "train failed:\n{stderr}");
    // Validated after epochs 2 and 4, and after the last, 5.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(epochs, [2, 4, 5]);
    assert!(stdout.contains(" of 5 (by valid"), "{stdout}");
    // A sampled loss draws uniform negatives per sequence among the user's
    // unseen items unless told otherwise.
    assert!(
        stderr.contains("8 uniform unseen negatives per sequence"),
        "{stderr}"
    );
    assert_eq!(
        json(&run.join("config.json"))["train"]["exclude_seen"],
        true
    );
    assert_eq!(json(&run.join("state.json"))["progress"]["epoch"], 5);
}
