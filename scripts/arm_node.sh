#!/usr/bin/env bash
# A fedge node on a Debian arm64 userland with a Raspberry Pi Zero 2 W's budget.
#
#   sudo scripts/arm_node.sh [WORKDIR]
#
# 1. builds a Debian arm64 userland with debootstrap (--foreign, then the second stage run
#    through qemu-user-static and binfmt_misc);
# 2. installs fedge[client] from this working tree into a venv inside it with pip (the
#    aarch64 wheels of numpy, grpcio and cryptography come from PyPI);
# 3. starts `fedge serve` on this machine (loopback, plaintext, a NumPy MLP on digits) and
#    runs `fedge join` in the arm64 userland under a 512 MiB memory cgroup on one CPU,
#    next to a native node of this machine; the federation runs to the end;
# 4. reports the arm64 node's peak memory and its time per round. The arm64 node runs
#    under emulation (qemu-user on this CPU), not on a Pi: its times are the emulator's.
#
# WORKDIR (default ${XDG_CACHE_HOME:-~/.cache}/fedge/arm-node) keeps the userland between
# runs: a second run reuses it and only refreshes the fedge copy. Each federation gets
# its own folder WORKDIR/runs/<UTC time>/ (logs, experiment, run folder, summary.txt).
# The script only ever removes what it made: a folder it did not create is refused.
#
# Settings (environment): FEDGE_ARM_SUITE (bookworm), FEDGE_ARM_MIRROR
# (http://deb.debian.org/debian), FEDGE_ARM_CA_BUNDLE (the CA bundle the guest's pip trusts:
# $PIP_CERT, $SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt), FEDGE_ARM_MEMORY_MIB (512), FEDGE_ARM_CPU (0: the CPU
# the node is pinned to), FEDGE_ARM_ROUNDS (5), FEDGE_SERVER_PYTHON (this tree's
# .venv/bin/python, else python3; it needs fedge's server dependencies and scikit-learn).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/fedge/arm-node}
SUITE=${FEDGE_ARM_SUITE:-bookworm}
MIRROR=${FEDGE_ARM_MIRROR:-http://deb.debian.org/debian}
MEMORY_MIB=${FEDGE_ARM_MEMORY_MIB:-512}
CPU=${FEDGE_ARM_CPU:-0}
ROUNDS=${FEDGE_ARM_ROUNDS:-5}
if [ -n "${FEDGE_SERVER_PYTHON:-}" ]; then
  PY=$FEDGE_SERVER_PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then
  PY=$REPO/.venv/bin/python
else
  PY=python3
fi
MARK=.fedge-arm-node
ROOTFS=$WORK/rootfs
GUEST=/opt/fedge # fedge's files inside the userland
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

say() { printf '%s arm_node: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}
timed() { # timed LABEL CMD...: run CMD and say how long it took
  local label=$1 start=$SECONDS
  shift
  "$@"
  say "$label took $((SECONDS - start)) s"
}

# -- preconditions --------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and cgroups need it)"
HOST_ARCH=$(uname -m)
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ "$HOST_ARCH" != aarch64 ]; then
  command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
  command -v update-binfmts >/dev/null || need+=(binfmt-support)
fi
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
PYTHONPATH=$REPO/src "$PY" -c "import fedge.cli.main, sklearn" ||
  die "$PY cannot import fedge and scikit-learn (set FEDGE_SERVER_PYTHON)"

# -- the work folder: ours, or empty --------------------------------------------------
if [ -e "$WORK" ] && [ ! -e "$WORK/$MARK" ]; then
  if [ ! -d "$WORK" ] || [ -n "$(ls -A "$WORK")" ]; then
    die "$WORK exists and was not made by this script; give another folder"
  fi
fi
mkdir -p "$WORK"
[ -e "$WORK/$MARK" ] || echo "made by fedge scripts/arm_node.sh; remove the whole folder to start again" >"$WORK/$MARK"

RUN=$WORK/runs/$(date -u +%Y%m%dT%H%M%SZ)
while [ -e "$RUN" ]; do RUN=$RUN-1; done
mkdir -p "$RUN/keys" "$RUN/data"
LOG=$RUN/arm_node.log
exec > >(tee -a "$LOG") 2>&1
say "work folder $WORK, this run: $RUN"

mounted_under() { findmnt -rn -o TARGET | grep -q "^$1\(/\|$\)"; }

# -- binfmt_misc: arm64 binaries run through qemu-aarch64-static ------------------------
binfmt() {
  [ "$HOST_ARCH" = aarch64 ] && return 0
  local dir=/proc/sys/fs/binfmt_misc entry=/proc/sys/fs/binfmt_misc/qemu-aarch64 out
  if ! mountpoint -q "$dir"; then
    out=$(mount -t binfmt_misc binfmt_misc "$dir" 2>&1) ||
      die "cannot mount binfmt_misc ($out): the userland's second stage cannot run arm64 programs without it"
    say "mounted binfmt_misc on $dir"
  fi
  if [ ! -e "$entry" ]; then
    # F: the kernel opens the interpreter now, so it works inside the chroot as well.
    out=$(update-binfmts --enable qemu-aarch64 2>&1) ||
      out=$(printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
        >"$dir/register" 2>&1) || die "cannot register qemu-aarch64 with binfmt_misc: $out"
    say "registered qemu-aarch64 with binfmt_misc (it stays registered)"
  fi
  grep -q '^enabled' "$entry" || die "binfmt_misc entry qemu-aarch64 is disabled (update-binfmts --enable qemu-aarch64)"
  local interp flags
  interp=$(sed -n 's/^interpreter //p' "$entry")
  flags=$(sed -n 's/^flags: //p' "$entry")
  if [[ $flags != *F* ]] && [ -d "$ROOTFS" ] && [ ! -e "$ROOTFS$interp" ]; then
    mkdir -p "$(dirname "$ROOTFS$interp")"
    cp -L "$interp" "$ROOTFS$interp" # without F the kernel looks the interpreter up inside the chroot
  fi
}

# in_guest CMD...: CMD inside the userland, with its own /proc, /dev and /sys in a private
# mount namespace (they vanish with it: nothing is left mounted).
# shellcheck disable=SC2016 # expanded by the inner shell
GUEST_SH=(unshare --mount --propagation private -- sh -c '
  r=$1; shift
  mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" && mount -t sysfs sysfs "$r/sys" || exit 97
  exec chroot "$r" /usr/bin/env -i HOME=/root PATH=/opt/fedge/venv/bin:/usr/bin:/bin LANG=C.UTF-8 \
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PIP_CERT=/opt/fedge/host-ca.pem \
    ${HTTPS_PROXY:+HTTPS_PROXY="$HTTPS_PROXY"} ${https_proxy:+https_proxy="$https_proxy"} \
    ${NO_PROXY:+NO_PROXY="$NO_PROXY"} ${no_proxy:+no_proxy="$no_proxy"} "$@"' sh "$ROOTFS")
in_guest() { "${GUEST_SH[@]}" "$@"; }

# -- 1. the Debian arm64 userland -----------------------------------------------------
if [ ! -e "$ROOTFS/.fedge-stage1" ]; then
  if [ -e "$ROOTFS" ]; then # an interrupted first stage of ours
    mounted_under "$ROOTFS" && die "something is mounted under $ROOTFS; unmount it first"
    say "removing the unfinished userland $ROOTFS (made by an earlier run)"
    rm -rf --one-file-system "$ROOTFS"
  fi
  say "debootstrap --foreign: Debian $SUITE arm64 from $MIRROR"
  start=$SECONDS
  debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap-1.log" 2>&1 ||
    die "debootstrap first stage failed; see $WORK/debootstrap-1.log: $(tail -3 "$WORK/debootstrap-1.log")"
  say "first stage took $((SECONDS - start)) s"
  touch "$ROOTFS/.fedge-stage1"
fi
binfmt
if ! out=$(chroot "$ROOTFS" /bin/true 2>&1); then
  die "arm64 programs do not run in $ROOTFS ($out); binfmt_misc: $(tr '\n' ' ' </proc/sys/fs/binfmt_misc/qemu-aarch64 2>&1)"
fi
if [ ! -e "$ROOTFS/.fedge-stage2" ]; then
  say "debootstrap --second-stage under emulation"
  start=$SECONDS
  chroot "$ROOTFS" /debootstrap/debootstrap --second-stage >"$WORK/debootstrap-2.log" 2>&1 ||
    die "debootstrap second stage failed; see $WORK/debootstrap-2.log: $(tail -3 "$WORK/debootstrap-2.log")"
  say "second stage took $((SECONDS - start)) s"
  touch "$ROOTFS/.fedge-stage2"
fi
cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf" # pip reaches PyPI through the host's resolver
# and trusts what the host trusts (a TLS-inspecting proxy's CA as well)
mkdir -p "$ROOTFS$GUEST"
cp -L "${FEDGE_ARM_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}" "$ROOTFS$GUEST/host-ca.pem"

# -- 2. fedge[client] from this working tree ----------------------------------------------
say "copying the working tree into $GUEST/src"
rm -rf --one-file-system "$ROOTFS$GUEST/src" # ours: a copy made by an earlier run
mkdir -p "$ROOTFS$GUEST/src" "$ROOTFS$GUEST/node"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf -) |
    tar -xf - -C "$ROOTFS$GUEST/src"
else
  tar -C "$REPO" --exclude=./.venv --exclude=./.git -cf - . | tar -xf - -C "$ROOTFS$GUEST/src"
fi
if [ ! -x "$ROOTFS$GUEST/venv/bin/python" ]; then
  timed "venv" in_guest python3 -m venv "$GUEST/venv"
fi
constraints=()
[ -f "$ROOTFS$GUEST/src/constraints.txt" ] && constraints=(-c "$GUEST/src/constraints.txt")
pip=(pip install -q --disable-pip-version-check "--only-binary=numpy,grpcio,cryptography,cffi,protobuf" "${constraints[@]}")
# The dependencies once per pyproject.toml; fedge itself from this tree every run.
deps=$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)
if [ "$(cat "$ROOTFS$GUEST/venv/.fedge-deps" 2>/dev/null)" != "$deps" ]; then
  say "pip install 'fedge[client]' in the arm64 userland (under emulation: minutes)"
  timed "pip install fedge[client]" in_guest "${pip[@]}" "$GUEST/src[client]"
  echo "$deps" >"$ROOTFS$GUEST/venv/.fedge-deps"
fi
timed "pip reinstall fedge from this tree" in_guest "${pip[@]}" --no-deps --force-reinstall "$GUEST/src"

# -- 3. the federation --------------------------------------------------------------------
{
  echo "guest: $(in_guest uname -m) $(in_guest python3 --version) (Debian $SUITE $(cat "$ROOTFS/etc/debian_version"))"
  echo "guest packages:"
  in_guest pip list --disable-pip-version-check --format=freeze | sed 's/^/  /'
} | tee "$RUN/guest.txt"

fedge_host() { PYTHONPATH=$REPO/src "$PY" -m fedge.cli.main "$@"; }
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cat >"$RUN/experiment.toml" <<EOF
seed = 7
rounds = $ROUNDS
[data]
dataset = "digits"
num_clients = 2
[model]
name = "mlp"
framework = "numpy"
hidden = [64]
[strategy]
name = "fedavg"
[training]
clients_per_round = 2
local_epochs = 2
[deploy]
host = "127.0.0.1"
port = $PORT
state = "$RUN/state.db"
min_nodes = 2
round_min_nodes = 2
heartbeat_s = 2
node_timeout_s = 120
wait_s = 900
round_deadline_s = 1800
allow_list = "$RUN/allow.txt"
insecure = true
EOF

# The devices' own data: client K of the experiment's digits partition, as an .npz file.
PYTHONPATH=$REPO/src "$PY" - "$RUN" <<'EOF'
import sys
import numpy as np
import tomllib

from fedge.config.schema import from_dict
from fedge.federation import load_dataset
from fedge.plugins import load_plugins

load_plugins()  # the [deploy] section

run = sys.argv[1]
with open(f"{run}/experiment.toml", "rb") as f:
    exp = from_dict(tomllib.load(f))
data = load_dataset(exp)
for k in range(exp.data.num_clients):
    c = data.client(k)
    x = np.concatenate([c.x_train, c.x_test]) if c.x_test is not None else c.x_train
    y = np.concatenate([c.y_train, c.y_test]) if c.y_test is not None else c.y_train
    np.savez(f"{run}/data/client{k}.npz", x=x, label=y)
    print(f"client {k}: {len(y)} examples, features {x.shape[1:]}")
EOF
cp "$RUN/data/client0.npz" "$ROOTFS$GUEST/node/data.npz"

# `fedge join` that logs the time of each round the node trains (fetch, local fit, push).
cat >"$RUN/timed_join.py" <<'EOF'
import logging
import sys
import time

from fedge.cli.main import main
from fedge.deploy.node import Node

log = logging.getLogger("fedge.deploy.node")
train = Node.train


def timed(self, reply):
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        train(self, reply)
    finally:
        log.info(
            "event=round_timed round=%d s=%.3f cpu_s=%.3f",
            reply.round,
            time.perf_counter() - wall,
            time.process_time() - cpu,
        )


Node.train = timed
sys.argv = ["fedge", "join", *sys.argv[1:]]
main()
EOF
cp "$RUN/timed_join.py" "$ROOTFS$GUEST/node/timed_join.py"

# Each node makes its own key; the server admits both public keys.
if [ ! -e "$ROOTFS$GUEST/node/keys/pi-zero.key" ]; then
  in_guest fedge keys new --out "$GUEST/node/keys" --name pi-zero >/dev/null
fi
fedge_host keys new --out "$RUN/keys" --name x86 >/dev/null
cat "$ROOTFS$GUEST/node/keys/pi-zero.pub" "$RUN/keys/x86.pub" >"$RUN/allow.txt"

# The memory cap: a memory cgroup of our own (v2 memory.max, else v1 memory.limit_in_bytes),
# no swap; `taskset` pins the node to one CPU.
CG=
CG_KIND=
make_cgroup() { # make_cgroup NAME: sets CG
  local base rel
  if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
    CG=/sys/fs/cgroup/$1-$$
    mkdir "$CG" || die "cannot create the cgroup $CG"
    grep -qw memory "$CG/cgroup.controllers" || die "the memory controller is not enabled for $CG"
    echo $((MEMORY_MIB << 20)) >"$CG/memory.max"
    if [ -e "$CG/memory.swap.max" ]; then echo 0 >"$CG/memory.swap.max"; fi
    CG_KIND=v2
  elif [ -d /sys/fs/cgroup/memory ]; then
    rel=$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)
    base=/sys/fs/cgroup/memory$rel
    [ -d "$base" ] || base=/sys/fs/cgroup/memory
    CG=$base/$1-$$
    mkdir "$CG" || die "cannot create the cgroup $CG"
    echo $((MEMORY_MIB << 20)) >"$CG/memory.limit_in_bytes"
    if [ -e "$CG/memory.memsw.limit_in_bytes" ]; then echo $((MEMORY_MIB << 20)) >"$CG/memory.memsw.limit_in_bytes"; fi
    CG_KIND=v1
  else
    die "no memory cgroup (v1 or v2) to cap the node with"
  fi
  # CAPPED CMD...: CMD in that cgroup, pinned to one CPU.
  # shellcheck disable=SC2016 # expanded by the inner shell
  CAPPED=(sh -c 'cg=$1 cpu=$2; shift 2; echo $$ >"$cg/cgroup.procs" && exec taskset -c "$cpu" "$@"' sh "$CG" "$CPU")
}
drop_cgroup() { if [ -n "$CG" ] && [ -d "$CG" ]; then rmdir "$CG" 2>/dev/null || true; fi; }
cg_peak() { if [ "$CG_KIND" = v2 ]; then cat "$CG/memory.peak" 2>/dev/null || echo 0; else cat "$CG/memory.max_usage_in_bytes"; fi; }
cg_oom() {
  if [ "$CG_KIND" = v2 ]; then sed -n 's/^oom_kill //p' "$CG/memory.events"; else sed -n 's/^oom_kill //p' "$CG/memory.oom_control"; fi
}
# PEAK OUT CMD...: run CMD (SIGTERM passed on), write the largest resident set of its
# processes (KiB) to OUT.
PEAK=("$PY" -c 'import resource, signal, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
signal.signal(signal.SIGTERM, lambda *_: p.terminate())
rc = p.wait()
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc)')

SERVER_PID=
NATIVE_PID=
cleanup() {
  local pid
  for pid in $NATIVE_PID $SERVER_PID; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  drop_cgroup
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM # so that cleanup runs (the EXIT trap) when the script is stopped
# The cap is enforced: a guest program touching more memory than that is killed.
make_cgroup fedge-arm-cap-check
say "memory cap: cgroup $CG_KIND, $MEMORY_MIB MiB, no swap ($CG); CPU: taskset -c $CPU"
set +e
"${CAPPED[@]}" chroot "$ROOTFS" /usr/bin/python3 -c "b = b'x' * ($MEMORY_MIB + 64 << 20); print('allocated', len(b))" \
  >"$RUN/cap_check.log" 2>&1
rc=$?
set -e
[ "$rc" -ne 0 ] || die "a guest process allocated $((MEMORY_MIB + 64)) MiB under the $MEMORY_MIB MiB cap: the cap does not hold"
say "cap check: a guest program allocating $((MEMORY_MIB + 64)) MiB under the cap ends with exit $rc (oom_kill $(cg_oom))"
drop_cgroup
make_cgroup fedge-arm-node

say "fedge serve on 127.0.0.1:$PORT ($ROUNDS rounds, NumPy MLP on digits, 2 nodes)"
PYTHONPATH=$REPO/src "$PY" -m fedge.cli.main serve "$RUN/experiment.toml" -o "$RUN/out" --insecure \
  >"$RUN/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 120); do
  grep -q listening "$RUN/server.log" && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "the server stopped: $(tail -5 "$RUN/server.log")"
  sleep 1
done
grep -q listening "$RUN/server.log" || die "the server did not start listening"

"${PEAK[@]}" "$RUN/native_peak_kib" env PYTHONPATH="$REPO/src" "$PY" "$RUN/timed_join.py" --server "127.0.0.1:$PORT" \
  --key "$RUN/keys/x86.key" --data "$RUN/data/client1.npz" --insecure --state-dir "$RUN/x86-state" \
  --profile "x86 native" --give-up 900 >"$RUN/node-x86.log" 2>&1 &
NATIVE_PID=$!

say "fedge join in the arm64 userland under the cap"
start=$SECONDS
set +e
"${PEAK[@]}" "$RUN/arm_peak_kib" "${CAPPED[@]}" "${GUEST_SH[@]}" \
  python "$GUEST/node/timed_join.py" --server "127.0.0.1:$PORT" --key "$GUEST/node/keys/pi-zero.key" --data "$GUEST/node/data.npz" \
  --insecure --state-dir "$GUEST/node/state-$(basename "$RUN")" --profile "pi-zero-2w (emulated)" --give-up 900 \
  >"$RUN/node-arm64.log" 2>&1
ARM_RC=$?
set -e
ARM_S=$((SECONDS - start))
CG_PEAK=$(cg_peak)
OOM_AFTER=$(cg_oom)
[ "$ARM_RC" = 0 ] || die "the arm64 node failed (exit $ARM_RC): $(tail -5 "$RUN/node-arm64.log")"
SERVER_RC=0
wait "$SERVER_PID" || SERVER_RC=$?
SERVER_PID=
[ "$SERVER_RC" = 0 ] || die "the server failed (exit $SERVER_RC): $(tail -5 "$RUN/server.log")"
NATIVE_RC=0
wait "$NATIVE_PID" || NATIVE_RC=$?
NATIVE_PID=
[ "$NATIVE_RC" = 0 ] || die "the native node failed (exit $NATIVE_RC): $(tail -5 "$RUN/node-x86.log")"

# -- 4. figures -------------------------------------------------------------------------
"$PY" - "$RUN" "$ARM_S" "$CG_PEAK" "$OOM_AFTER" "$MEMORY_MIB" <<'EOF' | tee "$RUN/summary.txt"
import json
import re
import sys
from pathlib import Path

run, arm_s, cg_peak, ooms, cap = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]


def timed(log: str) -> dict[int, tuple[float, float]]:
    out = {}
    for line in (run / log).read_text().splitlines():
        m = re.search(r"event=round_timed round=(\d+) s=(\S+) cpu_s=(\S+)", line)
        if m:
            out[int(m.group(1))] = (float(m.group(2)), float(m.group(3)))
    return out


arm, x86 = timed("node-arm64.log"), timed("node-x86.log")
done = {}
for line in (run / "server.log").read_text().splitlines():
    m = re.search(r"event=round_done round=(\d+) .*test_accuracy=(\S+) wall_s=(\S+)", line)
    if m:
        done[int(m.group(1))] = (float(m.group(2)), float(m.group(3)))
nan = (float("nan"), float("nan"))
print("fedge node on a Debian arm64 userland under qemu-user (emulation on this x86 CPU, not a Pi)")
print(f"cap: {cap} MiB memory cgroup, one CPU; the node's exit: 0; OOM kills during the run: {ooms}")
print(f"arm64 node peak RSS (qemu process = guest memory + emulator): {int((run / 'arm_peak_kib').read_text()) / 1024:.1f} MiB")
print(f"cgroup peak (pages charged to the node's cgroup): {cg_peak / 2**20:.1f} MiB")
print(f"x86 native node peak RSS (same code, no emulator): {int((run / 'native_peak_kib').read_text()) / 1024:.1f} MiB")
print(f"arm64 node, start to exit: {arm_s} s (imports, join, {len(arm)} rounds, waits for the server)")
print("round | arm64 node s (cpu s) | x86 node s (cpu s) | server round wall_s | test_accuracy")
for r in sorted(done):
    a, b, (acc, wall) = arm.get(r, nan), x86.get(r, nan), done[r]
    print(f"{r:5d} | {a[0]:8.2f} ({a[1]:7.2f})   | {b[0]:6.2f} ({b[1]:6.2f})   | {wall:19.2f} | {acc:13.4f}")
summary = json.loads((run / "out" / "summary.json").read_text())
print("run summary:", json.dumps({k: v for k, v in summary.items() if not isinstance(v, (dict, list))}))
EOF
say "done: $RUN (log $LOG)"
