"""The real pipeline on CPU: SFT → GRPO → lm-eval with a tiny local model (no hub access)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from safetensors.torch import load_file
from tiny_pipeline import TINY_CONFIG

from objectives.post_training import objective as objective_module
from objectives.post_training.corpus_report import report
from objectives.post_training.evaluation import EvalSuite
from objectives.post_training.mini_corpus import V2, MiniScale, generate, journal
from objectives.post_training.objective import (
    COST_ATTR,
    FAILURE_ATTR,
    RL_FIDELITY_ATTR,
    SCORES_ATTR,
    PostTrainingObjective,
)
from objectives.post_training.search_space import PARAMETERS, paper_space, tiny_space
from objectives.post_training.tasks import write_dataset
from objectives.post_training.tiny_models import (
    TinyModel,
    build_tiny_model,
    pretraining_texts,
    resolve_model,
)
from objectives.post_training.training import Diverged, Hardware
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics
from optuna_autopipe.early_stop import CHECKPOINT_ATTR, STOP_STEP_ATTR, verify

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("AUTOPIPE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_dataset(
        "compare", tmp_path_factory.mktemp("data"), n_sft=60, n_rl=8, n_eval=6, seed=0
    )


def single_space(config):
    return {name: CategoricalDistribution([value]) for name, value in config.items()}


def make_objective(files, tmp_path, **options):
    options = {
        "space": single_space(TINY_CONFIG),
        "eval_suite": EvalSuite(benchmarks=files.eval, temperature=0.0, max_gen_toks=24),
        "output_dir": tmp_path / "out",
        "device": "cpu",
        "rl_max_steps": 1,
        "max_completion_length": 16,
        **options,
    }
    return PostTrainingObjective(sft_data=files.sft, rl_data=files.rl, **options)


def test_full_trial_runs_sft_grpo_and_lm_eval(files, tmp_path, recwarn, capfd):
    study = optuna.create_study(direction="maximize", study_name="full")
    study.optimize(make_objective(files, tmp_path, early_stop=None), n_trials=1)
    # quiet: no library deprecation warning, no inner progress bar
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
    printed = capfd.readouterr()
    assert "it/s" not in printed.err + printed.out
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    scores = trial.user_attrs[SCORES_ATTR]
    assert set(scores) == {"autopipe_test", "autopipe_hard"}
    assert 0.0 <= trial.value <= 1.0
    assert trial.value == pytest.approx(sum(scores.values()) / 2)
    assert set(trial.user_attrs[COST_ATTR]) == {"sft", "rl", "eval"}
    assert trial.user_attrs["cost"] > 0
    assert trial.user_attrs["fidelity"] == 1.0
    assert TrainingDynamics.from_json(trial.user_attrs[DYNAMICS_ATTR]).total_steps == 16
    folder = tmp_path / "out" / "full" / "trial-00000"
    record = json.loads((folder / "trial.json").read_text())
    assert record["params"] == TINY_CONFIG and record["scores"] == scores
    assert not (folder / "sft" / "model").exists() and not (folder / "rl" / "model").exists()


def test_lower_rl_fidelities_are_evaluated_and_recorded(files, tmp_path):
    study = optuna.create_study(direction="maximize", study_name="rl-fidelity")
    objective = make_objective(
        files, tmp_path, early_stop=None, rl_max_steps=2, rl_fidelities=(0.5, 0.0)
    )
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    fidelities = trial.user_attrs[RL_FIDELITY_ATTR]
    assert list(fidelities) == ["0", "0.5", "1"]
    assert fidelities["1"]["score"] == trial.value
    assert fidelities["1"]["scores"] == trial.user_attrs[SCORES_ATTR]
    assert fidelities["0"]["rl_seconds"] == 0.0
    # the snapshot is taken after 1 of the 2 steps, before the end of training
    assert 0.0 < fidelities["0.5"]["rl_seconds"] < fidelities["1"]["rl_seconds"]
    for entry in fidelities.values():
        assert set(entry["scores"]) == {"autopipe_test", "autopipe_hard"}
        assert entry["eval_seconds"] > 0
    # extra evaluations are not pipeline cost; their snapshots are removed
    assert set(trial.user_attrs[COST_ATTR]) == {"sft", "rl", "eval"}
    assert not list((tmp_path / "out" / "rl-fidelity").glob("trial-*/rl/rl-*"))


@pytest.mark.parametrize("bad", [(1.0,), (-0.1,), (0.25, 1.5)])
def test_rl_fidelities_outside_zero_one_are_refused(files, tmp_path, bad):
    with pytest.raises(ValueError, match="rl_fidelities must be fractions in \\[0, 1\\)"):
        make_objective(files, tmp_path, rl_fidelities=bad)


def test_early_stop_at_half_of_sft_then_verified_by_resuming(files, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside a git repository: lm-eval's `git describe` fails
    study = optuna.create_study(direction="maximize", study_name="es")
    objective = make_objective(files, tmp_path, early_stop=0.5)
    study.optimize(objective, n_trials=1)
    stopped = study.trials[0]
    assert stopped.state == TrialState.PRUNED
    planned = math.ceil(60 / 8) * 2  # 8 steps per epoch, 2 epochs
    assert stopped.user_attrs[STOP_STEP_ATTR] == planned // 2
    dynamics = TrainingDynamics.from_json(stopped.user_attrs[DYNAMICS_ATTR])
    assert dynamics.total_steps == planned and dynamics.last_step == planned // 2
    assert set(stopped.user_attrs[COST_ATTR]) == {"sft"}  # no RL, no evaluation
    assert stopped.user_attrs[CHECKPOINT_ATTR].endswith(f"checkpoint-{planned // 2}")

    verify(study, stopped.params)
    study.optimize(objective, n_trials=1)
    full = study.trials[1]
    assert full.state == TrialState.COMPLETE
    resumed = TrainingDynamics.from_json(full.user_attrs[DYNAMICS_ATTR])
    assert resumed.last_step == planned
    assert min(step for step, _ in resumed.metrics["loss"]) == 1  # continues the first half
    assert full.user_attrs[COST_ATTR]["sft"]["seconds"] > 0
    # the checkpoint holds the tied embedding once; resuming loads it without a warning, and
    # git's complaint does not reach the output
    err = capfd.readouterr().err
    assert "missing keys" not in err and "not a git repository" not in err


def test_only_tied_missing_keys_are_silenced_on_resume():
    import logging

    from objectives.post_training.training import _TiedKeys

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(4, 2)
            self.head = torch.nn.Linear(2, 4, bias=False)
            self.head.weight = self.embed.weight
            self.norm = torch.nn.LayerNorm(2)

    tied = _TiedKeys(Tied())
    assert tied.tied == {"embed.weight", "head.weight"}

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("transformers.trainer", logging.WARNING, "", 0, message, (), None)

    missing = "There were missing keys in the checkpoint model loaded: {}."
    assert not tied.filter(record(missing.format(["head.weight"])))
    assert tied.filter(record(missing.format(["head.weight", "norm.weight"])))
    assert tied.filter(record(missing.format(["norm.weight"])))
    assert tied.filter(record("There were unexpected keys in the checkpoint model loaded: []."))


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "out_of_memory"),
        (Diverged("GRPO loss became nan at step 3"), "diverged"),
        (KeyError("rollout"), "crashed"),
    ],
)
def test_failing_stage_fails_the_trial_not_the_study(files, tmp_path, monkeypatch, error, kind):
    def broken(**_):
        raise error

    monkeypatch.setattr(objective_module, "run_grpo", broken)
    study = optuna.create_study(direction="maximize", study_name="broken")
    study.optimize(make_objective(files, tmp_path, early_stop=None), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    failure = study.trials[0].user_attrs[FAILURE_ATTR]
    assert failure["stage"] == "rl" and failure["kind"] == kind
    assert str(error.args[0]) in failure["reason"]
    assert set(study.trials[0].user_attrs[COST_ATTR]) == {"sft", "rl"}


def test_bad_inputs_name_the_input(files, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        PostTrainingObjective(
            sft_data=tmp_path / "missing.jsonl",
            rl_data=files.rl,
            eval_suite=EvalSuite(benchmarks=files.eval),
        )
    space = single_space(TINY_CONFIG)
    del space["rl_beta"]
    with pytest.raises(ValueError, match="rl_beta"):
        make_objective(files, tmp_path, space=space)
    with pytest.raises(ValueError, match="early_stop"):
        make_objective(files, tmp_path, early_stop=1.0)
    with pytest.raises(ValueError, match="tiny model"):
        resolve_model("tiny/llama-9t")
    with pytest.raises(TypeError, match="sequence"):
        EvalSuite(benchmarks=files.eval[0])


def test_spaces_follow_table_3():
    for space in (paper_space(), tiny_space()):
        assert list(space) == list(PARAMETERS)
    assert paper_space()["rl_beta"].choices == (0.0, 0.05, 0.1)
    assert paper_space()["rl_rollouts"].choices == (8, 16)
    assert resolve_model("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"


def test_grpo_with_fewer_prompts_than_one_step_fails_the_trial(files, tmp_path):
    # 8 RL prompts, 16 per step: GRPO would run no step and return the SFT model as "RL"
    config = {**TINY_CONFIG, "rl_batch": 64, "rl_rollouts": 4}
    study = optuna.create_study(direction="maximize", study_name="no-step")
    objective = make_objective(files, tmp_path, early_stop=None, space=single_space(config))
    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    failure = trial.user_attrs[FAILURE_ATTR]
    assert failure["stage"] == "rl" and "GRPO ran 0 of its 1 planned steps" in failure["reason"]
    assert "at least 16 RL prompts" in failure["reason"]


def test_a_base_model_is_pretrained_from_its_random_initialisation(tmp_path):
    spec = TinyModel(hidden=16, layers=1, heads=2, seed=5)
    random_init = build_tiny_model(spec, tmp_path / "init")
    base = build_tiny_model(dataclasses.replace(spec, pretrain=64), tmp_path / "base")
    before, after = (load_file(f / "model.safetensors") for f in (random_init, base))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # training moved it
    texts = pretraining_texts(200, seed=5)
    assert texts == pretraining_texts(200, seed=5) and texts != pretraining_texts(200, seed=6)
    assert {t.split("\n", 1)[0].split(" ")[0] for t in texts} >= {"Which", "What", "Is", "Next"}
    assert all(t.rstrip().rsplit("\n", 1)[-1].startswith("Answer: ") for t in texts)


def test_effective_batch_is_split_into_accumulation():
    hardware = Hardware(device="cpu", max_device_batch=16)
    assert hardware.split_batch(64) == (16, 4)
    assert hardware.split_batch(8) == (8, 1)
    assert hardware.split_batch(48, multiple_of=8) == (16, 3)
    assert hardware.split_batch(64, multiple_of=16) == (16, 4)


def test_corpus_generation_resumes_and_records_rl_fidelities(tmp_path):
    scale = MiniScale(
        n_sft=24,
        n_rl=16,  # a step of rl_batch 64 / rl_rollouts 4 takes 16 prompts
        n_eval=5,
        rl_max_steps=2,
        max_completion_length=8,
        rl_fidelities=(0.0, 0.5),
    )
    # v2's datasets and RL grid, tiny runs, randomly initialised models (no -base to build)
    corpus = dataclasses.replace(V2, scale=scale, space=tiny_space(rl_lr=(1e-4, 3e-4, 1e-3)))
    out = tmp_path / "mini"
    generate(out, corpus=corpus, runs=1, workers=1, datasets=("yesno-swap",))
    first = Corpus.load(out / "corpus.jsonl").dataset("mini-yesno-swap")
    assert len(first.configs) == 1 and first.dynamics[0] is not None
    assert first.features["simple.rl_answer_yes_no_share"] == 1.0
    assert first.configs[0]["rl_lr"] in (1e-4, 3e-4, 1e-3)
    generate(out, corpus=corpus, runs=3, workers=1, datasets=("yesno-swap",))
    second = Corpus.load(out / "corpus.jsonl").dataset("mini-yesno-swap")
    assert len(second.configs) == 3 and second.configs[0] == first.configs[0]
    record = json.loads((out / "generation.json").read_text())
    assert record["runs_per_dataset"] == 3 and record["corpus"] == "v2"
    assert record["datasets"][0]["teacher"] == {"swaps": {"yes": "no"}, "error": 0.5}
    assert record["device"] == "cpu" and record["status"] == "finished"
    study = optuna.load_study(study_name="mini-yesno-swap", storage=journal(out))
    for trial in study.trials:
        assert list(trial.user_attrs[RL_FIDELITY_ATTR]) == ["0", "0.5", "1"]
    table = report(out, ["yesno-swap"]).split("Two stages:")[1]
    (row,) = [line for line in table.splitlines() if line.startswith("| yesno-swap |")]
    assert row.split(" | ")[1] == "3"  # runs
    with pytest.raises(ValueError, match="Corpus v2 has no dataset 'nope'"):
        generate(out, corpus=corpus, runs=1, datasets=("nope",))


def test_a_bundled_base_is_unpacked_instead_of_pretrained(tmp_path, monkeypatch):
    import tarfile

    from objectives.post_training import bundle, tiny_models

    monkeypatch.setenv("AUTOPIPE_CACHE", str(tmp_path / "cache"))
    built = Path(resolve_model("tiny/llama-0.1m"))  # random init: seconds
    # a bundle holding that build under the pre-trained base's folder name
    with tarfile.open(tmp_path / bundle.BASES_XZ, "w:xz") as archive:
        archive.add(built, arcname="llama-0.1m-base-60000")
    monkeypatch.setattr(bundle, "BUNDLED", tmp_path)

    def no_pretraining(*_, **__):
        raise AssertionError("a bundled base must not be pre-trained again")

    monkeypatch.setattr(tiny_models, "build_tiny_model", no_pretraining)
    base = Path(resolve_model("tiny/llama-0.1m-base"))
    assert base.name == "llama-0.1m-base-60000"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (base / name).read_bytes() == (built / name).read_bytes()
    assert not list(base.parent.glob(".*partial"))
    assert not bundle.unpack_base(base.parent / "llama-0.6m-base-60000")
    with pytest.raises(AssertionError, match="must not be pre-trained"):
        resolve_model("tiny/llama-0.6m-base")
