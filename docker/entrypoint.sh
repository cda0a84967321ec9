#!/bin/sh
# pyexec's container entrypoint (runs under tini as PID 1).
#
# Docker mounts the container's own cgroup subtree read-only. pyexec makes a
# cgroup per worker (memory, pids, cpu limits; cpuacct for what a job used),
# so it needs those mounts writable. With CAP_SYS_ADMIN (the README's
# `--cap-add SYS_ADMIN`) this remounts read-write exactly the mounts pyexec
# uses: on cgroup v1 the memory, pids, cpu and cpuacct hierarchies, on v2 the
# unified tree. Each of them shows only
# this container's own subtree (nothing of the host's or other containers'),
# and the devices/freezer/... hierarchies stay read-only.
#
# Without the privilege the remount fails quietly here and pyexec's start-up
# self-check refuses to serve, saying what is missing: this script never
# works around a missing privilege. Set PYEXEC_REMOUNT_CGROUPS=0 to skip it.
set -u

remount_rw() {
  [ -d "$1" ] || return 0
  [ -w "$1" ] && return 0          # already writable (e.g. Cloud Run gen2, --privileged)
  mount -o remount,rw,bind "$1" 2>/dev/null \
    || echo "pyexec-entrypoint: $1 is read-only and could not be remounted read-write (needs --cap-add SYS_ADMIN)" >&2
}

if [ "${PYEXEC_REMOUNT_CGROUPS:-1}" != 0 ]; then
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    remount_rw /sys/fs/cgroup
  else
    for c in memory pids cpu cpuacct; do
      # cpu is often a symlink to cpu,cpuacct: remount the real mount point
      # (a second remount of the same one finds it writable and skips it).
      remount_rw "$(readlink -f "/sys/fs/cgroup/$c")"
    done
  fi
fi

# CAP_SYS_ADMIN was only needed for the remount above: nsjail builds its
# jails from a fresh user namespace and needs no capability beyond Docker's
# defaults for that. Drop it from the bounding set, so pyexec, nsjail and
# everything they start never hold it. Set PYEXEC_KEEP_SYS_ADMIN=1 to keep it.
if [ "${PYEXEC_KEEP_SYS_ADMIN:-0}" != 1 ] && command -v setpriv >/dev/null 2>&1 \
   && setpriv --bounding-set -sys_admin true 2>/dev/null; then
  exec setpriv --bounding-set -sys_admin --inh-caps -sys_admin /usr/local/bin/pyexec "$@"
fi
exec /usr/local/bin/pyexec "$@"
