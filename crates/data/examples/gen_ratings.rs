//! Writes a synthetic MovieLens-shaped ratings file (see `sasrec_data::synthetic`).
//!
//! `cargo run --release -p sasrec-data --example gen_ratings -- OUT ROWS [SEED]`
//! The format comes from OUT's extension (.csv, .dat, .tsv).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, rows, rest @ ..] = args.as_slice() else {
        return Err("usage: gen_ratings OUT ROWS [SEED]".into());
    };
    let out = PathBuf::from(out);
    let rows: usize = rows.parse()?;
    let seed: u64 = rest.first().map_or(Ok(0), |s| s.parse())?;
    let format =
        sasrec_data::Format::from_path(&out).ok_or("OUT must end in .csv, .dat or .tsv")?;
    sasrec_data::synthetic::write_ratings(&out, format, rows, seed)?;
    println!("wrote {rows} rows to {}", out.display());
    Ok(())
}
