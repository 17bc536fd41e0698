# Abri: entry points for developers and CI. `make test` is what CI runs (.ci/run).

STATE_DIR ?= .abri-dev
HTTPS_ADDR ?= 127.0.0.1:8443
HTTP_ADDR ?= 127.0.0.1:8080
CARGO ?= cargo
VENV ?= .venv
PYTEST ?= $(VENV)/bin/pytest

.PHONY: all run build lint unit system browser test deps bench

all: build

## run: build abrid, abri-provision and abri-agent, then run a development box (prints URL, name, claim code)
run: build
	./target/debug/abrid --dev --state-dir $(STATE_DIR) --https $(HTTPS_ADDR) --http $(HTTP_ADDR) \
		--installers target/windows/dist

## build: the binaries the system and browser tests drive
build:
	$(CARGO) build -p abrid -p abri-provision -p abri-agent

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## unit: every crate's own tests
unit:
	$(CARGO) test --workspace

## system: pytest suites that run real abrid processes (tests/system)
system:
	$(PYTEST) tests/system -v -rs

## browser: Debian's Chromium drives the console (tests/browser)
browser:
	node --test tests/browser/

## deps: install test dependencies (apt packages, .venv, npm ci); quiet when done
deps:
	./scripts/install-test-deps.sh

# Areas add their own targets in mk/<area>.mk and append to TEST_PARTS (run after browser).
TEST_PARTS :=
-include mk/*.mk

## test: everything CI checks
test: deps lint unit build system browser $(TEST_PARTS)

## bench: Abri against restic and borg: ~3 GB of /usr, a ~2 GiB ext4 image (writes BENCHMARKS.md; not a test)
bench:
	python3 bench/run.py $(BENCH_ARGS)
