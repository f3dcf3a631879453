# certauth: the two commands are `make run` and `make test`; everything else is for developers.
#   make run     dev stack: nginx (mTLS) + gunicorn on https://127.0.0.1:8443 (make run PORT=8444), Ctrl-C stops it
#                (make run SERVER=uvicorn: the same behind nginx, under ASGI; make run PROXY=haproxy|apache|caddy:
#                behind another TLS proxy, configured by certauth.proxyconf)
#   make test    the whole suite on SQLite, and again on PostgreSQL if one answers on 127.0.0.1:5432
#                (make test PYTEST_ARGS="-k whoami -x" passes arguments to pytest), in .venv: the newest
#                supported Python found (3.13, 3.12, 3.11; scripts/newest-python) with the newest Django
#   make matrix  unit + API tests on each supported Django/Python pair with nox (noxfile.py; NOX_ARGS=...)
#   make clockcheck  unit + API tests with a clock running ten times too fast (libfaketime): finds tests that
#                assume how much wall time passes (scripts/clock-check.sh)
#   make dist    sdist + wheel into dist/, twine check, and a check that the wheel holds the app only
#   make bench / fuzz / lint / clean / distclean   (distclean, then make test: a .venv on the newest Python)

SHELL := /bin/bash
# Only used to create .venv: an existing .venv keeps its interpreter until `make distclean`.
PYTHON ?= $(shell scripts/newest-python)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
NOX_ARGS ?=

.PHONY: run test matrix clockcheck bench fuzz lint dist clean distclean venv .venv system-deps

run: $(STAMP)
	scripts/install-system-deps.sh
	$(VPY) -m scripts.stack run $(if $(PORT),--port $(PORT),) $(if $(SERVER),--server $(SERVER),) $(if $(PROXY),--proxy $(PROXY),)

# CERTAUTH_REQUIRE_TOOLS=1: install-system-deps.sh has just installed the PKI tools (easy-rsa, mkcert, certtool,
# cfssl, openssl), so a test that finds one missing fails instead of skipping (tests/pkitools.py).
test: $(STAMP)
	scripts/install-system-deps.sh
	CERTAUTH_REQUIRE_TOOLS=1 scripts/run-tests.sh $(PYTEST_ARGS)

matrix: $(STAMP)
	$(VENV)/bin/nox $(NOX_ARGS)

clockcheck: $(STAMP)
	scripts/install-system-deps.sh
	CERTAUTH_REQUIRE_TOOLS=1 scripts/clock-check.sh $(PYTEST_ARGS)

bench: $(STAMP)
	@if [[ -f bench/__main__.py ]]; then \
		scripts/install-system-deps.sh && $(VPY) -m bench; \
	else \
		echo "make bench: no benchmarks yet (bench/__main__.py does not exist)"; \
	fi

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(VPY) -m pytest -m fuzz $(PYTEST_ARGS)

lint: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m mypy certauth project scripts

# The distribution django-certauth (import package certauth): the app only, never the reference project.
dist: $(STAMP)
	rm -rf dist
	$(VPY) -m build --outdir dist .
	$(VPY) -m twine check --strict dist/*
	$(VPY) -m scripts.check_wheel dist

system-deps:
	scripts/install-system-deps.sh

# The virtualenv is (re)installed only when pyproject.toml is newer than the stamp.
venv .venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "certauth needs Python 3.11 or newer, but '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo missing)."; \
		echo "Install one and run e.g.: make $(MAKECMDGOALS) PYTHON=python3.12"; \
		exit 1; }
	@if [[ ! -x $(VPY) ]]; then \
		$(PYTHON) -m venv $(VENV) || { \
			echo "'$(PYTHON) -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv"; exit 1; }; \
	fi
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf var build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .nox
