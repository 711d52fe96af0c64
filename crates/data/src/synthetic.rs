//! MovieLens-shaped ratings files for benchmarks and tests.
//!
//! The shape follows MovieLens 32M: users of at least 20 ratings with a long
//! tail (mean about 150), movie ids up to 90,000 with a few very popular ones,
//! half-star ratings, and timestamps that grow within each user.

use std::io::{BufWriter, Write};
use std::path::Path;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{DataError, Format};

/// Writes `rows` ratings drawn from `seed` to `path` in `format` (a header
/// for CSV; CSV ratings have one decimal, `.dat`/`.tsv` ratings are whole
/// stars as in MovieLens 1M and 100K). The same arguments give the same bytes.
pub fn write_ratings(path: &Path, format: Format, rows: usize, seed: u64) -> Result<(), DataError> {
    let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    write_rows(&mut out, format, rows, seed)
        .and_then(|()| out.flush())
        .map_err(|e| DataError::io(path, e))
}

fn write_rows<W: Write>(
    out: &mut W,
    format: Format,
    rows: usize,
    seed: u64,
) -> std::io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sep = format.delimiter();
    if format.has_header() {
        writeln!(out, "userId{sep}movieId{sep}rating{sep}timestamp")?;
    }
    let mut written = 0;
    let mut user = 0u32;
    while written < rows {
        user += 1;
        // At least 20, with a heavy tail as 1/u grows: up to 3,485, mean about 150.
        let u: f64 = rng.random_range(0.01..=1.0);
        let count = ((20.0 + 35.0 * (1.0 / u - 1.0)) as usize).min(rows - written);
        let mut time: i64 = rng.random_range(820_000_000..1_690_000_000);
        for _ in 0..count {
            // Cubing a uniform draw crowds ids near 1: a few popular movies.
            let v: f64 = rng.random();
            let movie = 1 + (v * v * v * 90_000.0) as u32;
            let half_stars: u32 = rng.random_range(1..=10);
            time += rng.random_range(0..5_000);
            match format {
                Format::Csv => writeln!(
                    out,
                    "{user}{sep}{movie}{sep}{}.{}{sep}{time}",
                    half_stars / 2,
                    if half_stars % 2 == 1 { 5 } else { 0 }
                )?,
                Format::Dat | Format::Tsv => writeln!(
                    out,
                    "{user}{sep}{movie}{sep}{}{sep}{time}",
                    half_stars.div_ceil(2)
                )?,
            }
        }
        written += count;
    }
    Ok(())
}
