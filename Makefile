# `make demo` runs the whole pipeline on the embedded synthetic default; `make test` runs the tests.
# Both create .venv (Python 3.11) when missing and install the project with pinned dependencies,
# skipping the install when neither pyproject.toml nor requirements.lock changed.

PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(abspath $(VENV)/bin)
CORES ?= 2
PYTEST_ARGS ?=

.PHONY: demo test test-slurm install clean-results lint

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c requirements.lock -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	PATH="$(BIN):$$PATH" snakemake --cores $(CORES)

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: $(STAMP)
	@PATH="$(BIN):$$PATH" python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The `slurm` tests against a one-node SLURM cluster started here (root; installs Debian's munge/slurm
# when missing), stopped again whatever the tests return.
test-slurm: $(STAMP)
	bash .ci/slurm/start.sh
	@PATH="$(BIN):$$PATH" SMIL_SLURM_REQUIRED=1 python -m pytest -m slurm $(PYTEST_ARGS); rc=$$?; \
	bash .ci/slurm/stop.sh; \
	if [ $$rc -eq 5 ]; then echo "make test-slurm: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	PATH="$(BIN):$$PATH" snakemake --lint
	PATH="$(BIN):$$PATH" snakefmt --check workflow

clean-results:
	rm -rf results/models results/logs results/benchmarks .snakemake
