//! `sasrec train --config FILE`: `sasrec train`'s flags from a TOML file or
//! from a run's `config.json`.
//!
//! A key is a flag's name in snake_case (`max_len = 50` for `--max-len 50`),
//! at the top level or inside the tables `[model]`, `[train]` and `[data]`,
//! which are config.json's sections: there a key is config.json's field name
//! (`selection` for `--select`, `ks` for `--k`). The settings become
//! command-line arguments placed before the real ones, so a flag given on
//! the command line overrides the file. Every value is checked by the
//! flag's own parser, and an unknown key is an error naming the key and the
//! file: a typo never goes unnoticed. A config.json is read with `preset =
//! "notebook"` unless it names one: it records every setting of its run,
//! and a setting it lacks (it predates the setting) had the notebook's value.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{Arg, ArgAction, Command};
use sasrec_model::{Selection, bounded};
use serde_json::Value;

use crate::train_cmd::{DEFAULT_SPLIT_SEED, DEFAULT_VALID_FRACTION};

/// config.json's sections.
const SECTIONS: [&str; 3] = ["model", "train", "data"];
/// config.json fields whose flag has another name: (field, flag id).
const RENAMED: [(&str, &str); 2] = [("selection", "select"), ("ks", "k")];
/// config.json entries that are found from the data, not set: read and
/// left alone (the run recomputes them).
const DERIVED: [&str; 2] = ["num_items", "ratings_digest"];
/// Flags that are actions on the command line, not settings of a run.
const NOT_KEYS: [&str; 3] = ["config", "resume", "help"];
/// The largest settings file read.
const MAX_BYTES: u64 = 1 << 20;

/// One setting: the flag's id (its long name in snake_case) and its value.
pub type Setting = (String, Value);

/// Reads a TOML file (or JSON, for `*.json`) of settings.
pub fn read(path: &Path) -> Result<Vec<Setting>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_BYTES {
        bail!(
            "{} is {size} bytes: too large for a settings file",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json = path.extension().is_some_and(|e| e == "json");
    let table = if json {
        parse_json(&text)
    } else {
        parse_toml(&text)
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut settings = settings(table).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // The preset first: it supplies the defaults the other keys override.
    if let Some(at) = settings.iter().position(|(key, _)| key == "preset") {
        let preset = settings.remove(at);
        settings.insert(0, preset);
    } else if json {
        // A run's config.json records every setting it resolved, but one
        // written before a setting existed lacks it, and such runs used
        // the notebook's values: a setting missing from it is the
        // notebook's, not the default preset's.
        settings.insert(0, ("preset".to_string(), Value::from("notebook")));
    }
    Ok(settings)
}

/// A TOML document as JSON values (date-times become their text).
pub fn parse_toml(text: &str) -> Result<serde_json::Map<String, Value>> {
    let table: toml::Table = toml::from_str(text).map_err(|err| {
        let at = err.span().map_or(0, |s| s.start);
        let line = text[..at.min(text.len())].matches('\n').count() + 1;
        anyhow::anyhow!("line {line}: {}", bounded(err.message(), 200))
    })?;
    Ok(table
        .into_iter()
        .map(|(k, v)| (k, toml_to_json(v)))
        .collect())
}

fn parse_json(text: &str) -> Result<serde_json::Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => bail!("expected an object of settings"),
        Err(err) => bail!(
            "line {}, column {}: {}",
            err.line(),
            err.column(),
            bounded(&err.to_string(), 100)
        ),
    }
}

fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        // JSON has no NaN or infinity (serde_json would make them null, read
        // as "not set"): they go on as text, for the flag's checks to refuse.
        toml::Value::Float(f) if !f.is_finite() => Value::String(f.to_string()),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// The settings of a parsed file: top-level keys, and the keys of the
/// config.json sections under their flag names. Keys are not checked yet.
pub fn settings(table: serde_json::Map<String, Value>) -> Result<Vec<Setting>> {
    let mut out: Vec<Setting> = Vec::new();
    let mut add = |key: String, value: Value, place: &str| -> Result<()> {
        if DERIVED.contains(&key.as_str()) {
            return Ok(());
        }
        let id = RENAMED
            .iter()
            .find(|(field, _)| *field == key && !place.is_empty())
            .map_or(key.clone(), |(_, flag)| flag.to_string());
        if out.iter().any(|(k, _)| *k == id) {
            bail!("`{key}` is set twice{place}");
        }
        out.push((id, value));
        Ok(())
    };
    for (key, value) in table {
        match value {
            Value::Object(fields) if SECTIONS.contains(&key.as_str()) => {
                for (field, value) in fields {
                    add(field, value, &format!(" (again in [{key}])"))?;
                }
            }
            value => add(key, value, "")?,
        }
    }
    Ok(out)
}

/// The arguments of `command` that `settings` stand for, each value checked
/// by its flag's parser; errors name the key and `origin` (the file).
/// Settings that mean nothing with the file's loss and split are left out
/// (see [`applies`]).
pub fn to_args(settings: &[Setting], command: &Command, origin: &str) -> Result<Vec<OsString>> {
    let text_of = |wanted: &str, default| {
        settings
            .iter()
            .find(|(key, _)| key == wanted)
            .and_then(|(_, value)| value.as_str())
            .unwrap_or(default)
    };
    let (loss, split) = (text_of("loss", "full"), text_of("split", "leave-one-out"));
    let used: Vec<Setting> = settings
        .iter()
        .filter(|(key, value)| applies(key, value, loss, split))
        .cloned()
        .collect();
    to_flags(&used, command, origin)
}

/// The arguments of `command` for every one of `settings`, each value
/// checked by its flag's parser: keyword arguments of the Python package,
/// where a setting the run would not use is refused, as its flag is.
pub fn to_flags(settings: &[Setting], command: &Command, origin: &str) -> Result<Vec<OsString>> {
    // Each setting alone must parse: clap checks the value (and the flag's
    // relations, e.g. --allow-changed-data needs --resume).
    let mut check = command.clone().mut_arg("out", |a| a.required(false));
    let mut args = Vec::new();
    for (key, value) in settings {
        let arg = find_arg(command, key).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        let flag = format!("--{}", arg.get_long().expect("found by its long name"));
        let bad = |why: String| anyhow::anyhow!("{origin}: `{key}`: {why}");
        let given: Vec<OsString> = if matches!(arg.get_action(), ArgAction::SetTrue) {
            match value {
                Value::Bool(true) => vec![flag.into()],
                Value::Bool(false) => continue,
                other => return Err(bad(format!("expected true or false, found {other}"))),
            }
        } else {
            match value_text(value, arg).map_err(bad)? {
                // `--flag=-inf`: a value starting with `-` is not a flag.
                Some(text) if text.starts_with('-') => vec![format!("{flag}={text}").into()],
                Some(text) => vec![flag.into(), text.into()],
                None => continue, // null: the flag's default
            }
        };
        let alone = std::iter::once(OsString::from(command.get_name())).chain(given.clone());
        check
            .try_get_matches_from_mut(alone)
            .map_err(|e| bad(clap_message(&e)))?;
        args.extend(given);
    }
    Ok(args)
}

/// Whether a setting means anything with the file's `loss` and `split`: a
/// run's config.json records the sampled losses' settings (their defaults)
/// for a full-softmax run too, and a sweep's base may set them for a grid
/// over losses; passed on, they would be refused as flags that do not
/// apply. The same goes for random-users' settings at the defaults every
/// config.json records; other values are passed on (and refused with
/// another split).
fn applies(key: &str, value: &Value, loss: &str, split: &str) -> bool {
    match key {
        "negatives" | "sampler" | "negatives_scope" | "exclude_seen" => loss != "full",
        "gbce_t" => loss == "gbce",
        "valid_fraction" => {
            split == "random-users" || value.as_f64() != Some(DEFAULT_VALID_FRACTION)
        }
        "split_seed" => split == "random-users" || value.as_u64() != Some(DEFAULT_SPLIT_SEED),
        _ => true,
    }
}

/// The argument a key names: the flag whose long name is the key with `-`
/// for `_`.
fn find_arg<'a>(command: &'a Command, key: &str) -> Result<&'a Arg> {
    let long = key.replace('_', "-");
    let arg = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()) && !NOT_KEYS.contains(&key));
    match arg {
        Some(arg) if !key.contains('-') => Ok(arg),
        Some(_) => bail!(
            "unknown key `{key}` (keys are snake_case: `{}`)",
            key.replace('-', "_")
        ),
        None if NOT_KEYS.contains(&key) => {
            bail!("`{key}` is not a setting: give --{long} on the command line")
        }
        None => bail!(
            "unknown key `{}` (the keys are the flags of `sasrec {}` in snake_case, e.g. max_len for --max-len)",
            bounded(key, 60),
            command.get_name()
        ),
    }
}

/// A value as the command line would give it; `None` for null.
fn value_text(value: &Value, arg: &Arg) -> Result<Option<String>, String> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) if arg.get_value_delimiter().is_some() => {
            let items: Result<Vec<String>, String> = items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(format!("expected a list of values, found {other}")),
                })
                .collect();
            items?.join(",")
        }
        Value::Array(_) => return Err("takes one value, not a list".to_string()),
        // config.json writes the selection metric as `{"ndcg": 10}`.
        Value::Object(_) => serde_json::from_value::<Selection>(value.clone())
            .map(|s| s.to_string())
            .map_err(|_| "takes a value, not a table".to_string())?,
    }))
}

/// A clap error's first paragraph on one line (the message and the
/// possible values, not the usage), without its `error: ` prefix.
pub fn clap_message(err: &clap::Error) -> String {
    let text = err.to_string();
    let paragraph: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = paragraph.join(" ");
    bounded(line.strip_prefix("error: ").unwrap_or(&line), 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(settings: &[(&str, Value)]) -> Vec<String> {
        let settings: Vec<Setting> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        to_args(&settings, &crate::train_cmd::train_command(), "test.toml")
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn sampled_loss_settings_pass_only_with_a_loss_that_uses_them() {
        let sampled = [
            ("negatives", Value::from(1024)),
            ("sampler", Value::from("popularity")),
            ("gbce_t", Value::from(0.5)),
        ];
        // A full-softmax run's config.json records them: they are dropped.
        let full = args(&[&[("loss", Value::from("full"))], &sampled[..]].concat());
        assert_eq!(full, ["--loss", "full"]);
        assert_eq!(args(&sampled), Vec::<String>::new());
        let gbce = args(&[&[("loss", Value::from("gbce"))], &sampled[..]].concat());
        assert_eq!(
            gbce,
            [
                "--loss",
                "gbce",
                "--negatives",
                "1024",
                "--sampler",
                "popularity",
                "--gbce-t",
                "0.5"
            ]
        );
        let bce = args(&[&[("loss", Value::from("bce"))], &sampled[..]].concat());
        assert_eq!(
            bce,
            [
                "--loss",
                "bce",
                "--negatives",
                "1024",
                "--sampler",
                "popularity"
            ]
        );
    }

    #[test]
    fn a_config_json_without_a_preset_is_the_notebooks() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("config.json");
        std::fs::write(&json, r#"{"model": {"dim": 8}}"#).unwrap();
        let keys = |path: &Path| -> Vec<String> {
            read(path)
                .unwrap()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        };
        assert_eq!(keys(&json), ["preset=\"notebook\"", "dim=8"]);
        std::fs::write(&json, r#"{"preset": "recommended", "model": {"dim": 8}}"#).unwrap();
        assert_eq!(keys(&json), ["preset=\"recommended\"", "dim=8"]);
        // A TOML settings file takes the default preset unless it names one.
        let toml = dir.path().join("run.toml");
        std::fs::write(&toml, "dim = 8\n").unwrap();
        assert_eq!(keys(&toml), ["dim=8"]);
    }
}
