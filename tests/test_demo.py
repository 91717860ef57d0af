"""``autopipe demo``: AutoPipe vs TPE on a held-out dataset, with a tiny corpus and pipeline."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from objectives.post_training.demo import HELD_OUT, run_demo
from objectives.post_training.mini_corpus import V2, MiniDataset
from optuna_autopipe.early_stop import PROMOTED_FROM_ATTR

pytestmark = pytest.mark.slow


def test_demo_compares_at_equal_pipeline_time_and_prints_only_its_own_lines(
    tiny_v2, tmp_path, capfd
):
    corpus, data = tiny_v2
    out = tmp_path / "demo"
    held_out = HELD_OUT[1]
    options = {
        "budget": 3,
        "seeds": (0, 1),
        "corpus": corpus,
        "corpus_path": data / "post-training" / "corpus.jsonl",
        "held_out": (held_out,),
    }
    outcomes = run_demo(out, workers=2, **options)
    printed = capfd.readouterr()
    # both seeds on the one held-out dataset, AutoPipe then TPE per seed
    assert [(o.method, o.seed) for o in outcomes] == [
        ("autopipe", 0),
        ("tpe", 0),
        ("autopipe", 1),
        ("tpe", 1),
    ]
    for mine, theirs in (outcomes[:2], outcomes[2:]):
        assert theirs.seconds >= mine.seconds > 0 and mine.dataset == held_out.name
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(out / "demo.journal")))
    study = optuna.load_study(study_name=f"autopipe-{held_out.name}-seed0", storage=storage)
    early = [t for t in study.trials if PROMOTED_FROM_ATTR not in t.user_attrs]
    assert len(early) == 3 and all(t.state == TrialState.PRUNED for t in early)
    verified = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert verified and max(t.value for t in verified) == mine.score
    assert (out / "regret_vs_pipeline_time.png").stat().st_size > 0
    shown = optuna.artifacts.get_all_artifact_meta(early[0], storage=storage)
    assert {m.filename for m in shown} == {"dynamics.json", "dynamics.png"}
    text = printed.out + printed.err
    assert f"optuna-dashboard {out / 'demo.journal'} --artifact-dir {out / 'artifacts'}" in text
    assert "AutoPipe better on" in text
    # one line per study, no library warnings or inner progress bars
    assert text.count(f"{held_out.name:20} seed 0:") == 2
    assert text.count(f"{held_out.name:20} seed 1:") == 2
    for noise in ("Warning", "%|", "it/s]"):
        assert noise not in text, text
    # a rerun resumes: nothing new is run
    again = run_demo(out, workers=1, **options)
    assert [(o.trials, o.seconds) for o in again] == [(o.trials, o.seconds) for o in outcomes]
    assert capfd.readouterr().out.count("[done before: resumed]") == 4
    # a promotion a stopped demo left RUNNING is run again, from the same early stop
    first = early[0]
    study.enqueue_trial(first.params, user_attrs={PROMOTED_FROM_ATTR: first.number})
    lost = study.ask()
    resumed = run_demo(out, workers=1, **options)
    study = optuna.load_study(study_name=study.study_name, storage=storage)
    assert study.trials[lost.number].state == TrialState.FAIL
    redone = [t for t in study.trials if t.user_attrs.get(PROMOTED_FROM_ATTR) == first.number]
    assert [t.state for t in redone][-1] == TrialState.COMPLETE
    assert resumed[0].trials == outcomes[0].trials + 2
    # other settings in the same folder are refused, nothing is touched
    before = (out / "demo.journal").read_bytes()
    with pytest.raises(ValueError, match=r"other settings \(budget differ"):
        run_demo(out, workers=1, **{**options, "budget": 4})
    assert (out / "demo.journal").read_bytes() == before


def test_demo_refuses_bad_folders_and_corpus_files_and_a_running_demo(tmp_path):
    import os

    from objectives.post_training.demo import _lock

    with pytest.raises(ValueError, match=r"--corpus .*nope\.jsonl: no such file"):
        run_demo(tmp_path / "d", corpus_path=tmp_path / "nope.jsonl")
    assert not (tmp_path / "d").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        run_demo(tmp_path / "file")
    (tmp_path / "demo.lock").write_text(str(os.getpid()))  # a live process holds it
    with (
        pytest.raises(ValueError, match=f"Another demo \\(pid {os.getpid()}\\)"),
        _lock(tmp_path),
    ):
        pass
    (tmp_path / "demo.lock").write_text("999999999")  # its process is gone: taken over
    with _lock(tmp_path):
        assert (tmp_path / "demo.lock").read_text() == str(os.getpid())
    assert not (tmp_path / "demo.lock").exists()


def test_demo_refuses_a_held_out_dataset_of_the_corpus(tmp_path):
    with pytest.raises(ValueError, match=r"Held-out datasets \['yesno'\] are in corpus v2"):
        run_demo(tmp_path, held_out=(MiniDataset(name="yesno", tasks=("yesno",)),), corpus=V2)


def test_held_out_datasets_are_not_in_the_corpus():
    assert not {d.name for d in HELD_OUT} & {d.name for d in V2.datasets}
    assert not {d.folder for d in HELD_OUT} & {d.folder for d in V2.datasets}


def test_table_compares_tpe_at_autopipes_spend_too():
    from objectives.post_training.demo import Outcome, table

    def outcome(method, dataset, seconds, score, trajectory):
        return Outcome(method, dataset, 0, len(trajectory), 1, seconds, score, trajectory)

    outcomes = [
        outcome("autopipe", "a", 435.0, 0.565, [(100.0, None), (435.0, 0.565)]),
        # TPE's last run overshoots: 0.625 only after 578 s
        outcome("tpe", "a", 578.0, 0.625, [(240.0, 0.5), (578.0, 0.625)]),
        outcome("autopipe", "b", 100.0, 0.7, [(100.0, 0.7)]),
        outcome("tpe", "b", 150.0, 0.8, [(150.0, 0.8)]),  # no full run by 100 s
    ]
    assert outcomes[1].score_at(435.0) == 0.5 and math.isnan(outcomes[3].score_at(100.0))
    text = table(outcomes)
    assert "AutoPipe better on 0 of 2 jobs, tied on 0; better than TPE at equal spend on 2." in text
    row = next(line for line in text.splitlines() if line.startswith("tpe      a"))
    assert row.split()[-3:] == ["0.625", "0.000", "0.500"]
