# The two commands of the README: `make dev` runs jobgate embedded, `make test` runs the tests.
# Both set up what they need first: a venv with the packages, buf from npm, the googleapis protos.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf
STAMP := $(VENV)/.installed

.PHONY: setup dev test proto lint bench bench-production

setup: $(STAMP) $(BUF) .protodeps/google

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python -e '.[dev]'
	touch $@

$(BUF): package.json
	npm install --silent
	touch $@

# buf reads google/api and google/rpc from the installed googleapis-common-protos package.
.protodeps/google: $(STAMP)
	mkdir -p $@
	site=$$($(BIN)/python -c 'import google.api, os; print(os.path.dirname(google.api.__path__[0]))') && \
	ln -sfn "$$site/api" $@/api && ln -sfn "$$site/rpc" $@/rpc

dev: setup
	$(BIN)/jobgate dev

test: setup
	$(BIN)/pytest

# Regenerates clients/python/src/jobgate/v1 from proto/.
proto: setup
	$(BUF) generate

lint: setup
	$(BUF) lint
	tools/buf-breaking main
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m bench.embedded

# Needs RabbitMQ and PostgreSQL on 127.0.0.1, as on the machines the tests run on.
bench-production: setup
	$(BIN)/python -m bench.production
