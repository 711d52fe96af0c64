#!/usr/bin/env python3
"""The worked example of docs/data.md: prepare a raw clickstream with DuckDB
into the Parquet log `sasrec train` reads.

Usage: python3 scripts/prepare_with_duckdb.py RAW_DIR OUT_DIR

RAW_DIR holds raw events as Parquet parts (columns visitor, product, event,
ts: a string, a string, 'view'/'cart'/'purchase'/'search', a timestamp) and
products.parquet (product, name). `--make-raw SYNTH.csv RAW_DIR` first turns a
synthetic log (`cargo xtask data synth ... --string-ids`) into such a raw
clickstream, with duplicates and noise events, so the example runs anywhere.

Writes OUT_DIR/events.parquet (visitor session, product, ts) and
OUT_DIR/products.parquet, and prints what each step kept.
"""

import os
import sys

import duckdb

# Each step is plain SQL: the same statements run in the duckdb CLI, in
# DataFusion or (with small changes) in Spark SQL.
DEDUP_AND_FILTER = """
CREATE TABLE events AS
SELECT DISTINCT visitor, product, ts          -- exact duplicates (retries, double logging) go
FROM read_parquet('{raw}/part-*.parquet')
WHERE event IN ('view', 'cart', 'purchase')   -- the events that say 'interested in this item'
  AND visitor IS NOT NULL AND product IS NOT NULL AND ts IS NOT NULL;
"""

K_CORE_PASS = """
DELETE FROM events
WHERE visitor IN (SELECT visitor FROM events GROUP BY visitor HAVING count(*) < {k})
   OR product IN (SELECT product FROM events GROUP BY product HAVING count(*) < {k});
"""

SESSIONS = """
CREATE TABLE sessions AS
WITH gaps AS (
  SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY visitor ORDER BY ts) > INTERVAL 30 MINUTE
                 THEN 1 ELSE 0 END AS new_session
  FROM events
)
SELECT visitor || '#' || sum(new_session) OVER (PARTITION BY visitor ORDER BY ts
                                               ROWS UNBOUNDED PRECEDING) AS visitor,
       product, ts
FROM gaps;
"""

WRITE = """
COPY (SELECT visitor, product, ts FROM sessions
      WHERE visitor IN (SELECT visitor FROM sessions GROUP BY visitor HAVING count(*) >= 2)
      ORDER BY visitor, ts)
TO '{out}/events.parquet' (FORMAT parquet, COMPRESSION zstd);
COPY (SELECT * FROM read_parquet('{raw}/products.parquet'))
TO '{out}/products.parquet' (FORMAT parquet);
"""


def make_raw(synth_csv: str, raw: str) -> None:
    """A raw clickstream from a synthetic log: each interaction as a view
    (some also as cart/purchase), 3% logged twice, searches as noise."""
    os.makedirs(raw, exist_ok=True)
    db = duckdb.connect()
    db.execute(f"""
        CREATE TABLE s AS SELECT user_id AS visitor, item_id AS product,
               to_timestamp(timestamp) AS ts, row_number() OVER () AS n
        FROM read_csv('{synth_csv}');
        COPY (
          SELECT visitor, product, 'view' AS event, ts FROM s
          UNION ALL SELECT visitor, product, 'view', ts FROM s WHERE n % 33 = 0
          UNION ALL SELECT visitor, product, 'cart', ts + INTERVAL 40 SECOND FROM s WHERE n % 7 = 0
          UNION ALL SELECT visitor, NULL, 'search', ts - INTERVAL 5 SECOND FROM s WHERE n % 5 = 0
        ) TO '{raw}' (FORMAT parquet, PER_THREAD_OUTPUT true, OVERWRITE_OR_IGNORE true);
        COPY (SELECT DISTINCT product, 'Product ' || product AS name FROM s)
        TO '{raw}/products.parquet' (FORMAT parquet);
    """)
    for name in os.listdir(raw):
        if name.startswith("data_"):
            os.rename(os.path.join(raw, name), os.path.join(raw, "part-" + name[5:]))


def main() -> None:
    if sys.argv[1] == "--make-raw":
        make_raw(sys.argv[2], sys.argv[3])
        return
    raw, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    db = duckdb.connect()
    count = lambda table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    raw_rows = db.execute(f"SELECT count(*) FROM read_parquet('{raw}/part-*.parquet')").fetchone()[0]
    db.execute(DEDUP_AND_FILTER.format(raw=raw))
    print(f"raw events {raw_rows:,}; after dedup and event filter {count('events'):,}")
    passes, before = 0, None
    while before != count("events"):  # until a pass removes nothing
        before = count("events")
        db.execute(K_CORE_PASS.format(k=5))
        passes += 1
    print(f"5-core: {count('events'):,} events after {passes} passes")
    db.execute(SESSIONS)
    sessions = db.execute("SELECT count(DISTINCT visitor) FROM sessions").fetchone()[0]
    print(f"sessions (30-minute gaps): {sessions:,}")
    db.execute(WRITE.format(raw=raw, out=out))
    written = db.execute(f"SELECT count(*) FROM '{out}/events.parquet'").fetchone()[0]
    print(f"wrote {out}/events.parquet ({written:,} events) and {out}/products.parquet")


if __name__ == "__main__":
    main()
