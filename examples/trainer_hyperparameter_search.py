"""AutoPipeSampler inside ``transformers.Trainer.hyperparameter_search``, with a batch size that
runs out of memory.

A tiny GPT-2 built locally (no download) trains for a few steps on random tokens; the search
tunes the learning rate and the per-device batch size. The largest batch does not fit: its first
forward pass raises ``torch.OutOfMemoryError``. ``catch=`` makes Optuna record that trial as
FAIL and go on; the sampler should not propose a configuration that failed again. The study is
written to SQLite, so optuna-dashboard shows every trial, the failed one included.

    python examples/trainer_hyperparameter_search.py [OUT_DIR]
"""

import sys
from pathlib import Path

import optuna
import torch
import transformers
from optuna.trial import TrialState

from optuna_autopipe.sampler import AutoPipeSampler

N_TRIALS = 8
VOCAB, SEQ = 32, 8
LEARNING_RATES = [1e-3, 3e-3, 1e-2]
BATCH_SIZES = [4, 8, 16, 32]
MEMORY_TOKENS = (
    128  # the simulated device holds the activations of 128 tokens: batch 32 does not fit
)

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/example-trainer-hp-search")
out.mkdir(parents=True, exist_ok=True)
storage = f"sqlite:///{out / 'hp_search.db'}"
optuna.logging.set_verbosity(optuna.logging.WARNING)


class Tokens(torch.utils.data.Dataset):
    """``n`` random sequences of ``SEQ`` tokens (fixed seed), labels = inputs (causal LM)."""

    def __init__(self, n: int, seed: int):
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def out_of_memory(module, args, kwargs):
    """Simulated: this runs on the CPU, so the device's memory limit is imitated here, raising
    what CUDA raises when a batch's activations do not fit."""
    if kwargs["input_ids"].numel() > MEMORY_TOKENS:
        raise torch.OutOfMemoryError(
            f"CUDA out of memory (simulated): a batch of {kwargs['input_ids'].numel()} tokens, "
            f"the device holds {MEMORY_TOKENS}"
        )


def model_init() -> transformers.PreTrainedModel:
    config = transformers.GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=16,
        vocab_size=VOCAB,
        n_positions=SEQ,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config)
    model.register_forward_pre_hook(out_of_memory, with_kwargs=True)
    return model


def hp_space(trial: optuna.Trial) -> dict:
    return {
        "learning_rate": trial.suggest_categorical("learning_rate", LEARNING_RATES),
        "per_device_train_batch_size": trial.suggest_categorical(
            "per_device_train_batch_size", BATCH_SIZES
        ),
    }


trainer = transformers.Trainer(
    model_init=model_init,  # hyperparameter_search builds a fresh model for every trial
    args=transformers.TrainingArguments(
        output_dir=str(out / "trainer"),
        max_steps=8,
        per_device_eval_batch_size=8,
        eval_strategy="no",  # the search evaluates once after training: eval_loss, minimised
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    ),
    train_dataset=Tokens(64, seed=1),
    eval_dataset=Tokens(16, seed=2),
)
space = {  # the sampler optimises this space from the first trial on
    "learning_rate": optuna.distributions.CategoricalDistribution(LEARNING_RATES),
    "per_device_train_batch_size": optuna.distributions.CategoricalDistribution(BATCH_SIZES),
}
# Keyword arguments go to optuna.create_study (sampler, storage, study_name, ...), except
# timeout, n_jobs, gc_after_trial and catch, which go to study.optimize.
best = trainer.hyperparameter_search(
    hp_space=hp_space,
    n_trials=N_TRIALS,
    direction="minimize",
    backend="optuna",
    sampler=AutoPipeSampler(None, budget=N_TRIALS, seed=0, search_space=space),
    storage=storage,
    study_name="trainer-hp-search",
    load_if_exists=True,  # run again: more trials in the same study
    catch=(torch.OutOfMemoryError,),  # a run out of memory ends FAIL, the search goes on
)

study = optuna.load_study(study_name="trainer-hp-search", storage=storage)
failed = [t for t in study.trials if t.state == TrialState.FAIL]
complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
print(f"best run: trial {best.run_id}, eval loss {best.objective:.4f}, {best.hyperparameters}")
print(f"{len(complete)} trials complete, {len(failed)} failed (out of memory):")
for trial in failed:
    print(f"  trial {trial.number} failed: {trial.params}")
print(f"optuna-dashboard {storage}")
