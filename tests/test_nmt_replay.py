from __future__ import annotations

import numpy as np
import optuna
import pytest

from objectives.nmt import PARAMS, UPDATES_PER_CHECKPOINT
from objectives.replay import stable_seed


def test_six_corpora_with_recorded_grids(nmt):
    names = [t.name for t in nmt.tasks]
    assert names == [
        "material-so-en",
        "material-sw-en",
        "robust19-en-ja",
        "robust19-ja-en",
        "ted-ru-en",
        "ted-zh-en",
    ]
    sizes = {t.name: len(t.pool()[0]) for t in nmt.tasks}
    assert sizes == {
        "material-so-en": 324,
        "material-sw-en": 420,
        "robust19-en-ja": 98,
        "robust19-ja-en": 94,
        "ted-ru-en": 99,
        "ted-zh-en": 36,
    }
    for task in nmt.tasks:
        assert set(task.search_space) == set(PARAMS)
        _, scores = task.pool()
        assert np.all(np.isfinite(scores)) and np.all(scores > 1.0)
        assert task.direction == "minimize"
        assert set(task.dataset_features) == {"log10_dataset_size", "max_len", "into_english"}


def test_grouped_protocol_holds_out_the_partner(nmt):
    offline = {t.name for t in nmt.offline("ted-ru-en", "grouped")}
    assert "ted-zh-en" not in offline and "ted-ru-en" not in offline and len(offline) == 4
    lodo = {t.name for t in nmt.offline("ted-ru-en", "lodo")}
    assert "ted-zh-en" in lodo and len(lodo) == 5
    with pytest.raises(ValueError, match="protocol"):
        nmt.offline("ted-ru-en", "leave-two-out")


def test_source_protocols_draw_round_robin_from_the_other_groups(nmt):
    target = "ted-ru-en"
    candidates = nmt.candidate_sources(target)
    # Groups ordered by stable_seed(benchmark, target, group), datasets likewise, interleaved.
    groups = sorted({"material", "robust19"}, key=lambda g: stable_seed("nmt", target, g))
    members = {
        g: sorted(
            [d for d in nmt.groups if d.startswith(g)], key=lambda d: stable_seed("nmt", target, d)
        )
        for g in groups
    }
    assert candidates == [members[g][i] for i in range(2) for g in groups]
    assert candidates != nmt.candidate_sources("ted-zh-en")  # the order depends on the target

    single = [nmt.offline(target, "single-source", replicate=k) for k in range(5)]
    assert [[t.name for t in s] for s in single[:4]] == [[c] for c in candidates]
    assert single[4] == single[0]  # replicate k uses position k mod n

    for k in range(4):
        pair = [t.name for t in nmt.offline(target, "few-source", replicate=k)]
        assert pair == [candidates[(2 * k) % 4], candidates[(2 * k + 1) % 4]]
        assert len({nmt.groups[d] for d in pair}) == 2  # round robin: one of each group
        triple = [t.name for t in nmt.offline(target, "few-source", replicate=k, sources=3)]
        assert triple == [candidates[(3 * k + i) % 4] for i in range(3)]
        assert len(set(triple)) == 3 and "ted-zh-en" not in triple
    assert [t.name for t in nmt.offline(target, "few-source", replicate=1)] != [
        t.name for t in nmt.offline(target, "few-source", replicate=0)
    ]
    for too_many in (4, 0):
        with pytest.raises(ValueError, match=rf"1 <= K < 4 .*got K = {too_many}"):
            nmt.offline(target, "few-source", sources=too_many)
    with pytest.raises(ValueError, match="'lodo', 'grouped', 'single-source', 'few-source'"):
        nmt.offline(target, "leave-two-out")
    with pytest.raises(ValueError, match="'ted-xx-en' is not in benchmark"):
        nmt.offline("ted-xx-en", "lodo")


def test_recorded_configuration_maps_to_itself_and_true_score_is_replicate_mean(nmt):
    task = nmt.task("material-so-en")
    configs, scores = task.pool()
    config = configs[7]
    assert task.resolve(config) == config
    curves = task._runs[tuple(float(config[p]) for p in PARAMS)]
    assert task.true_score(config) == pytest.approx(np.mean([c.min() for c in curves]))
    assert scores[7] == pytest.approx(task.true_score(config))


def test_unrecorded_configuration_maps_to_nearest_recorded_neighbour(nmt, caplog):
    task = nmt.task("material-sw-en")
    recorded = {tuple(c.values()) for c in task.pool()[0]}
    space = task.search_space
    grid = [
        dict(zip(PARAMS, values, strict=True))
        for values in np.array(np.meshgrid(*[space[p].choices for p in PARAMS])).T.reshape(-1, 5)
    ]
    missing = [c for c in grid if tuple(task.resolve(c).values()) != tuple(c.values())]
    assert 0 < len(missing) == len(grid) - len(recorded)
    config = {p: type(space[p].choices[0])(v) for p, v in missing[0].items()}
    with caplog.at_level("INFO", logger="objectives.nmt"):
        mapped = task.resolve(config)
    assert "not recorded" in caplog.text
    assert tuple(mapped.values()) in recorded

    # The neighbour differs from the request in as few (scaled log2) units as any recorded one.
    def dist(a):
        return sum(
            (np.log2(a[p]) - np.log2(config[p])) ** 2 / task._scale[i] ** 2
            for i, p in enumerate(PARAMS)
        )

    assert dist(mapped) == pytest.approx(
        min(dist(dict(zip(PARAMS, r, strict=True))) for r in recorded)
    )


def test_early_stop_prefix_is_the_same_number_of_checkpoints_for_every_configuration(nmt):
    task = nmt.task("material-so-en")
    k = task.prefix_steps(0.5)
    for config in task.pool()[0][:40]:
        full = task.evaluate(config, rng=np.random.default_rng(1))
        early = task.evaluate(config, fraction=0.5, rng=np.random.default_rng(1))
        assert full.fidelity == 1.0 and full.cost == 1.0
        assert len(early.steps) == min(k, len(full.steps))
        assert early.cost == pytest.approx(len(early.steps) / len(full.steps))
        assert early.cost_real == UPDATES_PER_CHECKPOINT * len(early.steps)
        assert full.cost_real == UPDATES_PER_CHECKPOINT * len(full.steps)
        assert early.value >= full.value  # best-so-far perplexity can only improve
        assert early.true_score == full.true_score


def test_objective_reports_curve_and_records_fidelity_and_cost(nmt):
    task = nmt.task("ted-ru-en")
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    study.optimize(task.objective(seed=0, fraction=0.25), n_trials=3)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.PRUNED or trial.user_attrs["fidelity"] == 1
        assert 0 < trial.user_attrs["fidelity"] <= 1
        assert trial.user_attrs["cost_unit"] == "training updates"
        assert len(trial.intermediate_values) == round(
            trial.user_attrs["cost_real"] / UPDATES_PER_CHECKPOINT
        )
