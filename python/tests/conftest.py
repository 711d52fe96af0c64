"""Shared fixtures: MovieLens latest-small (SASREC_DATASETS) and the
`sasrec` binary the Python package must agree with."""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _required(what: str) -> None:
    """Skip, or fail where CI asks for every data test to run."""
    if os.environ.get("SASREC_REQUIRE_DATA") == "1":
        pytest.fail(f"{what} (SASREC_REQUIRE_DATA=1)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def ratings_csv() -> pathlib.Path:
    """latest-small's ratings.csv."""
    datasets = os.environ.get("SASREC_DATASETS", str(ROOT / "datasets"))
    path = pathlib.Path(datasets) / "ml-latest-small" / "ratings.csv"
    if not path.is_file():
        _required(f"no MovieLens latest-small at {path}")
    return path


@pytest.fixture(scope="session")
def sasrec_bin() -> pathlib.Path:
    """The CLI (SASREC_BIN, or the workspace's debug build)."""
    path = pathlib.Path(os.environ.get("SASREC_BIN", ROOT / "target" / "debug" / "sasrec"))
    if not path.is_file():
        _required(f"no sasrec binary at {path}: build it with `cargo build -p sasrec-cli`")
    return path
