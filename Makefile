# The README's two commands: `make demo` (main job) and `make test` (the tests).
# Both create/reuse a virtual environment in $(VENV) and install what they need.
# torch: these machines carry a CPU build as `torch==2.13.0`; on a CUDA machine run
#   make TORCH=torch demo      (or install torch into .venv first: an importable torch is kept)
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
EXTRAS ?= dev,dashboard,smac,embeddings,pipeline
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(EXTRAS)
QUICK := --budget 15 --seeds 2 --methods random,tpe,gp,bohb,random1,global,smac

.PHONY: peers install demo demo-replay test lint bench-quick bench bench-stress bench-post-training bench-peers reference-check bench-prior bench-sampler

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# The peers' environment: Syne Tune, NePS and DEHB pin numpy < 2, so `autopipe bench` runs
# their methods in .venv-peers (optuna_autopipe/bench/peer_env.py). `make test` never needs it.
PEERS_VENV ?= .venv-peers
PEERS_PY := $(PEERS_VENV)/bin/python
PEERS_STAMP := $(PEERS_VENV)/.installed
$(PEERS_STAMP): peers-constraints.txt pyproject.toml
	test -x $(PEERS_PY) || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_PY) -m pip install --quiet --upgrade pip
	$(PEERS_PY) -c "import torch" 2>/dev/null || $(PEERS_PY) -m pip install --quiet $(TORCH)
	$(PEERS_PY) -m pip install --quiet -c peers-constraints.txt \
		'syne-tune[gpsearchers]' neural-pipeline-search dehb -e .
	touch $(PEERS_STAMP)

peers: $(PEERS_STAMP)

demo: $(STAMP)
	$(VENV)/bin/autopipe demo

# The former demo: LODO on the recorded NMT runs, every baseline, 2 seeds.
demo-replay: $(STAMP)
	$(VENV)/bin/autopipe bench --benchmark nmt --seeds 2 --out runs/demo-replay \
		--methods random,tpe,gp,bohb,random1,global,offline,random-es,tpe-es,autopipe,autopipe-proxy

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Both benchmarks, budget 15, 2 seeds, every baseline; prints the wall time.
bench-quick: $(STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/autopipe bench --benchmark nmt $(QUICK) --out runs/bench-quick/nmt && \
	$(VENV)/bin/autopipe bench --benchmark lcbench $(QUICK) --out runs/bench-quick/lcbench && \
	echo "bench-quick wall time: $$(( $$(date +%s) - start )) s"

# The results of docs/harness.md and docs/sampler.md: 5 seeds, both benchmarks (NMT under both
# hold-out protocols), every baseline, AutoPipe and its ablations and cut sensitivity (about
# 1.5 h on 2 cores).
FINAL := --seeds 5 --methods random,tpe,gp,bohb,random1,global,offline,smac,random-es,tpe-es,random-cut,tpe-cut,autopipe,autopipe-paper,autopipe-proxy,autopipe-full,no-residual,no-bo,no-offline,autopipe-50,autopipe-75,autopipe-belief-rec
bench: $(STAMP)
	$(VENV)/bin/autopipe bench --benchmark nmt $(FINAL) --out runs/bench/nmt
	$(VENV)/bin/autopipe bench --benchmark nmt $(FINAL) --protocol lodo --out runs/bench/nmt-lodo
	$(VENV)/bin/autopipe bench --benchmark lcbench $(FINAL) --out runs/bench/lcbench

# Robustness under dataset shift (docs/sampler.md): each benchmark in ONE storage under
# grouped, single-source, few-source (K = 2) and an inverted prior, 5 seeds (about 2 h on 2
# cores). The Optuna baselines learn nothing from other datasets: they run once and every
# setting reads them.
STRESS_BASE := random,tpe,gp,bohb,smac,offline,autopipe,autopipe-paper
bench-stress: $(STAMP)
	set -e; for b in nmt lcbench; do \
	  run="$(VENV)/bin/autopipe bench --benchmark $$b --budget 15 --seeds 5 --storage sqlite:///runs/stress/$$b.db"; \
	  $$run --out runs/stress/$$b-grouped --methods $(STRESS_BASE); \
	  $$run --out runs/stress/$$b-single --protocol single-source \
	    --methods $(STRESS_BASE),autopipe-fixed-lambda,autopipe-1v; \
	  $$run --out runs/stress/$$b-few --protocol few-source --sources 2 --methods $(STRESS_BASE); \
	  $$run --out runs/stress/$$b-inverted --prior-noise inverted --methods $(STRESS_BASE); \
	done

# The post-training replay (corpus v2, the bundled one unless $$AUTOPIPE_DATA/post-training has
# its own journal) with the paper's Table 4.1 methods and ablations, 5 seeds, in one storage,
# under grouped and the stress settings; then the Table 4.1 comparison with the paper's rows.
TABLE41 := random1,global,offline,random,random-es,tpe,tpe-es,smac,smac-es,bohb,autopipe,autopipe-50,autopipe-75,no-residual,no-bo,no-offline
bench-post-training: $(STAMP)
	set -e; run="$(VENV)/bin/autopipe bench --benchmark post-training --budget 15 --seeds 5 \
	  --storage sqlite:///runs/post-training/bench.db"; \
	$$run --out runs/post-training/grouped --methods $(TABLE41); \
	$$run --out runs/post-training/single --protocol single-source --methods $(STRESS_BASE); \
	$$run --out runs/post-training/inverted --prior-noise inverted --methods $(STRESS_BASE); \
	$(PY) benchmarks/paper_table.py runs/post-training/grouped/results.csv

# The peers outside Optuna (docs/peers.md) beside AutoPipe and the strongest Optuna baselines,
# one storage per benchmark, grouped protocol, budget 15, 5 seeds; the post-training replay
# shares bench-post-training's storage (finished studies are read, not rerun); then
# benchmarks/peers_table.py prints the comparison at AutoPipe's cost and at the full budget.
# PEERS picks the peers: the GP ones (mobster, hyper-tune) refit at every suggestion, about
# 20 h on LCBench on 2 cores, so the default is the fast three (PEERS=... for the others).
# PEERS_ARGS passes more `autopipe bench` arguments (e.g. --datasets for a declared subset).
PEERS ?= dehb,priorband,asha-cts
PEERS_BENCHMARKS ?= nmt post-training lcbench
PEERS_ARGS ?=
bench-peers: $(STAMP) $(PEERS_STAMP)
	set -e; for b in $(PEERS_BENCHMARKS); do \
	  db=runs/peers/$$b.db; [ $$b = post-training ] && db=runs/post-training/bench.db; \
	  mkdir -p runs/peers $$(dirname $$db); \
	  $(VENV)/bin/autopipe bench --benchmark $$b --budget 15 --seeds 5 --storage sqlite:///$$db \
	    --out runs/peers/$$b --methods autopipe,autopipe-full,tpe,gp,smac,bohb,$(PEERS) $(PEERS_ARGS); \
	done
	$(PY) benchmarks/peers_table.py --benchmarks "$(PEERS_BENCHMARKS)"

# Baselines under the independent check's settings (../shared/benchmarks/README.md): 10 seeds,
# LCBench without observation noise. Compare with docs/benchmarks.md.
REFERENCE := --methods random,tpe,gp,global --seeds 10
reference-check: $(STAMP)
	$(VENV)/bin/autopipe bench --benchmark nmt $(REFERENCE) --out runs/reference/nmt
	$(VENV)/bin/autopipe bench --benchmark nmt $(REFERENCE) --protocol lodo --out runs/reference/nmt-lodo
	$(VENV)/bin/autopipe bench --benchmark lcbench $(REFERENCE) --noise-sd 0 --out runs/reference/lcbench

# Offline prior: fit time on both benchmarks, time to score 50,000 candidates, peak memory.
bench-prior: $(STAMP)
	$(PY) benchmarks/prior_speed.py

# Sampler cost per trial: one suggestion on studies of 15/100/500 trials, AutoPipeSampler
# (with and without a prior) vs GPSampler and TPESampler; writes runs/sampler_speed.md.
bench-sampler: $(STAMP)
	$(PY) benchmarks/sampler_speed.py
