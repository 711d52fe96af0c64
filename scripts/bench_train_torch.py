#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench train`: the notebook's SASRec training
throughput on the same data and sizes as crates/model/examples/train_throughput.rs
(MovieLens latest-small, leave-one-out training sequences, max_len 50,
batch 128, dim 64, 2 heads, 2 layers, dropout 0.1, Adam lr 1e-3), timed over
whole steps (copy to device, forward, backward, Adam, loss.item()).
Prints one JSON line.

    python3 scripts/bench_train_torch.py [--device cpu|cuda] [--steps 20] [--warmup 3]

Finds the data through $SASREC_DATASETS (else datasets/). Needs torch, pandas.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(__file__))
from torch_reference import SASRec, window  # noqa: E402  (the notebook's model)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    root = os.environ.get("SASREC_DATASETS", "datasets")
    ratings = pd.read_csv(os.path.join(root, "ml-latest-small", "ratings.csv"))
    item_ids = ratings["movieId"].unique()
    item2idx = {m: i + 1 for i, m in enumerate(item_ids)}
    ratings["item_idx"] = ratings["movieId"].map(item2idx)
    ratings = ratings.sort_values(["userId", "timestamp"], kind="stable")
    sequences = ratings.groupby("userId", sort=False)["item_idx"].apply(list).tolist()
    train = [s[:-2] for s in sequences if len(s) >= 3]  # leave-one-out training part
    max_len, batch_size = 50, 128
    pairs = [window(s, max_len) for s in train]
    inputs = torch.tensor([p[0] for p in pairs])
    targets = torch.tensor([p[1] for p in pairs])

    device = torch.device(args.device)
    torch.manual_seed(0)
    vocab = len(item_ids) + 1
    model = SASRec(vocab, max_len).to(device)
    model.train()
    criterion = nn.CrossEntropyLoss(ignore_index=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def batch():
        idx = torch.from_numpy(rng.choice(len(pairs), size=batch_size, replace=False))
        return inputs[idx], targets[idx]

    def step():
        x, y = batch()
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = criterion(model(x).view(-1, vocab), y.view(-1))
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - started
    print(json.dumps({
        "impl": "pytorch " + torch.__version__,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "step_ms": round(1e3 * seconds / args.steps, 2),
        "tokens_per_s": round(args.steps * batch_size * max_len / seconds, 1),
    }))


if __name__ == "__main__":
    main()
