//! Reads an interaction log once (parse + ids mapped to dense codes, which is
//! what `read_interactions` returns) and prints one JSON line: rows, seconds,
//! and the process's peak resident memory (Linux `VmHWM`). One read per
//! process, so peak memory is this read's alone.
//!
//! `cargo run --release -p sasrec-data --example read_log -- PATH`
//! (`cargo xtask bench data` runs this beside pandas and pyarrow.)

use std::time::Instant;

use sasrec_data::{InputSpec, read_interactions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: read_log PATH")?;
    let start = Instant::now();
    let log = read_interactions(path.as_ref(), &InputSpec::default())?;
    let seconds = start.elapsed().as_secs_f64();
    // The final columns: codes and times, plus the id tables' raw ids.
    let column_bytes = log.len() * (4 + 4 + 8) + log.rating.as_ref().map_or(0, |r| r.len() * 4);
    println!(
        "{{\"tool\":\"sasrec\",\"rows\":{},\"users\":{},\"items\":{},\"seconds\":{seconds:.3},\"peak_rss_bytes\":{},\"column_bytes\":{column_bytes}}}",
        log.len(),
        log.users.len(),
        log.items.len(),
        peak_rss_bytes()
    );
    Ok(())
}

/// Peak resident set size of this process, from /proc/self/status (0 elsewhere).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
