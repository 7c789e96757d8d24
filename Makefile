# The README's two commands: `make demo` and `make test`. Both create .venv on first use and reuse it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hf_ae-installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast test-kernels lint fix-copies benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# torch first: `torch==2.13.0` resolves to the local CPU build, so nothing later pulls a CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[dev,tensorboard,export]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py --output_dir outputs/demo

# Two pytest workers of one torch thread each keep both cores busy (the tests are mostly tiny models, which a
# second intra-op thread does not speed up); --dist loadfile keeps each file's module fixtures in one worker.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP)
	$(PYTEST) tests

# Everything but the end-to-end runs marked slow (subprocess training, torch.compile, torchrun, the demo).
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" tests

# The suite once per CPU kernel set torch can pick (ATEN_CPU_CAPABILITY): the portable one, AVX2 where the CPU has
# it, then the machine's own. CI runs on a machine like yours but not always the same CPU, and a verdict must not
# depend on which kernels ran. About three times `make test`; run it before you push a change to tests or numerics.
test-kernels: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(PYTEST) tests
	if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then ATEN_CPU_CAPABILITY=avx2 $(PYTEST) tests; fi
	$(PYTEST) tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src scripts tests benchmarks
	$(PY) utils/check_copies.py

# Rewrite every `# Copied from` copy that drifted from its source (transformers' `make fix-copies`).
fix-copies: $(STAMP)
	$(PY) utils/check_copies.py --fix

# Every benchmark section side by side with the peers (pythae, the optional extra, for the quality section).
benchmark: $(STAMP)
	$(PY) -m pip install -e ".[bench]"
	$(PY) -m benchmarks.run

clean:
	rm -rf outputs
