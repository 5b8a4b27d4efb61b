# dicomcloud: the front door.  `make run` serves with embedded defaults, `make test`
# runs every check.  Both install what they need first (see scripts/bootstrap.sh).

.PHONY: run test bootstrap bootstrap-test bootstrap-bench lint typecheck pytest bench bench-search bench-scale bench-multinode multinode clean

VENV ?= .venv
PY := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never

run: bootstrap
	$(VENV)/bin/dicomcloud serve

bootstrap:
	@bash scripts/bootstrap.sh

bootstrap-test:
	@bash scripts/bootstrap.sh test

bootstrap-bench:
	@bash scripts/bootstrap.sh bench

lint: bootstrap
	$(VENV)/bin/ruff check src tests bench deploy
	$(VENV)/bin/ruff format --check src tests bench deploy

typecheck: bootstrap
	$(VENV)/bin/mypy

pytest: bootstrap-test
	$(VENV)/bin/pytest -q -p no:cacheprovider -rR

test: bootstrap-test
	$(VENV)/bin/ruff check src tests bench deploy
	$(VENV)/bin/ruff format --check src tests bench deploy
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -p no:cacheprovider -rR

bench: bootstrap-bench
	$(PY) -m bench

# QIDO-RS and C-FIND latency against Orthanc (~3,000 instances loaded)
bench-search: bootstrap-bench
	$(PY) -m bench --scenarios 'qido-*,cfind-*'

# study lists on a bulk-loaded 1,000,000-instance index, PostgreSQL and SQLite
bench-scale: bootstrap-bench
	$(PY) -m bench.scale --load

# ingest and QIDO-RS of the multi-node recipe vs the embedded default vs Orthanc
bench-multinode: bootstrap-bench
	$(PY) -m bench.multinode

# the multi-node recipe on 127.0.0.1 (docs/multinode.md); Ctrl-C stops it
multinode: bootstrap-test
	$(PY) -m deploy.multinode

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
