"""The real pipeline on your own data: SFT → GRPO → lm-eval, early-stopped trials chosen by
AutoPipeSampler, then one full-fidelity verification of the recommendation.

    python examples/real_pipeline.py --sft sft.jsonl --rl rl.jsonl --eval test.jsonl \
        --models Qwen/Qwen2.5-1.5B-Instruct,meta-llama/Llama-3.2-1B-Instruct --prior DIR

Files: SFT ``{"prompt", "completion"}`` (completion ends in "Answer: X"), RL and eval
``{"prompt", "answer"}``. Without arguments it makes a small synthetic dataset and uses the
local tiny models, so it runs offline on a laptop CPU in a few minutes. Outputs go to
``--out`` (``<study>/trial-<n>/{sft,rl}/``, ``trial.json``; see
objectives/post_training/objective.py) and the study to ``--out/studies.db``.
"""

import argparse
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution

from objectives.post_training.demo import load_prior
from objectives.post_training.evaluation import EvalSuite
from objectives.post_training.mini_corpus import V2
from objectives.post_training.objective import PostTrainingObjective
from objectives.post_training.search_space import SFT_PARAMETERS, paper_space
from objectives.post_training.tasks import write_dataset
from optuna_autopipe.prior import Prior
from optuna_autopipe.profile import DatasetProfile
from optuna_autopipe.promotion import promote_best
from optuna_autopipe.sampler import AutoPipeSampler

parser = argparse.ArgumentParser()
parser.add_argument("--sft"), parser.add_argument("--rl"), parser.add_argument("--eval")
parser.add_argument("--models", help="comma-separated hub names (default: the paper's six)")
parser.add_argument("--prior", help="a saved prior over the same space (autopipe fit-prior)")
parser.add_argument("--trials", type=int, default=4)
parser.add_argument("--out", default="runs/real-pipeline")
args = parser.parse_args()
out = Path(args.out)

if args.sft:  # your data, hub models
    sft, rl, evals, space = args.sft, args.rl, [Path(args.eval)], paper_space()
    if args.models:
        space["base_model"] = CategoricalDistribution(args.models.split(","))
else:  # a synthetic dataset and the tiny local models
    files = write_dataset("arithmetic", out / "data", n_sft=256, n_rl=16, n_eval=20)
    sft, rl, evals, space = files.sft, files.rl, list(files.eval), dict(V2.space)

# A prior must come from runs over the same space: the bundled one covers corpus v2's space
# (the pre-trained tiny bases) only.
prior = Prior.load(args.prior) if args.prior else None if args.sft else load_prior(out)
dataset = DatasetProfile.from_files(name="mine", sft_path=sft, rl_path=rl, eval_paths=evals)
objective = PostTrainingObjective(
    sft_data=sft,
    rl_data=rl,
    eval_suite=EvalSuite(benchmarks=tuple(evals)),
    space=space,
    # with a regressor, trials stop where it was trained (PRUNED, proxy in user attrs)
    early_stop=prior.regressor.fraction if prior and prior.regressor else None,
    regressor=prior.regressor if prior else None,
    dataset=dataset,
    output_dir=out,
    rl_max_steps=None if args.sft else 2,
)
sampler = AutoPipeSampler(
    prior,
    dataset,
    budget=args.trials,
    seed=0,
    search_space=space,
    early_stop_params=SFT_PARAMETERS,  # a stop inside SFT sees nothing of the RL settings
)
study = optuna.create_study(
    study_name="real-pipeline",
    storage=f"sqlite:///{out / 'studies.db'}",
    direction="maximize",
    sampler=sampler,
    load_if_exists=True,
)
study.optimize(objective, n_trials=args.trials)
# the best early stops resume their SFT, then GRPO and lm-eval; the best verified one wins
promoted = promote_best(study, sampler)
study.optimize(objective, n_trials=len(promoted))
print(f"best verified {sampler.recommend(study)}: accuracy {study.best_value}")
