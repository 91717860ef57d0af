"""The ``autopipe`` command line.

    autopipe bench --benchmark {nmt,lcbench} --methods random,tpe,... --budget 15 --seeds 5 \
        [--storage URL] [--protocol P [--sources K]] [--prior-noise MODE] --out DIR
    autopipe demo [--out DIR] [--budget N] [--seeds N] [--workers K] [--corpus corpus.jsonl]
    autopipe corpus generate --out DIR [--runs N] [--training-seeds N] [--workers K]
        [--datasets A,B]
    autopipe corpus report --out DIR [--seed-spread DATASET]
    autopipe corpus bundle --out DIR
    autopipe fit-prior (--storage URL --studies A,B,... | --benchmark NAME) --out DIR \
        [--fractions 0.25,0.5,0.75]
    autopipe prior-report --benchmark {nmt,lcbench} --out DIR
    autopipe data download --benchmark {nmt,lcbench} --data-dir DIR
    autopipe worker --storage URL --study NAME --objective MODULE:CALLABLE [--prior DIR] \
        [--dataset-profile FILE] [--n-trials N] [--max-trials N] [--heartbeat-interval S]
    autopipe recommend --storage URL --study NAME [--prior DIR] [--enqueue [--retry-failed]]
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from objectives.data import SOURCE_PAGES, BenchmarkDataError, download
from objectives.registry import BENCHMARKS, PROTOCOLS
from optuna_autopipe._text import count
from optuna_autopipe.bench.job_failures import StudiesFailed
from optuna_autopipe.bench.methods import method_names
from optuna_autopipe.bench.peer_env import PEERS, PeerEnvironmentError
from optuna_autopipe.bench.prior_noise import PRIOR_NOISE

DEFAULT_METHODS = (
    "random,tpe,gp,bohb,random1,global,offline,smac,random-es,tpe-es,random-cut,tpe-cut,"
    "autopipe,autopipe-paper,autopipe-proxy,autopipe-full,no-residual,no-bo,no-offline"
)


def _names(text: str) -> list[str]:
    """A comma-separated list of names (empty items skipped).

    Raises:
        argparse.ArgumentTypeError: no name, or a name given twice (argparse puts the flag
            in front).
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(
            f"{', '.join(map(repr, repeated))} given more than once; name each once"
        )
    return names


def _out_folder(text: str) -> str:
    """A folder to write in: an existing one, or one that can be created.

    Raises:
        argparse.ArgumentTypeError: a file stands in the way (the folder or one above it).
    """
    path = Path(text)
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(
            f"{existing} is a file, not a folder; name a folder (new or existing) to write in"
        )
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autopipe", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser(
        "bench",
        help="leave-one-dataset-out benchmark on recorded data",
        epilog=_methods_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _bench_arguments(bench, out_default=None)
    bench.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    bench.add_argument(
        "--methods",
        type=_names,
        default=_names(DEFAULT_METHODS),
        help="comma-separated method names (the default ones and every available one are "
        "listed below)",
    )
    bench.add_argument(
        "--budget", type=_positive, default=15, help="trials per study, in full-run equivalents"
    )
    bench.add_argument("--seeds", type=_positive, default=5, help="seeds 0..N-1 per method")

    demo = commands.add_parser(
        "demo", help="AutoPipe vs TPE, live, with the real pipeline (the README's main job)"
    )
    demo.add_argument(
        "--out",
        type=_out_folder,
        default="runs/demo",
        help="folder of the journal, prior, plot and runs",
    )
    demo.add_argument("--budget", type=_positive, default=8, help="early-stopped trials")
    demo.add_argument(
        "--seeds",
        type=_positive,
        default=3,
        help="a count N: runs seeds 0..N-1 (seed k on held-out dataset k %% 3)",
    )
    demo.add_argument("--workers", type=_positive, default=2, help="studies run at once")
    demo.add_argument(
        "--corpus",
        default=None,
        help="corpus.jsonl to fit the prior on (default: the bundled corpus v2)",
    )

    corpus = commands.add_parser("corpus", help="the mini corpus of real pipeline runs")
    corpus_commands = corpus.add_subparsers(dest="corpus_command", required=True)
    generate = corpus_commands.add_parser("generate", help="run (or resume) the generation")
    generate.add_argument("--out", type=_out_folder, required=True)
    generate.add_argument("--corpus", choices=("v1", "v2"), default="v2", help="which corpus")
    generate.add_argument("--runs", type=_positive, default=48, help="runs per dataset")
    generate.add_argument("--workers", type=_positive, default=os.cpu_count() or 1)
    generate.add_argument("--datasets", type=_names, default=None, help="comma-separated")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument(
        "--training-seeds",
        type=_positive,
        default=1,
        help="train every configuration with this many seeds (its score: their mean)",
    )
    generate.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="cpu",
        help="where every run trains (one device type per corpus: numerics differ)",
    )
    summary = corpus_commands.add_parser("report", help="score spread, importances, seed spread")
    summary.add_argument("--out", required=True, help="the generation's folder")
    summary.add_argument("--corpus", choices=("v1", "v2"), default="v2", help="which corpus")
    summary.add_argument("--datasets", type=_names, default=None, help="comma-separated")
    summary.add_argument(
        "--seed-spread", default=None, help="first re-run 3 configurations of this dataset"
    )
    shipped = corpus_commands.add_parser(
        "bundle", help="snapshot a generation into the package (what the demo and bench read)"
    )
    shipped.add_argument("--out", required=True, help="the generation's folder")

    fit = commands.add_parser("fit-prior", help="fit the ranking prior on past runs")
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--benchmark", choices=sorted(BENCHMARKS), help="a recorded benchmark")
    source.add_argument(
        "--storage", help="storage of past studies (with --studies): an RDB URL or a journal file"
    )
    fit.add_argument("--studies", type=_names, help="comma-separated study names, one per dataset")
    fit.add_argument("--out", type=_out_folder, required=True, help="directory for the saved prior")
    fit.add_argument("--data-dir", default=None)
    fit.add_argument("--pool-size", type=_positive, default=2000, help="LCBench runs per task")
    fit.add_argument("--no-tune", action="store_true", help="skip the grid search")
    fit.add_argument(
        "--fractions",
        type=_fractions,
        default=None,
        help="early-stop points to fit a regressor for, comma-separated, where the corpus "
        "supports them ('' for none; default 0.25,0.5,0.75); the default regressor is the "
        "one at 0.5, else the nearest fitted",
    )

    report = commands.add_parser(
        "prior-report", help="leave-one-dataset-out ranking metrics of the prior"
    )
    report.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    report.add_argument(
        "--out", type=_out_folder, required=True, help="directory for prior_report.csv and .md"
    )
    report.add_argument("--protocol", choices=("grouped", "lodo"), default="grouped")
    report.add_argument("--data-dir", default=None)
    report.add_argument("--pool-size", type=_positive, default=2000, help="LCBench runs per task")
    report.add_argument("--workers", type=_positive, default=os.cpu_count() or 1)
    report.add_argument(
        "--fractions",
        type=_fractions,
        default=(0.25, 0.5, 0.75),
        help="early-stop points of the regressor rows, comma-separated ('' for none)",
    )
    report.add_argument(
        "--regressor-rows", type=_positive, default=500, help="training runs per dataset"
    )

    data = commands.add_parser("data", help="benchmark data")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser("download", help="fetch from the public sources")
    fetch.add_argument("--benchmark", required=True, choices=sorted(SOURCE_PAGES))
    fetch.add_argument("--data-dir", required=True)
    fetch.add_argument("--overwrite", action="store_true")

    worker = commands.add_parser(
        "worker", help="run trials of a shared study (one process per GPU or machine)"
    )
    worker.add_argument(
        "--storage", required=True, help="RDB URL (postgresql+psycopg2://...) or journal file"
    )
    worker.add_argument("--study", required=True, help="name of an existing study")
    worker.add_argument("--objective", required=True, help="MODULE:CALLABLE taking a trial")
    worker.add_argument("--prior", default=None, help="directory of a saved prior")
    worker.add_argument("--dataset-profile", default=None, help="DatasetProfile JSON file")
    worker.add_argument("--search-space", default=None, help="MODULE:NAME of {param: distribution}")
    worker.add_argument("--n-trials", type=_positive, default=None, help="trials of this worker")
    worker.add_argument(
        "--max-trials", type=_positive, default=None, help="stop at N COMPLETE+PRUNED trials"
    )
    worker.add_argument("--budget", type=_positive, default=None, help="the sampler's budget")
    worker.add_argument("--seed", type=int, default=None)
    worker.add_argument(
        "--heartbeat-interval", type=_positive, default=60, help="seconds (RDB storage only)"
    )
    worker.add_argument(
        "--grace-period", type=_positive, default=None, help="default: 2 x heartbeat interval"
    )
    worker.add_argument("--max-retry", type=int, default=3, help="re-runs of a dead worker's trial")

    recommend = commands.add_parser(
        "recommend", help="the configuration AutoPipe recommends now, its evidence, its check"
    )
    recommend.add_argument(
        "--storage",
        required=True,
        help="RDB URL (sqlite:///..., postgresql+psycopg2://...) or journal file",
    )
    recommend.add_argument("--study", required=True, help="name of the study")
    recommend.add_argument(
        "--prior", default=None, help="directory of the saved prior the study was run with"
    )
    recommend.add_argument(
        "--enqueue",
        action="store_true",
        help="enqueue its full-fidelity verification run (not when one exists)",
    )
    recommend.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --enqueue: enqueue it even though a verification of it failed",
    )
    return parser


def _methods_epilog() -> str:
    """The methods ``autopipe bench --help`` lists: the default ones, every available one
    (``methods.method_names``) and the peers among them, wrapped without breaking a name."""

    def block(title: str, names: Sequence[str]) -> str:
        text = ", ".join(names)
        return f"{title}\n" + textwrap.fill(
            text, width=78, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False
        )

    return "\n\n".join(
        [
            block("default methods:", DEFAULT_METHODS.split(",")),
            block("available methods:", method_names()),
            block("of which peers (run in the environment `make peers` builds):", sorted(PEERS)),
        ]
    )


def _bench_arguments(parser: argparse.ArgumentParser, *, out_default: str | None) -> None:
    parser.add_argument(
        "--out", type=_out_folder, required=out_default is None, default=out_default
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="an RDB URL (default: sqlite:///OUT/bench.db; a missing SQLite file is created) "
        "or an existing Optuna journal file",
    )
    parser.add_argument(
        "--data-dir", default=None, help="default: $AUTOPIPE_DATA or ../shared/benchmarks"
    )
    parser.add_argument("--datasets", type=_names, default=None, help="comma-separated subset")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="grouped",
        help="what a method may learn from: every dataset outside the held-out one's family "
        "(grouped), every other dataset (lodo), one dataset of another family (single-source) "
        "or K of them (few-source); the source protocols pick different sources per seed",
    )
    parser.add_argument(
        "--sources",
        type=_positive,
        default=None,
        help="K, the number of source datasets of --protocol few-source (default 2)",
    )
    parser.add_argument(
        "--prior-noise",
        choices=PRIOR_NOISE,
        default="none",
        help="wrong-prior stress for the methods using the ranking prior: its scores negated "
        "(inverted) or replaced by a fixed random score per configuration (shuffled)",
    )
    parser.add_argument("--noise-sd", type=float, default=1.0, help="LCBench observation noise")
    parser.add_argument(
        "--workers",
        type=_positive,
        default=os.cpu_count() or 1,
        help="worker processes (default: one per CPU)",
    )


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from exc
    if not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"early-stop fractions must be in (0, 1), got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "bench" and args.sources is not None and args.protocol != "few-source":
        parser.error("argument --sources: only with --protocol few-source")
    try:
        if args.command == "data":
            for path in download(args.benchmark, args.data_dir, overwrite=args.overwrite):
                print(f"wrote {path}")
            return 0
        if args.command == "fit-prior":
            return _fit_prior(args)
        if args.command == "prior-report":
            return _prior_report(args)
        if args.command == "demo":
            from objectives.post_training.demo import run_demo

            paths = {} if args.corpus is None else {"corpus_path": args.corpus}
            run_demo(
                args.out,
                budget=args.budget,
                seeds=range(args.seeds),
                workers=args.workers,
                **paths,
            )
            return 0
        if args.command == "corpus":
            return _generate_corpus(args)
        if args.command == "worker":
            return _worker(args)
        if args.command == "recommend":
            return _recommend(args)
        return _bench(args)
    except (
        BenchmarkDataError,
        ValueError,
        FileNotFoundError,
        StudiesFailed,
        PeerEnvironmentError,
    ) as exc:
        print(f"autopipe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # bench's says what is stored and how to resume
        print(f"autopipe: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 130


def _fit_prior(args: argparse.Namespace) -> int:
    from objectives.registry import load_benchmark
    from optuna_autopipe.corpus import Corpus
    from optuna_autopipe.prior import DEFAULT_FRACTIONS, DEFAULT_GRID, fit_prior
    from optuna_autopipe.recommend import open_storage

    if args.benchmark:
        benchmark = load_benchmark(args.benchmark, data_dir=args.data_dir, pool_size=args.pool_size)
        corpus = Corpus.from_tasks(benchmark.tasks, groups=benchmark.groups, dynamics=True)
    elif not args.studies:
        raise ValueError("--storage needs --studies: the past studies, one per dataset.")
    else:
        corpus = Corpus.from_studies(open_storage(args.storage), args.studies)
    prior = fit_prior(
        corpus,
        grid=DEFAULT_GRID[:1] if args.no_tune else DEFAULT_GRID,
        fractions=DEFAULT_FRACTIONS if args.fractions is None else args.fractions,
    )
    prior.save(args.out)
    print(f"prior fitted on {count(len(corpus.datasets), 'dataset')}, {prior.record['chosen']}")
    print(
        f"ranker: {prior.record['ranker']['groups']} group(s) of datasets, grid search "
        f"{prior.record['ranker']['grid_search']}"
    )
    regressor = prior.record["regressor"]
    print(
        "early-stop regressor: "
        + (
            "none (no run carries training dynamics before a cut)"
            if regressor is None
            else f"fitted; proxy {regressor['proxy_judgement']}; early_stop_signal='auto' "
            f"uses the {regressor['auto_signal']}"
        )
    )
    if prior.regressor is not None:
        served = ", ".join(f"{f:.0%}" for f in prior.fractions)
        print(
            f"early-stop regressors at {served} (default {prior.regressor.fraction:.0%}); "
            "pass prior.regressor_for(fraction) to AutoPipeEarlyStop"
        )
    for fraction, why in prior.record["regressors"].items():
        if isinstance(why, str):
            print(f"  {float(fraction):.0%}: {why}")
    print(f"saved to {args.out}")
    return 0


def _generate_corpus(args: argparse.Namespace) -> int:
    from objectives.post_training.corpus_report import report, seed_spread
    from objectives.post_training.mini_corpus import CORPORA, generate

    if args.corpus_command == "bundle":
        from objectives.post_training.bundle import bundle

        for path in bundle(args.out):
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        return 0
    corpus = CORPORA[args.corpus]
    datasets = args.datasets or [d.name for d in corpus.datasets]
    for name in datasets:
        corpus.dataset(name)  # names the corpus's datasets when one is unknown
    if args.corpus_command == "report" and not (Path(args.out) / "runs.journal").is_file():
        raise FileNotFoundError(
            f"No corpus generation in {args.out} (no runs.journal): run `autopipe corpus "
            f"generate --out {args.out}` first."
        )
    if args.corpus_command == "report":
        if args.seed_spread:
            seed_spread(args.out, args.seed_spread, corpus=corpus)
        text = report(args.out, datasets)
        (Path(args.out) / "report.md").write_text(text + "\n")
        print(text)
        return 0
    path = generate(
        args.out,
        corpus=corpus,
        runs=args.runs,
        workers=args.workers,
        datasets=datasets,
        seed=args.seed,
        training_seeds=args.training_seeds,
        device=args.device,
    )
    print(f"wrote {path}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from optuna_autopipe.worker import worker_main

    ran = worker_main(
        args.storage,
        args.study,
        args.objective,
        prior_dir=args.prior,
        profile_path=args.dataset_profile,
        search_space_spec=args.search_space,
        n_trials=args.n_trials,
        max_trials=args.max_trials,
        budget=args.budget,
        seed=args.seed,
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
        max_retry=args.max_retry,
    )
    print(f"worker {os.getpid()}: ran {count(ran, 'trial')} of study {args.study!r}")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from optuna_autopipe.recommend import recommend_main

    print(
        recommend_main(
            args.storage,
            args.study,
            prior_dir=args.prior,
            enqueue=args.enqueue,
            retry_failed=args.retry_failed,
        )
    )
    return 0


def _prior_report(args: argparse.Namespace) -> int:
    from optuna_autopipe.diagnostics import format_report, prior_report

    table = prior_report(
        benchmark=args.benchmark,
        out=Path(args.out),
        protocol=args.protocol,
        data_dir=args.data_dir,
        pool_size=args.pool_size,
        workers=args.workers,
        fractions=args.fractions,
        regressor_rows=args.regressor_rows,
    )
    print(format_report(table))
    print(f"wrote {Path(args.out) / 'prior_report.csv'} and prior_report.md")
    print(f"wall time: {table.attrs['wall_seconds']:.0f} s")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from optuna_autopipe.bench.harness import BenchSpec, run_bench

    spec = BenchSpec(
        benchmark=args.benchmark,
        methods=args.methods,
        out=Path(args.out),
        budget=args.budget,
        seeds=args.seeds,
        datasets=args.datasets,
        protocol=args.protocol,
        storage=args.storage,
        data_dir=args.data_dir,
        noise_sd=args.noise_sd,
        workers=args.workers,
        sources=args.sources or 2,
        prior_noise=args.prior_noise,
    )
    outputs = run_bench(spec)
    print(outputs.summary.read_text())
    print(f"results: {outputs.results}\nplot:    {outputs.plot}")
    print(f"wall time: {outputs.wall_seconds:.0f} s")
    print(f"\nView the studies side by side:\n  optuna-dashboard {outputs.storage_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
