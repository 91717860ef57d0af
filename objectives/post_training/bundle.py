"""The mini corpus shipped in the repository (``bundled/``): what ``autopipe demo`` fits its
prior on and what ``autopipe bench --benchmark post-training`` replays when the data
directory has no corpus of its own.

``bundled/`` holds a finished generation's ``corpus.jsonl``, ``generation.json`` and
``report.md``, its Optuna journal compressed with xz (``runs.journal.xz``, LZMA from the
standard library; ``bundled_journal`` decompresses it once into the cache folder), and the
pre-trained tiny base models its runs started from (``tiny-bases.tar.xz``: the cache folders
``tiny_models.resolve_model`` built, which it unpacks instead of pre-training again; about
half an hour of CPU saved on a fresh machine, and the demo starts from the very weights the
corpus was generated with).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import tarfile
from pathlib import Path

from objectives.post_training.tiny_models import TINY_PREFIX, cache_dir, resolve_model

BUNDLED = Path(__file__).parent / "bundled"
JOURNAL_XZ = "runs.journal.xz"
BASES_XZ = "tiny-bases.tar.xz"
#: Files copied as they are from a generation folder.
FILES = ("corpus.jsonl", "generation.json", "report.md")


def bundle(out: str | Path, dest: str | Path | None = None) -> list[Path]:
    """Copy the generation in ``out`` (``FILES`` and ``runs.journal``, xz-compressed) into
    ``dest`` (default ``BUNDLED``), with the pre-trained tiny bases of its search space
    (``BASES_XZ``); returns the written paths.

    Raises ``FileNotFoundError`` naming the first missing file (run ``autopipe corpus
    generate`` and ``autopipe corpus report`` first).
    """
    out, dest = Path(out), Path(BUNDLED if dest is None else dest)
    sources = [out / name for name in (*FILES, "runs.journal")]
    for path in sources:
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: bundle a finished generation (autopipe corpus generate, "
                "then autopipe corpus report)."
            )
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sources[:-1]:
        written.append(Path(shutil.copyfile(path, dest / path.name)))
    partial = dest / (JOURNAL_XZ + ".partial")
    with sources[-1].open("rb") as raw, lzma.open(partial, "wb", preset=9) as packed:
        shutil.copyfileobj(raw, packed)
    os.replace(partial, dest / JOURNAL_XZ)
    record = json.loads((out / "generation.json").read_text())
    bases = [
        name
        for name in record["space"]["base_model"]
        if name.startswith(TINY_PREFIX) and name.endswith("-base")
    ]
    if not bases:
        return [*written, dest / JOURNAL_XZ]
    return [*written, dest / JOURNAL_XZ, bundle_bases(bases, dest)]


def bundle_bases(names: list[str], dest: str | Path | None = None) -> Path:
    """Pack the built folders of the tiny models ``names`` (``tiny/<name>``; built first
    when missing) into ``dest/tiny-bases.tar.xz``; returns its path."""
    target = Path(BUNDLED if dest is None else dest) / BASES_XZ
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, "w:xz", preset=9) as archive:
        for name in names:
            folder = Path(resolve_model(name))
            archive.add(folder, arcname=folder.name)
    os.replace(partial, target)
    return target


def unpack_base(folder: Path, source: str | Path | None = None) -> bool:
    """Unpack the bundled build of the tiny model whose cache folder is ``folder`` (e.g.
    ``<cache>/llama-1.1m-base-60000``); ``False`` when the bundle does not hold it."""
    packed = Path(BUNDLED if source is None else source) / BASES_XZ
    if not packed.is_file():
        return False
    with tarfile.open(packed, "r:xz") as archive:
        members = [m for m in archive.getmembers() if m.name.split("/")[0] == folder.name]
        if not members:
            return False
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.parent / f".{folder.name}.{os.getpid()}.partial"
        archive.extractall(staging, members=members, filter="data")
    try:
        os.replace(staging / folder.name, folder)
    except OSError:  # another process unpacked it first
        if not (folder / "config.json").exists():
            raise
    shutil.rmtree(staging, ignore_errors=True)
    return True


def bundled_journal(source: str | Path | None = None) -> Path:
    """The journal of the corpus in ``source`` (default ``BUNDLED``), decompressed (once per
    content) into ``<cache>/corpus-<sha256 prefix>.journal``.

    Raises ``FileNotFoundError`` when ``source`` has no ``runs.journal.xz``.
    """
    packed = Path(BUNDLED if source is None else source) / JOURNAL_XZ
    if not packed.is_file():
        raise FileNotFoundError(f"No bundled corpus journal at {packed}.")
    digest = hashlib.sha256(packed.read_bytes()).hexdigest()[:16]
    target = cache_dir().parent / f"corpus-{digest}.journal"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + f".{os.getpid()}.partial")
        with lzma.open(packed, "rb") as stream, partial.open("wb") as raw:
            shutil.copyfileobj(stream, raw)
        os.replace(partial, target)
    return target
