#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench train`: the notebook's SASRec training
throughput on the same data and sizes as crates/model/examples/train_throughput.rs
(max_len 50, batch 128, dim 64, 2 heads, 2 layers, dropout 0.1, Adam lr 1e-3),
timed over whole steps (copy to device, forward, backward, Adam, loss.item()).
Prints one JSON line, with the process's peak resident memory.

    python3 scripts/bench_train_torch.py [--device cpu|cuda] [--data latest-small|FILE]
        [--steps 20] [--warmup 3] [--threads N] [--compile] [--autocast bf16]

--data latest-small (default): MovieLens latest-small, leave-one-out training
sequences; found through $SASREC_DATASETS (else datasets/).
--data FILE: a `user_id,item_id,timestamp` log (`cargo xtask data synth`),
trained on the notebook's split: 10% of users held out at random.
--compile: the forward pass and the loss through torch.compile (inductor's
default mode; compiling happens in the warm-up, which gets one extra step).
--autocast bf16: the forward pass and the loss under
torch.autocast(dtype=torch.bfloat16) (matrix products in bf16, weights and
Adam in f32: PyTorch's mixed precision on CPUs with AVX512-BF16 or AMX).
Needs torch, pandas.
"""

import argparse
import json
import os
import resource
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
    parser.add_argument("--data", default="latest-small")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward pass and loss")
    parser.add_argument("--autocast", choices=["bf16"], help="mixed precision: bf16 autocast")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.data == "latest-small":
        root = os.environ.get("SASREC_DATASETS", "datasets")
        ratings = pd.read_csv(os.path.join(root, "ml-latest-small", "ratings.csv"))
        user, item, time_col = "userId", "movieId", "timestamp"
    else:
        ratings = pd.read_csv(args.data)
        user, item, time_col = "user_id", "item_id", "timestamp"
    item_ids = ratings[item].unique()
    item2idx = {m: i + 1 for i, m in enumerate(item_ids)}
    ratings["item_idx"] = ratings[item].map(item2idx)
    ratings = ratings.sort_values([user, time_col], kind="stable")
    sequences = ratings.groupby(user, sort=False)["item_idx"].apply(list).tolist()
    if args.data == "latest-small":
        train = [s[:-2] for s in sequences if len(s) >= 3]  # leave-one-out training part
    else:
        # The notebook's train_test_split(test_size=0.1): 10% of users held out.
        held_out = set(np.random.default_rng(42).permutation(len(sequences))[: -(-len(sequences) // 10)])
        train = [s for u, s in enumerate(sequences) if u not in held_out and len(s) >= 2]
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

    def forward_loss(x, y):
        return criterion(model(x).view(-1, vocab), y.view(-1))

    if args.compile:
        forward_loss = torch.compile(forward_loss)

    def step():
        x, y = batch()
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        if args.autocast:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                loss = forward_loss(x, y)
        else:
            loss = forward_loss(x, y)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup + (1 if args.compile else 0)):
        step()
    started = time.perf_counter()
    cpu_started = time.process_time()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    print(json.dumps({
        "impl": "pytorch " + torch.__version__,
        "mode": ("compile" if args.compile else "eager") + (" + bf16 autocast" if args.autocast else ""),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "step_ms": round(1e3 * seconds / args.steps, 2),
        "tokens_per_s": round(args.steps * batch_size * max_len / seconds, 1),
        "cpu_s_per_step": round(cpu / args.steps, 3),
        "vocab": vocab,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
    }))


if __name__ == "__main__":
    main()
