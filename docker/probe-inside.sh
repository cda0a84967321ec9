#!/bin/sh
# Runs INSIDE a pyexec container (docker/probe-privileges.sh mounts it in).
# Reports, one line each, whether this container's privileges let
#   (a) nsjail create every namespace pyexec's jail uses, and
#   (b) a process create a cgroup under memory/pids/cpu, set a limit, move in.
# Never changes anything outside the container's own cgroup subtree.
nsj=/opt/pyexec/bin/nsjail
say() { printf '%-10s %s\n' "$1" "$2"; }

# --- (a) namespaces: the same clone_new* set as nsjail.cfg, no cgroup options.
out=$($nsj -Mo --quiet -u 1000:65534 -g 1000:65534 --disable_proc \
        --hostname probe --rlimit_as 1024 \
        -R /usr -R /lib -R /lib64 -R /opt/pyexec/sandbox-venv \
        -T /tmp \
        -- /opt/pyexec/sandbox-venv/bin/python3 -I -c \
        'import os; print("uid", os.getuid(), "host", os.uname().nodename)' 2>&1)
rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q 'host probe'; then
  say nsjail "OK ($out)"
else
  say nsjail "FAIL rc=$rc: $(echo "$out" | grep -E '\[E\]|\[F\]|\[W\]' | head -3 | tr '\n' ' ')"
fi

# Same with nsjail.cfg when it is mounted at /probe/nsjail.cfg (the real jail).
if [ -f /probe/nsjail.cfg ]; then
  out=$($nsj --config /probe/nsjail.cfg --log_fd 9 \
          --bindmount_ro /opt/pyexec/sandbox-venv \
          -- /opt/pyexec/sandbox-venv/bin/python3 -I -c \
          'import os, numpy, pandas; print("uid", os.getuid(), "ok")' 9>/tmp/nsjail.log 3>/dev/null 4>&1 5>&2 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && echo "$out" | grep -q 'ok'; then
    say cfg "OK ($out)"
  else
    say cfg "FAIL rc=$rc: $(grep -E '\[E\]|\[F\]' /tmp/nsjail.log | head -3 | tr '\n' ' ') $out"
  fi
fi

# --- (b) cgroups: v1 controllers, or the v2 unified tree.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  say cgroup "v2 at /sys/fs/cgroup (controllers: $(cat /sys/fs/cgroup/cgroup.controllers))"
  ctls="."
else
  ctls="memory pids cpu cpuacct"
fi
for c in $ctls; do
  root=/sys/fs/cgroup/$c
  d=$root/pyexec-probe
  how=""
  if ! mkdir "$d" 2>/tmp/err; then
    err=$(cat /tmp/err)
    # The container's cgroup mount is read-only by default; CAP_SYS_ADMIN can
    # remount this one bind mount read-write (only this container's subtree).
    if mount -o remount,rw,bind "$root" 2>/tmp/err2 && mkdir "$d" 2>/tmp/err; then
      how="after remount,rw"
    else
      say "cg:$c" "FAIL mkdir: ${err##*: } ; remount: $(cat /tmp/err2 | sed 's/.*: //')"
      continue
    fi
  fi
  case $c in
    memory) f=memory.limit_in_bytes; v=268435456 ;;
    pids)   f=pids.max; v=128 ;;
    cpu)    f=cpu.cfs_quota_us; v=100000 ;;
    .)      f=memory.max; v=268435456 ;;
  esac
  if ! echo $v > "$d/$f" 2>/tmp/err; then
    say "cg:$c" "FAIL set $f: $(cat /tmp/err)"; rmdir "$d"; continue
  fi
  key=$([ "$c" = . ] && echo "0:" || echo ":$c")
  # A child shell moves itself in and reports its cgroup as the kernel sees it
  # from this container's cgroup namespace.
  if where=$(sh -c "echo \$\$ > $d/cgroup.procs && grep '$key:' /proc/self/cgroup | cut -d: -f3" 2>/tmp/err) \
     && [ -n "$where" ]; then
    say "cg:$c" "OK mkdir+$f+cgroup.procs $how (now in $where)"
  else
    say "cg:$c" "FAIL cgroup.procs: $(cat /tmp/err)"
  fi
  rmdir "$d" 2>/dev/null
done

# --- what a fresh cgroup mount shows (why --cgroupns private): with the host's
# cgroup namespace, CAP_SYS_ADMIN can mount the host's whole hierarchy,
# release_agent included (a known container escape on cgroup v1); with a
# private one the new mount's root is this container's own cgroup.
if [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
  mkdir -p /tmp/cgprobe
  if mount -t cgroup -o memory cgroup /tmp/cgprobe 2>/dev/null; then
    if [ -e /tmp/cgprobe/release_agent ]; then
      say cg-mount "a new memory cgroup mount shows the HOST's root hierarchy (release_agent visible)"
    else
      say cg-mount "a new memory cgroup mount shows only this container's subtree"
    fi
    umount /tmp/cgprobe
  else
    say cg-mount "cannot mount a cgroup hierarchy"
  fi
fi
