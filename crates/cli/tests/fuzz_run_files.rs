//! Loading a run folder never panics, whatever its files hold: random bytes
//! and mutations of a real run's config.json, state.json and safetensors
//! files are either loaded or refused with an error (a fixed case budget of
//! a few seconds).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;
use sasrec_kernels::CpuBackend;
use sasrec_model::checkpoint::from_safetensors;
use sasrec_model::load_model;
use sasrec_run::{RunDir, RunWriter};

use common::{text, train, write_data};

/// A real run folder, trained once by the binary.
fn fixture() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-run-files");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ratings = write_data(&dir);
        let run = dir.join("run");
        let out = train(&ratings, &run, "2");
        assert!(out.status.success(), "{}", text(&out).1);
        run
    })
}

/// A copy of the fixture run in a new temporary folder: its files named
/// `names`, or (`None`) all that loading and recovery read.
fn copy_of_fixture(names: Option<&[&str]>) -> (tempfile::TempDir, RunDir) {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path().join("run"));
    std::fs::create_dir_all(run.file("checkpoints")).unwrap();
    let commit = RunDir::new(fixture()).read_commit().unwrap().unwrap();
    let best = commit.best.unwrap().file;
    let all = [
        "config.json",
        "state.json",
        "model.safetensors",
        "metrics.jsonl",
        "curves.svg",
        "events.out.tfevents.sasrec",
        &commit.last.file,
        &best,
    ];
    for name in names.unwrap_or(&all) {
        std::fs::copy(fixture().join(name), run.file(name)).unwrap();
    }
    (dir, run)
}

/// One change to a file's bytes.
#[derive(Clone, Debug)]
enum Edit {
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Remove),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

/// Random bytes, or a few edits of the real file (most often).
fn contents() -> impl Strategy<Value = Result<Vec<u8>, Vec<Edit>>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Ok),
        4 => proptest::collection::vec(edit(), 1..6).prop_map(Err),
    ]
}

/// `contents` made concrete for the file `original`.
fn apply(original: &[u8], contents: &Result<Vec<u8>, Vec<Edit>>) -> Vec<u8> {
    let edits = match contents {
        Ok(random) => return random.clone(),
        Err(edits) => edits,
    };
    let mut bytes = original.to_vec();
    for edit in edits {
        match *edit {
            Edit::Set(i, b) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            Edit::Insert(i, b) => {
                let i = i.index(bytes.len() + 1);
                bytes.insert(i, b);
            }
            Edit::Remove(i) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes.remove(i);
            }
            Edit::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}

/// Replaces `name` in the run with `contents` applied to it.
fn damage(run: &RunDir, name: &str, contents: &Result<Vec<u8>, Vec<Edit>>) {
    let path = run.file(name);
    let original = std::fs::read(&path).unwrap();
    std::fs::write(&path, apply(&original, contents)).unwrap();
}

/// The relative path of the committed last checkpoint of the fixture.
fn last_checkpoint() -> String {
    RunDir::new(fixture())
        .read_commit()
        .unwrap()
        .unwrap()
        .last
        .file
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn damaged_config_json_is_loaded_or_refused(contents in contents()) {
        let (_tmp, run) = copy_of_fixture(Some(&["config.json", "state.json", "model.safetensors"]));
        damage(&run, "config.json", &contents);
        if run.read_config().is_ok() {
            let _ = run.load_model(&CpuBackend);
        }
    }

    #[test]
    fn damaged_state_json_is_loaded_or_refused(contents in contents()) {
        let (_tmp, run) = copy_of_fixture(None);
        damage(&run, "state.json", &contents);
        if run.read_commit().is_ok()
            && let Ok(mut writer) = RunWriter::open(run.path(), "fuzz")
        {
            let _ = writer.recover();
        }
    }

    #[test]
    fn damaged_safetensors_are_loaded_or_refused(contents in contents(), last in any::<bool>()) {
        let run = RunDir::new(fixture());
        let name = if last { last_checkpoint() } else { "model.safetensors".to_string() };
        let bytes = apply(&std::fs::read(run.file(&name)).unwrap(), &contents);
        let _ = from_safetensors(&bytes, Path::new(&name));
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        let _ = load_model(&CpuBackend, file.path(), run.read_config().unwrap().model);
    }
}

#[test]
fn the_undamaged_fixture_loads() {
    let run = RunDir::new(fixture());
    run.load_model(&CpuBackend).unwrap();
    let (_tmp, copy) = copy_of_fixture(None);
    copy.load_model(&CpuBackend).unwrap();
    let mut writer = RunWriter::open(copy.path(), "fuzz").unwrap();
    let recovery = writer.recover().unwrap();
    assert!(recovery.is_clean(), "{recovery:?}");
}
