#!/usr/bin/env python3
"""Times pandas.read_csv on a ratings file, to compare with `cargo bench -p sasrec-data --bench read`.

Usage: python3 scripts/bench_read_pandas.py RATINGS_CSV [--runs N]

Reads the file N times (default 5) with pandas' default C parser, the way the
notebook does (`pd.read_csv(path)`), and prints each time, the median (with rows
per second) and the fastest run. Make the file with
`cargo run --release -p sasrec-data --example gen_ratings -- RATINGS_CSV ROWS`.
"""

import argparse
import statistics
import time

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ratings_csv")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    times = []
    rows = 0
    for run in range(args.runs):
        start = time.perf_counter()
        frame = pd.read_csv(args.ratings_csv)
        elapsed = time.perf_counter() - start
        rows = len(frame)
        del frame
        times.append(elapsed)
        print(f"run {run + 1}: {elapsed:.3f} s")
    median = statistics.median(times)
    print(f"pandas {pd.__version__} read_csv: {rows} rows, median {median:.3f} s "
          f"({rows / median / 1e6:.2f} M rows/s), fastest {min(times):.3f} s")


if __name__ == "__main__":
    main()
