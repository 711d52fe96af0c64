#!/usr/bin/env python3
"""Writes the small interaction-log fixtures of crates/data/tests/fixtures/.

Usage: python3 scripts/write_parquet_fixtures.py  (needs pyarrow)

One log of 40 users and 30 items (string ids, integer seconds, ratings,
some equal times within a user) written as CSV, as a RecBole .inter file and
as Parquet in the shapes real writers produce, so the tests can check that
every shape gives the same dataset:

- interactions.csv / interactions.inter: the log as text;
- interactions.parquet: string ids, int64 seconds, float32 ratings, four
  row groups (snappy, pyarrow's default);
- interactions_dict.parquet: dictionary-encoded string ids, timestamp[ms, UTC]
  (zstd);
- interactions_int.parquet + interactions_int.csv: int32 user ids, int64 item
  ids (gzip);
- parts/: the log in three Spark-style parts (part-0000N-<uuid>.snappy.parquet,
  with _SUCCESS and .crc files beside them), lz4;
- null_id.parquet: three row groups, a null user id in row group 1 (row 7);
- names.parquet / names.csv: item_id -> title for the items.
The output is deterministic: running the script again rewrites the same data.
"""

import os
import random

import pyarrow as pa
import pyarrow.parquet as pq

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "data", "tests", "fixtures")


def log():
    """40 users walking 30 items in cycles (a learnable next item), one event
    a minute with an occasional repeated second, ratings 1-5."""
    rng = random.Random(8)
    rows = []
    for user in range(1, 41):
        time = 1_600_000_000 + user * 100_000
        for i in range(8 + user % 7):
            item = 101 + (user * 3 + i) % 30
            if rng.random() > 0.2:
                time += 60
            rows.append((f"U{user:03d}x", f"B0{item}Q", float(rng.randint(1, 5)), time))
    # Interleave users as a real log would (file order is not user order).
    rng.shuffle(rows)
    rows.sort(key=lambda r: r[3] // 5000)
    return rows


def table(rows, **types):
    users, items, ratings, times = zip(*rows)
    return pa.table(
        {
            "user_id": pa.array(users, type=types.get("user", pa.string())),
            "item_id": pa.array(items, type=types.get("item", pa.string())),
            "rating": pa.array(ratings, type=pa.float32()),
            "timestamp": pa.array(times, type=pa.int64()),
        }
    )


def main() -> None:
    os.makedirs(os.path.join(OUT, "parts"), exist_ok=True)
    rows = log()
    with open(os.path.join(OUT, "interactions.csv"), "w", newline="") as f:
        f.write("user_id,item_id,rating,timestamp\n")
        for u, i, r, t in rows:
            f.write(f"{u},{i},{r:g},{t}\n")
    with open(os.path.join(OUT, "interactions.inter"), "w", newline="") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for u, i, r, t in rows:
            f.write(f"{u}\t{i}\t{r:g}\t{t}\n")

    t = table(rows)
    pq.write_table(t, os.path.join(OUT, "interactions.parquet"), row_group_size=100)

    d = t.set_column(0, "user_id", t["user_id"].dictionary_encode())
    d = d.set_column(1, "item_id", d["item_id"].dictionary_encode())
    ms = pa.array([r[3] * 1000 for r in rows], type=pa.timestamp("ms", tz="UTC"))
    d = d.set_column(3, "timestamp", ms)
    pq.write_table(d, os.path.join(OUT, "interactions_dict.parquet"), compression="zstd")

    int_rows = [(int(u[1:4]), int(i[2:5]), r, tm) for u, i, r, tm in rows]
    ti = table(int_rows, user=pa.int32(), item=pa.int64())
    pq.write_table(ti, os.path.join(OUT, "interactions_int.parquet"), compression="gzip")
    with open(os.path.join(OUT, "interactions_int.csv"), "w", newline="") as f:
        f.write("user_id,item_id,rating,timestamp\n")
        for u, i, r, tm in int_rows:
            f.write(f"{u},{i},{r:g},{tm}\n")

    parts = os.path.join(OUT, "parts")
    for name in os.listdir(parts):
        os.remove(os.path.join(parts, name))
    third = len(rows) // 3 + 1
    for n in range(3):
        name = f"part-0000{n}-6b1f6d1e-2c55-4f1e-9d7c-0c9f3c7e5a1{n}-c000.lz4.parquet"
        pq.write_table(t.slice(n * third, third), os.path.join(parts, name), compression="lz4")
        with open(os.path.join(parts, f".{name}.crc"), "wb") as f:
            f.write(b"crc\x00\x01")
    open(os.path.join(parts, "_SUCCESS"), "w").close()

    users = [r[0] for r in rows[:30]]
    users[7] = None
    nulls = pa.table(
        {
            "user_id": pa.array(users, type=pa.string()),
            "item_id": pa.array([r[1] for r in rows[:30]]),
            "timestamp": pa.array([r[3] for r in rows[:30]], type=pa.int64()),
        }
    )
    pq.write_table(nulls, os.path.join(OUT, "null_id.parquet"), row_group_size=5)

    items = sorted({r[1] for r in rows})
    titles = [f"Film {i[2:5]}, The (1999)" for i in items]
    pq.write_table(pa.table({"item_id": items, "title": titles}), os.path.join(OUT, "names.parquet"))
    with open(os.path.join(OUT, "names.csv"), "w", newline="") as f:
        f.write("item_id,title\n")
        for i, title in zip(items, titles):
            f.write(f'{i},"{title}"\n')
    print(f"wrote {len(rows)} rows in every shape to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
