"""The mini corpus shipped in the repository (``bundled/``): what ``autopipe demo`` fits its
prior on and what ``autopipe bench --benchmark post-training`` replays when the data
directory has no corpus of its own.

``bundled/`` holds a generation's ``corpus.jsonl``, ``generation.json`` and ``report.md``,
its Optuna journal compressed with xz (``runs.journal.xz``, LZMA from the standard library;
``bundled_journal`` decompresses it once into the cache folder), and the pre-trained tiny base
models its runs started from (``tiny-bases.tar.xz``: the cache folders
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
import tempfile
import time
from pathlib import Path

from objectives.post_training.tiny_models import TINY_PREFIX, cache_dir, resolve_model

BUNDLED = Path(__file__).parent / "bundled"
JOURNAL_XZ = "runs.journal.xz"
BASES_XZ = "tiny-bases.tar.xz"
#: The corpus files ``bundle`` writes besides the journal and the bases.
FILES = ("corpus.jsonl", "generation.json", "report.md")


def bundle(out: str | Path, dest: str | Path | None = None) -> list[Path]:
    """Snapshot the generation in ``out`` into ``dest`` (default ``BUNDLED``): the journal's
    runs as ``corpus.jsonl``, ``generation.json`` (the generation's record, with the run
    counts at bundling time under ``"bundled"``), ``report.md`` (``corpus_report.report``),
    the journal xz-compressed and the pre-trained tiny bases of its search space
    (``BASES_XZ``). Works on a generation still running or stopped midway. Returns the
    written paths.

    Raises ``FileNotFoundError`` naming ``generation.json`` or ``runs.journal`` when ``out``
    holds no generation (run ``autopipe corpus generate`` first).
    """
    from objectives.post_training.corpus_report import report
    from objectives.post_training.mini_corpus import journal, run_record, save_corpus

    out, dest = Path(out), Path(BUNDLED if dest is None else dest)
    for name in ("generation.json", "runs.journal"):
        if not (out / name).is_file():
            raise FileNotFoundError(
                f"{out / name} not found: bundle a generation (autopipe corpus generate)."
            )
    record = json.loads((out / "generation.json").read_text())
    names = [d["name"] for d in record["datasets"]]
    dest.mkdir(parents=True, exist_ok=True)
    # Every file comes from one copy of the journal, cut after its last complete record (a
    # running generation appends to it meanwhile); the bases are packed first, as they may
    # have to be built, and each file replaces its old version only once complete.
    bases = [
        name
        for name in record["space"]["base_model"]
        if name.startswith(TINY_PREFIX) and name.endswith("-base")
    ]
    packed_bases = [bundle_bases(bases, dest)] if bases else []
    with tempfile.TemporaryDirectory() as folder:
        snapshot = Path(folder)
        data = (out / "runs.journal").read_bytes()
        (snapshot / "runs.journal").write_bytes(data[: data.rfind(b"\n") + 1])
        record["bundled"] = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            **run_record(journal(snapshot), names),
        }
        save_corpus(snapshot, names, snapshot / "corpus.jsonl")
        (snapshot / "generation.json").write_text(json.dumps(record, indent=1))
        (snapshot / "report.md").write_text(report(snapshot, names) + "\n")
        with (
            (snapshot / "runs.journal").open("rb") as raw,
            lzma.open(snapshot / JOURNAL_XZ, "wb", preset=9) as packed,
        ):
            shutil.copyfileobj(raw, packed)
        written = []
        for name in (*FILES, JOURNAL_XZ):
            partial = dest / (name + ".partial")
            shutil.copyfile(snapshot / name, partial)
            os.replace(partial, dest / name)
            written.append(dest / name)
    return written + packed_bases


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
