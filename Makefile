# The two commands of the README: `make demo` and `make test`, each from a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: demo test test-image install redis-server ops-tools image-tools lint readme loadtest bench instructions soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,loadtest]'
	touch $@

install: $(VENV)/.installed

# redis-server is what the test suite starts privately (never a shared instance).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server with apt-get"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is needed by the tests: install it with your package manager" >&2; exit 1; \
	  fi; }

# What the operators' view tests drive: a real browser and a real Prometheus (Debian packages).
ops-tools:
	@for tool in chromium prometheus; do \
	  command -v $$tool >/dev/null 2>&1 && continue; \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $$tool with apt-get"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$tool >/dev/null || exit 1; \
	  else \
	    echo "$$tool is needed by the tests: install it with your package manager" >&2; exit 1; \
	  fi; \
	done

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: install redis-server ops-tools image-tools lint
	$(BIN)/pytest

# The container image test (tests/image, part of `make test`) builds the Dockerfile on a
# locally made Debian base and runs it with podman; the base tarball is cached in
# ~/.cache/gateway-image. Without apt-get the tools are left to you and the test says it skipped.
image-tools:
	@missing=""; for tool in podman runc mmdebstrap; do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing with apt-get"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq podman runc mmdebstrap >/dev/null; \
	  else \
	    echo "no apt-get: install podman, runc and mmdebstrap, or the image test is skipped" >&2; \
	  fi; fi

# The image test alone.
test-image: install redis-server image-tools
	$(BIN)/pytest tests/image

# The README's config reference is generated from the config models (a test checks it).
readme: install
	$(BIN)/python -c "from gateway.config.schema import update_readme; update_readme('README.md')"

demo: install
	$(BIN)/python -m demo.run

# Load tests (issue 6). Flags go through LOADTEST_ARGS / BENCH_ARGS, e.g.
# `make loadtest LOADTEST_ARGS="--scenario passthrough --duration 10"`.
loadtest: install redis-server
	$(BIN)/python -m loadtest.run $(LOADTEST_ARGS)

bench: install redis-server
	$(BIN)/python -m loadtest.bench $(BENCH_ARGS)

# Instructions per request on the hot path, counted by valgrind (steady on a noisy machine).
instructions: install redis-server
	@command -v valgrind >/dev/null 2>&1 || $(SUDO) apt-get install -y -qq valgrind >/dev/null
	$(BIN)/python -m loadtest.instructions $(INSTRUCTIONS_ARGS)

# Fault soak (issues 7, 20): load on two gateways while Redis is killed twice, one gateway is
# killed and the upstream stalls once, e.g. `make soak SOAK_ARGS="--faults short --rate 50"`.
# Exit 1 when a must-be-zero is not (loadtest/README.md).
soak: install redis-server
	$(BIN)/python -m loadtest.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache loadtest/reports
