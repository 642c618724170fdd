# The two commands of the README are `make up` and `make test`; everything else is here for them.
PYTHON ?= python3
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen

.PHONY: sync up test lint typecheck chaos-long fuzz bench-ingress bench-relay bench-control

sync:  ## install uv if it is missing (and a C compiler: ingress builds its C-module shim), then the workspace exactly as uv.lock pins it
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	@.ci/ensure-compiler
	$(UV) sync --all-packages --frozen

up: sync  ## run the whole system here (NATS and the object store included)
	@# Run it directly: a wrapper that forwards Ctrl-C would deliver it twice.
	.venv/bin/empath up

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) codespell core ingress spool delivery control operator charts tests bench README.md

typecheck: sync
	$(RUN) mypy

test: lint typecheck  ## what CI runs (installs Debian's prometheus when missing: the telemetry tests scrape with it)
	.ci/ensure-prometheus
	$(RUN) pytest

# The long runs of tests/chaos (which `make test` runs in short): see README "Testing".
CHAOS_MESSAGES ?= 2000
CHAOS_RATE ?= 40
FUZZ_EXAMPLES ?= 5000

chaos-long: sync  ## the chaos suite with the issue's 2,000 messages a run (minutes)
	CHAOS_MESSAGES=$(CHAOS_MESSAGES) CHAOS_RATE=$(CHAOS_RATE) $(RUN) pytest -p no:cacheprovider tests/chaos/test_chaos.py

fuzz: sync  ## $(FUZZ_EXAMPLES) new random examples for each fuzzer (SMTP sessions, control calls)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(RUN) pytest -p no:cacheprovider tests/chaos/test_fuzz.py

bench-ingress: sync  ## needs Postfix's smtp-source: installs Debian's postfix when missing
	bench/ensure-postfix
	$(RUN) python bench/ingress.py

bench-relay: sync  ## Empath and Postfix relaying to smtp-sink (installs Debian's postfix when missing)
	bench/ensure-postfix
	$(RUN) python bench/relay.py

bench-control: sync  ## queue list and stats with 100,000 messages in the queue
	$(RUN) python bench/control.py
