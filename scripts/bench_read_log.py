#!/usr/bin/env python3
"""Reads an interaction log once with pandas or pyarrow, mapping user and item
ids to dense codes, and prints one JSON line: rows, seconds, peak RSS.

Usage: python3 scripts/bench_read_log.py {pandas,pyarrow} PATH

The work matches `read_interactions` (crates/data/examples/read_log.rs):
parse the file, then number the distinct user and item ids (pandas:
`pd.read_csv` / `pd.read_parquet` + `pd.factorize` on both id columns;
pyarrow: `pyarrow.csv.read_csv` / `pq.read_table` + `dictionary_encode`).
The clock starts after the imports. One read per process, so the peak
resident memory (getrusage) is this read's alone. `cargo xtask bench data`
runs it beside ours.
"""

import json
import resource
import sys
import time

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def main() -> None:
    tool, path = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    if tool == "pandas":
        frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
        users, user_ids = pd.factorize(frame["user_id"])
        items, item_ids = pd.factorize(frame["item_id"])
        rows, n_users, n_items = len(frame), len(user_ids), len(item_ids)
    elif tool == "pyarrow":
        table = pq.read_table(path) if path.endswith(".parquet") else pacsv.read_csv(path)
        # One dictionary per column across the table's chunks.
        users = pc.dictionary_encode(table["user_id"]).unify_dictionaries()
        items = pc.dictionary_encode(table["item_id"]).unify_dictionaries()
        rows = table.num_rows
        n_users, n_items = len(users.chunk(0).dictionary), len(items.chunk(0).dictionary)
    else:
        sys.exit(f"unknown tool {tool!r}: pandas or pyarrow")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    version = pd.__version__ if tool == "pandas" else pa.__version__
    print(json.dumps({"tool": f"{tool} {version}", "rows": rows, "users": n_users,
                      "items": n_items, "seconds": round(seconds, 3), "peak_rss_bytes": peak}))


if __name__ == "__main__":
    main()
