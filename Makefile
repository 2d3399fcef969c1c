# civicflow: `make run` starts the whole system on the embedded default; `make test` runs every test tier.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit test-integration test-e2e lint typecheck proto proto-check asyncapi bench bench-routing bench-rules-check clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/civicflow dev

test: install proto-check lint
	$(BIN)/pytest -q tests/unit tests/integration tests/e2e

test-unit: install
	$(BIN)/pytest -q tests/unit

test-integration: install
	$(BIN)/pytest -q tests/integration

test-e2e: install
	$(BIN)/pytest -q tests/e2e

lint: install
	$(BIN)/ruff check civicflow services samples tests bench
	$(BIN)/mypy civicflow services samples bench

proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. --pyi_out=. proto/civicflow/v1/*.proto

# The event catalogue as AsyncAPI; tests/unit/test_asyncapi.py fails while the committed copy is stale.
asyncapi: install
	$(BIN)/civicflow asyncapi --out docs/asyncapi.yaml

# The committed stubs must be exactly what the contracts generate.
proto-check: install
	rm -rf build/proto-check && mkdir -p build/proto-check
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=build/proto-check --grpc_python_out=build/proto-check \
		--pyi_out=build/proto-check proto/civicflow/v1/*.proto
	diff -r -x __init__.py -x __pycache__ build/proto-check/civicflow/v1 civicflow/v1 \
		|| (echo "generated gRPC stubs are out of date: run 'make proto' and commit" >&2; exit 1)

# Routing and `rules check` (a 2,000-service city) first: they run in process and need no infrastructure.
# BENCH_ARGS are submit_load's here (e.g. --mode burst, --rate 200), so those two run with their defaults;
# `make bench-routing BENCH_ARGS=...` or `make bench-rules-check BENCH_ARGS=...` to change them. The default suite (burst, open-loop storm, replay) takes a few minutes.
bench: install
	$(BIN)/python -m bench.routing
	$(BIN)/python -m bench.rules_check
	$(BIN)/python -m bench.geocode
	$(BIN)/python -m bench.import_speed
	$(BIN)/python -m bench.texts
	$(BIN)/python -m bench.alerts
	$(BIN)/python -m bench.notify_channels
	$(BIN)/python -m bench.connectors
	$(BIN)/python -m bench.connector_grpc
	$(BIN)/python -m bench.open311
	$(BIN)/python -m bench.email_kind
	$(BIN)/python -m bench.submit_load $(BENCH_ARGS)

bench-routing: install
	$(BIN)/python -m bench.routing $(BENCH_ARGS)

bench-rules-check: install
	$(BIN)/python -m bench.rules_check $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
