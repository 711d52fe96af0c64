"""Convert MovieLens latest-small ratings.csv to gSASRec-pytorch dataset format
with a leave-one-out split for ALL users:
  train/input.txt : items[:-2]          (every item except the last two)
  val/input.txt   : items[:-2], val/output.txt : items[-2]
  test/input.txt  : items[:-1], test/output.txt: items[-1]
Item ids: movieIds mapped to 1..N in order of first appearance (after per-user
stable sort by timestamp, users in ascending userId order). Padding = N+1 (their loader).
"""
import csv, json, sys
from collections import defaultdict
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/ml-latest-small/ratings.csv")
out = Path(sys.argv[2] if len(sys.argv) > 2 else "datasets/latest_small")

events = defaultdict(list)  # user -> [(ts, file_order, movie)]
with open(src) as f:
    r = csv.DictReader(f)
    for i, row in enumerate(r):
        events[int(row["userId"])].append((int(row["timestamp"]), i, int(row["movieId"])))

item_map = {}
user_items = {}
n_inter = 0
for u in sorted(events):
    ev = sorted(events[u], key=lambda e: (e[0], e[1]))  # stable: ties keep file order
    seq = []
    for _, _, m in ev:
        if m not in item_map:
            item_map[m] = len(item_map) + 1
        seq.append(item_map[m])
    user_items[u] = seq
    n_inter += len(seq)

for d in ("train", "val", "test"):
    (out / d).mkdir(parents=True, exist_ok=True)
short = [u for u, s in user_items.items() if len(s) < 3]
assert not short, f"users with <3 events: {short[:5]}"

def w(path, lines):
    with open(path, "w") as f:
        for l in lines:
            f.write(l + "\n")

users = sorted(user_items)
j = lambda s: " ".join(map(str, s))
w(out / "train/input.txt", [j(user_items[u][:-2]) for u in users])
w(out / "val/input.txt", [j(user_items[u][:-2]) for u in users])
w(out / "val/output.txt", [str(user_items[u][-2]) for u in users])
w(out / "test/input.txt", [j(user_items[u][:-1]) for u in users])
w(out / "test/output.txt", [str(user_items[u][-1]) for u in users])
stats = {"num_users": len(users), "num_items": len(item_map), "num_interactions": n_inter}
json.dump(stats, open(out / "dataset_stats.json", "w"), indent=4)
json.dump({str(k): v for k, v in item_map.items()}, open(out / "item_map_movieId_to_idx.json", "w"))
print(stats)
