//! The experiment workflow through the binary: settings files, resume with
//! a new budget, sweeps, run comparisons, overlaid plots, TensorBoard
//! files, the temporal split, progress output and `devices`.

mod common;

use std::path::Path;
use std::process::Output;

use common::{SMALL, assert_error, json, sasrec, text, train_args, write_data};
use sasrec_run::tensorboard::read_events;

/// The small model's flags as TOML lines (`max_len = 10`, ...).
fn small_toml() -> String {
    SMALL
        .chunks(2)
        .map(|kv| {
            let key = kv[0].trim_start_matches("--").replace('-', "_");
            match kv[1].parse::<f64>() {
                Ok(_) => format!("{key} = {}\n", kv[1]),
                Err(_) => format!("{key} = \"{}\"\n", kv[1]),
            }
        })
        .collect()
}

fn run_text(args: &[&str]) -> (Output, String, String) {
    let out = sasrec(args);
    let (stdout, stderr) = text(&out);
    (out, stdout, stderr)
}

/// metrics.jsonl without the timings.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let fields = v.as_object_mut().unwrap();
            for timing in ["seconds", "tokens_per_s", "valid_seconds", "ended_at"] {
                fields.remove(timing).unwrap();
            }
            v
        })
        .collect()
}

#[test]
fn a_toml_file_trains_its_config_json_replays_and_flags_override() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    let toml = dir.path().join("run.toml");
    std::fs::write(
        &toml,
        format!(
            "# a run\nratings = {:?}\nout = {:?}\nepochs = 2\nk = [5, 10]\n{}",
            ratings.to_str().unwrap(),
            run.to_str().unwrap(),
            small_toml()
        ),
    )
    .unwrap();
    let (out, _, stderr) = run_text(&["train", "--config", toml.to_str().unwrap()]);
    assert!(out.status.success(), "{stderr}");
    let config = json(&run.join("config.json"));
    assert_eq!(config["train"]["epochs"], 2);
    assert_eq!(config["train"]["ks"], serde_json::json!([5, 10]));
    assert_eq!(config["model"]["dim"], 16);

    // The run's config.json is a settings file too: the same run again.
    let replay = dir.path().join("replay");
    let config_json = run.join("config.json");
    let (out, _, stderr) = run_text(&[
        "train",
        "--config",
        config_json.to_str().unwrap(),
        "--out",
        replay.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(json(&replay.join("config.json")), config);
    assert_eq!(metrics(&replay), metrics(&run));
    let model = |r: &Path| std::fs::read(r.join("model.safetensors")).unwrap();
    assert_eq!(model(&replay), model(&run));

    // Flags on the command line override the file.
    let other = dir.path().join("other");
    let (out, _, stderr) = run_text(&[
        "train",
        "--epochs",
        "1",
        "--config",
        toml.to_str().unwrap(),
        "--dim",
        "8",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{stderr}");
    let config = json(&other.join("config.json"));
    assert_eq!(
        (
            config["train"]["epochs"].clone(),
            config["model"]["dim"].clone()
        ),
        (1.into(), 8.into())
    );
    assert_eq!(config["train"]["lr"], 0.01);
}

#[test]
fn presets_fill_what_flags_do_not_give_and_config_json_keeps_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    // One epoch into `name`: whether it succeeded, and its stderr.
    let attempt = |name: &str, extra: &[&str]| {
        let mut args = train_args(&ratings, &dir.path().join(name), "1");
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, _, stderr) = run_text(&args);
        (out.status.success(), stderr)
    };
    let train = |name: &str, extra: &[&str]| -> serde_json::Value {
        let (ok, stderr) = attempt(name, extra);
        assert!(ok, "{name}: {stderr}");
        json(&dir.path().join(name).join("config.json"))
    };
    let options = |c: &serde_json::Value| {
        let m = &c["model"];
        let t = &c["train"];
        [
            m["norm"].clone(),
            m["feed_forward"].clone(),
            m["gated_residual"].clone(),
            m["output_layer"].clone(),
            t["warmup_steps"].clone(),
            t["lr_schedule"].clone(),
            t["label_smoothing"].clone(),
            t["loss"].clone(),
            t["negatives"].clone(),
            t["negatives_scope"].clone(),
            t["exclude_seen"].clone(),
        ]
        .map(|v| v.to_string())
    };
    let recommended = train("recommended", &[]);
    assert_eq!(
        recommended,
        train("recommended-named", &["--preset", "recommended"]),
        "the default preset is the recommended one"
    );
    let notebook = train("notebook", &["--preset", "notebook"]);
    let blocks = ["\"layer\"", "\"relu\"", "false", "\"tied\""];
    let schedule = ["0", "\"constant\"", "0.0"];
    assert_eq!(options(&notebook)[..4], blocks);
    assert_eq!(options(&notebook)[4..7], schedule);
    assert_eq!(options(&notebook)[7], "\"full\"");
    // The same model and schedule; a sampled softmax over the unseen items,
    // its 3000 negatives lowered to the 18 items that the user who saw most
    // (12 of the 30 in training) left unseen.
    assert_eq!(options(&recommended)[..4], blocks);
    assert_eq!(options(&recommended)[4..7], schedule);
    assert_eq!(
        options(&recommended)[7..],
        ["\"sampled-softmax\"", "18", "\"sequence\"", "true"]
    );
    // A preset, one of its values overridden by a flag; the small model's
    // own flags (dim 16, lr 0.01, ...) override it too.
    let mixed = train(
        "mixed",
        &["--preset", "recommended", "--feed-forward", "swiglu"],
    );
    assert_eq!(mixed["model"]["feed_forward"], "swiglu");
    assert_eq!(mixed["model"]["dim"], 16);
    assert_eq!(mixed["train"]["lr"], 0.01);
    let (mut a, mut b) = (options(&recommended), options(&mixed));
    (a[1], b[1]) = (String::new(), String::new());
    assert_eq!(a, b, "only the flag's setting differs");
    // Without --max-len the recommended preset fits it to the histories
    // (11 events per user, 9 of them for training: 50) and says so; the
    // notebook preset and a given --max-len keep theirs.
    let without_max_len = |name: &str, extra: &[&str]| {
        let mut args = train_args(&ratings, &dir.path().join(name), "1");
        let at = args.iter().position(|a| a == "--max-len").unwrap();
        args.drain(at..at + 2);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, _, stderr) = run_text(&args);
        assert!(out.status.success(), "{name}: {stderr}");
        let config = json(&dir.path().join(name).join("config.json"));
        (config["model"]["max_len"].clone(), stderr)
    };
    let (max_len, stderr) = without_max_len("fitted", &[]);
    assert_eq!(max_len, 50);
    assert!(
        stderr.contains(
            "max_len: 50 (the recommended preset's, for training histories of 9 events on average)"
        ),
        "{stderr}"
    );
    let (max_len, stderr) = without_max_len("notebook-len", &["--preset", "notebook"]);
    assert_eq!(max_len, 50);
    assert!(!stderr.contains("max_len:"), "{stderr}");
    assert!(!attempt("given-len", &[]).1.contains("max_len:"));
    // Lowering the preset's negatives says so; negatives given as a flag
    // are never lowered: too many are refused.
    let (ok, stderr) = attempt("capped", &[]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("negatives: 18 instead of 3000 (user index"),
        "{stderr}"
    );
    let (ok, stderr) = attempt("too-many", &["--negatives", "19"]);
    assert!(!ok);
    assert!(
        stderr.contains("--negatives must be at most 18 with exclude_seen"),
        "{stderr}"
    );
    // Users who have seen every item leave none to draw: a clear refusal.
    let seen_all = dir.path().join("seen-all.csv");
    let mut csv = String::from("userId,movieId,rating,timestamp\n");
    for user in 1..=3 {
        for (i, movie) in [1, 2, 3, 1, 2].iter().enumerate() {
            csv.push_str(&format!("{user},{movie},4.0,{}\n", 1000 + i));
        }
    }
    std::fs::write(&seen_all, csv).unwrap();
    let args = train_args(&seen_all, &dir.path().join("seen-all"), "1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, _, stderr) = run_text(&args);
    assert!(!out.status.success());
    assert!(
        stderr.contains("has seen all 3 items: train with --loss full"),
        "{stderr}"
    );

    // A config.json from before the options existed lacks them: its run
    // was the notebook's, and so is its replay (config_file's unit tests
    // check that this holds whatever the default preset).
    let mut old = notebook.clone();
    for key in [
        "norm",
        "feed_forward",
        "gated_residual",
        "output_layer",
        "rotary",
    ] {
        old["model"].as_object_mut().unwrap().remove(key);
    }
    for key in [
        "weight_decay",
        "warmup_steps",
        "lr_schedule",
        "label_smoothing",
        "grad_clip",
    ] {
        old["train"].as_object_mut().unwrap().remove(key);
    }
    let old_json = dir.path().join("old-config.json");
    std::fs::write(&old_json, serde_json::to_vec(&old).unwrap()).unwrap();
    let replay = dir.path().join("replay");
    let (out, _, stderr) = run_text(&[
        "train",
        "--config",
        old_json.to_str().unwrap(),
        "--out",
        replay.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{stderr}");
    let replayed = json(&replay.join("config.json"));
    assert_eq!(replayed["train"]["label_smoothing"], 0.0);
    assert_eq!(replayed["model"], notebook["model"]);
    assert_eq!(replayed["train"], notebook["train"]);
}

#[test]
fn bad_settings_files_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let out = dir.path().join("run");
    let cases = [
        ("lrr = 0.1", "bad.toml: unknown key `lrr`"),
        (
            "max-len = 10",
            "bad.toml: unknown key `max-len` (keys are snake_case: `max_len`)",
        ),
        (
            "split = \"bogus\"",
            "bad.toml: `split`: invalid value 'bogus' for '--split",
        ),
        (
            "epochs = \"ten\"",
            "bad.toml: `epochs`: invalid value 'ten'",
        ),
        (
            "epochs = 2\n[train]\nepochs = 3",
            "bad.toml: `epochs` is set twice",
        ),
        ("resume = true", "bad.toml: `resume` is not a setting"),
        (
            "dim = [1, 2]",
            "bad.toml: `dim`: takes one value, not a list",
        ),
        ("lr = ", "bad.toml: line 1: "),
    ];
    for (line, message) in cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, format!("{line}\n")).unwrap();
        let result = sasrec(&[
            "train",
            "--config",
            file.to_str().unwrap(),
            "--ratings",
            ratings.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_error(&result, message);
        assert!(!out.exists(), "{line}: a run folder was left");
    }
}

#[test]
fn resume_extends_a_finished_run_and_refuses_other_flags() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let (short, long) = (dir.path().join("short"), dir.path().join("long"));
    let train = |run: &Path, epochs: &str| {
        let out = std::process::Command::new(common::SASREC)
            .args(train_args(&ratings, run, epochs))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out).1);
    };
    train(&short, "2");
    train(&long, "4");

    let run_arg = short.to_str().unwrap();
    let resume = |extra: &[&str]| {
        let mut args = vec!["train", "--resume", "--out", run_arg, "--device", "cpu"];
        args.extend(extra);
        sasrec(&args)
    };
    assert_error(
        &resume(&["--lr", "0.1", "--dim", "8"]),
        "--dim, --lr cannot be given with --resume",
    );
    assert_error(
        &resume(&["--epochs", "1"]),
        "--epochs 1 is less than the 2 epochs",
    );

    let out = resume(&["--epochs", "4"]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("epochs 2 -> 4 (recorded in config.json)"),
        "{stderr}"
    );
    assert!(stderr.contains("continuing at epoch 3"), "{stderr}");
    assert_eq!(json(&short.join("config.json"))["train"]["epochs"], 4);
    // Extending the run gives the run trained for 4 epochs at once.
    assert_eq!(metrics(&short), metrics(&long));
    let model = |r: &Path| std::fs::read(r.join("model.safetensors")).unwrap();
    assert_eq!(model(&short), model(&long));

    // A finished run resumed as it is says so and reports again.
    let out = resume(&[]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(
        text(&out).1.contains("is finished (all 4 epochs are done)"),
        "{}",
        text(&out).1
    );
}

/// `sasrec train` on the CPU without a terminal: no bars, no carriage
/// returns, epochs as n/max.
#[test]
fn progress_is_quiet_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    let out = std::process::Command::new(common::SASREC)
        .args(train_args(&ratings, &run, "2"))
        .args(["--threads", "1"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(stderr.contains("device: cpu (1 thread)\n"), "{stderr}");
    assert!(stderr.contains("epoch   1/2  train loss"), "{stderr}");
    assert!(stderr.contains("left at most"), "{stderr}");
    // --threads sizes the pool before eval reads the log (which uses it).
    let (out, _, stderr) = run_text(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]);
    assert!(out.status.success() && !stderr.contains('\r'), "{stderr:?}");

    // TensorBoard's file beside metrics.jsonl: a version event, then one
    // event per epoch with the curves' scalars.
    let events =
        read_events(&std::fs::read(run.join("events.out.tfevents.sasrec")).unwrap()).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    let tags: Vec<String> = events[2]
        .summary
        .as_ref()
        .unwrap()
        .value
        .iter()
        .map(|v| v.tag.clone())
        .collect();
    for tag in [
        "loss/train",
        "loss/valid",
        "valid/HR@10",
        "valid/NDCG@20",
        "valid/MRR",
    ] {
        assert!(tags.iter().any(|t| t == tag), "{tag} missing from {tags:?}");
    }
    let loss = events[2].summary.as_ref().unwrap().value[1]
        .simple_value
        .unwrap();
    let recorded = metrics(&run)[1]["valid"]["loss"].as_f64().unwrap();
    assert_eq!(loss, recorded as f32);
}

#[test]
fn a_sweep_tabulates_settings_over_seeds_and_skips_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let out = dir.path().join("sweep");
    let base = dir.path().join("base.toml");
    std::fs::write(
        &base,
        format!(
            "ratings = {:?}\nepochs = 2\n{}",
            ratings.to_str().unwrap(),
            small_toml()
        ),
    )
    .unwrap();
    let sweep = dir.path().join("sweep.toml");
    std::fs::write(
        &sweep,
        format!(
            "out = {:?}\nseeds = [1, 2]\nbase = {:?}\n[grid]\ndim = [8, 16]\nlr = [0.01]\n",
            out.to_str().unwrap(),
            base.to_str().unwrap()
        ),
    )
    .unwrap();
    let (result, stdout, stderr) = run_text(&["sweep", sweep.to_str().unwrap()]);
    assert!(result.status.success(), "{stderr}");
    assert!(stderr.contains("[4/4]"), "{stderr}");
    assert!(stdout.contains("over 2 seeds"), "{stdout}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("dim=")).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(
        rows[0].starts_with("dim=8 ") && rows[0].contains(" 2 ") && rows[0].contains(" ± "),
        "{stdout}"
    );

    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[0].starts_with("setting,n,valid NDCG@10 mean,valid NDCG@10 sd"),
        "{csv}"
    );
    // The mean over the seeds is the mean of the two runs' numbers.
    let ndcg = |run: &str| {
        let state = json(&out.join(run).join("state.json"));
        let best = state["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["best"] == true)
            .unwrap()
            .clone();
        best["valid"]["ranking"]["at"][0]["ndcg"].as_f64().unwrap()
    };
    let mean: f64 = lines[1].split(',').nth(2).unwrap().parse().unwrap();
    let expected = (ndcg("dim=8-seed1") + ndcg("dim=8-seed2")) / 2.0;
    assert!((mean - expected).abs() < 1e-12, "{mean} vs {expected}");
    assert!(
        std::fs::read_to_string(out.join("summary.md"))
            .unwrap()
            .contains("| dim=16 | 2 |")
    );

    // Again: every run is done, nothing is trained or rewritten.
    let state = std::fs::read(out.join("dim=8-seed1/state.json")).unwrap();
    let (result, _, stderr) = run_text(&["sweep", sweep.to_str().unwrap()]);
    assert!(result.status.success(), "{stderr}");
    assert_eq!(stderr.matches(": done").count(), 4, "{stderr}");
    assert_eq!(
        std::fs::read(out.join("dim=8-seed1/state.json")).unwrap(),
        state
    );

    // `sasrec runs` shows the settings that differ.
    let (result, stdout, stderr) = run_text(&["runs", out.to_str().unwrap()]);
    assert!(result.status.success(), "{stderr}");
    let header: Vec<&str> = stdout
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        &header[..5],
        ["run", "dim", "ff_dim", "seed", "best epoch"],
        "{stdout}"
    );
    assert!(stdout.contains("dim=16-seed2"), "{stdout}");
    assert_eq!(stdout.lines().count(), 5, "{stdout}");

    // Overlaid curves: one line per run in each panel, labelled by run.
    let svg_path = dir.path().join("cmp.svg");
    let runs = ["dim=8-seed1", "dim=16-seed1", "dim=16-seed2"].map(|r| out.join(r));
    let mut args = vec!["plot", "--out", svg_path.to_str().unwrap(), "--runs"];
    args.extend(runs.iter().map(|r| r.to_str().unwrap()));
    let (result, _, stderr) = run_text(&args);
    assert!(result.status.success(), "{stderr}");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    // A series is a line of width 2 across the data area, one point per
    // epoch (legend samples and dashes are short, axes thin).
    let mut series: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
        .filter(|n| {
            let xs: Vec<f64> = n
                .attribute("points")
                .unwrap()
                .split_whitespace()
                .map(|p| p.split(',').next().unwrap().parse().unwrap())
                .collect();
            xs.len() == 2 && xs[1] - xs[0] > 100.0
        })
        .filter_map(|n| n.attribute("stroke"))
        .collect();
    series.sort();
    let mut colours = series.clone();
    colours.dedup();
    // Two panels (validation loss and NDCG@10), one series per run in each;
    // the shared most-popular baseline is dashed.
    assert_eq!((series.len(), colours.len()), (6, 3), "{series:?}");
    let texts: Vec<&str> = doc
        .descendants()
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for name in [
        "dim=8-seed1",
        "dim=16-seed1",
        "dim=16-seed2",
        "most popular",
    ] {
        assert!(texts.contains(&name), "{name} missing from the legend");
    }
}

#[test]
fn a_temporal_split_trains_and_tests_after_its_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    let mut args = train_args(&ratings, &run, "2");
    args.extend(
        [
            "--split",
            "temporal",
            "--valid-time-fraction",
            "0.5",
            "--test-time-fraction",
            "0.75",
        ]
        .map(String::from),
    );
    let out = std::process::Command::new(common::SASREC)
        .args(&args)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("split temporal (valid from 1970-01-12"),
        "{stderr}"
    );
    assert!(stdout.contains("test popular"), "{stdout}");
    assert_eq!(
        json(&run.join("config.json"))["data"]["valid_time_fraction"],
        0.5
    );

    let bad = dir.path().join("bad");
    for (flags, message) in [
        (
            vec!["--split", "temporal"],
            "--valid-time is needed by the temporal split (or --valid-time-fraction)",
        ),
        (
            vec![
                "--split",
                "temporal",
                "--valid-time",
                "1970-13-01",
                "--test-time",
                "2000000",
            ],
            "--valid-time \"1970-13-01\" is not a time",
        ),
        (
            vec!["--valid-time", "1000"],
            "--valid-time starts a window of the temporal split, not of leave-one-out",
        ),
        (
            vec![
                "--split",
                "temporal",
                "--valid-time",
                "2000000",
                "--test-time",
                "1000000",
            ],
            "is not before the test cut",
        ),
    ] {
        let mut args = train_args(&ratings, &bad, "1");
        args.extend(flags.iter().map(|s| s.to_string()));
        let out = std::process::Command::new(common::SASREC)
            .args(&args)
            .output()
            .unwrap();
        assert_error(&out, message);
        assert!(!bad.exists());
    }
}

#[test]
fn devices_lists_without_probe_noise_and_a_failed_gpu_leaves_no_folder() {
    let (out, stdout, stderr) = run_text(&["devices"]);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
    assert!(!stdout.contains("allow_cpu_adapter"), "{stdout}");
    assert!(stdout.contains("--device gpu"), "{stdout}");

    // Without a GPU (only CPU adapters, as in CI) --device gpu fails before
    // the run folder is made.
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    let mut args = train_args(&ratings, &run, "1");
    args.extend(["--device", "gpu"].map(String::from));
    let out = std::process::Command::new(common::SASREC)
        .args(&args)
        .output()
        .unwrap();
    if !out.status.success() {
        assert_error(&out, "opening the GPU");
        assert!(
            !run.exists(),
            "a failed --device gpu left {}",
            run.display()
        );
    }
}
