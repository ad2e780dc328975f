# Task runner. `make run` and `make test` each do all set-up first (idempotent), so on a fresh
# machine either one is the only command needed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
JS_DIR := tests/interop/js
JS_STAMP := $(JS_DIR)/node_modules/.installed-$(shell cat $(JS_DIR)/package-lock.json 2>/dev/null | sha256sum | cut -c1-12)
DEMO_HOME ?= $(CURDIR)/.dre-demo

.PHONY: setup system-deps run test lint wheel-check bench clean

setup: $(STAMP) $(JS_STAMP)

system-deps:
	@bash .ci/system-deps

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -e '.[dev,interop]'
	touch $@

$(JS_STAMP): $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The main job: a node home with a sample added, read back by CID.
run: setup
	DRE_HOME=$(DEMO_HOME) $(VENV)/bin/dre init
	@printf 'hello registry\n' > $(DEMO_HOME)/sample.txt
	@echo "--- dre add specs/ (the specification documents, as a directory)"
	DRE_HOME=$(DEMO_HOME) $(VENV)/bin/dre add specs
	@echo "--- dre add sample.txt, then dre cat by CID"
	@cid=$$(DRE_HOME=$(DEMO_HOME) $(VENV)/bin/dre add --quiet $(DEMO_HOME)/sample.txt) && \
	  echo "sample.txt -> $$cid" && DRE_HOME=$(DEMO_HOME) $(VENV)/bin/dre cat $$cid
	DRE_HOME=$(DEMO_HOME) $(VENV)/bin/dre repo stat

test: setup
	$(VENV)/bin/pytest -n 2 --dist loadgroup

# mypy cannot follow the editable install's folder -> dre.* mapping, so it checks a link tree
# that has the installed layout; otherwise every cross-package import would be Any.
lint: setup
	$(VENV)/bin/ruff check .
	rm -rf build/mypy && mkdir -p build/mypy/dre
	for d in protocol storage node cli; do ln -s ../../../$$d build/mypy/dre/$$d; done
	MYPYPATH=build/mypy $(VENV)/bin/mypy -p dre.protocol -p dre.storage -p dre.node -p dre.cli

wheel-check: setup
	bash .ci/wheel-check

bench: setup
	$(PY) simulations/bench_add.py

clean:
	rm -rf $(VENV) $(JS_DIR)/node_modules $(DEMO_HOME) build dist *.egg-info
