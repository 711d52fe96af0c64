"""Top-k from the vectors `sasrec export` writes, with FAISS.

    pip install faiss-cpu numpy pandas
    python3 scripts/ann_faiss.py vectors/ --ratings datasets/ml-latest-small/ratings.csv --user 1

Loads items.npy / users.npy and their ids, builds an exact inner-product
index (IndexFlatIP) and an approximate one (HNSW, inner product), and
prints the user's top-k from the HNSW index with the user's rated items
removed, as `sasrec recommend --run RUN --user ID` ranks them (the score
is the logit, users[u] . items[i]). Then the recall@k of HNSW against the
exact search over all users.
"""

import argparse
import json
from pathlib import Path

import faiss
import numpy as np
import pandas as pd


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("vectors", type=Path, help="the folder `sasrec export --out` wrote")
    p.add_argument("--ratings", required=True, help="the run's log (for the seen items)")
    p.add_argument("--user-col", default="userId")
    p.add_argument("--item-col", default="movieId")
    p.add_argument("--user", required=True, help="a user id of the log")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()

    items = np.load(args.vectors / "items.npy")
    users = np.load(args.vectors / "users.npy")
    item_ids = np.array(json.loads((args.vectors / "items.ids.json").read_text()))
    user_ids = json.loads((args.vectors / "users.ids.json").read_text())
    print(f"items {items.shape}, users {users.shape}, {items.dtype}")

    exact = faiss.IndexFlatIP(items.shape[1])
    exact.add(items)
    hnsw = faiss.IndexHNSWFlat(items.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 200
    hnsw.add(items)
    hnsw.hnsw.efSearch = 256

    log = pd.read_csv(args.ratings, usecols=[args.user_col, args.item_col])
    seen = log.groupby(args.user_col)[args.item_col].apply(set).to_dict()
    kind = type(user_ids[0])
    row_of = {u: r for r, u in enumerate(user_ids)}

    def top_k(index, u, k):
        """The k best unseen items of user row u: search past the seen ones."""
        rated = seen[user_ids[u]]
        scores, rows = index.search(users[u : u + 1], k + len(rated))
        keep = [(item_ids[r], s) for r, s in zip(rows[0], scores[0]) if r >= 0 and item_ids[r] not in rated]
        return keep[:k]

    u = row_of[kind(args.user)]
    print(f"user {args.user}: top {args.k} by HNSW (inner product), rated items removed")
    print(" rank     item   logit")
    for rank, (item, score) in enumerate(top_k(hnsw, u, args.k), 1):
        print(f"{rank:>5} {item:>8}  {score:6.2f}")

    hits = sum(
        len({i for i, _ in top_k(hnsw, r, args.k)} & {i for i, _ in top_k(exact, r, args.k)})
        for r in range(len(user_ids))
    )
    print(f"HNSW recall@{args.k} against exact search, all {len(user_ids)} users: {hits / (args.k * len(user_ids)):.4f}")


if __name__ == "__main__":
    main()
