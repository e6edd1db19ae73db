# The two commands of the README: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The KServe SDK, for scripts/check-k8s.sh, tests/test_k8s.py and tests/test_kserve_clients.py
# (a venv of its own: see scripts/kserve-venv.sh).
KSERVE_VENV ?= .venv-kserve

.PHONY: serve test lint audit install install-dev system-packages clean

serve: install  ## install and start serving models/
	$(VENV)/bin/modelserve serve

test: install-dev system-packages  ## install everything the tests need and run the whole suite
	$(PY) -m pytest

lint: install-dev  ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy service training loadtests

audit: install-dev  ## known vulnerabilities in the installed packages (pip-audit)
	$(PY) scripts/audit_dependencies.py

install:
	scripts/install.sh $(VENV)

install-dev:
	scripts/install.sh $(VENV) dev
	scripts/kserve-venv.sh $(KSERVE_VENV)

# Chromium (browser tests) and promtool (alert rules): Debian packages, installed when missing.
system-packages:
	scripts/system-packages.sh

clean:
	rm -rf $(VENV) $(KSERVE_VENV) .pytest_cache .mypy_cache .ruff_cache
