#!/usr/bin/env bash
# original-service.sh: the service pyexec replaces, installed and run on
# this machine as its Dockerfile runs it, so `make bench` (the `original`
# variant) measures it beside pyexec in one run. Not part of `make test`.
#
#   sudo bash scripts/original-service.sh install   # once: /opt/pyexec-original
#   PORT=8090 sudo bash scripts/original-service.sh run   # foreground; SIGTERM stops it
#
# install: its source from ORIGINAL_SERVICE_DIR (a checkout) or, by default,
# the fetched mirror of its repository (ORIGINAL_SERVICE_GIT, a bare git
# dir); its requirements.txt into a venv (Python 3.11, as its image).
# run: `gunicorn -w 2 -k gthread wsgi:app` as its Dockerfile's CMD, bound to
# 127.0.0.1:PORT, with our nsjail binary first on PATH.
#
# Its app runs `/usr/local/bin/python` in the jail with /usr/local/bin,
# /usr/local/lib, /usr/lib and /lib bound, the layout of the python:3.11-slim
# image. So that nothing on the host changes, `run` starts it in a mount
# namespace of its own where /usr/local is the venv (made with --copies, so
# /usr/local/bin/python is a real interpreter, and
# lib/python3.11/dist-packages pointing at its site-packages, where Debian's
# interpreter looks under /usr/local). The image's interpreter finds its
# loader through /lib64, which the app does not bind; the copy here has its
# ELF interpreter set to the /lib path (patchelf) for the same reason. The
# app itself is run unchanged.
set -euo pipefail

ROOT=${ORIGINAL_ROOT:-/opt/pyexec-original}
VENV=$ROOT/venv
APP=$ROOT/app
NSJAIL_DIR=${NSJAIL_DIR:-/opt/pyexec/bin}
GIT_DIR_DEFAULT=/work/.mirror/kyalkondsameer99+python-execute-api-nsjail/repo
PYTHON=${PYTHON:-/usr/bin/python3.11}

install() {
    rm -rf "$APP"
    mkdir -p "$APP"
    if [[ -n "${ORIGINAL_SERVICE_DIR:-}" ]]; then
        cp -a "$ORIGINAL_SERVICE_DIR"/. "$APP"/
    else
        git --git-dir="${ORIGINAL_SERVICE_GIT:-$GIT_DIR_DEFAULT}" archive HEAD | tar -x -C "$APP"
    fi
    [[ -f "$APP/wsgi.py" && -f "$APP/app/app.py" ]] || {
        echo "original-service.sh: no wsgi.py and app/app.py in the checkout" >&2
        exit 1
    }
    if [[ ! -x "$VENV/bin/python" ]]; then
        "$PYTHON" -m venv --copies "$VENV"
    fi
    "$VENV/bin/pip" install --quiet -r "$APP/requirements.txt"
    local version
    version=$("$VENV/bin/python" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
    ln -sfn site-packages "$VENV/lib/$version/dist-packages"
    local loader
    loader=$(readlink -f /lib64/ld-linux-x86-64.so.2)
    if command -v patchelf >/dev/null; then
        patchelf --set-interpreter "/lib/${loader#/usr/lib/}" "$VENV/bin/python"
    else
        echo "original-service.sh: patchelf is needed (apt-get install patchelf)" >&2
        exit 1
    fi
    echo "installed in $ROOT"
}

run() {
    local port=${PORT:-8090}
    [[ -x "$VENV/bin/gunicorn" ]] || {
        echo "original-service.sh: not installed; run: $0 install" >&2
        exit 1
    }
    export PATH="$NSJAIL_DIR:$PATH" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
    cd "$APP"
    exec unshare --mount --propagation private -- sh -c \
        'mount --bind "$1" /usr/local && exec /usr/local/bin/python /usr/local/bin/gunicorn -w 2 -k gthread -b "127.0.0.1:$2" wsgi:app' \
        sh "$VENV" "$port"
}

case "${1:-}" in
    install) install ;;
    run) run ;;
    *)
        echo "usage: $0 install | run (PORT=...)" >&2
        exit 64
        ;;
esac
