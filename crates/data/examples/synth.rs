//! Writes a synthetic log with a planted sequential signal
//! (`sasrec_data::synthetic::Transitions`): CSV, or Parquet for `*.parquet`;
//! with `--shop`, a shop's event log (views, carts, purchases, duplicates).
//!
//! `cargo run --release -p sasrec-data --example synth -- --users U --items I --rows R --seed S --out PATH [--string-ids] [--shop] [--long-range]`
//! (`cargo xtask data synth` and `cargo xtask data shop` run this.)

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Result<String, String> {
        let at = args
            .iter()
            .position(|a| a == flag)
            .ok_or(format!("missing {flag}"))?;
        args.get(at + 1)
            .cloned()
            .ok_or(format!("{flag} needs a value"))
    };
    let number =
        |flag: &str| -> Result<usize, Box<dyn std::error::Error>> { Ok(value(flag)?.parse()?) };
    let setting = if args.iter().any(|a| a == "--long-range") {
        sasrec_data::synthetic::Transitions::long_range
    } else {
        sasrec_data::synthetic::Transitions::new
    };
    let mut log = setting(
        number("--users")?,
        number("--items")?,
        number("--rows")?,
        value("--seed").map_or(Ok(0), |s| s.parse())?,
    );
    log.string_ids = args.iter().any(|a| a == "--string-ids");
    let out = PathBuf::from(value("--out")?);
    // `--out datasets/x.csv` on a fresh checkout: make the folder.
    if let Some(folder) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)
            .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    }
    let start = std::time::Instant::now();
    if args.iter().any(|a| a == "--shop") {
        log.write_shop(&out)?;
    } else {
        log.write(&out)?;
    }
    println!(
        "wrote {} events of {} users over {} items to {} in {:.1} s",
        log.rows,
        log.users,
        log.items,
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
