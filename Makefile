# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo

.PHONY: demo test bench bench-latents clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,chem]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/klvae train --config configs/demo.yaml --out $(DEMO) --overwrite --no-progress
	$(BIN)/klvae evaluate $(DEMO) --iwae-k 5000
	@$(BIN)/klvae report $(DEMO) >/dev/null
	@echo "the demo's report (curves, KL per dimension, collapse verdict, pictures): open $(DEMO)/report.html"

test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

# BENCH_PYTHON: an environment that also has pythae (see benchmarks/README.md) to compare with it
bench: $(STAMP)
	$(or $(BENCH_PYTHON),$(BIN)/python) benchmarks/bench_train.py $(BENCH_ARGS)

# Gaussian vs vMF vs Power Spherical on MNIST, d = 2..40 (NLL, speed), and angle recovery on the
# generated pendulum / arm images (~30 min on 2 cores)
bench-latents: $(STAMP)
	$(BIN)/python benchmarks/bench_latents.py
	$(BIN)/python benchmarks/bench_angles.py

clean:
	rm -rf $(VENV) runs
