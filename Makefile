# pyexec's entry points. `make run` and `make test` each install what is
# missing first (scripts/setup.sh is idempotent and quick when nothing changed).

CARGO ?= cargo
PORT ?= 8080

.PHONY: setup web build run test test-rust test-python test-jail test-api test-docker test-cgroup2 lint bench loadtest screenshot clean

setup:
	bash scripts/setup.sh

# The playground (web/), which the server embeds: `npm ci` when the lockfile
# changed, the build when a source did; nothing when web/dist is up to date.
WEB_SOURCES := web/build.mjs web/package.json $(shell find web/src -type f 2>/dev/null)

web: web/dist/manifest.json

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "make web: npm is missing; run make setup" >&2; exit 1; }
	cd web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	touch $@

web/dist/manifest.json: web/node_modules/.package-lock.json $(WEB_SOURCES)
	cd web && node build.mjs

build: setup web
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

lint: web
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# The workspace's tests (unit, pool, both real sandboxes, the jail policy, the store on SQLite
# and a throwaway Postgres), whose end-to-end suites run the real server in
# fork mode (the default); then the keys' suite on Postgres, and the suites
# whose behaviour depends on the isolation mode again in spawn mode.
SPAWN_SUITES := --test api --test job_features --test sandbox --test isolation \
	--test memory --test startup --test original_clients --test observability
test-rust: web
	$(CARGO) test --locked --workspace
	PYEXEC_TEST_STORE=postgres $(CARGO) test --locked -p pyexec-server --test keys
	PYEXEC_TEST_ISOLATION=spawn $(CARGO) test --locked -p pyexec-server $(SPAWN_SUITES)

test-python:
	/opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v

# The jail policy alone, property by property, in both modes, through the
# real sandboxes (worker/tests/jail_policy; `make test-rust` runs it too).
test-jail:
	$(CARGO) test --locked -p pyexec-worker --features test-support --test jail_policy -- --nocapture

# A live server fuzzed by Schemathesis against openapi.json, then scraped by a
# throwaway Prometheus that evaluates docs/operations.md's and the dashboard's
# queries; and what can be checked of the Cloud Run files without Google Cloud.
test-api:
	bash scripts/schemathesis.sh
	python3 scripts/prometheus_check.py
	/opt/pyexec/tools-venv/bin/python3 scripts/check_deploy_files.py

test-docker:
	bash docker/test-image.sh

# On a cgroup-v2-only kernel, in a QEMU VM: the cgroup code, the jail policy,
# one end-to-end suite per mode, a server start and the image check
# (scripts/vm-test.sh; VM_SUITE=full for every end-to-end suite; the VM image
# is cached).
test-cgroup2:
	bash scripts/vm-test.sh

# docs/playground.png, from the browser test's harness (a fresh server, the
# "Using libraries" example run in Chromium).
screenshot: web
	PYEXEC_PLAYGROUND_SCREENSHOT=$(CURDIR)/docs/playground.png \
	  $(CARGO) test --locked -p pyexec-server --test playground -- --exact the_playground_in_chromium

bench: build
	$(CARGO) run --release --locked -p pyexec-server --example bench

# k6: smoke, capacity, load, stress and spike, fork and spawn mode side by
# side, each against a fresh server (loadtest/README.md; MODES=fork for one).
loadtest: build
	bash loadtest/run.sh

clean:
	$(CARGO) clean
	rm -rf web/dist web/node_modules
