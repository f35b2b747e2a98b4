# Quick start:  make run   (start the backend)   |   make test   (run the whole suite)
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: env test test-fast lint run bench clean

env:
	@scripts/ensure_env.sh

test: env
	$(PY) -m pytest

test-fast: env
	$(PY) -m pytest -m "not slow"

lint: env
	$(PY) -m ruff check .

run: env
	$(PY) -m backend.serve

bench: env
	bench/run.sh

clean:
	rm -rf .venv .pytest_cache
