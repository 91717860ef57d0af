"""The OptunaHub package (optunahub_package/samplers/autopipe): loads with optunahub, re-exports
the pip package's own objects, and follows the registry's conventions (optuna/optunahub-registry:
template/, optunahub-registry/header_confirm.py, recipes/002_registration.py of optuna/optunahub).
No network: ``optunahub.load_local_module`` imports the folder as it is."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import optunahub
import pytest
import yaml
from packaging.requirements import Requirement

import optuna_autopipe.corpus
import optuna_autopipe.early_stop
import optuna_autopipe.prior
import optuna_autopipe.promotion
import optuna_autopipe.sampler

ROOT = Path(__file__).resolve().parent.parent
REGISTRY_ROOT = ROOT / "optunahub_package"  # mirrors the registry's package/
PACKAGE = "samplers/autopipe"
FOLDER = REGISTRY_ROOT / PACKAGE
MODULE_NAME = "optunahub_registry.package.samplers.autopipe"  # load_local_module's naming
#: The registry's required front matter keys (header_confirm.py), each non-empty.
FRONT_MATTER_KEYS = {"author", "title", "description", "tags", "optuna_versions", "license"}


@pytest.fixture
def hub_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """The package as ``optunahub.load_local_module`` loads it; unregistered afterwards."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ in the folder
    yield optunahub.load_local_module(package=PACKAGE, registry_root=str(REGISTRY_ROOT))
    sys.modules.pop(MODULE_NAME, None)


def test_the_hub_package_re_exports_the_pip_packages_own_objects(
    hub_module: types.ModuleType,
) -> None:
    """Not copies: a study run through OptunaHub behaves as one importing optuna_autopipe."""
    assert hub_module.__name__ == MODULE_NAME
    assert hub_module.AutoPipeSampler is optuna_autopipe.sampler.AutoPipeSampler
    assert hub_module.AutoPipeEarlyStop is optuna_autopipe.early_stop.AutoPipeEarlyStop
    pip_modules = (
        optuna_autopipe.corpus,
        optuna_autopipe.early_stop,
        optuna_autopipe.prior,
        optuna_autopipe.promotion,
        optuna_autopipe.sampler,
    )
    for name in hub_module.__all__:
        owners = [m for m in pip_modules if getattr(m, name, None) is getattr(hub_module, name)]
        assert owners, f"{name} is not an object of the pip package"


def _front_matter(text: str) -> dict[str, object]:
    """The YAML between the README's opening ``---`` lines (python-frontmatter's format)."""
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.DOTALL)
    assert match, "README.md does not start with a --- front matter block"
    parsed = yaml.safe_load(match.group(1))
    assert isinstance(parsed, dict)
    return parsed


def test_the_readme_front_matter_has_the_keys_the_registry_requires() -> None:
    """header_confirm.py's keys, non-empty; the template's and recipe's rules on their values."""
    text = (FOLDER / "README.md").read_text(encoding="utf-8")
    meta = _front_matter(text)
    assert set(meta) == FRONT_MATTER_KEYS
    for key in ("author", "title", "description", "license"):
        assert isinstance(meta[key], str) and meta[key], key
    tags, versions = meta["tags"], meta["optuna_versions"]
    assert isinstance(tags, list) and "sampler" in tags  # required under package/samplers/
    assert isinstance(versions, list) and versions
    assert all(isinstance(v, str) for v in versions), versions  # "5.0.0", not a float
    optuna_spec = next(
        Requirement(r).specifier
        for r in importlib.metadata.requires("optuna-autopipe") or []
        if Requirement(r).name == "optuna"
    )
    assert all(optuna_spec.contains(v) for v in versions), (versions, str(optuna_spec))
    assert meta["license"] == "MIT License"  # the only license the registry supports
    assert not re.search(r"<[A-Za-z!/]", text), "HTML tags are stripped by the registry"


def test_license_and_requirements_match_the_pip_package() -> None:
    """MIT like the pip package, placeholder filled; requirements.txt admits this version."""
    assert importlib.metadata.metadata("optuna-autopipe")["License"] == "MIT"  # pyproject.toml
    license_text = (FOLDER / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License\n") and "<COPYRIGHT HOLDER" not in license_text
    lines = (FOLDER / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = {r.name: r for r in map(Requirement, filter(None, lines))}
    version = importlib.metadata.version("optuna-autopipe")
    assert requirements["optuna-autopipe"].specifier.contains(version), (
        f"requirements.txt ({requirements['optuna-autopipe']}) does not admit optuna-autopipe "
        f"{version}: raise it with the release"
    )


@pytest.mark.slow
def test_the_example_runs_offline(tmp_path: Path) -> None:
    """example.py as a user runs it: its own process, another working directory."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OPTUNAHUB_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [sys.executable, str(FOLDER / "example.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    recommended = r"^recommended \{.*\}: final loss [\d.]+ \(optimum [\d.]+, noise-free\)$"
    assert re.search(recommended, done.stdout, flags=re.MULTILINE), done.stdout
