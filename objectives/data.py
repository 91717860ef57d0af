"""Where the recorded benchmark data lives, and how a user without it gets it.

Lookup order: an explicit ``data_dir`` argument (``--data-dir``), then the environment
variable ``AUTOPIPE_DATA``, then ``../shared/benchmarks`` next to the repository.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

ENV_VAR = "AUTOPIPE_DATA"
#: Where the data is when neither ``--data-dir`` nor ``$AUTOPIPE_DATA`` says.
DEFAULT_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "benchmarks"

# Public sources (pinned commits). Each entry: local path -> raw URL.
_NMT = "https://raw.githubusercontent.com/Este1le/hpo_nmt/7bd0a402"
_YAHPO = "https://raw.githubusercontent.com/slds-lmu/yahpo_data/efdab907/lcbench"
_PAIRS = ("en-ja", "ja-en", "ru-en", "so-en", "sw-en", "zh-en")
SOURCES: dict[str, dict[str, str]] = {
    "nmt": {
        # The curves file used here is a JSON-lines export of this pickle's "scratch" runs.
        "nmt/nmtlc.pkl": f"{_NMT}/lc_datasets/nmtlc.pkl",
        **{
            f"nmt/nmthpo/{pair}.{ext}": f"{_NMT}/datasets/{pair}.{ext}"
            for pair in _PAIRS
            for ext in ("hyps", "evals")
        },
    },
    "lcbench": {
        f"lcbench-yahpo/{name}": f"{_YAHPO}/{name}"
        for name in ("model.onnx", "config_space.json", "encoding.json")
    },
}
SOURCE_PAGES = {
    "nmt": "https://github.com/Este1le/hpo_nmt (commit 7bd0a402, MIT)",
    "lcbench": "https://github.com/slds-lmu/yahpo_data (commit efdab907, folder lcbench/, "
    "Apache-2.0); task meta-features: PyPI lcdb==0.1.0 (MIT)",
}


class BenchmarkDataError(FileNotFoundError):
    """The benchmark data is missing or unreadable; the message says where to get it."""


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the benchmark data directory (argument, then $AUTOPIPE_DATA, then the default)."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return DEFAULT_ROOT


def require(path: Path, benchmark: str) -> Path:
    """Return ``path`` if it exists, else raise an error naming it and its public source."""
    if not path.exists():
        raise BenchmarkDataError(
            f"Benchmark data file {path} not found. Point --data-dir or ${ENV_VAR} at the "
            f"folder holding the '{benchmark}' data, or fetch it with "
            f"`autopipe data download --benchmark {benchmark} --data-dir DIR` "
            f"(public source: {SOURCE_PAGES[benchmark]})."
        )
    return path


def corrupt(path: Path, benchmark: str, reason: object) -> BenchmarkDataError:
    """Build the error for a data file that exists but cannot be parsed."""
    return BenchmarkDataError(
        f"Benchmark data file {path} is unreadable ({reason}). Replace it with a fresh copy: "
        f"`autopipe data download --benchmark {benchmark} --data-dir DIR` "
        f"(public source: {SOURCE_PAGES[benchmark]})."
    )


def download(
    benchmark: str, data_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> list[Path]:
    """Fetch a benchmark's files from their public sources into ``data_dir``; return the paths.

    Files already present are kept unless ``overwrite``. The LCBench task meta-features table
    is not fetched (it is derived from the ``lcdb`` package); without it the benchmark runs
    with the task's OpenML id as its only dataset feature.
    """
    if benchmark not in SOURCES:
        raise ValueError(f"Unknown benchmark {benchmark!r}; choose one of {sorted(SOURCES)}.")
    root = Path(data_dir)
    written = []
    for rel, url in SOURCES[benchmark].items():
        target = root / rel
        if target.exists() and not overwrite:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + ".part")
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            out.write(response.read())
        partial.replace(target)
        written.append(target)
    return written
