from __future__ import annotations

import io
from pathlib import Path

import pytest

from objectives import data
from objectives.data import SOURCES, download


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_writes_every_source_once_and_keeps_existing_files(tmp_path, monkeypatch):
    fetched = []

    def fake_urlopen(url, timeout):
        fetched.append(url)
        return _Response(url.encode())

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    kept = tmp_path / "lcbench-yahpo" / "model.onnx"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"mine")
    written = download("lcbench", tmp_path)
    assert kept.read_bytes() == b"mine" and kept not in written
    assert {p.relative_to(tmp_path).as_posix() for p in written} == set(SOURCES["lcbench"]) - {
        "lcbench-yahpo/model.onnx"
    }
    for path in written:
        assert (
            path.read_bytes().decode() == SOURCES["lcbench"][path.relative_to(tmp_path).as_posix()]
        )
    assert not list(tmp_path.rglob("*.part"))
    assert len(download("lcbench", tmp_path)) == 0


def test_download_rejects_an_unknown_benchmark(tmp_path):
    with pytest.raises(ValueError, match="Unknown benchmark 'mnist'"):
        download("mnist", tmp_path)


def test_data_dir_order_is_argument_then_environment_then_repository_default(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    assert data.data_root() == Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
    monkeypatch.setenv(data.ENV_VAR, "/from/env")
    assert data.data_root() == Path("/from/env")
    assert data.data_root("/from/arg") == Path("/from/arg")
