"""A count baseline for the long-range synthetic log: each user's lag read
from their history, the next item ranked by how often it followed the item
that many steps back in training, then by popularity; leave-one-out test
NDCG@10 / HR@10 ranked as `sasrec` ranks (items the user has seen are left
out, the target always stays a candidate).

    python3 scripts/long_range_counts.py datasets/synthetic-long-range.csv
"""
import collections
import math
import sys

import pandas as pd

MAX_LAG = 3


def main(path):
    d = pd.read_csv(path)
    d = d.sort_values([d.columns[0], d.columns[2]], kind="stable")
    seqs = [g.iloc[:, 1].tolist() for _, g in d.groupby(d.columns[0], sort=False)]
    train = [s[:-2] for s in seqs]  # leave-one-out: the last two are validation and test
    popularity = collections.Counter(i for s in train for i in s)
    lags = [1] * len(seqs)
    for _ in range(4):
        # Successor counts under the current lags, then each user's lag: the
        # one under which the most of their steps follow a top-3 successor.
        counts = collections.defaultdict(collections.Counter)
        for s, lag in zip(train, lags):
            for t in range(lag, len(s)):
                counts[s[t - lag]][s[t]] += 1
        top = {a: {b for b, _ in c.most_common(3)} for a, c in counts.items()}
        lags = [
            max(range(1, MAX_LAG + 1), key=lambda L: sum(s[t] in top.get(s[t - L], ()) for t in range(L, len(s))))
            for s in train
        ]
    ndcg = hits = 0
    for s, lag in zip(seqs, lags):
        history, target = s[:-1], s[-1]
        follows = counts.get(history[-lag] if len(history) >= lag else history[0], collections.Counter())
        seen = set(history) - {target}
        candidates = [i for i in popularity if i not in seen] + ([target] if target not in popularity else [])
        candidates.sort(key=lambda i: (-follows[i], -popularity[i], i))
        rank = candidates.index(target)
        if rank < 10:
            hits += 1
            ndcg += 1 / math.log2(rank + 2)
    print(f"users {len(seqs)}  test NDCG@10 {ndcg / len(seqs):.4f}  HR@10 {hits / len(seqs):.4f}")


if __name__ == "__main__":
    main(sys.argv[1])
