"""SASRec (self-attentive sequential recommendation) from Python.

The model, the training loop, evaluation and scoring are sasrec-rs's Rust
crates (the code the ``sasrec`` command runs), on the CPU or on any GPU
through wgpu. This package hands them your data and brings back results::

    import sasrec
    run = sasrec.train(ratings_df, out="runs/ml", epochs=50, patience=10)
    run.evaluate()                       # {'ndcg@10': ..., 'hr@10': ..., ...}
    run.recommend(users=[1, 2], k=10)    # pandas DataFrame: user, item, rank, logit
    module, vocab = run.to_torch()       # the same model in PyTorch

Data goes to Rust through the Arrow C data interface, no row passing
through Python objects; ids stay as the data has them (integers stay integers,
strings stay strings). The GIL is released while Rust works. Errors are
:class:`SasrecError` with the ``sasrec`` command's messages.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import pyarrow as pa

# Mesa's Vulkan device-select layer complains on machines without a
# display ("XDG_RUNTIME_DIR is invalid"); sasrec picks adapters itself, so
# it is switched off there, as the sasrec command does.
if "XDG_RUNTIME_DIR" not in os.environ:
    os.environ.setdefault("NODEVICE_SELECT", "1")

from . import _sasrec  # noqa: E402
from ._sasrec import SasrecError  # noqa: E402

__all__ = ["train", "resume", "load_run", "Run", "Vocab", "SasrecError"]

_UNSET: Any = object()


def _arrow_data(data: Any) -> Any:
    """An object with ``__arrow_c_stream__`` for ``data``."""
    kind = f"{type(data).__module__.split('.')[0]}.{type(data).__name__}"
    if kind == "pandas.DataFrame":
        # Numeric columns are handed over without a copy; Python-object
        # (string) columns become Arrow strings once.
        return pa.Table.from_pandas(data, preserve_index=False)
    if hasattr(data, "__arrow_c_stream__"):
        return data  # pyarrow Table / RecordBatchReader, Polars >= 1.3, ...
    if hasattr(data, "to_arrow"):
        return data.to_arrow()  # older Polars
    raise TypeError(
        f"data must be a path, a pandas or Polars DataFrame or a pyarrow Table, not {kind}"
    )


def _ranking(ranking: Optional[dict]) -> dict:
    if not ranking:
        return {}
    out = {}
    for at in ranking["at"]:
        out[f"hr@{at['k']}"] = at["hr"]
        out[f"ndcg@{at['k']}"] = at["ndcg"]
    out["mrr"] = ranking["mrr"]
    return out


def _id_text(id_: Any) -> str:
    """A raw id as the text the run parses: strings as they are, integers in decimal."""
    if isinstance(id_, str):
        return id_
    if isinstance(id_, (bool, float, np.floating)):
        raise TypeError(f"ids are integers or strings, not {type(id_).__name__} {id_!r}")
    try:
        return str(int(id_))
    except (TypeError, ValueError):
        raise TypeError(f"ids are integers or strings, not {type(id_).__name__}") from None


def train(
    data: Any = None,
    *,
    out: Optional[Union[str, os.PathLike]] = None,
    config: Optional[Union[str, os.PathLike]] = None,
    force: bool = False,
    **settings: Any,
) -> "Run":
    """Train a new run into the folder ``out`` and return it loaded.

    ``data`` is the interaction log: a path (CSV/TSV, MovieLens, RecBole
    ``.inter``, Parquet file or folder), a pandas or Polars DataFrame or a
    pyarrow Table with a user, an item and a time column (found by their
    usual names, or named by ``user_col``, ``item_col``, ``time_col``).
    A DataFrame or table is written to ``out/interactions.parquet``, the
    run's log. ``None`` takes the log from the ``dataset`` (or
    ``ratings``) setting.

    ``settings`` are ``sasrec train``'s settings by their TOML keys (its
    flags in snake_case, as in a ``--config`` file): ``epochs``,
    ``patience``, ``max_len``, ``dim``, ``layers``, ``dropout``, ``lr``,
    ``batch_size``, ``loss``, ``negatives``, ``split``, ``k``, ``seed``,
    ``preset``, ``device``, ``threads``, ... with the command's defaults,
    and ``config`` names a settings file (TOML, or a run's config.json) as
    ``sasrec train --config`` reads it, whose settings the keyword
    arguments override (``data`` replaces its log). ``out`` is the run
    folder (required, here or in the file); ``force`` replaces a run in it.

    Training runs as ``sasrec train`` does, printing its lines on stderr
    and its report on stdout. Ctrl-C (KeyboardInterrupt) stops it after the
    current step with the run saved, then raises KeyboardInterrupt;
    :func:`resume` continues the run.
    """
    stream = None
    if data is not None:
        if "ratings" in settings or "dataset" in settings:
            raise SasrecError("give the log as data or as the `ratings`/`dataset` setting, not both")
        if isinstance(data, (str, os.PathLike)):
            settings["ratings"] = os.path.abspath(os.fspath(data))
        else:
            stream = _arrow_data(data)
    settings = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in settings.items()}
    if out is not None:
        settings["out"] = os.path.abspath(os.fspath(out))
    settings["force"] = force
    path = _sasrec.train(stream, settings, config=None if config is None else os.fspath(config))
    return load_run(path, device=settings.get("device", "auto"))


def resume(
    out: Union[str, os.PathLike],
    *,
    epochs: Optional[int] = None,
    patience: Optional[int] = None,
    allow_changed_data: bool = False,
    device: Optional[str] = None,
) -> "Run":
    """Continue the run in ``out`` from its last checkpoint and return it
    loaded, as ``sasrec train --resume`` does: the run keeps its settings
    and data; ``epochs`` (a larger budget extends a finished run) and
    ``patience`` may change; a changed log is refused unless
    ``allow_changed_data``."""
    settings: dict = {"out": os.path.abspath(os.fspath(out))}
    for key, value in [("epochs", epochs), ("patience", patience), ("device", device)]:
        if value is not None:
            settings[key] = value
    if allow_changed_data:
        settings["allow_changed_data"] = True
    path = _sasrec.train(None, settings, resume=True)
    return load_run(path, device=device or "auto")


def load_run(
    path: Union[str, os.PathLike],
    *,
    device: str = "auto",
    adapter: Optional[str] = None,
) -> "Run":
    """Load a trained run folder (written by :func:`train` or ``sasrec
    train``) on ``device``: ``"auto"`` (a GPU when one is found, else the
    CPU), ``"cpu"`` or ``"gpu"`` (``adapter`` picks one by index or name)."""
    return Run(_sasrec.Run(os.fspath(path), device, adapter))


class Vocab:
    """Raw ids and the model's indices: item index ``i`` (1..N) is
    ``items[i - 1]``; index 0 is padding."""

    def __init__(self, items: list):
        self.items = items
        self._index = {item: i + 1 for i, item in enumerate(items)}

    @property
    def num_items(self) -> int:
        """N, the number of real items (the item table has N + 1 rows)."""
        return len(self.items)

    def index(self, item: Any) -> int:
        """The index of a raw item id (KeyError if the run does not know it)."""
        return self._index[item]

    def encode(self, items: Iterable[Any]) -> "list[int]":
        """Indices of raw item ids, leaving out the ids the run does not know."""
        return [self._index[i] for i in items if i in self._index]

    def decode(self, indices: Iterable[int]) -> list:
        """Raw item ids of indices 1..N."""
        return [self.items[int(i) - 1] for i in indices]


class Run:
    """A trained run: its best checkpoint, ids and users' histories, loaded
    from the run folder (which keeps them: the log is not read again)."""

    def __init__(self, native: "_sasrec.Run"):
        self._native = native

    def __repr__(self) -> str:
        return f"sasrec.Run({self.path!r}, device={self.device!r})"

    @property
    def path(self) -> str:
        """The run folder."""
        return self._native.path

    @property
    def device(self) -> str:
        """The backend the model runs on."""
        return self._native.device

    @property
    def config(self) -> dict:
        """config.json: the model, training and data settings."""
        return json.loads(self._native.config_json())

    def recommend(
        self,
        users: Optional[Iterable[Any]] = None,
        k: int = 10,
        items: Optional[Sequence[Any]] = None,
        *,
        exclude_seen: bool = True,
        strict: bool = True,
        output: str = "pandas",
    ) -> Any:
        """The top ``k`` next items of users, or after a list of items.

        ``users``: raw user ids (``None``: every user), each after their
        whole history; columns ``user, item, rank, logit``. ``items``: raw
        item ids, oldest first, instead of users; columns ``item, rank,
        logit`` (with no item known, the most popular items, logit null).
        Items already seen are left out unless ``exclude_seen=False``. An
        unknown user or item is an error, or left out with
        ``strict=False``. ``output="arrow"`` returns a pyarrow Table
        instead of a pandas DataFrame.
        """
        if users is not None and items is not None:
            raise SasrecError("give users or items, not both")
        if output not in ("pandas", "arrow"):
            raise SasrecError(f"output is 'pandas' or 'arrow', not {output!r}")
        if items is not None:
            native = self._native.recommend_items(
                [_id_text(i) for i in items], k, exclude_seen, strict
            )
        else:
            ids = None if users is None else [_id_text(u) for u in users]
            native = self._native.recommend_users(ids, k, exclude_seen, strict)
        table = pa.table(native)
        return table.to_pandas() if output == "pandas" else table

    def evaluate(self, part: str = "test", k: Union[int, Sequence[int]] = (10, 20)) -> dict:
        """The best checkpoint on the run's ``"test"`` or ``"valid"`` users:
        ``loss``, ``hr@K``, ``ndcg@K``, ``mrr`` over all items (seen items
        removed), and the same for the most-popular baseline under
        ``most_popular``, as ``sasrec eval`` computes them."""
        ks = [k] if isinstance(k, int) else list(k)
        result = json.loads(self._native.evaluate(part, ks))
        model = result["model"]
        out = {"part": result["part"], "users": result["users"], "targets": model["targets"], "loss": model["loss"]}
        out.update(_ranking(model.get("ranking")))
        if result.get("most_popular"):
            out["most_popular"] = _ranking(result["most_popular"])
        return out

    def user_vectors(self, users: Optional[Iterable[Any]] = None, *, strict: bool = True) -> "tuple[np.ndarray, np.ndarray]":
        """``(ids, vectors)``: each user's vector after their whole history
        (``float32 [users, dim]``); ``vectors @ item_vectors()[1].T`` are
        the logits :meth:`recommend` ranks."""
        ids = None if users is None else [_id_text(u) for u in users]
        return _vectors(pa.table(self._native.user_vectors(ids, strict)))

    def item_vectors(self) -> "tuple[np.ndarray, np.ndarray]":
        """``(ids, vectors)``: every item's row of the output layer's table
        (the item table unless the run's output layer is untied;
        ``float32 [items, dim]``), in index order."""
        return _vectors(pa.table(self._native.item_vectors()))

    def vocab(self) -> Vocab:
        """The run's raw item ids by index."""
        return Vocab(self._native.item_ids())

    def to_torch(self) -> "tuple[Any, Vocab]":
        """The model as a PyTorch ``nn.Module`` (SASRec with this run's
        sizes, options and weights, in eval mode) and its :class:`Vocab`.
        ``module(inputs)[:, -1]`` are the logits :meth:`recommend` ranks,
        for ``inputs`` of indices left-padded to ``max_len``
        (:func:`sasrec.torch_model.window`)."""
        from .torch_model import from_weights

        model = self.config["model"]
        module = from_weights(model, self._native.weights())
        return module, self.vocab()


def _vectors(table: pa.Table) -> "tuple[np.ndarray, np.ndarray]":
    ids = table.column(0).to_numpy()
    column = table.column(1).combine_chunks()
    dim = column.type.list_size
    vectors = column.flatten().to_numpy().reshape(-1, dim)
    return ids, vectors
