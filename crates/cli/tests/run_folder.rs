//! Run folders survive anything, through the binary: a kill after any file
//! operation of training, a full disk, a second writer, a failure before the
//! first checkpoint, `--force`, edited checkpoints and a changed ratings file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{
    SASREC, assert_error, assert_killed_by, json, resume, sasrec, signal, temporary_files, text,
    train, train_args, trained_run, wait_for, write_data,
};

/// What an uninterrupted run and a killed-and-resumed run must agree on,
/// byte for byte: the best and last checkpoints, the published model,
/// curves and test numbers, and state.json and metrics.jsonl without their
/// timings; TensorBoard's event file holds the same scalars.
#[derive(Debug, PartialEq)]
struct Outcome {
    model: Vec<u8>,
    last: Vec<u8>,
    best: Vec<u8>,
    curves: Vec<u8>,
    test: Vec<u8>,
    state: serde_json::Value,
    metrics: Vec<serde_json::Value>,
    /// TensorBoard's scalars: (step, tag, value), wall times and speed aside.
    events: Vec<(i64, String, f32)>,
}

fn without_timings(mut record: serde_json::Value) -> serde_json::Value {
    let fields = record.as_object_mut().unwrap();
    for timing in ["seconds", "tokens_per_s", "valid_seconds", "ended_at"] {
        fields.remove(timing).unwrap();
    }
    record
}

fn outcome(run: &Path) -> Outcome {
    let read = |name: &str| std::fs::read(run.join(name)).unwrap();
    let mut state = json(&run.join("state.json"));
    let epochs = state["epochs"].take();
    state["epochs"] = epochs
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(without_timings)
        .collect();
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| without_timings(serde_json::from_str(l).unwrap()))
        .collect();
    Outcome {
        model: read("model.safetensors"),
        last: read(state["last"]["file"].as_str().unwrap()),
        best: read(state["best"]["file"].as_str().unwrap()),
        curves: read("curves.svg"),
        test: read("test.json"),
        state,
        metrics,
        events: sasrec_run::tensorboard::read_events(&read("events.out.tfevents.sasrec"))
            .unwrap()
            .into_iter()
            .flat_map(|e| {
                let step = e.step;
                e.summary.into_iter().flat_map(move |s| {
                    s.value
                        .into_iter()
                        .map(move |v| (step, v.tag, v.simple_value.unwrap()))
                })
            })
            .filter(|(_, tag, _)| !tag.starts_with("speed/"))
            .collect(),
    }
}

/// Trains 2 epochs into `run` with SASREC_FAIL_AT set; returns the pid too.
fn train_failing_at(ratings: &Path, run: &Path, fail_at: &str) -> (Output, u32) {
    let child = Command::new(SASREC)
        .args(train_args(ratings, run, "2"))
        .env("SASREC_FAIL_AT", fail_at)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

/// Finishes a run after a failure: `--resume` once the folder holds a run,
/// else the same training from scratch.
fn finish(ratings: &Path, run: &Path) -> Output {
    if run.join("config.json").exists() {
        resume(run)
    } else {
        train(ratings, run, "2")
    }
}

#[test]
fn a_kill_after_any_file_operation_resumes_to_the_uninterrupted_run() {
    let (dir, ratings, straight) = trained_run("2");
    let expected = outcome(&straight);

    // Operation k: every write, fsync, rename and removal in the run folder,
    // from its creation to the report, in order. Past the last one the run
    // finishes untouched.
    let mut k = 1;
    loop {
        let run = dir.path().join(format!("killed-at-{k}"));
        let (out, pid) = train_failing_at(&ratings, &run, &k.to_string());
        if out.status.success() {
            break;
        }
        assert!(!text(&out).1.contains("panicked"), "operation {k}");
        assert_killed_by(&out, 6); // SIGABRT

        let out = finish(&ratings, &run);
        let (_, stderr) = text(&out);
        assert!(out.status.success(), "after operation {k}:\n{stderr}");
        // The killed process held the lock: its successor says it takes over.
        assert!(
            stderr.contains(&format!(
                "sasrec train (pid {pid}) stopped without releasing the run folder"
            )),
            "after operation {k}:\n{stderr}"
        );
        assert_eq!(
            outcome(&run),
            expected,
            "killed after operation {k} and resumed"
        );
        assert_eq!(temporary_files(&run), Vec::<PathBuf>::new());
        std::fs::remove_dir_all(&run).unwrap();
        k += 1;
    }
    // Creation, two epochs of checkpoints and the report: far more than a few.
    assert!(k > 40, "only {} file operations", k - 1);
}

#[test]
fn a_full_disk_at_any_file_operation_is_an_error_and_the_run_resumes() {
    let (dir, ratings, straight) = trained_run("2");
    let expected = outcome(&straight);

    // Every third operation fails as on a full disk (the kill test above
    // covers each one).
    let mut k = 1;
    loop {
        let run = dir.path().join(format!("full-at-{k}"));
        let (out, _) = train_failing_at(&ratings, &run, &format!("{k}:error"));
        if out.status.success() {
            break;
        }
        assert_error(&out, "no space left on device (simulated");
        assert_eq!(temporary_files(&run), Vec::<PathBuf>::new());
        let out = finish(&ratings, &run);
        assert!(
            out.status.success(),
            "after operation {k}:\n{}",
            text(&out).1
        );
        assert_eq!(outcome(&run), expected, "failed at operation {k}, resumed");
        std::fs::remove_dir_all(&run).unwrap();
        k += 3;
    }
}

#[test]
fn a_second_writer_is_refused_with_the_pid_and_sigterm_saves() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    let first = Command::new(SASREC)
        .args(train_args(&ratings, &run, "100000"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&run.join("state.json"));
    let holder = format!("in use by sasrec train (pid {})", first.id());

    let run_arg = run.to_str().unwrap();
    assert_error(&resume(&run), &holder);
    let mut replace = train_args(&ratings, &run, "2");
    replace.push("--force".into());
    assert_error(
        &Command::new(SASREC).args(&replace).output().unwrap(),
        &holder,
    );
    assert_error(&sasrec(&["plot", "--run", run_arg]), &holder);
    // Readers go on while the run trains.
    let out = sasrec(&["eval", "--run", run_arg, "--device", "cpu"]);
    assert!(out.status.success(), "{}", text(&out).1);

    // SIGTERM stops the first like Ctrl-C: progress saved, exit status 130.
    signal(first.id(), "TERM");
    let out = first.wait_with_output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("saved; continue with"), "{stderr}");
    // Its lock went with it, cleanly: the next writer takes the folder silently.
    let out = sasrec(&["plot", "--run", run_arg]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(!text(&out).1.contains("taking it over"));
}

#[test]
fn a_run_that_fails_before_its_first_checkpoint_resumes_or_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    // Such a learning rate blows the weights up at the first step.
    let mut args = train_args(&ratings, &run, "2");
    args.extend(["--lr", "1e30"].map(String::from));
    let diverge = || Command::new(SASREC).args(&args).output().unwrap();
    let out = diverge();
    let error = assert_error(
        &out,
        "at step 2 (epoch 1, batch 2); stopped: the run folder has no checkpoint yet",
    );
    assert!(
        error.contains("the training loss became") || error.contains("the gradient of"),
        "{error}"
    );
    assert!(run.join("config.json").exists() && !run.join("state.json").exists());

    // --resume starts it again from step 0 with its settings (and so fails
    // again, the same way); a new train refuses the folder; --force replaces it.
    let out = resume(&run);
    assert!(
        text(&out)
            .1
            .contains("has no checkpoint yet: starting at step 0"),
        "{}",
        text(&out).1
    );
    assert_error(&out, "at step 2 (epoch 1, batch 2)");
    assert_error(&train(&ratings, &run, "2"), "already holds a run");
    let mut force = train_args(&ratings, &run, "2");
    force.push("--force".into());
    let out = Command::new(SASREC).args(&force).output().unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(
        text(&out).1.contains("replaced the run in"),
        "{}",
        text(&out).1
    );
    assert_eq!(json(&run.join("config.json"))["train"]["lr"], 0.01);

    // A folder of other files is never cleared, even with --force.
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let mut force = train_args(&ratings, &mine, "2");
    force.push("--force".into());
    let out = Command::new(SASREC).args(&force).output().unwrap();
    assert_error(&out, "holds files a run folder does not (notes.txt)");
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );
    let out = sasrec(&["plot", "--run", mine.to_str().unwrap()]);
    assert_error(&out, "holds no run (no config.json");
    assert!(
        !mine.join("lock").exists(),
        "a lock file was left in a foreign folder"
    );
}

/// `sasrec recommend --items 101,102 --k 3` on the run.
fn recommend(run: &Path) -> Output {
    sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--items",
        "101,102",
        "--k",
        "3",
        "--device",
        "cpu",
    ])
}

/// The byte offset of the first value of `tensor` in a safetensors file.
fn tensor_offset(file: &[u8], tensor: &str) -> usize {
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + header_len]).unwrap();
    8 + header_len + header[tensor]["data_offsets"][0].as_u64().unwrap() as usize
}

#[test]
fn edited_checkpoints_are_refused_and_resume_restores_them() {
    let (_dir, _, run) = trained_run("2");
    let model = run.join("model.safetensors");
    let good = std::fs::read(&model).unwrap();
    let good_top = text(&recommend(&run)).0;

    // A NaN in the item table (the row of the first movie, 101).
    let mut nan = good.clone();
    let at = tensor_offset(&nan, "item_embedding.weight") + 16 * 4;
    nan[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&model, &nan).unwrap();
    let message =
        "model.safetensors: tensor item_embedding.weight holds NaN (element 16 of shape [31, 16])";
    assert_error(&recommend(&run), message);
    let run_arg = run.to_str().unwrap();
    assert_error(
        &sasrec(&["eval", "--run", run_arg, "--device", "cpu"]),
        message,
    );

    // A finite change is caught by the checksum.
    let mut edited = good.clone();
    edited[at] ^= 1;
    std::fs::write(&model, &edited).unwrap();
    let best = json(&run.join("state.json"))["best"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    assert_error(
        &recommend(&run),
        &format!("model.safetensors does not match {best} (same size, different content"),
    );

    // Resuming the finished run rewrites it from the checkpoint, and says so.
    let out = resume(&run);
    assert!(out.status.success(), "{}", text(&out).1);
    let note = format!(
        "note: repaired {}: rewrote model.safetensors\n",
        run.display()
    );
    assert!(text(&out).1.contains(&note), "{}", text(&out).1);
    assert_eq!(std::fs::read(&model).unwrap(), good);
    assert_eq!(text(&recommend(&run)).0, good_top);

    // A damaged last checkpoint stops a resume, naming it.
    let last = run.join(
        json(&run.join("state.json"))["last"]["file"]
            .as_str()
            .unwrap(),
    );
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&last, bytes).unwrap();
    assert_error(&resume(&run), "does not match its checksum in state.json");
}

/// The files under a folder (relative paths) and their bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(files(&path));
        } else {
            all.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    all.sort();
    all
}

#[test]
fn a_damaged_best_checkpoint_or_a_lost_state_json_stops_a_resume_and_changes_nothing() {
    let (_dir, _, run) = trained_run("2");
    let state = json(&run.join("state.json"));
    let best = run.join(state["best"]["file"].as_str().unwrap());

    // A best checkpoint edited in place, the published copy intact.
    let good = std::fs::read(&best).unwrap();
    let mut edited = good.clone();
    let at = tensor_offset(&edited, "item_embedding.weight");
    edited[at] ^= 1;
    std::fs::write(&best, &edited).unwrap();
    let before = files(&run);
    let line = assert_error(
        &resume_with_epochs(&run, "3"),
        "does not match its checksum in state.json",
    );
    assert!(
        line.contains(state["best"]["file"].as_str().unwrap()),
        "{line}"
    );
    assert_eq!(files(&run), before);
    std::fs::write(&best, &good).unwrap();

    // state.json gone: the checkpoints stay, and the error says what is there.
    std::fs::remove_file(run.join("state.json")).unwrap();
    let before = files(&run);
    let line = assert_error(&resume_with_epochs(&run, "3"), "has no state.json");
    assert!(
        line.contains("checkpoints/last-2.safetensors") && line.contains("nothing was changed"),
        "{line}"
    );
    assert_eq!(files(&run), before);
}

/// `sasrec train --resume --epochs N --out run` on the CPU.
fn resume_with_epochs(run: &Path, epochs: &str) -> Output {
    sasrec(&[
        "train",
        "--resume",
        "--epochs",
        epochs,
        "--out",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ])
}

#[test]
fn a_changed_ratings_file_is_refused_unless_allowed() {
    let (_dir, ratings, run) = trained_run("1");
    let mut csv = std::fs::read_to_string(&ratings).unwrap();
    csv = csv.replacen("4.0", "3.0", 1); // same size, different content
    std::fs::write(&ratings, csv).unwrap();

    let run_arg = run.to_str().unwrap();
    // eval of the stored split reads no log; with --ratings it reads one.
    assert!(
        sasrec(&["eval", "--run", run_arg, "--device", "cpu"])
            .status
            .success()
    );
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--run", run_arg, "--device", "cpu"];
        args.extend(["--ratings", ratings.to_str().unwrap()]);
        args.extend(extra);
        sasrec(&args)
    };
    let message = "ratings.csv changed since the run was trained (same size, different content";
    assert_error(&eval(&[]), message);
    assert_error(&resume(&run), message);
    let out = eval(&["--allow-changed-data"]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).1.contains("warning: "), "{}", text(&out).1);
}

#[test]
fn a_hand_edited_config_is_a_clear_error() {
    let (_dir, _, run) = trained_run("1");
    let path = run.join("config.json");
    let good = json(&path);
    let run_arg = run.to_str().unwrap();
    for (section, field, value, message) in [
        (
            "data",
            "valid_fraction",
            serde_json::json!(2.0),
            "config.json: valid_fraction must be in [0, 1), got 2",
        ),
        (
            "train",
            "lr",
            serde_json::json!(-1.0),
            "config.json: lr must be a positive number, got -1",
        ),
        (
            "model",
            "dim",
            serde_json::json!("x".repeat(5000)),
            "\", expected usize",
        ),
    ] {
        let mut config = good.clone();
        config[section][field] = value;
        std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
        let line = assert_error(
            &sasrec(&["eval", "--run", run_arg, "--device", "cpu"]),
            message,
        );
        assert!(line.len() < 300, "unbounded: {line}");
    }
}
