from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from optuna_autopipe.space import SpaceEncoder, suggest, union_space

SPACE = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "dropout": FloatDistribution(0.0, 0.5),
    "warmup": FloatDistribution(0.0, 0.2, step=0.05),
    "layers": IntDistribution(1, 9),
    "batch": IntDistribution(16, 256, log=True),
    "epochs": IntDistribution(1, 7, step=2),
    "model": CategoricalDistribution(["qwen", "llama", None, True]),
    "beta": CategoricalDistribution([0.0, 0.05, 0.1]),
    "rollouts": CategoricalDistribution([8, 16, 128]),
}


def test_every_distribution_type_encodes_to_its_documented_columns():
    encoder = SpaceEncoder(SPACE)
    assert encoder.columns == [
        "batch",
        "beta",
        "dropout",
        "epochs",
        "layers",
        "lr",
        "model=qwen",
        "model=llama",
        "model=None",
        "model=True",
        "rollouts",
        "warmup",
    ]
    config = {
        "lr": 1e-3,
        "dropout": 0.25,
        "warmup": 0.1,
        "layers": 5,
        "batch": 64,
        "epochs": 3,
        "model": None,
        "beta": 0.05,
        "rollouts": 16,
    }
    row = dict(zip(encoder.columns, encoder.encode([config])[0], strict=True))
    assert row["lr"] == pytest.approx((math.log(1e-3) - math.log(1e-5)) / math.log(1e4))
    assert row["dropout"] == pytest.approx(0.5) and row["layers"] == pytest.approx(0.5)
    assert row["batch"] == pytest.approx(0.5)  # log scale: 64 is midway between 16 and 256
    assert row["epochs"] == pytest.approx(1 / 3) and row["warmup"] == pytest.approx(0.5)
    assert row["beta"] == pytest.approx(0.5)  # numeric grid, linear (0 rules out log)
    assert row["rollouts"] == pytest.approx(0.25)  # spans 16x: log scale, log2 of 2 over 16
    assert [row[f"model={c}"] for c in ("qwen", "llama", "None", "True")] == [0, 0, 1, 0]


def test_sampled_configurations_round_trip_through_suggest_and_encode():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    encoder = SpaceEncoder(SPACE)
    for _ in range(30):
        trial = study.ask()
        config = {name: suggest(trial, name, dist) for name, dist in SPACE.items()}
        study.tell(trial, 0.0)
        row = encoder.encode([config])[0]
        assert np.all((row >= -1e-12) & (row <= 1 + 1e-12))
        assert trial.params == config


def test_unseen_choice_raises_naming_the_parameter_and_missing_values_are_nan():
    encoder = SpaceEncoder(SPACE)
    with pytest.raises(ValueError, match="'model' has value 'mistral'"):
        encoder.encode([{"model": "mistral"}])
    row = dict(zip(encoder.columns, encoder.encode([{}])[0], strict=True))
    assert math.isnan(row["lr"]) and row["model=qwen"] == 0
    # a number off a numeric grid still encodes (extrapolates)
    assert encoder.encode([{"rollouts": 256}])[0][encoder.columns.index("rollouts")] > 1


def test_json_round_trip_keeps_the_encoding():
    encoder = SpaceEncoder(SPACE)
    again = SpaceEncoder.from_json(encoder.to_json())
    config = {"lr": 1e-2, "model": "llama", "rollouts": 8, "epochs": 5}
    np.testing.assert_array_equal(encoder.encode([config]), again.encode([config]))


def test_union_space_widens_ranges_merges_choices_and_rejects_conflicts():
    merged = union_space(
        [
            {"lr": FloatDistribution(1e-4, 1e-2, log=True), "bpe": CategoricalDistribution([1, 2])},
            {
                "lr": FloatDistribution(1e-5, 1e-3, log=True),
                "bpe": CategoricalDistribution([2, 30]),
            },
        ]
    )
    assert merged["lr"] == FloatDistribution(1e-5, 1e-2, log=True)
    assert merged["bpe"].choices == (1, 2, 30)
    with pytest.raises(ValueError, match="'lr'"):
        union_space([{"lr": FloatDistribution(0, 1)}, {"lr": CategoricalDistribution(["a"])}])
