"""The early-stop hook in a hand-written training loop, from past runs to a promoted config.

1. Past studies (one per dataset) run to the end with ``AutoPipeEarlyStop(fraction=1)``, which
   records every logged metric on each trial.
2. Their runs become a corpus; the early-stop regressor learns the final score from the first
   half of training (``target="direct"``; with a prior, ``fit_prior`` fits the residual one).
3. On a new dataset every trial stops at 50% and ends PRUNED with its proxy in user attrs; the
   best proxy is promoted to one full run.

The "training" is minibatch SGD on a synthetic linear regression, so the script needs only
numpy and runs in seconds; a real objective swaps in its trainer (``hook.callback()``).

    python examples/early_stop_any_loop.py [OUT_DIR]
"""

import sys
from pathlib import Path

import numpy as np
import optuna

from optuna_autopipe.corpus import PROFILE_ATTR, Corpus
from optuna_autopipe.early_stop import AutoPipeEarlyStop, promote, proxy_of
from optuna_autopipe.regressor import EarlyStopRegressor

STEPS = 200


def make_dataset(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n, dim, noise = int(rng.integers(200, 2000)), int(rng.integers(5, 40)), rng.uniform(0.1, 1)
    x = rng.normal(size=(n, dim))
    y = x @ rng.normal(size=dim) + noise * rng.normal(size=n)
    features = {"log10_n": float(np.log10(n)), "dim": float(dim), "noise": float(noise)}
    return {"x": x[: n // 2], "y": y[: n // 2], "xv": x[n // 2 :], "yv": y[n // 2 :], **features}


def objective(data: dict, fraction: float, regressor: EarlyStopRegressor | None = None):
    features = {k: data[k] for k in ("log10_n", "dim", "noise")}

    def run(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 0.3, log=True)
        batch = trial.suggest_categorical("batch", [4, 16, 64])
        decay = trial.suggest_float("weight_decay", 1e-6, 1.0, log=True)
        hook = AutoPipeEarlyStop(
            trial, total_steps=STEPS, fraction=fraction, regressor=regressor, dataset=features
        )
        rng, w = np.random.default_rng(trial.number), np.zeros(data["x"].shape[1])
        for step in range(1, STEPS + 1):
            rows = rng.integers(len(data["y"]), size=batch)
            error = data["x"][rows] @ w - data["y"][rows]
            grad = data["x"][rows].T @ error / batch + decay * w
            w = w - lr * grad
            if step % 5:  # log every 5 steps, evaluate every 20
                continue
            logged = {"loss": float(np.mean(error**2)), "grad_norm": float(np.linalg.norm(grad))}
            if step % 20 == 0:
                logged["eval_loss"] = float(np.mean((data["xv"] @ w - data["yv"]) ** 2))
            if hook.report(step, logged):
                break
        hook.finish()  # raises optuna.TrialPruned after an early stop
        return logged["eval_loss"]

    return run


out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/example-early-stop")
out.mkdir(parents=True, exist_ok=True)
journal = out / "studies.log"
storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
optuna.logging.set_verbosity(optuna.logging.WARNING)

# 1. Past studies at full fidelity: the hook records the dynamics of every run.
past = [f"past-{i}" for i in range(4)]
for seed, name in enumerate(past):
    data = make_dataset(seed)
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    study.set_user_attr(PROFILE_ATTR, {k: data[k] for k in ("log10_n", "dim", "noise")})
    if not study.trials:
        study.optimize(objective(data, fraction=1.0), n_trials=30)

# 2. The regressor: final score (standardised per dataset) from the first half of training.
corpus = Corpus.from_studies(storage, past)
regressor = EarlyStopRegressor(fraction=0.5, target="direct").fit(corpus)

# 3. A new dataset: 12 half runs, then the best proxy promoted to one full run.
study = optuna.create_study(
    study_name="new", storage=storage, load_if_exists=True, pruner=optuna.pruners.NopPruner()
)
run = objective(make_dataset(99), fraction=0.5, regressor=regressor)
study.optimize(run, n_trials=12)
early = [t for t in study.trials if proxy_of(t) is not None]
best = max(early, key=lambda t: proxy_of(t)[0])  # proxies are oriented: higher is better
promote(study, best)
study.optimize(objective(make_dataset(99), fraction=1.0), n_trials=1)
final = study.trials[-1]
print(f"{len(early)} early-stopped trials at 50% (PRUNED, proxies in user attrs)")
print(f"promoted trial {best.number} (proxy {proxy_of(best)[0]:+.2f}): eval loss {final.value:.3f}")
print(f"optuna-dashboard {journal}")
