"""Reads a run folder's TensorBoard event file with TensorBoard's own reader
and checks it against metrics.jsonl.

    pip install tensorboard
    python3 scripts/check_tensorboard.py runs/latest-small [more runs...]

For each run it loads `events.out.tfevents.sasrec` with EventAccumulator
(the loader `tensorboard --logdir` uses), prints the scalar tags and the
last epoch's values, and asserts that every epoch of metrics.jsonl is there
with the same numbers (as float32, which TensorBoard stores). Not run in CI
(TensorBoard is a large install); the Rust tests decode the same files.
"""

import json
import pathlib
import sys

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def check(run: pathlib.Path) -> None:
    acc = EventAccumulator(str(run / "events.out.tfevents.sasrec"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = {"loss/train": [e["train_loss"] for e in epochs],
                "loss/valid": [e["valid"]["loss"] for e in epochs]}
    ranking = [e["valid"].get("ranking") for e in epochs]
    if all(ranking):
        for i, at in enumerate(ranking[0]["at"]):
            expected[f"valid/HR@{at['k']}"] = [r["at"][i]["hr"] for r in ranking]
            expected[f"valid/NDCG@{at['k']}"] = [r["at"][i]["ndcg"] for r in ranking]
        expected["valid/MRR"] = [r["mrr"] for r in ranking]
    for tag, values in expected.items():
        assert tag in tags, f"{run}: no scalar {tag} (has {tags})"
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [e["epoch"] for e in epochs], f"{run}: {tag} steps"
        got = np.array([e.value for e in events], dtype=np.float32)
        assert np.array_equal(got, np.array(values, dtype=np.float32)), f"{run}: {tag} values"
    last = {tag: acc.Scalars(tag)[-1].value for tag in sorted(tags)}
    print(f"{run}: {len(epochs)} epochs, {len(tags)} scalars agree with metrics.jsonl")
    print("  epoch", epochs[-1]["epoch"], " ".join(f"{t} {v:.4f}" for t, v in last.items()))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        check(pathlib.Path(arg))
