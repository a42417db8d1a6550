# DicomVault — the two commands of the quick start are `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: serve test lint typecheck check bench clean venv test-deps viewer

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Run the archive on its embedded defaults (SQLite index + ./vault-data folder; DIMSE :11112, HTTP :8080), with
## the OHIF viewer at / (installed first, as `make viewer` does). The server starts even if the viewer cannot be
## fetched (no npm, no network): it then says so in its log and at /.
serve: $(STAMP)
	@bash scripts/fetch-viewer.sh || echo "make serve: the web viewer could not be installed (see above); starting without it. Run \`make viewer\` later." >&2
	$(BIN)/dicomvault serve

## Install what the tests need, run every test (2 workers) on the embedded backends, then the backend-agnostic
## suites again on PostgreSQL + S3 (a fresh database and bucket per test; see tests/pg_fixture.py, s3_fixture.py).
## tests/cli is not among them: its commands run on their own --data-dir (embedded backends) whatever the
## environment says, so a second run would repeat the first.
BACKEND_SUITES := tests/domain tests/services tests/dimse tests/dicomweb
test: $(STAMP) test-deps
	$(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)
	DV_TEST_INDEX_URL=postgresql://postgres@127.0.0.1:5432/postgres DV_TEST_STORAGE_URL=s3 \
		$(BIN)/pytest -n 2 --dist loadgroup -m "not slow and not embedded_only" $(BACKEND_SUITES) $(PYTEST_ARGS)

test-deps:
	@bash scripts/ensure-test-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

## Install the OHIF web viewer served at / (pinned @ohif/app 3.13.2, integrity-checked, into .viewer/ohif).
viewer:
	bash scripts/fetch-viewer.sh

## Side-by-side benchmarks against Orthanc (see docs/benchmarks.md).
bench: $(STAMP)
	$(BIN)/python benchmarks/dimse_store.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
