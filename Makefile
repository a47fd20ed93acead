# Entry points for users. Every target sets up .venv from requirements.lock first
# (a no-op when the lock has not changed).
VENV ?= .venv
PY := $(VENV)/bin/python
UV_VENV := .venv-tools
PYTEST_ARGS ?=

.PHONY: setup run test lint lock bench serve clean setup-airflow test-airflow lock-airflow

setup:
	@bash scripts/setup_env.sh $(VENV) requirements.lock

run: setup
	$(PY) runner.py

serve: setup
	$(PY) runner.py serve

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest --ignore=tests/airflow $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

bench: setup setup-bench
	$(PY) bench/run_all.py

# Re-resolves pyproject.toml (+ lock/overrides.txt) into requirements.lock with uv,
# which resolves this dependency set in seconds where pip backtracks for minutes.
lock:
	@test -x $(UV_VENV)/bin/uv || (python3 -m venv $(UV_VENV) && $(UV_VENV)/bin/pip install -q uv)
	$(UV_VENV)/bin/uv pip compile pyproject.toml --extra serve --extra dev \
	  --override lock/overrides.txt --python-version 3.10 \
	  --python-platform x86_64-manylinux_2_36 --no-header --no-annotate -q -o requirements.lock

# Airflow 2 lives in its own environment (.venv-airflow, requirements-airflow.lock):
# the main environment stays lean. Airflow processes run with the pure-Python
# protobuf runtime, as the README recommends (TFX's protos and protobuf 4).
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_ENV := PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python

setup-airflow:
	@bash scripts/setup_env.sh $(AIRFLOW_VENV) requirements-airflow.lock

test-airflow: setup-airflow
	$(AIRFLOW_ENV) $(AIRFLOW_VENV)/bin/python -m pytest tests/airflow $(PYTEST_ARGS)

lock-airflow:
	@test -x $(UV_VENV)/bin/uv || (python3 -m venv $(UV_VENV) && $(UV_VENV)/bin/pip install -q uv)
	$(UV_VENV)/bin/uv pip compile pyproject.toml --extra airflow --extra dev \
	  --override lock/overrides.txt --python-version 3.10 \
	  --python-platform x86_64-manylinux_2_36 --no-header --no-annotate -q -o requirements-airflow.lock

clean:
	rm -rf outputs .pytest_cache .ruff_cache

# Benchmarks (bench/, BENCHMARKS.md). The MLflow peer server and py-spy live in their own
# environment (.venv-bench), installed from bench/requirements-mlflow.lock like the others.
BENCH_VENV ?= .venv-bench
.PHONY: setup-bench lock-bench

setup-bench:
	@bash scripts/setup_env.sh $(BENCH_VENV) bench/requirements-mlflow.lock

lock-bench:
	@test -x $(UV_VENV)/bin/uv || (python3 -m venv $(UV_VENV) && $(UV_VENV)/bin/pip install -q uv)
	$(UV_VENV)/bin/uv pip compile bench/requirements-mlflow.in --python-version 3.10 \
	  --python-platform x86_64-manylinux_2_36 --no-header --no-annotate -q \
	  -o bench/requirements-mlflow.lock
