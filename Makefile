# pyexec's entry points. `make run` and `make test` each install what is
# missing first (scripts/setup.sh is idempotent and quick when nothing changed).

CARGO ?= cargo
PORT ?= 8080

.PHONY: setup build run test test-rust test-python test-jail test-api test-docker test-cgroup2 lint bench loadtest clean

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

run: build
	PORT=$(PORT) ./target/release/pyexec

# Everything CI runs: lint, unit and end-to-end tests (real nsjail, real
# cgroups, the jail policy property by property), the runner's tests, the API
# against its OpenAPI document (Schemathesis) and the metrics against a real
# Prometheus, the k6 smoke run, the container image test, and on cgroup v2,
# in a virtual machine, the cgroup code, the jail policy, one end-to-end
# suite per mode and the image test again.
test: setup lint test-rust test-python test-api
	bash loadtest/run.sh smoke
	$(MAKE) test-docker
	$(MAKE) test-cgroup2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# The workspace's tests (unit, pool, both real sandboxes, the jail policy),
# whose end-to-end suites run the real server in fork mode (the default), then
# those suites again in spawn mode.
test-rust:
	$(CARGO) test --locked --workspace
	PYEXEC_TEST_ISOLATION=spawn $(CARGO) test --locked -p pyexec-server --tests

test-python:
	/opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v

# The jail policy alone, property by property, in both modes, through the
# real sandboxes (worker/tests/jail_policy; `make test-rust` runs it too).
test-jail:
	$(CARGO) test --locked -p pyexec-worker --features test-support --test jail_policy -- --nocapture

# A live server fuzzed by Schemathesis against openapi.json, then scraped by a
# throwaway Prometheus that evaluates docs/operations.md's and the dashboard's queries.
test-api:
	bash scripts/schemathesis.sh
	python3 scripts/prometheus_check.py

test-docker:
	bash docker/test-image.sh

# On a cgroup-v2-only kernel, in a QEMU VM: the cgroup code, the jail policy,
# one end-to-end suite per mode, a server start and the image check
# (scripts/vm-test.sh; VM_SUITE=full for every end-to-end suite; the VM image
# is cached).
test-cgroup2:
	bash scripts/vm-test.sh

bench: build
	$(CARGO) run --release --locked -p pyexec-server --example bench

# k6: smoke, capacity, load, stress and spike, fork and spawn mode side by
# side, each against a fresh server (loadtest/README.md; MODES=fork for one).
loadtest: build
	bash loadtest/run.sh

clean:
	$(CARGO) clean
