"""Top-k recommendations for many users, sharded over workers with Ray Data.

Each worker is an actor that loads the run folder once, then scores the
batches of user ids it is handed with ``Run.recommend`` (which releases the
GIL). The recommendations go to a Parquet folder; the script prints how many
users each worker scored and how fast, next to one process scoring them
alone.

    pip install ./python "ray[data]"
    python python/examples/batch_score_ray.py RUN_FOLDER --workers 2 --out recs

latest-small has only 610 users, so ``--repeat`` scores the list that many
times over, to have enough work to time.
"""

import argparse
import os
import time

import pandas as pd
import ray

import sasrec


class Recommender:
    """One worker: the run, loaded once, and the top ``k`` of each batch."""

    def __init__(self, run_folder: str, k: int):
        start = time.perf_counter()
        self.run = sasrec.load_run(run_folder, device="cpu")
        self.load_s = time.perf_counter() - start
        self.k = k
        self.worker = f"pid {os.getpid()}"

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        start = time.perf_counter()
        top = self.run.recommend(users=batch["user"].tolist(), k=self.k)
        # Where and how long, for the summary (dropped before writing).
        top["worker"] = self.worker
        top["load_s"] = self.load_s
        top["batch_s"] = time.perf_counter() - start
        top["batch_id"] = start
        return top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder (sasrec.train or sasrec train)")
    parser.add_argument("--workers", type=int, default=2, help="scoring actors, one CPU each")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1000, help="users per batch")
    parser.add_argument("--repeat", type=int, default=1, help="score the user list this many times")
    parser.add_argument("--out", default="recommendations", help="Parquet folder written")
    args = parser.parse_args()

    # The user ids the run knows (and the baseline: this process alone, on all its cores).
    local = sasrec.load_run(args.run, device="cpu")
    known, _ = local.user_vectors()
    users = pd.DataFrame({"user": list(known) * args.repeat})
    start = time.perf_counter()
    local.recommend(users=users["user"].tolist(), k=args.k)
    alone_s = time.perf_counter() - start
    del local

    # One thread per worker: the workers, not the threads inside one, share the cores.
    one_thread = {"RAYON_NUM_THREADS": "1", "MATMUL_NUM_THREADS": "1"}
    ray.init(num_cpus=args.workers, include_dashboard=False, runtime_env={"env_vars": one_thread})

    # One block per batch: the actors' reserved CPUs are all there are, so
    # nothing else (a repartition) could run beside them.
    blocks = [users[i : i + args.batch_size] for i in range(0, len(users), args.batch_size)]
    start = time.perf_counter()
    scored = (
        ray.data.from_pandas(blocks)
        .map_batches(
            Recommender,
            fn_constructor_kwargs={"run_folder": args.run, "k": args.k},
            batch_size=args.batch_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=args.workers),
            num_cpus=1,
        )
        .materialize()
    )
    wall_s = time.perf_counter() - start
    scored.select_columns(["user", "item", "rank", "logit"]).write_parquet(os.path.abspath(args.out))

    stats = scored.select_columns(["worker", "load_s", "batch_s", "batch_id", "rank"]).to_pandas()
    batches = stats.drop_duplicates(["worker", "batch_id"])
    per_worker = pd.DataFrame({
        "users": stats[stats["rank"] == 1].groupby("worker").size(),
        "batches": batches.groupby("worker").size(),
        "load_s": batches.groupby("worker")["load_s"].first(),
        "scoring_s": batches.groupby("worker")["batch_s"].sum(),
    })
    per_worker["users_per_s"] = (per_worker["users"] / per_worker["scoring_s"]).round()

    print(f"{len(users)} users ({len(known)} x {args.repeat}), top {args.k}, "
          f"{args.workers} workers, batches of {args.batch_size}")
    print(per_worker.round(2).to_string())
    total = per_worker["users"].sum()
    print(f"all workers: {total} users in {wall_s:.2f} s wall ({total / wall_s:.0f} users/s, "
          f"Ray's start-up of the actors and the run loads included)")
    print(f"one process alone ({os.cpu_count()} threads): {len(users)} users in {alone_s:.2f} s "
          f"({len(users) / alone_s:.0f} users/s)")
    print(f"wrote {scored.count()} rows to {args.out}/")
    print(pd.read_parquet(args.out).head(3).to_string(index=False))


if __name__ == "__main__":
    main()
