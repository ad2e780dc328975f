# Task runner. `make run` and `make test` each do all set-up first (idempotent), so on a fresh
# machine either one is the only command needed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
JS_DIR := tests/interop/js
JS_STAMP := $(JS_DIR)/node_modules/.installed-$(shell cat $(JS_DIR)/package-lock.json 2>/dev/null | sha256sum | cut -c1-12)
# js-libp2p 2.x (gossipsub interop) needs its own tree: Helia above pulls in the 3.x line.
JS2_DIR := tests/interop/jslibp2p
JS2_STAMP := $(JS2_DIR)/node_modules/.installed-$(shell cat $(JS2_DIR)/package-lock.json 2>/dev/null | sha256sum | cut -c1-12)
DEMO_HOME ?= $(CURDIR)/.dre-demo
# Where the demo node serves its API, gateway and web page (port 0 picks a free one).
DEMO_HTTP ?= 127.0.0.1:5860

.PHONY: setup system-deps run test lint wheel-check bench clean

setup: $(STAMP) $(JS_STAMP) $(JS2_STAMP)

system-deps:
	@bash .ci/system-deps

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	# torch first, pinned: its CPU build (on this machine's disk); a bare resolve takes a CUDA one.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,interop,semantic]'
	touch $@

$(JS_STAMP): $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(JS2_STAMP): $(JS2_DIR)/package-lock.json
	cd $(JS2_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The main job: a node home with the example packages published from their documents, one
# verified (regenerated and attested), one installed with its dependencies, a file by CID; then the
# node runs in the foreground and prints the web page's address.
DRE := DRE_HOME=$(DEMO_HOME) $(VENV)/bin/dre
run: setup
	$(DRE) init
	@echo "--- publish every example document (specs/examples), generated and signed here"
	@$(DRE) scope show @acme >/dev/null 2>&1 || $(DRE) scope create @acme
	@for doc in specs/examples/*.md; do $(DRE) publish $$doc | head -1; done
	@echo "--- verify @acme/retry: signature, every block, regeneration, license, trust"
	$(DRE) verify @acme/retry
	@echo "--- history of @acme/retry"
	$(DRE) info @acme/retry --versions --changelog
	@echo "--- install @acme/cli with its dependencies"
	@rm -rf $(DEMO_HOME)/installed
	$(DRE) install @acme/cli@0.9.0-rc.2 -o $(DEMO_HOME)/installed
	@echo "--- any file by CID: dre add, then dre cat"
	@printf 'hello registry\n' > $(DEMO_HOME)/sample.txt
	@cid=$$($(DRE) add --quiet $(DEMO_HOME)/sample.txt) && echo "sample.txt -> $$cid" && $(DRE) cat $$cid
	$(DRE) repo stat
	@echo "--- the node: HTTP API, IPFS gateway and the web package browser (Ctrl+C stops it)"
	$(DRE) node start --http $(DEMO_HTTP)

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
	rm -rf $(VENV) $(JS_DIR)/node_modules $(JS2_DIR)/node_modules $(DEMO_HOME) build dist *.egg-info
