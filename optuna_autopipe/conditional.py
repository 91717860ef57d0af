"""Conditional search spaces: which parameters a configuration does not use.

An Optuna objective suggests some parameters only on some branches (``x`` when ``c == "a"``,
``y`` otherwise), so a trial holds the parameters of its branch only. The structure is
read from configurations that ran (a study's trials, a prior's corpus) as rules
``(c, v, p)``: "with categorical ``c`` at ``v``, ``p`` is inactive", one rule wherever
configurations with ``c = v`` exist and none of them holds ``p``. ``deactivate`` applies the
rules to candidate configurations, setting inactive parameters to ``None``: their encoding
is then the missing value (``SpaceEncoder``; XGBoost's missing-value branch in the prior),
and two candidates that differ only there are one configuration (``config_key``).

A rule is only as good as the runs behind it: one run of a branch that skipped ``p`` makes
``p`` inactive on that branch until a run of it holds ``p`` (the rule is then dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution

#: (categorical parameter, its value, the parameter inactive there).
Rule = tuple[str, Any, str]


def inactive_rules(
    configs: Iterable[Mapping[str, Any]], space: Mapping[str, BaseDistribution]
) -> list[Rule]:
    """The rules (module docstring) that ``configs``, as they ran (a parameter a config
    does not hold, or holds as ``None``, is one it did not use), imply over ``space``."""
    held: dict[tuple[str, Any], set[str]] = {}
    for config in configs:
        used = {n for n, v in config.items() if v is not None}
        for name, dist in space.items():
            if isinstance(dist, CategoricalDistribution) and name in used:
                held.setdefault((name, _hashable(config[name])), set()).update(used)
    return [
        (name, value, other)
        for (name, value), used in sorted(held.items(), key=repr)
        for other in space
        if other != name and other not in used
    ]


def deactivate(configs: Sequence[Mapping[str, Any]], rules: Iterable[Rule]) -> list[dict[str, Any]]:
    """``configs`` with every parameter a rule makes inactive set to ``None``."""
    by_value: dict[tuple[str, Any], list[str]] = {}
    for name, value, other in rules:
        by_value.setdefault((name, _hashable(value)), []).append(other)
    out = []
    for config in configs:
        inactive = {
            other
            for name, value in config.items()
            if value is not None
            for other in by_value.get((name, _hashable(value)), ())
        }
        out.append({n: None if n in inactive else v for n, v in config.items()})
    return out


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
